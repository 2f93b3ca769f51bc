//! Constructors and builders on the generated WIT types.

use std::ops::RangeInclusive;

use crate::topic;
use crate::{
    Attributes, AuthVerdict, AuthzVerdict, CacheableTransformVerdict, Decision, Denial, Hooks,
    Interests, MessagePatch, PayloadSizes, Qos, SizedTransformVerdict, Stamp, StampValue,
    StampingTransformVerdict, SubscribeDecision, SubscribeVerdict, TransformVerdict, UserProperty,
};

impl Interests {
    /// Declares the hooks the plugin implements, for every topic (no publish filter).
    ///
    /// ```
    /// use wasp_plugin_sdk::{Hooks, Interests};
    ///
    /// let interests = Interests::hooks(Hooks::AUTHORIZE_PUBLISH | Hooks::TRANSFORM).filters(["sensors/#"]);
    /// assert_eq!(interests.publish_filters, ["sensors/#"]);
    /// ```
    pub fn hooks(hooks: Hooks) -> Self {
        Self {
            hooks,
            publish_filters: Vec::new(),
        }
    }

    /// Adds topic filters for the publish-time hooks (authorize-publish, transform): the broker calls the
    /// plugin only for topics matching one of them. No filter at all means every topic.
    pub fn filters<I, S>(mut self, filters: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.publish_filters
            .extend(filters.into_iter().map(Into::into));
        self
    }

    /// Checks every publish filter with [`topic::valid_filter`]; the message names the first bad one.
    /// `export_plugin!` runs this after `interests()`, so that a bad filter fails `init` with a clear message.
    pub fn validate(&self) -> Result<(), String> {
        for filter in &self.publish_filters {
            topic::valid_filter(filter)
                .map_err(|e| format!("invalid publish filter {filter:?}: {e}"))?;
        }
        Ok(())
    }
}

impl Denial {
    /// A denial with an MQTT 5 reason code (see [`reason`](crate::reason)) and a reason string for MQTT 5
    /// clients; an empty `message` sends none.
    pub fn new(reason_code: u8, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            reason_code,
            reason: (!message.is_empty()).then_some(message),
        }
    }
}

impl AuthVerdict {
    /// Accepts the client, attaching no attributes to its session.
    pub fn allow() -> Self {
        Self::Allow(Vec::new())
    }

    /// Accepts the client and attaches `attributes` (a role, a tenant...) to its session: later
    /// authorization and transformation calls receive them in [`Session::attributes`](crate::Session).
    ///
    /// ```
    /// use wasp_plugin_sdk::AuthVerdict;
    ///
    /// let verdict = AuthVerdict::allow_with([("role", "admin")]);
    /// assert_eq!(verdict, AuthVerdict::Allow(vec![("role".into(), "admin".into())]));
    /// ```
    pub fn allow_with<I, K, V>(attributes: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self::Allow(
            attributes
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect::<Attributes>(),
        )
    }

    /// Refuses the client with a reason code (usually [`reason::BAD_USERNAME_OR_PASSWORD`] or
    /// [`reason::NOT_AUTHORIZED`]) and a reason string for MQTT 5 clients.
    ///
    /// [`reason::BAD_USERNAME_OR_PASSWORD`]: crate::reason::BAD_USERNAME_OR_PASSWORD
    /// [`reason::NOT_AUTHORIZED`]: crate::reason::NOT_AUTHORIZED
    pub fn deny(reason_code: u8, message: impl Into<String>) -> Self {
        Self::Deny(Denial::new(reason_code, message))
    }
}

impl Decision {
    /// A denial with a reason code and a reason string (see [`Denial::new`]).
    pub fn deny(reason_code: u8, message: impl Into<String>) -> Self {
        Self::Deny(Denial::new(reason_code, message))
    }
}

impl AuthzVerdict {
    /// Allows the publish; not cached.
    pub fn allow() -> Self {
        Self::from(Decision::Allow)
    }

    /// Refuses the publish (usually with [`reason::NOT_AUTHORIZED`](crate::reason::NOT_AUTHORIZED)); not
    /// cached.
    pub fn deny(reason_code: u8, message: impl Into<String>) -> Self {
        Self::from(Decision::deny(reason_code, message))
    }

    /// No opinion: the next plugin decides; not cached.
    pub fn defer() -> Self {
        Self::from(Decision::Defer)
    }

    /// Lets the broker reuse this verdict for the same session and topic for `seconds` (0: do not cache).
    ///
    /// ```
    /// use wasp_plugin_sdk::{AuthzVerdict, Decision};
    ///
    /// let verdict = AuthzVerdict::allow().cache_for(60);
    /// assert_eq!((verdict.decision, verdict.cache_seconds), (Decision::Allow, Some(60)));
    /// ```
    pub fn cache_for(mut self, seconds: u32) -> Self {
        self.cache_seconds = Some(seconds);
        self
    }
}

impl From<Decision> for AuthzVerdict {
    fn from(decision: Decision) -> Self {
        Self {
            decision,
            cache_seconds: None,
        }
    }
}

impl SubscribeDecision {
    /// A denial with a reason code and a reason string (see [`Denial::new`]).
    pub fn deny(reason_code: u8, message: impl Into<String>) -> Self {
        Self::Deny(Denial::new(reason_code, message))
    }
}

impl SubscribeVerdict {
    /// Grants the subscription at `qos` at most (the broker never grants more than the client asked for);
    /// not cached.
    pub fn allow(qos: Qos) -> Self {
        Self::from(SubscribeDecision::Allow(qos))
    }

    /// Refuses the subscription (usually with [`reason::NOT_AUTHORIZED`](crate::reason::NOT_AUTHORIZED));
    /// not cached.
    pub fn deny(reason_code: u8, message: impl Into<String>) -> Self {
        Self::from(SubscribeDecision::deny(reason_code, message))
    }

    /// No opinion: the next plugin decides; not cached.
    pub fn defer() -> Self {
        Self::from(SubscribeDecision::Defer)
    }

    /// Lets the broker reuse this verdict for the same session and filter for `seconds` (0: do not cache).
    pub fn cache_for(mut self, seconds: u32) -> Self {
        self.cache_seconds = Some(seconds);
        self
    }
}

impl From<SubscribeDecision> for SubscribeVerdict {
    fn from(decision: SubscribeDecision) -> Self {
        Self {
            decision,
            cache_seconds: None,
        }
    }
}

impl CacheableTransformVerdict {
    /// Lets the broker reuse this verdict for `seconds` (0: do not) for the same session's later
    /// messages that differ from this one in their payload only. See
    /// [`Plugin::transform_cacheable`](crate::Plugin::transform_cacheable) for which verdicts may be reused.
    ///
    /// ```
    /// use wasp_plugin_sdk::{CacheableTransformVerdict, TransformVerdict};
    ///
    /// let answer = CacheableTransformVerdict::from(TransformVerdict::Pass).reuse_for(30);
    /// assert_eq!((answer.verdict, answer.cache_seconds), (TransformVerdict::Pass, Some(30)));
    /// ```
    pub fn reuse_for(mut self, seconds: u32) -> Self {
        self.cache_seconds = Some(seconds);
        self
    }
}

/// A verdict the broker may not reuse.
impl From<TransformVerdict> for CacheableTransformVerdict {
    fn from(verdict: TransformVerdict) -> Self {
        Self {
            verdict,
            cache_seconds: None,
        }
    }
}

impl StampingTransformVerdict {
    /// Lets the broker reuse this verdict for `seconds` (0: do not), as
    /// [`CacheableTransformVerdict::reuse_for`]; the stamps are set anew on each message.
    pub fn reuse_for(mut self, seconds: u32) -> Self {
        self.cache_seconds = Some(seconds);
        self
    }

    /// Has the broker set the user property `key` to `value` on each message the verdict is given to
    /// (see [`Plugin::transform_stamping`](crate::Plugin::transform_stamping)).
    ///
    /// ```
    /// use wasp_plugin_sdk::{StampValue, StampingTransformVerdict, TransformVerdict};
    ///
    /// let answer = StampingTransformVerdict::from(TransformVerdict::Pass)
    ///     .stamp("received-at", StampValue::ReceiveTimeMillis)
    ///     .reuse_for(60);
    /// assert_eq!(answer.stamps[0].key, "received-at");
    /// assert_eq!(answer.cache_seconds, Some(60));
    /// ```
    pub fn stamp(mut self, key: impl Into<String>, value: StampValue) -> Self {
        self.stamps.push(Stamp {
            key: key.into(),
            value,
        });
        self
    }

    /// The verdict with its stamps set at the time `now_millis` reads (only if there are stamps) on a
    /// message whose user properties are `properties`, as a 0.1.3 answer: what the broker would make of
    /// it for this one message. With stamps it is not reusable (a reuse would repeat the time); a drop
    /// stays a drop.
    pub fn set_stamps(
        self,
        properties: Vec<UserProperty>,
        now_millis: impl FnOnce() -> u64,
    ) -> CacheableTransformVerdict {
        if self.stamps.is_empty() {
            return CacheableTransformVerdict {
                verdict: self.verdict,
                cache_seconds: self.cache_seconds,
            };
        }
        let mut patch = match self.verdict {
            TransformVerdict::Drop(_) => return CacheableTransformVerdict::from(self.verdict),
            TransformVerdict::Pass => MessagePatch::new(),
            TransformVerdict::Modify(patch) => patch,
        };
        let list = patch.user_properties.get_or_insert(properties);
        let now_millis = now_millis();
        for stamp in &self.stamps {
            list.retain(|p| p.key != stamp.key);
            list.push(UserProperty {
                key: stamp.key.clone(),
                value: match stamp.value {
                    StampValue::ReceiveTimeMillis => now_millis.to_string(),
                },
            });
        }
        CacheableTransformVerdict::from(TransformVerdict::Modify(patch))
    }
}

impl StampingTransformVerdict {
    /// Says that the verdict depends on the payload through its size only, and is the same for every
    /// payload size in `sizes` (which must hold this message's, or the verdict is not reused): the
    /// broker reuses it only for payloads of those sizes (see
    /// [`Plugin::transform_sized`](crate::Plugin::transform_sized)).
    ///
    /// ```
    /// use wasp_plugin_sdk::{StampingTransformVerdict, TransformVerdict};
    ///
    /// let answer = StampingTransformVerdict::from(TransformVerdict::Pass)
    ///     .reuse_for(60)
    ///     .for_payload_sizes(0..=1000);
    /// let sizes = answer.payload_sizes.unwrap();
    /// assert_eq!((sizes.min, sizes.max), (0, 1000));
    /// ```
    pub fn for_payload_sizes(self, sizes: RangeInclusive<u32>) -> SizedTransformVerdict {
        SizedTransformVerdict {
            answer: self,
            payload_sizes: Some(PayloadSizes {
                min: *sizes.start(),
                max: *sizes.end(),
            }),
        }
    }
}

/// A verdict for any payload size.
impl From<StampingTransformVerdict> for SizedTransformVerdict {
    fn from(answer: StampingTransformVerdict) -> Self {
        Self {
            answer,
            payload_sizes: None,
        }
    }
}

impl SizedTransformVerdict {
    /// The verdict as a 0.1.4 answer: what a broker without `sized-transformer` may be given. A verdict
    /// for a range of payload sizes is then not reusable (a 0.1.4 broker would reuse it for any size).
    pub fn without_sizes(self) -> StampingTransformVerdict {
        let mut answer = self.answer;
        if self.payload_sizes.is_some() {
            answer.cache_seconds = None;
        }
        answer
    }
}

/// A verdict without stamps.
impl From<CacheableTransformVerdict> for StampingTransformVerdict {
    fn from(answer: CacheableTransformVerdict) -> Self {
        Self {
            verdict: answer.verdict,
            cache_seconds: answer.cache_seconds,
            stamps: Vec::new(),
        }
    }
}

/// A verdict the broker may not reuse, without stamps.
impl From<TransformVerdict> for StampingTransformVerdict {
    fn from(verdict: TransformVerdict) -> Self {
        Self::from(CacheableTransformVerdict::from(verdict))
    }
}

/// An empty patch: changes nothing.
impl Default for MessagePatch {
    fn default() -> Self {
        Self {
            topic: None,
            payload: None,
            qos: None,
            retain: None,
            user_properties: None,
        }
    }
}

impl MessagePatch {
    /// A patch that changes nothing; chain the setters below.
    ///
    /// ```
    /// use wasp_plugin_sdk::{MessagePatch, TransformVerdict};
    ///
    /// let verdict = TransformVerdict::Modify(MessagePatch::new().topic("redacted/a").payload(*b"{}"));
    /// # let TransformVerdict::Modify(patch) = verdict else { unreachable!() };
    /// # assert_eq!(patch.topic.as_deref(), Some("redacted/a"));
    /// # assert_eq!(patch.qos, None);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes the message to `topic` instead.
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// Replaces the payload.
    pub fn payload(mut self, payload: impl Into<Vec<u8>>) -> Self {
        self.payload = Some(payload.into());
        self
    }

    /// Changes the QoS.
    pub fn qos(mut self, qos: Qos) -> Self {
        self.qos = Some(qos);
        self
    }

    /// Changes the retain flag.
    pub fn retain(mut self, retain: bool) -> Self {
        self.retain = Some(retain);
        self
    }

    /// Replaces the whole list of user properties.
    pub fn user_properties<I, K, V>(mut self, properties: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.user_properties = Some(
            properties
                .into_iter()
                .map(|(key, value)| UserProperty {
                    key: key.into(),
                    value: value.into(),
                })
                .collect(),
        );
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reason;

    #[test]
    fn denial_without_message_sends_no_reason_string() {
        assert_eq!(Denial::new(reason::NOT_AUTHORIZED, "").reason, None);
        assert_eq!(
            AuthVerdict::deny(reason::BAD_USERNAME_OR_PASSWORD, "no"),
            AuthVerdict::Deny(Denial {
                reason_code: 0x86,
                reason: Some("no".into())
            })
        );
    }

    #[test]
    fn verdict_defaults_are_uncached() {
        assert_eq!(AuthzVerdict::defer().cache_seconds, None);
        assert_eq!(
            SubscribeVerdict::allow(Qos::AtLeastOnce)
                .cache_for(5)
                .cache_seconds,
            Some(5)
        );
        assert_eq!(
            SubscribeVerdict::deny(reason::QUOTA_EXCEEDED, "x").decision,
            SubscribeDecision::Deny(Denial::new(0x97, "x"))
        );
    }

    #[test]
    fn interests_validate_names_the_bad_filter() {
        assert_eq!(
            Interests::hooks(Hooks::TRANSFORM)
                .filters(["a/+", "#"])
                .validate(),
            Ok(())
        );
        let err = Interests::hooks(Hooks::TRANSFORM)
            .filters(["a/#/b"])
            .validate()
            .unwrap_err();
        assert!(err.contains("\"a/#/b\""), "{err}");
    }

    #[test]
    fn patch_user_properties_replace_the_list() {
        let patch = MessagePatch::new()
            .user_properties([("k", "v")])
            .retain(false);
        assert_eq!(
            patch.user_properties,
            Some(vec![UserProperty {
                key: "k".into(),
                value: "v".into()
            }])
        );
        assert_eq!(patch.retain, Some(false));
        assert_eq!(patch.topic, None);
    }

    #[test]
    fn a_verdict_for_some_payload_sizes_is_not_reused_by_an_older_broker() {
        let reusable = StampingTransformVerdict::from(TransformVerdict::Pass).reuse_for(60);
        let any_size = SizedTransformVerdict::from(reusable.clone());
        assert_eq!(any_size.payload_sizes, None);
        assert_eq!(any_size.without_sizes().cache_seconds, Some(60));
        let sized = reusable.for_payload_sizes(5..=u32::MAX);
        assert_eq!(
            sized.payload_sizes,
            Some(PayloadSizes {
                min: 5,
                max: u32::MAX
            })
        );
        let old = sized.without_sizes();
        assert_eq!(
            (old.verdict, old.cache_seconds),
            (TransformVerdict::Pass, None)
        );
    }

    #[test]
    fn stamps_set_for_an_older_broker_replace_forged_properties_and_forbid_reuse() {
        let property = |key: &str, value: &str| UserProperty {
            key: key.to_owned(),
            value: value.to_owned(),
        };
        let sent = vec![property("at", "forged"), property("k", "v")];
        let stamped = StampingTransformVerdict::from(TransformVerdict::Pass)
            .stamp("at", StampValue::ReceiveTimeMillis)
            .reuse_for(60)
            .set_stamps(sent.clone(), || 1_234);
        assert_eq!(stamped.cache_seconds, None);
        assert_eq!(
            stamped.verdict,
            TransformVerdict::Modify(
                MessagePatch::new().user_properties([("k", "v"), ("at", "1234")])
            )
        );
        let dropped = StampingTransformVerdict::from(TransformVerdict::Drop(0x99))
            .stamp("at", StampValue::ReceiveTimeMillis)
            .set_stamps(sent.clone(), || 1_234);
        assert_eq!(dropped.verdict, TransformVerdict::Drop(0x99));
        let plain = StampingTransformVerdict::from(TransformVerdict::Pass)
            .reuse_for(60)
            .set_stamps(sent, || panic!("read the clock without a stamp"));
        assert_eq!(
            (plain.verdict, plain.cache_seconds),
            (TransformVerdict::Pass, Some(60))
        );
    }
}
