//! The WebAssembly glue: the [`Plugin`] the broker loads, over [`Guard::check`].
//!
//! Counters (published as `plugin.<name>.<counter>`): `oversize`, `invalid`, `schema` (drops by cause)
//! and `stamped`.

use wasp_plugin_sdk::{
    Hooks, Interests, Message, MessagePatch, Plugin, Session, TransformVerdict, UserProperty,
    metrics,
};

use crate::{Guard, Outcome};

/// Drops publishes that are not JSON objects with the required fields; stamps the others.
pub struct JsonGuardPlugin {
    guard: Guard,
}

impl Plugin for JsonGuardPlugin {
    fn init(config: wasp_plugin_sdk::Config) -> Result<Self, String> {
        Ok(Self {
            guard: Guard::from_config(config.as_str())?,
        })
    }

    fn interests(&self) -> Interests {
        Interests::hooks(Hooks::TRANSFORM).filters(self.guard.filters())
    }

    fn transform(&self, _session: &Session, message: Message) -> TransformVerdict {
        let properties: Vec<(String, String)> = message
            .user_properties
            .into_iter()
            .map(|p| (p.key, p.value))
            .collect();
        match self
            .guard
            .check(&message.topic, &message.payload, &properties)
        {
            Outcome::Pass => TransformVerdict::Pass,
            Outcome::Drop(code, counter) => {
                metrics::counter_add(counter, 1);
                TransformVerdict::Drop(code)
            }
            Outcome::Stamp(properties) => {
                metrics::counter_add("stamped", 1);
                TransformVerdict::Modify(MessagePatch {
                    user_properties: Some(
                        properties
                            .into_iter()
                            .map(|(key, value)| UserProperty { key, value })
                            .collect(),
                    ),
                    ..MessagePatch::new()
                })
            }
        }
    }
}
