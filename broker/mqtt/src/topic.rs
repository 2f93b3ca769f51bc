//! The rules of topic names and topic filters (MQTT 3.1.1 and 5.0, section 4.7), shared-subscription filters
//! (MQTT 5.0, section 4.8.2) and filter matching.
//!
//! Everything here is pure and allocation-free. [`matches`] is the reference definition of matching: the
//! broker's subscription tree and retained-message store are tested against it.

use thiserror::Error;

pub use crate::filter_tree::FilterTree;

/// The maximum length in bytes of a topic name or filter: an MQTT UTF-8 string is at most 65535 bytes.
pub const MAX_TOPIC_LEN: usize = 65_535;

/// The prefix of a shared-subscription filter: `$share/{group}/{filter}`.
pub const SHARED_PREFIX: &str = "$share/";

/// Why a topic name or filter is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TopicError {
    /// A topic name or filter must be at least one character long.
    #[error("topic is empty")]
    Empty,
    /// A topic name or filter is longer than 65535 bytes.
    #[error("topic is longer than 65535 bytes")]
    TooLong,
    /// A topic name contains a wildcard character ('+' or '#').
    #[error("topic name contains a wildcard character ('+' or '#')")]
    WildcardInName,
    /// A topic filter uses a wildcard in a wrong place: '#' must be alone in the last level, '+' alone in its
    /// level.
    #[error("invalid wildcard: '#' must be alone in the last level and '+' alone in its level")]
    InvalidWildcard,
    /// A topic name or filter contains the null character U+0000.
    #[error("topic contains the null character U+0000")]
    NulCharacter,
    /// A `$share/{group}/{filter}` filter is malformed; the message names the problem.
    #[error("invalid shared subscription: {0}")]
    InvalidSharedSubscription(&'static str),
}

/// Checks the rules common to names and filters: non-empty, at most [`MAX_TOPIC_LEN`] bytes, no U+0000.
fn validate_common(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    if topic.as_bytes().contains(&0) {
        return Err(TopicError::NulCharacter);
    }
    Ok(())
}

/// Validates a topic name (the topic of a PUBLISH or a Will): non-empty, at most 65535 bytes, no wildcard
/// character and no U+0000. Empty levels (`"a//b"`, `"/a"`) and a leading `'$'` are allowed.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    validate_common(name)?;
    if name.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Validates a plain topic filter: non-empty, at most 65535 bytes, no U+0000, `'#'` only alone in the last
/// level and `'+'` only alone in its level.
///
/// A shared-subscription filter (`$share/group/filter`) passes this check as a plain filter; use
/// [`parse_filter`] to recognise it.
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    validate_common(filter)?;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') && (level != "#" || levels.peek().is_some()) {
            return Err(TopicError::InvalidWildcard);
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::InvalidWildcard);
        }
    }
    Ok(())
}

/// A validated topic filter of SUBSCRIBE / UNSUBSCRIBE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Filter<'a> {
    /// An ordinary filter.
    Plain(&'a str),
    /// A shared subscription `$share/{group}/{filter}`: each message matching `filter` goes to one member of
    /// `group`.
    Shared {
        /// The share name: non-empty, without `'/'`, `'+'` or `'#'`.
        group: &'a str,
        /// The filter proper, after the share name.
        filter: &'a str,
    },
}

impl<'a> Filter<'a> {
    /// The filter messages are matched against (for a shared subscription, the part after the group).
    pub fn filter(&self) -> &'a str {
        match *self {
            Self::Plain(filter) | Self::Shared { filter, .. } => filter,
        }
    }

    /// The share name of a shared subscription.
    pub fn group(&self) -> Option<&'a str> {
        match *self {
            Self::Plain(_) => None,
            Self::Shared { group, .. } => Some(group),
        }
    }
}

/// Validates a topic filter and recognises a shared subscription `$share/{group}/{filter}` (MQTT 5.0 section
/// 4.8.2): the group must be non-empty and contain no `'+'` or `'#'` (it ends at the first `'/'`), and the
/// filter after it must be a non-empty valid filter.
///
/// A filter that merely starts with `"$share"` without the following `'/'` (e.g. `"$share"`, `"$shared/x"`)
/// is a plain filter. Whether shared subscriptions are allowed at all (they are not in MQTT 3.x) is the
/// caller's decision.
pub fn parse_filter(filter: &str) -> Result<Filter<'_>, TopicError> {
    validate_common(filter)?;
    let Some(rest) = filter.strip_prefix(SHARED_PREFIX) else {
        validate_topic_filter(filter)?;
        return Ok(Filter::Plain(filter));
    };
    let Some((group, inner)) = rest.split_once('/') else {
        return Err(TopicError::InvalidSharedSubscription(
            "missing '/' and filter after the share name",
        ));
    };
    if group.is_empty() {
        return Err(TopicError::InvalidSharedSubscription("empty share name"));
    }
    if group.contains(['+', '#']) {
        return Err(TopicError::InvalidSharedSubscription(
            "share name contains a wildcard character",
        ));
    }
    if inner.is_empty() {
        return Err(TopicError::InvalidSharedSubscription(
            "empty filter after the share name",
        ));
    }
    validate_topic_filter(inner)?;
    Ok(Filter::Shared {
        group,
        filter: inner,
    })
}

/// Whether the plain topic filter `filter` matches the topic name `topic` (both assumed valid).
///
/// `'+'` matches exactly one level (possibly empty), `'#'` matches its level and every level below,
/// including the parent level (`"a/#"` matches `"a"`). A topic starting with `'$'` is not matched by a filter
/// starting with a wildcard (`"#"` and `"+/x"` do not match `"$SYS/x"`).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    // Bytes, not `str::split`: '/' is ASCII, and in a WebAssembly plugin (the SDK re-exports this
    // function) `split`'s generic searcher cost ~1 000 instructions more per match of `bench/#` against
    // `bench/1` (callgrind, `transform_call_cost`).
    let (mut filter, mut topic) = (filter.as_bytes(), topic.as_bytes());
    loop {
        // Both start at a level here.
        let (level, filter_rest) = first_level(filter);
        if level == b"#" {
            return true;
        }
        let (topic_level, topic_rest) = first_level(topic);
        if level != b"+" && level != topic_level {
            return false;
        }
        match (filter_rest, topic_rest) {
            (Some(f), Some(t)) => (filter, topic) = (f, t),
            (None, None) => return true,
            // `a/#` matches `a`: the topic has no more levels, the filter's next one must be `#`.
            (Some(f), None) => return first_level(f).0 == b"#",
            (None, Some(_)) => return false,
        }
    }
}

/// `name`'s first level and, when there is a '/', what follows it.
fn first_level(name: &[u8]) -> (&[u8], Option<&[u8]>) {
    match name.iter().position(|&b| b == b'/') {
        Some(at) => (&name[..at], Some(&name[at + 1..])),
        None => (name, None),
    }
}

/// The levels of a topic name or filter: what `name.split('/')` yields, found by a plain byte loop ('/' is
/// ASCII), for the tries that walk topics level by level ([`FilterTree`], the broker's subscription tree):
/// 15-26 % faster than `str::split` in `cargo bench -p wasp-mqtt --bench topic -- FilterTree`. ([`matches`]
/// compares byte slices instead, 16-50 % faster again than over `Levels`.)
pub fn levels(name: &str) -> Levels<'_> {
    Levels { rest: Some(name) }
}

/// The iterator of [`levels`].
#[derive(Debug, Clone)]
pub struct Levels<'t> {
    /// What follows the last '/' found; `None` once the last level was returned.
    rest: Option<&'t str>,
}

impl<'t> Iterator for Levels<'t> {
    type Item = &'t str;

    fn next(&mut self) -> Option<&'t str> {
        let rest = self.rest?;
        let (level, after) = first_level(rest.as_bytes());
        // `level` ends at a '/' (ASCII) or at the end: both are character boundaries.
        let end = level.len();
        self.rest = after.map(|_| &rest[end + 1..]);
        Some(&rest[..end])
    }
}

impl std::iter::FusedIterator for Levels<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn valid_names() {
        for name in [
            "a",
            "sport/tennis/player1",
            "/",
            "/finance",
            "a//b",
            "$SYS/broker/load",
            " ",
            "sport/tennis/player1/ranking",
            "ü/ñ",
        ] {
            assert_eq!(validate_topic_name(name), Ok(()), "{name:?}");
        }
    }

    #[test]
    fn invalid_names() {
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_name("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a/#"), Err(TopicError::WildcardInName));
        assert_eq!(
            validate_topic_name("sport+"),
            Err(TopicError::WildcardInName)
        );
        assert_eq!(validate_topic_name("a\0b"), Err(TopicError::NulCharacter));
        let long = "a".repeat(MAX_TOPIC_LEN + 1);
        assert_eq!(validate_topic_name(&long), Err(TopicError::TooLong));
        assert_eq!(validate_topic_name(&long[1..]), Ok(()));
    }

    #[test]
    fn valid_filters() {
        for filter in [
            "#",
            "+",
            "+/+",
            "/+",
            "+/",
            "sport/tennis/player1/#",
            "sport/#",
            "sport/+",
            "sport/+/player1",
            "+/tennis/#",
            "a//b",
            "$SYS/#",
            "$share",
            "/",
        ] {
            assert_eq!(validate_topic_filter(filter), Ok(()), "{filter:?}");
        }
    }

    #[test]
    fn invalid_filters() {
        for filter in [
            "sport/tennis#",
            "sport/tennis/#/ranking",
            "sport+",
            "+sport",
            "sport/+tennis",
            "##",
            "#/",
            "#/a",
            "++",
            "a/b+/c",
        ] {
            assert_eq!(
                validate_topic_filter(filter),
                Err(TopicError::InvalidWildcard),
                "{filter:?}"
            );
        }
        assert_eq!(validate_topic_filter(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_filter("a/\0"), Err(TopicError::NulCharacter));
        let long = "+/".repeat(MAX_TOPIC_LEN / 2 + 1);
        assert_eq!(validate_topic_filter(&long), Err(TopicError::TooLong));
    }

    #[test]
    fn parse_plain_and_shared() {
        assert_eq!(parse_filter("a/+"), Ok(Filter::Plain("a/+")));
        assert_eq!(parse_filter("$share"), Ok(Filter::Plain("$share")));
        assert_eq!(parse_filter("$shared/x"), Ok(Filter::Plain("$shared/x")));
        assert_eq!(
            parse_filter("$share/g1/sport/#"),
            Ok(Filter::Shared {
                group: "g1",
                filter: "sport/#"
            })
        );
        assert_eq!(
            parse_filter("$share/g/#"),
            Ok(Filter::Shared {
                group: "g",
                filter: "#"
            })
        );
        let shared = parse_filter("$share/consumers//a").unwrap();
        assert_eq!(shared.group(), Some("consumers"));
        assert_eq!(shared.filter(), "/a");
        assert_eq!(parse_filter("x/y").unwrap().group(), None);
        assert_eq!(parse_filter("x/y").unwrap().filter(), "x/y");
    }

    #[test]
    fn parse_invalid() {
        assert_eq!(parse_filter(""), Err(TopicError::Empty));
        assert_eq!(parse_filter("a/#/b"), Err(TopicError::InvalidWildcard));
        for filter in [
            "$share/",
            "$share//a",
            "$share/g",
            "$share/g/",
            "$share/g+/a",
            "$share/+/a",
            "$share/#/a",
            "$share/g#/a",
        ] {
            assert!(
                matches!(
                    parse_filter(filter),
                    Err(TopicError::InvalidSharedSubscription(_))
                ),
                "{filter:?}: {:?}",
                parse_filter(filter)
            );
        }
        assert_eq!(
            parse_filter("$share/g/a#"),
            Err(TopicError::InvalidWildcard)
        );
        assert_eq!(parse_filter("$share/g/a\0"), Err(TopicError::NulCharacter));
    }

    #[test]
    fn error_messages_name_the_problem() {
        let msg = parse_filter("$share//a").unwrap_err().to_string();
        assert!(msg.contains("empty share name"), "{msg}");
    }

    #[test]
    fn multi_level_wildcard() {
        let f = "sport/tennis/player1/#";
        assert!(matches(f, "sport/tennis/player1"));
        assert!(matches(f, "sport/tennis/player1/ranking"));
        assert!(matches(f, "sport/tennis/player1/score/wimbledon"));
        assert!(!matches(f, "sport/tennis/player2"));
        assert!(!matches(f, "sport/tennis"));
        assert!(matches("sport/#", "sport"));
        assert!(matches("sport/#", "sport/"));
        assert!(matches("#", "sport/tennis"));
        assert!(matches("#", "/"));
        assert!(!matches("sport/#", "sports"));
    }

    #[test]
    fn single_level_wildcard() {
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(matches("sport/tennis/+", "sport/tennis/player2"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(matches("sport/+", "sport/"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("+", "finance"));
        assert!(matches("+/tennis/#", "sport/tennis/x/y"));
        assert!(matches("sport/+/player1", "sport/tennis/player1"));
    }

    #[test]
    fn empty_levels() {
        assert!(matches("a//b", "a//b"));
        assert!(!matches("a//b", "a/b"));
        assert!(matches("a/+/b", "a//b"));
        assert!(matches("/", "/"));
        assert!(matches("+/+", "/"));
        assert!(!matches("+", "/"));
        assert!(matches("a/", "a/"));
        assert!(!matches("a/", "a"));
    }

    #[test]
    fn dollar_topics() {
        assert!(!matches("#", "$SYS/broker"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS"));
        assert!(!matches("+", "$SYS"));
        // Only the first level is special.
        assert!(matches("a/#", "a/$b"));
        assert!(matches("a/+", "a/$b"));
        assert!(matches("/+", "/$b"));
    }

    #[test]
    fn exact() {
        assert!(matches("a/b", "a/b"));
        assert!(!matches("a/b", "a/c"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(!matches("a/b/c", "a/b"));
        assert!(!matches("A", "a"));
    }

    fn level() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["a", "b", "", "$x"])
    }

    fn topic() -> impl Strategy<Value = String> {
        prop::collection::vec(level(), 1..5)
            .prop_map(|l| l.join("/"))
            .prop_filter("a topic name is not empty", |t| !t.is_empty())
    }

    proptest! {
        /// A filter equal to a topic, or derived from it by replacing levels with '+' or a suffix with '#',
        /// matches it, respecting the '$' rule.
        #[test]
        fn derived_filters_match(
            levels in prop::collection::vec(level(), 1..6),
            plus in prop::collection::vec(any::<bool>(), 6),
            cut in 0usize..7,
        ) {
            let topic = levels.join("/");
            prop_assume!(!topic.is_empty());
            prop_assert_eq!(validate_topic_name(&topic), Ok(()));
            prop_assert!(matches(&topic, &topic));
            let mut filter: Vec<&str> = levels
                .iter()
                .zip(&plus)
                .map(|(l, p)| if *p { "+" } else { *l })
                .collect();
            if cut <= filter.len() {
                filter.truncate(cut);
                filter.push("#");
            }
            let filter = filter.join("/");
            prop_assert_eq!(validate_topic_filter(&filter), Ok(()));
            let dollar_excluded = topic.starts_with('$') && filter.starts_with(['+', '#']);
            prop_assert_eq!(matches(&filter, &topic), !dollar_excluded);
        }

        /// `levels` splits exactly as `str::split('/')` does, whatever the text (multi-byte characters,
        /// empty levels, no '/').
        #[test]
        fn levels_are_split_at_slashes(name in "[a/é+#$\u{10000}]{0,12}") {
            prop_assert_eq!(levels(&name).collect::<Vec<_>>(), name.split('/').collect::<Vec<_>>());
        }

        /// A topic name never matches a different topic name used as a filter.
        #[test]
        fn names_match_only_themselves(a in topic(), b in topic()) {
            prop_assert_eq!(matches(&a, &b), a == b);
        }
    }
}
