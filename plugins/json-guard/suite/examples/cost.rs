//! What json-guard costs in each language, through the broker's own plugin host (default limits):
//!
//! ```text
//! cargo run -p wasp-json-guard-suite --example cost            # test profile: wasmtime is optimised (opt-level 2)
//! cargo run --release -p wasp-json-guard-suite --example cost  # the broker's profile (a cold release build of wasmtime is long)
//! cargo run -p wasp-json-guard-suite --example cost -- a.wasm b.wasm  # other builds of json-guard
//! ```
//!
//! Per language: the `.wasm` size; `load` with an empty compiled-code cache (compile) and again from the
//! cache (read the artifact, instantiate, `init`); the process RSS that one cached load adds (compiled code
//! plus the first instance); `transform` per call for a valid 100-byte reading (stamped), a valid 4 KiB
//! object (passed), a payload that is not JSON (dropped), a valid object of 64 KiB (the default
//! `max_payload_bytes`) and 20 000 nested arrays (refused by the depth check); the largest linear memory
//! an instance reached.
//! Guest code is compiled by Cranelift the same way in both profiles; the profile changes the host side.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wasp_plugin_harness::{build_js, build_python, build_wasm, client, message, wasp_wit_dir};
use wasp_plugin_host::types::{Message, Session};
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

/// A JSON object of about `size` bytes: an array of small objects.
fn bulk_payload(size: usize) -> Vec<u8> {
    let mut text = String::from("{\"items\":[");
    let mut i = 0;
    while text.len() < size - 40 {
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
    let bulk = message("bulk/x", bulk_payload(4096));
    let largest = message("bulk/x", bulk_payload(65_536));
    let deep = message(
        "bulk/x",
        format!("{}{}", "[".repeat(20_000), "]".repeat(20_000)).into_bytes(),
    );
    let junk = message("sensors/s1/reading", b"21.5".to_vec());
    let stamp_us = per_call(&plugin, &session, &reading, iterations).await;
    let bulk_us = per_call(&plugin, &session, &bulk, iterations).await;
    let junk_us = per_call(&plugin, &session, &junk, iterations).await;
    let largest_us = per_call(&plugin, &session, &largest, iterations / 20).await;
    let deep_us = per_call(&plugin, &session, &deep, iterations / 20).await;
    let stats = plugin.stats();
    assert_eq!(stats.failed_calls, [0; 4], "{language}: {stats:?}");
    tracing::info!(
        "{language:<7} wasm {:>6.2} MB | load: compile {:>7.0} ms, cached {:>6.1} ms, +RSS {:>5.1} MB | \
         transform: stamp {:>6.1} us, 4 KiB pass {:>6.1} us, not JSON {:>6.1} us, 64 KiB pass {:>7.0} us, \
         40 KB deep {:>6.0} us | peak linear memory {:>5.1} MiB",
        size as f64 / 1e6,
        cold.as_secs_f64() * 1e3,
        cached.as_secs_f64() * 1e3,
        rss_load as f64 / 1e6,
        stamp_us,
        bulk_us,
        junk_us,
        largest_us,
        deep_us,
        stats.peak_memory_bytes as f64 / f64::from(1 << 20),
    );
}

fn main() {
    tracing_subscriber::fmt()
        .with_target(false)
        .without_time()
        .init();
    // `-- FILE.wasm...`: measure these builds instead (the same configuration must suit them).
    let given: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let builds: Vec<(String, PathBuf, u32)> = if given.is_empty() {
        let wit = wasp_wit_dir();
        let world = "transformer-plugin";
        vec![
            ("rust".into(), build_wasm(&plugin_dir("rust")), 20_000),
            (
                "python".into(),
                build_python(&plugin_dir("python"), "app", &wit, world),
                2_000,
            ),
            (
                "js".into(),
                build_js(&plugin_dir("js"), "guard.js", &wit, world),
                2_000,
            ),
        ]
    } else {
        given
            .into_iter()
            .map(|wasm| (wasm.display().to_string(), wasm, 2_000))
            .collect()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for (language, wasm, iterations) in builds {
        runtime.block_on(measure(&language, wasm, iterations));
    }
}
