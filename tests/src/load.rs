//! The load generator's pieces shared by the benchmarks in `tests/examples/`: a raw MQTT 5.0 client
//! over TCP with Wasp's own codec (so the generator stays lean and sees every packet), CPU time from
//! `/proc`, and the median.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::timeout;
use wasp_mqtt::{
    Connect, Packet, Properties, ProtocolVersion, PubResponse, Publish, QoS, ReasonCode, Subscribe,
    SubscriptionOptions, decode, encode,
};

/// Longest wait for any one read or write; a run that stalls this long fails.
pub const IO_LIMIT: Duration = Duration::from_secs(10);
const MAX_PACKET: u32 = 1 << 20;
const V5: ProtocolVersion = ProtocolVersion::V5;
/// Clock ticks per second of `/proc/*/stat` (USER_HZ, 100 on Linux everywhere in practice).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time (user + system) of `/proc/<which>/stat`: `self`, `thread-self`, or a process id.
pub fn cpu_time(which: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{which}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the command: field 3 (state) is index 0, so utime (14) and stime (15) are 11 and 12.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    Duration::from_secs_f64(ticks as f64 / TICKS_PER_SECOND)
}

/// The runtimes of an in-process throughput example: the broker's (multi-thread, 2 workers, one per core
/// of the reference machine), the load generator's (current thread) and the `LocalSet` its clients run on.
pub fn runtimes() -> (
    tokio::runtime::Runtime,
    tokio::runtime::Runtime,
    tokio::task::LocalSet,
) {
    let broker = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("broker runtime");
    let generator = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("load generator runtime");
    (broker, generator, tokio::task::LocalSet::new())
}

/// The median (sorts `values`).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// What a [`Client`] sends in its CONNECT.
#[derive(Debug, Clone, Default)]
pub struct Login {
    /// User name and password, if any.
    pub credentials: Option<(String, String)>,
    /// Clean Start.
    pub clean_start: bool,
    /// Session Expiry Interval (0: the session ends with the connection).
    pub session_expiry: u32,
}

/// A raw MQTT 5.0 connection: a socket, its read buffer and the packets queued to send.
pub struct Client {
    stream: TcpStream,
    inbox: BytesMut,
    out: BytesMut,
}

impl Client {
    /// Connects as `client_id`; panics unless the CONNACK is a success.
    pub async fn connect(addr: SocketAddr, client_id: &str, login: &Login) -> Client {
        let stream = timeout(IO_LIMIT, TcpStream::connect(addr))
            .await
            .expect("connect within the limit")
            .expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut client = Client {
            stream,
            inbox: BytesMut::with_capacity(64 << 10),
            out: BytesMut::with_capacity(64 << 10),
        };
        let (username, password) = match &login.credentials {
            Some((user, password)) => (
                Some(user.clone()),
                Some(Bytes::from(password.clone().into_bytes())),
            ),
            None => (None, None),
        };
        client.queue(&Packet::Connect(Box::new(Connect {
            protocol: V5,
            clean_start: login.clean_start,
            keep_alive: 60,
            client_id: client_id.to_owned(),
            will: None,
            username,
            password,
            properties: Properties {
                session_expiry_interval: (login.session_expiry > 0).then_some(login.session_expiry),
                ..Properties::default()
            },
        })));
        client.flush().await;
        match client.next().await {
            Packet::ConnAck(ack) if ack.reason == ReasonCode::Success => client,
            other => panic!("{client_id}: CONNECT refused: {other:?}"),
        }
    }

    /// Encodes `packet` into the output buffer.
    pub fn queue(&mut self, packet: &Packet) {
        encode(packet, V5, &mut self.out, MAX_PACKET).expect("encode");
    }

    /// Writes the output buffer (bounded wait).
    pub async fn flush(&mut self) {
        if self.out.is_empty() {
            return;
        }
        timeout(IO_LIMIT, self.stream.write_all(&self.out))
            .await
            .expect("write within the limit")
            .expect("write");
        self.out.clear();
    }

    /// The next packet already buffered, if any.
    pub fn buffered(&mut self) -> Option<Packet> {
        decode(&mut self.inbox, Some(V5), MAX_PACKET).expect("decode")
    }

    /// Reads more bytes (bounded wait); false at end of stream.
    pub async fn fill(&mut self) -> bool {
        let n = timeout(IO_LIMIT, self.stream.read_buf(&mut self.inbox))
            .await
            .expect("read within the limit")
            .expect("read");
        n > 0
    }

    /// Subscribes to `filter` at `qos` and returns the SUBACK's reason code; panics on another answer.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> ReasonCode {
        self.queue(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            properties: Properties::default(),
            filters: vec![(
                filter.to_owned(),
                SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                },
            )],
        }));
        self.flush().await;
        match self.next().await {
            Packet::SubAck(ack) if ack.reason_codes.len() == 1 => ack.reason_codes[0],
            other => panic!("SUBACK expected: {other:?}"),
        }
    }

    /// The next packet (bounded wait); panics if the connection closes.
    pub async fn next(&mut self) -> Packet {
        loop {
            if let Some(packet) = self.buffered() {
                return packet;
            }
            assert!(self.fill().await, "connection closed");
        }
    }
}

/// Publishes QoS 1 PUBLISHes of `payload` with `properties` to `topic`, at most `window`
/// unacknowledged (a closed loop), until `stop` is set or the connection ends; `on_ack` sees every
/// PUBACK.
pub async fn publish_loop(
    mut client: Client,
    topic: &str,
    payload: Bytes,
    properties: Properties,
    window: usize,
    stop: &AtomicBool,
    mut on_ack: impl FnMut(&PubResponse),
) {
    let topic: Arc<str> = Arc::from(topic);
    let mut in_flight = 0usize;
    let mut next_id: u16 = 0;
    while !stop.load(Ordering::Relaxed) {
        while in_flight < window {
            next_id = next_id % 60_000 + 1;
            client.queue(&Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: topic.clone(),
                packet_id: Some(next_id),
                properties: properties.clone(),
                payload: payload.clone(),
            }));
            in_flight += 1;
        }
        client.flush().await;
        if !client.fill().await {
            return;
        }
        while let Some(packet) = client.buffered() {
            if let Packet::PubAck(ack) = packet {
                in_flight -= 1;
                on_ack(&ack);
            }
        }
    }
}

/// Sets `stop`, waits (at most [`IO_LIMIT`]) for the publishers to see it, which their outstanding
/// acknowledgements let them do, then aborts whatever is left.
pub async fn stop_publishers(stop: &AtomicBool, tasks: &mut JoinSet<()>) {
    stop.store(true, Ordering::Relaxed);
    let _ = timeout(IO_LIMIT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
}

/// Receives until the connection ends (or the task is aborted), acknowledging every QoS 1 PUBLISH;
/// `on_publish` sees each one and `on_read` the number received per read.
pub async fn subscribe_loop(
    mut client: Client,
    mut on_publish: impl FnMut(&Publish),
    mut on_read: impl FnMut(u64),
) {
    loop {
        if !client.fill().await {
            return;
        }
        let mut received = 0;
        while let Some(packet) = client.buffered() {
            if let Packet::Publish(publish) = packet {
                received += 1;
                on_publish(&publish);
                if let Some(id) = publish.packet_id {
                    client.queue(&Packet::PubAck(PubResponse::success(id)));
                }
            }
        }
        on_read(received);
        client.flush().await;
    }
}
