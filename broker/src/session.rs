//! A session: the part of a client's state that outlives its network connections.
//!
//! It holds the client's subscriptions (mirrored in the broker's subscription tree), the queue of messages
//! waiting to be sent, and the outbound QoS 1/2 messages in flight. Publishers on other tasks append to the
//! queue; the client's connection task (when there is one) takes from it.
//!
//! Concurrency: the state sits behind a `parking_lot::Mutex` rather than behind a channel to an owning task
//! because the queue must also exist while no connection does (persistent sessions), every critical section
//! is a few pointer moves, and publishers must never wait on a slow subscriber's task. A `Notify` wakes the
//! connection task when the queue grows.
//!
//! Every queue counts the bytes it holds (topic and payload of each delivery) in a [`QueueBudget`] that
//! all sessions of a broker share: the memory ceiling `limits.max_queued_bytes`.
//!
//! With storage configured, a persistent session (expiry interval above 0) writes each QoS 1/2 delivery
//! it queues to the `messages` keyspace under the session's lock (see [`crate::store`]); the delivery
//! remembers its record (`Delivery::stored`) so that whoever completes it deletes the record.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;
use wasp_mqtt::{Properties, QoS, SubscriptionOptions};

use crate::store::{self, Keyspace, Op, Store};

/// A message as the broker routes it: immutable and shared by every subscriber it goes to.
#[derive(Debug)]
pub struct Message {
    /// Topic name.
    pub topic: Arc<str>,
    /// Payload.
    pub payload: Bytes,
    /// The QoS it was published with.
    pub qos: QoS,
    /// The RETAIN flag it was published with.
    pub retain: bool,
    /// The properties forwarded to subscribers unchanged (Payload Format Indicator, Content Type, Response
    /// Topic, Correlation Data, User Properties). Message expiry is kept in `expires_at` instead.
    pub properties: Properties,
    /// When the Message Expiry Interval runs out.
    pub expires_at: Option<Instant>,
    /// The publishing client, for No Local; `None` for messages the broker itself publishes.
    pub origin: Option<Arc<str>>,
}

impl Message {
    /// What the message counts against `limits.max_queued_bytes` in each queue it waits in.
    pub fn queued_size(&self) -> u64 {
        (self.topic.len() + self.payload.len()) as u64
    }

    /// True when the message's expiry interval has passed.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Seconds left of the Message Expiry Interval, rounded up, as forwarded to a subscriber.
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            let left = at.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            u32::try_from(secs).unwrap_or(u32::MAX)
        })
    }
}

/// One message on its way to one subscriber.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The shared message.
    pub message: Arc<Message>,
    /// QoS for this subscriber (the lower of the message's and the subscription's).
    pub qos: QoS,
    /// RETAIN flag to send.
    pub retain: bool,
    /// Subscription Identifier of the matching subscription, if it has one.
    pub subscription_id: Option<u32>,
    /// The position of its record in the session's `messages` keyspace, when it was stored.
    pub stored: Option<u64>,
}

/// An outbound QoS 1/2 message not yet completed by the client.
#[derive(Debug, Clone)]
pub enum Inflight {
    /// QoS 1 sent, waiting for PUBACK.
    Qos1(Delivery),
    /// QoS 2 sent, waiting for PUBREC.
    Qos2(Delivery),
    /// PUBREL sent, waiting for PUBCOMP (with the delivery's record, when it was stored).
    Released(Option<u64>),
}

/// A subscription as the session records it (the tree holds a copy with the session pointer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionEntry {
    /// The options granted (QoS already lowered to what was granted).
    pub options: SubscriptionOptions,
    /// Subscription Identifier (5.0).
    pub id: Option<u32>,
}

/// What happened to a message offered to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued; the connection (if any) was woken.
    Queued,
    /// Queued and written to storage (a QoS 1/2 delivery to a persistent session).
    Stored,
    /// Dropped: QoS 0 for a session with no connection.
    DroppedOffline,
    /// Dropped: the queue was full.
    DroppedFull,
    /// Dropped: a QoS 0 delivery while the queues of all sessions hold `limits.max_queued_bytes`.
    DroppedCeiling,
}

/// The bytes waiting in the session queues of one broker, against a ceiling (`limits.max_queued_bytes`).
#[derive(Debug, Default)]
pub struct QueueBudget {
    used: AtomicU64,
    /// 0: no ceiling.
    max: u64,
}

impl QueueBudget {
    /// A budget with ceiling `max` bytes (0: none).
    pub fn new(max: u64) -> Self {
        Self {
            used: AtomicU64::new(0),
            max,
        }
    }

    /// Bytes queued now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// True when the queues hold the ceiling or more: QoS 1/2 publishes are refused (5.0) or paused
    /// (3.x) until they drain.
    pub fn is_exhausted(&self) -> bool {
        self.max != 0 && self.used() >= self.max
    }

    /// True when `size` more bytes would pass the ceiling.
    fn would_exceed(&self, size: u64) -> bool {
        self.max != 0 && self.used().saturating_add(size) > self.max
    }
}

/// A session's queue of deliveries, counting its bytes in the broker's [`QueueBudget`].
#[derive(Debug, Default)]
pub struct Queue {
    items: VecDeque<Delivery>,
    budget: Arc<QueueBudget>,
}

impl Queue {
    /// Number of deliveries waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The oldest delivery.
    pub fn front(&self) -> Option<&Delivery> {
        self.items.front()
    }

    /// Appends a delivery.
    pub fn push_back(&mut self, delivery: Delivery) {
        self.budget
            .used
            .fetch_add(delivery.message.queued_size(), Ordering::Relaxed);
        self.items.push_back(delivery);
    }

    /// Takes the oldest delivery.
    pub fn pop_front(&mut self) -> Option<Delivery> {
        let delivery = self.items.pop_front()?;
        self.budget
            .used
            .fetch_sub(delivery.message.queued_size(), Ordering::Relaxed);
        Some(delivery)
    }

    /// Forgets every delivery.
    pub fn clear(&mut self) {
        let bytes: u64 = self.items.iter().map(|d| d.message.queued_size()).sum();
        self.budget.used.fetch_sub(bytes, Ordering::Relaxed);
        self.items.clear();
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.clear();
    }
}

/// The mutable part of a session.
#[derive(Debug, Default)]
pub struct SessionState {
    /// Subscriptions by full filter text (including any `$share/group/` prefix).
    ///
    /// This struct's maps are B-trees: an empty `HashMap` takes twice the room of an empty `BTreeMap`
    /// (its random hasher state), and every connected client has a session, most with few entries.
    pub subscriptions: BTreeMap<String, SubscriptionEntry>,
    /// Messages waiting to be sent.
    pub queue: Queue,
    /// Outbound QoS 1/2 messages in flight, by packet identifier, in the order they were first sent.
    pub inflight: indexmap_lite::OrderedMap<Inflight>,
    /// Inbound QoS 2 packet identifiers whose PUBREC was sent and whose PUBREL has not arrived yet.
    pub incoming_qos2: BTreeSet<u16>,
    /// The last packet identifier handed out.
    last_packet_id: u16,
    /// Session Expiry Interval in seconds (`u32::MAX`: never).
    pub expiry_interval: u32,
    /// The position the next stored delivery takes in the `messages` keyspace.
    pub next_record: u64,
    /// True once anything of this session may have been written to storage (its records must then be
    /// deleted when it ends).
    pub in_storage: bool,
}

impl SessionState {
    /// The next packet identifier not in flight, or `None` when all 65535 are.
    pub fn next_packet_id(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            self.last_packet_id = self.last_packet_id.wrapping_add(1);
            if self.last_packet_id == 0 {
                self.last_packet_id = 1;
            }
            if !self.inflight.contains(self.last_packet_id) {
                return Some(self.last_packet_id);
            }
        }
        None
    }
}

/// A client's session.
#[derive(Debug)]
pub struct Session {
    /// The client identifier.
    pub client_id: Arc<str>,
    /// Subscriptions, queue and in-flight state.
    pub state: Mutex<SessionState>,
    /// Woken when a message is queued.
    pub wakeup: Notify,
    /// True while a connection serves this session.
    online: AtomicBool,
    /// Messages dropped because the queue was full (or QoS 0 while offline).
    pub dropped: AtomicU64,
    /// The queue bound.
    max_queued: usize,
    /// The broker's storage, when configured.
    store: Option<Arc<Store>>,
}

impl Session {
    /// A new, empty session.
    pub fn new(client_id: Arc<str>, expiry_interval: u32, max_queued: usize) -> Self {
        Self {
            client_id,
            state: Mutex::new(SessionState {
                expiry_interval,
                ..SessionState::default()
            }),
            wakeup: Notify::new(),
            online: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            max_queued,
            store: None,
        }
    }

    /// Writes this session to `store` while it is persistent (call before anything is queued).
    pub fn with_store(mut self, store: Option<Arc<Store>>) -> Self {
        self.store = store;
        self
    }

    /// The storage this session writes to while persistent.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// Appends `op` to storage if the session is persistent (`state` is this session's, locked by the
    /// caller, which orders the ops of one session); returns its ticket.
    /// `op` is only built when it is written.
    pub fn persist(
        &self,
        state: &mut SessionState,
        op: impl FnOnce(&SessionState) -> Op,
    ) -> Option<u64> {
        self.persist_op(state, op, false)
    }

    fn persist_op(
        &self,
        state: &mut SessionState,
        op: impl FnOnce(&SessionState) -> Op,
        creates: bool,
    ) -> Option<u64> {
        let store = self.store.as_ref()?;
        if state.expiry_interval == 0 {
            return None;
        }
        let op = op(state);
        state.in_storage = true;
        Some(if creates {
            store.append_new(op)
        } else {
            store.append(op)
        })
    }

    /// Deletes the stored record of a delivery that is done (acknowledged, expired, dropped), if it had
    /// one. `state` is this session's, locked by the caller.
    pub fn forget(&self, state: &mut SessionState, stored: Option<u64>) {
        if let (Some(seq), Some(store)) = (stored, &self.store)
            && state.in_storage
        {
            store.append(Op::Delete(store::key(
                Keyspace::Messages,
                &self.client_id,
                seq,
            )));
        }
    }

    /// True while a connection serves the session.
    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    /// Counts this session's queue in the broker-wide `budget` (call before anything is queued).
    pub fn with_budget(self, budget: Arc<QueueBudget>) -> Self {
        {
            let mut state = self.state.lock();
            debug_assert!(state.queue.is_empty());
            state.queue.budget = budget;
        }
        self
    }

    /// Marks the session as served (or not) by a connection.
    pub fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::Release);
    }

    /// Offers a message. QoS 0 messages are not kept for a session without a connection, nor beyond the
    /// broker's `max_queued_bytes`; when the queue is full the new message is dropped (the oldest ones keep
    /// their place, so order is kept). QoS 1/2 deliveries are not held to the byte ceiling here: their
    /// publisher was admitted below it, and may have been acknowledged already.
    pub fn enqueue(&self, mut delivery: Delivery) -> Enqueued {
        let online = self.is_online();
        if !online && delivery.qos == QoS::AtMostOnce {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Enqueued::DroppedOffline;
        }
        let mut outcome = Enqueued::Queued;
        {
            let mut state = self.state.lock();
            if delivery.qos == QoS::AtMostOnce
                && state
                    .queue
                    .budget
                    .would_exceed(delivery.message.queued_size())
            {
                drop(state);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return Enqueued::DroppedCeiling;
            }
            if state.queue.len() >= self.max_queued {
                drop(state);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return Enqueued::DroppedFull;
            }
            if delivery.qos != QoS::AtMostOnce {
                let seq = state.next_record;
                // A position the session never used: the put creates the record.
                let stored = self.persist_op(
                    &mut state,
                    |_| {
                        Op::Put((
                            store::key(Keyspace::Messages, &self.client_id, seq),
                            store::encode_delivery(&delivery, None),
                        ))
                    },
                    true,
                );
                if stored.is_some() {
                    state.next_record += 1;
                    delivery.stored = Some(seq);
                }
            }
            let stored = delivery.stored.is_some();
            state.queue.push_back(delivery);
            if stored {
                outcome = Enqueued::Stored;
            }
        }
        if online {
            self.wakeup.notify_one();
        }
        outcome
    }
}

/// A map from packet identifier to in-flight state that remembers the order entries were added in:
/// re-delivery on session resume must follow the original order (MQTT-4.6.0-1), while acknowledgements
/// need fast lookup by identifier.
pub mod indexmap_lite {
    use std::collections::BTreeMap;

    /// Entries by packet identifier, each with its insertion sequence number.
    #[derive(Debug)]
    pub struct OrderedMap<V> {
        entries: BTreeMap<u16, (u64, V)>,
        next_seq: u64,
    }

    impl<V> Default for OrderedMap<V> {
        fn default() -> Self {
            Self {
                entries: BTreeMap::new(),
                next_seq: 0,
            }
        }
    }

    impl<V> OrderedMap<V> {
        /// Number of entries.
        pub fn len(&self) -> usize {
            self.entries.len()
        }

        /// True if `id` is present.
        pub fn contains(&self, id: u16) -> bool {
            self.entries.contains_key(&id)
        }

        /// Adds `id` after every present entry (replacing a previous value of `id`).
        pub fn push(&mut self, id: u16, value: V) {
            self.next_seq += 1;
            self.entries.insert(id, (self.next_seq, value));
        }

        /// The value of `id`, mutably.
        pub fn get_mut(&mut self, id: u16) -> Option<&mut V> {
            self.entries.get_mut(&id).map(|(_, v)| v)
        }

        /// Removes `id`, returning its value.
        pub fn remove(&mut self, id: u16) -> Option<V> {
            self.entries.remove(&id).map(|(_, v)| v)
        }

        /// Entries in insertion order.
        pub fn ordered(&self) -> Vec<(u16, &V)> {
            let mut all: Vec<_> = self
                .entries
                .iter()
                .map(|(id, (seq, v))| (*seq, *id, v))
                .collect();
            all.sort_unstable_by_key(|(seq, _, _)| *seq);
            all.into_iter().map(|(_, id, v)| (id, v)).collect()
        }

        /// Removes every entry.
        pub fn clear(&mut self) {
            self.entries.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(qos: QoS) -> Delivery {
        Delivery {
            message: Arc::new(Message {
                topic: "t".into(),
                payload: Bytes::from_static(b"p"),
                qos,
                retain: false,
                properties: Properties::default(),
                expires_at: None,
                origin: None,
            }),
            qos,
            retain: false,
            subscription_id: None,
            stored: None,
        }
    }

    #[test]
    fn offline_session_keeps_qos1_and_drops_qos0() {
        let s = Session::new("c".into(), 100, 10);
        assert_eq!(
            s.enqueue(delivery(QoS::AtMostOnce)),
            Enqueued::DroppedOffline
        );
        assert_eq!(s.enqueue(delivery(QoS::AtLeastOnce)), Enqueued::Queued);
        assert_eq!(s.state.lock().queue.len(), 1);
        assert_eq!(s.dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn full_queue_drops_the_newest_message() {
        let s = Session::new("c".into(), 100, 2);
        s.set_online(true);
        for _ in 0..2 {
            assert_eq!(s.enqueue(delivery(QoS::AtMostOnce)), Enqueued::Queued);
        }
        assert_eq!(s.enqueue(delivery(QoS::AtLeastOnce)), Enqueued::DroppedFull);
        assert_eq!(s.state.lock().queue.len(), 2);
    }

    #[test]
    fn queues_count_their_bytes_in_the_shared_budget() {
        let budget = Arc::new(QueueBudget::new(3));
        let a = Session::new("a".into(), 100, 10).with_budget(budget.clone());
        let b = Session::new("b".into(), 100, 10).with_budget(budget.clone());
        a.set_online(true);
        b.set_online(true);
        // Each delivery is "t" + "p": 2 bytes.
        assert_eq!(a.enqueue(delivery(QoS::AtMostOnce)), Enqueued::Queued);
        assert_eq!(budget.used(), 2);
        assert!(!budget.is_exhausted());
        // QoS 0 beyond the ceiling is dropped; QoS 1 is queued past it (its publisher was admitted).
        assert_eq!(
            b.enqueue(delivery(QoS::AtMostOnce)),
            Enqueued::DroppedCeiling
        );
        assert_eq!(b.enqueue(delivery(QoS::AtLeastOnce)), Enqueued::Queued);
        assert_eq!(budget.used(), 4);
        assert!(budget.is_exhausted());
        a.state.lock().queue.pop_front().unwrap();
        assert_eq!(budget.used(), 2);
        assert!(!budget.is_exhausted());
        // Clearing and dropping a session give its bytes back.
        b.state.lock().queue.clear();
        assert_eq!(budget.used(), 0);
        assert_eq!(a.enqueue(delivery(QoS::AtLeastOnce)), Enqueued::Queued);
        drop(a);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn packet_ids_skip_zero_and_ids_in_flight() {
        let mut st = SessionState {
            last_packet_id: u16::MAX - 1,
            ..SessionState::default()
        };
        st.inflight.push(u16::MAX, Inflight::Released(None));
        st.inflight.push(1, Inflight::Released(None));
        assert_eq!(st.next_packet_id(), Some(2));
    }

    #[test]
    fn packet_ids_run_out_when_all_are_in_flight() {
        let mut st = SessionState::default();
        for id in 1..=u16::MAX {
            st.inflight.push(id, Inflight::Released(None));
        }
        assert_eq!(st.next_packet_id(), None);
    }

    #[test]
    fn remaining_expiry_rounds_up() {
        let now = Instant::now();
        let mut m = delivery(QoS::AtMostOnce).message.as_ref().clone_for_test();
        m.expires_at = Some(now + std::time::Duration::from_millis(1500));
        assert_eq!(m.remaining_expiry(now), Some(2));
        assert!(!m.is_expired(now));
        assert!(m.is_expired(now + std::time::Duration::from_secs(2)));
    }

    impl Message {
        fn clone_for_test(&self) -> Message {
            Message {
                topic: self.topic.clone(),
                payload: self.payload.clone(),
                qos: self.qos,
                retain: self.retain,
                properties: self.properties.clone(),
                expires_at: self.expires_at,
                origin: self.origin.clone(),
            }
        }
    }
}
