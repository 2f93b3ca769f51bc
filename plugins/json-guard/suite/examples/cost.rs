//! What json-guard costs in each language, through the broker's own plugin host (default limits):
//!
//! ```text
//! cargo run -p wasp-json-guard-suite --example cost            # test profile: wasmtime is optimised (opt-level 2)
//! cargo run --release -p wasp-json-guard-suite --example cost  # the broker's profile (a cold release build of wasmtime is long)
//! ```
//!
//! Per language: the `.wasm` size; `load` with an empty compiled-code cache (compile) and again from the
//! cache (read the artifact, instantiate, `init`); the process RSS that one cached load adds (compiled code
//! plus the first instance); `transform` per call for a valid 100-byte reading (stamped), a valid 4 KiB
//! object (passed) and a payload that is not JSON (dropped); the largest linear memory an instance reached.
//! Guest code is compiled by Cranelift the same way in both profiles; the profile changes the host side.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wasp_plugin_harness::{build_js, build_python, build_wasm, client, message, wasp_wit_dir};
use wasp_plugin_host::types::{Message, Session, TransformVerdict};
use wasp_plugin_host::{HostConfig, HostServices, Plugin, PluginHost, PluginSpec};

const CONFIG: &str = r#"{"rules": [
    {"filter": "sensors/+/reading", "required": ["id:string", "value:number", "meta.site:string"],
     "stamp": {"key": "schema", "value": "reading-v1"}},
    {"filter": "bulk/#"}
]}"#;

const READING: &str =
    r#"{"id":"s1","value":21.5,"meta":{"site":"hall","floor":2},"unit":"celsius"}"#;

fn plugin_dir(language: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(language)
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn bulk_payload() -> Vec<u8> {
    let mut text = String::from("{\"items\":[");
    let mut i = 0;
    while text.len() < 4000 {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&format!("{{\"n\":{i},\"name\":\"item-{i}\",\"ok\":true}}"));
        i += 1;
    }
    text.push_str("]}");
    text.into_bytes()
}

async fn load(host: &PluginHost, wasm: &Path) -> (Plugin, Duration) {
    let mut spec = PluginSpec::new("json-guard", wasm);
    spec.config_json = CONFIG.to_owned();
    let started = Instant::now();
    let plugin = host
        .load(spec, HostServices::default())
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", wasm.display()));
    (plugin, started.elapsed())
}

async fn per_call(plugin: &Plugin, session: &Session, msg: &Message, iterations: u32) -> f64 {
    let first = plugin.transform(session, msg).await.expect("transform");
    assert!(!matches!(first, TransformVerdict::Pass) || msg.topic.starts_with("bulk"));
    for _ in 0..iterations / 10 {
        plugin.transform(session, msg).await.expect("transform");
    }
    let started = Instant::now();
    for _ in 0..iterations {
        plugin.transform(session, msg).await.expect("transform");
    }
    started.elapsed().as_secs_f64() * 1e6 / f64::from(iterations)
}

async fn measure(language: &str, wasm: PathBuf, iterations: u32) {
    let size = std::fs::metadata(&wasm).expect("wasm").len();
    let cache = tempfile::tempdir().expect("temporary cache dir");
    let host_config = || HostConfig {
        cache_dir: Some(cache.path().to_owned()),
        ..HostConfig::default()
    };
    let cold_host = PluginHost::new(host_config()).expect("host");
    let (_, cold) = load(&cold_host, &wasm).await;
    drop(cold_host);
    let host = PluginHost::new(host_config()).expect("host");
    let rss_before = rss_bytes();
    let (plugin, cached) = load(&host, &wasm).await;
    let rss_load = rss_bytes().saturating_sub(rss_before);
    assert!(
        plugin.loaded_from_cache(),
        "{language}: the second load hits the cache"
    );

    let session = client("dev-1").username("u").session(&[]);
    let reading = message("sensors/s1/reading", READING.as_bytes().to_vec());
    let bulk = message("bulk/x", bulk_payload());
    let junk = message("sensors/s1/reading", b"21.5".to_vec());
    let stamp_us = per_call(&plugin, &session, &reading, iterations).await;
    let bulk_us = per_call(&plugin, &session, &bulk, iterations).await;
    let junk_us = per_call(&plugin, &session, &junk, iterations).await;
    let stats = plugin.stats();
    assert_eq!(stats.failed_calls, [0; 4], "{language}: {stats:?}");
    tracing::info!(
        "{language:<7} wasm {:>6.2} MB | load: compile {:>7.0} ms, cached {:>6.1} ms, +RSS {:>5.1} MB | \
         transform: stamp {:>6.1} us, 4 KiB pass {:>6.1} us, not JSON {:>6.1} us | peak linear memory {:>5.1} MiB",
        size as f64 / 1e6,
        cold.as_secs_f64() * 1e3,
        cached.as_secs_f64() * 1e3,
        rss_load as f64 / 1e6,
        stamp_us,
        bulk_us,
        junk_us,
        stats.peak_memory_bytes as f64 / f64::from(1 << 20),
    );
}

fn main() {
    tracing_subscriber::fmt()
        .with_target(false)
        .without_time()
        .init();
    let wit = wasp_wit_dir();
    let world = "transformer-plugin";
    let builds = [
        ("rust", build_wasm(&plugin_dir("rust")), 20_000),
        (
            "python",
            build_python(&plugin_dir("python"), "app", &wit, world),
            2_000,
        ),
        (
            "js",
            build_js(&plugin_dir("js"), "guard.js", &wit, world),
            2_000,
        ),
    ];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for (language, wasm, iterations) in builds {
        runtime.block_on(measure(language, wasm, iterations));
    }
}
