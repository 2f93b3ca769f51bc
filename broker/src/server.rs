//! Listeners, the accept loop and graceful shutdown.
//!
//! [`Server::bind`] opens every configured listener (so a bad address fails start-up, naming the listener);
//! [`Server::run`] accepts connections, spawning one task per socket, until the shutdown future completes,
//! then tells every connection to close (5.0 clients receive DISCONNECT 0x8B) and waits for them briefly.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use wasp_plugin_host::{Chain, HostConfig, HostError, HostServices, Plugin, PluginHost};

use crate::broker::{Broker, Restored};
use crate::config::Config;
use crate::store::{Store, StoreError};
use crate::transport::{TlsAcceptor, Transport, TransportError};

/// How long shutdown waits for connections to say goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Errors of the server layer.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not be bound.
    #[error("listener `{name}`: cannot listen on {addr}")]
    Bind {
        /// The listener's name from the configuration.
        name: String,
        /// The address it was to bind.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A plugin could not be loaded, or its `init` refused its configuration.
    #[error(transparent)]
    Plugin(#[from] HostError),
    /// A listener's TLS files are missing or unusable.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The storage plugin is not one, or what it holds could not be read at start-up.
    #[error(transparent)]
    Storage(#[from] StoreError),
    /// The metrics endpoint could not be bound.
    #[error("metrics.bind: cannot listen on {addr}")]
    MetricsBind {
        /// The configured address.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// What a listener's connections share: its name, transport, plugin chain and defaults.
pub(crate) struct ListenerCtx {
    pub(crate) name: Arc<str>,
    pub(crate) transport: Transport,
    /// The plugins that name this listener (or name none), in file order.
    pub(crate) chain: Chain,
    /// The listener's `allow_anonymous`, else the top-level one.
    pub(crate) allow_anonymous: bool,
}

/// A broker with its listeners bound, not yet accepting.
pub struct Server {
    broker: Arc<Broker>,
    /// Each listener's socket and what its connections share.
    listeners: Vec<(TcpListener, Arc<ListenerCtx>)>,
    /// The plugins that export `ticker`, called periodically while the server runs.
    tickers: Vec<Plugin>,
    /// The Prometheus endpoint's socket (`metrics.bind`) and every plugin, whose statistics it serves.
    metrics: Option<(TcpListener, Vec<Plugin>)>,
    /// The storage writer and what it read back at start-up, when `[storage]` is configured.
    storage: Option<(Arc<Store>, Restored)>,
    /// Keeps the plugins' engine (and its epoch ticker) alive; `None` without plugins.
    _plugin_host: Option<PluginHost>,
}

impl Server {
    /// Loads the plugins (refusing to start if one fails or rejects its configuration) and binds every
    /// listener of `config`.
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let (plugin_host, plugins) = load_plugins(&config).await?;
        let mut listeners = Vec::with_capacity(config.listeners.len());
        for listener in &config.listeners {
            let transport = Transport::new(
                &listener.name,
                &listener.kind,
                listener.tls.as_ref(),
                config.limits.max_packet_size,
            )?;
            let socket = bind_mqtt(listener.bind).map_err(|source| ServerError::Bind {
                name: listener.name.clone(),
                addr: listener.bind,
                source,
            })?;
            let chain = Chain::new(
                plugins
                    .iter()
                    .filter(|(names, _)| names.is_empty() || names.contains(&listener.name))
                    .map(|(_, plugin)| plugin.clone())
                    .collect(),
            );
            let ctx = ListenerCtx {
                name: Arc::from(listener.name.as_str()),
                transport,
                chain,
                allow_anonymous: listener.allow_anonymous.unwrap_or(config.allow_anonymous),
            };
            listeners.push((socket, Arc::new(ctx)));
        }
        let metrics = match config.metrics_bind {
            None => None,
            Some(addr) => {
                let socket = TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServerError::MetricsBind { addr, source })?;
                let all = plugins.iter().map(|(_, plugin)| plugin.clone()).collect();
                Some((socket, all))
            }
        };
        let tickers = plugins
            .iter()
            .map(|(_, plugin)| plugin)
            .filter(|plugin| plugin.exports().ticker)
            .cloned()
            .collect();
        let storage = match &config.storage {
            None => None,
            Some(settings) => {
                let plugin = plugins
                    .iter()
                    .map(|(_, plugin)| plugin)
                    .find(|plugin| plugin.name() == settings.plugin)
                    .expect("config validation checks that storage.plugin names a plugin");
                if !plugin.exports().storage {
                    return Err(StoreError::Backend {
                        plugin: settings.plugin.clone(),
                        message: format!(
                            "{} does not export wasp:plugin/storage: storage.plugin must name a                              storage backend such as storage-redb",
                            plugin.wasm_path().display()
                        ),
                    }
                    .into());
                }
                let store = Arc::new(Store::new(Box::new(plugin.clone()), settings.batch_delay));
                let records = store.load().await?;
                Some((store, records))
            }
        };
        let mut broker = Broker::new(config);
        let storage = match storage {
            None => None,
            Some((store, records)) => {
                broker = broker.with_store(store.clone());
                let restored = broker.restore(records);
                let (retained, sessions, messages) = restored.counts;
                info!(retained, sessions, messages, "restored from storage");
                Some((store, restored))
            }
        };
        Ok(Server {
            broker: Arc::new(broker),
            listeners,
            tickers,
            metrics,
            storage,
            _plugin_host: plugin_host,
        })
    }

    /// The bound address of every listener, by name (useful with port 0).
    pub fn local_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.listeners
            .iter()
            .filter_map(|(l, ctx)| l.local_addr().ok().map(|addr| (ctx.name.to_string(), addr)))
            .collect()
    }

    /// The bound address of the metrics endpoint, if configured (useful with port 0).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
            .as_ref()
            .and_then(|(socket, _)| socket.local_addr().ok())
    }

    /// The shared broker state (counters, sessions), for tests and embedding.
    pub fn broker(&self) -> Arc<Broker> {
        self.broker.clone()
    }

    /// Accepts connections until `shutdown` completes, then closes them all.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        // The storage writer stops after the connections, whose last changes it writes.
        let (store_stop_tx, store_stop_rx) = watch::channel(false);
        let writer = self.storage.map(|(store, restored)| {
            for (slot, session, epoch, left) in restored.sessions {
                if left != u32::MAX {
                    crate::connection::schedule_expiry(
                        self.broker.clone(),
                        slot,
                        session.client_id.clone(),
                        session,
                        epoch,
                        left,
                    );
                }
            }
            for (client_id, will) in restored.wills {
                info!(%client_id, "publishing the will of a connection the broker did not close");
                crate::connection::publish_will(&self.broker, &client_id, will);
            }
            tokio::spawn(store.run(store_stop_rx))
        });
        let tls: Vec<_> = self
            .listeners
            .iter()
            .filter_map(|(_, ctx)| ctx.transport.tls().cloned())
            .collect();
        if !tls.is_empty() {
            tasks.spawn(tls_reload_loop(tls, stop_rx.clone()));
        }
        for (listener, ctx) in self.listeners {
            tasks.spawn(accept_loop(
                self.broker.clone(),
                listener,
                ctx,
                stop_rx.clone(),
            ));
        }
        if let Some((socket, plugins)) = self.metrics {
            tasks.spawn(crate::metrics::serve(
                socket,
                self.broker.clone(),
                plugins,
                stop_rx.clone(),
            ));
        }
        for plugin in self.tickers {
            tasks.spawn(tick_loop(plugin, stop_rx.clone()));
        }
        tasks.spawn(crate::sys::run(
            self.broker.clone(),
            self.broker.config.sys_interval,
            stop_rx.clone(),
        ));
        shutdown.await;
        info!("shutting down");
        let _ = stop_tx.send(true);
        self.broker.shut_down_connections();
        if tokio::time::timeout(SHUTDOWN_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            warn!("some connections did not close within {SHUTDOWN_GRACE:?}");
        }
        if let Some(writer) = writer {
            let _ = store_stop_tx.send(true);
            if tokio::time::timeout(SHUTDOWN_GRACE, writer).await.is_err() {
                warn!("the last storage write did not finish within {SHUTDOWN_GRACE:?}");
            }
        }
        Ok(())
    }
}

/// The listen backlog of the MQTT listeners: how many connections the kernel completes and queues before
/// the broker accepts them. tokio's `TcpListener::bind` gives 128 (Mosquitto uses 100): after an outage
/// thousands of devices reconnect at once, and beyond the backlog the kernel drops their SYNs, which they
/// send again only after 1 s, then 3 s (bench/README.md, "Listen backlog": with 128 handshakes in flight
/// Mosquitto fell from ~57 k to ~9.7 k connects/s, and Wasp did with 256). Linux caps it at
/// `net.core.somaxconn` (4096 by default since 5.4).
const LISTEN_BACKLOG: u32 = 1024;

/// A listening socket for an MQTT listener on `addr`, with [`LISTEN_BACKLOG`].
fn bind_mqtt(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted broker binds while its old connections are in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Accepts sockets on one listener, one task each; on shutdown waits for its connections to end.
async fn accept_loop(
    broker: Arc<Broker>,
    listener: TcpListener,
    ctx: Arc<ListenerCtx>,
    mut stop: watch::Receiver<bool>,
) {
    let name = &ctx.name;
    // A tracker rather than a `JoinSet`: it only counts its tasks, where a `JoinSet` keeps an entry per
    // connection (part of every idle connection's memory) and has to be polled to reap ended ones.
    let connections = TaskTracker::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // limits.max_connections_per_sec: closed before anything is read (and counted).
                    if !broker.admit_connection() {
                        debug!(%peer, "socket refused: connection rate limit");
                        continue;
                    }
                    let open = broker.stats.sockets_open.fetch_add(1, Ordering::Relaxed) + 1;
                    // Sockets beyond the limit (with some room for ones still in their handshake) are closed
                    // at once; the CONNECT-time check answers the rest with CONNACK "server busy".
                    if open > broker.config.limits.max_connections.saturating_add(64) {
                        broker.stats.sockets_open.fetch_sub(1, Ordering::Relaxed);
                        broker.stats.refused_max_connections.fetch_add(1, Ordering::Relaxed);
                        debug!(%peer, "socket refused: connection limit");
                        continue;
                    }
                    // Counted here, uncounted by the task when it ends.
                    connections.spawn(crate::connection::serve(
                        broker.clone(),
                        stream,
                        peer,
                        ctx.clone(),
                    ));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(listener = %name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    connections.close();
    connections.wait().await;
}

/// Reloads TLS certificates: all of them on SIGHUP, and each listener's when its files change (checked
/// at its `reload_check_secs`). Connections already established keep the configuration they started with.
async fn tls_reload_loop(acceptors: Vec<Arc<TlsAcceptor>>, mut stop: watch::Receiver<bool>) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGHUP: TLS files are reloaded on change only");
            None
        }
    };
    let check = acceptors.iter().filter_map(|a| a.reload_check()).min();
    let mut ticker = check.map(|every| {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker
    });
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            Some(()) = async { hangup.as_mut()?.recv().await } => {
                info!("SIGHUP: reloading TLS certificates");
                for acceptor in &acceptors {
                    acceptor.reload(true);
                }
            }
            _ = async { ticker.as_mut().expect("guarded").tick().await }, if ticker.is_some() => {
                for acceptor in acceptors.iter().filter(|a| a.reload_check().is_some()) {
                    acceptor.reload(false);
                }
            }
        }
    }
}

/// How long after a failed `tick` (trap, deadline, out of memory) the broker calls it again.
const TICK_RETRY: Duration = Duration::from_secs(30);

/// Calls a plugin's `tick` right away, then after the delay each call returns, until it returns 0 or
/// the server stops. One task per plugin, so ticks of one plugin never overlap.
async fn tick_loop(plugin: Plugin, mut stop: watch::Receiver<bool>) {
    loop {
        let delay = match plugin.tick().await {
            Ok(0) => {
                debug!(plugin = plugin.name(), "plugin asked for no more ticks");
                return;
            }
            Ok(seconds) => Duration::from_secs(u64::from(seconds)),
            Err(e) => {
                warn!(plugin = plugin.name(), error = %e, retry_in = ?TICK_RETRY, "plugin tick failed");
                TICK_RETRY
            }
        };
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// A loaded plugin and the listeners it serves (empty: all).
type LoadedPlugin = (Vec<String>, Plugin);

/// Loads every configured plugin, in order. The host is sized from the plugins' own limits.
async fn load_plugins(
    config: &Config,
) -> Result<(Option<PluginHost>, Vec<LoadedPlugin>), ServerError> {
    if config.plugins.is_empty() {
        return Ok((None, Vec::new()));
    }
    let host_config = HostConfig {
        cache_dir: config.plugin_cache_dir.clone(),
        max_memory_bytes: config
            .plugins
            .iter()
            .map(|p| p.spec.limits.memory_bytes)
            .max()
            .unwrap_or(0),
        total_instances: config
            .plugins
            .iter()
            .map(|p| p.spec.limits.max_instances)
            .sum(),
    };
    let host = PluginHost::new(host_config)?;
    let mut plugins = Vec::with_capacity(config.plugins.len());
    for plugin in &config.plugins {
        let loaded = host
            .load(plugin.spec.clone(), HostServices::default())
            .await?;
        info!(
            plugin = loaded.name(),
            path = %plugin.spec.wasm.display(),
            from_cache = loaded.loaded_from_cache(),
            interests = ?loaded.interests(),
            "plugin loaded"
        );
        plugins.push((plugin.listeners.clone(), loaded));
    }
    Ok((Some(host), plugins))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel reports a listening socket's backlog as its send queue (`ss -l`'s `Send-Q`).
    #[tokio::test]
    async fn mqtt_listeners_listen_with_the_larger_backlog() {
        let listener = bind_mqtt("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = listener.local_addr().unwrap().port();
        let out = std::process::Command::new("ss")
            .args(["-ltnH", &format!("sport = :{port}")])
            .output()
            .expect("ss (iproute2) runs; tests/setup installs it");
        let text = String::from_utf8_lossy(&out.stdout);
        let fields: Vec<&str> = text.split_whitespace().collect();
        // State, Recv-Q, Send-Q (the backlog), local address, peer address.
        assert_eq!(fields.len(), 5, "{text:?}");
        let backlog: u32 = fields[2].parse().unwrap();
        let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(backlog, LISTEN_BACKLOG.min(somaxconn), "{text:?}");
    }
}
