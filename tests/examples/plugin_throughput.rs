//! Broker throughput with the three shipped plugins loaded (password-file, acl-file, transform) against no
//! plugins. Prints numbers; it is not a test:
//!
//! ```text
//! cargo run --release -p wasp-tests --example plugin_throughput [-- LABEL_PART...]
//! ```
//!
//! With arguments, only `no plugins` and the scenarios whose label contains one of them run (e.g.
//! `-- client-id`).
//!
//! An in-process broker on `127.0.0.1:0` (its own tokio runtime, 2 worker threads) and a load generator on
//! the main thread (a current-thread runtime) speaking raw MQTT 5.0 over TCP with Wasp's own codec:
//! `PUBLISHERS` publishers send QoS 1 PUBLISHes of `PAYLOAD` bytes to `bench/<n>` in a closed loop (at most
//! `WINDOW` unacknowledged each), and one subscriber on `bench/#` (QoS 1, acknowledging everything) counts
//! what it receives. After `WARM_UP`, the messages received during `MEASURE` give the rate. The
//! scenarios run `ROUNDS` times each, interleaved (a round runs each once). Two ratios to no plugins are
//! printed: the ratio of the medians, and the median of each round's ratio (both runs of a round are at
//! most a minute apart, so a round in which the whole machine ran slower cancels out); the target
//! (plugins >= 0.85x none) is met when both are. The load generator's own CPU time (its thread, from
//! `/proc/thread-self/stat`) and the process's are printed, to show whether the generator is the
//! bottleneck, and their difference per message: the broker's CPU per message, where the plugins add
//! theirs.
//!
//! With plugins every client logs in through password-file (user `sha512` of the committed fixtures), the
//! ACL allows `bench/#` to that user, and a transform rule changes every PUBLISH, so every PUBLISH goes
//! through authorize-publish (whose verdicts the broker caches for 5 s per session and topic, as the
//! acl-file plugin allows) and through transform. The scenarios differ in the transform rule:
//!
//! - `rewrite`: `bench/+` is rewritten to `bench/r/{1}`. The verdict depends on the topic only, so the
//!   plugin lets the broker reuse it (WIT 0.1.3 `cacheable-transformer`): the broker enters Wasm once per
//!   publisher and topic, then applies the same patch itself.
//! - `client-id`: the publisher's client id is stamped as a user property; reusable too. Every delivered
//!   message then carries a user property, which costs the broker and the generator work of its own: the
//!   `control` scenario (no plugins, the publishers send that same property themselves) measures it.
//! - `client-id + time`: the receive time is stamped too. The plugin has the broker set it on each
//!   message (WIT 0.1.4 stamps), so this verdict is reusable too: the time stamp costs no Wasm call.
//!   Its `control` sends both properties with no plugins.
//! - `size check`: payloads over 1 KiB are dropped. The verdict depends on the payload's size only, so
//!   the plugin lets the broker reuse it for the payload sizes on the same side of the limit (WIT 0.1.5
//!   `sized-transformer`): here every payload is under it.
//! - `JSON check`: payloads that are not JSON are dropped (the payloads are a JSON string). The verdict
//!   depends on the payload's content, so every PUBLISH is a Wasm call: the worst case, with no target.
//!   `JSON check on 1/8`: the same rule on `bench/0` only: one publisher of eight, 1/8 of the traffic,
//!   enters Wasm; the other PUBLISHes match no transformer's publish filter (interest filters at work).
//!
//! Every scenario is compared with `no plugins`; the target (>= 0.85x) is checked for the rules on all of
//! `bench/#` whose verdicts the broker may reuse (all but the JSON check).

// A benchmark binary: printing its results is its purpose.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use wasp::config::{Config, PluginConfig};
use wasp_mqtt::{Properties, QoS, ReasonCode, UserProperties};
use wasp_plugin_host::{DirGrant, PluginSpec};
use wasp_tests::Broker;
use wasp_tests::load::{
    Client, Login, cpu_time, median, publish_loop, runtimes, stop_publishers, subscribe_loop,
};

// The `wasp` binary's allocator, so that the broker measured here is the one operators run.
#[global_allocator]
static ALLOCATOR: wasp::Allocator = wasp::Allocator;

const PUBLISHERS: usize = 8;
const WINDOW: usize = 32;
const PAYLOAD: usize = 64;
const WARM_UP: Duration = Duration::from_secs(1);
const MEASURE: Duration = Duration::from_secs(5);
const ROUNDS: usize = 5;
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

    /// Installs the three plugins with `rule` as the transform plugin's one rule.
    fn install(&self, config: &mut Config, rule: &str) {
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
            &format!(r#"{{"rules": [{rule}]}}"#),
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

/// The transform plugin's rules (JSON), by scenario.
const REWRITE: &str = r#"{"filter": "bench/+", "rewrite_topic": "bench/r/{1}"}"#;
const CLIENT_ID: &str = r#"{"filter": "bench/#", "stamp_client_id_property": "client-id"}"#;
const CLIENT_ID_AND_TIME: &str = r#"{"filter": "bench/#", "stamp_client_id_property": "client-id",
    "stamp_time_property": "received-at"}"#;
const SIZE_CHECK: &str = r#"{"filter": "bench/#", "max_payload_bytes": 1024}"#;
const JSON_CHECK: &str = r#"{"filter": "bench/#", "require_json": true}"#;
const JSON_CHECK_ON_ONE_EIGHTH: &str = r#"{"filter": "bench/0", "require_json": true}"#;

/// The user properties of the control scenarios: what the stamps add (the time is a typical one).
const CLIENT_ID_PROPERTY: &[(&str, &str)] = &[("client-id", "bench-pub")];
const CLIENT_ID_AND_TIME_PROPERTIES: &[(&str, &str)] =
    &[("client-id", "bench-pub"), ("received-at", "1764680000000")];

/// What the broker runs and what the publishers send in a scenario.
#[derive(Clone, Copy)]
enum Setup {
    /// No plugins; every PUBLISH carries these user properties.
    Plain(&'static [(&'static str, &'static str)]),
    /// The three plugins, with this transform rule.
    Plugins(&'static str),
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    /// Received messages that a transform changed (rewritten topic or client-id property).
    transformed: AtomicU64,
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
async fn publisher(
    client: Client,
    n: usize,
    properties: Properties,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
) {
    // A JSON string, so that the JSON check passes it.
    let mut payload = vec![b'x'; PAYLOAD];
    payload[0] = b'"';
    payload[PAYLOAD - 1] = b'"';
    let payload = Bytes::from(payload);
    publish_loop(
        client,
        &format!("bench/{n}"),
        payload,
        properties,
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

/// Counts what `bench/#` delivers (and how much of it was transformed), acknowledging each PUBLISH.
async fn subscriber(client: Client, counters: Arc<Counters>) {
    subscribe_loop(
        client,
        |publish| {
            if publish.topic.starts_with("bench/r/")
                || publish
                    .properties
                    .user_properties
                    .iter()
                    .any(|(k, _)| k == "client-id")
            {
                counters.transformed.fetch_add(1, Ordering::Relaxed);
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
    transformed_share: f64,
    refused: u64,
    refusal: u64,
    generator_cpu: f64,
    process_cpu: f64,
}

/// One run against `broker`: connect, warm up, measure, stop.
async fn run(broker: &Broker, properties: &[(&str, &str)]) -> Run {
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
        let properties = Properties {
            user_properties: UserProperties::from_pairs(properties.iter().copied()).expect("short"),
            ..Properties::default()
        };
        tasks.spawn_local(publisher(
            client,
            n,
            properties,
            stop.clone(),
            counters.clone(),
        ));
    }

    tokio::time::sleep(WARM_UP).await;
    let (received0, transformed0) = (
        counters.received.load(Ordering::Relaxed),
        counters.transformed.load(Ordering::Relaxed),
    );
    let (generator0, process0, started) =
        (cpu_time("thread-self"), cpu_time("self"), Instant::now());
    tokio::time::sleep(MEASURE).await;
    let elapsed = started.elapsed().as_secs_f64();
    let (generator1, process1) = (cpu_time("thread-self"), cpu_time("self"));
    let received = counters.received.load(Ordering::Relaxed) - received0;
    let transformed = counters.transformed.load(Ordering::Relaxed) - transformed0;

    stop_publishers(&stop, &mut tasks).await;
    subscriber.abort();
    Run {
        rate: received as f64 / elapsed,
        transformed_share: if received == 0 {
            0.0
        } else {
            transformed as f64 / received as f64
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
         verdicts 5 s per session and topic), transform with one rule: rewrite bench/+ to bench/r/{{1}} \
         (reusable verdicts), stamp client-id (reusable), stamp client-id + time (reusable, the broker \
         sets the time), a size check (reusable for the sizes under the limit), a JSON check (a Wasm \
         call per PUBLISH), the latter on bench/0 only (1/8)"
    );
    println!(
        "cpu columns: cores used during the measured window (1.00 = one core), from /proc/*/stat \
         (assumed 100 ticks/s); generator = the load generator's thread, process = broker + generator; \
         broker us/msg = (process - generator) CPU per message"
    );

    // (label, setup, whether the target applies)
    let scenarios: [(&str, Setup, bool); 9] = [
        ("no plugins", Setup::Plain(&[]), false),
        ("3 plugins, rewrite", Setup::Plugins(REWRITE), true),
        ("3 plugins, client-id", Setup::Plugins(CLIENT_ID), true),
        (
            "control: no plugins, client-id",
            Setup::Plain(CLIENT_ID_PROPERTY),
            false,
        ),
        (
            "3 plugins, client-id + time",
            Setup::Plugins(CLIENT_ID_AND_TIME),
            true,
        ),
        (
            "control: no plugins, 2 props",
            Setup::Plain(CLIENT_ID_AND_TIME_PROPERTIES),
            false,
        ),
        ("3 plugins, size check", Setup::Plugins(SIZE_CHECK), true),
        ("3 plugins, JSON check", Setup::Plugins(JSON_CHECK), false),
        (
            "3 plugins, JSON check on 1/8",
            Setup::Plugins(JSON_CHECK_ON_ONE_EIGHTH),
            false,
        ),
    ];
    let only: Vec<String> = std::env::args().skip(1).collect();
    let scenarios: Vec<_> = scenarios
        .into_iter()
        .enumerate()
        .filter(|(i, (label, _, _))| {
            *i == 0 || only.is_empty() || only.iter().any(|o| label.contains(o.as_str()))
        })
        .map(|(_, scenario)| scenario)
        .collect();
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); scenarios.len()];
    // Process CPU (broker and generator) per message, µs: less sensitive than the rate to CPU time that
    // other processes take from the two cores during a round.
    let mut costs: Vec<Vec<f64>> = vec![Vec::new(); scenarios.len()];
    // The broker's share of it (process minus the generator's thread), µs: where plugins add their cost.
    let mut broker_costs: Vec<Vec<f64>> = vec![Vec::new(); scenarios.len()];
    for round in 1..=ROUNDS {
        for (i, (label, setup, _)) in scenarios.iter().enumerate() {
            let broker = broker_runtime.block_on(Broker::start_with(|config| {
                if let Setup::Plugins(rule) = setup {
                    plugins.install(config, rule);
                }
            }));
            let properties = match setup {
                Setup::Plain(properties) => properties,
                Setup::Plugins(_) => &[][..],
            };
            let result = generator.block_on(local.run_until(run(&broker, properties)));
            drop(broker);
            // Let the broker finish its shutdown before the next run.
            std::thread::sleep(Duration::from_millis(300));
            let broker_cost = (result.process_cpu - result.generator_cpu) / result.rate * 1e6;
            println!(
                "round {round} {label:<30} {:>9.0} msg/s  transformed {:>5.1}%  refused {:>4} (last 0x{:02x})  \
                 cpu generator {:.2}  process {:.2} ({:.1} us/msg, broker {broker_cost:.2} us/msg)",
                result.rate,
                result.transformed_share * 100.0,
                result.refused,
                result.refusal,
                result.generator_cpu,
                result.process_cpu,
                result.process_cpu / result.rate * 1e6
            );
            rates[i].push(result.rate);
            costs[i].push(result.process_cpu / result.rate * 1e6);
            broker_costs[i].push(broker_cost);
        }
    }
    // Each round's own ratio (the scenario's rate over no plugins' rate in the same round), before the
    // medians sort the rates: the machine runs whole rounds faster or slower (see the README), which
    // the ratio of two medians taken from different rounds mixes in.
    let round_ratios: Vec<f64> = rates
        .iter()
        .map(|r| {
            let mut ratios: Vec<f64> = r.iter().zip(&rates[0]).map(|(s, n)| s / n).collect();
            median(&mut ratios)
        })
        .collect();
    let medians: Vec<f64> = rates.iter_mut().map(|r| median(r)).collect();
    let cost_medians: Vec<f64> = costs.iter_mut().map(|c| median(c)).collect();
    let broker_medians: Vec<f64> = broker_costs.iter_mut().map(|c| median(c)).collect();
    let (none, none_cost) = (medians[0], cost_medians[0]);
    println!(
        "medians of {ROUNDS} rounds; ratio = msg/s against no plugins (the target's measure); round ratio \
         = the median of each round's ratio; cpu ratio = no plugins' CPU per message / the scenario's"
    );
    for (i, (label, _, target)) in scenarios.iter().enumerate() {
        let (ratio, round_ratio) = (medians[i] / none, round_ratios[i]);
        let verdict = match (i, target, ratio >= 0.85, round_ratio >= 0.85) {
            (0, ..) => "",
            (_, false, ..) => "(no target)",
            (_, true, true, true) => "target >= 0.85: met",
            (_, true, false, false) => "target >= 0.85: NOT met",
            (_, true, ..) => "target >= 0.85: met by one of the two ratios only",
        };
        println!(
            "median {label:<30} {:>9.0} msg/s  {:.1} us/msg (broker {:.2})  ratio {ratio:.3}  round ratio \
             {:.3}  cpu ratio {:.3}  {verdict}",
            medians[i],
            cost_medians[i],
            broker_medians[i],
            round_ratio,
            none_cost / cost_medians[i]
        );
    }
}
