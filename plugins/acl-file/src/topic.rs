//! MQTT topic filter matching, covering and overlap, with mosquitto's `$` rule: a filter whose first
//! level is a wildcard matches no topic starting with `$`. Validation and matching are the broker's
//! (through the SDK); covering and overlap, which the broker does not need, are here.

use wasp_plugin_sdk::topic;

/// Whether `topic` is a valid topic name: the broker's own rule (`wasp_plugin_sdk::topic`).
pub fn valid_topic(topic: &str) -> bool {
    topic::valid_name(topic).is_ok()
}

/// Whether `filter` is a valid topic filter: the broker's own rule (`wasp_plugin_sdk::topic`).
pub fn valid_filter(filter: &str) -> bool {
    topic::valid_filter(filter).is_ok()
}

fn is_wild(level: &str) -> bool {
    level == "+" || level == "#"
}

/// Whether topic name `topic` matches `filter` (both assumed valid): the broker's own matcher.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    topic::matches(filter, topic)
}

/// Whether every topic matched by filter `inner` is also matched by filter `outer`.
pub fn filter_covers(outer: &str, inner: &str) -> bool {
    if inner.starts_with('$') && outer.split('/').next().is_some_and(is_wild) {
        return false;
    }
    let mut o = outer.split('/');
    let mut i = inner.split('/');
    loop {
        match (o.next(), i.next()) {
            (Some("#"), _) => return true,
            (_, Some("#")) => return false,
            (Some("+"), Some(_)) => {}
            (Some(_), Some("+")) => return false,
            (Some(ol), Some(il)) if ol == il => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether some topic name is matched by both filters.
pub fn filters_overlap(a: &str, b: &str) -> bool {
    let first_a = a.split('/').next().unwrap_or("");
    let first_b = b.split('/').next().unwrap_or("");
    if (is_wild(first_a) && first_b.starts_with('$'))
        || (is_wild(first_b) && first_a.starts_with('$'))
    {
        return false;
    }
    let mut x = a.split('/');
    let mut y = b.split('/');
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(l), Some(r)) if l == r => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity() {
        for ok in [
            "a", "a/b", "/", "a//b", "+", "#", "a/+/c", "a/#", "+/+/#", "$SYS/#",
        ] {
            assert!(valid_filter(ok), "{ok}");
        }
        for bad in ["", "a+", "a/b#", "#/a", "a/#/b", "+a/b", "a/++"] {
            assert!(!valid_filter(bad), "{bad}");
        }
        assert!(valid_topic("a/b"));
        assert!(!valid_topic("a/+"));
        assert!(!valid_topic(""));
    }

    #[test]
    fn matching() {
        let cases = [
            ("a/b", "a/b", true),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/+", "a", false),
            ("a/+", "a/", true),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("a/#", "ab", false),
            ("#", "a/b", true),
            ("+/b", "/b", true),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("a/b", "a/b/", false),
        ];
        for (f, t, want) in cases {
            assert_eq!(filter_matches(f, t), want, "{f} vs {t}");
        }
    }

    #[test]
    fn covering() {
        let cases = [
            ("a/#", "a/#", true),
            ("a/#", "a", true),
            ("a/#", "a/+/c", true),
            ("a/+", "a/b", true),
            ("a/+", "a/+", true),
            ("a/+", "a/#", false),
            ("a/b", "a/+", false),
            ("a/+/c", "a/+/#", false),
            ("#", "a/#", true),
            ("#", "$SYS/#", false),
            ("$SYS/#", "$SYS/broker/+", true),
            ("a", "a/#", false),
            ("a/#", "#", false),
            ("+/+", "+/+/+", false),
        ];
        for (o, i, want) in cases {
            assert_eq!(filter_covers(o, i), want, "{o} covers {i}");
        }
    }

    #[test]
    fn overlapping() {
        let cases = [
            ("a/#", "#", true),
            ("a/+", "+/b", true),
            ("a/b", "a/c", false),
            ("a", "a/#", true),
            ("a/+", "a", false),
            ("a/+/c", "a/b/+", true),
            ("#", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("a/b/c", "a/b", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(filters_overlap(a, b), want, "{a} ~ {b}");
            assert_eq!(filters_overlap(b, a), want, "{b} ~ {a}");
        }
    }
}
