//! Persistence through a crash: the real `wasp` binary is killed with SIGKILL while a publisher streams
//! QoS 1 and QoS 2 messages to a persistent session, then started again on the same storage. Every message
//! the broker acknowledged must reach the subscriber (QoS 1 at least once, QoS 2 exactly once), and the
//! retained message and the subscriptions must be back. Once for each storage backend: the embedded
//! storage-redb, and storage-redis, where the Redis server is killed with the broker and restarted from its
//! append-only file. (A killed process leaves what it wrote in the OS page cache, so this checks that the
//! broker acknowledges only what Redis applied and replays, not Redis's fsync; that `appendfsync always`
//! is on is checked by the plugin's init.)
//!
//! The clients are raw MQTT 3.1.1 over blocking sockets with Wasp's own codec, so that every packet
//! identifier and acknowledgement is seen.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use wasp_mqtt::{
    Connect, Disconnect, Packet, Properties, ProtocolVersion, PubResponse, Publish, QoS,
    ReasonCode, Subscribe, SubscriptionOptions, decode, encode,
};
use wasp_plugin_harness::redis::RedisServer;

const V311: ProtocolVersion = ProtocolVersion::V311;
const MAX: u32 = 1 << 20;
/// Messages per QoS level the publisher tries to send.
const PER_QOS: u32 = 2000;
/// Unacknowledged PUBLISHes the publisher allows itself.
const WINDOW: usize = 50;
/// Longest wait for anything that must happen.
const LIMIT: Duration = Duration::from_secs(30);

/// A `wasp` process, killed (SIGKILL) when dropped.
struct Wasp(Child);

impl Drop for Wasp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn plugin_wasm(crate_dir: &str) -> PathBuf {
    wasp_plugin_harness::build_wasm(&Path::new(env!("CARGO_MANIFEST_DIR")).join(crate_dir))
}

/// A configuration with one listener on `port` and `storage`, the `[[plugins]]` entry of the storage
/// backend (named `storage`).
fn write_config(dir: &Path, port: u16, storage: &str) -> PathBuf {
    let config = format!(
        r#"
[[listeners]]
name = "tcp"
bind = "127.0.0.1:{port}"

[sys]
interval_secs = 0

[plugin_host]
cache_dir = "{cache}"

{storage}

[storage]
plugin = "storage"
"#,
        cache = dir.join("cache").display(),
    );
    let path = dir.join("wasp.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn start(config: &Path, addr: SocketAddr) -> Wasp {
    let child = Command::new(env!("CARGO_BIN_EXE_wasp"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run wasp");
    let wasp = Wasp(child);
    let deadline = Instant::now() + LIMIT;
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "wasp did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    wasp
}

/// A raw MQTT 3.1.1 client.
struct Client {
    stream: TcpStream,
    inbox: BytesMut,
}

impl Client {
    fn connect(addr: SocketAddr, client_id: &str, clean: bool) -> (Client, bool) {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut client = Client {
            stream,
            inbox: BytesMut::new(),
        };
        client.send(&Packet::Connect(Box::new(Connect {
            protocol: V311,
            clean_start: clean,
            keep_alive: 60,
            client_id: client_id.to_owned(),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        })));
        match client.next(LIMIT) {
            Some(Packet::ConnAck(ack)) if !ack.reason.is_error() => {
                let present = ack.session_present;
                (client, present)
            }
            other => panic!("{client_id}: CONNECT refused: {other:?}"),
        }
    }

    fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        encode(packet, V311, &mut out, MAX).unwrap();
        self.stream.write_all(&out).unwrap();
    }

    /// Sends, reporting a broken connection instead of panicking (the broker may be gone).
    fn try_send(&mut self, packet: &Packet) -> bool {
        let mut out = BytesMut::new();
        encode(packet, V311, &mut out, MAX).unwrap();
        self.stream.write_all(&out).is_ok()
    }

    /// The next packet within `wait`; `None` on timeout or a closed connection.
    fn next(&mut self, wait: Duration) -> Option<Packet> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(packet) = decode(&mut self.inbox, Some(V311), MAX).unwrap() {
                return Some(packet);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut buf = [0u8; 16 * 1024];
            match self.stream.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.inbox.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None;
                }
                Err(_) => return None,
            }
        }
    }

    fn subscribe(&mut self, filters: &[(&str, QoS)]) {
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            properties: Properties::default(),
            filters: filters
                .iter()
                .map(|(f, qos)| {
                    (
                        (*f).to_owned(),
                        SubscriptionOptions {
                            qos: *qos,
                            ..SubscriptionOptions::default()
                        },
                    )
                })
                .collect(),
        }));
        match self.next(LIMIT) {
            Some(Packet::SubAck(ack)) => {
                assert!(ack.reason_codes.iter().all(|c| !c.is_error()), "{ack:?}")
            }
            other => panic!("no SUBACK: {other:?}"),
        }
    }
}

fn publish(topic: &str, qos: QoS, id: Option<u16>, payload: Bytes, retain: bool) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic: Arc::from(topic),
        packet_id: id,
        properties: Properties::default(),
        payload,
    })
}

/// What the publisher saw: the payload numbers the broker acknowledged, per QoS.
#[derive(Default)]
struct Acknowledged {
    qos1: BTreeSet<u32>,
    qos2: BTreeSet<u32>,
}

/// Publishes QoS 1 to `crash/1` and QoS 2 to `crash/2` alternately, `WINDOW` at a time, until the
/// connection breaks (the broker was killed) or everything is acknowledged. The payload is the message
/// number.
fn stream_until_broken(
    mut client: Client,
    kill_after_acks: usize,
    kill: impl FnOnce(),
) -> Acknowledged {
    let mut acked = Acknowledged::default();
    let mut pending: HashMap<u16, (QoS, u32)> = HashMap::new();
    let mut next_id: u16 = 0;
    let mut next_message: u32 = 0;
    let mut kill = Some(kill);
    let deadline = Instant::now() + LIMIT;
    'run: while Instant::now() < deadline {
        while pending.len() < WINDOW && next_message < 2 * PER_QOS {
            next_id = next_id % 60_000 + 1;
            let (topic, qos) = if next_message.is_multiple_of(2) {
                ("crash/1", QoS::AtLeastOnce)
            } else {
                ("crash/2", QoS::ExactlyOnce)
            };
            let payload = Bytes::from(next_message.to_string());
            if !client.try_send(&publish(topic, qos, Some(next_id), payload, false)) {
                break 'run;
            }
            pending.insert(next_id, (qos, next_message));
            next_message += 1;
        }
        if pending.is_empty() {
            break;
        }
        let Some(packet) = client.next(Duration::from_secs(5)) else {
            break;
        };
        match packet {
            Packet::PubAck(PubResponse { packet_id, .. }) => {
                if let Some((_, n)) = pending.remove(&packet_id) {
                    acked.qos1.insert(n);
                }
            }
            Packet::PubRec(PubResponse { packet_id, .. }) => {
                // PUBREC: the broker owns the message from here on.
                if let Some((_, n)) = pending.get(&packet_id) {
                    acked.qos2.insert(*n);
                }
                if !client.try_send(&Packet::PubRel(PubResponse::success(packet_id))) {
                    break;
                }
            }
            Packet::PubComp(PubResponse { packet_id, .. }) => {
                pending.remove(&packet_id);
            }
            other => panic!("publisher got {other:?}"),
        }
        if acked.qos1.len() + acked.qos2.len() >= kill_after_acks
            && let Some(kill) = kill.take()
        {
            kill();
        }
    }
    assert!(
        kill.is_none(),
        "the broker was never killed: too few acknowledgements"
    );
    acked
}

/// Receives until nothing comes for a while, acknowledging every PUBLISH (QoS 2 through PUBREL).
/// Returns how often each (topic, number) arrived.
fn drain(client: &mut Client) -> BTreeMap<(String, u32), usize> {
    let mut seen = BTreeMap::new();
    let deadline = Instant::now() + LIMIT;
    while Instant::now() < deadline {
        let Some(packet) = client.next(Duration::from_secs(3)) else {
            break;
        };
        match packet {
            Packet::Publish(p) => {
                let n: u32 = std::str::from_utf8(&p.payload)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(u32::MAX);
                match (p.qos, p.packet_id) {
                    (QoS::AtLeastOnce, Some(id)) => {
                        client.send(&Packet::PubAck(PubResponse::success(id)))
                    }
                    (QoS::ExactlyOnce, Some(id)) => {
                        client.send(&Packet::PubRec(PubResponse::success(id)))
                    }
                    _ => {}
                }
                *seen.entry((p.topic.to_string(), n)).or_insert(0) += 1;
            }
            Packet::PubRel(r) => client.send(&Packet::PubComp(PubResponse::success(r.packet_id))),
            _ => {}
        }
    }
    seen
}

#[test]
fn acknowledged_messages_survive_a_kill_9_on_redb() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let storage = format!(
        r#"[[plugins]]
name = "storage"
path = "{wasm}"
dirs = [{{ host = "{data}", guest = "/data", writable = true }}]
config = {{ path = "/data/wasp.redb" }}"#,
        wasm = plugin_wasm("../plugins/storage-redb").display(),
        data = data.display(),
    );
    survives_a_kill_9(dir.path(), &storage, None);
}

#[test]
fn acknowledged_messages_survive_a_kill_9_of_the_broker_and_redis() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start().expect("a Redis server (tests/setup installs it)");
    let storage = format!(
        r#"[[plugins]]
name = "storage"
path = "{wasm}"
sockets = ["{addr}"]
config = {{ address = "{addr}" }}"#,
        wasm = plugin_wasm("../plugins/storage-redis").display(),
        addr = redis.addr(),
    );
    survives_a_kill_9(dir.path(), &storage, Some(&mut redis));
}

/// The crash test on the storage plugin entry `storage`; `redis`, when the backend is that server, is
/// killed with the broker and restarted before it.
fn survives_a_kill_9(dir: &Path, storage: &str, mut redis: Option<&mut RedisServer>) {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = write_config(dir, port, storage);

    let mut wasp = Some(start(&config, addr));
    // A persistent session subscribed at QoS 1 and 2, then offline: everything is queued for it.
    let (mut sub, _) = Client::connect(addr, "crash-sub", false);
    sub.subscribe(&[("crash/1", QoS::AtLeastOnce), ("crash/2", QoS::ExactlyOnce)]);
    sub.send(&Packet::Disconnect(Disconnect {
        reason: ReasonCode::Success,
        properties: Properties::default(),
    }));
    drop(sub);
    // A retained message, acknowledged.
    let (mut publisher, _) = Client::connect(addr, "crash-pub", true);
    publisher.send(&publish(
        "crash/retained",
        QoS::AtLeastOnce,
        Some(60_001),
        Bytes::from_static(b"kept"),
        true,
    ));
    assert!(matches!(
        publisher.next(LIMIT),
        Some(Packet::PubAck(PubResponse {
            packet_id: 60_001,
            ..
        }))
    ));

    let acked = stream_until_broken(publisher, 600, || {
        // SIGKILL: no shutdown, no last write; the database server goes down with the broker.
        if let Some(redis) = redis.as_mut() {
            redis.kill();
        }
        drop(wasp.take());
    });
    assert!(
        acked.qos1.len() + acked.qos2.len() < 2 * PER_QOS as usize,
        "the kill came after the whole stream"
    );

    if let Some(redis) = redis {
        redis.restart().unwrap();
    }
    let _wasp = start(&config, addr);
    let (mut sub, present) = Client::connect(addr, "crash-sub", false);
    assert!(present, "the persistent session is back");
    let seen = drain(&mut sub);
    let lost_qos1: Vec<u32> = acked
        .qos1
        .iter()
        .filter(|n| !seen.contains_key(&("crash/1".to_owned(), **n)))
        .copied()
        .collect();
    let lost_qos2: Vec<u32> = acked
        .qos2
        .iter()
        .filter(|n| !seen.contains_key(&("crash/2".to_owned(), **n)))
        .copied()
        .collect();
    let duplicated_qos2: Vec<u32> = seen
        .iter()
        .filter(|((topic, _), count)| topic == "crash/2" && **count > 1)
        .map(|((_, n), _)| *n)
        .collect();
    assert!(
        lost_qos1.is_empty() && lost_qos2.is_empty() && duplicated_qos2.is_empty(),
        "acknowledged {} QoS 1 and {} QoS 2 messages; lost QoS 1 {lost_qos1:?}, lost QoS 2 \
         {lost_qos2:?}, QoS 2 delivered twice {duplicated_qos2:?}",
        acked.qos1.len(),
        acked.qos2.len()
    );

    // The subscriptions are back: a new message reaches the session.
    let (mut publisher, _) = Client::connect(addr, "crash-pub-2", true);
    publisher.send(&publish(
        "crash/1",
        QoS::AtLeastOnce,
        Some(1),
        Bytes::from_static(b"4000000"),
        false,
    ));
    let after = drain(&mut sub);
    assert_eq!(after.get(&("crash/1".to_owned(), 4_000_000)), Some(&1));

    // The retained message is back.
    let (mut late, _) = Client::connect(addr, "crash-late", true);
    late.send(&Packet::Subscribe(Subscribe {
        packet_id: 2,
        properties: Properties::default(),
        filters: vec![("crash/retained".to_owned(), SubscriptionOptions::default())],
    }));
    let mut retained = None;
    for _ in 0..3 {
        match late.next(LIMIT) {
            Some(Packet::Publish(p)) => {
                retained = Some(p);
                break;
            }
            Some(_) => continue,
            None => break,
        }
    }
    let retained = retained.expect("the retained message after the restart");
    assert!(retained.retain);
    assert_eq!(&retained.payload[..], b"kept");
}
