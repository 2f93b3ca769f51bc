//! Persistence: what the broker writes to its storage backend, when, and how it reads it back.
//!
//! With `[storage] plugin = "name"` the broker keeps retained messages, persistent sessions (expiry,
//! subscriptions, will), the QoS 1/2 messages queued for or in flight to persistent sessions, and the
//! inbound QoS 2 packet identifiers awaiting PUBREL in a backend: a plugin exporting the WIT `storage`
//! interface (0.1.2). Without it nothing is written and everything lives in memory only.
//!
//! **Writes.** Whoever changes persistent state appends an [`Op`] with [`Store::append`] while it holds
//! the lock of what it changes (the session, the retained store), so the order of the ops is the order of
//! the changes. Each op gets a ticket, its position in that order. One writer task ([`Store::run`]) takes
//! everything pending as one batch, drops ops that a later op of the same batch overrides, calls the
//! backend's `write` (durable when it returns), then publishes the last ticket written in a `watch`
//! channel. A pending-ops vector behind a `parking_lot::Mutex` rather than a channel: appends are a push
//! under a lock held for nanoseconds, and the writer takes the whole vector at once.
//!
//! **Durability before acknowledgement.** A connection whose PUBLISH appended ops (queued for a
//! persistent session, or retained) holds its PUBACK / PUBREC, and everything it sends after it, until
//! the ticket is durable (`connection::Deferred`); so do SUBACKs that changed a persistent session,
//! PUBRELs, and QoS 2 PUBLISHes to persistent sessions (so that the packet identifier the client sees is
//! the one that survives a crash). `[storage] batch_delay_ms` trades latency for fewer, larger writes:
//! the writer waits that long after the first pending op before writing; 0 writes as soon as ops come
//! (batches still form while a write is in progress).
//!
//! **Failures.** A failed write is logged and retried (100 ms, doubling up to 5 s) with the same batch
//! plus nothing else, so the order holds; meanwhile [`Store::is_healthy`] is false: QoS 1/2 PUBLISHes are
//! refused (5.0: PUBACK/PUBREC 0x80) or held (3.x), and CONNECTs asking for a persistent session get
//! 0x88 Server unavailable. Nothing held is acknowledged until its batch is written; when the backend
//! comes back, the batch goes through and the held acknowledgements follow.
//!
//! **Values** are a format byte ([`FORMAT`]) and a [postcard](https://docs.rs/postcard) encoding of the
//! record structs below.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tracing::{error, info, warn};
use wasp_mqtt::{
    ByteString, Properties, QoS, RetainHandling, SubscriptionOptions, UserProperties, Will,
};
use wasp_plugin_host::Plugin;
pub use wasp_plugin_host::storage::{Key, Keyspace, Op};

use crate::session::{Delivery, Message, SubscriptionEntry};

/// The first byte of every value: the record format. A broker refuses to start on values of another.
pub const FORMAT: u8 = 1;
/// Records per `load` call at start-up.
const LOAD_PAGE: u32 = 1024;
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend refused or failed a call.
    #[error("storage plugin `{plugin}`: {message}")]
    Backend {
        /// The storage plugin's name.
        plugin: String,
        /// What it said, or how the call failed.
        message: String,
    },
    /// A stored value could not be read.
    #[error("storage: record {keyspace:?} {name:?}/{seq}: {message}")]
    Record {
        /// The record's keyspace.
        keyspace: Keyspace,
        /// Its name.
        name: String,
        /// Its sequence number.
        seq: u64,
        /// What is wrong with it.
        message: String,
    },
}

/// Where records go: the storage plugin, or a test's stand-in.
pub trait Backend: Send + Sync + 'static {
    /// The backend's name, for messages.
    fn name(&self) -> &str;
    /// Applies a batch; durable when it returns `Ok`.
    fn write<'a>(&'a self, batch: &'a [Op]) -> BoxFuture<'a, Result<(), String>>;
    /// Up to `limit` records of `keyspace` after `after`, in key order.
    fn load<'a>(
        &'a self,
        keyspace: Keyspace,
        after: Option<&'a Key>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Page, String>>;
}

/// Records with their keys, in key order.
pub type Page = Vec<(Key, Vec<u8>)>;

/// A boxed future, for [`Backend`]'s methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Backend for Plugin {
    fn name(&self) -> &str {
        Plugin::name(self)
    }

    fn write<'a>(&'a self, batch: &'a [Op]) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            match self.storage_write(batch).await {
                Ok(result) => result,
                Err(e) => Err(e.to_string()),
            }
        })
    }

    fn load<'a>(
        &'a self,
        keyspace: Keyspace,
        after: Option<&'a Key>,
        limit: u32,
    ) -> BoxFuture<'a, Result<Page, String>> {
        Box::pin(async move {
            match self.storage_load(keyspace, after, limit).await {
                Ok(result) => result,
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

#[derive(Default)]
struct Pending {
    /// Each op, with whether it is the put that creates its key ([`Store::append_new`]).
    ops: Vec<(Op, bool)>,
    /// The ticket of the last op appended.
    last: u64,
}

/// The broker's writer to its storage backend.
pub struct Store {
    backend: Box<dyn Backend>,
    pending: Mutex<Pending>,
    wake: Notify,
    durable: watch::Sender<u64>,
    healthy: AtomicBool,
    batch_delay: Duration,
    /// Batches written, and writes that failed.
    writes: AtomicU64,
    failures: AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend.name())
            .field("durable", &*self.durable.borrow())
            .field("healthy", &self.is_healthy())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// A store writing to `backend`, waiting `batch_delay` after the first pending op before a write.
    pub fn new(backend: Box<dyn Backend>, batch_delay: Duration) -> Self {
        Self {
            backend,
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            durable: watch::channel(0).0,
            healthy: AtomicBool::new(true),
            batch_delay,
            writes: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// Queues one op for the next batch; returns its ticket.
    pub fn append(&self, op: Op) -> u64 {
        self.push(op, false)
    }

    /// Queues the put that creates its key: no earlier op wrote it since it was last deleted (a
    /// delivery's record, at a position its session never used). When a later op of the same batch
    /// deletes the key again, neither is written.
    pub fn append_new(&self, op: Op) -> u64 {
        self.push(op, true)
    }

    fn push(&self, op: Op, creates: bool) -> u64 {
        let ticket = {
            let mut pending = self.pending.lock();
            pending.ops.push((op, creates));
            pending.last += 1;
            pending.last
        };
        self.wake.notify_one();
        ticket
    }

    /// Queues the deletion of every record of the session of `client_id`: its session record, its
    /// messages and its inbound QoS 2 identifiers.
    pub fn delete_session(&self, client_id: &str) {
        self.append(Op::Delete(key(Keyspace::Sessions, client_id, 0)));
        self.append(Op::DeleteAll((Keyspace::Messages, client_id.to_owned())));
        self.append(Op::DeleteAll((
            Keyspace::IncomingQos2,
            client_id.to_owned(),
        )));
    }

    /// The ticket of the last op appended so far: once it is durable, so is every op appended before
    /// this call.
    pub fn last_ticket(&self) -> u64 {
        self.pending.lock().last
    }

    /// The last ticket written, as it advances.
    pub fn durable(&self) -> watch::Receiver<u64> {
        self.durable.subscribe()
    }

    /// Batches written, writes failed, and ops appended but not yet durable (for `$SYS` and metrics).
    pub fn counts(&self) -> (u64, u64, u64) {
        let durable = *self.durable.borrow();
        (
            self.writes.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
            self.last_ticket().saturating_sub(durable),
        )
    }

    /// False while writes fail.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Writes batches until `stop` turns true, then writes what is pending once more.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            let idle = self.pending.lock().ops.is_empty();
            if idle {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = stop.changed() => break,
                }
                continue;
            }
            if !self.batch_delay.is_zero() {
                tokio::time::sleep(self.batch_delay).await;
            }
            if !self.write_pending(Some(&mut stop)).await {
                break;
            }
        }
        self.write_pending(None).await;
    }

    /// Writes everything pending as one batch, retrying while it fails. With `stop`, gives up when it
    /// turns true (returns false); without, tries once.
    async fn write_pending(&self, mut stop: Option<&mut watch::Receiver<bool>>) -> bool {
        let (ops, last) = {
            let mut pending = self.pending.lock();
            (std::mem::take(&mut pending.ops), pending.last)
        };
        if ops.is_empty() {
            return true;
        }
        let batch = coalesce(ops);
        if batch.is_empty() {
            // Everything was created and deleted again within the batch: nothing to write.
            self.durable.send_replace(last);
            return true;
        }
        let mut wait = RETRY_FIRST;
        loop {
            match self.backend.write(&batch).await {
                Ok(()) => {
                    self.writes.fetch_add(1, Ordering::Relaxed);
                    if !self.healthy.swap(true, Ordering::Relaxed) {
                        info!(
                            backend = self.backend.name(),
                            "storage writes succeed again"
                        );
                    }
                    self.durable.send_replace(last);
                    return true;
                }
                Err(message) => {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    self.healthy.store(false, Ordering::Relaxed);
                    error!(
                        backend = self.backend.name(),
                        ops = batch.len(),
                        retry_in = ?wait,
                        "storage write failed: {message}"
                    );
                    let Some(stop) = stop.as_deref_mut() else {
                        error!(
                            backend = self.backend.name(),
                            "shutting down with {} storage ops unwritten",
                            batch.len()
                        );
                        return false;
                    };
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.changed() => return false,
                    }
                    wait = (wait * 2).min(RETRY_MAX);
                }
            }
        }
    }

    /// Reads every record back, at start-up.
    pub async fn load(&self) -> Result<Records, StoreError> {
        let mut records = Records::default();
        for keyspace in [
            Keyspace::Retained,
            Keyspace::Sessions,
            Keyspace::Messages,
            Keyspace::IncomingQos2,
        ] {
            let mut after: Option<Key> = None;
            loop {
                let page = self
                    .backend
                    .load(keyspace, after.as_ref(), LOAD_PAGE)
                    .await
                    .map_err(|message| StoreError::Backend {
                        plugin: self.backend.name().to_owned(),
                        message,
                    })?;
                let full = page.len() == LOAD_PAGE as usize;
                after = page.last().map(|(key, _)| key.clone());
                let into = match keyspace {
                    Keyspace::Retained => &mut records.retained,
                    Keyspace::Sessions => &mut records.sessions,
                    Keyspace::Messages => &mut records.messages,
                    Keyspace::IncomingQos2 => &mut records.incoming_qos2,
                };
                into.extend(page);
                if !full {
                    break;
                }
            }
        }
        Ok(records)
    }
}

/// Keeps, for each key, only its last op (an earlier put or delete of a key that a later op of the same
/// batch writes again never needs to reach the backend), and nothing at all for a key that the batch
/// creates and deletes again; a `delete-all` removes the earlier ops of its name and stays. Order is
/// otherwise kept.
fn coalesce(ops: Vec<(Op, bool)>) -> Vec<Op> {
    use std::collections::HashMap;
    // Keyspaces as numbers: the generated enum does not implement `Hash`.
    fn space(keyspace: Keyspace) -> u8 {
        keyspace as u8
    }
    fn key_of(op: &Op) -> Option<(u8, &str, u64)> {
        match op {
            Op::Put((key, _)) | Op::Delete(key) => {
                Some((space(key.keyspace), key.name.as_str(), key.seq))
            }
            Op::DeleteAll(_) => None,
        }
    }
    let mut last: HashMap<(u8, &str, u64), usize> = HashMap::with_capacity(ops.len());
    let mut last_delete_all: HashMap<(u8, &str), usize> = HashMap::new();
    for (i, (op, _)) in ops.iter().enumerate() {
        match (op, key_of(op)) {
            (Op::DeleteAll((keyspace, name)), _) => {
                last_delete_all.insert((space(*keyspace), name.as_str()), i);
            }
            (_, Some(key)) => {
                last.insert(key, i);
            }
            (_, None) => {}
        }
    }
    let wiped = |keyspace, name, i: usize| {
        last_delete_all
            .get(&(keyspace, name))
            .is_some_and(|&d| d > i)
    };
    // Whether the first op of each key that no later delete-all wipes creates it.
    let mut created: HashMap<(u8, &str, u64), bool> = HashMap::new();
    for (i, (op, creates)) in ops.iter().enumerate() {
        if let Some(key @ (keyspace, name, _)) = key_of(op)
            && !wiped(keyspace, name, i)
        {
            created.entry(key).or_insert(*creates);
        }
    }
    let keep: Vec<bool> = ops
        .iter()
        .enumerate()
        .map(|(i, (op, _))| match (op, key_of(op)) {
            (Op::DeleteAll((keyspace, name)), _) => {
                last_delete_all.get(&(space(*keyspace), name.as_str())) == Some(&i)
            }
            (_, Some(key @ (keyspace, name, _))) => {
                let is_last = last.get(&key) == Some(&i);
                let created_and_deleted =
                    matches!(op, Op::Delete(_)) && created.get(&key) == Some(&true);
                !wiped(keyspace, name, i) && is_last && !created_and_deleted
            }
            (_, None) => true,
        })
        .collect();
    ops.into_iter()
        .zip(keep)
        .filter_map(|((op, _), keep)| keep.then_some(op))
        .collect()
}

/// Everything read back at start-up, by keyspace, each in key order.
#[derive(Debug, Default)]
pub struct Records {
    /// Retained messages.
    pub retained: Vec<(Key, Vec<u8>)>,
    /// Persistent sessions.
    pub sessions: Vec<(Key, Vec<u8>)>,
    /// Queued and in-flight outbound messages.
    pub messages: Vec<(Key, Vec<u8>)>,
    /// Inbound QoS 2 packet identifiers.
    pub incoming_qos2: Vec<(Key, Vec<u8>)>,
}

/// A key.
pub fn key(keyspace: Keyspace, name: &str, seq: u64) -> Key {
    Key {
        keyspace,
        name: name.to_owned(),
        seq,
    }
}

// ---- Records ----

/// Milliseconds since the Unix epoch now.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The wall-clock time (ms since the epoch) of a monotonic instant.
fn instant_to_millis(at: Instant) -> u64 {
    let now = Instant::now();
    let now_ms = now_millis();
    if at >= now {
        now_ms.saturating_add(u64::try_from((at - now).as_millis()).unwrap_or(u64::MAX))
    } else {
        now_ms.saturating_sub(u64::try_from((now - at).as_millis()).unwrap_or(u64::MAX))
    }
}

/// The monotonic instant of a wall-clock time (ms since the epoch); a past time gives a past instant.
fn millis_to_instant(ms: u64) -> Instant {
    let now = Instant::now();
    let now_ms = now_millis();
    if ms >= now_ms {
        now + Duration::from_millis(ms - now_ms)
    } else {
        now.checked_sub(Duration::from_millis(now_ms - ms))
            .unwrap_or(now)
    }
}

/// The properties a message or Will carries to subscribers.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StoredProperties {
    payload_format_indicator: Option<u8>,
    message_expiry_interval: Option<u32>,
    content_type: Option<String>,
    response_topic: Option<String>,
    correlation_data: Option<Bytes>,
    user_properties: StoredUserProperties,
    will_delay_interval: Option<u32>,
}

/// User properties as stored: a sequence of `(name, value)` pairs. Read back through
/// [`UserProperties::from_pairs`], so a record with one over 65,535 bytes is unreadable, not unsendable.
#[derive(Debug, Default)]
struct StoredUserProperties(UserProperties);

impl Serialize for StoredUserProperties {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Collected first: postcard needs a sequence's length before its elements.
        serializer.collect_seq(self.0.iter().collect::<Vec<_>>())
    }
}

impl<'de> Deserialize<'de> for StoredUserProperties {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pairs = Vec::<(String, String)>::deserialize(deserializer)?;
        UserProperties::from_pairs(pairs)
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

impl StoredProperties {
    fn of(p: &Properties) -> Self {
        Self {
            payload_format_indicator: p.payload_format_indicator,
            message_expiry_interval: p.message_expiry_interval,
            content_type: p.content_type.as_deref().map(str::to_owned),
            response_topic: p.response_topic.as_deref().map(str::to_owned),
            correlation_data: p.correlation_data.clone(),
            user_properties: StoredUserProperties(p.user_properties.clone()),
            will_delay_interval: p.will_delay_interval,
        }
    }

    fn into_properties(self) -> Properties {
        Properties {
            payload_format_indicator: self.payload_format_indicator,
            message_expiry_interval: self.message_expiry_interval,
            content_type: self.content_type.map(ByteString::from),
            response_topic: self.response_topic.map(ByteString::from),
            correlation_data: self.correlation_data,
            user_properties: self.user_properties.0,
            will_delay_interval: self.will_delay_interval,
            ..Properties::default()
        }
    }
}

/// A routed message.
#[derive(Debug, Serialize, Deserialize)]
struct StoredMessage {
    topic: String,
    payload: Bytes,
    qos: u8,
    retain: bool,
    properties: StoredProperties,
    /// When the Message Expiry Interval runs out, ms since the epoch.
    expires_at_ms: Option<u64>,
    origin: Option<String>,
}

fn qos_of(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

impl StoredMessage {
    fn of(m: &Message) -> Self {
        Self {
            topic: m.topic.to_string(),
            payload: m.payload.clone(),
            qos: m.qos as u8,
            retain: m.retain,
            properties: StoredProperties::of(&m.properties),
            expires_at_ms: m.expires_at.map(instant_to_millis),
            origin: m.origin.as_deref().map(str::to_owned),
        }
    }

    fn into_message(self) -> Message {
        Message {
            topic: self.topic.into(),
            payload: self.payload,
            qos: qos_of(self.qos),
            retain: self.retain,
            properties: self.properties.into_properties(),
            expires_at: self.expires_at_ms.map(millis_to_instant),
            origin: self.origin.map(Into::into),
        }
    }
}

/// A record of the `messages` keyspace: one outbound message of a persistent session. Only ever built to
/// be encoded or just decoded, so the size difference of its variants costs nothing.
#[derive(Debug, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
enum StoredOutbound {
    /// Queued (`packet_id` none), or a QoS 1/2 PUBLISH sent with `packet_id`.
    Pending {
        message: StoredMessage,
        qos: u8,
        retain: bool,
        subscription_id: Option<u32>,
        packet_id: Option<u16>,
    },
    /// PUBREC received, PUBREL sent: only the packet identifier is left to complete.
    Released { packet_id: u16 },
}

/// An outbound message read back.
#[derive(Debug)]
pub enum Outbound {
    /// A delivery, queued or (with its packet identifier) sent at QoS 2.
    Pending(Delivery, Option<u16>),
    /// Released, awaiting PUBCOMP.
    Released(u16),
}

/// The value of a queued delivery (or, with `packet_id`, a sent one).
pub fn encode_delivery(d: &Delivery, packet_id: Option<u16>) -> Vec<u8> {
    encode(&StoredOutbound::Pending {
        message: StoredMessage::of(&d.message),
        qos: d.qos as u8,
        retain: d.retain,
        subscription_id: d.subscription_id,
        packet_id,
    })
}

/// The value of a released QoS 2 delivery.
pub fn encode_released(packet_id: u16) -> Vec<u8> {
    encode(&StoredOutbound::Released { packet_id })
}

/// Reads a `messages` record; `seq` becomes the delivery's storage position.
pub fn decode_outbound(key: &Key, value: &[u8]) -> Result<Outbound, StoreError> {
    Ok(match decode::<StoredOutbound>(key, value)? {
        StoredOutbound::Pending {
            message,
            qos,
            retain,
            subscription_id,
            packet_id,
        } => Outbound::Pending(
            Delivery {
                message: Arc::new(message.into_message()),
                qos: qos_of(qos),
                retain,
                subscription_id,
                stored: Some(key.seq),
            },
            packet_id,
        ),
        StoredOutbound::Released { packet_id } => Outbound::Released(packet_id),
    })
}

/// The value of a retained message.
pub fn encode_retained(m: &Message) -> Vec<u8> {
    encode(&StoredMessage::of(m))
}

/// Reads a `retained` record.
pub fn decode_retained(key: &Key, value: &[u8]) -> Result<Message, StoreError> {
    decode::<StoredMessage>(key, value).map(StoredMessage::into_message)
}

/// A Will.
#[derive(Debug, Serialize, Deserialize)]
struct StoredWill {
    topic: String,
    payload: Bytes,
    qos: u8,
    retain: bool,
    properties: StoredProperties,
}

/// One subscription of a session.
#[derive(Debug, Serialize, Deserialize)]
struct StoredSubscription {
    filter: String,
    qos: u8,
    no_local: bool,
    retain_as_published: bool,
    retain_handling: u8,
    id: Option<u32>,
}

/// A record of the `sessions` keyspace.
#[derive(Debug, Serialize, Deserialize)]
struct StoredSession {
    expiry_interval: u32,
    subscriptions: Vec<StoredSubscription>,
    will: Option<StoredWill>,
    /// True while a connection served the session when the record was written.
    connected: bool,
    /// When the record was written, ms since the epoch (a disconnected session's expiry counts from it).
    written_at_ms: u64,
}

/// A persistent session read back.
#[derive(Debug)]
pub struct SessionRecord {
    /// Session Expiry Interval, seconds (`u32::MAX`: never).
    pub expiry_interval: u32,
    /// Subscriptions by filter.
    pub subscriptions: Vec<(String, SubscriptionEntry)>,
    /// The Will of the connection that was serving it, if any.
    pub will: Option<Will>,
    /// Whether a connection was serving it (then the broker stopped without closing it: a crash).
    pub connected: bool,
    /// When the record was written, ms since the epoch.
    pub written_at_ms: u64,
}

/// The value of a session record.
pub fn encode_session<'a>(
    expiry_interval: u32,
    subscriptions: impl Iterator<Item = (&'a String, &'a SubscriptionEntry)>,
    will: Option<&Will>,
    connected: bool,
) -> Vec<u8> {
    encode(&StoredSession {
        expiry_interval,
        subscriptions: subscriptions
            .map(|(filter, entry)| StoredSubscription {
                filter: filter.clone(),
                qos: entry.options.qos as u8,
                no_local: entry.options.no_local,
                retain_as_published: entry.options.retain_as_published,
                retain_handling: entry.options.retain_handling as u8,
                id: entry.id,
            })
            .collect(),
        will: will.map(|w| StoredWill {
            topic: w.topic.to_string(),
            payload: w.payload.clone(),
            qos: w.qos as u8,
            retain: w.retain,
            properties: StoredProperties::of(&w.properties),
        }),
        connected,
        written_at_ms: now_millis(),
    })
}

/// Reads a `sessions` record.
pub fn decode_session(key: &Key, value: &[u8]) -> Result<SessionRecord, StoreError> {
    let s = decode::<StoredSession>(key, value)?;
    Ok(SessionRecord {
        expiry_interval: s.expiry_interval,
        subscriptions: s
            .subscriptions
            .into_iter()
            .map(|sub| {
                let options = SubscriptionOptions {
                    qos: qos_of(sub.qos),
                    no_local: sub.no_local,
                    retain_as_published: sub.retain_as_published,
                    retain_handling: match sub.retain_handling {
                        0 => RetainHandling::SendAtSubscribe,
                        1 => RetainHandling::SendIfNew,
                        _ => RetainHandling::DoNotSend,
                    },
                };
                (
                    sub.filter,
                    SubscriptionEntry {
                        options,
                        id: sub.id,
                    },
                )
            })
            .collect(),
        will: s.will.map(|w| Will {
            topic: w.topic.into(),
            payload: w.payload,
            qos: qos_of(w.qos),
            retain: w.retain,
            properties: w.properties.into_properties(),
        }),
        connected: s.connected,
        written_at_ms: s.written_at_ms,
    })
}

fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    let mut out = vec![FORMAT];
    // Serializing these plain structs into a Vec cannot fail.
    out.extend(postcard::to_allocvec(record).expect("records serialize"));
    out
}

fn decode<T: for<'de> Deserialize<'de>>(key: &Key, value: &[u8]) -> Result<T, StoreError> {
    let fail = |message: String| StoreError::Record {
        keyspace: key.keyspace,
        name: key.name.clone(),
        seq: key.seq,
        message,
    };
    match value.split_first() {
        Some((&FORMAT, rest)) => postcard::from_bytes(rest).map_err(|e| fail(e.to_string())),
        Some((other, _)) => Err(fail(format!(
            "record format {other}, this broker reads {FORMAT}"
        ))),
        None => Err(fail("empty value".to_owned())),
    }
}

/// Logs a record that cannot be read at start-up and is skipped.
pub fn skip_unreadable(error: &StoreError) {
    warn!("skipping an unreadable stored record: {error}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(name: &str, seq: u64, v: u8) -> Op {
        Op::Put((key(Keyspace::Messages, name, seq), vec![v]))
    }

    /// Ops that create nothing.
    fn plain(ops: Vec<Op>) -> Vec<(Op, bool)> {
        ops.into_iter().map(|op| (op, false)).collect()
    }

    #[test]
    fn coalesce_writes_nothing_for_a_key_the_batch_creates_and_deletes() {
        let delete = |name, seq| Op::Delete(key(Keyspace::Messages, name, seq));
        // Created, rewritten, deleted: nothing to write.
        assert_eq!(
            coalesce(vec![
                (put("a", 1, 1), true),
                (put("a", 1, 2), false),
                (delete("a", 1), false)
            ]),
            vec![]
        );
        // Written by an earlier batch (not created here): the delete goes out.
        assert_eq!(
            coalesce(vec![(put("a", 1, 1), false), (delete("a", 1), false)]),
            vec![delete("a", 1)]
        );
        // Created and kept: the last put goes out.
        assert_eq!(
            coalesce(vec![(put("a", 1, 1), true), (put("a", 1, 2), false)]),
            vec![put("a", 1, 2)]
        );
        // A delete-all first (the old session's records), then a new record created and deleted:
        // only the delete-all.
        let wipe = Op::DeleteAll((Keyspace::Messages, "a".to_owned()));
        assert_eq!(
            coalesce(vec![
                (put("a", 1, 9), false),
                (wipe.clone(), false),
                (put("a", 1, 1), true),
                (delete("a", 1), false)
            ]),
            vec![wipe]
        );
        // Deleted before it is created again: the first op is the delete, so the key may exist in
        // the backend, and the last op (the put) is written.
        assert_eq!(
            coalesce(vec![(delete("a", 1), false), (put("a", 1, 1), true)]),
            vec![put("a", 1, 1)]
        );
    }

    #[test]
    fn coalesce_keeps_the_last_op_of_each_key_and_respects_delete_all() {
        let ops = plain(vec![
            put("a", 1, 1),
            put("b", 1, 1),
            put("a", 1, 2),
            Op::Delete(key(Keyspace::Messages, "b", 1)),
            put("c", 1, 1),
            Op::DeleteAll((Keyspace::Messages, "c".to_owned())),
            put("c", 2, 1),
            // Another keyspace with the same name and seq is another key.
            Op::Put((key(Keyspace::IncomingQos2, "a", 1), vec![])),
        ]);
        let kept = coalesce(ops);
        assert_eq!(
            kept,
            vec![
                put("a", 1, 2),
                Op::Delete(key(Keyspace::Messages, "b", 1)),
                Op::DeleteAll((Keyspace::Messages, "c".to_owned())),
                put("c", 2, 1),
                Op::Put((key(Keyspace::IncomingQos2, "a", 1), vec![])),
            ]
        );
    }

    #[test]
    fn messages_and_sessions_read_back_as_written() {
        let expires = Instant::now() + Duration::from_secs(100);
        let message = Message {
            topic: "a/b".into(),
            payload: Bytes::from_static(b"payload"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: Properties {
                content_type: Some("text/plain".into()),
                user_properties: UserProperties::from_pairs([("k", "v")]).expect("short"),
                ..Properties::default()
            },
            expires_at: Some(expires),
            origin: Some("pub".into()),
        };
        let delivery = Delivery {
            message: Arc::new(message),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_id: Some(7),
            stored: None,
        };
        let k = key(Keyspace::Messages, "c", 42);
        let Outbound::Pending(back, packet_id) =
            decode_outbound(&k, &encode_delivery(&delivery, Some(9))).unwrap()
        else {
            panic!("not pending");
        };
        assert_eq!(packet_id, Some(9));
        assert_eq!(back.stored, Some(42));
        assert_eq!(back.qos, QoS::AtLeastOnce);
        assert_eq!(back.subscription_id, Some(7));
        assert_eq!(&*back.message.topic, "a/b");
        assert_eq!(back.message.properties.user_properties, [("k", "v")]);
        let drift = back
            .message
            .expires_at
            .unwrap()
            .saturating_duration_since(expires)
            .max(expires.saturating_duration_since(back.message.expires_at.unwrap()));
        assert!(drift < Duration::from_millis(50), "{drift:?}");
        assert!(matches!(
            decode_outbound(&k, &encode_released(5)).unwrap(),
            Outbound::Released(5)
        ));

        let entry = SubscriptionEntry {
            options: SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::SendIfNew,
            },
            id: Some(3),
        };
        let filter = "x/#".to_owned();
        let will = Will {
            topic: "will".into(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Properties::default(),
        };
        let s = decode_session(
            &key(Keyspace::Sessions, "c", 0),
            &encode_session(60, [(&filter, &entry)].into_iter(), Some(&will), true),
        )
        .unwrap();
        assert_eq!(s.expiry_interval, 60);
        assert_eq!(s.subscriptions, vec![(filter, entry)]);
        assert_eq!(s.will.unwrap().payload, Bytes::from_static(b"gone"));
        assert!(s.connected);
    }

    #[test]
    fn values_of_another_format_are_refused() {
        let k = key(Keyspace::Retained, "t", 0);
        let mut value = encode_released(1);
        value[0] = 99;
        let error = decode_outbound(&k, &value).unwrap_err().to_string();
        assert!(error.contains("record format 99"), "{error}");
        assert!(decode_outbound(&k, &[]).is_err());
    }
}
