//! What operators do with Wasp's transform hook: rewrite topics, stamp the receive time and client id
//! as user properties, drop oversized payloads and payloads that are not JSON.
//!
//! Host-independent: [`Rules::from_config`] validates the configuration, [`Rules::matching`] selects
//! the rules for one topic and [`Matching::apply`] returns a patch for one message. [`TransformPlugin`]
//! is the WebAssembly plugin over them (built for `wasm32-wasip2`).

mod plugin;
mod rules;

pub use plugin::{REUSE_SECONDS, TransformPlugin};
pub use rules::{
    Config, Matching, Outcome, PAYLOAD_FORMAT_INVALID, QUOTA_EXCEEDED, RuleConfig, Rules,
};

wasp_plugin_sdk::export_plugin!(TransformPlugin);
