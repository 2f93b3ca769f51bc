//! Broker throughput with the three shipped plugins loaded (password-file, acl-file, transform) against no
//! plugins. Prints numbers; it is not a test:
//!
//! ```text
//! cargo run --release -p wasp-tests --example plugin_throughput
//! ```
//!
//! An in-process broker on `127.0.0.1:0` (its own tokio runtime, 2 worker threads) and a load generator on
//! the main thread (a current-thread runtime) speaking raw MQTT 5.0 over TCP with Wasp's own codec:
//! `PUBLISHERS` publishers send QoS 1 PUBLISHes of `PAYLOAD` bytes to `bench/<n>` in a closed loop (at most
//! `WINDOW` unacknowledged each), and one subscriber on `bench/#` (QoS 1, acknowledging everything) counts
//! what it receives. After `WARM_UP`, the messages received during `MEASURE` give the rate. The two
//! configurations run `ROUNDS` times each, interleaved; the medians are compared (target: plugins >= 0.85x
//! none). The load generator's own CPU time (its thread, from `/proc/thread-self/stat`) and the process's
//! are printed, to show whether the generator is the bottleneck.
//!
//! With plugins every client logs in through password-file (user `sha512` of the committed fixtures), the
//! ACL allows `bench/#` to that user, and a transform rule on `bench/#` stamps the publisher's client id as
//! a user property, so every PUBLISH goes through authorize-publish (whose verdicts the broker caches for
//! 5 s per session and topic, as the acl-file plugin allows) and through transform (never cached). That is
//! the worst case, and the one the target is about.
//!
//! A second scenario, reported separately and never counted against the target, loads the same plugins
//! with the transform rule on `bench/0` only: one publisher of eight, 1/8 of the traffic, is transformed;
//! the other PUBLISHes match no transformer's publish filter, so the broker does not enter Wasm for them
//! (authorize-publish stays a cache hit). It shows what interest filters save when a transformer is
//! scoped to part of the traffic.

// A benchmark binary: printing its results is its purpose.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasp::config::{Config, PluginConfig};
use wasp_mqtt::{QoS, ReasonCode};
use wasp_plugin_host::{DirGrant, PluginSpec};
use wasp_tests::Broker;
use wasp_tests::load::{
    Client, Login, cpu_time, median, publish_loop, runtimes, stop_publishers, subscribe_loop,
};

const PUBLISHERS: usize = 8;
const WINDOW: usize = 32;
const PAYLOAD: usize = 64;
const WARM_UP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(5);
const ROUNDS: usize = 3;
const USER: &str = "sha512";
const PASSWORD: &str = "sha512-pw";

const ACL: &str = "user sha512\ntopic readwrite bench/#\n";

/// The three plugins, built once (`build_wasm`), with their configuration.
struct Plugins {
    password_file: PathBuf,
    acl_file: PathBuf,
    transform: PathBuf,
    acl_dir: tempfile::TempDir,
    cache_dir: tempfile::TempDir,
}

fn grant(host: &Path, guest: &str) -> DirGrant {
    DirGrant {
        host: host.to_owned(),
        guest: guest.to_owned(),
        writable: false,
    }
}

impl Plugins {
    fn build() -> Plugins {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
        let build = |dir: &str| wasp_plugin_harness::build_wasm(&root.join(dir));
        let acl_dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(acl_dir.path().join("acl"), ACL).expect("write acl");
        Plugins {
            password_file: build("password-file"),
            acl_file: build("acl-file"),
            transform: build("transform"),
            acl_dir,
            cache_dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// Installs the three plugins, the transform rule on `transform_filter`.
    fn install(&self, config: &mut Config, transform_filter: &str) {
        let fixtures =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/password-file/tests/fixtures");
        let spec = |name: &str, wasm: &Path, json: &str| {
            let mut spec = PluginSpec::new(name, wasm);
            spec.config_json = json.to_owned();
            spec
        };
        let mut passwords = spec(
            "passwords",
            &self.password_file,
            r#"{"file": "/etc/wasp/mosquitto-2.0.11.passwd"}"#,
        );
        passwords.dirs.push(grant(&fixtures, "/etc/wasp"));
        let mut acl = spec("acl", &self.acl_file, r#"{"file": "/etc/wasp/acl"}"#);
        acl.dirs.push(grant(self.acl_dir.path(), "/etc/wasp"));
        let stamp = spec(
            "stamp",
            &self.transform,
            &format!(
                r#"{{"rules": [{{"filter": "{transform_filter}", "stamp_client_id_property": "client-id"}}]}}"#
            ),
        );
        config.allow_anonymous = false;
        config.plugins = [passwords, acl, stamp]
            .into_iter()
            .map(|spec| PluginConfig {
                spec,
                listeners: Vec::new(),
            })
            .collect();
        config.plugin_cache_dir = Some(self.cache_dir.path().to_owned());
    }
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    stamped: AtomicU64,
    acked: AtomicU64,
    refused: AtomicU64,
    /// The reason code of the last refused PUBLISH.
    refusal: AtomicU64,
}

/// Every client logs in as [`USER`] (anonymous clients are refused when the plugins are loaded; without
/// them the credentials are ignored).
fn login() -> Login {
    Login {
        credentials: Some((USER.to_owned(), PASSWORD.to_owned())),
        clean_start: true,
        session_expiry: 0,
    }
}

/// Publishes to `bench/<n>` with at most [`WINDOW`] unacknowledged until `stop`.
async fn publisher(client: Client, n: usize, stop: Arc<AtomicBool>, counters: Arc<Counters>) {
    let payload = Bytes::from(vec![b'x'; PAYLOAD]);
    publish_loop(
        client,
        &format!("bench/{n}"),
        payload,
        WINDOW,
        &stop,
        |ack| {
            if ack.reason == ReasonCode::Success {
                counters.acked.fetch_add(1, Ordering::Relaxed);
            } else {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                counters
                    .refusal
                    .store(u64::from(ack.reason as u8), Ordering::Relaxed);
            }
        },
    )
    .await;
}

/// Counts what `bench/#` delivers (and how much of it was stamped), acknowledging each PUBLISH.
async fn subscriber(client: Client, counters: Arc<Counters>) {
    subscribe_loop(
        client,
        |publish| {
            if publish
                .properties
                .user_properties
                .iter()
                .any(|(k, _)| k == "client-id")
            {
                counters.stamped.fetch_add(1, Ordering::Relaxed);
            }
        },
        |received| {
            counters.received.fetch_add(received, Ordering::Relaxed);
        },
    )
    .await;
}

struct Run {
    rate: f64,
    stamped_share: f64,
    refused: u64,
    refusal: u64,
    generator_cpu: f64,
    process_cpu: f64,
}

/// One run against `broker`: connect, warm up, measure, stop.
async fn run(broker: &Broker) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let mut sub = Client::connect(broker.addr, "bench-sub", &login()).await;
    let granted = sub.subscribe("bench/#", QoS::AtLeastOnce).await;
    assert_eq!(granted, ReasonCode::GrantedQoS1, "SUBSCRIBE refused");
    // The subscriber stops last (aborted once the publishers are done), so that no PUBLISH of the run
    // finds no subscriber (0x10).
    let subscriber = tokio::task::spawn_local(subscriber(sub, counters.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..PUBLISHERS {
        let client = Client::connect(broker.addr, &format!("bench-pub-{n}"), &login()).await;
        tasks.spawn_local(publisher(client, n, stop.clone(), counters.clone()));
    }

    tokio::time::sleep(WARM_UP).await;
    let (received0, stamped0) = (
        counters.received.load(Ordering::Relaxed),
        counters.stamped.load(Ordering::Relaxed),
    );
    let (generator0, process0, started) =
        (cpu_time("thread-self"), cpu_time("self"), Instant::now());
    tokio::time::sleep(MEASURE).await;
    let elapsed = started.elapsed().as_secs_f64();
    let (generator1, process1) = (cpu_time("thread-self"), cpu_time("self"));
    let received = counters.received.load(Ordering::Relaxed) - received0;
    let stamped = counters.stamped.load(Ordering::Relaxed) - stamped0;

    stop_publishers(&stop, &mut tasks).await;
    subscriber.abort();
    Run {
        rate: received as f64 / elapsed,
        stamped_share: if received == 0 {
            0.0
        } else {
            stamped as f64 / received as f64
        },
        refused: counters.refused.load(Ordering::Relaxed),
        refusal: counters.refusal.load(Ordering::Relaxed),
        generator_cpu: (generator1 - generator0).as_secs_f64() / elapsed,
        process_cpu: (process1 - process0).as_secs_f64() / elapsed,
    }
}

fn main() {
    let (broker_runtime, generator, local) = runtimes();

    println!("building the three plugins (cargo build --release --target wasm32-wasip2) ...");
    let plugins = Plugins::build();
    println!(
        "load: {PUBLISHERS} publishers x QoS 1 -> 1 subscriber on bench/#, {PAYLOAD}-byte payloads, \
         closed loop with {WINDOW} unacknowledged PUBLISHes per publisher, {} s warm-up + {} s measured, \
         {ROUNDS} rounds interleaved",
        WARM_UP.as_secs(),
        MEASURE.as_secs()
    );
    println!(
        "broker: in-process, tokio multi-thread runtime with 2 workers; load generator: raw MQTT 5.0 \
         (wasp_mqtt codec) on the main thread, one current-thread runtime; loopback TCP"
    );
    println!(
        "plugins: password-file (login at CONNECT), acl-file (authorize-publish; the broker caches its \
         verdicts 5 s per session and topic), transform (stamps client-id on bench/#, every PUBLISH)"
    );
    println!(
        "cpu columns: cores used during the measured window (1.00 = one core), from /proc/*/stat \
         (assumed 100 ticks/s); generator = the load generator's thread, process = broker + generator"
    );

    // (label, transform rule's filter: None = no plugins)
    let scenarios: [(&str, Option<&str>); 3] = [
        ("no plugins", None),
        ("3 plugins", Some("bench/#")),
        ("3 plugins, transform on 1/8", Some("bench/0")),
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); scenarios.len()];
    for round in 1..=ROUNDS {
        for (i, (label, transform_filter)) in scenarios.iter().enumerate() {
            let broker = broker_runtime.block_on(Broker::start_with(|config| {
                if let Some(filter) = transform_filter {
                    plugins.install(config, filter);
                }
            }));
            let result = generator.block_on(local.run_until(run(&broker)));
            drop(broker);
            // Let the broker finish its shutdown before the next run.
            std::thread::sleep(Duration::from_millis(300));
            println!(
                "round {round} {label:<27} {:>9.0} msg/s  stamped {:>5.1}%  refused {:>4} (last 0x{:02x})  cpu generator {:.2}  \
                 process {:.2} ({:.1} us/msg)",
                result.rate,
                result.stamped_share * 100.0,
                result.refused,
                result.refusal,
                result.generator_cpu,
                result.process_cpu,
                result.process_cpu / result.rate * 1e6
            );
            rates[i].push(result.rate);
        }
    }
    let medians: Vec<f64> = rates.iter_mut().map(|r| median(r)).collect();
    let (none, with_plugins, partial) = (medians[0], medians[1], medians[2]);
    let ratio = with_plugins / none;
    println!("median no plugins {none:>9.0} msg/s");
    println!("median 3 plugins  {with_plugins:>9.0} msg/s");
    println!(
        "ratio plugins/none {ratio:.3} (target >= 0.85): {}",
        if ratio >= 0.85 { "met" } else { "NOT met" }
    );
    println!(
        "second scenario (not the target's): transform rule on 1/8 of the traffic: median {partial:>9.0} \
         msg/s, ratio {:.3}",
        partial / none
    );
}
