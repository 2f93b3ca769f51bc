//! [`Chain`]: the plugins of a listener in configuration order. For each hook the chain asks, in order,
//! the plugins that export and declared it (and, for publish-time hooks, whose `publish-filters` match
//! the topic); the first allow or deny wins, `defer` asks the next one. When every plugin defers (or none
//! implements the hook) the verdict is `defer` with [`Source::Default`]: the listener's default applies.
//!
//! A failed call (trap, deadline, out of memory, invalid answer) follows the failing plugin's
//! [`FailurePolicy`](crate::FailurePolicy): `deny` answers reason code 0x80 (unspecified error), `allow`
//! allows (no attributes; the requested QoS), `defer` asks the next plugin; transformers `pass` the
//! message on unchanged by them, or `drop` it with 0x80.
//!
//! Transformers compose: each one sees the message as patched by those before it. Their stamps (WIT
//! 0.1.4) are set after the last one, in chain order, so none sees another's.

use std::borrow::Cow;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Instant;

use crate::bindings::wasp::plugin::types::{
    AuthRequest, AuthVerdict, AuthzVerdict, Decision, Denial, Message, MessagePatch, Qos, Session,
    Stamp, StampValue, SubscribeDecision, SubscribeVerdict, TransformVerdict, UserProperty,
};
use crate::config::{OnAccessFailure, OnTransformFailure};
use crate::error::CallError;
use crate::imports::clock::{Clock, SystemClock};
use crate::plugin::{Hook, Plugin};

/// Reason code of a verdict made by a failure policy: 0x80, unspecified error.
pub const FAILURE_REASON_CODE: u8 = 0x80;

/// Who made a chain's verdict.
#[derive(Debug, Clone)]
pub enum Source {
    /// This plugin answered.
    Plugin(Plugin),
    /// This plugin's call failed and its failure policy answered.
    Failure(Plugin, CallError),
    /// No plugin decided: every one deferred, or none implements the hook.
    Default,
}

impl Source {
    /// The plugin that decided, if any.
    pub fn plugin(&self) -> Option<&Plugin> {
        match self {
            Source::Plugin(plugin) | Source::Failure(plugin, _) => Some(plugin),
            Source::Default => None,
        }
    }
    /// The name of the plugin that decided, or "" when no plugin did.
    pub fn plugin_name(&self) -> &str {
        self.plugin().map_or("", |p| p.name())
    }
}

/// A chain's verdict and who made it.
#[derive(Debug, Clone)]
pub struct Decided<V> {
    pub verdict: V,
    pub source: Source,
}

/// The outcome of the transformers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transformed {
    /// No plugin changed the message.
    Unchanged,
    /// The message after every patch, applied in chain order.
    Modified(Message),
    /// A plugin dropped the message (or failed with policy `drop`): MQTT 5 publishers get this reason code.
    Dropped { reason_code: u8, plugin: String },
}

/// [`Transformed`] with how long it may be reused (WIT 0.1.3): for the same session's later messages that
/// differ from this one in their payload only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transformation {
    /// With the stamps set (at [`Chain::clock_millis`]).
    pub outcome: Transformed,
    /// The least of the asked transformers' `cache-seconds`; `None` (never reuse) when one of them gave
    /// none or 0, failed, or patched the payload, or when no transformer was asked.
    pub cache_seconds: Option<u32>,
    /// The transformers' stamps (WIT 0.1.4) in chain order, already set in `outcome`: whoever reuses the
    /// outcome sets their values again ([`write_stamp_value`]). Empty when the message was dropped.
    pub stamps: Vec<Stamp>,
    /// The payload sizes the outcome may be reused for (WIT 0.1.5): those every asked transformer's
    /// answer holds for (`0..=u32::MAX` when none named a range). Always holds the message's size when
    /// `cache_seconds` is some.
    pub payload_sizes: RangeInclusive<u32>,
}

fn failure_denial() -> Denial {
    Denial {
        reason_code: FAILURE_REASON_CODE,
        reason: None,
    }
}

/// Plugins of a chain as a bit set: bit `i` is the chain's `i`-th plugin, except [`OVERFLOW_BIT`], which
/// stands for every plugin from that index on (checked one by one; chains that long are unusual).
type Mask = u64;
const OVERFLOW_BIT: usize = Mask::BITS as usize - 1;

fn bit(index: usize) -> Mask {
    1 << index.min(OVERFLOW_BIT)
}

/// Which plugins a chain asks about a PUBLISH to one topic, for the two publish-time hooks: the plugins
/// that implement the hook and whose publish filters match the topic (no filters: every topic). From
/// [`Chain::publish_interest`]; cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PublishInterest {
    authorize: Mask,
    transform: Mask,
}

impl PublishInterest {
    /// No plugin authorizes or transforms this topic: the broker does not enter Wasm for it.
    pub fn is_empty(&self) -> bool {
        self.authorize == 0 && self.transform == 0
    }

    /// Some plugin authorizes publishes to this topic.
    pub fn authorizes(&self) -> bool {
        self.authorize != 0
    }

    /// Some plugin transforms publishes to this topic.
    pub fn transforms(&self) -> bool {
        self.transform != 0
    }
}

/// The chain's publish filters, built once: one trie of every plugin's filters, each filter carrying its
/// plugin's bit for each publish-time hook the plugin implements, so that one walk of the topic's levels
/// answers both hooks. Plugins without filters are in `every_topic`.
#[derive(Debug, Default)]
struct PublishFilters {
    tree: wasp_mqtt::topic::FilterTree<PublishInterest>,
    every_topic: PublishInterest,
    /// Which plugins implement each hook, whatever the topic (`Hook::ALL` order).
    implementers: [Mask; 4],
}

impl PublishFilters {
    fn new(plugins: &[Plugin]) -> Self {
        let mut interests = PublishFilters::default();
        for (index, plugin) in plugins.iter().enumerate() {
            for hook in Hook::ALL {
                if plugin.implements(hook) {
                    interests.implementers[hook as usize] |= bit(index);
                }
            }
            let own = PublishInterest {
                authorize: interests.implementers[Hook::AuthorizePublish as usize] & bit(index),
                transform: interests.implementers[Hook::Transform as usize] & bit(index),
            };
            if own.is_empty() {
                continue;
            }
            let filters = &plugin.interests().publish_filters;
            if filters.is_empty() {
                interests.every_topic.authorize |= own.authorize;
                interests.every_topic.transform |= own.transform;
            }
            for filter in filters {
                interests.tree.insert(filter, own);
            }
        }
        interests
    }

    fn publish(&self, topic: &str) -> PublishInterest {
        let mut found = self.every_topic;
        self.tree.for_each_match(topic, |own| {
            found.authorize |= own.authorize;
            found.transform |= own.transform;
        });
        found
    }
}

/// Plugins in configuration order, with their publish filters in a topic trie. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    plugins: Vec<Plugin>,
    filters: Arc<PublishFilters>,
}

impl Chain {
    pub fn new(plugins: Vec<Plugin>) -> Self {
        let filters = Arc::new(PublishFilters::new(&plugins));
        Self { plugins, filters }
    }

    /// Which plugins would be asked to authorize or transform a PUBLISH to `topic`: one walk of the
    /// chain's filter trie (no Wasm). Pass it to [`Chain::authorize_publish_with`] and
    /// [`Chain::transform_with`] to avoid matching the topic again.
    pub fn publish_interest(&self, topic: &str) -> PublishInterest {
        self.filters.publish(topic)
    }

    /// The plugins in `mask` at index `from` or later, in chain order, that implement `hook` and (for
    /// the plugins behind [`OVERFLOW_BIT`]) want `topic`.
    fn asked<'s, 't>(
        &'s self,
        hook: Hook,
        mask: Mask,
        topic: &'t str,
        from: usize,
    ) -> impl Iterator<Item = (usize, &'s Plugin)> + use<'s, 't> {
        self.plugins
            .iter()
            .enumerate()
            .skip(from)
            .filter(move |(index, plugin)| {
                mask & bit(*index) != 0
                    && (*index < OVERFLOW_BIT
                        || (plugin.implements(hook) && plugin.wants_topic(topic)))
            })
    }

    pub fn plugins(&self) -> &[Plugin] {
        &self.plugins
    }

    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    /// Whether any plugin would be asked for this hook (and topic, for publish-time hooks).
    pub fn wants(&self, hook: Hook, topic: Option<&str>) -> bool {
        let implementers = self.filters.implementers[hook as usize];
        match (hook, topic) {
            (_, None) | (Hook::Authenticate | Hook::AuthorizeSubscribe, _) => implementers != 0,
            (Hook::AuthorizePublish, Some(topic)) => {
                self.asks(hook, self.publish_interest(topic).authorize, topic)
            }
            (Hook::Transform, Some(topic)) => {
                self.asks(hook, self.publish_interest(topic).transform, topic)
            }
        }
    }

    fn asks(&self, hook: Hook, mask: Mask, topic: &str) -> bool {
        mask != 0 && self.asked(hook, mask, topic, 0).next().is_some()
    }

    /// Authenticates a CONNECT. A `continue` verdict names its plugin in `source`: call
    /// [`Chain::resume_authenticate`] with it when the client answers with AUTH.
    pub async fn authenticate(&self, request: &AuthRequest) -> Decided<AuthVerdict> {
        self.authenticate_from(0, request).await
    }

    /// Continues MQTT 5 enhanced authentication with the plugin that answered `continue`; if that
    /// plugin then defers, the plugins after it are asked. A plugin not in the chain is called alone.
    pub async fn resume_authenticate(
        &self,
        plugin: &Plugin,
        request: &AuthRequest,
    ) -> Decided<AuthVerdict> {
        match self.plugins.iter().position(|p| p.same(plugin)) {
            Some(index) => self.authenticate_from(index, request).await,
            None => {
                Chain::new(vec![plugin.clone()])
                    .authenticate_from(0, request)
                    .await
            }
        }
    }

    async fn authenticate_from(&self, start: usize, request: &AuthRequest) -> Decided<AuthVerdict> {
        for plugin in self.plugins[start.min(self.plugins.len())..]
            .iter()
            .filter(|p| p.implements(Hook::Authenticate))
        {
            match plugin.authenticate(request).await {
                Ok(AuthVerdict::Defer) => continue,
                Ok(verdict) => {
                    return Decided {
                        verdict,
                        source: Source::Plugin(plugin.clone()),
                    };
                }
                Err(error) => {
                    let verdict = match plugin.failure_policy().authenticate {
                        OnAccessFailure::Defer => continue,
                        OnAccessFailure::Deny => AuthVerdict::Deny(failure_denial()),
                        OnAccessFailure::Allow => AuthVerdict::Allow(Vec::new()),
                    };
                    return Decided {
                        verdict,
                        source: Source::Failure(plugin.clone(), error),
                    };
                }
            }
        }
        Decided {
            verdict: AuthVerdict::Defer,
            source: Source::Default,
        }
    }

    /// Authorizes a PUBLISH to `topic`.
    pub async fn authorize_publish(
        &self,
        session: &Session,
        topic: &str,
        qos: Qos,
        retain: bool,
    ) -> Decided<AuthzVerdict> {
        let interest = self.publish_interest(topic);
        self.authorize_publish_with(interest, session, topic, qos, retain)
            .await
    }

    /// [`Chain::authorize_publish`] with `interest` = [`Chain::publish_interest`] of `topic`.
    pub async fn authorize_publish_with(
        &self,
        interest: PublishInterest,
        session: &Session,
        topic: &str,
        qos: Qos,
        retain: bool,
    ) -> Decided<AuthzVerdict> {
        let asked = self.asked(Hook::AuthorizePublish, interest.authorize, topic, 0);
        for (_, plugin) in asked {
            match plugin.authorize_publish(session, topic, qos, retain).await {
                Ok(AuthzVerdict {
                    decision: Decision::Defer,
                    ..
                }) => continue,
                Ok(verdict) => {
                    return Decided {
                        verdict,
                        source: Source::Plugin(plugin.clone()),
                    };
                }
                Err(error) => {
                    let decision = match plugin.failure_policy().authorize {
                        OnAccessFailure::Defer => continue,
                        OnAccessFailure::Deny => Decision::Deny(failure_denial()),
                        OnAccessFailure::Allow => Decision::Allow,
                    };
                    let verdict = AuthzVerdict {
                        decision,
                        cache_seconds: None,
                    };
                    return Decided {
                        verdict,
                        source: Source::Failure(plugin.clone(), error),
                    };
                }
            }
        }
        Decided {
            verdict: AuthzVerdict {
                decision: Decision::Defer,
                cache_seconds: None,
            },
            source: Source::Default,
        }
    }

    /// Authorizes one SUBSCRIBE filter at the requested QoS.
    pub async fn authorize_subscribe(
        &self,
        session: &Session,
        filter: &str,
        qos: Qos,
    ) -> Decided<SubscribeVerdict> {
        for plugin in self
            .plugins
            .iter()
            .filter(|p| p.implements(Hook::AuthorizeSubscribe))
        {
            match plugin.authorize_subscribe(session, filter, qos).await {
                Ok(SubscribeVerdict {
                    decision: SubscribeDecision::Defer,
                    ..
                }) => continue,
                Ok(verdict) => {
                    return Decided {
                        verdict,
                        source: Source::Plugin(plugin.clone()),
                    };
                }
                Err(error) => {
                    let decision = match plugin.failure_policy().authorize {
                        OnAccessFailure::Defer => continue,
                        OnAccessFailure::Deny => SubscribeDecision::Deny(failure_denial()),
                        OnAccessFailure::Allow => SubscribeDecision::Allow(qos),
                    };
                    let verdict = SubscribeVerdict {
                        decision,
                        cache_seconds: None,
                    };
                    return Decided {
                        verdict,
                        source: Source::Failure(plugin.clone(), error),
                    };
                }
            }
        }
        Decided {
            verdict: SubscribeVerdict {
                decision: SubscribeDecision::Defer,
                cache_seconds: None,
            },
            source: Source::Default,
        }
    }

    /// Runs the transformers on an inbound PUBLISH.
    pub async fn transform(&self, session: &Session, message: &Message) -> Transformed {
        let interest = self.publish_interest(&message.topic);
        self.transform_with(interest, session, message).await
    }

    /// [`Chain::transform`] with `interest` = [`Chain::publish_interest`] of the message's topic. A
    /// transformer that changes the topic makes the chain match the new topic for the transformers after it.
    pub async fn transform_with(
        &self,
        interest: PublishInterest,
        session: &Session,
        message: &Message,
    ) -> Transformed {
        self.transform_cow(interest, session, Cow::Borrowed(message))
            .await
            .outcome
    }

    /// [`Chain::transform_with`] taking the message by value (the first patch applies to it in place
    /// instead of to a copy), with how long the outcome may be reused.
    pub async fn transform_owned(
        &self,
        interest: PublishInterest,
        session: &Session,
        message: Message,
    ) -> Transformation {
        self.transform_cow(interest, session, Cow::Owned(message))
            .await
    }

    async fn transform_cow(
        &self,
        interest: PublishInterest,
        session: &Session,
        mut message: Cow<'_, Message>,
    ) -> Transformation {
        let mut modified = false;
        let mut mask = interest.transform;
        let mut next = 0;
        // The least lifetime of the answers so far (`u32::MAX` before the first), `None` for good once one
        // may not be reused. Whether any transformer was asked is `next > 0`.
        let mut reuse = Some(u32::MAX);
        let mut stamps = Vec::new();
        let mut sizes = 0..=u32::MAX;
        // The payload's size never changes while the outcome may be reused: a payload patch ends reuse.
        let size = u32::try_from(message.payload.len()).unwrap_or(u32::MAX);
        loop {
            let asked = self
                .asked(Hook::Transform, mask, &message.topic, next)
                .next();
            let Some((index, plugin)) = asked else {
                break;
            };
            next = index + 1;
            let answer = plugin.transform_sized(session, &message).await;
            let seconds = match &answer {
                Ok(a) if !matches!(&a.answer.verdict, TransformVerdict::Modify(p) if p.payload.is_some()) =>
                {
                    if let Some(range) = &a.payload_sizes {
                        sizes = *sizes.start().max(&range.min)..=*sizes.end().min(&range.max);
                    }
                    a.answer
                        .cache_seconds
                        .filter(|s| *s > 0 && sizes.contains(&size))
                }
                _ => None,
            };
            reuse = reuse.zip(seconds).map(|(r, s)| r.min(s));
            let answer = answer.map(|a| a.answer);
            let verdict = answer.map(|a| {
                stamps.extend(a.stamps);
                a.verdict
            });
            match verdict {
                Ok(TransformVerdict::Pass) => {}
                Ok(TransformVerdict::Drop(reason_code)) => {
                    return Transformation {
                        outcome: Transformed::Dropped {
                            reason_code,
                            plugin: plugin.name().to_owned(),
                        },
                        cache_seconds: reuse,
                        stamps: Vec::new(),
                        payload_sizes: sizes,
                    };
                }
                Ok(TransformVerdict::Modify(patch)) => {
                    let patched = message.to_mut();
                    let topic_changed = patch.topic.as_ref().is_some_and(|t| *t != patched.topic);
                    apply_patch(patched, patch);
                    if topic_changed {
                        mask = self.publish_interest(&patched.topic).transform;
                    }
                    modified = true;
                }
                Err(_) => match plugin.failure_policy().transform {
                    OnTransformFailure::Pass => {}
                    OnTransformFailure::Drop => {
                        return Transformation {
                            outcome: Transformed::Dropped {
                                reason_code: FAILURE_REASON_CODE,
                                plugin: plugin.name().to_owned(),
                            },
                            cache_seconds: None,
                            stamps: Vec::new(),
                            payload_sizes: sizes,
                        };
                    }
                },
            }
        }
        if !stamps.is_empty() {
            apply_stamps(
                &mut message.to_mut().user_properties,
                &stamps,
                self.clock_millis(),
            );
            modified = true;
        }
        let outcome = if modified {
            Transformed::Modified(message.into_owned())
        } else {
            Transformed::Unchanged
        };
        Transformation {
            outcome,
            cache_seconds: reuse.filter(|_| next > 0),
            stamps,
            payload_sizes: sizes,
        }
    }

    /// Milliseconds since the Unix epoch by the plugins' clock (one per host, the system's in the
    /// broker): the time the stamps (WIT 0.1.4) get. The system's clock when the chain is empty.
    pub fn clock_millis(&self) -> u64 {
        self.clock().now_millis()
    }

    /// [`Chain::clock_millis`] at `at`, a moment the caller has just read on the monotonic clock
    /// ([`Clock::millis_at`]): the broker's fast path, which reads that clock for each PUBLISH anyway,
    /// stamps a reused outcome without reading the wall clock too.
    pub fn clock_millis_at(&self, at: Instant) -> u64 {
        self.clock().millis_at(at)
    }

    fn clock(&self) -> &dyn Clock {
        match self.plugins.first() {
            Some(plugin) => plugin.clock(),
            None => &SystemClock,
        }
    }
}

/// Sets `stamps` (WIT 0.1.4) in `user_properties` at `now_millis`, in order: each removes the properties
/// of its name, then is appended.
pub(crate) fn apply_stamps(
    user_properties: &mut Vec<UserProperty>,
    stamps: &[Stamp],
    now_millis: u64,
) {
    for stamp in stamps {
        user_properties.retain(|p| p.key != stamp.key);
        user_properties.push(UserProperty {
            key: stamp.key.clone(),
            value: stamp_value(stamp.value, now_millis),
        });
    }
}

/// The text of a stamp's value at `now_millis`.
fn stamp_value(value: StampValue, now_millis: u64) -> String {
    let mut text = String::new();
    write_stamp_value(value, now_millis, &mut text).expect("a String takes any text");
    text
}

/// The most bytes [`write_stamp_value`] writes: the digits of `u64::MAX`.
pub const MAX_STAMP_VALUE_LEN: usize = 20;

/// Writes the text of a stamp's value at `now_millis` to `out` (at most [`MAX_STAMP_VALUE_LEN`] bytes), so
/// that the broker can put it beside a message's other user properties without a string of its own.
pub fn write_stamp_value(
    value: StampValue,
    now_millis: u64,
    out: &mut impl std::fmt::Write,
) -> std::fmt::Result {
    match value {
        // `itoa` rather than `write!`: `core::fmt`'s machinery (`write`, `pad_integral`, `Display`) was
        // ~18 ns per message in a profile of reused time stamps (broker/plugin-host/README.md).
        StampValue::ReceiveTimeMillis => out.write_str(itoa::Buffer::new().format(now_millis)),
    }
}

/// `verdict` on `message` with `stamps` set at `now_millis`: a pass becomes a patch of the user
/// properties; a drop stays a drop.
pub(crate) fn stamped(
    verdict: TransformVerdict,
    stamps: &[Stamp],
    message: &Message,
    now_millis: u64,
) -> TransformVerdict {
    if stamps.is_empty() {
        return verdict;
    }
    let mut patch = match verdict {
        TransformVerdict::Drop(_) => return verdict,
        TransformVerdict::Pass => MessagePatch {
            topic: None,
            payload: None,
            qos: None,
            retain: None,
            user_properties: None,
        },
        TransformVerdict::Modify(patch) => patch,
    };
    let properties = patch
        .user_properties
        .get_or_insert_with(|| message.user_properties.clone());
    apply_stamps(properties, stamps, now_millis);
    TransformVerdict::Modify(patch)
}

/// Applies a (validated) patch: every field left `none` stays as it was.
pub fn apply_patch(message: &mut Message, patch: MessagePatch) {
    let MessagePatch {
        topic,
        payload,
        qos,
        retain,
        user_properties,
    } = patch;
    if let Some(topic) = topic {
        message.topic = topic;
    }
    if let Some(payload) = payload {
        message.payload = payload;
    }
    if let Some(qos) = qos {
        message.qos = qos;
    }
    if let Some(retain) = retain {
        message.retain = retain;
    }
    if let Some(user_properties) = user_properties {
        message.user_properties = user_properties;
    }
}
