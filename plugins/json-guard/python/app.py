"""json-guard in Python: the same behaviour as ../rust (the reference) and ../js, see ../README.md.

Built into a WebAssembly component by componentize-py against the world `transformer-plugin` of the
project's WIT (wit/plugin.wit). componentize-py finds the exports as the classes `Plugin` (interface
`plugin`) and `Transformer` (interface `transformer`) of this module; module globals live as long as
the instance, so `init` keeps the validated rules in `_RULES`.
"""

import itertools
import json
import math
import operator
import re

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import metrics, types

QUOTA_EXCEEDED = 0x97
PAYLOAD_FORMAT_INVALID = 0x99
DEFAULT_MAX_PAYLOAD_BYTES = 16_384
MAX_PAYLOAD_BYTES_LIMIT = 268_435_455
DEFAULT_MAX_DEPTH = 32
MAX_DEPTH_LIMIT = 64
TYPES = ("string", "number", "boolean", "object", "array", "null", "any")
TYPE_NAMES = ", ".join(TYPES)

_RULES = []


class ConfigError(Exception):
    pass


def _error(path, message):
    return ConfigError(f"plugin config: {path}: {message}" if path else f"plugin config: {message}")


def _check_keys(table, path, known):
    unknown = sorted(k for k in table if k not in known)
    if unknown:
        raise _error(path, f"unknown key `{unknown[0]}`")


def _integer(table, key, path, default, maximum):
    if key not in table:
        return default
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise _error(path, f"must be an integer from 1 to {maximum}")
    return value


def _non_empty_string(value, path):
    if not isinstance(value, str) or value == "":
        raise _error(path, "must be a non-empty string")
    return value


def valid_filter(filter_):
    if filter_ == "" or len(filter_.encode("utf-8", "surrogatepass")) > 65535 or "\0" in filter_:
        return False
    levels = filter_.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


def matches(filter_, topic):
    if topic.startswith("$") and filter_[:1] in ("+", "#"):
        return False
    filter_levels = filter_.split("/")
    topic_levels = topic.split("/")
    for i, f in enumerate(filter_levels):
        if f == "#":
            return True
        if i >= len(topic_levels):
            return False
        if f != "+" and f != topic_levels[i]:
            return False
    return len(filter_levels) == len(topic_levels)


def _parse_field(spec, path):
    spec = _non_empty_string(spec, path)
    name, sep, kind = spec.rpartition(":")
    if not sep:
        name, kind = spec, "any"
    elif kind not in TYPES:
        raise _error(path, f"unknown type `{kind}` ({TYPE_NAMES})")
    segments = name.split(".")
    if any(s == "" for s in segments):
        raise _error(path, f"empty name in field path `{name}`")
    return (segments, kind)


def _parse_rule(rule, path):
    if not isinstance(rule, dict):
        raise _error(path, "must be a table")
    _check_keys(rule, path, ("filter", "required", "max_payload_bytes", "max_depth", "stamp"))
    filter_ = _non_empty_string(rule.get("filter"), f"{path}.filter")
    if not valid_filter(filter_):
        raise _error(f"{path}.filter", f"invalid topic filter `{filter_}`")
    required = rule.get("required", [])
    if not isinstance(required, list):
        raise _error(f"{path}.required", "must be a list of strings")
    fields = [_parse_field(spec, f"{path}.required[{i}]") for i, spec in enumerate(required)]
    max_payload_bytes = _integer(
        rule, "max_payload_bytes", f"{path}.max_payload_bytes", DEFAULT_MAX_PAYLOAD_BYTES,
        MAX_PAYLOAD_BYTES_LIMIT,
    )
    max_depth = _integer(rule, "max_depth", f"{path}.max_depth", DEFAULT_MAX_DEPTH, MAX_DEPTH_LIMIT)
    stamp = None
    if "stamp" in rule:
        table = rule["stamp"]
        if not isinstance(table, dict):
            raise _error(f"{path}.stamp", "must be a table")
        _check_keys(table, f"{path}.stamp", ("key", "value"))
        key = _non_empty_string(table.get("key"), f"{path}.stamp.key")
        value = table.get("value")
        if not isinstance(value, str):
            raise _error(f"{path}.stamp.value", "must be a string")
        stamp = (key, value)
    return {
        "filter": filter_,
        "required": fields,
        "max_payload_bytes": max_payload_bytes,
        "max_depth": max_depth,
        "stamp": stamp,
    }


def parse_config(text):
    if text.strip() == "":
        text = "{}"
    try:
        config = json.loads(text)
    except ValueError:
        raise _error("", "not a JSON object")
    if not isinstance(config, dict):
        raise _error("", "not a JSON object")
    _check_keys(config, "", ("rules",))
    rules = config.get("rules", [])
    if not isinstance(rules, list):
        raise _error("rules", "must be a list of tables")
    rules = [_parse_rule(rule, f"rules[{i}]") for i, rule in enumerate(rules)]
    if not rules:
        raise _error("rules", "no rule: the plugin would do nothing")
    return rules


# A JSON string; on valid JSON it matches exactly the strings the parser sees. (On invalid JSON the scan
# may differ from the Rust one, but then the parse fails anyway, with the same verdict.)
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]")
# Opening brackets step +1, closing ones -1 (as 2 and 0, less the 1 subtracted for every bracket).
_STEPS = bytes.maketrans(b"[{]}", b"\x02\x02\x00\x00")


def nests_deeper_than(payload, maximum):
    """Whether objects and arrays nest deeper than `maximum`, checked on the text before parsing:
    CPython's json parser recurses on the native stack, which in WebAssembly runs out (a trap) before
    Python's recursion limit (the suite sends 8 000 levels). The brackets outside strings as a running
    sum: regular expressions, bytes.translate and itertools run as native code, no bytecode per byte.
    On invalid JSON the sum may be off, but the parser stops there before recursing deeper."""
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", payload))
    if len(brackets) <= maximum:
        return False
    depths = map(operator.sub, itertools.accumulate(brackets.translate(_STEPS)), itertools.count(1))
    return max(depths) > maximum


# Only a text with a surrogate escape, 200 digits in a row or a 3-digit exponent can hold a lone
# surrogate or overflow a double (below that a number is < 1e200 * 1e99): the others are parsed without
# the per-number hooks and the walk over the strings.
_CAREFUL = re.compile(rb"\\u[dD][89a-fA-F]|[0-9]{200}|[eE][+-]?[0-9]{3}")


def _finite(text):
    number = float(text)
    if math.isinf(number):
        raise ValueError("number out of range")
    return number


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def _well_formed(value):
    """No lone surrogate (from a `\\ud800` escape) in any string, as serde_json and JS's check."""
    stack = [value]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            value.encode("utf-8")
        elif isinstance(value, dict):
            for key, item in value.items():
                key.encode("utf-8")
                stack.append(item)
        elif isinstance(value, list):
            stack.extend(value)


def parse_object(payload):
    """The payload as a dict, or None when it is not strict UTF-8 JSON text of one object."""
    try:
        text = payload.decode("utf-8")
        if _CAREFUL.search(payload):
            value = json.loads(
                text, parse_float=_finite, parse_int=_finite, parse_constant=_reject_constant
            )
            _well_formed(value)
        else:
            value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, UnicodeError):
        return None
    return value if isinstance(value, dict) else None


def _admits(kind, value):
    if kind == "string":
        return isinstance(value, str)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "null":
        return value is None
    return True


_MISSING = object()


def _lookup(obj, path):
    for name in path[:-1]:
        obj = obj.get(name)
        if not isinstance(obj, dict):
            return _MISSING
    return obj.get(path[-1], _MISSING)


def check(rules, topic, payload, properties):
    """("pass",), ("drop", code, counter) or ("stamp", properties): see the Rust `Guard::check`."""
    rule = next((r for r in rules if matches(r["filter"], topic)), None)
    if rule is None:
        return ("pass",)
    if len(payload) > rule["max_payload_bytes"]:
        return ("drop", QUOTA_EXCEEDED, "oversize")
    if nests_deeper_than(payload, rule["max_depth"]):
        return ("drop", PAYLOAD_FORMAT_INVALID, "invalid")
    obj = parse_object(payload)
    if obj is None:
        return ("drop", PAYLOAD_FORMAT_INVALID, "invalid")
    for path, kind in rule["required"]:
        value = _lookup(obj, path)
        if value is _MISSING or not _admits(kind, value):
            return ("drop", PAYLOAD_FORMAT_INVALID, "schema")
    if rule["stamp"] is None:
        return ("pass",)
    key, value = rule["stamp"]
    return ("stamp", [(k, v) for (k, v) in properties if k != key] + [(key, value)])


class Plugin(exports.Plugin):
    def init(self, config: str) -> types.Interests:
        global _RULES
        try:
            _RULES = parse_config(config)
        except ConfigError as e:
            raise Err(str(e))
        return types.Interests(
            hooks=types.Hooks.TRANSFORM, publish_filters=[r["filter"] for r in _RULES]
        )


class Transformer(exports.Transformer):
    def transform(self, session: types.Session, message: types.Message) -> types.TransformVerdict:
        properties = [(p.key, p.value) for p in message.user_properties]
        outcome = check(_RULES, message.topic, message.payload, properties)
        if outcome[0] == "drop":
            metrics.counter_add(outcome[2], 1)
            return types.TransformVerdict_Drop(outcome[1])
        if outcome[0] == "stamp":
            metrics.counter_add("stamped", 1)
            return types.TransformVerdict_Modify(
                types.MessagePatch(
                    topic=None,
                    payload=None,
                    qos=None,
                    retain=None,
                    user_properties=[types.UserProperty(key=k, value=v) for (k, v) in outcome[1]],
                )
            )
        return types.TransformVerdict_Pass()
