//! The WebAssembly glue: the [`Plugin`] the broker loads, over [`Rules::matching`].
//!
//! The rules' filters are the plugin's publish filters, so the broker calls it only for topics some rule
//! may change. Time stamps are the broker's (WIT 0.1.4 stamps): it sets them on each message. So when no
//! rule matching the topic checks JSON, the verdict is reusable for [`REUSE_SECONDS`]: the broker applies
//! it (and sets the stamps) to the session's later messages to that topic (with the same user
//! properties) without calling the plugin; when a size limit matches, only to those whose payload size
//! is on the same side of each limit (WIT 0.1.5 payload sizes). Counters: `dropped` and `modified`
//! (published as `plugin.<name>.dropped`...), counting calls, not reused verdicts.

use wasp_plugin_sdk::{
    Hooks, Interests, Message, MessagePatch, Plugin, Session, SizedTransformVerdict, StampValue,
    StampingTransformVerdict, TransformVerdict, UserProperty, metrics,
};

use crate::{Config, Outcome, Rules};

/// How long the broker may reuse a verdict that depends on the topic, client id and user properties
/// only. The rules cannot change while the plugin runs, and the broker forgets reused verdicts when a
/// session's attributes change, so any lifetime is correct; this one bounds the broker's cache entries.
pub const REUSE_SECONDS: u32 = 60;

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

    fn transform_sized(&self, session: &Session, message: Message) -> SizedTransformVerdict {
        // Matched once: the outcome, the stamps and reuse all depend on the same rules.
        let matching = self.rules.matching(&message.topic);
        let properties: Vec<(String, String)> = message
            .user_properties
            .into_iter()
            .map(|p| (p.key, p.value))
            .collect();
        let outcome = matching.apply(&session.client.client_id, &message.payload, &properties);
        let mut answer = StampingTransformVerdict::from(verdict(outcome));
        if !matches!(answer.verdict, TransformVerdict::Drop(_)) {
            for name in matching.time_stamps() {
                answer = answer.stamp(name, StampValue::ReceiveTimeMillis);
            }
        }
        match matching.reusable_sizes(message.payload.len()) {
            None => SizedTransformVerdict::from(answer),
            Some(sizes) if sizes == (0..=usize::MAX) => {
                SizedTransformVerdict::from(answer.reuse_for(REUSE_SECONDS))
            }
            Some(sizes) => {
                let bound = |size: usize| u32::try_from(size).unwrap_or(u32::MAX);
                answer
                    .reuse_for(REUSE_SECONDS)
                    .for_payload_sizes(bound(*sizes.start())..=bound(*sizes.end()))
            }
        }
    }
}

/// The WIT verdict for the rules' outcome, counted.
fn verdict(outcome: Outcome) -> TransformVerdict {
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
