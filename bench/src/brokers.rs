//! Starting the three brokers as child processes on loopback, each with a configuration written to a
//! temporary directory, and killing them again (also on panic: [`Running`] kills its child on drop).

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Which broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Wasp,
    Mosquitto,
    Rumqttd,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Wasp => "Wasp",
            Kind::Mosquitto => "Mosquitto",
            Kind::Rumqttd => "rumqttd",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "wasp" => Some(Kind::Wasp),
            "mosquitto" => Some(Kind::Mosquitto),
            "rumqttd" => Some(Kind::Rumqttd),
            _ => None,
        }
    }
}

/// Where the executables are and how to configure them.
pub struct Setup {
    pub wasp: PathBuf,
    pub mosquitto: PathBuf,
    pub rumqttd: PathBuf,
    /// Mosquitto's `max_queued_messages` (its default, 1000, when `None`).
    pub mosquitto_max_queued: Option<u32>,
    pub dir: tempfile::TempDir,
}

/// A running broker: killed and reaped on drop.
pub struct Running {
    child: Child,
    /// The MQTT 3.1.1 listener.
    pub v4: SocketAddr,
    /// The MQTT 5.0 listener (the same as `v4` except for rumqttd, which needs one per version).
    pub v5: SocketAddr,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Still alive (not exited)?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

impl Setup {
    /// Starts `kind` listening on `port` (and `port + 1` for rumqttd's 5.0 listener); returns once it
    /// accepts connections (at most 10 s).
    pub fn start(&self, kind: Kind, port: u16) -> Result<Running> {
        let dir = self.dir.path();
        let v4 = SocketAddr::from(([127, 0, 0, 1], port));
        let mut v5 = v4;
        let log = std::fs::File::create(dir.join(format!("{}.log", kind.name())))?;
        let mut command = match kind {
            Kind::Wasp => {
                let config = dir.join("wasp.toml");
                write(
                    &config,
                    &format!(
                        "allow_anonymous = true\n\n[[listeners]]\nname = \"bench\"\nbind = \"{v4}\"\n\
                         protocol = \"tcp\"\n\n[log]\nlevel = \"warn\"\n"
                    ),
                )?;
                let mut c = Command::new(&self.wasp);
                c.arg("--config").arg(config);
                c
            }
            Kind::Mosquitto => {
                let config = dir.join("mosquitto.conf");
                let mut text = format!(
                    "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n"
                );
                if let Some(n) = self.mosquitto_max_queued {
                    text.push_str(&format!("max_queued_messages {n}\n"));
                }
                write(&config, &text)?;
                let mut c = Command::new(&self.mosquitto);
                c.arg("-c").arg(config);
                c
            }
            Kind::Rumqttd => {
                v5 = SocketAddr::from(([127, 0, 0, 1], port + 1));
                let config = dir.join("rumqttd.toml");
                let connections = "connection_timeout_ms = 60000\nmax_payload_size = 16777216\n\
                                   max_inflight_count = 100\ndynamic_filters = true\n";
                write(
                    &config,
                    &format!(
                        "id = 0\n\n[router]\nid = 0\nmax_connections = 60010\nmax_outgoing_packet_count = 200\n\
                         max_segment_size = 104857600\nmax_segment_count = 10\n\n\
                         [v4.1]\nname = \"v4-1\"\nlisten = \"{v4}\"\nnext_connection_delay_ms = 0\n\
                         [v4.1.connections]\n{connections}\n\
                         [v5.1]\nname = \"v5-1\"\nlisten = \"{v5}\"\nnext_connection_delay_ms = 0\n\
                         [v5.1.connections]\n{connections}"
                    ),
                )?;
                let mut c = Command::new(&self.rumqttd);
                c.arg("--config").arg(config);
                c
            }
        };
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", kind.name()))?;
        let mut running = Running { child, v4, v5 };
        let started = Instant::now();
        for addr in [v4, v5] {
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                if !running.alive() {
                    bail!(
                        "{} exited at start-up (see {})",
                        kind.name(),
                        dir.join(format!("{}.log", kind.name())).display()
                    );
                }
                if started.elapsed() > Duration::from_secs(10) {
                    bail!("{} not listening on {addr} after 10 s", kind.name());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Let the probe connections' close be processed before measuring anything.
        std::thread::sleep(Duration::from_millis(200));
        Ok(running)
    }
}

/// CPU time (user + system) of `/proc/<which>/stat` (`self` or a pid), in seconds.
pub fn cpu_seconds(which: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{which}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the command: field 3 (state) is index 0, so utime (14) and stime (15) are 11 and 12.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // USER_HZ: 100 on Linux everywhere in practice.
    ticks as f64 / 100.0
}

/// `VmRSS` of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
