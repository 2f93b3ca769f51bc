//! What operators do with Wasp's transform hook: rewrite topics, stamp the receive time and client id
//! as user properties, drop oversized payloads and payloads that are not JSON.
//!
//! Host-independent: [`Rules::from_config`] validates the configuration, [`Rules::apply`] returns a
//! patch for one message.

mod rules;

pub use rules::{Config, Outcome, PAYLOAD_FORMAT_INVALID, QUOTA_EXCEEDED, RuleConfig, Rules};
