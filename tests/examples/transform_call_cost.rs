//! What one call of the transform plugin costs, through the broker's own host code (the plugin
//! harness): the part of `plugin_throughput`'s `size check` scenario that is the Wasm call itself. Prints
//! numbers; it is not a test:
//!
//! ```text
//! cargo run --release -p wasp-tests --example transform_call_cost [-- CALLS [LABEL_PART]]
//! ```
//!
//! For each rule (or those whose label contains LABEL_PART), CALLS (default 200 000) calls of the
//! plugin's `stamping-transformer` export on a 64-byte PUBLISH to `bench/1` (after CALLS / 20 to warm
//! up), one after another on one thread; the mean per call. On this shared 2-core machine a run moves by +-20 %; instruction counts do not: run it under
//! `valgrind --tool=callgrind` with two CALLS values and divide the difference in instructions by the
//! difference in calls (see `broker/plugin-host/README.md`).

// A benchmark binary: printing its results is its purpose.
#![allow(clippy::print_stdout)]

use std::path::Path;
use std::time::Instant;

use wasp_plugin_harness::{Harness, client, message};

/// The transform plugin's rules (JSON), as in `plugin_throughput`.
const RULES: [(&str, &str); 3] = [
    (
        "size check (every PUBLISH)",
        r#"{"filter": "bench/#", "max_payload_bytes": 1024}"#,
    ),
    (
        "client-id (reusable)",
        r#"{"filter": "bench/#", "stamp_client_id_property": "client-id"}"#,
    ),
    (
        "rewrite (reusable)",
        r#"{"filter": "bench/+", "rewrite_topic": "bench/r/{1}"}"#,
    ),
];

fn main() {
    let mut args = std::env::args().skip(1);
    let calls: u32 = match args.next() {
        Some(arg) => arg.parse().expect("CALLS: a number of calls"),
        None => 200_000,
    };
    let only = args.next().unwrap_or_default();
    let wasm = wasp_plugin_harness::build_wasm(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/transform"),
    );
    let session = client("bench-pub-1").username("sha512").session(&[]);
    let message = message("bench/1", vec![b'x'; 64]);
    println!("transform plugin, one rule, {calls} calls each (mean per call):");
    for (label, rule) in RULES.into_iter().filter(|(label, _)| label.contains(&only)) {
        let plugin = Harness::load(&wasm)
            .config_json(&format!(r#"{{"rules": [{rule}]}}"#))
            .build()
            .expect("the transform plugin loads");
        let call = || {
            plugin
                .transform_stamping(&session, message.clone())
                .expect("the call succeeds")
        };
        for _ in 0..calls / 20 {
            call();
        }
        let started = Instant::now();
        for _ in 0..calls {
            call();
        }
        let per_call = started.elapsed().as_secs_f64() * 1e9 / f64::from(calls);
        println!("{label:<28} {per_call:>7.0} ns/call");
    }
}
