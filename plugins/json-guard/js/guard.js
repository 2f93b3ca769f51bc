// json-guard in JavaScript: the same behaviour as ../rust (the reference) and ../python, see ../README.md.
//
// Built into a WebAssembly component by componentize-js (SpiderMonkey in StarlingMonkey) against the world
// `transformer-plugin` of the project's WIT (wit/plugin.wit). Each exported interface is an exported object
// named after it (`plugin`, `transformer`); imports are ES modules named by the interface. A function
// returning `result<T, string>` returns T, or throws the error string (the `err` case).

import { counterAdd } from 'wasp:plugin/metrics@0.1.5';

const QUOTA_EXCEEDED = 0x97;
const PAYLOAD_FORMAT_INVALID = 0x99;
const DEFAULT_MAX_PAYLOAD_BYTES = 16384;
const MAX_PAYLOAD_BYTES_LIMIT = 268435455;
const DEFAULT_MAX_DEPTH = 32;
const MAX_DEPTH_LIMIT = 64;
const TYPES = ['string', 'number', 'boolean', 'object', 'array', 'null', 'any'];
const TYPE_NAMES = TYPES.join(', ');

let rules = [];

class ConfigError {
  constructor(path, message) {
    this.message = path ? `plugin config: ${path}: ${message}` : `plugin config: ${message}`;
  }
}

const isTable = (v) => typeof v === 'object' && v !== null && !Array.isArray(v);
const has = (table, key) => Object.prototype.hasOwnProperty.call(table, key);

function checkKeys(table, path, known) {
  const unknown = Object.keys(table).filter((k) => !known.includes(k)).sort();
  if (unknown.length > 0) throw new ConfigError(path, `unknown key \`${unknown[0]}\``);
}

function integer(table, key, path, dflt, max) {
  if (!has(table, key)) return dflt;
  const v = table[key];
  if (!Number.isInteger(v) || v < 1 || v > max) {
    throw new ConfigError(path, `must be an integer from 1 to ${max}`);
  }
  return v;
}

function nonEmptyString(v, path) {
  if (typeof v !== 'string' || v === '') throw new ConfigError(path, 'must be a non-empty string');
  return v;
}

const utf8 = new TextEncoder();

function validFilter(filter) {
  if (filter === '' || utf8.encode(filter).length > 65535 || filter.includes('\0')) return false;
  const levels = filter.split('/');
  return levels.every(
    (level, i) =>
      (!level.includes('#') || (level === '#' && i === levels.length - 1)) &&
      (!level.includes('+') || level === '+'),
  );
}

function matches(filter, topic) {
  if (topic.startsWith('$') && (filter.startsWith('+') || filter.startsWith('#'))) return false;
  const f = filter.split('/');
  const t = topic.split('/');
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true;
    if (i >= t.length) return false;
    if (f[i] !== '+' && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

function parseField(spec, path) {
  spec = nonEmptyString(spec, path);
  const colon = spec.lastIndexOf(':');
  let name = spec;
  let kind = 'any';
  if (colon >= 0) {
    name = spec.slice(0, colon);
    kind = spec.slice(colon + 1);
    if (!TYPES.includes(kind)) throw new ConfigError(path, `unknown type \`${kind}\` (${TYPE_NAMES})`);
  }
  const segments = name.split('.');
  if (segments.some((s) => s === '')) throw new ConfigError(path, `empty name in field path \`${name}\``);
  return { path: segments, kind };
}

function parseRule(rule, path) {
  if (!isTable(rule)) throw new ConfigError(path, 'must be a table');
  checkKeys(rule, path, ['filter', 'required', 'max_payload_bytes', 'max_depth', 'stamp']);
  const filter = nonEmptyString(rule.filter, `${path}.filter`);
  if (!validFilter(filter)) throw new ConfigError(`${path}.filter`, `invalid topic filter \`${filter}\``);
  const required = has(rule, 'required') ? rule.required : [];
  if (!Array.isArray(required)) throw new ConfigError(`${path}.required`, 'must be a list of strings');
  const fields = required.map((spec, i) => parseField(spec, `${path}.required[${i}]`));
  const maxPayloadBytes = integer(
    rule, 'max_payload_bytes', `${path}.max_payload_bytes`, DEFAULT_MAX_PAYLOAD_BYTES, MAX_PAYLOAD_BYTES_LIMIT,
  );
  const maxDepth = integer(rule, 'max_depth', `${path}.max_depth`, DEFAULT_MAX_DEPTH, MAX_DEPTH_LIMIT);
  let stamp = null;
  if (has(rule, 'stamp')) {
    const table = rule.stamp;
    if (!isTable(table)) throw new ConfigError(`${path}.stamp`, 'must be a table');
    checkKeys(table, `${path}.stamp`, ['key', 'value']);
    const key = nonEmptyString(table.key, `${path}.stamp.key`);
    if (typeof table.value !== 'string') throw new ConfigError(`${path}.stamp.value`, 'must be a string');
    stamp = { key, value: table.value };
  }
  return { filter, fields, maxPayloadBytes, maxDepth, stamp };
}

function parseConfig(text) {
  if (text.trim() === '') text = '{}';
  let config;
  try {
    config = JSON.parse(text);
  } catch {
    throw new ConfigError('', 'not a JSON object');
  }
  if (!isTable(config)) throw new ConfigError('', 'not a JSON object');
  checkKeys(config, '', ['rules']);
  const list = has(config, 'rules') ? config.rules : [];
  if (!Array.isArray(list)) throw new ConfigError('rules', 'must be a list of tables');
  const parsed = list.map((rule, i) => parseRule(rule, `rules[${i}]`));
  if (parsed.length === 0) throw new ConfigError('rules', 'no rule: the plugin would do nothing');
  return parsed;
}

// The depth limit is checked on the parsed value, not on the text: SpiderMonkey's JSON.parse does not
// recurse on the native stack (a 20 000-deep payload parses in a few ms), and a walk over the containers
// costs far less than a regular expression over every byte (StarlingMonkey has no JIT: regular expressions
// run in irregexp's bytecode interpreter, ~100 ms for 64 KiB). Too deep or not JSON: invalid either way.
function deeperThan(value, max) {
  const stack = [value, 1];
  while (stack.length > 0) {
    const depth = stack.pop();
    const container = stack.pop();
    if (depth > max) return true;
    const items = Array.isArray(container) ? container : Object.values(container);
    for (const item of items) {
      if (typeof item === 'object' && item !== null) stack.push(item, depth + 1);
    }
  }
  return false;
}

// Strict UTF-8: invalid sequences throw, a BOM stays (and JSON.parse then refuses it).
const decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

class NotJson extends Error {}

// JSON.parse is RFC 8259 already; on top of it, as serde_json: numbers must be finite (1e400 is not
// Infinity) and strings well-formed (no lone surrogate from a `\ud800` escape).
function reviver(key, value) {
  if ((typeof value === 'number' && !Number.isFinite(value)) || !key.isWellFormed()) throw new NotJson();
  if (typeof value === 'string' && !value.isWellFormed()) throw new NotJson();
  return value;
}

// Only a text with a surrogate escape, 200 digits in a row or a 3-digit exponent can hold a lone
// surrogate or overflow a double (below that a number is < 1e200 * 1e99): the others skip the reviver,
// which costs a call into the interpreter per value.
const CAREFUL = /\\u[dD][89a-fA-F]|[0-9]{200}|[eE][+-]?[0-9]{3}/;

function parseObject(text) {
  try {
    const value = CAREFUL.test(text) ? JSON.parse(text, reviver) : JSON.parse(text);
    return isTable(value) ? value : null;
  } catch {
    return null;
  }
}

function admits(kind, v) {
  switch (kind) {
    case 'string': return typeof v === 'string';
    case 'number': return typeof v === 'number';
    case 'boolean': return typeof v === 'boolean';
    case 'object': return isTable(v);
    case 'array': return Array.isArray(v);
    case 'null': return v === null;
    default: return true;
  }
}

function lookup(obj, path) {
  for (const name of path.slice(0, -1)) {
    if (!has(obj, name) || !isTable(obj[name])) return undefined;
    obj = obj[name];
  }
  const last = path[path.length - 1];
  return has(obj, last) ? { value: obj[last] } : undefined;
}

// { pass } | { drop: code, counter } | { stamp: properties }: see the Rust `Guard::check`.
function check(rules, topic, payload, properties) {
  const rule = rules.find((r) => matches(r.filter, topic));
  if (rule === undefined) return { pass: true };
  if (payload.length > rule.maxPayloadBytes) return { drop: QUOTA_EXCEEDED, counter: 'oversize' };
  const invalid = { drop: PAYLOAD_FORMAT_INVALID, counter: 'invalid' };
  let text;
  try {
    text = decoder.decode(payload);
  } catch {
    return invalid;
  }
  const obj = parseObject(text);
  if (obj === null || deeperThan(obj, rule.maxDepth)) return invalid;
  for (const field of rule.fields) {
    const found = lookup(obj, field.path);
    if (found === undefined || !admits(field.kind, found.value)) {
      return { drop: PAYLOAD_FORMAT_INVALID, counter: 'schema' };
    }
  }
  if (rule.stamp === null) return { pass: true };
  const { key, value } = rule.stamp;
  return { stamp: [...properties.filter((p) => p.key !== key), { key, value }] };
}

export const plugin = {
  init(config) {
    try {
      rules = parseConfig(config);
    } catch (e) {
      if (e instanceof ConfigError) throw e.message;
      throw e;
    }
    return {
      hooks: { authenticate: false, authorizePublish: false, authorizeSubscribe: false, transform: true },
      publishFilters: rules.map((r) => r.filter),
    };
  },
};

export const transformer = {
  transform(session, message) {
    const outcome = check(rules, message.topic, message.payload, message.userProperties);
    if (outcome.drop !== undefined) {
      counterAdd(outcome.counter, 1n);
      return { tag: 'drop', val: outcome.drop };
    }
    if (outcome.stamp !== undefined) {
      counterAdd('stamped', 1n);
      return { tag: 'modify', val: { userProperties: outcome.stamp } };
    }
    return { tag: 'pass' };
  },
};
