//! The plugin hooks as one connection uses them: authorization of publishes and subscriptions (with a
//! per-session cache of verdicts), transformation of inbound publishes, and the mapping between the broker's
//! MQTT types and the WIT types plugins see.
//!
//! The plugins themselves (and their failure policies) live behind [`Chain`], in `wasp-plugin-host`. This
//! module adds what the broker decides: the listener's default when every plugin defers (allow when
//! anonymous access is on, deny otherwise), which reason codes a plugin may put in which packet, and how a
//! transformer's result is applied to a PUBLISH.

use std::collections::HashMap;
use std::fmt;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use wasp_mqtt::codec::reason_code_allowed;
use wasp_mqtt::{
    ByteString, ProtocolVersion, Publish, QoS, ReasonCode, UserProperties, UserPropertiesWriter,
};
use wasp_plugin_host::types as wit;
use wasp_plugin_host::{
    Chain, Hook, MAX_STAMP_VALUE_LEN, PublishInterest, Transformation, Transformed,
    write_stamp_value,
};

/// At most this many topics and filters have an entry (cached verdicts, reusable transform outcomes) per
/// session; the cache is emptied when it is full.
const CACHE_CAPACITY: usize = 1024;

/// A session's cache of verdicts and reusable transform outcomes, keyed by topic (or filter). Hashed with
/// foldhash: a lookup on every fast-path PUBLISH, where SipHash was measurable; its random seed still
/// keeps a client from choosing colliding topics (and the map is bounded by [`CACHE_CAPACITY`]).
type Cache = HashMap<String, Remembered, foldhash::fast::RandomState>;

/// At most this many reusable transform outcomes per topic and session, one per kind of message (QoS,
/// RETAIN flag, user properties, content type) and range of payload sizes; the oldest is forgotten for
/// a new one. Usually there are one or two (a size limit's pass and drop).
const OUTCOMES_PER_TOPIC: usize = 8;

/// Packet type numbers, for [`reason_code_allowed`].
pub(crate) const CONNACK: u8 = 2;
const PUBACK: u8 = 4;
const SUBACK: u8 = 9;
pub(crate) const DISCONNECT: u8 = 14;

/// A refusal: the reason code to send and, for MQTT 5 clients, a reason string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub code: ReasonCode,
    pub reason: String,
}

impl Refusal {
    /// A plugin's denial, with its reason code kept only if `packet_type` may carry it (else 0x87).
    pub(crate) fn from_denial(denial: wit::Denial, packet_type: u8, who: &str) -> Self {
        Self {
            code: plugin_code(denial.reason_code, packet_type),
            reason: denial
                .reason
                .unwrap_or_else(|| format!("refused by plugin {who}")),
        }
    }
}

/// A plugin's reason code if `packet_type` may carry it as a refusal, else Not authorized.
pub(crate) fn plugin_code(code: u8, packet_type: u8) -> ReasonCode {
    ReasonCode::from_u8(code)
        .filter(|c| c.is_error() && reason_code_allowed(packet_type, *c))
        .unwrap_or(ReasonCode::NotAuthorized)
}

/// The WIT protocol version.
pub(crate) fn wit_protocol(version: ProtocolVersion) -> wit::ProtocolVersion {
    match version {
        ProtocolVersion::V31 => wit::ProtocolVersion::V31,
        ProtocolVersion::V311 => wit::ProtocolVersion::V311,
        ProtocolVersion::V5 => wit::ProtocolVersion::V5,
    }
}

/// The WIT QoS.
pub(crate) fn wit_qos(qos: QoS) -> wit::Qos {
    match qos {
        QoS::AtMostOnce => wit::Qos::AtMostOnce,
        QoS::AtLeastOnce => wit::Qos::AtLeastOnce,
        QoS::ExactlyOnce => wit::Qos::ExactlyOnce,
    }
}

/// The MQTT QoS of a WIT QoS.
pub(crate) fn mqtt_qos(qos: wit::Qos) -> QoS {
    match qos {
        wit::Qos::AtMostOnce => QoS::AtMostOnce,
        wit::Qos::AtLeastOnce => QoS::AtLeastOnce,
        wit::Qos::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// A cached verdict: allowed (at this QoS, for subscriptions) or refused.
type Verdict = Result<QoS, Refusal>;

/// What a verdict was asked for besides the topic: a PUBLISH (with its QoS and RETAIN flag) or a
/// subscription (with its QoS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CacheKey {
    subscribe: bool,
    qos: QoS,
    retain: bool,
}

impl CacheKey {
    /// A PUBLISH (or a Will) at this QoS and with this RETAIN flag.
    fn publish(qos: QoS, retain: bool) -> Self {
        Self {
            subscribe: false,
            qos,
            retain,
        }
    }

    /// A subscription at this QoS.
    fn subscription(qos: QoS) -> Self {
        Self {
            subscribe: true,
            qos,
            retain: false,
        }
    }
}

/// What a session remembers of one topic name (or subscription filter): the cached verdicts, one per
/// [`CacheKey`] asked (usually one), and the reusable transform outcomes (WIT 0.1.3 `cache-seconds`), one
/// per kind of message and range of payload sizes (usually one, at most [`OUTCOMES_PER_TOPIC`]). One
/// entry for both, so that a PUBLISH that takes no plugin call looks its topic up once.
#[derive(Debug, Default)]
struct Remembered {
    verdicts: Vec<(CacheKey, Verdict, Instant)>,
    outcomes: Vec<Reusable>,
    /// The chain's [`Chain::publish_interest`] in this topic, kept once asked (an `Access` keeps its
    /// chain): the fast path then matches the topic against the plugins' filters once per topic, not
    /// once per PUBLISH.
    interest: Option<PublishInterest>,
}

impl Remembered {
    /// The unexpired verdict for `key` at `now` (an expired one is removed).
    fn verdict(&mut self, key: CacheKey, now: Instant) -> Option<Verdict> {
        let i = self.verdicts.iter().position(|(k, _, _)| *k == key)?;
        let (_, verdict, until) = &self.verdicts[i];
        if *until > now {
            return Some(verdict.clone());
        }
        drop(self.verdicts.swap_remove(i));
        None
    }

    /// The reusable transform outcome for `publish`, unexpired at `now` (an expired one is removed).
    fn outcome(&mut self, publish: &Publish, now: Instant) -> Option<&Outcome> {
        let i = self.outcomes.iter().position(|r| r.fits(publish))?;
        if self.outcomes[i].until <= now {
            drop(self.outcomes.swap_remove(i));
            return None;
        }
        Some(&self.outcomes[i].outcome)
    }
}

/// What the transformers made of a message, kept for reuse (WIT 0.1.3): everything but the payload,
/// which a reusable outcome never changes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Unchanged,
    Modified {
        topic: Arc<str>,
        qos: QoS,
        retain: bool,
        /// With the stamps' values of the message the outcome was made for.
        user_properties: UserProperties,
        content_type: Option<ByteString>,
        /// The user properties whose values are made anew for each message (WIT 0.1.4 stamps), by
        /// their place in `user_properties` (where the chain set each stamp's name, once).
        stamps: Vec<(usize, wit::StampValue)>,
    },
    Dropped(Refusal),
}

impl Outcome {
    /// Applies the outcome to `publish` (its QoS at most `maximum_qos`), stamping the time
    /// `clock_millis` reads; `Err`: dropped.
    fn apply(
        &self,
        publish: &mut Publish,
        maximum_qos: QoS,
        clock_millis: impl FnOnce() -> u64,
        stamped: &mut Stamped,
    ) -> Result<(), Refusal> {
        match self {
            Outcome::Unchanged => Ok(()),
            Outcome::Modified {
                topic,
                qos,
                retain,
                user_properties,
                content_type,
                stamps,
            } => {
                if **topic != *publish.topic {
                    publish.topic = topic.clone();
                }
                publish.qos = (*qos).min(maximum_qos);
                publish.retain = *retain;
                stamped.set(
                    &mut publish.properties.user_properties,
                    user_properties,
                    stamps,
                    clock_millis,
                );
                publish.properties.content_type.clone_from(content_type);
                Ok(())
            }
            Outcome::Dropped(refusal) => Err(refusal.clone()),
        }
    }
}

/// Where `stamps` (in chain order) are in `properties`, which the chain set them in: one entry per place,
/// with the value of the last stamp of that name (which replaced the earlier ones).
fn stamp_places(
    stamps: &[wit::Stamp],
    properties: &[wit::UserProperty],
) -> Vec<(usize, wit::StampValue)> {
    let mut places: Vec<(usize, wit::StampValue)> = Vec::with_capacity(stamps.len());
    for stamp in stamps {
        let Some(at) = properties.iter().position(|p| p.key == stamp.key) else {
            continue;
        };
        match places.iter_mut().find(|(place, _)| *place == at) {
            Some(place) => place.1 = stamp.value,
            None => places.push((at, stamp.value)),
        }
    }
    places
}

/// A connection's user properties of reused outcomes with stamps (WIT 0.1.4), written per message: the
/// last set written, which the next message shares when it would be the same bytes.
///
/// A stamp's value changes once a millisecond, so the messages a connection sends within one millisecond
/// with the same outcome share one copy. Measured with `plugin_throughput` (a publisher sends ~100
/// messages a millisecond there): writing each message's own cost the broker ~0.1 µs per message more
/// than sharing one copy, mostly in moving the freshly written bytes to the subscriber's core.
#[derive(Debug, Default)]
struct Stamped {
    last: Option<LastStamped>,
}

/// The stamped properties last written, with what they were written from.
#[derive(Debug)]
struct LastStamped {
    source: UserProperties,
    stamps: Vec<(usize, wit::StampValue)>,
    millis: u64,
    written: UserProperties,
}

impl Stamped {
    /// Sets `target` to `source`, with the properties at the places `stamps` give set to their values at
    /// `clock_millis` (read only if there are stamps): a reused outcome's user properties on each
    /// message. Without stamps the message shares the outcome's; with stamps, those last written if they
    /// are the same bytes, else new ones.
    fn set(
        &mut self,
        target: &mut UserProperties,
        source: &UserProperties,
        stamps: &[(usize, wit::StampValue)],
        clock_millis: impl FnOnce() -> u64,
    ) {
        if stamps.is_empty() {
            target.clone_from(source);
            return;
        }
        let millis = clock_millis();
        if let Some(last) = &self.last
            && last.millis == millis
            && last.stamps == stamps
            && last.source == *source
        {
            target.clone_from(&last.written);
            return;
        }
        // Each stamp's name is in `source` once: its value takes at most MAX_STAMP_VALUE_LEN bytes more.
        let mut buf =
            BytesMut::with_capacity(source.wire().len() + stamps.len() * MAX_STAMP_VALUE_LEN);
        let mut writer = UserPropertiesWriter::new(&mut buf);
        writer
            .push_replacing(source, |at| {
                let &(_, stamp) = stamps.iter().find(|(place, _)| *place == at)?;
                Some(StampText(stamp, millis))
            })
            .expect("a stamp's value is short");
        *target = writer.finish();
        self.last = Some(LastStamped {
            source: source.clone(),
            stamps: stamps.to_vec(),
            millis,
            written: target.clone(),
        });
    }
}

/// A stamp's value at a time (milliseconds since the Unix epoch), as text.
struct StampText(wit::StampValue, u64);

impl fmt::Display for StampText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_stamp_value(self.0, self.1, f)
    }
}

/// A reusable transform outcome and the message it was given, but for its topic (the cache's key) and
/// payload: a later message is given the same outcome only if these are equal and its payload's size is
/// in `payload_sizes`.
#[derive(Debug)]
struct Reusable {
    /// The sizes the transformers' answers hold for (WIT 0.1.5; every size when none named a range).
    payload_sizes: RangeInclusive<u32>,
    qos: QoS,
    retain: bool,
    // These two are copies, not slices of the PUBLISH they came from (which would keep its read buffer
    // alive as long as the entry).
    user_properties: UserProperties,
    content_type: Option<ByteString>,
    outcome: Outcome,
    until: Instant,
}

impl Reusable {
    fn fits(&self, publish: &Publish) -> bool {
        u32::try_from(publish.payload.len()).is_ok_and(|size| self.payload_sizes.contains(&size))
            && self.qos == publish.qos
            && self.retain == publish.retain
            && self.user_properties == publish.properties.user_properties
            && self.content_type == publish.properties.content_type
    }
}

/// `cache`'s entry for `topic`, made empty if new; a full cache ([`CACHE_CAPACITY`] topics) is emptied
/// first to make room for a new topic.
fn bounded_entry<'c>(cache: &'c mut Cache, topic: &str) -> &'c mut Remembered {
    if cache.len() >= CACHE_CAPACITY && !cache.contains_key(topic) {
        cache.clear();
    }
    cache.entry(topic.to_owned()).or_default()
}

/// What a listener decides when every plugin defers (or there is none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Defaults {
    /// The listener's `allow_anonymous` (else the top-level one): authentication and authorization
    /// are allowed when every plugin defers.
    pub(crate) allow_anonymous: bool,
    /// The client presented a verified certificate whose identity became its user name: that
    /// authenticates it when every authentication plugin defers. Authorization still follows
    /// `allow_anonymous`.
    pub(crate) certificate_authenticates: bool,
}

impl Defaults {
    /// Whether CONNECT is accepted when every authentication plugin defers.
    pub(crate) fn authenticates(self) -> bool {
        self.allow_anonymous || self.certificate_authenticates
    }
}

/// The hooks of one connection's listener, with the session's attributes and cached verdicts.
pub(crate) struct Access {
    chain: Chain,
    session: wit::Session,
    /// Verdicts when every plugin defers: the listener's defaults.
    defaults: Defaults,
    /// Cached verdicts and reusable transform outcomes, keyed by topic (or filter) so that a lookup
    /// borrows the PUBLISH's topic instead of allocating a key. Lookups allocate nothing; expired
    /// verdicts and outcomes are removed when met, and their topic's entry stays, possibly empty,
    /// until the cache is full and emptied.
    cache: Cache,
    /// The user properties last written for a reused outcome with stamps ([`Stamped`]): a few dozen
    /// bytes, kept while the connection waits.
    stamped: Stamped,
}

impl Access {
    pub(crate) fn new(chain: Chain, client: wit::ClientInfo, defaults: Defaults) -> Self {
        Self {
            chain,
            session: wit::Session {
                client,
                attributes: Vec::new(),
            },
            defaults,
            cache: Cache::default(),
            stamped: Stamped::default(),
        }
    }

    /// The listener's plugin chain.
    pub(crate) fn chain(&self) -> &Chain {
        &self.chain
    }

    /// The listener's defaults.
    pub(crate) fn defaults(&self) -> Defaults {
        self.defaults
    }

    /// The client as plugins see it.
    pub(crate) fn client(&self) -> &wit::ClientInfo {
        &self.session.client
    }

    /// Replaces the session's attributes (after (re-)authentication); cached verdicts and reusable
    /// transform outcomes are forgotten.
    pub(crate) fn set_attributes(&mut self, attributes: wit::Attributes) {
        self.session.attributes = attributes;
        self.cache.clear();
    }

    /// The publish-time hooks for an inbound PUBLISH when they take no plugin call: no authorizer wants
    /// its topic or their verdict is cached, and no transformer wants it or their outcome is reusable
    /// (then applied to `publish`). `None`: nothing was changed, [`Access::authorize_publish`] and
    /// [`Access::transform`] must run. The fast path: it calls nothing, so the connection boxes the
    /// hooks' state only for a PUBLISH that enters Wasm. `now`: when the PUBLISH was taken (cached
    /// verdicts and outcomes expire by it).
    pub(crate) fn publish_without_calls(
        &mut self,
        publish: &mut Publish,
        maximum_qos: QoS,
        now: Instant,
    ) -> Option<Result<(), Refusal>> {
        let chain = &self.chain;
        let Some(remembered) = self.cache.get_mut(&*publish.topic) else {
            // Nothing remembered: a call unless no plugin wants the topic.
            return chain
                .publish_interest(&publish.topic)
                .is_empty()
                .then_some(Ok(()));
        };
        let interest = *remembered
            .interest
            .get_or_insert_with(|| chain.publish_interest(&publish.topic));
        if interest.is_empty() {
            return Some(Ok(()));
        }
        if interest.authorizes() {
            let key = CacheKey::publish(publish.qos, publish.retain);
            if let Err(refusal) = remembered.verdict(key, now)? {
                return Some(Err(refusal));
            }
        }
        if !interest.transforms() {
            return Some(Ok(()));
        }
        let outcome = remembered.outcome(publish, now)?;
        Some(outcome.apply(
            publish,
            maximum_qos,
            || chain.clock_millis_at(now),
            &mut self.stamped,
        ))
    }

    /// Authorizes a PUBLISH (or a Will) to `topic`.
    pub(crate) async fn authorize_publish(
        &mut self,
        topic: &str,
        qos: QoS,
        retain: bool,
    ) -> Result<(), Refusal> {
        let interest = self.chain.publish_interest(topic);
        if !interest.authorizes() {
            return Ok(());
        }
        let key = CacheKey::publish(qos, retain);
        if let Some(verdict) = self.cached(topic, key) {
            return verdict.map(|_| ());
        }
        let decided = self
            .chain
            .authorize_publish_with(interest, &self.session, topic, wit_qos(qos), retain)
            .await;
        let who = decided.source.plugin_name().to_owned();
        let verdict = match decided.verdict.decision {
            wit::Decision::Allow => Ok(qos),
            wit::Decision::Deny(denial) => Err(Refusal::from_denial(denial, PUBACK, &who)),
            wit::Decision::Defer => self.default_verdict(qos, "publish"),
        };
        self.remember(topic, key, &verdict, decided.verdict.cache_seconds);
        verdict.map(|_| ())
    }

    /// Authorizes one SUBSCRIBE filter; `Ok` carries the QoS granted (at most `qos`).
    pub(crate) async fn authorize_subscribe(
        &mut self,
        filter: &str,
        qos: QoS,
    ) -> Result<QoS, Refusal> {
        if !self.chain.wants(Hook::AuthorizeSubscribe, None) {
            return Ok(qos);
        }
        let key = CacheKey::subscription(qos);
        if let Some(verdict) = self.cached(filter, key) {
            return verdict;
        }
        let decided = self
            .chain
            .authorize_subscribe(&self.session, filter, wit_qos(qos))
            .await;
        let who = decided.source.plugin_name().to_owned();
        let verdict = match decided.verdict.decision {
            wit::SubscribeDecision::Allow(granted) => Ok(mqtt_qos(granted).min(qos)),
            wit::SubscribeDecision::Deny(denial) => Err(Refusal::from_denial(denial, SUBACK, &who)),
            wit::SubscribeDecision::Defer => self.default_verdict(qos, "subscription"),
        };
        self.remember(filter, key, &verdict, decided.verdict.cache_seconds);
        verdict
    }

    fn default_verdict(&self, qos: QoS, what: &str) -> Verdict {
        if self.defaults.allow_anonymous {
            Ok(qos)
        } else {
            Err(Refusal {
                code: ReasonCode::NotAuthorized,
                reason: format!("no plugin allowed this {what} and anonymous access is off"),
            })
        }
    }

    /// The unexpired verdict cached for `topic` and `key`. Allocates nothing (an expired one is removed).
    fn cached(&mut self, topic: &str, key: CacheKey) -> Option<Verdict> {
        self.cache.get_mut(topic)?.verdict(key, Instant::now())
    }

    fn remember(&mut self, topic: &str, key: CacheKey, verdict: &Verdict, seconds: Option<u32>) {
        let Some(seconds) = seconds.filter(|s| *s > 0) else {
            return;
        };
        let until = Instant::now() + Duration::from_secs(u64::from(seconds));
        let slots = &mut bounded_entry(&mut self.cache, topic).verdicts;
        match slots.iter_mut().find(|(k, _, _)| *k == key) {
            Some(slot) => *slot = (key, verdict.clone(), until),
            None => slots.push((key, verdict.clone(), until)),
        }
    }

    fn remember_outcome(
        &mut self,
        publish: &Publish,
        outcome: &Outcome,
        seconds: u32,
        payload_sizes: RangeInclusive<u32>,
    ) {
        let user_properties = publish.properties.user_properties.to_owned_copy();
        let entries = &mut bounded_entry(&mut self.cache, &publish.topic).outcomes;
        entries.retain(|r| !r.fits(publish));
        if entries.len() >= OUTCOMES_PER_TOPIC {
            // The oldest goes: ranges of sizes a plugin draws ever narrower must not grow the entry.
            entries.remove(0);
        }
        entries.push(Reusable {
            payload_sizes,
            qos: publish.qos,
            retain: publish.retain,
            user_properties,
            content_type: publish
                .properties
                .content_type
                .as_deref()
                .map(ByteString::from),
            outcome: outcome.clone(),
            until: Instant::now() + Duration::from_secs(u64::from(seconds)),
        });
    }

    /// Runs the transformers on an inbound PUBLISH (or reuses their outcome) and applies their patch to
    /// it. `Err`: a plugin dropped the message.
    pub(crate) async fn transform(
        &mut self,
        publish: &mut Publish,
        maximum_qos: QoS,
    ) -> Result<(), Refusal> {
        let interest = self.chain.publish_interest(&publish.topic);
        if !interest.transforms() {
            return Ok(());
        }
        if let Some(outcome) = self
            .cache
            .get_mut(&*publish.topic)
            .and_then(|remembered| remembered.outcome(publish, Instant::now()))
        {
            let chain = &self.chain;
            return outcome.apply(
                publish,
                maximum_qos,
                || chain.clock_millis(),
                &mut self.stamped,
            );
        }
        let message = wit::Message {
            topic: publish.topic.to_string(),
            payload: publish.payload.to_vec(),
            qos: wit_qos(publish.qos),
            retain: publish.retain,
            user_properties: publish
                .properties
                .user_properties
                .iter()
                .map(|(key, value)| wit::UserProperty {
                    key: key.to_owned(),
                    value: value.to_owned(),
                })
                .collect(),
            content_type: publish
                .properties
                .content_type
                .as_deref()
                .map(str::to_owned),
        };
        let Transformation {
            outcome,
            cache_seconds,
            stamps,
            payload_sizes,
        } = self
            .chain
            .transform_owned(interest, &self.session, message)
            .await;
        let outcome = match outcome {
            Transformed::Unchanged => Outcome::Unchanged,
            Transformed::Modified(m) => {
                // Never part of a reusable outcome: the chain does not reuse a payload patch.
                if m.payload != publish.payload {
                    publish.payload = Bytes::from(m.payload);
                }
                Outcome::Modified {
                    topic: if m.topic == *publish.topic {
                        publish.topic.clone()
                    } else {
                        Arc::from(m.topic)
                    },
                    qos: mqtt_qos(m.qos),
                    retain: m.retain,
                    stamps: stamp_places(&stamps, &m.user_properties),
                    user_properties: UserProperties::from_pairs(
                        m.user_properties.iter().map(|p| (&p.key, &p.value)),
                    )
                    .expect("the plugin host refuses user properties over 65,535 bytes"),
                    content_type: m.content_type.map(ByteString::from),
                }
            }
            Transformed::Dropped {
                reason_code,
                plugin,
            } => Outcome::Dropped(Refusal {
                code: plugin_code(reason_code, PUBACK),
                reason: format!("dropped by plugin {plugin}"),
            }),
        };
        if let Some(seconds) = cache_seconds {
            self.remember_outcome(publish, &outcome, seconds, payload_sizes);
        }
        // The chain set the stamps a moment ago: `apply` sets them again, at the same clock.
        let chain = &self.chain;
        outcome.apply(
            publish,
            maximum_qos,
            || chain.clock_millis(),
            &mut self.stamped,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_reason_codes_are_kept_only_where_the_packet_allows_them() {
        assert_eq!(plugin_code(0x97, PUBACK), ReasonCode::QuotaExceeded);
        assert_eq!(
            plugin_code(0x86, CONNACK),
            ReasonCode::BadUserNameOrPassword
        );
        // 0x86 cannot be sent in a PUBACK, 0x00 is not a refusal, 0xFF is no reason code at all.
        assert_eq!(plugin_code(0x86, PUBACK), ReasonCode::NotAuthorized);
        assert_eq!(plugin_code(0x00, SUBACK), ReasonCode::NotAuthorized);
        assert_eq!(plugin_code(0xFF, DISCONNECT), ReasonCode::NotAuthorized);
    }

    #[test]
    fn qos_maps_both_ways() {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            assert_eq!(mqtt_qos(wit_qos(qos)), qos);
        }
    }

    fn access(allow_by_default: bool) -> Access {
        let client = wit::ClientInfo {
            client_id: "c".into(),
            username: None,
            listener: "default".into(),
            peer_address: "127.0.0.1:1".into(),
            protocol: wit::ProtocolVersion::V5,
            tls_identity: None,
        };
        let defaults = Defaults {
            allow_anonymous: allow_by_default,
            certificate_authenticates: false,
        };
        Access::new(Chain::default(), client, defaults)
    }

    /// A QoS 1 PUBLISH to `t`.
    fn publish(payload: Bytes) -> Publish {
        Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: "t".into(),
            packet_id: Some(1),
            properties: Default::default(),
            payload,
        }
    }

    #[tokio::test]
    async fn without_plugins_everything_is_allowed_unchanged() {
        let mut a = access(false);
        assert_eq!(
            a.authorize_publish("t", QoS::AtLeastOnce, false).await,
            Ok(())
        );
        assert_eq!(
            a.authorize_subscribe("t/#", QoS::ExactlyOnce).await,
            Ok(QoS::ExactlyOnce)
        );
        let mut publish = publish(Bytes::from_static(b"p"));
        assert_eq!(
            a.publish_without_calls(&mut publish, QoS::ExactlyOnce, Instant::now()),
            Some(Ok(()))
        );
    }

    #[test]
    fn a_full_cache_is_emptied_for_a_new_topic_only() {
        let mut a = access(true);
        let key = CacheKey::publish(QoS::AtMostOnce, false);
        for n in 0..CACHE_CAPACITY {
            a.remember(&format!("t/{n}"), key, &Ok(QoS::AtMostOnce), Some(60));
        }
        assert_eq!(a.cache.len(), CACHE_CAPACITY);
        a.remember("t/0", key, &Ok(QoS::AtLeastOnce), Some(60));
        assert_eq!(a.cache.len(), CACHE_CAPACITY, "a known topic takes no room");
        assert_eq!(a.cached("t/1", key), Some(Ok(QoS::AtMostOnce)));
        a.remember("new", key, &Ok(QoS::AtMostOnce), Some(60));
        assert_eq!(a.cache.len(), 1, "emptied, then the new topic");
        assert_eq!(a.cached("t/1", key), None);
        assert_eq!(a.cached("new", key), Some(Ok(QoS::AtMostOnce)));
    }

    #[test]
    fn cached_verdicts_expire_and_attributes_clear_them() {
        let mut a = access(true);
        let key = CacheKey::publish(QoS::AtMostOnce, false);
        a.remember("t", key, &Ok(QoS::AtMostOnce), None);
        assert_eq!(a.cached("t", key), None, "no lifetime, not cached");
        a.remember("t", key, &Ok(QoS::AtMostOnce), Some(60));
        assert_eq!(a.cached("t", key), Some(Ok(QoS::AtMostOnce)));
        let retained = CacheKey::publish(QoS::AtMostOnce, true);
        let subscription = CacheKey::subscription(QoS::AtMostOnce);
        assert_eq!(
            a.cached("t", retained),
            None,
            "another key of the same topic"
        );
        assert_eq!(a.cached("t", subscription), None);
        a.remember("t", subscription, &Ok(QoS::AtMostOnce), Some(60));
        assert_eq!(a.cached("t", subscription), Some(Ok(QoS::AtMostOnce)));
        assert_eq!(a.cached("t", key), Some(Ok(QoS::AtMostOnce)), "both kept");
        assert_eq!(a.cached("u", key), None);
        a.set_attributes(vec![("role".into(), "admin".into())]);
        assert_eq!(a.cached("t", key), None);
        assert_eq!(
            a.default_verdict(QoS::AtLeastOnce, "publish"),
            Ok(QoS::AtLeastOnce)
        );
        assert_eq!(
            access(false)
                .default_verdict(QoS::AtLeastOnce, "publish")
                .unwrap_err()
                .code,
            ReasonCode::NotAuthorized
        );
    }

    #[test]
    fn reused_outcomes_fit_their_payload_sizes_and_are_bounded_per_topic() {
        let mut a = access(true);
        let publish = |size: usize| publish(Bytes::from(vec![b'x'; size]));
        let dropped = Outcome::Dropped(Refusal {
            code: ReasonCode::QuotaExceeded,
            reason: "too big".into(),
        });
        a.remember_outcome(&publish(3), &Outcome::Unchanged, 60, 0..=4);
        a.remember_outcome(&publish(9), &dropped, 60, 5..=u32::MAX);
        let now = Instant::now();
        let entry = a.cache.get_mut("t").expect("remembered");
        for (size, expected) in [
            (0, &Outcome::Unchanged),
            (4, &Outcome::Unchanged),
            (5, &dropped),
            (70_000, &dropped),
        ] {
            assert_eq!(entry.outcome(&publish(size), now), Some(expected), "{size}");
        }

        // Ranges of one size each: the newest OUTCOMES_PER_TOPIC stay.
        for size in 0..20 {
            let exact = u32::try_from(size).expect("small");
            a.remember_outcome(&publish(size), &Outcome::Unchanged, 60, exact..=exact);
        }
        let entry = a.cache.get_mut("t").expect("remembered");
        assert_eq!(entry.outcomes.len(), OUTCOMES_PER_TOPIC);
        assert_eq!(entry.outcome(&publish(19), now), Some(&Outcome::Unchanged));
        assert_eq!(entry.outcome(&publish(3), now), None);
    }

    #[test]
    fn a_reused_outcome_sets_its_stamps_anew_and_reads_the_clock_only_for_them() {
        let modified = |stamps| Outcome::Modified {
            topic: Arc::from("out"),
            qos: QoS::AtLeastOnce,
            retain: false,
            user_properties: UserProperties::from_pairs([("at", "5"), ("k", "v")]).expect("short"),
            content_type: None,
            stamps,
        };
        let mut publish = Publish {
            dup: false,
            qos: QoS::ExactlyOnce,
            retain: true,
            topic: "in".into(),
            packet_id: Some(1),
            properties: Default::default(),
            payload: Bytes::from_static(b"p"),
        };
        let mut written = Stamped::default();
        let stamped = modified(vec![(0, wit::StampValue::ReceiveTimeMillis)]);
        assert_eq!(
            stamped.apply(&mut publish, QoS::ExactlyOnce, || 9, &mut written),
            Ok(())
        );
        assert_eq!(
            publish.properties.user_properties,
            [("at", "9"), ("k", "v")]
        );
        assert_eq!(
            (&*publish.topic, publish.qos, publish.retain),
            ("out", QoS::AtLeastOnce, false)
        );
        let plain = modified(Vec::new());
        let no_clock = || -> u64 { panic!("read the clock without a stamp") };
        assert_eq!(
            plain.apply(&mut publish, QoS::AtMostOnce, no_clock, &mut written),
            Ok(())
        );
        assert_eq!(
            publish.properties.user_properties,
            [("at", "5"), ("k", "v")]
        );
        assert_eq!(publish.qos, QoS::AtMostOnce, "capped at the maximum QoS");
    }

    #[test]
    fn stamps_are_found_once_each_where_the_chain_set_them() {
        let property = |key: &str| wit::UserProperty {
            key: key.to_owned(),
            value: "0".to_owned(),
        };
        let stamp = |key: &str| wit::Stamp {
            key: key.to_owned(),
            value: wit::StampValue::ReceiveTimeMillis,
        };
        let properties = [property("unit"), property("at"), property("seen")];
        let stamps = [stamp("seen"), stamp("gone"), stamp("at"), stamp("seen")];
        let time = wit::StampValue::ReceiveTimeMillis;
        // "gone" was removed by a later patch; "seen" twice is one property.
        assert_eq!(stamp_places(&stamps, &properties), [(2, time), (1, time)]);
        assert_eq!(stamp_places(&[], &properties), []);
    }

    #[test]
    fn messages_get_their_own_stamped_user_properties() {
        let stamps = [(0, wit::StampValue::ReceiveTimeMillis)];
        let long = "x".repeat(60_000);
        let pairs = [("at", "0"), ("id", "c1"), ("long", &long)];
        let short = UserProperties::from_pairs(pairs[..2].iter().copied()).expect("short");
        let with_long = UserProperties::from_pairs(pairs).expect("under 64 KiB");
        let mut stamped = Stamped::default();
        // A millisecond each, and one message whose properties are long.
        let messages: Vec<_> = (0..20u64)
            .map(|n| {
                let mut target = UserProperties::new();
                let source = if n == 7 { &with_long } else { &short };
                stamped.set(&mut target, source, &stamps, || n);
                target
            })
            .collect();
        for (n, properties) in messages.iter().enumerate() {
            let at = n.to_string();
            let mut expected = vec![("at", at.as_str()), ("id", "c1")];
            if n == 7 {
                expected.push(("long", &long));
            }
            assert_eq!(*properties, expected[..], "message {n}");
        }
        let mut target = UserProperties::from_pairs([("stale", "1")]).expect("short");
        let no_clock = || -> u64 { panic!("read the clock without a stamp") };
        stamped.set(&mut target, &short, &[], no_clock);
        assert_eq!(target, short, "without stamps, the outcome's own");
        assert_eq!(
            target.wire().as_ptr(),
            short.wire().as_ptr(),
            "without stamps, shared"
        );
        stamped.set(&mut target, &UserProperties::new(), &[], no_clock);
        assert!(
            target.is_empty(),
            "an outcome without user properties clears them"
        );
    }

    #[test]
    fn messages_of_one_millisecond_share_their_stamped_properties() {
        let time = wit::StampValue::ReceiveTimeMillis;
        let source = UserProperties::from_pairs([("at", "0"), ("id", "c1")]).expect("short");
        let other = UserProperties::from_pairs([("at", "0"), ("id", "c2")]).expect("short");
        let mut stamped = Stamped::default();
        let set = |stamped: &mut Stamped, source: &UserProperties, stamps: &[_], millis: u64| {
            let mut target = UserProperties::new();
            stamped.set(&mut target, source, stamps, || millis);
            target
        };
        let first = set(&mut stamped, &source, &[(0, time)], 5);
        let same = set(&mut stamped, &source, &[(0, time)], 5);
        assert_eq!(same, [("at", "5"), ("id", "c1")]);
        assert_eq!(
            same.wire().as_ptr_range(),
            first.wire().as_ptr_range(),
            "the same outcome in the same millisecond: the same bytes, shared"
        );
        // Anything that makes other bytes makes a new copy: the time, the properties, the stamps' places.
        let later = set(&mut stamped, &source, &[(0, time)], 6);
        assert_eq!(later, [("at", "6"), ("id", "c1")]);
        let other_properties = set(&mut stamped, &other, &[(0, time)], 6);
        assert_eq!(other_properties, [("at", "6"), ("id", "c2")]);
        let other_place = set(&mut stamped, &other, &[(1, time)], 6);
        assert_eq!(other_place, [("at", "0"), ("id", "6")]);
        let copies = [&first, &later, &other_properties, &other_place];
        for (i, a) in copies.iter().enumerate() {
            for b in &copies[i + 1..] {
                assert_ne!(a.wire().as_ptr(), b.wire().as_ptr(), "{a:?} and {b:?}");
            }
        }
        // Only the last copy is kept: going back to earlier properties writes them anew.
        let back = set(&mut stamped, &source, &[(0, time)], 6);
        assert_eq!(back, later);
        assert_ne!(back.wire().as_ptr(), later.wire().as_ptr());
    }
}
