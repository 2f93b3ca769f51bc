//! json-guard: a transformer that lets through only publishes whose payload is a JSON object with the
//! fields a rule requires, and stamps the ones it let through with a user property.
//!
//! This is the Rust one of three implementations of the same behaviour (`../python/app.py` and
//! `../js/guard.js` are the others); `../suite` runs one harness test suite against the three `.wasm`
//! files. `../README.md` is the specification; when it changes, all three change.
//!
//! Host-independent: [`Guard::from_config`] validates the configuration (the error texts are part of the
//! behaviour and the same in every language), [`Guard::check`] decides for one message. `plugin.rs` is
//! the WebAssembly glue over them.

mod plugin;

use serde_json::{Map, Value};

pub use plugin::JsonGuardPlugin;

wasp_plugin_sdk::export_plugin!(JsonGuardPlugin);

/// 0x97 Quota exceeded: the payload is larger than the rule's `max_payload_bytes`.
pub const QUOTA_EXCEEDED: u8 = 0x97;
/// 0x99 Payload format invalid: not a JSON object as the rule wants.
pub const PAYLOAD_FORMAT_INVALID: u8 = 0x99;

/// Default and largest `max_payload_bytes`.
pub const DEFAULT_MAX_PAYLOAD_BYTES: u64 = 16_384;
const MAX_PAYLOAD_BYTES_LIMIT: u64 = 268_435_455;
/// Default and largest `max_depth` (nesting of objects and arrays, the top-level object is 1).
pub const DEFAULT_MAX_DEPTH: u64 = 32;
const MAX_DEPTH_LIMIT: u64 = 64;

/// The JSON type a required field must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    String,
    Number,
    Boolean,
    Object,
    Array,
    Null,
    Any,
}

const TYPE_NAMES: &str = "string, number, boolean, object, array, null, any";

impl FieldType {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "string" => Self::String,
            "number" => Self::Number,
            "boolean" => Self::Boolean,
            "object" => Self::Object,
            "array" => Self::Array,
            "null" => Self::Null,
            "any" => Self::Any,
            _ => return None,
        })
    }

    fn admits(self, value: &Value) -> bool {
        match self {
            Self::String => value.is_string(),
            Self::Number => value.is_number(),
            Self::Boolean => value.is_boolean(),
            Self::Object => value.is_object(),
            Self::Array => value.is_array(),
            Self::Null => value.is_null(),
            Self::Any => true,
        }
    }
}

/// A field a rule requires: a dotted path through nested objects and its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub path: Vec<String>,
    pub kind: FieldType,
}

/// One `[[rules]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub filter: String,
    pub required: Vec<Field>,
    pub max_payload_bytes: u64,
    pub max_depth: u64,
    /// A user property set on every message the rule lets through, replacing any the client sent.
    pub stamp: Option<(String, String)>,
}

/// What happens to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// Dropped; the reason code and which check failed (`oversize`, `invalid`, `schema`, the counter).
    Drop(u8, &'static str),
    /// Let through with these user properties.
    Stamp(Vec<(String, String)>),
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    rules: Vec<Rule>,
}

fn error(path: &str, message: impl std::fmt::Display) -> String {
    if path.is_empty() {
        format!("plugin config: {message}")
    } else {
        format!("plugin config: {path}: {message}")
    }
}

fn check_keys(table: &Map<String, Value>, path: &str, known: &[&str]) -> Result<(), String> {
    // The first unknown key in sorted order is named, as in the other implementations.
    match table.keys().filter(|k| !known.contains(&k.as_str())).min() {
        Some(key) => Err(error(path, format!("unknown key `{key}`"))),
        None => Ok(()),
    }
}

fn integer(value: Option<&Value>, path: &str, default: u64, max: u64) -> Result<u64, String> {
    let Some(value) = value else {
        return Ok(default);
    };
    match value.as_u64() {
        Some(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(error(path, format!("must be an integer from 1 to {max}"))),
    }
}

fn non_empty_string<'a>(value: Option<&'a Value>, path: &str) -> Result<&'a str, String> {
    match value.and_then(Value::as_str) {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(error(path, "must be a non-empty string")),
    }
}

fn parse_field(spec: &Value, path: &str) -> Result<Field, String> {
    let spec = non_empty_string(Some(spec), path)?;
    let (name, kind) = match spec.rsplit_once(':') {
        Some((name, kind)) => (
            name,
            FieldType::parse(kind)
                .ok_or_else(|| error(path, format!("unknown type `{kind}` ({TYPE_NAMES})")))?,
        ),
        None => (spec, FieldType::Any),
    };
    let segments: Vec<String> = name.split('.').map(str::to_owned).collect();
    if segments.iter().any(String::is_empty) {
        return Err(error(path, format!("empty name in field path `{name}`")));
    }
    Ok(Field {
        path: segments,
        kind,
    })
}

fn parse_rule(value: &Value, path: &str) -> Result<Rule, String> {
    let table = value
        .as_object()
        .ok_or_else(|| error(path, "must be a table"))?;
    check_keys(
        table,
        path,
        &[
            "filter",
            "required",
            "max_payload_bytes",
            "max_depth",
            "stamp",
        ],
    )?;
    let filter_path = format!("{path}.filter");
    let filter = non_empty_string(table.get("filter"), &filter_path)?;
    if wasp_plugin_sdk::topic::valid_filter(filter).is_err() {
        return Err(error(
            &filter_path,
            format!("invalid topic filter `{filter}`"),
        ));
    }
    let required_path = format!("{path}.required");
    let required = match table.get("required") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| parse_field(item, &format!("{required_path}[{i}]")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(error(&required_path, "must be a list of strings")),
    };
    let max_payload_bytes = integer(
        table.get("max_payload_bytes"),
        &format!("{path}.max_payload_bytes"),
        DEFAULT_MAX_PAYLOAD_BYTES,
        MAX_PAYLOAD_BYTES_LIMIT,
    )?;
    let max_depth = integer(
        table.get("max_depth"),
        &format!("{path}.max_depth"),
        DEFAULT_MAX_DEPTH,
        MAX_DEPTH_LIMIT,
    )?;
    let stamp_path = format!("{path}.stamp");
    let stamp = match table.get("stamp") {
        None => None,
        Some(Value::Object(stamp)) => {
            check_keys(stamp, &stamp_path, &["key", "value"])?;
            let key = non_empty_string(stamp.get("key"), &format!("{stamp_path}.key"))?;
            let value = match stamp.get("value") {
                Some(Value::String(s)) => s.as_str(),
                _ => return Err(error(&format!("{stamp_path}.value"), "must be a string")),
            };
            Some((key.to_owned(), value.to_owned()))
        }
        Some(_) => return Err(error(&stamp_path, "must be a table")),
    };
    Ok(Rule {
        filter: filter.to_owned(),
        required,
        max_payload_bytes,
        max_depth,
        stamp,
    })
}

/// Whether `bytes`, read as JSON text, nests objects and arrays deeper than `max`. A scan of the bytes
/// (brackets outside strings), before parsing: parsers limit depth differently (serde_json at 128,
/// CPython by its recursion limit), this check makes the limit the same everywhere.
fn nests_deeper_than(bytes: &[u8], max: u64) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0u64, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

fn lookup<'a>(object: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (last, parents) = path.split_last()?;
    let mut current = object;
    for name in parents {
        current = current.get(name)?.as_object()?;
    }
    current.get(last)
}

impl Guard {
    /// Validates the plugin's `config` (JSON text). The error names the key, e.g.
    /// `plugin config: rules[0].required[1]: unknown type `num` (...)`.
    pub fn from_config(json: &str) -> Result<Self, String> {
        let json = if json.trim().is_empty() { "{}" } else { json };
        let config: Value =
            serde_json::from_str(json).map_err(|_| error("", "not a JSON object"))?;
        let table = config
            .as_object()
            .ok_or_else(|| error("", "not a JSON object"))?;
        check_keys(table, "", &["rules"])?;
        let rules = match table.get("rules") {
            None => Vec::new(),
            Some(Value::Array(rules)) => rules
                .iter()
                .enumerate()
                .map(|(i, rule)| parse_rule(rule, &format!("rules[{i}]")))
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(error("rules", "must be a list of tables")),
        };
        if rules.is_empty() {
            return Err(error("rules", "no rule: the plugin would do nothing"));
        }
        Ok(Self { rules })
    }

    /// The rules' filters, in order: the plugin's publish filters.
    pub fn filters(&self) -> Vec<String> {
        self.rules.iter().map(|r| r.filter.clone()).collect()
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Decides for one message: the first rule whose filter matches the topic applies.
    pub fn check(&self, topic: &str, payload: &[u8], properties: &[(String, String)]) -> Outcome {
        let Some(rule) = self
            .rules
            .iter()
            .find(|r| wasp_plugin_sdk::topic::matches(&r.filter, topic))
        else {
            return Outcome::Pass;
        };
        if payload.len() as u64 > rule.max_payload_bytes {
            return Outcome::Drop(QUOTA_EXCEEDED, "oversize");
        }
        let invalid = Outcome::Drop(PAYLOAD_FORMAT_INVALID, "invalid");
        if nests_deeper_than(payload, rule.max_depth) {
            return invalid;
        }
        // Strict UTF-8 (no BOM), strict RFC 8259: serde_json refuses non-finite numbers (1e400) and lone
        // surrogate escapes.
        let Ok(text) = std::str::from_utf8(payload) else {
            return invalid;
        };
        let Ok(Value::Object(object)) = serde_json::from_str::<Value>(text) else {
            return invalid;
        };
        let fits = |f: &Field| lookup(&object, &f.path).is_some_and(|v| f.kind.admits(v));
        if !rule.required.iter().all(fits) {
            return Outcome::Drop(PAYLOAD_FORMAT_INVALID, "schema");
        }
        match &rule.stamp {
            None => Outcome::Pass,
            Some((key, value)) => {
                let mut properties: Vec<(String, String)> = properties
                    .iter()
                    .filter(|(k, _)| k != key)
                    .cloned()
                    .collect();
                properties.push((key.clone(), value.clone()));
                Outcome::Stamp(properties)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_depth_scan_ignores_brackets_in_strings_and_escaped_quotes() {
        assert!(!nests_deeper_than(br#"{"a":"[[[[\"[[[["}"#, 1));
        assert!(nests_deeper_than(br#"{"a":[1]}"#, 1));
        assert!(!nests_deeper_than(br#"{"a":[1]}"#, 2));
    }

    #[test]
    fn a_field_path_walks_nested_objects_only() {
        let object: Map<String, Value> =
            serde_json::from_str(r#"{"a":{"b":1},"c":[{"d":1}]}"#).unwrap();
        let path = |s: &str| s.split('.').map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(lookup(&object, &path("a.b")), Some(&Value::from(1)));
        assert_eq!(lookup(&object, &path("c.d")), None);
        assert_eq!(lookup(&object, &path("a.b.c")), None);
    }

    #[test]
    fn serde_json_refuses_what_the_guard_promises_to_refuse() {
        for text in [
            r#"{"a":1e400}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":NaN}"#,
            "\u{feff}{}",
        ] {
            assert!(serde_json::from_str::<Value>(text).is_err(), "{text}");
        }
    }
}
