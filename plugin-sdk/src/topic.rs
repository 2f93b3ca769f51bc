//! MQTT topic rules: filter validation and matching, the same code the broker uses (from `wasp-mqtt`).
//!
//! ```
//! use wasp_plugin_sdk::topic;
//!
//! assert!(topic::matches("sensors/+/temp", "sensors/kitchen/temp"));
//! assert!(topic::matches("sensors/#", "sensors"));
//! assert!(!topic::matches("#", "$SYS/uptime"));
//! assert!(topic::valid_filter("a/+/#").is_ok());
//! assert!(topic::valid_filter("a/#/b").is_err());
//! ```

pub use wasp_mqtt::topic::{Filter, TopicError, parse_filter};

/// Whether the topic filter `filter` matches the topic name `topic` (both assumed valid).
///
/// `'+'` matches exactly one level, `'#'` its level and every level below (`"a/#"` also matches `"a"`), and a
/// filter starting with a wildcard does not match a topic starting with `'$'`. For a shared subscription
/// (`$share/group/filter`), match the part after the group: [`Filter::filter`] from [`parse_filter`].
pub fn matches(filter: &str, topic: &str) -> bool {
    wasp_mqtt::topic::matches(filter, topic)
}

/// Checks a plain topic filter: non-empty, at most 65535 bytes, no U+0000, `'#'` only alone in the last
/// level and `'+'` only alone in its level.
pub fn valid_filter(filter: &str) -> Result<(), TopicError> {
    wasp_mqtt::topic::validate_topic_filter(filter)
}

/// Checks a topic name (the topic of a PUBLISH): non-empty, at most 65535 bytes, no wildcard, no U+0000.
/// A transformer that rewrites topics should check its result with this.
pub fn valid_name(topic: &str) -> Result<(), TopicError> {
    wasp_mqtt::topic::validate_topic_name(topic)
}
