//! The load: publishers and subscribers on one current-thread runtime, closed loop, exact counting.
//!
//! Every payload starts with (publisher id: u32, sequence number: u64, send time: u64 ns since the run's
//! start), little endian, padded to the payload size. Each logical receiver (a subscriber, or a whole
//! shared-subscription group) keeps a bitset of the sequence numbers it got from each publisher, so lost
//! and duplicated deliveries are counted exactly; publishers keep a bitset of what was acknowledged
//! (PUBACK at QoS 1, PUBCOMP at QoS 2), which gives "acknowledged but never delivered".
//!
//! Closed loop: a publisher sends only while the receivers lag by fewer than `cap` messages each, the
//! lag of a receiver being, per publisher, what was sent after the newest message it got from that
//! publisher. A lost message therefore does not hold the loop forever.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::Notify;
use wasp_mqtt::{
    Packet, Properties, ProtocolVersion, PubResponse, Publish, QoS, ReasonCode, Subscribe,
    SubscriptionOptions,
};

use crate::brokers::{Running, cpu_seconds, rss_kib};
use crate::client::{Client, IO_LIMIT};

const HEADER: usize = 20;
/// Messages a publisher queues per write.
const BATCH: u64 = 32;
/// Unacknowledged QoS 1/2 PUBLISHes per publisher.
const WINDOW: usize = 16;
const BUFFER: usize = 64 << 10;

/// One load shape.
#[derive(Clone)]
pub struct Load {
    pub version: ProtocolVersion,
    pub publishers: usize,
    pub subscribers: usize,
    pub qos: QoS,
    /// The subscribers' filter; `$share/...` makes them one logical receiver.
    pub filter: String,
    /// Every publisher on `bench/<n>` (true) or all on `bench/0`.
    pub own_topic: bool,
    /// Total publish rate (messages/s) for latency runs; `None`: as fast as the closed loop allows.
    pub rate: Option<f64>,
}

impl Load {
    fn shared(&self) -> bool {
        self.filter.starts_with("$share/")
    }
}

/// Options common to every run.
#[derive(Clone, Copy)]
pub struct Window {
    pub warm_up: Duration,
    pub measure: Duration,
    pub payload: usize,
    /// Undelivered messages allowed per receiver.
    pub cap: u64,
}

/// What one run measured.
#[derive(Default, Clone)]
pub struct Outcome {
    /// Deliveries per second in the measured window.
    pub rate: f64,
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub acked_lost: u64,
    pub refused: u64,
    pub generator_cpu: f64,
    pub broker_cpu: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub samples: usize,
    /// Why the broker could not run this load (e.g. a SUBACK refusal), if so.
    pub not_applicable: Option<String>,
}

#[derive(Default)]
struct Seen {
    bits: Vec<u64>,
    /// Newest sequence number seen plus one.
    next: u64,
    count: u64,
}

impl Seen {
    /// Records `seq`; false if it was already there.
    fn insert(&mut self, seq: u64) -> bool {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if word >= self.bits.len() {
            self.bits.resize(word + 1 + self.bits.len() / 2, 0);
        }
        let fresh = self.bits[word] & (1 << bit) == 0;
        self.bits[word] |= 1 << bit;
        if fresh {
            self.count += 1;
        }
        self.next = self.next.max(seq + 1);
        fresh
    }

    fn contains(&self, seq: u64) -> bool {
        self.bits
            .get((seq / 64) as usize)
            .is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }

    fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.bits.iter().enumerate().flat_map(|(i, &w)| {
            (0..64)
                .filter(move |b| w & (1 << b) != 0)
                .map(move |b| i as u64 * 64 + b)
        })
    }
}

struct Tracker {
    start: Instant,
    sent: Vec<u64>,
    sent_sum: u64,
    acked: Vec<Seen>,
    /// `[receiver][publisher]`.
    seen: Vec<Vec<Seen>>,
    /// Sum over receivers and publishers of `Seen::next`.
    next_sum: u64,
    delivered: u64,
    duplicated: u64,
    /// Payloads naming a publisher or sequence number never sent (should stay 0).
    invalid: u64,
    refused: u64,
    record_latency: bool,
    latencies_us: Vec<u32>,
}

impl Tracker {
    fn undelivered(&self) -> u64 {
        (self.sent_sum * self.seen.len() as u64).saturating_sub(self.next_sum)
    }

    fn deliver(&mut self, receiver: usize, payload: &[u8]) {
        if payload.len() < HEADER {
            self.invalid += 1;
            return;
        }
        let publisher = u32::from_le_bytes(payload[0..4].try_into().unwrap_or_default()) as usize;
        let seq = u64::from_le_bytes(payload[4..12].try_into().unwrap_or_default());
        let sent_at = u64::from_le_bytes(payload[12..20].try_into().unwrap_or_default());
        if publisher >= self.sent.len() || seq >= self.sent[publisher] {
            self.invalid += 1;
            return;
        }
        if self.record_latency {
            let now = self.start.elapsed().as_nanos() as u64;
            self.latencies_us
                .push((now.saturating_sub(sent_at) / 1000).min(u64::from(u32::MAX)) as u32);
        }
        let seen = &mut self.seen[receiver][publisher];
        let before = seen.next;
        if seen.insert(seq) {
            self.delivered += 1;
        } else {
            self.duplicated += 1;
        }
        self.next_sum += seen.next - before;
    }
}

struct Shared {
    tracker: RefCell<Tracker>,
    /// Subscribers notify after each read, waking publishers paused by the cap.
    progress: Notify,
    stop_publishing: Cell<bool>,
    stop_receiving: Cell<bool>,
    window: Window,
    cap_total: u64,
    /// Per publisher, messages per second.
    rate: Option<f64>,
}

fn payload(publisher: u32, seq: u64, sent_at: u64, size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size.max(HEADER));
    b.put_u32_le(publisher);
    b.put_u64_le(seq);
    b.put_u64_le(sent_at);
    b.resize(size.max(HEADER), b'x');
    b.freeze()
}

async fn publisher(
    mut client: Client,
    id: u32,
    topic: Arc<str>,
    qos: QoS,
    shared: Rc<Shared>,
) -> Result<()> {
    let index = id as usize;
    let mut in_flight: HashMap<u16, u64> = HashMap::new();
    let mut next_id: u16 = 0;
    let started = Instant::now();
    loop {
        let stopping = shared.stop_publishing.get();
        if stopping && in_flight.is_empty() {
            return Ok(());
        }
        // How many to send now: room under the cap, the window, the rate.
        let mut n = 0;
        if !stopping {
            let undelivered = shared.tracker.borrow().undelivered();
            n = shared.cap_total.saturating_sub(undelivered).min(BATCH);
            if qos != QoS::AtMostOnce {
                n = n.min((WINDOW - in_flight.len()) as u64);
            }
            if let Some(rate) = shared.rate {
                let due = (started.elapsed().as_secs_f64() * rate) as u64;
                n = n.min(due.saturating_sub(shared.tracker.borrow().sent[index]));
            }
        }
        if n > 0 {
            let mut tracker = shared.tracker.borrow_mut();
            for _ in 0..n {
                let seq = tracker.sent[index];
                tracker.sent[index] += 1;
                tracker.sent_sum += 1;
                let packet_id = if qos == QoS::AtMostOnce {
                    None
                } else {
                    next_id = next_id % 60_000 + 1;
                    in_flight.insert(next_id, seq);
                    Some(next_id)
                };
                let sent_at = tracker.start.elapsed().as_nanos() as u64;
                client.queue(&Packet::Publish(Publish {
                    dup: false,
                    qos,
                    retain: false,
                    topic: topic.clone(),
                    packet_id,
                    properties: Properties::default(),
                    payload: payload(id, seq, sent_at, shared.window.payload),
                }))?;
            }
        }
        client.flush().await?;
        if qos == QoS::AtMostOnce {
            if n == 0 {
                if stopping {
                    return Ok(());
                }
                if shared.rate.is_some() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                } else {
                    let _ =
                        tokio::time::timeout(Duration::from_millis(20), shared.progress.notified())
                            .await;
                }
            } else {
                tokio::task::yield_now().await;
            }
            continue;
        }
        // QoS 1/2: read acknowledgements; wait for them only when nothing else can be done.
        if in_flight.len() >= WINDOW || n == 0 {
            if !client.fill_within(Duration::from_millis(20)).await? && stopping {
                // Bounded: the drain gives up on a publisher whose acknowledgements stop coming.
                if shared.stop_receiving.get() {
                    return Ok(());
                }
            }
        } else {
            client.try_fill()?;
        }
        while let Some(packet) = client.buffered()? {
            let (done, ack) = match packet {
                Packet::PubAck(ack) => (true, ack),
                Packet::PubRec(ack) => {
                    if ack.reason.is_error() {
                        (true, ack)
                    } else {
                        client.queue(&Packet::PubRel(PubResponse::success(ack.packet_id)))?;
                        (false, ack)
                    }
                }
                Packet::PubComp(ack) => (true, ack),
                _ => continue,
            };
            if !done {
                continue;
            }
            if let Some(seq) = in_flight.remove(&ack.packet_id) {
                let mut tracker = shared.tracker.borrow_mut();
                if ack.reason.is_error() {
                    tracker.refused += 1;
                } else {
                    tracker.acked[index].insert(seq);
                }
            }
        }
        client.flush().await?;
        tokio::task::yield_now().await;
    }
}

async fn subscriber(mut client: Client, receiver: usize, shared: Rc<Shared>) -> Result<()> {
    while !shared.stop_receiving.get() {
        if !client.fill_within(Duration::from_millis(50)).await? {
            continue;
        }
        {
            let mut tracker = shared.tracker.borrow_mut();
            while let Some(packet) = client.buffered()? {
                match packet {
                    Packet::Publish(publish) => {
                        tracker.deliver(receiver, &publish.payload);
                        match (publish.qos, publish.packet_id) {
                            (QoS::AtLeastOnce, Some(id)) => {
                                client.queue(&Packet::PubAck(PubResponse::success(id)))?
                            }
                            (QoS::ExactlyOnce, Some(id)) => {
                                client.queue(&Packet::PubRec(PubResponse::success(id)))?
                            }
                            _ => {}
                        }
                    }
                    Packet::PubRel(rel) => {
                        client.queue(&Packet::PubComp(PubResponse::success(rel.packet_id)))?
                    }
                    _ => {}
                }
            }
        }
        client.flush().await?;
        shared.progress.notify_waiters();
    }
    Ok(())
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted[i])
}

/// Runs `load` against `broker` once: connect, warm up, measure, stop, drain, count.
pub async fn run(broker: &Running, load: &Load, window: Window, run_id: u64) -> Result<Outcome> {
    let addr = if load.version.is_v5() {
        broker.v5
    } else {
        broker.v4
    };
    let receivers = if load.shared() { 1 } else { load.subscribers };
    let shared = Rc::new(Shared {
        tracker: RefCell::new(Tracker {
            start: Instant::now(),
            sent: vec![0; load.publishers],
            sent_sum: 0,
            acked: (0..load.publishers).map(|_| Seen::default()).collect(),
            seen: (0..receivers)
                .map(|_| (0..load.publishers).map(|_| Seen::default()).collect())
                .collect(),
            next_sum: 0,
            delivered: 0,
            duplicated: 0,
            invalid: 0,
            refused: 0,
            record_latency: false,
            latencies_us: Vec::new(),
        }),
        progress: Notify::new(),
        stop_publishing: Cell::new(false),
        stop_receiving: Cell::new(false),
        window,
        cap_total: window.cap * receivers as u64,
        rate: load.rate.map(|r| r / load.publishers as f64),
    });

    let mut subscribers = Vec::new();
    for s in 0..load.subscribers {
        let mut client = Client::connect(
            addr,
            None,
            &format!("bench-{run_id}-sub-{s}"),
            load.version,
            BUFFER,
        )
        .await?;
        client.queue(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            properties: Properties::default(),
            filters: vec![(
                load.filter.clone(),
                SubscriptionOptions {
                    qos: load.qos,
                    ..SubscriptionOptions::default()
                },
            )],
        }))?;
        client.flush().await?;
        match client.next().await? {
            Packet::SubAck(ack) if ack.reason_codes == [ReasonCode::granted(load.qos)] => {}
            Packet::SubAck(ack) => {
                return Ok(Outcome {
                    not_applicable: Some(format!("SUBACK {:?}", ack.reason_codes)),
                    ..Outcome::default()
                });
            }
            other => bail!("SUBSCRIBE answered with {other:?}"),
        }
        subscribers.push(client);
    }
    let mut publishers = Vec::new();
    for p in 0..load.publishers {
        publishers.push(
            Client::connect(
                addr,
                None,
                &format!("bench-{run_id}-pub-{p}"),
                load.version,
                BUFFER,
            )
            .await?,
        );
    }

    let mut tasks = Vec::new();
    for (s, client) in subscribers.into_iter().enumerate() {
        let receiver = if load.shared() { 0 } else { s };
        tasks.push(tokio::task::spawn_local(subscriber(
            client,
            receiver,
            shared.clone(),
        )));
    }
    let mut pub_tasks = Vec::new();
    for (p, client) in publishers.into_iter().enumerate() {
        let topic: Arc<str> = Arc::from(format!("bench/{}", if load.own_topic { p } else { 0 }));
        pub_tasks.push(tokio::task::spawn_local(publisher(
            client,
            p as u32,
            topic,
            load.qos,
            shared.clone(),
        )));
    }

    tokio::time::sleep(window.warm_up).await;
    let pid = broker.pid().to_string();
    let (delivered0, generator0, broker0, started) = {
        let mut tracker = shared.tracker.borrow_mut();
        tracker.record_latency = load.rate.is_some();
        (
            tracker.delivered,
            cpu_seconds("self"),
            cpu_seconds(&pid),
            Instant::now(),
        )
    };
    tokio::time::sleep(window.measure).await;
    let elapsed = started.elapsed().as_secs_f64();
    let (delivered1, generator1, broker1) = {
        let mut tracker = shared.tracker.borrow_mut();
        tracker.record_latency = false;
        (tracker.delivered, cpu_seconds("self"), cpu_seconds(&pid))
    };

    // Stop publishing; publishers finish their in-flight exchanges; then wait for the deliveries to stop
    // coming (no progress for 1 s, at most 10 s).
    shared.stop_publishing.set(true);
    let drain_start = Instant::now();
    let mut last = (u64::MAX, Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (delivered, undelivered) = {
            let t = shared.tracker.borrow();
            (t.delivered + t.duplicated, t.undelivered())
        };
        let publishers_done = pub_tasks.iter().all(|t| t.is_finished());
        if delivered != last.0 {
            last = (delivered, Instant::now());
        }
        if publishers_done && undelivered == 0 {
            break;
        }
        if last.1.elapsed() > Duration::from_secs(1) || drain_start.elapsed() > IO_LIMIT {
            break;
        }
    }
    shared.stop_receiving.set(true);
    let mut failure = None;
    for task in pub_tasks.into_iter().chain(tasks) {
        match tokio::time::timeout(Duration::from_secs(2), task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => failure = failure.or(Some(format!("{e:#}"))),
            Ok(Err(e)) => failure = failure.or(Some(format!("task: {e}"))),
            Err(_) => failure = failure.or(Some("a task did not stop".to_owned())),
        }
    }

    let mut tracker = shared.tracker.borrow_mut();
    if tracker.invalid > 0 {
        bail!("{} payloads not sent by this run", tracker.invalid);
    }
    let mut outcome = Outcome {
        rate: (delivered1 - delivered0) as f64 / elapsed,
        sent: tracker.sent_sum,
        delivered: tracker.delivered,
        duplicated: tracker.duplicated,
        refused: tracker.refused,
        generator_cpu: (generator1 - generator0) / elapsed,
        broker_cpu: (broker1 - broker0) / elapsed,
        ..Outcome::default()
    };
    for seen in &tracker.seen {
        for (p, s) in seen.iter().enumerate() {
            outcome.lost += tracker.sent[p] - s.count;
            outcome.acked_lost +=
                tracker.acked[p].iter().filter(|&q| !s.contains(q)).count() as u64;
        }
    }
    tracker.latencies_us.sort_unstable();
    outcome.samples = tracker.latencies_us.len();
    outcome.p50_us = percentile(&tracker.latencies_us, 0.50);
    outcome.p99_us = percentile(&tracker.latencies_us, 0.99);
    if let Some(failure) = failure {
        if outcome.delivered == 0 {
            bail!("{failure}");
        }
        // A client error after the window (e.g. the broker closing a connection) is reported, not fatal.
        eprintln!("    note: {failure}");
    }
    Ok(outcome)
}

/// What the idle-connection run measured.
#[derive(Default, Clone)]
pub struct IdleOutcome {
    pub connections: usize,
    pub connects_per_sec: f64,
    pub rss_per_connection_kib: f64,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub generator_cpu: f64,
    pub broker_cpu: f64,
    pub failed: usize,
    /// Handshake times (socket to CONNACK), in microseconds: median, 99th percentile, slowest.
    pub handshake_p50_us: f64,
    pub handshake_p99_us: f64,
    pub handshake_max_us: f64,
}

/// Opens `count` idle MQTT 3.1.1 connections (`concurrency` handshakes at a time), spread over source
/// addresses 127.0.0.x (`per_source` connections each, starting at `first_source`) so the ephemeral
/// ports of one address are never exhausted; measures the connect rate and the broker's RSS growth.
///
/// The handshakes run on `threads` generator threads (each a current-thread runtime with its share of
/// the connections and of the handshakes in flight). On loopback the client's `connect` runs the whole
/// TCP handshake in the kernel, the server's half included, so one generator thread spends ~15 us per
/// connection: more than either broker does, and then the thread, not the broker, sets the rate
/// (bench/README.md, "Connects/s: the generator's share").
pub fn idle(
    broker: &Running,
    count: usize,
    concurrency: usize,
    threads: usize,
    first_source: u8,
    per_source: usize,
    run_id: u64,
) -> Result<IdleOutcome> {
    let pid = broker.pid();
    let rss_before = rss_kib(pid);
    let (generator0, broker0) = (cpu_seconds("self"), cpu_seconds(&pid.to_string()));
    let addr: SocketAddr = broker.v4;
    let threads = threads.clamp(1, concurrency.min(count).max(1));
    let started = Instant::now();
    // Each thread reports its handshakes, then holds its connections until its `release` sender is
    // dropped, so that they are all open when the RSS is read.
    let (report, reports) = std::sync::mpsc::channel();
    let (mut release, mut handles) = (Vec::new(), Vec::new());
    for t in 0..threads {
        let range = (count * t / threads)..(count * (t + 1) / threads);
        let in_flight = concurrency * (t + 1) / threads - concurrency * t / threads;
        let report = report.clone();
        let (releaser, hold) = std::sync::mpsc::channel::<()>();
        release.push(releaser);
        handles.push(std::thread::spawn(move || -> Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let local = tokio::task::LocalSet::new();
            let (streams, done) = runtime.block_on(local.run_until(handshakes(
                addr,
                range,
                in_flight.max(1),
                first_source,
                per_source,
                run_id,
            )));
            let _ = report.send((done, Instant::now()));
            drop(report);
            // Holding the connections until the measurement ends (`Err` once the sender is dropped).
            let _ = hold.recv();
            drop(streams);
            Ok(())
        }));
    }
    drop(report);
    let mut done = Handshakes::default();
    let mut finished = started;
    // Ends when every thread has reported, or dropped its sender on failing.
    for (part, at) in reports.iter() {
        done.merge(part);
        finished = finished.max(at);
    }
    let elapsed = (finished - started).as_secs_f64();
    let (generator1, broker1) = (cpu_seconds("self"), cpu_seconds(&pid.to_string()));
    if let Some(e) = done.first_error.as_ref() {
        eprintln!("    note: {} connections failed, first: {e}", done.failed);
    }
    // Let the broker settle (allocator, lazily touched pages) before reading its RSS.
    std::thread::sleep(Duration::from_secs(1));
    let rss_after = rss_kib(pid);
    drop(release);
    // A thread that failed (its runtime not built) reported nothing: its error is returned here.
    for handle in handles {
        match handle.join() {
            Ok(result) => result?,
            Err(_) => bail!("an idle-connection generator thread panicked"),
        }
    }
    let connected = done.times_us.len();
    done.times_us.sort_unstable();
    Ok(IdleOutcome {
        connections: connected,
        connects_per_sec: connected as f64 / elapsed,
        rss_per_connection_kib: (rss_after.saturating_sub(rss_before)) as f64
            / connected.max(1) as f64,
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        generator_cpu: (generator1 - generator0) / elapsed,
        broker_cpu: (broker1 - broker0) / elapsed,
        failed: done.failed,
        handshake_p50_us: percentile(&done.times_us, 0.50),
        handshake_p99_us: percentile(&done.times_us, 0.99),
        handshake_max_us: percentile(&done.times_us, 1.0),
    })
}

/// What one generator thread's handshakes gave.
#[derive(Default)]
struct Handshakes {
    /// Microseconds from the socket's creation to the CONNACK, per successful handshake: a stall of the
    /// broker shows as a cluster of slow handshakes (all of those in flight), which a rate hides.
    times_us: Vec<u32>,
    failed: usize,
    first_error: Option<String>,
}

impl Handshakes {
    fn merge(&mut self, other: Handshakes) {
        self.times_us.extend(other.times_us);
        self.failed += other.failed;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Opens the connections numbered `range` (`in_flight` handshakes at a time) on the current thread's
/// runtime; returns them open, with their handshake times.
async fn handshakes(
    addr: SocketAddr,
    range: std::ops::Range<usize>,
    in_flight: usize,
    first_source: u8,
    per_source: usize,
    run_id: u64,
) -> (Vec<tokio::net::TcpStream>, Handshakes) {
    let streams = Rc::new(RefCell::new(Vec::with_capacity(range.len())));
    let done = Rc::new(RefCell::new(Handshakes {
        times_us: Vec::with_capacity(range.len()),
        ..Handshakes::default()
    }));
    let next = Rc::new(Cell::new(range.start));
    let mut workers = Vec::new();
    for _ in 0..in_flight.min(range.len()) {
        let (streams, done, next) = (streams.clone(), done.clone(), next.clone());
        workers.push(tokio::task::spawn_local(async move {
            loop {
                let i = next.get();
                if i >= range.end || done.borrow().failed > 100 {
                    return;
                }
                next.set(i + 1);
                let source = Ipv4Addr::new(127, 0, 0, first_source + (i / per_source) as u8);
                let began = Instant::now();
                match Client::connect(
                    addr,
                    Some(source),
                    &format!("idle-{run_id}-{i}"),
                    ProtocolVersion::V311,
                    64,
                )
                .await
                {
                    Ok(client) => {
                        let took = began.elapsed().as_micros();
                        done.borrow_mut()
                            .times_us
                            .push(u32::try_from(took).unwrap_or(u32::MAX));
                        let stream = client.into_stream();
                        // Close with RST at the end: no TIME_WAIT left to block the next run's ports.
                        let _ = stream.set_zero_linger();
                        streams.borrow_mut().push(stream);
                    }
                    Err(e) => {
                        let mut done = done.borrow_mut();
                        done.failed += 1;
                        done.first_error.get_or_insert(format!("{e:#}"));
                    }
                }
            }
        }));
    }
    for worker in workers {
        let _ = worker.await;
    }
    (streams.take(), done.take())
}
