//! Transformation rules.

use std::ops::RangeInclusive;

use serde::Deserialize;

/// MQTT 5 reason "Quota exceeded", the default for oversized payloads.
pub const QUOTA_EXCEEDED: u8 = 0x97;
/// MQTT 5 reason "Payload format invalid", the default for payloads that are not JSON.
pub const PAYLOAD_FORMAT_INVALID: u8 = 0x99;
/// MQTT 5 reason "Topic Name invalid", for a rewrite that would produce an unusable topic.
const TOPIC_NAME_INVALID: u8 = 0x90;
/// The reason codes a PUBACK/PUBREC may carry, i.e. the ones a drop may use.
const PUBACK_REASONS: [u8; 9] = [0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];

/// `[plugins.config]` of the transform plugin.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub rules: Vec<RuleConfig>,
}

/// One `[[plugins.config.rules]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The messages the rule applies to (an MQTT topic filter).
    pub filter: String,
    /// New topic; `{n}` is the topic part matched by the n-th wildcard of `filter` (1-based).
    pub rewrite_topic: Option<String>,
    /// User property set to the receive time, milliseconds since the Unix epoch.
    pub stamp_time_property: Option<String>,
    /// User property set to the publisher's client id.
    pub stamp_client_id_property: Option<String>,
    /// Payloads longer than this many bytes are dropped.
    pub max_payload_bytes: Option<usize>,
    /// Reason code for oversized payloads (default 0x97 Quota exceeded).
    pub oversize_reason: Option<u8>,
    /// Drop payloads that are not valid JSON (UTF-8, RFC 8259).
    #[serde(default)]
    pub require_json: bool,
    /// Reason code for payloads that are not JSON (default 0x99 Payload format invalid).
    pub invalid_json_reason: Option<u8>,
}

/// What to do with a message: a patch, not a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// Drop it; MQTT 5 publishers get this reason code.
    Drop(u8),
    /// Fields left `None` stay as they are; `user_properties` replaces the whole list.
    Modify {
        topic: Option<String>,
        user_properties: Option<Vec<(String, String)>>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Capture(usize),
}

#[derive(Debug, Clone)]
struct Rule {
    filter: String,
    rewrite: Option<Vec<Piece>>,
    stamp_time: Option<String>,
    stamp_client_id: Option<String>,
    max_payload: Option<(usize, u8)>,
    json: Option<u8>,
}

/// Validated rules, applied in configuration order.
#[derive(Debug, Clone)]
pub struct Rules {
    rules: Vec<Rule>,
}

fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.len() > 65535 {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let last = levels.len() - 1;
    levels.iter().enumerate().all(|(i, level)| match *level {
        "+" => true,
        "#" => i == last,
        l => !l.contains(['+', '#']),
    })
}

/// The parts of `topic` matched by each wildcard of `filter`, or `None` if it does not match. A `#`
/// captures the rest of the topic (empty when it matched the parent level: `a/#` against `a`).
fn captures<'t>(filter: &str, topic: &'t str) -> Option<Vec<&'t str>> {
    let mut caps = Vec::new();
    let first = filter.split('/').next().unwrap_or("");
    if topic.starts_with('$') && (first == "+" || first == "#") {
        return None;
    }
    let mut rest = Some(topic);
    for level in filter.split('/') {
        if level == "#" {
            caps.push(rest.unwrap_or(""));
            return Some(caps);
        }
        let current = rest?;
        let (head, tail) = match current.split_once('/') {
            Some((h, t)) => (h, Some(t)),
            None => (current, None),
        };
        if level == "+" {
            caps.push(head);
        } else if level != head {
            return None;
        }
        rest = tail;
    }
    rest.is_none().then_some(caps)
}

/// Whether `payload` is one JSON text. UTF-8 is checked first: serde_json does not validate the bytes
/// of strings it skips.
fn is_json(payload: &[u8]) -> bool {
    std::str::from_utf8(payload)
        .is_ok_and(|text| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok())
}

fn parse_template(template: &str, wildcards: usize) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut chars = template.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '{' => {
                let mut digits = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(d) if d.is_ascii_digit() => digits.push(d),
                        _ => return Err("'{' must be followed by a wildcard number and '}'".into()),
                    }
                }
                let n: usize = digits
                    .parse()
                    .map_err(|_| "empty '{}' (write {1} for the first wildcard)".to_owned())?;
                if n == 0 || n > wildcards {
                    return Err(format!(
                        "{{{n}}} refers to no wildcard: the filter has {wildcards}"
                    ));
                }
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Capture(n - 1));
            }
            '}' => return Err("'}' without '{'".into()),
            '+' | '#' => return Err("a topic name cannot contain '+' or '#'".into()),
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    match pieces.first() {
        None => return Err("empty".into()),
        Some(Piece::Literal(l)) if l.starts_with('$') => {
            return Err("topics starting with '$' are reserved for the broker".into());
        }
        _ => {}
    }
    if !pieces.iter().any(|p| matches!(p, Piece::Literal(_))) {
        return Err("needs some literal text so the topic is never empty".into());
    }
    Ok(pieces)
}

fn check_property(name: &Option<String>) -> Result<Option<String>, String> {
    match name {
        Some(n) if n.is_empty() => Err("empty property name".into()),
        Some(n) if n.contains('\0') => Err("property name contains NUL".into()),
        other => Ok(other.clone()),
    }
}

fn check_reason(code: Option<u8>, default: u8) -> Result<u8, String> {
    let code = code.unwrap_or(default);
    if PUBACK_REASONS.contains(&code) {
        Ok(code)
    } else {
        Err(format!(
            "0x{code:02x} is not a PUBACK reason code (0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99)"
        ))
    }
}

impl Rules {
    /// Validates the configuration; errors name the rule (`rules[<index>]`, 0-based) and the key.
    pub fn from_config(config: Config) -> Result<Rules, String> {
        let mut rules = Vec::with_capacity(config.rules.len());
        for (i, rc) in config.rules.into_iter().enumerate() {
            let at = |key: &str, m: String| format!("rules[{i}].{key}: {m}");
            if !valid_filter(&rc.filter) {
                return Err(at(
                    "filter",
                    format!("invalid topic filter {:?}", rc.filter),
                ));
            }
            let wildcards = rc
                .filter
                .split('/')
                .filter(|l| *l == "+" || *l == "#")
                .count();
            let rewrite = rc
                .rewrite_topic
                .as_deref()
                .map(|t| parse_template(t, wildcards))
                .transpose()
                .map_err(|m| at("rewrite_topic", m))?;
            let stamp_time = check_property(&rc.stamp_time_property)
                .map_err(|m| at("stamp_time_property", m))?;
            let stamp_client_id = check_property(&rc.stamp_client_id_property)
                .map_err(|m| at("stamp_client_id_property", m))?;
            if stamp_time.is_some() && stamp_time == stamp_client_id {
                return Err(at(
                    "stamp_client_id_property",
                    "same name as stamp_time_property".into(),
                ));
            }
            let oversize = check_reason(rc.oversize_reason, QUOTA_EXCEEDED)
                .map_err(|m| at("oversize_reason", m))?;
            if rc.oversize_reason.is_some() && rc.max_payload_bytes.is_none() {
                return Err(at(
                    "oversize_reason",
                    "set without max_payload_bytes".into(),
                ));
            }
            let invalid_json = check_reason(rc.invalid_json_reason, PAYLOAD_FORMAT_INVALID)
                .map_err(|m| at("invalid_json_reason", m))?;
            if rc.invalid_json_reason.is_some() && !rc.require_json {
                return Err(at(
                    "invalid_json_reason",
                    "set without require_json = true".into(),
                ));
            }
            let rule = Rule {
                filter: rc.filter,
                rewrite,
                stamp_time,
                stamp_client_id,
                max_payload: rc.max_payload_bytes.map(|max| (max, oversize)),
                json: rc.require_json.then_some(invalid_json),
            };
            if rule.rewrite.is_none()
                && rule.stamp_time.is_none()
                && rule.stamp_client_id.is_none()
                && rule.max_payload.is_none()
                && rule.json.is_none()
            {
                return Err(at("filter", "the rule does nothing".into()));
            }
            rules.push(rule);
        }
        Ok(Rules { rules })
    }

    /// The rules whose filter matches `topic`, in configuration order: match once per message, then ask
    /// the [`Matching`] for the outcome, the time stamps and whether the verdict is reusable.
    pub fn matching<'r, 't>(&'r self, topic: &'t str) -> Matching<'r, 't> {
        Matching {
            rules: self
                .rules
                .iter()
                .filter(|r| wasp_plugin_sdk::topic::matches(&r.filter, topic))
                .collect(),
            topic,
        }
    }

    /// The topic filters of all rules, in order (the plugin's declared interests).
    pub fn filters(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.filter.as_str())
    }

    /// [`Matching::apply`] of the rules matching `topic`.
    pub fn apply(
        &self,
        client_id: &str,
        topic: &str,
        payload: &[u8],
        user_properties: &[(String, String)],
    ) -> Outcome {
        self.matching(topic)
            .apply(client_id, payload, user_properties)
    }
}

/// The rules matching one topic ([`Rules::matching`]).
pub struct Matching<'r, 't> {
    rules: Vec<&'r Rule>,
    topic: &'t str,
}

impl<'r> Matching<'r, '_> {
    /// The payload sizes for which [`Matching::apply`]'s outcome is the one it has for a payload of
    /// `size` bytes, when it depends on nothing but the topic, the client id, the user properties and
    /// the payload's size: no matching rule checks JSON. (Time stamps do not count: the broker sets them,
    /// see [`Matching::time_stamps`].) The plugin then lets the broker reuse its verdict for the
    /// session's later messages to that topic whose payload size is in the range. `None`: not reusable.
    ///
    /// The size checks that fail are those whose limit is under `size`, so the range runs from just
    /// above the highest such limit to the lowest limit not under `size`.
    pub fn reusable_sizes(&self, size: usize) -> Option<RangeInclusive<usize>> {
        let mut sizes = 0..=usize::MAX;
        for rule in &self.rules {
            if rule.json.is_some() {
                return None;
            }
            if let Some((max, _)) = rule.max_payload {
                sizes = if size > max {
                    (*sizes.start()).max(max.saturating_add(1))..=*sizes.end()
                } else {
                    *sizes.start()..=(*sizes.end()).min(max)
                };
            }
        }
        Some(sizes)
    }

    /// The user properties the broker is to set to a message's receive time (WIT 0.1.4 stamps), in
    /// order: each time stamp whose name no later rule's stamp takes.
    pub fn time_stamps(&self) -> Vec<&'r str> {
        let mut names: Vec<&str> = Vec::new();
        for rule in &self.rules {
            if let Some(name) = &rule.stamp_time {
                names.retain(|n| n != name);
                names.push(name);
            }
            if let Some(name) = &rule.stamp_client_id {
                names.retain(|n| n != name);
            }
        }
        names
    }

    /// Applies the matching rules to a message to the topic (as published), in configuration order.
    ///
    /// Checks first: the first failing size or JSON check drops the message with its reason. Then the
    /// first matching rule with a rewrite sets the topic, and client-id stamps set their properties
    /// (replacing any property of the same name the client sent, so it cannot be forged; a later rule's
    /// stamp of the same name wins). Time stamps are not set here: the broker sets them on each message
    /// ([`Matching::time_stamps`]), after this patch. `Pass` when nothing changes.
    pub fn apply(
        &self,
        client_id: &str,
        payload: &[u8],
        user_properties: &[(String, String)],
    ) -> Outcome {
        let topic = self.topic;
        for rule in &self.rules {
            if let Some((max, reason)) = rule.max_payload
                && payload.len() > max
            {
                return Outcome::Drop(reason);
            }
            if let Some(reason) = rule.json
                && !is_json(payload)
            {
                return Outcome::Drop(reason);
            }
        }
        let mut new_topic = None;
        // Captures are only needed for the first rewrite; the other rules only need to match.
        if let Some((rule, caps)) = self
            .rules
            .iter()
            .find(|r| r.rewrite.is_some())
            .and_then(|r| captures(&r.filter, topic).map(|c| (r, c)))
        {
            let mut t = String::new();
            for piece in rule.rewrite.iter().flatten() {
                match piece {
                    Piece::Literal(l) => t.push_str(l),
                    Piece::Capture(n) => t.push_str(caps[*n]),
                }
            }
            if t.starts_with('$') || t.len() > 65535 {
                return Outcome::Drop(TOPIC_NAME_INVALID);
            }
            if t != topic {
                new_topic = Some(t);
            }
        }
        let mut stamps: Vec<(&str, String)> = Vec::new();
        for rule in &self.rules {
            if let Some(name) = &rule.stamp_time {
                // The broker's stamp, set after this patch, replaces a client-id stamp of the same name.
                stamps.retain(|(n, _)| n != name);
            }
            if let Some(name) = &rule.stamp_client_id {
                stamps.retain(|(n, _)| n != name);
                stamps.push((name, client_id.to_owned()));
            }
        }
        let mut props = None;
        if !stamps.is_empty() {
            let mut list: Vec<(String, String)> = user_properties
                .iter()
                .filter(|(k, _)| !stamps.iter().any(|(n, _)| n == k))
                .cloned()
                .collect();
            list.extend(stamps.into_iter().map(|(n, v)| (n.to_owned(), v)));
            if list != user_properties {
                props = Some(list);
            }
        }
        if new_topic.is_none() && props.is_none() {
            Outcome::Pass
        } else {
            Outcome::Modify {
                topic: new_topic,
                user_properties: props,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(toml_text: &str) -> Rules {
        let config: Config = toml::from_str(toml_text).unwrap();
        Rules::from_config(config).unwrap()
    }

    fn error(toml_text: &str) -> String {
        let config: Config = toml::from_str(toml_text).unwrap();
        Rules::from_config(config).unwrap_err()
    }

    fn props(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn rewrite_with_wildcard_levels() {
        let r = rules(
            r##"
            [[rules]]
            filter = "devices/+/raw"
            rewrite_topic = "telemetry/{1}"
            [[rules]]
            filter = "site/+/+/#"
            rewrite_topic = "by-room/{2}/{1}/{3}"
            "##,
        );
        assert_eq!(
            r.apply("c", "devices/d7/raw", b"x", &[]),
            Outcome::Modify {
                topic: Some("telemetry/d7".into()),
                user_properties: None
            }
        );
        assert_eq!(r.apply("c", "devices/d7/cooked", b"x", &[]), Outcome::Pass);
        assert_eq!(
            r.apply("c", "site/paris/kitchen/temp/now", b"", &[]),
            Outcome::Modify {
                topic: Some("by-room/kitchen/paris/temp/now".into()),
                user_properties: None
            }
        );
        // '#' matching the parent level captures nothing.
        assert_eq!(
            r.apply("c", "site/paris/kitchen", b"", &[]),
            Outcome::Modify {
                topic: Some("by-room/kitchen/paris/".into()),
                user_properties: None
            }
        );
        // Wildcard-first filters do not match $ topics.
        let any = rules("[[rules]]\nfilter = \"+/x\"\nrewrite_topic = \"y/{1}\"");
        assert_eq!(any.apply("c", "$SYS/x", b"", &[]), Outcome::Pass);
        assert_eq!(
            r.filters().collect::<Vec<_>>(),
            ["devices/+/raw", "site/+/+/#"]
        );
    }

    #[test]
    fn a_rewrite_into_a_dollar_topic_is_dropped() {
        let r = rules("[[rules]]\nfilter = \"a/+\"\nrewrite_topic = \"{1}/x\"");
        assert_eq!(r.apply("c", "a/$SYS", b"", &[]), Outcome::Drop(0x90));
        assert_eq!(
            r.apply("c", "a/b", b"", &[]),
            Outcome::Modify {
                topic: Some("b/x".into()),
                user_properties: None
            }
        );
    }

    #[test]
    fn stamps_replace_client_supplied_properties() {
        let r = rules(
            r##"
            [[rules]]
            filter = "#"
            stamp_time_property = "received-at"
            stamp_client_id_property = "client-id"
            "##,
        );
        let sent = props(&[("client-id", "forged"), ("unit", "C"), ("received-at", "0")]);
        // The broker replaces the forged `received-at` when it sets the time stamp.
        assert_eq!(
            r.apply("real", "t", b"", &sent),
            Outcome::Modify {
                topic: None,
                user_properties: Some(props(&[
                    ("unit", "C"),
                    ("received-at", "0"),
                    ("client-id", "real")
                ]))
            }
        );
        assert_eq!(r.matching("t").time_stamps(), ["received-at"]);
        // Nothing to change: Pass, not a copy.
        let already = props(&[("received-at", "5"), ("client-id", "me")]);
        assert_eq!(r.apply("me", "t", b"", &already), Outcome::Pass);
    }

    #[test]
    fn time_stamps_are_the_brokers_and_the_last_stamp_of_a_name_wins() {
        let r = rules(
            r##"
            [[rules]]
            filter = "a/#"
            stamp_time_property = "t1"
            stamp_client_id_property = "c"

            [[rules]]
            filter = "a/b"
            stamp_time_property = "c"
            stamp_client_id_property = "t1"

            [[rules]]
            filter = "a/+"
            stamp_time_property = "t2"
            "##,
        );
        // `t1`: the time, then the client id (it stays in the patch); `c`: the other way round (the
        // broker's time stamp comes after the patch).
        assert_eq!(r.matching("a/b").time_stamps(), ["c", "t2"]);
        assert_eq!(
            r.apply("me", "a/b", b"", &[]),
            Outcome::Modify {
                topic: None,
                user_properties: Some(props(&[("t1", "me")]))
            }
        );
        assert_eq!(r.matching("a/x/y").time_stamps(), ["t1"]);
        assert_eq!(r.matching("elsewhere").time_stamps(), Vec::<&str>::new());
    }

    #[test]
    fn all_matching_rules_apply_and_the_first_rewrite_wins() {
        let r = rules(
            r##"
            [[rules]]
            filter = "a/#"
            stamp_client_id_property = "who"
            [[rules]]
            filter = "a/+"
            rewrite_topic = "first/{1}"
            [[rules]]
            filter = "#"
            rewrite_topic = "second/{1}"
            stamp_client_id_property = "who2"
            "##,
        );
        assert_eq!(
            r.apply("c", "a/b", b"", &[]),
            Outcome::Modify {
                topic: Some("first/b".into()),
                user_properties: Some(props(&[("who", "c"), ("who2", "c")]))
            }
        );
        assert_eq!(
            r.apply("c", "z", b"", &[]),
            Outcome::Modify {
                topic: Some("second/z".into()),
                user_properties: Some(props(&[("who2", "c")]))
            }
        );
    }

    #[test]
    fn size_limit() {
        let r = rules(
            r##"
            [[rules]]
            filter = "big/#"
            max_payload_bytes = 4
            [[rules]]
            filter = "custom/#"
            max_payload_bytes = 0
            oversize_reason = 0x80
            "##,
        );
        assert_eq!(r.apply("c", "big/x", b"1234", &[]), Outcome::Pass);
        assert_eq!(r.apply("c", "big/x", b"12345", &[]), Outcome::Drop(0x97));
        assert_eq!(r.apply("c", "custom", b"", &[]), Outcome::Pass);
        assert_eq!(r.apply("c", "custom", b"1", &[]), Outcome::Drop(0x80));
        assert_eq!(r.apply("c", "other", b"12345", &[]), Outcome::Pass);
    }

    #[test]
    fn reusable_sizes_are_those_with_the_same_outcome() {
        let r = rules(
            r##"
            [[rules]]
            filter = "a/#"
            max_payload_bytes = 10
            oversize_reason = 0x80
            [[rules]]
            filter = "a/+"
            max_payload_bytes = 4
            [[rules]]
            filter = "a/b"
            max_payload_bytes = 7
            stamp_client_id_property = "id"
            [[rules]]
            filter = "j/#"
            max_payload_bytes = 7
            [[rules]]
            filter = "j/b"
            require_json = true
            "##,
        );
        let matching = r.matching("a/b");
        let sizes = |size| matching.reusable_sizes(size).expect("no JSON check");
        assert_eq!(sizes(0), 0..=4);
        assert_eq!(sizes(4), 0..=4);
        assert_eq!(sizes(5), 5..=7);
        assert_eq!(sizes(8), 8..=10);
        assert_eq!(sizes(11), 11..=usize::MAX);
        // Every size in the range has the outcome of the size it was asked for. (Not every size with
        // that outcome is in it: 5 and 8 both fail the limit of 4 first.)
        let outcome = |size: usize| matching.apply("c", &vec![b'x'; size], &[]);
        for size in 0..=12 {
            for other in sizes(size).take_while(|other| *other <= 12) {
                assert_eq!(outcome(other), outcome(size), "{size} and {other}");
            }
        }
        assert_ne!(outcome(4), outcome(5));
        assert_ne!(outcome(10), outcome(11));
        assert_eq!(r.matching("x").reusable_sizes(3), Some(0..=usize::MAX));
        assert_eq!(r.matching("j/a").reusable_sizes(3), Some(0..=7));
        assert_eq!(r.matching("j/b").reusable_sizes(3), None);
    }

    #[test]
    fn json_validation() {
        let r = rules("[[rules]]\nfilter = \"j/#\"\nrequire_json = true");
        for ok in [
            &b"{}"[..],
            b"[1, 2.5e3, \"x\", null]",
            b" true ",
            b"\"\xc3\xa9\"",
        ] {
            assert_eq!(r.apply("c", "j", ok, &[]), Outcome::Pass, "{ok:?}");
        }
        for bad in [
            &b""[..],
            b"{",
            b"{'a': 1}",
            b"{} {}",
            b"nul",
            b"\"\xff\"",
            b"[1,]",
        ] {
            assert_eq!(r.apply("c", "j", bad, &[]), Outcome::Drop(0x99), "{bad:?}");
        }
        assert_eq!(r.apply("c", "k", b"{", &[]), Outcome::Pass);
        let custom =
            rules("[[rules]]\nfilter = \"#\"\nrequire_json = true\ninvalid_json_reason = 0x83");
        assert_eq!(custom.apply("c", "k", b"{", &[]), Outcome::Drop(0x83));
    }

    #[test]
    fn drops_come_before_modifications() {
        let r = rules(
            r##"
            [[rules]]
            filter = "#"
            rewrite_topic = "x/{1}"
            [[rules]]
            filter = "#"
            require_json = true
            "##,
        );
        assert_eq!(r.apply("c", "t", b"nope", &[]), Outcome::Drop(0x99));
    }

    #[test]
    fn config_errors_name_rule_and_key() {
        let cases = [
            ("filter = \"a/#/b\"\nrequire_json = true", "rules[0].filter"),
            ("filter = \"a\"", "rules[0].filter: the rule does nothing"),
            (
                "filter = \"a/+\"\nrewrite_topic = \"b/{2}\"",
                "rules[0].rewrite_topic",
            ),
            (
                "filter = \"a/+\"\nrewrite_topic = \"b/{0}\"",
                "rules[0].rewrite_topic",
            ),
            (
                "filter = \"a/+\"\nrewrite_topic = \"b/{x}\"",
                "rules[0].rewrite_topic",
            ),
            (
                "filter = \"a/+\"\nrewrite_topic = \"b/{1\"",
                "rules[0].rewrite_topic",
            ),
            (
                "filter = \"a/+\"\nrewrite_topic = \"b/}\"",
                "rules[0].rewrite_topic",
            ),
            (
                "filter = \"a/+\"\nrewrite_topic = \"b/+\"",
                "rules[0].rewrite_topic",
            ),
            (
                "filter = \"a/+\"\nrewrite_topic = \"{1}\"",
                "rules[0].rewrite_topic",
            ),
            (
                "filter = \"a/+\"\nrewrite_topic = \"$SYS/{1}\"",
                "rules[0].rewrite_topic",
            ),
            (
                "filter = \"a\"\nrewrite_topic = \"\"",
                "rules[0].rewrite_topic",
            ),
            (
                "filter = \"a\"\nstamp_time_property = \"\"",
                "rules[0].stamp_time_property",
            ),
            (
                "filter = \"a\"\nstamp_time_property = \"p\"\nstamp_client_id_property = \"p\"",
                "rules[0].stamp_client_id_property",
            ),
            (
                "filter = \"a\"\nmax_payload_bytes = 1\noversize_reason = 0x01",
                "rules[0].oversize_reason",
            ),
            (
                "filter = \"a\"\nrequire_json = true\noversize_reason = 0x97",
                "rules[0].oversize_reason",
            ),
            (
                "filter = \"a\"\nrequire_json = true\ninvalid_json_reason = 0x86",
                "rules[0].invalid_json_reason",
            ),
            (
                "filter = \"a\"\nmax_payload_bytes = 1\ninvalid_json_reason = 0x99",
                "rules[0].invalid_json_reason",
            ),
        ];
        for (rule, needle) in cases {
            let text =
                format!("[[rules]]\nfilter = \"ok\"\nrequire_json = true\n[[rules]]\n{rule}");
            let e = error(&text);
            let needle = needle.replace("rules[0]", "rules[1]");
            assert!(e.starts_with(&needle), "{rule:?}: {e}");
        }
    }

    #[test]
    fn unknown_keys_are_refused_by_the_deserializer() {
        assert!(toml::from_str::<Config>("[[rules]]\nfilter = \"a\"\nfrom = \"b\"").is_err());
        assert!(toml::from_str::<Config>("rule = []").is_err());
        let empty: Config = toml::from_str("rules = []").unwrap();
        let r = Rules::from_config(empty).unwrap();
        assert_eq!(r.filters().count(), 0);
        assert_eq!(r.apply("c", "t", b"", &[]), Outcome::Pass);
    }

    #[test]
    fn capture_edge_cases() {
        assert_eq!(captures("a/+/c", "a//c"), Some(vec![""]));
        assert_eq!(captures("a/+", "a"), None);
        assert_eq!(captures("a/b", "a/b/c"), None);
        assert_eq!(captures("#", "x/y"), Some(vec!["x/y"]));
        assert_eq!(captures("a/#", "a"), Some(vec![""]));
        assert_eq!(captures("a/#", "a/"), Some(vec![""]));
        assert_eq!(captures("+/#", "a/b/c"), Some(vec!["a", "b/c"]));
        assert_eq!(captures("$SYS/#", "$SYS/x"), Some(vec!["x"]));
    }

    /// `apply` selects rules with the SDK's `matches` and captures only for the rewrite: both must agree.
    #[test]
    fn captures_match_exactly_where_the_sdk_matches() {
        let levels = ["a", "b", "", "$s", "+", "#"];
        let mut filters = vec!["#".to_owned(), "+".to_owned()];
        let mut topics = vec!["a".to_owned(), "$s".to_owned(), "".to_owned()];
        for x in levels {
            for y in levels {
                filters.push(format!("{x}/{y}"));
                for z in levels {
                    filters.push(format!("{x}/{y}/{z}"));
                }
                if !x.contains(['+', '#']) && !y.contains(['+', '#']) {
                    topics.push(format!("{x}/{y}"));
                    topics.push(format!("{x}/{y}/a"));
                }
            }
        }
        filters.retain(|f| valid_filter(f));
        for f in &filters {
            for t in topics.iter().filter(|t| !t.is_empty()) {
                assert_eq!(
                    captures(f, t).is_some(),
                    wasp_plugin_sdk::topic::matches(f, t),
                    "{f:?} {t:?}"
                );
            }
        }
    }
}
