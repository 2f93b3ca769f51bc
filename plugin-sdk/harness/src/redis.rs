//! A real Redis server on loopback for tests of plugins that talk to Redis over granted sockets (the
//! storage-redis backend): [`RedisServer::start`] runs Debian's `redis-server` (which `tests/setup`
//! installs) on a free port of 127.0.0.1, in its own temporary directory, with the append-only file
//! synced on every write; [`RedisServer::kill`] and [`RedisServer::restart`] stop it hard and bring it back
//! on the same port and data, for crash and outage tests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a starting server may take to answer `PING` (it replays its append-only file first).
const READY_LIMIT: Duration = Duration::from_secs(20);

/// A `redis-server` process, killed (SIGKILL) when dropped; its data directory is removed with it.
pub struct RedisServer {
    child: Option<Child>,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server on a free loopback port with `appendonly yes` and `appendfsync always` (every
    /// acknowledged write is on disk), no RDB snapshots, and `DEBUG` allowed from loopback (for
    /// `DEBUG SLEEP`, a slow server on demand). Fails with the fix when `redis-server` is not installed.
    pub fn start() -> std::io::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut server = Self {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir: tempfile::tempdir()?,
        };
        server.restart()?;
        Ok(server)
    }

    /// The server's address (for the plugin's `sockets` grant and its `address`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's data directory (its append-only file is under `appendonlydir/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server with SIGKILL, as a crash would: what was not synced is lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again (after [`kill`](Self::kill); a running one is killed first) on the same
    /// port and data directory, and waits until it has loaded its data and answers `PING`.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.kill();
        let binary = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("redis-server");
        let child = Command::new(binary)
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.addr.port().to_string(),
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .args(["--enable-debug-command", "local", "--daemonize", "no"])
            .args(["--logfile", "redis.log"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "cannot run {binary}: {e} (install it with tests/setup, or \
                         `apt-get install redis-server`)"
                    ),
                )
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            match self.command(&["PING"]) {
                Ok(reply) if reply == "+PONG" => return Ok(()),
                _ if Instant::now() > deadline => {
                    let log = std::fs::read_to_string(self.dir.path().join("redis.log"))
                        .unwrap_or_default();
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("redis-server on {} did not answer PING:\n{log}", self.addr),
                    ));
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Makes the server answer nothing for `duration` (`DEBUG SLEEP`, as a server stalled on its disk),
    /// returning once the server has started sleeping.
    pub fn pause(&self, duration: Duration) {
        let addr = self.addr;
        let seconds = format!("{:.3}", duration.as_secs_f64());
        let (started, sleeping) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut stream = TcpStream::connect(addr).expect("connect to redis-server");
            stream
                .write_all(format!("DEBUG SLEEP {seconds}\r\n").as_bytes())
                .expect("send DEBUG SLEEP");
            let _ = started.send(());
            // The reply comes when the pause ends.
            let _ = stream.read(&mut [0u8; 64]);
        });
        let _ = sleeping.recv();
        // The command is sent; give the server a moment to read it before anything else arrives.
        std::thread::sleep(Duration::from_millis(50));
    }

    /// Sends one command (arguments without spaces, e.g. `["DEBUG", "SLEEP", "0.3"]`) on a new
    /// connection and returns the first line of the reply, e.g. `+OK` or `:3`. Blocks until it comes.
    pub fn command(&self, args: &[&str]) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(self.addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.write_all(format!("{}\r\n", args.join(" ")).as_bytes())?;
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while !reply.ends_with(b"\r\n") {
            if stream.read(&mut byte)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            reply.push(byte[0]);
        }
        reply.truncate(reply.len() - 2);
        Ok(String::from_utf8_lossy(&reply).into_owned())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
