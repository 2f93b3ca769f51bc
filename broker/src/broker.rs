//! The broker's shared state and the routing of messages.
//!
//! [`Broker`] owns the session registry, the subscription tree, the retained store and the counters. It is
//! shared (`Arc`) by every connection task. Routing runs on the publishing connection's task: it matches
//! the topic in the subscription tree under a read lock and appends a [`Delivery`] to each subscriber's
//! session queue, so fan-out work spreads over all cores and a slow subscriber only fills its own queue.
//!
//! Lock choices, each held for short, non-async sections only (`parking_lot`):
//! - the subscription tree and the retained store are behind `RwLock`s: every PUBLISH reads them, only
//!   SUBSCRIBE/UNSUBSCRIBE (and retained PUBLISHes) write;
//! - the session registry is behind a `Mutex`: it is touched only on connect, disconnect and expiry;
//! - counters are relaxed atomics.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use wasp_mqtt::QoS;
use wasp_mqtt::topic::Filter;

use crate::config::Config;
use crate::rate::TokenBucket;
use crate::retained::RetainedStore;
use crate::router::SubscriptionTree;
use crate::session::{
    Delivery, Enqueued, Inflight, Message, QueueBudget, Session, SubscriptionEntry,
};
use crate::store::{self, Keyspace, Op, Outbound, Records, Store};

/// What routing one message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Matching subscriptions (whether or not their queues had room).
    pub matched: usize,
    /// When the message changed persistent state (queued for a persistent session, or retained) with
    /// storage configured: the ticket after which that change is durable.
    pub durable_at: Option<u64>,
}

/// The sessions [`Broker::restore`] brought back, for the server to start their timers.
#[derive(Debug, Default)]
pub struct Restored {
    /// Each session with its slot, the registry epoch it was restored at and the seconds left of its
    /// expiry (`u32::MAX`: never).
    pub sessions: Vec<(Arc<ClientSlot>, Arc<Session>, u64, u32)>,
    /// Wills of the connections the broker did not close (it stopped without shutting down), to be
    /// published now, with the client identifier.
    pub wills: Vec<(Arc<str>, wasp_mqtt::Will)>,
    /// Retained messages, sessions, and messages read back.
    pub counts: (usize, usize, usize),
}

/// A subscription as the tree stores it: the subscriber's session and what it asked for.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// The subscribing session.
    pub session: Arc<Session>,
    /// Options and identifier.
    pub entry: SubscriptionEntry,
}

/// Broker-wide counters, published in `$SYS`.
#[derive(Debug, Default)]
pub struct Stats {
    /// PUBLISH packets received from clients.
    pub messages_received: AtomicU64,
    /// PUBLISH packets sent to clients.
    pub messages_sent: AtomicU64,
    /// Bytes read from client sockets.
    pub bytes_received: AtomicU64,
    /// Bytes written to client sockets.
    pub bytes_sent: AtomicU64,
    /// Messages dropped (queue full, QoS 0 to an offline session, too large for the client).
    pub messages_dropped: AtomicU64,
    /// Clients with an open, accepted connection.
    pub clients_connected: AtomicUsize,
    /// Open sockets (including ones that have not sent CONNECT yet).
    pub sockets_open: AtomicUsize,
    /// Connections refused by `limits.max_connections` (CONNACK 0x89 / 3, or closed at accept).
    pub refused_max_connections: AtomicU64,
    /// Connections refused by a listener's `max_connections` (CONNACK 0x89 / 3).
    pub refused_listener_connections: AtomicU64,
    /// Sockets closed at accept by `limits.max_connections_per_sec`.
    pub refused_connection_rate: AtomicU64,
    /// Sockets closed because no CONNECT came within `limits.connect_timeout_secs`.
    pub connect_timeouts: AtomicU64,
    /// Packets refused for exceeding `limits.max_packet_size` (the connection is closed).
    pub oversize_packets: AtomicU64,
    /// QoS 2 PUBLISHes beyond `limits.receive_maximum` (DISCONNECT 0x93).
    pub refused_receive_maximum: AtomicU64,
    /// PUBLISHes (and Wills) whose topic exceeds `limits.max_topic_length` or `max_topic_levels`.
    pub refused_publish_topic: AtomicU64,
    /// SUBSCRIBE filters exceeding `limits.max_topic_length` or `max_topic_levels` (SUBACK 0x8F).
    pub refused_subscribe_topic: AtomicU64,
    /// SUBSCRIBE filters beyond `limits.max_subscriptions_per_client` (SUBACK 0x97).
    pub refused_subscriptions: AtomicU64,
    /// 5.0 PUBLISHes refused (QoS 1/2, 0x97) or dropped (QoS 0) by `limits.max_publish_rate`.
    pub refused_publish_rate: AtomicU64,
    /// 5.0 PUBLISHes refused (QoS 1/2, 0x97) or dropped (QoS 0) by `limits.max_publish_bytes_per_sec`.
    pub refused_publish_bandwidth: AtomicU64,
    /// 3.x PUBLISHes held back (socket not read) by a publish rate limit or the queue memory ceiling.
    pub throttled_publishes: AtomicU64,
    /// 5.0 QoS 1/2 PUBLISHes refused with 0x97 while the queues held `limits.max_queued_bytes`.
    pub refused_queued_bytes: AtomicU64,
    /// QoS 0 deliveries dropped by `limits.max_queued_bytes` (also in `messages_dropped`).
    pub dropped_queued_bytes: AtomicU64,
    /// Deliveries dropped by a full session queue, `limits.max_queued_messages` (also in
    /// `messages_dropped`).
    pub dropped_queue_full: AtomicU64,
}

/// Connections on one listener, against its `max_connections`.
#[derive(Debug, Default)]
pub struct ListenerCount {
    /// The listener's limit; 0: only the global limit applies.
    pub max: usize,
    /// Clients connected through it (after CONNACK).
    pub connected: AtomicUsize,
}

/// The per-client-identifier slot of the registry: the session (if any) and the lease a connection holds
/// while it serves the client. The lease and the takeover signal live in the slot itself, rather than in
/// a mutex and a channel of their own: one allocation per client id instead of three, as every connected
/// client has a slot.
#[derive(Debug)]
pub struct ClientSlot {
    /// One permit, held through a [`Lease`] by the connection serving this client id; a newcomer takes
    /// it over (session takeover).
    lease: tokio::sync::Semaphore,
    /// The epoch of the lease a newcomer asked to end (see [`ClientSlot::kick`]).
    kicked: AtomicU64,
    /// The session, while it exists.
    pub session: Mutex<Option<Arc<Session>>>,
    /// Incremented each time a connection takes the lease: timers (will delay, session expiry) compare it
    /// to know whether the client came back meanwhile.
    pub epoch: AtomicU64,
}

impl Default for ClientSlot {
    fn default() -> Self {
        Self {
            lease: tokio::sync::Semaphore::new(1),
            kicked: AtomicU64::new(0),
            session: Mutex::default(),
            epoch: AtomicU64::new(0),
        }
    }
}

impl ClientSlot {
    /// Takes the lease for a connection, waiting for whoever holds it to let go, and starts a new epoch.
    pub async fn lease(self: &Arc<Self>) -> Lease {
        // Forgotten, and given back by `Lease`'s drop: a `SemaphorePermit` would borrow the slot.
        self.lease
            .acquire()
            .await
            .expect("a slot's lease semaphore is never closed")
            .forget();
        Lease {
            slot: self.clone(),
            epoch: self.epoch.fetch_add(1, Ordering::AcqRel) + 1,
        }
    }

    /// Takes the lease if nobody holds it, in the current epoch (the client did not come back: a pending
    /// Will Delay timer must still see the epoch it started in).
    pub fn try_lease(self: &Arc<Self>) -> Option<Lease> {
        self.lease.try_acquire().ok()?.forget();
        Some(Lease {
            slot: self.clone(),
            epoch: self.epoch.load(Ordering::Acquire),
        })
    }

    /// Asks the connection holding the lease now to end: it is woken through its session's wake-up and
    /// then finds its lease [`kicked`](Lease::kicked).
    pub fn kick(&self) {
        self.kicked
            .store(self.epoch.load(Ordering::Acquire), Ordering::Release);
        if let Some(session) = self.session.lock().as_ref() {
            session.wakeup.notify_one();
        }
    }
}

/// The lease of a client id's slot, given back when dropped.
#[derive(Debug)]
pub struct Lease {
    slot: Arc<ClientSlot>,
    epoch: u64,
}

impl Lease {
    /// The slot leased.
    pub fn slot(&self) -> &Arc<ClientSlot> {
        &self.slot
    }

    /// The slot's epoch while this lease is held.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Whether a newcomer asked this lease's connection to end (see [`ClientSlot::kick`]).
    pub fn kicked(&self) -> bool {
        self.slot.kicked.load(Ordering::Acquire) == self.epoch
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.slot.lease.add_permits(1);
    }
}

/// The shared state of a running broker.
pub struct Broker {
    /// The validated configuration.
    pub config: Config,
    /// Counters.
    pub stats: Stats,
    /// When the broker started.
    pub started: Instant,
    /// The bytes waiting in all session queues, against `limits.max_queued_bytes`.
    pub queue_budget: Arc<QueueBudget>,
    /// Connected clients per listener name.
    listener_counts: HashMap<String, Arc<ListenerCount>>,
    /// `limits.max_connections_per_sec`; `None`: unlimited.
    connection_rate: Option<Mutex<TokenBucket>>,
    subscriptions: RwLock<SubscriptionTree<Arc<str>, Subscriber>>,
    retained: RwLock<RetainedStore<Arc<Message>>>,
    clients: Mutex<HashMap<Arc<str>, Arc<ClientSlot>>>,
    /// Set once when the broker shuts down (see [`Broker::shut_down_connections`]).
    shutting_down: AtomicBool,
    /// The storage backend's writer, when `[storage]` is configured.
    store: Option<Arc<Store>>,
}

impl Broker {
    /// A broker with no sessions, subscriptions or retained messages.
    pub fn new(config: Config) -> Self {
        let listener_counts = config
            .listeners
            .iter()
            .map(|l| {
                let count = ListenerCount {
                    max: l.max_connections,
                    connected: AtomicUsize::new(0),
                };
                (l.name.clone(), Arc::new(count))
            })
            .collect();
        let started = Instant::now();
        Self {
            queue_budget: Arc::new(QueueBudget::new(config.limits.max_queued_bytes)),
            listener_counts,
            connection_rate: TokenBucket::new(
                u64::from(config.limits.max_connections_per_sec),
                started,
            )
            .map(Mutex::new),
            config,
            stats: Stats::default(),
            started,
            subscriptions: RwLock::new(SubscriptionTree::new()),
            retained: RwLock::new(RetainedStore::new()),
            clients: Mutex::new(HashMap::new()),
            shutting_down: AtomicBool::new(false),
            store: None,
        }
    }

    /// Writes persistent state to `store` (before any session exists).
    pub fn with_store(mut self, store: Arc<Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The storage writer, when configured.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// Takes one connection from `limits.max_connections_per_sec` (all listeners share it); false, and
    /// counted, when the rate is exceeded and the socket is to be closed.
    pub fn admit_connection(&self) -> bool {
        let Some(bucket) = &self.connection_rate else {
            return true;
        };
        let admitted = bucket.lock().try_take(1, Instant::now());
        if !admitted {
            self.stats
                .refused_connection_rate
                .fetch_add(1, Ordering::Relaxed);
        }
        admitted
    }

    /// The connection count of the listener named `name`.
    pub fn listener_count(&self, name: &str) -> Option<Arc<ListenerCount>> {
        self.listener_counts.get(name).cloned()
    }

    /// A new, empty session whose queue counts against `limits.max_queued_bytes`.
    pub fn new_session(&self, client_id: Arc<str>, expiry_interval: u32) -> Session {
        Session::new(
            client_id,
            expiry_interval,
            self.config.limits.max_queued_messages,
        )
        .with_budget(self.queue_budget.clone())
        .with_store(self.store.clone())
    }

    /// The registry slot of a client id, created if missing.
    pub fn client_slot(&self, client_id: &Arc<str>) -> Arc<ClientSlot> {
        self.clients
            .lock()
            .entry(client_id.clone())
            .or_default()
            .clone()
    }

    /// True if `slot` is still the registry's slot for `client_id` (it may have been removed meanwhile).
    pub fn is_current_slot(&self, client_id: &str, slot: &Arc<ClientSlot>) -> bool {
        self.clients
            .lock()
            .get(client_id)
            .is_some_and(|s| Arc::ptr_eq(s, slot))
    }

    /// Tells every connection to close because the broker shuts down: the flag, then each session's
    /// wake-up. A connection checks the flag whenever it wakes, and once before it starts, after its session
    /// is registered here; so one that starts meanwhile sees the flag or is woken. (Through the session's
    /// wake-up rather than a shutdown channel each connection waits on: that wait would be part of every
    /// idle connection's memory.)
    pub fn shut_down_connections(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
        for slot in self.clients.lock().values() {
            if let Some(session) = slot.session.lock().as_ref() {
                session.wakeup.notify_one();
            }
        }
    }

    /// Whether [`Broker::shut_down_connections`] was called.
    pub fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Removes the slot of `client_id` if it is `slot` and holds no session. The caller holds the lease, so
    /// no connection serves it; a connection waiting for the lease notices the slot is gone and retries.
    pub fn remove_slot_if_unused(&self, client_id: &str, slot: &Arc<ClientSlot>) {
        let mut clients = self.clients.lock();
        if clients.get(client_id).is_some_and(|s| Arc::ptr_eq(s, slot))
            && slot.session.lock().is_none()
        {
            clients.remove(client_id);
        }
    }

    /// Number of sessions (connected or not).
    pub fn session_count(&self) -> usize {
        self.clients
            .lock()
            .values()
            .filter(|slot| slot.session.lock().is_some())
            .count()
    }

    /// Adds (or replaces) a subscription of `session` to `filter` (already validated). Returns true if the
    /// session already had a subscription to this exact filter.
    pub fn subscribe(
        &self,
        session: &Arc<Session>,
        filter: &str,
        entry: SubscriptionEntry,
    ) -> bool {
        let (plain, group) = split_shared(filter);
        let sub = Subscriber {
            session: session.clone(),
            entry,
        };
        let existed_in_tree = self
            .subscriptions
            .write()
            .insert(plain, group, session.client_id.clone(), sub)
            .is_some();
        let existed_in_session = session
            .state
            .lock()
            .subscriptions
            .insert(filter.to_owned(), entry)
            .is_some();
        existed_in_tree || existed_in_session
    }

    /// Removes a subscription; returns true if it existed.
    pub fn unsubscribe(&self, session: &Arc<Session>, filter: &str) -> bool {
        let existed = session.state.lock().subscriptions.remove(filter).is_some();
        if existed {
            self.remove_from_tree(session, filter);
        }
        existed
    }

    fn remove_from_tree(&self, session: &Arc<Session>, filter: &str) {
        let (plain, group) = split_shared(filter);
        let mut tree = self.subscriptions.write();
        // Only remove the entry if it belongs to this very session (a newer session of the same client id
        // may have subscribed to the same filter since).
        if let Some(old) = tree.remove(plain, group, &session.client_id)
            && !Arc::ptr_eq(&old.session, session)
        {
            tree.insert(plain, group, session.client_id.clone(), old);
        }
    }

    /// Ends a session: removes its subscriptions from the tree, forgets its queue, and deletes its
    /// records from storage.
    pub fn discard_session(&self, session: &Arc<Session>) {
        let filters: Vec<String> = {
            let mut state = session.state.lock();
            if let (Some(store), true) = (session.store(), state.in_storage) {
                store.delete_session(&session.client_id);
                state.in_storage = false;
            }
            state.queue.clear();
            state.inflight.clear();
            state.incoming_qos2.clear();
            std::mem::take(&mut state.subscriptions)
                .into_keys()
                .collect()
        };
        for filter in filters {
            self.remove_from_tree(session, &filter);
        }
    }

    /// Number of subscriptions in the tree.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.read().len()
    }

    /// Number of retained messages.
    pub fn retained_count(&self) -> usize {
        self.retained.read().len()
    }

    /// Records a session's persistent part (expiry, subscriptions, the Will of the connection serving
    /// it) when it is persistent and storage is configured; returns the ticket. `connected`: a connection
    /// serves it (after a crash its Will is published at start-up).
    pub fn persist_session(
        &self,
        session: &Session,
        will: Option<&wasp_mqtt::Will>,
        connected: bool,
    ) -> Option<u64> {
        let mut state = session.state.lock();
        // Encoded only for a persistent session with storage configured.
        session.persist(&mut state, |state| {
            let value = store::encode_session(
                state.expiry_interval,
                state.subscriptions.iter(),
                will,
                connected,
            );
            Op::Put((store::key(Keyspace::Sessions, &session.client_id, 0), value))
        })
    }

    /// Routes a message: updates the retained store if the message is retained, then queues it for every
    /// matching subscription.
    pub fn publish(&self, message: Message) -> Published {
        let message = Arc::new(message);
        let mut durable = false;
        if message.retain {
            let mut retained = self.retained.write();
            if message.payload.is_empty() {
                retained.set(&message.topic, None);
            } else {
                retained.set(&message.topic, Some(message.clone()));
            }
            // Under the retained store's lock, so that the stored order is the store's. The broker's own
            // `$SYS` topics are republished at start-up, not stored.
            if let Some(store) = &self.store
                && !message.topic.starts_with('$')
            {
                let key = store::key(Keyspace::Retained, &message.topic, 0);
                store.append(if message.payload.is_empty() {
                    Op::Delete(key)
                } else {
                    Op::Put((key, store::encode_retained(&message)))
                });
                durable = true;
            }
        }
        let (matched, stored) = self.route(&message);
        Published {
            matched,
            durable_at: (durable || stored)
                .then(|| self.store.as_ref().map(|s| s.last_ticket()))
                .flatten(),
        }
    }

    /// Queues `message` for every matching subscription: how many matched, and whether any queue
    /// stored it.
    fn route(&self, message: &Arc<Message>) -> (usize, bool) {
        // Collected under the read lock, queued after it is released: enqueueing takes each session's lock.
        let mut targets: Vec<(Arc<Session>, Delivery)> = Vec::new();
        {
            let tree = self.subscriptions.read();
            tree.for_each_match(
                &message.topic,
                // Shared groups prefer members with a connection (5.0 section 4.8.2).
                |_, sub| sub.session.is_online(),
                |client_id, sub| {
                    let options = sub.entry.options;
                    if options.no_local && message.origin.as_deref() == Some(&**client_id) {
                        return;
                    }
                    let delivery = Delivery {
                        message: message.clone(),
                        qos: message.qos.min(options.qos),
                        retain: options.retain_as_published && message.retain,
                        subscription_id: sub.entry.id,
                        stored: None,
                    };
                    targets.push((sub.session.clone(), delivery));
                },
            );
        }
        let matched = targets.len();
        let mut stored = false;
        for (session, delivery) in targets {
            let outcome = session.enqueue(delivery);
            stored |= outcome == Enqueued::Stored;
            self.count_enqueued(outcome);
        }
        (matched, stored)
    }

    fn count_enqueued(&self, outcome: Enqueued) {
        let specific = match outcome {
            Enqueued::Queued | Enqueued::Stored => return,
            Enqueued::DroppedOffline => None,
            Enqueued::DroppedFull => Some(&self.stats.dropped_queue_full),
            Enqueued::DroppedCeiling => Some(&self.stats.dropped_queued_bytes),
        };
        self.stats.messages_dropped.fetch_add(1, Ordering::Relaxed);
        if let Some(counter) = specific {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Queues the retained messages matching `filter` for `session` (on subscribe), with the RETAIN flag set
    /// and the QoS lowered to `qos`. Expired messages are skipped.
    pub fn send_retained(
        &self,
        session: &Session,
        filter: &str,
        qos: QoS,
        subscription_id: Option<u32>,
    ) {
        let now = Instant::now();
        let mut matches = Vec::new();
        self.retained.read().for_each_match(filter, |_, m| {
            if !m.is_expired(now) {
                matches.push(m.clone());
            }
        });
        for message in matches {
            let delivery = Delivery {
                qos: message.qos.min(qos),
                message,
                retain: true,
                subscription_id,
                stored: None,
            };
            self.count_enqueued(session.enqueue(delivery));
        }
    }

    /// Drops expired retained messages (and their records); returns how many.
    pub fn expire_retained(&self) -> usize {
        let now = Instant::now();
        self.retained.write().retain(|m| {
            let expired = m.is_expired(now);
            if let (true, Some(store)) = (expired, &self.store) {
                store.append(Op::Delete(store::key(Keyspace::Retained, &m.topic, 0)));
            }
            !expired
        })
    }

    /// Rebuilds retained messages and persistent sessions from what storage holds (at start-up, before
    /// any connection). Expired messages and sessions are deleted; unreadable records are logged and
    /// skipped; messages of no session are deleted.
    pub fn restore(&self, records: Records) -> Restored {
        let mut restored = Restored::default();
        let now = Instant::now();
        let now_ms = store::now_millis();
        let Some(store) = self.store.clone() else {
            return restored;
        };
        {
            let mut retained = self.retained.write();
            for (key, value) in &records.retained {
                match store::decode_retained(key, value) {
                    Ok(m) if m.is_expired(now) => {
                        store.append(Op::Delete(key.clone()));
                    }
                    Ok(m) => {
                        retained.set(&key.name, Some(Arc::new(m)));
                        restored.counts.0 += 1;
                    }
                    Err(e) => store::skip_unreadable(&e),
                }
            }
        }
        let mut sessions: HashMap<String, Arc<Session>> = HashMap::new();
        for (key, value) in &records.sessions {
            let record = match store::decode_session(key, value) {
                Ok(record) => record,
                Err(e) => {
                    store::skip_unreadable(&e);
                    continue;
                }
            };
            // A session whose connection the broker did not close expires from now; a disconnected one
            // from when it was written.
            let left = if record.connected || record.expiry_interval == u32::MAX {
                record.expiry_interval
            } else {
                let gone = now_ms.saturating_sub(record.written_at_ms) / 1000;
                let gone = u32::try_from(gone).unwrap_or(u32::MAX);
                if gone >= record.expiry_interval {
                    store.delete_session(&key.name);
                    continue;
                }
                record.expiry_interval - gone
            };
            let client_id: Arc<str> = key.name.as_str().into();
            let session = Arc::new(self.new_session(client_id.clone(), record.expiry_interval));
            session.state.lock().in_storage = true;
            for (filter, entry) in record.subscriptions {
                self.subscribe(&session, &filter, entry);
            }
            let slot = self.client_slot(&client_id);
            *slot.session.lock() = Some(session.clone());
            let epoch = slot.epoch.load(Ordering::Acquire);
            if record.connected {
                if let Some(will) = record.will {
                    restored.wills.push((client_id.clone(), will));
                }
                // Now disconnected: its expiry counts from here, and its Will is not published twice.
                self.persist_session(&session, None, false);
            }
            sessions.insert(key.name.clone(), session.clone());
            restored.sessions.push((slot, session, epoch, left));
        }
        for (key, value) in &records.messages {
            let Some(session) = sessions.get(&key.name) else {
                store.append(Op::Delete(key.clone()));
                continue;
            };
            let mut state = session.state.lock();
            state.next_record = state.next_record.max(key.seq + 1);
            match store::decode_outbound(key, value) {
                Ok(Outbound::Pending(d, _)) if d.message.is_expired(now) => {
                    store.append(Op::Delete(key.clone()));
                }
                Ok(Outbound::Pending(d, Some(packet_id))) => {
                    let entry = match d.qos {
                        QoS::AtLeastOnce => Inflight::Qos1(d),
                        _ => Inflight::Qos2(d),
                    };
                    state.inflight.push(packet_id, entry);
                    restored.counts.2 += 1;
                }
                Ok(Outbound::Pending(d, None)) => {
                    state.queue.push_back(d);
                    restored.counts.2 += 1;
                }
                Ok(Outbound::Released(packet_id)) => {
                    state
                        .inflight
                        .push(packet_id, Inflight::Released(Some(key.seq)));
                }
                Err(e) => store::skip_unreadable(&e),
            }
        }
        for (key, _) in &records.incoming_qos2 {
            match (sessions.get(&key.name), u16::try_from(key.seq)) {
                (Some(session), Ok(id)) => {
                    session.state.lock().incoming_qos2.insert(id);
                }
                _ => {
                    store.append(Op::Delete(key.clone()));
                }
            }
        }
        restored.counts.1 = restored.sessions.len();
        restored
    }

    /// Uptime.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

/// Splits `$share/group/filter` into (`filter`, `Some(group)`); anything else into (`filter`, `None`).
/// The filter must already have been validated with [`wasp_mqtt::topic::parse_filter`].
pub fn split_shared(filter: &str) -> (&str, Option<&str>) {
    match wasp_mqtt::topic::parse_filter(filter) {
        Ok(Filter::Shared { group, filter }) => (filter, Some(group)),
        _ => (filter, None),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use wasp_mqtt::{Properties, SubscriptionOptions};

    use super::*;

    fn message(topic: &str, retain: bool, payload: &'static [u8]) -> Message {
        Message {
            topic: topic.into(),
            payload: Bytes::from_static(payload),
            qos: QoS::AtLeastOnce,
            retain,
            properties: Properties::default(),
            expires_at: None,
            origin: Some("pub".into()),
        }
    }

    fn online(id: &str) -> Arc<Session> {
        let s = Arc::new(Session::new(id.into(), 0, 100));
        s.set_online(true);
        s
    }

    fn entry(qos: QoS) -> SubscriptionEntry {
        SubscriptionEntry {
            options: SubscriptionOptions {
                qos,
                ..Default::default()
            },
            id: None,
        }
    }

    #[test]
    fn publish_reaches_matching_sessions_at_the_granted_qos() {
        let broker = Broker::new(Config::default());
        let a = online("a");
        let b = online("b");
        broker.subscribe(&a, "x/+", entry(QoS::AtMostOnce));
        broker.subscribe(&b, "y/#", entry(QoS::ExactlyOnce));
        assert_eq!(broker.publish(message("x/1", false, b"m")).matched, 1);
        let queued = a.state.lock().queue.pop_front().unwrap();
        assert_eq!(queued.qos, QoS::AtMostOnce);
        assert!(b.state.lock().queue.is_empty());
    }

    #[test]
    fn no_local_skips_the_publisher() {
        let broker = Broker::new(Config::default());
        let p = online("pub");
        let mut e = entry(QoS::AtLeastOnce);
        e.options.no_local = true;
        broker.subscribe(&p, "t", e);
        assert_eq!(broker.publish(message("t", false, b"m")).matched, 0);
    }

    #[test]
    fn retained_set_replace_and_delete() {
        let broker = Broker::new(Config::default());
        broker.publish(message("r", true, b"1"));
        broker.publish(message("r", true, b"2"));
        assert_eq!(broker.retained_count(), 1);
        let s = online("s");
        broker.send_retained(&s, "#", QoS::ExactlyOnce, Some(7));
        let d = s.state.lock().queue.pop_front().unwrap();
        assert_eq!(&d.message.payload[..], b"2");
        assert!(d.retain);
        assert_eq!(d.subscription_id, Some(7));
        broker.publish(message("r", true, b""));
        assert_eq!(broker.retained_count(), 0);
    }

    #[test]
    fn shared_group_gets_one_copy_and_discard_removes_subscriptions() {
        let broker = Broker::new(Config::default());
        let a = online("a");
        let b = online("b");
        broker.subscribe(&a, "$share/g/t", entry(QoS::AtLeastOnce));
        broker.subscribe(&b, "$share/g/t", entry(QoS::AtLeastOnce));
        assert_eq!(broker.publish(message("t", false, b"m")).matched, 1);
        assert_eq!(broker.subscription_count(), 2);
        broker.discard_session(&a);
        assert_eq!(broker.subscription_count(), 1);
        assert!(broker.unsubscribe(&b, "$share/g/t"));
        assert!(!broker.unsubscribe(&b, "$share/g/t"));
        assert_eq!(broker.subscription_count(), 0);
    }

    #[test]
    fn removing_an_old_sessions_subscription_keeps_the_new_sessions_one() {
        let broker = Broker::new(Config::default());
        let old = online("c");
        let new = online("c");
        broker.subscribe(&old, "t", entry(QoS::AtMostOnce));
        broker.subscribe(&new, "t", entry(QoS::AtMostOnce));
        broker.discard_session(&old);
        assert_eq!(broker.publish(message("t", false, b"m")).matched, 1);
        assert_eq!(new.state.lock().queue.len(), 1);
    }
}
