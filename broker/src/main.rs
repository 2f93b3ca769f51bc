//! The `wasp` binary: command line, configuration, logging, runtime and signals.
//!
//! Exit status: 0 after a graceful shutdown, 1 when the broker fails (e.g. a listener cannot bind), 2 for a
//! usage or configuration error (the message alone on stderr, no backtrace). The subcommands (`wasp
//! passwd`, `wasp plugin inspect`, in `cli/`) exit 0 on success, 1 on failure and 2 on a usage error.

mod cli;

use std::future::Future;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing_subscriber::EnvFilter;
use wasp::config::{Config, Listener, LogConfig, LogFormat, Scheduling};

#[global_allocator]
static ALLOCATOR: wasp::Allocator = wasp::Allocator;

/// Wasp: an MQTT 3.1 / 3.1.1 / 5.0 broker.
///
/// With no options it listens on 127.0.0.1:1883 with the defaults documented in examples/wasp.toml.
/// Set RUST_LOG (e.g. RUST_LOG=debug) to override the configured log level.
#[derive(Debug, Parser)]
#[command(
    name = "wasp",
    version,
    about,
    long_about,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Configuration file (TOML); see examples/wasp.toml for every key.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Add a plain TCP listener (repeatable). Without --config it replaces the default 127.0.0.1:1883.
    #[arg(short, long = "listen", value_name = "ADDR:PORT")]
    listen: Vec<SocketAddr>,

    #[command(subcommand)]
    command: Option<Command>,
}

/// Tools beside the broker; a bare `wasp` runs the broker.
#[derive(Debug, Subcommand)]
enum Command {
    Passwd(cli::passwd::Args),
    /// Work with plugin components.
    #[command(subcommand)]
    Plugin(PluginCommand),
}

/// `wasp plugin ...`.
#[derive(Debug, Subcommand)]
enum PluginCommand {
    Inspect(cli::inspect::Args),
}

/// Runs a subcommand; its report goes to stdout, errors to stderr.
fn run_command(command: Command) -> ExitCode {
    match command {
        Command::Passwd(args) => match cli::passwd::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("wasp passwd: {error}");
                ExitCode::from(error.exit_code())
            }
        },
        Command::Plugin(PluginCommand::Inspect(args)) => {
            let mut stdout = std::io::stdout().lock();
            match cli::inspect::run(&args, &mut stdout) {
                Ok(cli::inspect::Outcome::Accepted) => ExitCode::SUCCESS,
                Ok(cli::inspect::Outcome::Refused) => ExitCode::FAILURE,
                Err(error) => {
                    eprintln!("wasp plugin inspect: {error}");
                    ExitCode::from(error.exit_code())
                }
            }
        }
    }
}

/// Configuration and usage errors: exit status 2.
#[derive(Debug)]
struct UsageError(String);

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(command) = cli.command {
        return run_command(command);
    }
    let config = match load_config(cli.config.as_deref(), &cli.listen) {
        Ok(config) => config,
        Err(UsageError(message)) => {
            eprintln!("wasp: {message}");
            return ExitCode::from(2);
        }
    };
    if let Err(UsageError(message)) = init_logging(&config.log) {
        eprintln!("wasp: {message}");
        return ExitCode::from(2);
    }
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Not through tracing: a `log.level = "off"` must not hide why the broker stopped.
            eprintln!("wasp: error: {}", render(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, `a: b: c`, skipping a cause whose text its parent's message
/// already ends with (errors that both print and return their source).
fn render(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.ends_with(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

/// The configuration: the file (or the defaults), plus the `--listen` listeners.
fn load_config(
    path: Option<&std::path::Path>,
    listen: &[SocketAddr],
) -> Result<Config, UsageError> {
    let mut config = match path {
        Some(path) => Config::load(path).map_err(|e| UsageError(e.to_string()))?,
        None => Config::default(),
    };
    if path.is_none() && !listen.is_empty() {
        config.listeners.clear();
    }
    let mut n = 0;
    for &bind in listen {
        if bind.port() != 0
            && let Some(other) = config.listeners.iter().find(|l| l.bind == bind)
        {
            return Err(UsageError(format!(
                "--listen {bind}: listener `{}` already uses this address",
                other.name
            )));
        }
        // "cli-1", "cli-2"...: skip names the file already uses.
        let name = loop {
            n += 1;
            let name = format!("cli-{n}");
            if !config.listeners.iter().any(|l| l.name == name) {
                break name;
            }
        };
        config.listeners.push(Listener {
            name,
            bind,
            ..Listener::default()
        });
    }
    Ok(config)
}

/// Logs to stderr, filtered by `RUST_LOG` when set, else by the configuration's `log.level`.
fn init_logging(log: &LogConfig) -> Result<(), UsageError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => {
            EnvFilter::builder().parse(&directives).map_err(|e| {
                UsageError(format!(
                    "RUST_LOG={directives:?} is not a valid filter: {e}"
                ))
            })?
        }
        _ => EnvFilter::builder().parse(&log.level).map_err(|e| {
            UsageError(format!(
                "log.level = {:?} is not a valid filter: {e}",
                log.level
            ))
        })?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Compact => builder.compact().try_init(),
    };
    installed.map_err(|e| UsageError(format!("cannot install the logger: {e}")))
}

/// The most descriptors [`pregrow_fd_table`] makes room for: the table costs 8 bytes of kernel memory per
/// descriptor (not counted in the process's RSS), so 8 MiB at most.
const MAX_PREGROWN_FDS: u64 = 1 << 20;

/// Grows the process's file-descriptor table, while the process still has one thread, to what the broker
/// may use: `limits.max_connections` plus room for listeners, plugins and storage, within the soft
/// RLIMIT_NOFILE. Linux grows the table by doubling as descriptors are opened, and in a process with more
/// than one thread every growth waits for an RCU grace period (`expand_fdtable` calls `synchronize_rcu`).
/// Measured here: `accept4` returning descriptor 256, 512, 1024, 2048 and 4096 took 5 to 14 ms each,
/// and the worker blocked in it stopped serving its clients meanwhile (a burst of new connections saw
/// 10-20 ms stalls; bench/README.md). A single-threaded broker never pays it. Done by duplicating a
/// descriptor to the highest number needed and closing the copy; a failure only costs those stalls.
fn pregrow_fd_table(max_connections: usize) {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(MAX_PREGROWN_FDS);
    let wanted = (max_connections as u64)
        .saturating_add(1024)
        .min(soft)
        .min(MAX_PREGROWN_FDS);
    let grown = std::fs::File::open("/dev/null").and_then(|null| {
        let top = i32::try_from(wanted.saturating_sub(1)).unwrap_or(i32::MAX);
        Ok(rustix::io::fcntl_dupfd_cloexec(&null, top)?)
    });
    match grown {
        Ok(copy) => drop(copy),
        Err(e) => tracing::debug!(error = %e, wanted, "could not grow the descriptor table ahead"),
    }
}

/// Gives the calling thread the configured scheduling policy (`runtime.scheduling`). Called on the main
/// thread before the runtime exists: every thread started afterwards (the runtime's workers and blocking
/// threads, the plugin host's epoch thread) inherits it. A failure is logged and the broker runs on.
#[cfg(target_os = "linux")]
fn apply_scheduling(scheduling: Scheduling) {
    let policy = match scheduling {
        Scheduling::Batch => uapi::c::SCHED_BATCH,
        Scheduling::Normal => uapi::c::SCHED_OTHER,
    };
    // Both policies take static priority 0; the nice value is left as it is.
    let param = uapi::c::sched_param { sched_priority: 0 };
    match uapi::sched_setscheduler(0, policy, &param) {
        Ok(_) => tracing::debug!(?scheduling, "scheduling policy set"),
        Err(e) => tracing::warn!(
            ?scheduling,
            error = %e,
            "cannot set runtime.scheduling; the threads keep the policy they inherited"
        ),
    }
}

#[cfg(not(target_os = "linux"))]
fn apply_scheduling(_: Scheduling) {}

fn run(config: Config) -> anyhow::Result<()> {
    // Before the runtime starts its threads, which inherit both.
    apply_scheduling(config.scheduling);
    pregrow_fd_table(config.limits.max_connections);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = config.worker_threads {
        builder.worker_threads(workers.get());
    }
    let runtime = builder
        .enable_all()
        .thread_name("wasp-worker")
        .build()
        .context("cannot start the tokio runtime")?;
    tracing::info!(workers = runtime.metrics().num_workers(), "runtime started");
    runtime.block_on(async {
        // Before binding: a signal arriving while we bind must already be caught.
        let shutdown = shutdown_signal().context("cannot install the SIGINT/SIGTERM handlers")?;
        let server = wasp::server::Server::bind(config).await?;
        for (name, addr) in server.local_addrs() {
            tracing::info!(listener = %name, %addr, "listening");
        }
        server.run(shutdown).await?;
        tracing::info!("shut down");
        Ok(())
    })
}

/// A future that completes on the first SIGINT or SIGTERM, logging which. A second signal during the
/// graceful shutdown exits at once (status 130 for SIGINT, 143 for SIGTERM).
///
/// Must be called inside the tokio runtime; fails only if the handlers cannot be installed.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        let name = next_signal(&mut interrupt, &mut terminate).await;
        tracing::info!(
            signal = name,
            "shutting down gracefully (send the signal again to exit at once)"
        );
        tokio::spawn(async move {
            let name = next_signal(&mut interrupt, &mut terminate).await;
            tracing::warn!(
                signal = name,
                "second signal: exiting without finishing the shutdown"
            );
            std::process::exit(if name == "SIGINT" { 130 } else { 143 });
        });
    })
}

/// Waits for the next SIGINT or SIGTERM and names it.
async fn next_signal(interrupt: &mut Signal, terminate: &mut Signal) -> &'static str {
    tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use wasp::config::ListenerKind;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// The size of this process's descriptor table, as the kernel reports it.
    fn fd_table_size() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("FDSize:")).unwrap();
        line["FDSize:".len()..].trim().parse().unwrap()
    }

    #[test]
    fn the_descriptor_table_is_grown_ahead() {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        let expected = 6_024.min(soft);
        pregrow_fd_table(5_000);
        let size = fd_table_size();
        assert!(
            size >= expected,
            "FDSize {size}, expected at least {expected}"
        );
        // The high copy is closed again: the next descriptor opened is a low one.
        let next = std::fs::File::open("/dev/null").unwrap();
        assert!(std::os::fd::AsRawFd::as_raw_fd(&next) < 1_000);
    }

    #[test]
    fn cli_definition_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn cli_parses_options() {
        let cli = Cli::try_parse_from([
            "wasp",
            "--config",
            "a.toml",
            "--listen",
            "127.0.0.1:1999",
            "-l",
            "[::1]:2000",
        ])
        .unwrap();
        assert_eq!(cli.config, Some(PathBuf::from("a.toml")));
        assert_eq!(cli.listen, vec![addr("127.0.0.1:1999"), addr("[::1]:2000")]);
        assert!(Cli::try_parse_from(["wasp", "--listen", "localhost"]).is_err());
        assert!(Cli::try_parse_from(["wasp", "serve"]).is_err());
    }

    #[test]
    fn no_arguments_is_the_default_config() {
        assert_eq!(load_config(None, &[]).unwrap(), Config::default());
    }

    #[test]
    fn listen_without_config_replaces_the_default_listener() {
        let config = load_config(None, &[addr("127.0.0.1:1999"), addr("127.0.0.1:2000")]).unwrap();
        let listeners: Vec<_> = config
            .listeners
            .iter()
            .map(|l| (l.name.as_str(), l.bind, l.kind.clone()))
            .collect();
        assert_eq!(
            listeners,
            [
                ("cli-1", addr("127.0.0.1:1999"), ListenerKind::Tcp),
                ("cli-2", addr("127.0.0.1:2000"), ListenerKind::Tcp),
            ]
        );
        assert_eq!(config.limits, Config::default().limits);
    }

    #[test]
    fn listen_with_config_adds_listeners() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wasp.toml");
        std::fs::write(
            &path,
            "[[listeners]]\nname = \"cli-1\"\nbind = \"127.0.0.1:1883\"\n[limits]\nmax_inflight = 3\n",
        )
        .unwrap();

        let config = load_config(Some(&path), &[addr("127.0.0.1:1999")]).unwrap();
        let names: Vec<_> = config.listeners.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            ["cli-1", "cli-2"],
            "the file's name is kept, the CLI's skips it"
        );
        assert_eq!(config.listeners[1].bind, addr("127.0.0.1:1999"));
        assert_eq!(config.limits.max_inflight, 3);

        let UsageError(message) = load_config(Some(&path), &[addr("127.0.0.1:1883")]).unwrap_err();
        assert!(message.contains("--listen 127.0.0.1:1883"), "{message}");
        assert!(message.contains("`cli-1`"), "{message}");

        std::fs::write(&path, "[limits]\nmax_inflight = 0\n").unwrap();
        let UsageError(message) = load_config(Some(&path), &[]).unwrap_err();
        assert!(
            message.contains("wasp.toml:2: limits.max_inflight = 0"),
            "{message}"
        );
    }

    #[test]
    fn render_joins_causes_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot listen on 127.0.0.1:1: {source}")]
        struct PrintsAndReturnsSource {
            source: std::io::Error,
        }
        let io = || std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        let error = anyhow::Error::new(PrintsAndReturnsSource { source: io() }).context("starting");
        assert_eq!(
            render(&error),
            "starting: cannot listen on 127.0.0.1:1: address in use"
        );
        let error = anyhow::Error::new(io())
            .context("binding")
            .context("starting");
        assert_eq!(render(&error), "starting: binding: address in use");
    }

    #[test]
    fn duplicate_listen_addresses_are_rejected_but_port_zero_may_repeat() {
        let UsageError(message) =
            load_config(None, &[addr("127.0.0.1:1999"), addr("127.0.0.1:1999")]).unwrap_err();
        assert!(message.contains("`cli-1`"), "{message}");
        let config = load_config(None, &[addr("127.0.0.1:0"), addr("127.0.0.1:0")]).unwrap();
        assert_eq!(config.listeners.len(), 2);
    }
}
