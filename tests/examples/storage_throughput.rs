//! QoS 1 throughput to a persistent session, in memory against each storage backend (the embedded
//! storage-redb, and storage-redis on a local Redis server), and against Mosquitto with persistence on.
//! Prints numbers; it is not a test:
//!
//! ```text
//! cargo run --release -p wasp-tests --example storage_throughput
//! ```
//!
//! Each run starts a fresh broker: Wasp in-process on `127.0.0.1:0` (its own tokio runtime, 2 worker
//! threads; with storage, a new database in a temporary directory, or a new `redis-server` with
//! `appendonly yes` and `appendfsync always` on a free loopback port), or `/usr/sbin/mosquitto` when it
//! is installed (`persistence true` in a temporary directory). The load generator (the main thread, a
//! current-thread runtime, raw MQTT 5.0 with Wasp's codec) connects one subscriber with a persistent
//! session (Session Expiry Interval 3600 s) on `bench/#` at QoS 1, online and acknowledging everything,
//! and `PUBLISHERS` publishers sending QoS 1 PUBLISHes of `PAYLOAD` bytes in a closed loop (at most
//! `WINDOW` unacknowledged each). After `WARM_UP`, the messages received during `MEASURE` give the rate.
//! Scenarios run `ROUNDS` times, interleaved; medians are printed.
//!
//! What an acknowledgement means differs: Wasp with storage sends PUBACK once the message is synced to
//! disk for the persistent session; Mosquitto writes its persistence file only every `autosave_interval`
//! (here 1800 s, its default) and at shutdown, so its PUBACKs are not durable: a crash loses what it
//! acknowledged since the last save.

// A benchmark binary: printing its results is its purpose.
#![allow(clippy::print_stdout)]

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasp_mqtt::{Properties, QoS, ReasonCode};
use wasp_plugin_harness::redis::RedisServer;
use wasp_tests::load::{
    Client, IO_LIMIT, Login, cpu_time, median, publish_loop, runtimes, stop_publishers,
    subscribe_loop,
};
use wasp_tests::{Broker, storage};

// The `wasp` binary's allocator, so that the broker measured here is the one operators run.
#[global_allocator]
static ALLOCATOR: wasp::Allocator = wasp::Allocator;

const PUBLISHERS: usize = 8;
const WINDOW: usize = 32;
const PAYLOAD: usize = 64;
const WARM_UP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(5);
const ROUNDS: usize = 3;
const MOSQUITTO: &str = "/usr/sbin/mosquitto";

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    acked: AtomicU64,
}

/// Publishes QoS 1 to `bench/<n>` with at most [`WINDOW`] unacknowledged until `stop`.
async fn publisher(client: Client, n: usize, stop: Arc<AtomicBool>, counters: Arc<Counters>) {
    let payload = Bytes::from(vec![b'x'; PAYLOAD]);
    publish_loop(
        client,
        &format!("bench/{n}"),
        payload,
        Properties::default(),
        WINDOW,
        &stop,
        |_| {
            counters.acked.fetch_add(1, Ordering::Relaxed);
        },
    )
    .await;
}

/// Counts what `bench/#` delivers, acknowledging each PUBLISH.
async fn subscriber(client: Client, counters: Arc<Counters>) {
    subscribe_loop(
        client,
        |_| {},
        |received| {
            counters.received.fetch_add(received, Ordering::Relaxed);
        },
    )
    .await;
}

struct Run {
    rate: f64,
    generator_cpu: f64,
}

/// One run against the broker at `addr`.
async fn run(addr: SocketAddr) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let persistent = Login {
        credentials: None,
        clean_start: true,
        session_expiry: 3600,
    };
    let mut sub = Client::connect(addr, "bench-sub", &persistent).await;
    let granted = sub.subscribe("bench/#", QoS::AtLeastOnce).await;
    assert_eq!(granted, ReasonCode::GrantedQoS1, "SUBSCRIBE refused");
    let subscriber = tokio::task::spawn_local(subscriber(sub, counters.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    let clean = Login {
        credentials: None,
        clean_start: true,
        session_expiry: 0,
    };
    for n in 0..PUBLISHERS {
        let client = Client::connect(addr, &format!("bench-pub-{n}"), &clean).await;
        tasks.spawn_local(publisher(client, n, stop.clone(), counters.clone()));
    }
    tokio::time::sleep(WARM_UP).await;
    let received0 = counters.received.load(Ordering::Relaxed);
    let (generator0, started) = (cpu_time("thread-self"), Instant::now());
    tokio::time::sleep(MEASURE).await;
    let elapsed = started.elapsed().as_secs_f64();
    let generator1 = cpu_time("thread-self");
    let received = counters.received.load(Ordering::Relaxed) - received0;
    stop_publishers(&stop, &mut tasks).await;
    subscriber.abort();
    Run {
        rate: received as f64 / elapsed,
        generator_cpu: (generator1 - generator0).as_secs_f64() / elapsed,
    }
}

/// What one column of the table measures.
#[derive(Clone, Copy)]
enum Scenario {
    InMemory,
    Redb { batch_delay: Duration },
    Redis,
    Mosquitto,
}

/// Mosquitto with persistence on, killed on drop.
struct Mosquitto {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_mosquitto() -> Mosquitto {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = dir.path().join("mosquitto.conf");
    std::fs::write(
        &config,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {}/\nmax_queued_messages 100000\n",
            dir.path().display()
        ),
    )
    .expect("write mosquitto.conf");
    let child = Command::new(MOSQUITTO)
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mosquitto");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let deadline = Instant::now() + IO_LIMIT;
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Mosquitto {
        child,
        addr,
        _dir: dir,
    }
}

fn main() {
    let (broker_runtime, generator, local) = runtimes();

    println!(
        "building storage-redb and storage-redis (cargo build --release --target wasm32-wasip2) ..."
    );
    let redb = storage::plugin_wasm("storage-redb");
    let redis = storage::plugin_wasm("storage-redis");
    let cache = tempfile::tempdir().expect("temp dir");
    let mosquitto = Path::new(MOSQUITTO).exists();
    println!(
        "load: {PUBLISHERS} publishers x QoS 1 -> 1 persistent subscriber (expiry 3600 s, online, \
         acknowledging) on bench/#, {PAYLOAD}-byte payloads, closed loop with {WINDOW} unacknowledged \
         PUBLISHes per publisher, {} s warm-up + {} s measured, {ROUNDS} rounds interleaved",
        WARM_UP.as_secs(),
        MEASURE.as_secs()
    );
    println!(
        "wasp: in-process, 2 tokio workers; the PUBACKs of a batch go out once the backend has synced \
         it: storage-redb in one redb transaction (Durability::Immediate), storage-redis in one Lua \
         script on a redis-server with appendfsync always"
    );
    if mosquitto {
        println!(
            "mosquitto: {MOSQUITTO}, persistence true (written every autosave_interval = 1800 s and \
             at shutdown: its PUBACKs are not durable)"
        );
    }

    let mut scenarios = vec![
        ("wasp in memory", Scenario::InMemory),
        (
            "wasp + redb",
            Scenario::Redb {
                batch_delay: Duration::ZERO,
            },
        ),
        (
            "wasp + redb, batch_delay 2 ms",
            Scenario::Redb {
                batch_delay: Duration::from_millis(2),
            },
        ),
        ("wasp + redis", Scenario::Redis),
    ];
    if mosquitto {
        scenarios.push(("mosquitto, persistence on", Scenario::Mosquitto));
    }
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); scenarios.len()];
    for round in 1..=ROUNDS {
        for (i, (label, scenario)) in scenarios.iter().enumerate() {
            let data = tempfile::tempdir().expect("temp dir");
            let result = if let Scenario::Mosquitto = scenario {
                let mosquitto = start_mosquitto();
                generator.block_on(local.run_until(run(mosquitto.addr)))
            } else {
                let server = matches!(scenario, Scenario::Redis)
                    .then(|| RedisServer::start().expect("redis-server (tests/setup installs it)"));
                let broker = broker_runtime.block_on(Broker::start_with(|config| {
                    let (spec, batch_delay) = match (scenario, &server) {
                        (Scenario::Redb { batch_delay }, _) => {
                            (storage::redb(&redb, data.path()), *batch_delay)
                        }
                        (Scenario::Redis, Some(server)) => {
                            (storage::redis(&redis, server), Duration::ZERO)
                        }
                        _ => return,
                    };
                    config.plugin_cache_dir = Some(cache.path().to_owned());
                    storage::install(config, spec, batch_delay);
                }));
                let result = generator.block_on(local.run_until(run(broker.addr)));
                broker_runtime.block_on(broker.stop());
                result
            };
            println!(
                "round {round} {label:<30} {:>9.0} msg/s  cpu generator {:.2}",
                result.rate, result.generator_cpu
            );
            rates[i].push(result.rate);
        }
    }
    let medians: Vec<f64> = rates.iter_mut().map(|r| median(r)).collect();
    for ((label, _), rate) in scenarios.iter().zip(&medians) {
        println!(
            "median {label:<30} {rate:>9.0} msg/s  ({:.2}x in memory)",
            rate / medians[0]
        );
    }
}
