//! `wasp-bench`: Wasp, Mosquitto and rumqttd under the same loads, in the same run.
//!
//! ```text
//! bench/setup                                  # mosquitto (apt) and rumqttd (cargo install) if missing
//! cargo build --release --workspace --bins
//! target/release/wasp-bench                    # every scenario, 3 rounds
//! target/release/wasp-bench --idle 50000 --scenarios idle
//! ```
//!
//! Each round starts every broker afresh for every scenario (the order of the brokers rotates from round
//! to round), so the brokers share the machine's state of the moment; the table gives the median over the
//! rounds and the ratios Wasp/peer. The load generator is this process: one current-thread tokio runtime
//! speaking raw MQTT with `wasp_mqtt`'s codec (see `load` for the closed loop and the exact counting),
//! and for the idle connections one such runtime per generator thread (`--idle-threads`). Its CPU use
//! and the broker's (cores, from `/proc/*/stat`) are printed with every run: a generator near 1.00 per
//! thread is the bottleneck, not the broker.

// A benchmark binary: printing its results is its purpose.
#![allow(clippy::print_stdout)]

mod brokers;
mod client;
mod load;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use wasp_mqtt::{ProtocolVersion, QoS};

use brokers::{Kind, Setup};
use load::{IdleOutcome, Load, Outcome, Window};

#[derive(Debug, Parser)]
#[command(
    about = "Wasp vs Mosquitto vs rumqttd on loopback: throughput, latency, idle connections"
)]
struct Args {
    /// Rounds (each runs every scenario on every broker); the table shows medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Measured window of each run, seconds.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Warm-up before the window, seconds.
    #[arg(long, default_value_t = 1.0)]
    warm_up: f64,
    /// Payload size in bytes (at least 20: publisher id, sequence number, send time).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Closed loop: publishers pause while this many messages per receiver are undelivered.
    #[arg(long, default_value_t = 1000)]
    cap: u64,
    /// Scenarios, comma-separated: fanin0, fanin1, fanin2, fanout, shared, latency, idle.
    #[arg(
        long,
        default_value = "fanin0,fanin1,fanin2,fanout,shared,latency,idle"
    )]
    scenarios: String,
    /// Brokers, comma-separated: wasp, mosquitto, rumqttd.
    #[arg(long, default_value = "wasp,mosquitto,rumqttd")]
    brokers: String,
    /// Idle connections to open (50000 needs a raised file limit, which the bench sets itself).
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// Handshakes in flight at a time while the idle connections are opened.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    handshakes: u16,
    /// Generator threads opening the idle connections, each with its share of the handshakes in flight
    /// (default: one per CPU). One thread spends more CPU per connection than either broker (the
    /// kernel's handshake runs in its `connect`) and then sets the rate (bench/README.md).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    idle_threads: Option<u16>,
    /// The Wasp binary (default: `wasp` beside this binary).
    #[arg(long)]
    wasp: Option<PathBuf>,
    #[arg(long, default_value = "/usr/sbin/mosquitto")]
    mosquitto: PathBuf,
    /// The rumqttd binary (default: from PATH, else ~/.cargo/bin/rumqttd).
    #[arg(long)]
    rumqttd: Option<PathBuf>,
    /// Mosquitto's `max_queued_messages` (default: Mosquitto's own, 1000).
    #[arg(long)]
    mosquitto_max_queued: Option<u32>,
    /// First loopback port used (brokers get fresh ports every run, below 32768).
    #[arg(long, default_value_t = 20_000)]
    port: u16,
}

struct Scenario {
    label: String,
    load: Option<Load>,
}

fn scenarios(args: &Args) -> Result<Vec<Scenario>> {
    let v311 = ProtocolVersion::V311;
    let throughput = |publishers, subscribers, qos, filter: &str, own_topic, version| Load {
        version,
        publishers,
        subscribers,
        qos,
        filter: filter.to_owned(),
        own_topic,
        rate: None,
    };
    let mut list = Vec::new();
    for key in args.scenarios.split(',').map(str::trim) {
        let (label, load) = match key {
            "fanin0" => (
                "fan-in 50->1 QoS 0, msg/s",
                Some(throughput(50, 1, QoS::AtMostOnce, "bench/#", true, v311)),
            ),
            "fanin1" => (
                "fan-in 50->1 QoS 1, msg/s",
                Some(throughput(50, 1, QoS::AtLeastOnce, "bench/#", true, v311)),
            ),
            "fanin2" => (
                "fan-in 50->1 QoS 2, msg/s",
                Some(throughput(50, 1, QoS::ExactlyOnce, "bench/#", true, v311)),
            ),
            "fanout" => (
                "fan-out 1->100 QoS 0, deliveries/s",
                Some(throughput(1, 100, QoS::AtMostOnce, "bench/#", false, v311)),
            ),
            "shared" => (
                "shared 10->$share/g x4 QoS 1 (5.0), msg/s",
                Some(throughput(
                    10,
                    4,
                    QoS::AtLeastOnce,
                    "$share/g/bench/#",
                    true,
                    ProtocolVersion::V5,
                )),
            ),
            "latency" => (
                "latency 1->1 QoS 0 at 10k msg/s, p50 / p99 us",
                Some(Load {
                    rate: Some(10_000.0),
                    ..throughput(1, 1, QoS::AtMostOnce, "bench/#", false, v311)
                }),
            ),
            "idle" => ("idle connections", None),
            other => bail!("unknown scenario {other:?}"),
        };
        list.push(Scenario {
            label: label.to_owned(),
            load,
        });
    }
    Ok(list)
}

fn find_rumqttd() -> PathBuf {
    let in_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("rumqttd"))
            .find(|p| p.is_file())
    });
    in_path.unwrap_or_else(|| {
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
            .unwrap_or_default();
        home.join("bin/rumqttd")
    })
}

/// Raises RLIMIT_NOFILE (soft and hard; raising the hard limit needs CAP_SYS_RESOURCE) to at least
/// `needed`; the brokers, started as children, inherit it.
fn raise_file_limit(needed: u64) -> Result<u64> {
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    if soft >= needed {
        return Ok(soft);
    }
    if rlimit::setrlimit(rlimit::Resource::NOFILE, needed, hard.max(needed)).is_ok() {
        return Ok(needed);
    }
    if hard >= needed {
        rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard)?;
        return Ok(hard);
    }
    bail!(
        "{needed} open files needed, the hard limit is {hard} and cannot be raised here (no \
         CAP_SYS_RESOURCE): run with a higher `ulimit -Hn`, or fewer --idle connections"
    )
}

/// Grows this process's descriptor table to `files` entries while the process has one thread. Linux
/// doubles the table as descriptors are opened, and in a process of several threads each doubling waits
/// out an RCU grace period (`expand_files` -> `synchronize_rcu`, 10-20 ms here): with the idle
/// scenario's generator threads, the first idle run of every bench process stalled in it for ~20 ms in
/// all (`perf record -a -g -e sched:sched_switch`: both threads in `D` state, in `expand_files`) and ran
/// at ~40 k connects/s instead of ~60 k, whichever broker it measured. The `wasp` binary does the same
/// for its own table (`pregrow_fd_table` in broker/src/main.rs).
fn pregrow_fd_table(files: u64) -> std::io::Result<()> {
    let null = std::fs::File::open("/dev/null")?;
    let top = i32::try_from(files.saturating_sub(1)).unwrap_or(i32::MAX);
    drop(rustix::io::fcntl_dupfd_cloexec(&null, top)?);
    Ok(())
}

fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

#[derive(Default)]
struct Samples {
    runs: Vec<Outcome>,
    idle: Vec<IdleOutcome>,
    not_applicable: Option<String>,
    failed: Option<String>,
}

fn fmt_rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// The ports of run `run_id` (two: rumqttd's 5.0 listener takes the second), from `base` on, below 32768
/// with the default base.
fn run_port(base: u16, run_id: u64) -> u16 {
    base + ((run_id * 2) % 12_000) as u16
}

/// The first of the source addresses 127.0.0.x for `count` connections (`per_source` per address),
/// each run taking the next block so that no run reuses the ports of the one before.
fn next_sources(source_block: &mut usize, count: usize, per_source: usize) -> u8 {
    let blocks = count.div_ceil(per_source);
    if *source_block + blocks > 250 {
        *source_block = 0;
    }
    let first = 2 + *source_block as u8;
    *source_block += blocks;
    first
}

fn main() -> Result<()> {
    let args = Args::parse();
    let scenarios = scenarios(&args)?;
    let kinds: Vec<Kind> = args
        .brokers
        .split(',')
        .map(|b| Kind::parse(b.trim()).with_context(|| format!("unknown broker {b:?}")))
        .collect::<Result<_>>()?;
    if args.payload < 20 {
        bail!("--payload must be at least 20 bytes");
    }
    let wasp = match &args.wasp {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no directory")?
            .join("wasp"),
    };
    let setup = Setup {
        wasp,
        mosquitto: args.mosquitto.clone(),
        rumqttd: args.rumqttd.clone().unwrap_or_else(find_rumqttd),
        mosquitto_max_queued: args.mosquitto_max_queued,
        dir: tempfile::tempdir()?,
    };
    for (kind, path) in [
        (Kind::Wasp, &setup.wasp),
        (Kind::Mosquitto, &setup.mosquitto),
        (Kind::Rumqttd, &setup.rumqttd),
    ] {
        if kinds.contains(&kind) && !path.is_file() {
            bail!(
                "{} not found at {} (bench/setup installs the peers; cargo build --release --workspace --bins builds wasp)",
                kind.name(),
                path.display()
            );
        }
    }
    let idle_count = args.idle;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let idle_threads = args.idle_threads.map_or(cpus, usize::from);
    let files = raise_file_limit(idle_count as u64 + 256)?;
    // Before any thread exists (the idle scenario's generator threads, the runtimes).
    if let Err(e) = pregrow_fd_table(files) {
        eprintln!(
            "note: could not grow the descriptor table ahead ({e}): the first idle run may stall"
        );
    }
    let window = Window {
        warm_up: Duration::from_secs_f64(args.warm_up),
        measure: Duration::from_secs_f64(args.secs),
        payload: args.payload,
        cap: args.cap,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();

    println!(
        "wasp-bench: {} round(s), {} s warm-up + {} s measured per run, {}-byte payloads, closed loop at {} \
         undelivered per receiver, MQTT 3.1.1 unless marked 5.0; open-file limit {files}",
        args.rounds, args.warm_up, args.secs, args.payload, args.cap
    );
    println!(
        "mosquitto max_queued_messages: {}",
        args.mosquitto_max_queued
            .map_or("1000 (its default)".to_owned(), |n| n.to_string())
    );
    println!(
        "cpu: cores used in the window, of {} on the machine; gen = this generator (1.00 = one thread saturated; \
         the idle scenario's generator threads: {idle_threads})",
        cpus
    );

    let mut samples: Vec<Vec<Samples>> = scenarios
        .iter()
        .map(|_| kinds.iter().map(|_| Samples::default()).collect())
        .collect();
    let mut run_id: u64 = 0;
    let mut source_block: usize = 0;
    let per_source = 10_000;
    let mut idle_warmed = false;
    // One idle run: `idle_count` connections from the next block of source addresses.
    let open_idle = |broker: &brokers::Running, source_block: &mut usize, run_id: u64| {
        let first = next_sources(source_block, idle_count, per_source);
        load::idle(
            broker,
            idle_count,
            usize::from(args.handshakes),
            idle_threads,
            first,
            per_source,
            run_id,
        )
    };
    for round in 0..args.rounds {
        for (si, scenario) in scenarios.iter().enumerate() {
            for offset in 0..kinds.len() {
                let bi = (offset + round) % kinds.len();
                let kind = kinds[bi];
                run_id += 1;
                let mut port = run_port(args.port, run_id);
                let slot = &mut samples[si][bi];
                if slot.not_applicable.is_some() || slot.failed.is_some() {
                    continue;
                }
                // The first idle run of the process pays its one-time costs (the generator threads'
                // first heap pages, and a ~20 ms stall before `pregrow_fd_table`), and they fell on the
                // broker that went first. One unmeasured pass, just before the first measured one,
                // takes them.
                if scenario.load.is_none() && !idle_warmed {
                    idle_warmed = true;
                    let warm_up = setup
                        .start(kind, port)
                        .and_then(|broker| open_idle(&broker, &mut source_block, run_id));
                    match warm_up {
                        Ok(o) => println!(
                            "warm-up  idle {idle_count} against {} (not counted): {} connected ({} failed), {:.0} connects/s, handshake max {:.0} us",
                            kind.name(),
                            o.connections,
                            o.failed,
                            o.connects_per_sec,
                            o.handshake_max_us
                        ),
                        Err(e) => {
                            println!("warm-up  idle {idle_count} failed (not counted): {e:#}")
                        }
                    }
                    // The measured run gets a run number and ports of its own.
                    run_id += 1;
                    port = run_port(args.port, run_id);
                }
                let broker = match setup.start(kind, port) {
                    Ok(b) => b,
                    Err(e) => {
                        println!(
                            "round {} {:<44} {:<9} failed to start: {e:#}",
                            round + 1,
                            scenario.label,
                            kind.name()
                        );
                        slot.failed = Some(format!("{e:#}"));
                        continue;
                    }
                };
                match &scenario.load {
                    Some(load) => {
                        let result = runtime
                            .block_on(local.run_until(load::run(&broker, load, window, run_id)));
                        match result {
                            Ok(o) if o.not_applicable.is_some() => {
                                println!(
                                    "round {} {:<44} {:<9} n/a: {}",
                                    round + 1,
                                    scenario.label,
                                    kind.name(),
                                    o.not_applicable.as_deref().unwrap_or_default()
                                );
                                slot.not_applicable = o.not_applicable;
                            }
                            Ok(o) => {
                                let figure = if load.rate.is_some() {
                                    format!(
                                        "p50 {:>6.0} us p99 {:>6.0} us ({} samples)",
                                        o.p50_us, o.p99_us, o.samples
                                    )
                                } else {
                                    format!("{:>10}/s", fmt_rate(o.rate))
                                };
                                println!(
                                    "round {} {:<44} {:<9} {figure}  sent {} delivered {} lost {} dup {} acked-but-lost {} refused {} | cpu gen {:.2} broker {:.2}",
                                    round + 1,
                                    scenario.label,
                                    kind.name(),
                                    o.sent,
                                    o.delivered,
                                    o.lost,
                                    o.duplicated,
                                    o.acked_lost,
                                    o.refused,
                                    o.generator_cpu,
                                    o.broker_cpu
                                );
                                slot.runs.push(o);
                            }
                            Err(e) => {
                                println!(
                                    "round {} {:<44} {:<9} failed: {e:#}",
                                    round + 1,
                                    scenario.label,
                                    kind.name()
                                );
                                slot.failed = Some(format!("{e:#}"));
                            }
                        }
                    }
                    None => {
                        let result = open_idle(&broker, &mut source_block, run_id);
                        match result {
                            Ok(o) => {
                                println!(
                                    "round {} {:<44} {:<9} {} connected ({} failed), {:.0} connects/s, handshake p50 {:.0} p99 {:.0} max {:.0} us, RSS {} -> {} KiB = {:.2} KiB/connection | cpu gen {:.2} broker {:.2}",
                                    round + 1,
                                    format!("idle {idle_count}"),
                                    kind.name(),
                                    o.connections,
                                    o.failed,
                                    o.connects_per_sec,
                                    o.handshake_p50_us,
                                    o.handshake_p99_us,
                                    o.handshake_max_us,
                                    o.rss_before_kib,
                                    o.rss_after_kib,
                                    o.rss_per_connection_kib,
                                    o.generator_cpu,
                                    o.broker_cpu
                                );
                                slot.idle.push(o);
                            }
                            Err(e) => {
                                println!(
                                    "round {} idle {:<39} {:<9} failed: {e:#}",
                                    round + 1,
                                    idle_count,
                                    kind.name()
                                );
                                slot.failed = Some(format!("{e:#}"));
                            }
                        }
                    }
                }
                drop(broker);
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    print_table(&scenarios, &kinds, &samples, idle_count);
    Ok(())
}

/// A table row: label, value per broker, what to print where a value is missing.
type Row = (String, Vec<Option<f64>>, Vec<String>);

fn print_table(
    scenarios: &[Scenario],
    kinds: &[Kind],
    samples: &[Vec<Samples>],
    idle_count: usize,
) {
    let wasp = kinds.iter().position(|&k| k == Kind::Wasp);
    let mut header = format!("| {:<46} |", "scenario (median)");
    for k in kinds {
        header.push_str(&format!(" {:>16} |", k.name()));
    }
    if wasp.is_some() {
        for k in kinds.iter().filter(|&&k| k != Kind::Wasp) {
            header.push_str(&format!(" Wasp/{} |", k.name()));
        }
    }
    println!();
    println!("{header}");
    println!("|{}", "---|".repeat(header.matches('|').count() - 1));
    let mut rows: Vec<Row> = Vec::new();
    for (si, scenario) in scenarios.iter().enumerate() {
        let cells = |f: &dyn Fn(&Samples) -> Option<f64>| -> Vec<Option<f64>> {
            samples[si].iter().map(f).collect()
        };
        let note = |s: &Samples| -> String {
            if let Some(n) = &s.not_applicable {
                format!("n/a ({n})")
            } else if let Some(f) = &s.failed {
                format!("failed ({})", f.chars().take(40).collect::<String>())
            } else {
                "n/a".to_owned()
            }
        };
        let notes: Vec<String> = samples[si].iter().map(note).collect();
        match &scenario.load {
            None => {
                rows.push((
                    format!("{idle_count} idle connections: connects/s"),
                    cells(&|s| {
                        median(
                            &s.idle
                                .iter()
                                .map(|o| o.connects_per_sec)
                                .collect::<Vec<_>>(),
                        )
                    }),
                    notes.clone(),
                ));
                rows.push((
                    format!("{idle_count} idle connections: KiB RSS per connection"),
                    cells(&|s| {
                        median(
                            &s.idle
                                .iter()
                                .map(|o| o.rss_per_connection_kib)
                                .collect::<Vec<_>>(),
                        )
                    }),
                    notes,
                ));
            }
            Some(load) if load.rate.is_some() => {
                rows.push((
                    format!("{} (p50)", scenario.label.replace(", p50 / p99 us", ", us")),
                    cells(&|s| median(&s.runs.iter().map(|o| o.p50_us).collect::<Vec<_>>())),
                    notes.clone(),
                ));
                rows.push((
                    format!("{} (p99)", scenario.label.replace(", p50 / p99 us", ", us")),
                    cells(&|s| median(&s.runs.iter().map(|o| o.p99_us).collect::<Vec<_>>())),
                    notes,
                ));
            }
            Some(_) => rows.push((
                scenario.label.clone(),
                cells(&|s| median(&s.runs.iter().map(|o| o.rate).collect::<Vec<_>>())),
                notes,
            )),
        }
    }
    for (label, values, notes) in rows {
        let mut line = format!("| {label:<46} |");
        for (v, n) in values.iter().zip(&notes) {
            let cell = match v {
                Some(v) if label.contains("KiB") => format!("{v:.2}"),
                Some(v) if label.contains(" us") => format!("{v:.0}"),
                Some(v) => fmt_rate(*v),
                None => n.clone(),
            };
            line.push_str(&format!(" {cell:>16} |"));
        }
        if let Some(w) = wasp {
            for (i, _) in kinds.iter().enumerate().filter(|(i, _)| *i != w) {
                let ratio = match (values[w], values[i]) {
                    (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                    _ => "n/a".to_owned(),
                };
                line.push_str(&format!(" {ratio:>13} |"));
            }
        }
        println!("{line}");
    }
    println!();
    println!("Correctness and CPU (totals over all rounds; cpu: medians, cores):");
    for (si, scenario) in scenarios.iter().enumerate() {
        for (bi, kind) in kinds.iter().enumerate() {
            let s = &samples[si][bi];
            if scenario.load.is_some() && !s.runs.is_empty() {
                let sum = |f: &dyn Fn(&Outcome) -> u64| -> u64 { s.runs.iter().map(f).sum() };
                println!(
                    "  {:<46} {:<9} sent {} delivered {} lost {} duplicated {} acked-but-lost {} refused {} | cpu gen {:.2} broker {:.2}",
                    scenario.label,
                    kind.name(),
                    sum(&|o| o.sent),
                    sum(&|o| o.delivered),
                    sum(&|o| o.lost),
                    sum(&|o| o.duplicated),
                    sum(&|o| o.acked_lost),
                    sum(&|o| o.refused),
                    median(&s.runs.iter().map(|o| o.generator_cpu).collect::<Vec<_>>())
                        .unwrap_or(0.0),
                    median(&s.runs.iter().map(|o| o.broker_cpu).collect::<Vec<_>>()).unwrap_or(0.0),
                );
            } else if !s.idle.is_empty() {
                println!(
                    "  {:<46} {:<9} connected {} (failed {}) | cpu gen {:.2} broker {:.2}",
                    format!("idle {idle_count}"),
                    kind.name(),
                    s.idle.iter().map(|o| o.connections).min().unwrap_or(0),
                    s.idle.iter().map(|o| o.failed).sum::<usize>(),
                    median(&s.idle.iter().map(|o| o.generator_cpu).collect::<Vec<_>>())
                        .unwrap_or(0.0),
                    median(&s.idle.iter().map(|o| o.broker_cpu).collect::<Vec<_>>()).unwrap_or(0.0),
                );
            }
        }
    }
}
