//! The WebAssembly glue: the [`Plugin`] the broker loads, over [`Rules::apply`].
//!
//! The rules' filters are the plugin's publish filters, so the broker calls it only for topics some rule
//! may change. Counters: `dropped` and `modified` (published as `plugin.<name>.dropped`...).

use wasp_plugin_sdk::{
    Hooks, Interests, Message, MessagePatch, Plugin, Session, TransformVerdict, UserProperty,
    clock, metrics,
};

use crate::{Config, Outcome, Rules};

/// Rewrites, stamps and drops inbound messages by rules.
pub struct TransformPlugin {
    rules: Rules,
}

impl Plugin for TransformPlugin {
    fn init(config: wasp_plugin_sdk::Config) -> Result<Self, String> {
        let config: Config = config.parse()?;
        if config.rules.is_empty() {
            // No filter would mean every topic: the broker would call the plugin for nothing.
            return Err("plugin config: rules: no rule: the plugin would do nothing".to_owned());
        }
        let rules = Rules::from_config(config).map_err(|e| format!("plugin config: {e}"))?;
        Ok(Self { rules })
    }

    fn interests(&self) -> Interests {
        Interests::hooks(Hooks::TRANSFORM).filters(self.rules.filters())
    }

    fn transform(&self, session: &Session, message: Message) -> TransformVerdict {
        let properties: Vec<(String, String)> = message
            .user_properties
            .into_iter()
            .map(|p| (p.key, p.value))
            .collect();
        // A host call per message only when a rule uses the time.
        let now_millis = if self.rules.stamps_time() {
            clock::now_millis()
        } else {
            0
        };
        let outcome = self.rules.apply(
            &session.client.client_id,
            now_millis,
            &message.topic,
            &message.payload,
            &properties,
        );
        match outcome {
            Outcome::Pass => TransformVerdict::Pass,
            Outcome::Drop(code) => {
                metrics::counter_add("dropped", 1);
                TransformVerdict::Drop(code)
            }
            Outcome::Modify {
                topic,
                user_properties,
            } => {
                metrics::counter_add("modified", 1);
                TransformVerdict::Modify(MessagePatch {
                    topic,
                    user_properties: user_properties.map(|list| {
                        list.into_iter()
                            .map(|(key, value)| UserProperty { key, value })
                            .collect()
                    }),
                    ..MessagePatch::new()
                })
            }
        }
    }
}
