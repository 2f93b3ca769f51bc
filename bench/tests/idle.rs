//! `wasp-bench --scenarios idle` end to end against the `wasp` binary beside it: the connections opened
//! by several generator threads are all counted, the unmeasured warm-up runs first, and the run ends.

use std::path::PathBuf;
use std::process::Command;

/// The `wasp` binary of the same build (`cargo test --workspace` builds it with the broker's tests).
fn wasp_binary() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_wasp-bench"));
    let wasp = bench.with_file_name("wasp");
    assert!(
        wasp.exists(),
        "{} is missing: build it first (`cargo build -p wasp`, or `cargo test --workspace`)",
        wasp.display()
    );
    wasp
}

#[test]
fn idle_connections_from_several_generator_threads_are_all_counted() {
    let output = Command::new(env!("CARGO_BIN_EXE_wasp-bench"))
        .args(["--brokers", "wasp", "--scenarios", "idle", "--rounds", "1"])
        .args(["--idle", "301", "--handshakes", "7", "--idle-threads", "3"])
        .arg("--wasp")
        .arg(wasp_binary())
        // Away from the default ports, which a benchmark run on the same machine may hold.
        .args(["--port", "21400"])
        .output()
        .expect("wasp-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "wasp-bench failed:\n{stdout}\n{stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let warm_up = lines
        .iter()
        .position(|l| l.starts_with("warm-up"))
        .expect("a warm-up line");
    let round = lines
        .iter()
        .position(|l| l.starts_with("round 1 idle 301"))
        .expect("the measured round's line");
    assert!(
        warm_up < round,
        "the warm-up comes before the measured round:\n{stdout}"
    );
    assert!(
        lines[warm_up].contains("(not counted): 301 connected (0 failed)"),
        "{}",
        lines[warm_up]
    );
    // 301 over 3 threads: 100, 100 and 101 connections, each thread's share counted once.
    assert!(
        lines[round].contains("301 connected (0 failed)"),
        "{}",
        lines[round]
    );
}
