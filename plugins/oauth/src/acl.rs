//! The ACL a token grants, carried from authentication to authorization in session attributes.
//!
//! At authentication, the filters listed in the configured claims (an array of strings, or one string
//! of space-separated filters like an OAuth `scope`) are substituted (`%c`: client id, `%u`: user
//! name), validated, and stored in the session attributes [`ATTR_PUBLISH`] and [`ATTR_SUBSCRIBE`] as
//! JSON arrays of strings. The authorizer hooks read them back: a publish is allowed when a filter
//! matches the topic, a subscription when a filter covers every topic the requested filter can match.

use serde_json::Value;
use wasp_plugin_sdk::topic;

/// Session attribute: JSON array of the topic filters the client may publish to.
pub const ATTR_PUBLISH: &str = "oauth:publish";
/// Session attribute: JSON array of the topic filters the client may subscribe within.
pub const ATTR_SUBSCRIBE: &str = "oauth:subscribe";

/// The filters of a claim: an array of strings, or a string of space-separated filters. Anything else
/// (a number, an object, an array with a non-string) grants nothing.
pub fn claim_filters(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => s.split_ascii_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// Substitutes `%c` and `%u` in `filter`. `None` (the filter grants nothing) when a substituted value
/// is missing or empty, or holds `/`, `+` or `#`: a client id like `a/#` must not widen
/// `devices/%c/#` to someone else's topics. The result must be a valid topic filter.
pub fn substitute(filter: &str, client_id: &str, username: Option<&str>) -> Option<String> {
    fn safe(value: &str) -> bool {
        !value.is_empty() && !value.contains(['/', '+', '#'])
    }
    let mut out = String::with_capacity(filter.len());
    let mut rest = filter;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        match after.chars().next() {
            Some('c') => {
                if !safe(client_id) {
                    return None;
                }
                out.push_str(client_id);
            }
            Some('u') => {
                let username = username.filter(|u| safe(u))?;
                out.push_str(username);
            }
            _ => {
                out.push('%');
                rest = after;
                continue;
            }
        }
        rest = &after[1..];
    }
    out.push_str(rest);
    topic::valid_filter(&out).ok()?;
    Some(out)
}

/// The substituted, valid filters of `filters`; the others are dropped (and returned second, for the
/// log).
pub fn resolve(
    filters: &[String],
    client_id: &str,
    username: Option<&str>,
) -> (Vec<String>, Vec<String>) {
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for filter in filters {
        match substitute(filter, client_id, username) {
            Some(f) => kept.push(f),
            None => dropped.push(filter.clone()),
        }
    }
    (kept, dropped)
}

/// The JSON text of a filter list attribute.
pub fn encode(filters: &[String]) -> String {
    serde_json::to_string(filters).unwrap_or_else(|_| "[]".to_owned())
}

/// The filter list in a session attribute's value; `None` when it is not a JSON array of strings.
pub fn decode(value: &str) -> Option<Vec<String>> {
    serde_json::from_str(value).ok()
}

/// Whether one of `filters` matches the topic name `topic`.
pub fn may_publish(filters: &[String], topic_name: &str) -> bool {
    filters.iter().any(|f| topic::matches(f, topic_name))
}

/// Whether one of `filters` covers the requested subscription `requested` (plain or shared: the
/// filter after the share name counts).
pub fn may_subscribe(filters: &[String], requested: &str) -> bool {
    let Ok(parsed) = topic::parse_filter(requested) else {
        return false;
    };
    let requested = parsed.filter();
    filters.iter().any(|f| covers(f, requested))
}

/// Whether every topic matched by `requested` is matched by `granted` (both valid plain filters).
pub fn covers(granted: &str, requested: &str) -> bool {
    // A wildcard first level never matches `$` topics, so it cannot cover a filter reaching them.
    if granted.starts_with(['+', '#']) && requested.starts_with('$') {
        return false;
    }
    let mut g = granted.split('/');
    let mut r = requested.split('/');
    loop {
        match (g.next(), r.next()) {
            (Some("#"), _) => return true,
            (None, None) => return true,
            // `a/#` requested also matches `a` itself, which `a/+` or `a/b` do not cover; a longer
            // granted filter cannot cover a shorter requested one.
            (Some(_), None) | (None, Some(_)) => return false,
            (Some(_), Some("#")) => return false,
            (Some("+"), Some(_)) => {}
            (Some(_), Some("+")) => return false,
            (Some(gl), Some(rl)) if gl == rl => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims_as_arrays_or_space_separated_strings() {
        assert_eq!(claim_filters(Some(&json!(["a/#", "b/+"]))), ["a/#", "b/+"]);
        assert_eq!(claim_filters(Some(&json!("a/#  b/+"))), ["a/#", "b/+"]);
        assert!(claim_filters(Some(&json!(["a", 1]))).is_empty());
        assert!(claim_filters(Some(&json!({"a": 1}))).is_empty());
        assert!(claim_filters(None).is_empty());
    }

    #[test]
    fn substitution_refuses_values_that_widen_the_filter() {
        assert_eq!(
            substitute("devices/%c/#", "dev1", None).as_deref(),
            Some("devices/dev1/#")
        );
        assert_eq!(
            substitute("u/%u/%c", "c1", Some("ann")).as_deref(),
            Some("u/ann/c1")
        );
        assert_eq!(
            substitute("a/%x/100%", "c", None).as_deref(),
            Some("a/%x/100%")
        );
        for bad in ["a/#", "+", "#", "a/b", ""] {
            assert_eq!(substitute("devices/%c/#", bad, None), None, "{bad:?}");
            assert_eq!(substitute("devices/%u", "c", Some(bad)), None, "{bad:?}");
        }
        assert_eq!(substitute("devices/%u", "c", None), None);
        assert_eq!(substitute("a/#/b", "c", None), None);
        let (kept, dropped) = resolve(&["x/%c".into(), "y/%u".into()], "c1", None);
        assert_eq!(
            (kept, dropped),
            (vec!["x/c1".to_owned()], vec!["y/%u".to_owned()])
        );
    }

    #[test]
    fn attributes_round_trip() {
        let filters = vec!["a/#".to_owned(), "b\n\"c\"".to_owned()];
        assert_eq!(decode(&encode(&filters)), Some(filters));
        assert_eq!(decode("a/#"), None);
    }

    #[test]
    fn publish_matches_topics() {
        let filters = vec!["devices/dev1/#".to_owned(), "shared/+/in".to_owned()];
        assert!(may_publish(&filters, "devices/dev1"));
        assert!(may_publish(&filters, "devices/dev1/temp"));
        assert!(may_publish(&filters, "shared/x/in"));
        assert!(!may_publish(&filters, "devices/dev2/temp"));
        assert!(!may_publish(&filters, "shared/x/y/in"));
        assert!(!may_publish(&["#".to_owned()], "$SYS/x"));
    }

    #[test]
    fn subscribe_needs_a_covering_filter() {
        let granted = vec!["devices/dev1/#".to_owned(), "status/+".to_owned()];
        for ok in [
            "devices/dev1/#",
            "devices/dev1",
            "devices/dev1/+/t",
            "status/+",
            "status/a",
            "$share/g/devices/dev1/x",
        ] {
            assert!(may_subscribe(&granted, ok), "{ok}");
        }
        for no in [
            "devices/#",
            "devices/+/x",
            "#",
            "status/#",
            "status/a/b",
            "status",
            "$share/g/#",
            "a/#/b",
        ] {
            assert!(!may_subscribe(&granted, no), "{no}");
        }
        assert!(covers("#", "a/#"));
        assert!(!covers("#", "$SYS/#"));
        assert!(!covers("+/x", "$SYS/x"));
        assert!(covers("$SYS/#", "$SYS/broker/+"));
        assert!(covers("a/+", "a/+"));
        assert!(!covers("a/b", "a/+"));
    }
}
