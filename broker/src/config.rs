//! Broker configuration: the TOML file format and the validated domain types.
//!
//! Two layers: the file-shaped structs (private, `deny_unknown_fields`, every value that is checked
//! semantically wrapped in [`toml::Spanned`] so errors can point at its line) are validated into the
//! domain types ([`Config`], [`Listener`], [`Limits`], [`LogConfig`], [`Scheduling`]) the broker uses.
//!
//! # File format
//!
//! Every key is optional; an empty file is [`Config::default()`]. `examples/wasp.toml` documents every
//! key set to its default. Values measured in seconds are integers with a `_secs` suffix.
//!
//! ```toml
//! allow_anonymous = true             # accept clients without a user name
//!
//! [[listeners]]                      # repeatable; omit every [[listeners]] for the default listener
//! name = "default"                   # required, unique, non-empty
//! bind = "127.0.0.1:1883"            # required, IP:PORT (no host names); port 0 picks a free port
//! protocol = "tcp"                   # optional; "tcp" or "ws" (MQTT over WebSocket)
//! path = "/mqtt"                     # "ws" only: the upgrade request's path
//! allow_anonymous = false            # optional; overrides the top-level value for this listener
//! tls = { cert_file = "server.pem", key_file = "server.key" }  # optional: TLS (mqtts / wss)
//! # tls also takes client_ca_file, require_client_cert = false, username_from_cert = "cn" | "san",
//! # min_version = "1.2" | "1.3", reload_check_secs = 10 (0: on SIGHUP only)
//! max_connections = 0                # clients at once on this listener; 0 = only limits.max_connections
//!
//! [limits]
//! max_connections = 100000           # >= 1
//! max_packet_size = 1048576          # bytes, 2..=268435460
//! receive_maximum = 1024             # 1..=65535
//! max_inflight = 1024                # 1..=65535
//! max_queued_messages = 10000        # >= 1
//! max_keep_alive_secs = 65535        # 1..=65535
//! connect_timeout_secs = 10          # 1..=3600
//! topic_alias_maximum = 64           # 0..=65535, 0 disables topic aliases
//! max_session_expiry_secs = 4294967295  # 0..=4294967295
//! maximum_qos = 2                    # 0, 1 or 2
//! max_connections_per_sec = 0        # all listeners together; 0 = unlimited
//! max_topic_length = 65535           # bytes, 1..=65535 (PUBLISH and Will topics, SUBSCRIBE filters)
//! max_topic_levels = 128             # 1..=65535
//! max_subscriptions_per_client = 10000  # 0 = unlimited
//! max_publish_rate = 0               # PUBLISH packets per second and connection; 0 = unlimited
//! max_publish_bytes_per_sec = 0      # topic + payload bytes per second and connection; 0 = unlimited
//! max_queued_bytes = 1073741824      # topic + payload bytes in all session queues; 0 = no ceiling
//!
//! [sys]
//! interval_secs = 10                 # 0..=86400, 0 turns $SYS topics off
//!
//! [log]
//! level = "info"                     # an EnvFilter directive; RUST_LOG overrides it
//! format = "text"                    # "text" or "compact"
//!
//! [metrics]
//! bind = "127.0.0.1:9464"            # Prometheus endpoint GET /metrics; off without this key
//!
//! [runtime]
//! scheduling = "batch"               # "batch" or "normal": the Linux scheduling policy of the threads
//! worker_threads = 2                 # threads serving connections; default one per CPU
//!
//! [plugin_host]
//! cache_dir = "/var/cache/wasp"      # compiled plugins; default $XDG_CACHE_HOME/wasp or ~/.cache/wasp
//!
//! [[plugins]]                        # repeatable, in chain order
//! name = "passwords"                 # required, unique, one word
//! path = "password-file.wasm"        # required; relative to the configuration file's folder
//! listeners = ["default"]            # optional; every listener when absent
//! on_auth_failure = "deny"           # deny | defer | allow, when a call traps, times out or runs out of memory
//! on_authz_failure = "deny"          # deny | defer | allow
//! on_transform_failure = "pass"      # pass | drop
//! limits = { memory_mb = 128, call_timeout_ms = 100, instances = 4 }  # 1..=4096, 1..=60000, 1..=256
//! dirs = [{ host = "secrets", guest = "/etc/wasp", writable = false }]  # guest paths are absolute
//! http = { hosts = ["idp.example.com", "127.0.0.1:8443"], ca_file = "ca.pem", allow_plain_http = false }
//!                                    # outgoing HTTP (the plugin's `http` import); no grant: refused
//!                                    # hosts: "host" (default port) or "host:port"; ca_file: extra PEM
//!                                    # roots, relative to the configuration file's folder
//! [plugins.config]                   # any table: given to the plugin's init as JSON
//! file = "/etc/wasp/passwd"
//! ```

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use wasp_mqtt::QoS;

/// Largest `limits.max_packet_size`: a 268,435,455-byte Remaining Length plus a 5-byte fixed header.
pub const MAX_PACKET_SIZE_LIMIT: u32 = 268_435_460;

/// The validated broker configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where to accept connections; never empty, names and (non-zero-port) addresses unique.
    pub listeners: Vec<Listener>,
    /// Resource and protocol limits.
    pub limits: Limits,
    /// Whether clients without a user name may connect.
    pub allow_anonymous: bool,
    /// How often `$SYS` topics are published; `None`: `$SYS` topics are off.
    pub sys_interval: Option<Duration>,
    /// Logging.
    pub log: LogConfig,
    /// WebAssembly plugins, in chain order (file `[[plugins]]`).
    pub plugins: Vec<PluginConfig>,
    /// Where compiled plugins are cached (file `plugin_host.cache_dir`); `None`: the host's default.
    pub plugin_cache_dir: Option<PathBuf>,
    /// Where the Prometheus endpoint (`GET /metrics`) listens (file `metrics.bind`); `None`: off.
    pub metrics_bind: Option<SocketAddr>,
    /// The storage backend (file `[storage]`); `None`: everything stays in memory.
    pub storage: Option<StorageConfig>,
    /// The scheduling policy of the broker's threads (file `runtime.scheduling`).
    pub scheduling: Scheduling,
    /// How many worker threads serve the connections (file `runtime.worker_threads`); `None`: one per CPU
    /// (tokio's default, which the `TOKIO_WORKER_THREADS` environment variable overrides).
    pub worker_threads: Option<NonZeroUsize>,
}

/// The most worker threads `runtime.worker_threads` may ask for.
const MAX_WORKER_THREADS: i128 = 1024;

/// The Linux scheduling policy the `wasp` binary gives its threads (file key `runtime.scheduling`),
/// before its runtime starts them; other systems ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Scheduling {
    /// `SCHED_BATCH` (`scheduling = "batch"`): the same share of the CPU as a normal thread, but a thread
    /// that wakes up does not preempt the one running on its CPU; it runs when that one waits or its slice
    /// ends. So the broker's workers do not preempt one another, nor the other programs of the machine
    /// (its clients, on a gateway), each time a packet arrives. Measured in `bench/README.md`
    /// ("Scheduling policy"): connects/s +13 % with the load generator on the same two cores, the other
    /// scenarios unchanged.
    #[default]
    Batch,
    /// `SCHED_OTHER` (`scheduling = "normal"`), the system's default: a woken thread may preempt the
    /// running one.
    Normal,
}

/// Persistence (file table `[storage]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// The `[[plugins]]` entry that exports `wasp:plugin/storage`; it runs one instance.
    pub plugin: String,
    /// How long the writer waits after the first pending change before writing a batch (file
    /// `batch_delay_ms`, default 0).
    pub batch_delay: Duration,
}

/// One plugin (file table `[[plugins]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfig {
    /// What the plugin host loads: name, `.wasm` path (resolved against the configuration file's
    /// folder), the `config` table as JSON, sandbox limits, failure policy and granted directories.
    pub spec: wasp_plugin_host::PluginSpec,
    /// The listeners whose chains include this plugin; empty: every listener.
    pub listeners: Vec<String>,
}

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Unique name, used in logs and errors.
    pub name: String,
    /// Address to bind.
    pub bind: SocketAddr,
    /// Transport.
    pub kind: ListenerKind,
    /// TLS on top of the transport (file table `tls`): MQTT over TLS, or WebSocket over TLS.
    pub tls: Option<TlsSettings>,
    /// Overrides the top-level `allow_anonymous` for this listener's clients.
    pub allow_anonymous: Option<bool>,
    /// Clients connected through this listener at once, within `limits.max_connections`; 0: only
    /// that global limit applies.
    pub max_connections: usize,
}

/// A listener's transport (file key `protocol`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListenerKind {
    /// MQTT over TCP (`protocol = "tcp"`).
    Tcp,
    /// MQTT over WebSocket (`protocol = "ws"`): binary frames, subprotocol `mqtt`, upgrade requests only
    /// on `path` (file key `path`, default `/mqtt`).
    WebSocket {
        /// The HTTP path of the upgrade request, starting with `/`.
        path: String,
    },
}

/// A listener's TLS settings (file table `[listeners.tls]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain, the server's certificate first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA bundle that client certificates are verified against; `None`: no client certificates.
    pub client_ca_file: Option<PathBuf>,
    /// Refuse clients without a valid certificate (mutual TLS). Needs `client_ca_file`.
    pub require_client_cert: bool,
    /// Take the MQTT user name from the client certificate instead of CONNECT.
    pub username_from_cert: Option<CertField>,
    /// Lowest TLS version accepted.
    pub min_version: TlsVersion,
    /// How often the certificate, key and CA files are checked for changes (SIGHUP reloads at once);
    /// `None`: only on SIGHUP.
    pub reload_check: Option<Duration>,
}

/// Which part of a client certificate names the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertField {
    /// The subject's Common Name (`"cn"`).
    CommonName,
    /// The first DNS name, e-mail address or URI of the Subject Alternative Name extension (`"san"`).
    SubjectAltName,
}

/// A TLS protocol version (file key `min_version`: `"1.2"` or `"1.3"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2.
    V1_2,
    /// TLS 1.3.
    V1_3,
}

/// Resource and protocol limits (file table `[limits]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Maximum simultaneous client connections.
    pub max_connections: usize,
    /// Maximum total size of an inbound packet, in bytes (2..=268,435,460).
    pub max_packet_size: u32,
    /// QoS>0 PUBLISHes a client may have unacknowledged towards us (our v5 Receive Maximum).
    pub receive_maximum: u16,
    /// Our outbound in-flight window per client (also capped by the client's Receive Maximum).
    pub max_inflight: u16,
    /// Per session: messages waiting (client offline, or beyond the in-flight window).
    pub max_queued_messages: usize,
    /// Seconds; a client asking for more (or 0) gets this as v5 Server Keep Alive.
    pub max_keep_alive: u16,
    /// Time allowed to receive CONNECT after accepting a connection.
    pub connect_timeout: Duration,
    /// Client-to-broker topic aliases accepted (v5); 0 disables them.
    pub topic_alias_maximum: u16,
    /// Seconds; caps the client's Session Expiry Interval (`u32::MAX`: never expires).
    pub max_session_expiry: u32,
    /// Highest QoS the broker grants.
    pub maximum_qos: QoS,
    /// New connections accepted per second, over all listeners together (a token bucket holding one
    /// second's worth); 0: unlimited. Sockets beyond it are closed right after accept.
    pub max_connections_per_sec: u32,
    /// Longest topic name (PUBLISH, Will) or topic filter (SUBSCRIBE, whole text) in bytes.
    pub max_topic_length: usize,
    /// Most levels in a topic name or filter (`a/b/c` has 3; a shared subscription's filter counts
    /// without its `$share/{group}/` prefix).
    pub max_topic_levels: usize,
    /// Subscriptions one session may hold; 0: unlimited.
    pub max_subscriptions_per_client: usize,
    /// PUBLISH packets per second one connection may send (token bucket of one second); 0: unlimited.
    pub max_publish_rate: u32,
    /// Topic and payload bytes per second one connection may publish (token bucket of one second);
    /// 0: unlimited.
    pub max_publish_bytes_per_sec: u64,
    /// Topic and payload bytes of the messages waiting in all session queues together; 0: no ceiling.
    pub max_queued_bytes: u64,
}

/// Logging settings (file table `[log]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A `tracing_subscriber::EnvFilter` directive such as `"info"` or `"warn,wasp=debug"`;
    /// the `RUST_LOG` environment variable, when set, takes precedence.
    pub level: String,
    /// Output format.
    pub format: LogFormat,
}

/// Log line format (file key `log.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LogFormat {
    /// `tracing_subscriber`'s default full format (`format = "text"`).
    #[default]
    Text,
    /// The compact single-line format (`format = "compact"`).
    Compact,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listeners: vec![Listener::default()],
            limits: Limits::default(),
            allow_anonymous: true,
            sys_interval: Some(Duration::from_secs(10)),
            plugins: Vec::new(),
            plugin_cache_dir: None,
            metrics_bind: None,
            log: LogConfig::default(),
            storage: None,
            scheduling: Scheduling::default(),
            worker_threads: None,
        }
    }
}

impl Default for Listener {
    /// The listener `"default"` on `127.0.0.1:1883`, TCP.
    fn default() -> Self {
        Self {
            name: "default".to_owned(),
            bind: SocketAddr::from(([127, 0, 0, 1], 1883)),
            kind: ListenerKind::Tcp,
            tls: None,
            allow_anonymous: None,
            max_connections: 0,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 100_000,
            max_packet_size: 1_048_576,
            receive_maximum: 1024,
            max_inflight: 1024,
            max_queued_messages: 10_000,
            max_keep_alive: 65_535,
            connect_timeout: Duration::from_secs(10),
            topic_alias_maximum: 64,
            max_session_expiry: u32::MAX,
            maximum_qos: QoS::ExactlyOnce,
            max_connections_per_sec: 0,
            max_topic_length: 65_535,
            max_topic_levels: 128,
            max_subscriptions_per_client: 10_000,
            max_publish_rate: 0,
            max_publish_bytes_per_sec: 0,
            max_queued_bytes: 1 << 30,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

impl Config {
    /// Parses and validates a configuration file's text; `source` names the file in error messages.
    /// Relative paths in it (plugin files, granted directories) are taken from the current directory.
    pub fn from_toml_str(text: &str, source: &str) -> Result<Config, ConfigError> {
        Self::parse_in(text, source, Path::new(""))
    }

    fn parse_in(text: &str, source: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let ctx = Ctx {
            file: source,
            text,
            base_dir,
        };
        let file: FileConfig = toml::from_str(text).map_err(|e| ctx.toml_error(e))?;
        ctx.validate(file)
    }

    /// Reads, parses and validates the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        // Relative paths in the file are relative to the file, wherever the broker is started from.
        let base_dir = path.parent().unwrap_or(Path::new(""));
        Self::parse_in(&text, &path.display().to_string(), base_dir)
    }
}

/// Where in a configuration file an error is: `file:line`, or just `file` when the line is unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file name given to [`Config::from_toml_str`] / [`Config::load`].
    pub file: String,
    /// 1-based line number.
    pub line: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.file),
            None => f.write_str(&self.file),
        }
    }
}

/// A configuration file that cannot be read, parsed or validated. The message names the file, the line,
/// the key and how to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML.
    #[error("{at}: invalid TOML: {message}")]
    Syntax {
        /// Where.
        at: Location,
        /// The TOML parser's description.
        message: String,
    },
    /// A key the broker does not know (often a typo).
    #[error("{at}: unknown key `{key}` in {table}: expected one of {expected}")]
    UnknownKey {
        /// Where.
        at: Location,
        /// The unknown key.
        key: String,
        /// The table it is in, e.g. `[[listeners]]`, `[limits]` or `the top level`.
        table: String,
        /// The keys allowed there, comma-separated.
        expected: String,
    },
    /// A required key is absent.
    #[error("{at}: missing key `{key}` in {table}: {hint}")]
    MissingKey {
        /// Where (the table that lacks the key).
        at: Location,
        /// The missing key.
        key: String,
        /// The table it is missing from.
        table: String,
        /// How to fix it.
        hint: String,
    },
    /// A value of the wrong TOML type (e.g. a string where an integer belongs).
    #[error("{at}: {key} has the wrong type: {message}")]
    WrongType {
        /// Where.
        at: Location,
        /// Dotted key path, e.g. `limits.max_packet_size`.
        key: String,
        /// What was found and what was expected.
        message: String,
    },
    /// A well-typed value that is not acceptable (out of range, duplicate, unparsable address...).
    #[error("{at}: {message}")]
    Invalid {
        /// Where.
        at: Location,
        /// Dotted key path, e.g. `limits.max_packet_size`.
        key: String,
        /// The complete explanation, starting with the key and ending with how to fix it.
        message: String,
    },
}

// ---------------------------------------------------------------------------------------------------------
// File layer
// ---------------------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    allow_anonymous: Option<bool>,
    listeners: Option<Spanned<Vec<Spanned<FileListener>>>>,
    limits: Option<FileLimits>,
    sys: Option<FileSys>,
    log: Option<FileLog>,
    plugin_host: Option<FilePluginHost>,
    plugins: Option<Vec<Spanned<FilePlugin>>>,
    metrics: Option<FileMetrics>,
    storage: Option<Spanned<FileStorage>>,
    runtime: Option<FileRuntime>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileRuntime {
    scheduling: Option<Spanned<String>>,
    worker_threads: Option<Spanned<i128>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStorage {
    plugin: Spanned<String>,
    batch_delay_ms: Option<Spanned<i128>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileMetrics {
    bind: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePluginHost {
    cache_dir: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePlugin {
    name: Spanned<String>,
    path: Spanned<String>,
    listeners: Option<Spanned<Vec<String>>>,
    on_auth_failure: Option<Spanned<String>>,
    on_authz_failure: Option<Spanned<String>>,
    on_transform_failure: Option<Spanned<String>>,
    limits: Option<FilePluginLimits>,
    dirs: Option<Vec<Spanned<FileDirGrant>>>,
    http: Option<FileHttpGrant>,
    sockets: Option<Vec<Spanned<String>>>,
    config: Option<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHttpGrant {
    hosts: Spanned<Vec<Spanned<String>>>,
    ca_file: Option<Spanned<String>>,
    allow_plain_http: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePluginLimits {
    memory_mb: Option<Spanned<i128>>,
    call_timeout_ms: Option<Spanned<i128>>,
    instances: Option<Spanned<i128>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDirGrant {
    host: Spanned<String>,
    guest: Spanned<String>,
    writable: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileListener {
    name: Spanned<String>,
    bind: Spanned<String>,
    protocol: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    allow_anonymous: Option<bool>,
    tls: Option<Spanned<FileTls>>,
    max_connections: Option<Spanned<i128>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    cert_file: Spanned<String>,
    key_file: Spanned<String>,
    client_ca_file: Option<Spanned<String>>,
    require_client_cert: Option<Spanned<bool>>,
    username_from_cert: Option<Spanned<String>>,
    min_version: Option<Spanned<String>>,
    reload_check_secs: Option<Spanned<i128>>,
}

/// Integers are read as `i128` so that negative and oversized values get a range message, not a type error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_connections: Option<Spanned<i128>>,
    max_packet_size: Option<Spanned<i128>>,
    receive_maximum: Option<Spanned<i128>>,
    max_inflight: Option<Spanned<i128>>,
    max_queued_messages: Option<Spanned<i128>>,
    max_keep_alive_secs: Option<Spanned<i128>>,
    connect_timeout_secs: Option<Spanned<i128>>,
    topic_alias_maximum: Option<Spanned<i128>>,
    max_session_expiry_secs: Option<Spanned<i128>>,
    maximum_qos: Option<Spanned<i128>>,
    max_connections_per_sec: Option<Spanned<i128>>,
    max_topic_length: Option<Spanned<i128>>,
    max_topic_levels: Option<Spanned<i128>>,
    max_subscriptions_per_client: Option<Spanned<i128>>,
    max_publish_rate: Option<Spanned<i128>>,
    max_publish_bytes_per_sec: Option<Spanned<i128>>,
    max_queued_bytes: Option<Spanned<i128>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSys {
    interval_secs: Option<Spanned<i128>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLog {
    level: Option<Spanned<String>>,
    format: Option<Spanned<String>>,
}

// ---------------------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------------------

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
    /// Relative paths are resolved against this folder.
    base_dir: &'a Path,
}

impl Ctx<'_> {
    fn at(&self, span: Option<Range<usize>>) -> Location {
        let line = span.map(|span| {
            let end = span.start.min(self.text.len());
            self.text.as_bytes()[..end]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1
        });
        Location {
            file: self.file.to_owned(),
            line,
        }
    }

    fn invalid(&self, span: Range<usize>, key: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            at: self.at(Some(span)),
            key: key.to_owned(),
            message,
        }
    }

    /// The value `choices` pairs with the text of `value` (file key `key`); any other text is an error at
    /// its line: `{key} = {text:?} {refusal}: use {hint}`.
    fn choice<T: Copy>(
        &self,
        value: &Spanned<String>,
        key: &str,
        choices: &[(&str, T)],
        refusal: &str,
        hint: &str,
    ) -> Result<T, ConfigError> {
        let text = value.get_ref();
        match choices.iter().find(|(name, _)| name == text) {
            Some(&(_, chosen)) => Ok(chosen),
            None => Err(self.invalid(
                value.span(),
                key,
                format!("{key} = {text:?} {refusal}: use {hint}"),
            )),
        }
    }

    /// Classifies an error from the toml crate (syntax, unknown key, missing key, wrong type).
    fn toml_error(&self, error: toml::de::Error) -> ConfigError {
        let at = self.at(error.span());
        // One line: the toml crate's messages rarely span lines, but the CLI prints ours on one.
        let message = error.message().trim().replace('\n', "; ");
        let path = key_path(&error);
        if let Some(rest) = message.strip_prefix("unknown field `")
            && let Some((key, rest)) = rest.split_once('`')
        {
            return ConfigError::UnknownKey {
                at,
                key: key.to_owned(),
                table: table_name(&path),
                expected: expected_keys(rest),
            };
        }
        if let Some(rest) = message.strip_prefix("missing field `")
            && let Some((key, _)) = rest.split_once('`')
        {
            return ConfigError::MissingKey {
                at,
                hint: missing_hint(&path, key),
                key: key.to_owned(),
                table: table_name(&path),
            };
        }
        if path.is_empty() {
            // Name what the parser choked on when it is short, e.g. "duplicate key `maximum_qos`".
            let snippet = error
                .span()
                .and_then(|span| self.text.get(span))
                .map(str::trim)
                .filter(|s| !s.is_empty() && s.len() <= 40 && !s.contains('\n'));
            let message = match snippet {
                Some(snippet) => format!("{message} at `{snippet}`"),
                None => message,
            };
            return ConfigError::Syntax { at, message };
        }
        // Speak TOML, not Rust: the file-layer struct names and integer widths are ours to hide.
        let mut message = message
            .replace("expected i128", "expected an integer")
            .replace("expected a sequence", "expected an array");
        if let Some(i) = message.find("expected struct File") {
            message.truncate(i);
            message.push_str("expected a table");
        }
        ConfigError::WrongType {
            at,
            key: path,
            message,
        }
    }

    fn validate(&self, file: FileConfig) -> Result<Config, ConfigError> {
        let listeners = match file.listeners {
            None => vec![Listener::default()],
            Some(listeners) => self.listeners(listeners)?,
        };
        let limits = match file.limits {
            None => Limits::default(),
            Some(limits) => self.limits(limits)?,
        };
        let default = Config::default();
        let sys_interval = match file.sys.and_then(|sys| sys.interval_secs) {
            None => default.sys_interval,
            Some(secs) => {
                let secs: u64 = self.int(&secs, "sys.interval_secs", 0, 86_400, " seconds")?;
                (secs > 0).then(|| Duration::from_secs(secs))
            }
        };
        let log = match file.log {
            None => LogConfig::default(),
            Some(log) => self.log(log)?,
        };
        let mut plugins = self.plugins(file.plugins.unwrap_or_default(), &listeners)?;
        let storage = match file.storage {
            None => None,
            Some(storage) => Some(self.storage(storage.into_inner(), &mut plugins)?),
        };
        let plugin_cache_dir = file
            .plugin_host
            .and_then(|h| h.cache_dir)
            .map(|dir| self.base_dir.join(dir.get_ref()));
        let metrics_bind = match file.metrics.and_then(|m| m.bind) {
            None => None,
            Some(bind) => Some(bind.get_ref().trim().parse().map_err(|_| {
                self.invalid(
                    bind.span(),
                    "metrics.bind",
                    format!(
                        "metrics.bind = {:?} is not a socket address: use IP:PORT such as \
                         \"127.0.0.1:9464\" (host names are not resolved), or remove the key to turn \
                         the endpoint off",
                        bind.get_ref()
                    ),
                )
            })?),
        };
        let runtime = file.runtime.unwrap_or_default();
        let scheduling = match runtime.scheduling {
            None => default.scheduling,
            Some(scheduling) => self.choice(
                &scheduling,
                "runtime.scheduling",
                &[("batch", Scheduling::Batch), ("normal", Scheduling::Normal)],
                "is not supported",
                "\"batch\" (the default) or \"normal\"",
            )?,
        };
        let worker_threads = match &runtime.worker_threads {
            None => default.worker_threads,
            // At least 1, so never `None` here.
            Some(n) => NonZeroUsize::new(self.int(
                n,
                "runtime.worker_threads",
                1,
                MAX_WORKER_THREADS,
                "",
            )?),
        };
        Ok(Config {
            listeners,
            limits,
            allow_anonymous: file.allow_anonymous.unwrap_or(default.allow_anonymous),
            sys_interval,
            log,
            plugins,
            plugin_cache_dir,
            metrics_bind,
            storage,
            scheduling,
            worker_threads,
        })
    }

    fn storage(
        &self,
        file: FileStorage,
        plugins: &mut [PluginConfig],
    ) -> Result<StorageConfig, ConfigError> {
        let name = file.plugin.get_ref();
        let Some(plugin) = plugins.iter_mut().find(|p| &p.spec.name == name) else {
            let known: Vec<&str> = plugins.iter().map(|p| p.spec.name.as_str()).collect();
            return Err(self.invalid(
                file.plugin.span(),
                "storage.plugin",
                format!(
                    "storage.plugin = {name:?} names no [[plugins]] entry (there are: {}): add a                      [[plugins]] entry with name = {name:?} whose path is a storage plugin such as                      storage-redb, with a writable directory in its dirs",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        };
        // One instance holds the database: the broker makes one storage call at a time anyway.
        plugin.spec.limits.max_instances = 1;
        let batch_delay_ms: u64 = match &file.batch_delay_ms {
            None => 0,
            Some(ms) => self.int(ms, "storage.batch_delay_ms", 0, 10_000, " milliseconds")?,
        };
        Ok(StorageConfig {
            plugin: name.clone(),
            batch_delay: Duration::from_millis(batch_delay_ms),
        })
    }

    fn listeners(
        &self,
        listeners: Spanned<Vec<Spanned<FileListener>>>,
    ) -> Result<Vec<Listener>, ConfigError> {
        if listeners.get_ref().is_empty() {
            return Err(self.invalid(
                listeners.span(),
                "listeners",
                "listeners is empty: add at least one [[listeners]] table with a name and a bind \
                 address, or remove the key to get the default listener on 127.0.0.1:1883"
                    .to_owned(),
            ));
        }
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut binds: HashMap<SocketAddr, (String, usize)> = HashMap::new();
        let mut out = Vec::with_capacity(listeners.get_ref().len());
        for listener in listeners.into_inner() {
            let listener = listener.into_inner();
            let name_span = listener.name.span();
            let name = listener.name.into_inner();
            if name.trim().is_empty() {
                return Err(self.invalid(
                    name_span,
                    "listeners.name",
                    "listeners.name is empty: give the listener a name such as \"default\""
                        .to_owned(),
                ));
            }
            let line = self.at(Some(name_span.clone())).line.unwrap_or_default();
            if let Some(first) = names.insert(name.clone(), line) {
                return Err(self.invalid(
                    name_span,
                    "listeners.name",
                    format!(
                        "listeners.name = {name:?} is already used by the listener on line {first}: \
                         give every listener a unique name"
                    ),
                ));
            }

            let bind_span = listener.bind.span();
            let text = listener.bind.get_ref().trim();
            let bind: SocketAddr = text.parse().map_err(|_| {
                self.invalid(
                    bind_span.clone(),
                    "listeners.bind",
                    format!(
                        "listeners.bind = {text:?} is not a socket address: use IP:PORT such as \
                         \"127.0.0.1:1883\", \"0.0.0.0:1883\" or \"[::]:1883\" (host names are not resolved)"
                    ),
                )
            })?;
            // Port 0 asks the OS for a free port: several such listeners on one IP do not clash.
            if bind.port() != 0 {
                let line = self.at(Some(bind_span.clone())).line.unwrap_or_default();
                if let Some((other, first)) = binds.insert(bind, (name.clone(), line)) {
                    return Err(self.invalid(
                        bind_span,
                        "listeners.bind",
                        format!(
                            "listeners.bind = \"{bind}\" is already used by listener {other:?} on line \
                             {first}: give every listener its own address or port"
                        ),
                    ));
                }
            }

            let websocket = match &listener.protocol {
                None => false,
                Some(protocol) => self.choice(
                    protocol,
                    "listeners.protocol",
                    &[("tcp", false), ("ws", true)],
                    "is not supported",
                    "\"tcp\" (MQTT over TCP) or \"ws\" (MQTT over WebSocket); add a [listeners.tls] table \
                     for TLS",
                )?,
            };
            let kind = match (websocket, listener.path) {
                (false, None) => ListenerKind::Tcp,
                (false, Some(path)) => {
                    return Err(self.invalid(
                        path.span(),
                        "listeners.path",
                        "listeners.path is only for WebSocket listeners: remove it, or set \
                         protocol = \"ws\""
                            .to_owned(),
                    ));
                }
                (true, None) => ListenerKind::WebSocket {
                    path: "/mqtt".to_owned(),
                },
                (true, Some(path)) => {
                    if !path.get_ref().starts_with('/')
                        || path.get_ref().contains(char::is_whitespace)
                    {
                        return Err(self.invalid(
                            path.span(),
                            "listeners.path",
                            format!(
                                "listeners.path = {:?} is not an HTTP path: use one that starts with \
                                 \"/\" and has no spaces, such as \"/mqtt\"",
                                path.get_ref()
                            ),
                        ));
                    }
                    ListenerKind::WebSocket {
                        path: path.into_inner(),
                    }
                }
            };
            let tls = match listener.tls {
                None => None,
                Some(tls) => Some(self.tls(tls)?),
            };
            let max_connections = self
                .opt(
                    &listener.max_connections,
                    "listeners.max_connections",
                    0,
                    i128::try_from(usize::MAX).unwrap_or(i128::MAX),
                    "",
                )?
                .unwrap_or(0);
            out.push(Listener {
                name,
                bind,
                kind,
                tls,
                allow_anonymous: listener.allow_anonymous,
                max_connections,
            });
        }
        Ok(out)
    }

    fn tls(&self, tls: Spanned<FileTls>) -> Result<TlsSettings, ConfigError> {
        let table_span = tls.span();
        let tls = tls.into_inner();
        let path = |p: &Spanned<String>| self.base_dir.join(p.get_ref());
        let require_client_cert = tls
            .require_client_cert
            .as_ref()
            .is_some_and(|r| *r.get_ref());
        if tls.client_ca_file.is_none() {
            for (key, span) in [
                (
                    "require_client_cert",
                    tls.require_client_cert
                        .as_ref()
                        .filter(|r| *r.get_ref())
                        .map(Spanned::span),
                ),
                (
                    "username_from_cert",
                    tls.username_from_cert.as_ref().map(Spanned::span),
                ),
            ] {
                if let Some(span) = span {
                    return Err(self.invalid(
                        span,
                        &format!("listeners.tls.{key}"),
                        format!(
                            "listeners.tls.{key} needs client certificates: add \
                             client_ca_file = \"ca.pem\" (the CA bundle that signs them) to the same table"
                        ),
                    ));
                }
            }
        }
        let username_from_cert = match &tls.username_from_cert {
            None => None,
            Some(field) => Some(self.choice(
                field,
                "listeners.tls.username_from_cert",
                &[
                    ("cn", CertField::CommonName),
                    ("san", CertField::SubjectAltName),
                ],
                "is not a certificate field",
                "\"cn\" (subject Common Name) or \"san\" (first Subject Alternative Name)",
            )?),
        };
        if username_from_cert.is_some() && !require_client_cert {
            return Err(self.invalid(
                table_span,
                "listeners.tls.username_from_cert",
                "listeners.tls.username_from_cert needs require_client_cert = true: a client without a \
                 certificate would otherwise choose its own user name"
                    .to_owned(),
            ));
        }
        let min_version = match &tls.min_version {
            None => TlsVersion::V1_2,
            Some(v) => self.choice(
                v,
                "listeners.tls.min_version",
                &[("1.2", TlsVersion::V1_2), ("1.3", TlsVersion::V1_3)],
                "is not supported",
                "\"1.2\" or \"1.3\"",
            )?,
        };
        let reload_check = match &tls.reload_check_secs {
            None => Some(Duration::from_secs(10)),
            Some(secs) => {
                let secs: u64 = self.int(
                    secs,
                    "listeners.tls.reload_check_secs",
                    0,
                    86_400,
                    " seconds",
                )?;
                (secs > 0).then(|| Duration::from_secs(secs))
            }
        };
        Ok(TlsSettings {
            cert_file: path(&tls.cert_file),
            key_file: path(&tls.key_file),
            client_ca_file: tls.client_ca_file.as_ref().map(path),
            require_client_cert,
            username_from_cert,
            min_version,
            reload_check,
        })
    }

    fn limits(&self, file: FileLimits) -> Result<Limits, ConfigError> {
        let d = Limits::default();
        let maximum_qos = match &file.maximum_qos {
            None => d.maximum_qos,
            Some(qos) => u8::try_from(*qos.get_ref())
                .ok()
                .and_then(QoS::from_u8)
                .ok_or_else(|| {
                    self.invalid(
                        qos.span(),
                        "limits.maximum_qos",
                        format!(
                            "limits.maximum_qos = {} is out of range: use 0 (at most once), 1 (at least \
                             once) or 2 (exactly once)",
                            qos.get_ref()
                        ),
                    )
                })?,
        };
        let u16_max = i128::from(u16::MAX);
        let usize_max = i128::try_from(usize::MAX).unwrap_or(i128::MAX);
        Ok(Limits {
            max_connections: self
                .opt(
                    &file.max_connections,
                    "limits.max_connections",
                    1,
                    usize_max,
                    "",
                )?
                .unwrap_or(d.max_connections),
            max_packet_size: self
                .opt(
                    &file.max_packet_size,
                    "limits.max_packet_size",
                    2,
                    MAX_PACKET_SIZE_LIMIT.into(),
                    " bytes",
                )?
                .unwrap_or(d.max_packet_size),
            receive_maximum: self
                .opt(
                    &file.receive_maximum,
                    "limits.receive_maximum",
                    1,
                    u16_max,
                    "",
                )?
                .unwrap_or(d.receive_maximum),
            max_inflight: self
                .opt(&file.max_inflight, "limits.max_inflight", 1, u16_max, "")?
                .unwrap_or(d.max_inflight),
            max_queued_messages: self
                .opt(
                    &file.max_queued_messages,
                    "limits.max_queued_messages",
                    1,
                    usize_max,
                    "",
                )?
                .unwrap_or(d.max_queued_messages),
            max_keep_alive: self
                .opt(
                    &file.max_keep_alive_secs,
                    "limits.max_keep_alive_secs",
                    1,
                    u16_max,
                    " seconds",
                )?
                .unwrap_or(d.max_keep_alive),
            connect_timeout: self
                .opt(
                    &file.connect_timeout_secs,
                    "limits.connect_timeout_secs",
                    1,
                    3600,
                    " seconds",
                )?
                .map_or(d.connect_timeout, Duration::from_secs),
            topic_alias_maximum: self
                .opt(
                    &file.topic_alias_maximum,
                    "limits.topic_alias_maximum",
                    0,
                    u16_max,
                    "",
                )?
                .unwrap_or(d.topic_alias_maximum),
            max_session_expiry: self
                .opt(
                    &file.max_session_expiry_secs,
                    "limits.max_session_expiry_secs",
                    0,
                    u32::MAX.into(),
                    " seconds",
                )?
                .unwrap_or(d.max_session_expiry),
            maximum_qos,
            max_connections_per_sec: self
                .opt(
                    &file.max_connections_per_sec,
                    "limits.max_connections_per_sec",
                    0,
                    u32::MAX.into(),
                    " connections per second",
                )?
                .unwrap_or(d.max_connections_per_sec),
            max_topic_length: self
                .opt(
                    &file.max_topic_length,
                    "limits.max_topic_length",
                    1,
                    u16_max,
                    " bytes",
                )?
                .unwrap_or(d.max_topic_length),
            max_topic_levels: self
                .opt(
                    &file.max_topic_levels,
                    "limits.max_topic_levels",
                    1,
                    u16_max,
                    "",
                )?
                .unwrap_or(d.max_topic_levels),
            max_subscriptions_per_client: self
                .opt(
                    &file.max_subscriptions_per_client,
                    "limits.max_subscriptions_per_client",
                    0,
                    usize_max,
                    "",
                )?
                .unwrap_or(d.max_subscriptions_per_client),
            max_publish_rate: self
                .opt(
                    &file.max_publish_rate,
                    "limits.max_publish_rate",
                    0,
                    u32::MAX.into(),
                    " messages per second",
                )?
                .unwrap_or(d.max_publish_rate),
            max_publish_bytes_per_sec: self
                .opt(
                    &file.max_publish_bytes_per_sec,
                    "limits.max_publish_bytes_per_sec",
                    0,
                    i64::MAX.into(),
                    " bytes per second",
                )?
                .unwrap_or(d.max_publish_bytes_per_sec),
            max_queued_bytes: self
                .opt(
                    &file.max_queued_bytes,
                    "limits.max_queued_bytes",
                    0,
                    i64::MAX.into(),
                    " bytes",
                )?
                .unwrap_or(d.max_queued_bytes),
        })
    }

    fn log(&self, file: FileLog) -> Result<LogConfig, ConfigError> {
        let d = LogConfig::default();
        let level = match file.level {
            None => d.level,
            Some(level) => {
                let text = level.get_ref().trim();
                if text.is_empty() {
                    return Err(self.invalid(
                        level.span(),
                        "log.level",
                        "log.level is empty: use a level such as \"info\", or directives such as \
                         \"warn,wasp=debug\""
                            .to_owned(),
                    ));
                }
                if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(text) {
                    return Err(self.invalid(
                        level.span(),
                        "log.level",
                        format!(
                            "log.level = {text:?} is not a valid filter ({e}): use a level (error, warn, \
                             info, debug, trace) or directives such as \"warn,wasp=debug\""
                        ),
                    ));
                }
                text.to_owned()
            }
        };
        let format = match file.format {
            None => d.format,
            Some(format) => self.choice(
                &format,
                "log.format",
                &[("text", LogFormat::Text), ("compact", LogFormat::Compact)],
                "is not supported",
                "\"text\" or \"compact\"",
            )?,
        };
        Ok(LogConfig { level, format })
    }

    fn plugins(
        &self,
        plugins: Vec<Spanned<FilePlugin>>,
        listeners: &[Listener],
    ) -> Result<Vec<PluginConfig>, ConfigError> {
        use wasp_plugin_host::{
            DirGrant, FailurePolicy, HttpGrant, OnAccessFailure, OnTransformFailure, PluginSpec,
            SandboxLimits,
        };
        let access = |value: &Option<Spanned<String>>, key: &str| match value {
            None => Ok(OnAccessFailure::Deny),
            Some(v) => self.choice(
                v,
                key,
                &[
                    ("deny", OnAccessFailure::Deny),
                    ("defer", OnAccessFailure::Defer),
                    ("allow", OnAccessFailure::Allow),
                ],
                "is not a failure policy",
                "\"deny\", \"defer\" or \"allow\"",
            ),
        };
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut out = Vec::with_capacity(plugins.len());
        for plugin in plugins {
            let plugin = plugin.into_inner();
            let name_span = plugin.name.span();
            let name = plugin.name.into_inner();
            if name.trim().is_empty() || name.contains(char::is_whitespace) {
                return Err(self.invalid(
                    name_span,
                    "plugins.name",
                    format!("plugins.name = {name:?} is not a name: use a non-empty word such as \"passwords\""),
                ));
            }
            let line = self.at(Some(name_span.clone())).line.unwrap_or_default();
            if let Some(first) = names.insert(name.clone(), line) {
                return Err(self.invalid(
                    name_span,
                    "plugins.name",
                    format!(
                        "plugins.name = {name:?} is already used by the plugin on line {first}: give every \
                         plugin a unique name"
                    ),
                ));
            }
            if plugin.path.get_ref().trim().is_empty() {
                return Err(self.invalid(
                    plugin.path.span(),
                    "plugins.path",
                    "plugins.path is empty: give the path of the plugin's .wasm component"
                        .to_owned(),
                ));
            }
            let wasm = self.base_dir.join(plugin.path.get_ref());
            let plugin_listeners = match plugin.listeners {
                None => Vec::new(),
                Some(names) => {
                    if let Some(unknown) = names
                        .get_ref()
                        .iter()
                        .find(|n| !listeners.iter().any(|l| &l.name == *n))
                    {
                        let known: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
                        return Err(self.invalid(
                            names.span(),
                            "plugins.listeners",
                            format!(
                                "plugins.listeners names {unknown:?}, which is not a listener: use one of {}",
                                known.join(", ")
                            ),
                        ));
                    }
                    names.into_inner()
                }
            };
            let transform = match &plugin.on_transform_failure {
                None => OnTransformFailure::Pass,
                Some(v) => self.choice(
                    v,
                    "plugins.on_transform_failure",
                    &[
                        ("pass", OnTransformFailure::Pass),
                        ("drop", OnTransformFailure::Drop),
                    ],
                    "is not a failure policy",
                    "\"pass\" or \"drop\"",
                )?,
            };
            let failure = FailurePolicy {
                authenticate: access(&plugin.on_auth_failure, "plugins.on_auth_failure")?,
                authorize: access(&plugin.on_authz_failure, "plugins.on_authz_failure")?,
                transform,
            };
            let d = SandboxLimits::default();
            let limits = match plugin.limits {
                None => d,
                Some(l) => SandboxLimits {
                    memory_bytes: self
                        .opt::<u64>(&l.memory_mb, "plugins.limits.memory_mb", 1, 4096, " MiB")?
                        .map_or(d.memory_bytes, |mb| mb << 20),
                    call_timeout: self
                        .opt::<u64>(
                            &l.call_timeout_ms,
                            "plugins.limits.call_timeout_ms",
                            1,
                            60_000,
                            " ms",
                        )?
                        .map_or(d.call_timeout, Duration::from_millis),
                    max_instances: self
                        .opt(&l.instances, "plugins.limits.instances", 1, 256, "")?
                        .unwrap_or(d.max_instances),
                },
            };
            let mut dirs = Vec::new();
            for grant in plugin.dirs.unwrap_or_default() {
                let grant = grant.into_inner();
                if !grant.guest.get_ref().starts_with('/') {
                    return Err(self.invalid(
                        grant.guest.span(),
                        "plugins.dirs.guest",
                        format!(
                            "plugins.dirs.guest = {:?} is not absolute: use the path the plugin opens, such \
                             as \"/data\"",
                            grant.guest.get_ref()
                        ),
                    ));
                }
                dirs.push(DirGrant {
                    host: self.base_dir.join(grant.host.get_ref()),
                    guest: grant.guest.into_inner(),
                    writable: grant.writable.unwrap_or(false),
                });
            }
            let http = match plugin.http {
                None => None,
                Some(grant) => {
                    if grant.hosts.get_ref().is_empty() {
                        return Err(self.invalid(
                            grant.hosts.span(),
                            "plugins.http.hosts",
                            "plugins.http.hosts is empty: list the hosts the plugin may reach, such as \
                             [\"idp.example.com\"], or remove http"
                                .to_owned(),
                        ));
                    }
                    let mut hosts = Vec::new();
                    for host in grant.hosts.into_inner() {
                        if let Err(problem) = HttpGrant::check_host_entry(host.get_ref()) {
                            return Err(self.invalid(
                                host.span(),
                                "plugins.http.hosts",
                                format!(
                                    "plugins.http.hosts: {problem}: write a host name or address with an \
                                     optional port, such as \"idp.example.com\" or \"127.0.0.1:8443\""
                                ),
                            ));
                        }
                        hosts.push(host.into_inner());
                    }
                    let ca_file = match grant.ca_file {
                        None => None,
                        Some(file) if file.get_ref().is_empty() => {
                            return Err(self.invalid(
                                file.span(),
                                "plugins.http.ca_file",
                                "plugins.http.ca_file is empty: give a PEM file of CA certificates, or \
                                 remove it"
                                    .to_owned(),
                            ));
                        }
                        Some(file) => Some(self.base_dir.join(file.get_ref())),
                    };
                    Some(HttpGrant {
                        hosts,
                        ca_file,
                        allow_plain_http: grant.allow_plain_http.unwrap_or(false),
                    })
                }
            };
            let mut sockets = Vec::new();
            for address in plugin.sockets.unwrap_or_default() {
                let parsed = address.get_ref().trim().parse().map_err(|_| {
                    self.invalid(
                        address.span(),
                        "plugins.sockets",
                        format!(
                            "plugins.sockets: {:?} is not a socket address: write IP:PORT, such as                              \"127.0.0.1:6379\" (host names are not resolved)",
                            address.get_ref()
                        ),
                    )
                })?;
                sockets.push(parsed);
            }
            // TOML values are all representable in JSON (dates become strings).
            let config_json = serde_json::to_string(&plugin.config.unwrap_or_default())
                .unwrap_or_else(|_| "{}".to_owned());
            out.push(PluginConfig {
                spec: PluginSpec {
                    name,
                    wasm,
                    config_json,
                    limits,
                    failure,
                    dirs,
                    http,
                    sockets,
                },
                listeners: plugin_listeners,
            });
        }
        Ok(out)
    }

    /// [`Self::int`] for an optional value; `None` when absent.
    fn opt<T: TryFrom<i128>>(
        &self,
        value: &Option<Spanned<i128>>,
        key: &str,
        min: i128,
        max: i128,
        unit: &str,
    ) -> Result<Option<T>, ConfigError> {
        value
            .as_ref()
            .map(|v| self.int(v, key, min, max, unit))
            .transpose()
    }

    /// Checks an integer against `min..=max` and converts it (a `max` that `T` cannot hold is capped
    /// by the conversion).
    fn int<T: TryFrom<i128>>(
        &self,
        value: &Spanned<i128>,
        key: &str,
        min: i128,
        max: i128,
        unit: &str,
    ) -> Result<T, ConfigError> {
        let v = *value.get_ref();
        match T::try_from(v) {
            Ok(t) if (min..=max).contains(&v) => Ok(t),
            _ => {
                // A bound beyond what TOML integers can say is not worth printing for a too-small value.
                let fix = if v < min && max >= i128::from(i64::MAX) {
                    format!("use a value of at least {min}{unit}")
                } else {
                    format!("use a value from {min} to {max}{unit}")
                };
                Err(self.invalid(
                    value.span(),
                    key,
                    format!("{key} = {v} is out of range: {fix}"),
                ))
            }
        }
    }
}

/// The dotted key path of a toml error (e.g. `limits.max_packet_size`), empty for the top level.
///
/// The toml crate keeps the path private but prints it as a last line "in `a.b`" when the error carries
/// no input text.
fn key_path(error: &toml::de::Error) -> String {
    let mut error = error.clone();
    error.set_input(None);
    let text = error.to_string();
    text.lines()
        .rev()
        .find_map(|line| line.strip_prefix("in `")?.strip_suffix('`'))
        .unwrap_or_default()
        .to_owned()
}

/// `[[listeners]]`, `[limits]` or `the top level`, for a table's dotted path.
fn table_name(path: &str) -> String {
    match path {
        "" => "the top level".to_owned(),
        "listeners" | "plugins" | "plugins.dirs" => format!("[[{path}]]"),
        other => format!("[{other}]"),
    }
}

/// Turns serde's ", expected one of `a`, `b`" / ", expected `a` or `b`" into "a, b".
fn expected_keys(rest: &str) -> String {
    let Some(list) = rest
        .trim_start_matches(',')
        .trim()
        .strip_prefix("expected ")
    else {
        return "(none: this table takes no keys)".to_owned();
    };
    list.trim_start_matches("one of ")
        .replace(" or ", ", ")
        .replace('`', "")
}

fn missing_hint(table: &str, key: &str) -> String {
    match (table, key) {
        ("listeners", "name") => {
            "every listener needs a unique name, e.g. name = \"default\"".to_owned()
        }
        ("listeners", "bind") => {
            "every listener needs an address, e.g. bind = \"127.0.0.1:1883\"".to_owned()
        }
        _ => format!("add `{key} = ...`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../examples/wasp.toml");

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, "wasp.toml")
    }

    /// The error message for `text`, asserting it names `wasp.toml:{line}` and contains `key`.
    #[track_caller]
    fn error(text: &str, line: usize, key: &str) -> String {
        let message = match parse(text) {
            Ok(config) => panic!("expected an error, got {config:?}"),
            Err(e) => e.to_string(),
        };
        assert!(
            message.starts_with(&format!("wasp.toml:{line}: ")),
            "wrong line in {message:?}"
        );
        assert!(message.contains(key), "{key:?} not in {message:?}");
        message
    }

    #[test]
    fn defaults() {
        let c = Config::default();
        assert_eq!(
            c.listeners,
            vec![Listener {
                name: "default".into(),
                bind: "127.0.0.1:1883".parse().unwrap(),
                kind: ListenerKind::Tcp,
                tls: None,
                allow_anonymous: None,
                max_connections: 0,
            }]
        );
        assert!(c.allow_anonymous);
        assert_eq!(c.sys_interval, Some(Duration::from_secs(10)));
        let l = &c.limits;
        assert_eq!(l.max_connections, 100_000);
        assert_eq!(l.max_packet_size, 1_048_576);
        assert_eq!(l.receive_maximum, 1024);
        assert_eq!(l.max_inflight, 1024);
        assert_eq!(l.max_queued_messages, 10_000);
        assert_eq!(l.max_keep_alive, 65_535);
        assert_eq!(l.connect_timeout, Duration::from_secs(10));
        assert_eq!(l.topic_alias_maximum, 64);
        assert_eq!(l.max_session_expiry, u32::MAX);
        assert_eq!(l.maximum_qos, QoS::ExactlyOnce);
        assert_eq!(l.max_connections_per_sec, 0);
        assert_eq!(l.max_topic_length, 65_535);
        assert_eq!(l.max_topic_levels, 128);
        assert_eq!(l.max_subscriptions_per_client, 10_000);
        assert_eq!(l.max_publish_rate, 0);
        assert_eq!(l.max_publish_bytes_per_sec, 0);
        assert_eq!(l.max_queued_bytes, 1 << 30);
        assert_eq!(c.log.level, "info");
        assert_eq!(c.log.format, LogFormat::Text);
    }

    #[test]
    fn empty_file_is_default() {
        assert_eq!(parse("").unwrap(), Config::default());
        assert_eq!(
            parse("# nothing\n\n[limits]\n[sys]\n[log]\n").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn example_file_is_default() {
        let c = parse(EXAMPLE).unwrap();
        // Field by field first, for a readable failure, then the whole.
        assert_eq!(c.listeners, Config::default().listeners);
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.allow_anonymous, Config::default().allow_anonymous);
        assert_eq!(c.sys_interval, Config::default().sys_interval);
        assert_eq!(c.log, LogConfig::default());
        assert_eq!(c, Config::default());
    }

    #[test]
    fn example_file_sets_every_key() {
        // Every key the file layer knows appears, uncommented, in the example.
        let keys = [
            "allow_anonymous",
            "[[listeners]]",
            "name",
            "bind",
            "protocol",
            "[limits]",
            "max_connections",
            "max_packet_size",
            "receive_maximum",
            "max_inflight",
            "max_queued_messages",
            "max_keep_alive_secs",
            "connect_timeout_secs",
            "topic_alias_maximum",
            "max_session_expiry_secs",
            "maximum_qos",
            "max_connections_per_sec",
            "max_topic_length",
            "max_topic_levels",
            "max_subscriptions_per_client",
            "max_publish_rate",
            "max_publish_bytes_per_sec",
            "max_queued_bytes",
            "[sys]",
            "interval_secs",
            "[log]",
            "level",
            "format",
            "[runtime]",
            "scheduling",
        ];
        for key in keys {
            assert!(
                EXAMPLE.lines().any(|l| l.trim_start().starts_with(key)),
                "{key} missing from examples/wasp.toml"
            );
        }
    }

    #[test]
    fn full_file() {
        let text = r#"
allow_anonymous = false

[[listeners]]
name = "public"
bind = "0.0.0.0:1883"
protocol = "tcp"
max_connections = 100

[[listeners]]
name = "local-v6"
bind = "[::1]:11883"

[limits]
max_connections = 5
max_packet_size = 2
receive_maximum = 65535
max_inflight = 1
max_queued_messages = 1
max_keep_alive_secs = 60
connect_timeout_secs = 3
topic_alias_maximum = 0
max_session_expiry_secs = 0
maximum_qos = 1
max_connections_per_sec = 20
max_topic_length = 100
max_topic_levels = 8
max_subscriptions_per_client = 3
max_publish_rate = 10
max_publish_bytes_per_sec = 4096
max_queued_bytes = 0

[sys]
interval_secs = 0

[log]
level = "warn,wasp=debug"
format = "compact"

[plugin_host]
cache_dir = "/var/cache/wasp"

[metrics]
bind = "127.0.0.1:9464"

[runtime]
scheduling = "normal"
worker_threads = 3

[[plugins]]
name = "passwords"
path = "plugins/password-file.wasm"
listeners = ["public"]
on_auth_failure = "defer"
on_authz_failure = "allow"
on_transform_failure = "drop"
limits = { memory_mb = 16, call_timeout_ms = 250, instances = 2 }
dirs = [{ host = "/etc/wasp", guest = "/etc/wasp" }, { host = "state", guest = "/state", writable = true }]
http = { hosts = ["idp.example.com", "127.0.0.1:8443"], ca_file = "/etc/wasp/ca.pem", allow_plain_http = true }
[plugins.config]
file = "/etc/wasp/passwd"
reload_secs = 5
"#;
        let c = parse(text).unwrap();
        assert_eq!(
            c,
            Config {
                listeners: vec![
                    Listener {
                        name: "public".into(),
                        bind: "0.0.0.0:1883".parse().unwrap(),
                        kind: ListenerKind::Tcp,
                        tls: None,
                        allow_anonymous: None,
                        max_connections: 100,
                    },
                    Listener {
                        name: "local-v6".into(),
                        bind: "[::1]:11883".parse().unwrap(),
                        kind: ListenerKind::Tcp,
                        tls: None,
                        allow_anonymous: None,
                        max_connections: 0,
                    },
                ],
                limits: Limits {
                    max_connections: 5,
                    max_packet_size: 2,
                    receive_maximum: 65535,
                    max_inflight: 1,
                    max_queued_messages: 1,
                    max_keep_alive: 60,
                    connect_timeout: Duration::from_secs(3),
                    topic_alias_maximum: 0,
                    max_session_expiry: 0,
                    maximum_qos: QoS::AtLeastOnce,
                    max_connections_per_sec: 20,
                    max_topic_length: 100,
                    max_topic_levels: 8,
                    max_subscriptions_per_client: 3,
                    max_publish_rate: 10,
                    max_publish_bytes_per_sec: 4096,
                    max_queued_bytes: 0,
                },
                allow_anonymous: false,
                sys_interval: None,
                log: LogConfig {
                    level: "warn,wasp=debug".into(),
                    format: LogFormat::Compact
                },
                plugins: vec![PluginConfig {
                    spec: wasp_plugin_host::PluginSpec {
                        name: "passwords".into(),
                        wasm: "plugins/password-file.wasm".into(),
                        config_json: r#"{"file":"/etc/wasp/passwd","reload_secs":5}"#.into(),
                        limits: wasp_plugin_host::SandboxLimits {
                            memory_bytes: 16 << 20,
                            call_timeout: Duration::from_millis(250),
                            max_instances: 2,
                        },
                        failure: wasp_plugin_host::FailurePolicy {
                            authenticate: wasp_plugin_host::OnAccessFailure::Defer,
                            authorize: wasp_plugin_host::OnAccessFailure::Allow,
                            transform: wasp_plugin_host::OnTransformFailure::Drop,
                        },
                        dirs: vec![
                            wasp_plugin_host::DirGrant {
                                host: "/etc/wasp".into(),
                                guest: "/etc/wasp".into(),
                                writable: false,
                            },
                            wasp_plugin_host::DirGrant {
                                host: "state".into(),
                                guest: "/state".into(),
                                writable: true,
                            },
                        ],
                        http: Some(wasp_plugin_host::HttpGrant {
                            hosts: vec!["idp.example.com".into(), "127.0.0.1:8443".into()],
                            ca_file: Some("/etc/wasp/ca.pem".into()),
                            allow_plain_http: true,
                        }),
                        sockets: Vec::new(),
                    },
                    listeners: vec!["public".into()],
                }],
                plugin_cache_dir: Some("/var/cache/wasp".into()),
                metrics_bind: Some("127.0.0.1:9464".parse().unwrap()),
                storage: None,
                scheduling: Scheduling::Normal,
                worker_threads: NonZeroUsize::new(3),
            }
        );
    }

    #[test]
    fn plugin_sockets_are_addresses() {
        let plugin = "[[plugins]]\nname = \"db\"\npath = \"db.wasm\"\n";
        let config = parse(&format!(
            "{plugin}sockets = [\"127.0.0.1:6379\", \"[::1]:6380\"]\n"
        ))
        .unwrap();
        assert_eq!(
            config.plugins[0].spec.sockets,
            [
                "127.0.0.1:6379".parse().unwrap(),
                "[::1]:6380".parse().unwrap()
            ]
        );
        let m = error(
            &format!("{plugin}sockets = [\"redis:6379\"]\n"),
            4,
            "plugins.sockets",
        );
        assert!(m.contains("IP:PORT"), "{m}");
    }

    #[test]
    fn storage_names_a_plugin_which_gets_one_instance() {
        let plugin =
            "[[plugins]]\nname = \"db\"\npath = \"db.wasm\"\n[plugins.limits]\ninstances = 4\n";
        let config = parse(&format!(
            "{plugin}[storage]\nplugin = \"db\"\nbatch_delay_ms = 5\n"
        ))
        .unwrap();
        assert_eq!(
            config.storage,
            Some(StorageConfig {
                plugin: "db".into(),
                batch_delay: Duration::from_millis(5),
            })
        );
        assert_eq!(config.plugins[0].spec.limits.max_instances, 1);
        let m = error(
            &format!("{plugin}[storage]\nplugin = \"redb\"\n"),
            7,
            "storage.plugin",
        );
        assert!(m.contains("there are: db"), "{m}");
        let m = error(
            &format!("{plugin}[storage]\nplugin = \"db\"\nbatch_delay_ms = -1\n"),
            8,
            "storage.batch_delay_ms",
        );
        assert!(m.contains("milliseconds"), "{m}");
        let m = error("[storage]\nplugins = \"db\"\n", 2, "plugins");
        assert!(m.contains("plugin"), "{m}");
    }

    #[test]
    fn metrics_endpoint() {
        assert_eq!(parse("[metrics]\n").unwrap().metrics_bind, None);
        assert_eq!(
            parse("[metrics]\nbind = \"[::1]:9000\"\n")
                .unwrap()
                .metrics_bind,
            Some("[::1]:9000".parse().unwrap())
        );
        let m = error("[metrics]\nbind = \"localhost:9464\"\n", 2, "metrics.bind");
        assert!(m.contains("IP:PORT"), "{m}");
        let m = error("[metrics]\nport = 9464\n", 2, "port");
        assert!(m.contains("bind"), "{m}");
    }

    #[test]
    fn runtime_scheduling() {
        assert_eq!(parse("").unwrap().scheduling, Scheduling::Batch);
        assert_eq!(parse("[runtime]\n").unwrap().scheduling, Scheduling::Batch);
        assert_eq!(
            parse("[runtime]\nscheduling = \"batch\"\n")
                .unwrap()
                .scheduling,
            Scheduling::Batch
        );
        assert_eq!(
            parse("[runtime]\nscheduling = \"normal\"\n")
                .unwrap()
                .scheduling,
            Scheduling::Normal
        );
        let m = error(
            "[runtime]\nscheduling = \"fifo\"\n",
            2,
            "runtime.scheduling",
        );
        assert!(m.contains("\"batch\"") && m.contains("\"normal\""), "{m}");
        let m = error("[runtime]\nworkers = 2\n", 2, "`workers`");
        assert!(m.contains("scheduling"), "{m}");
    }

    #[test]
    fn runtime_worker_threads() {
        assert_eq!(parse("").unwrap().worker_threads, None);
        assert_eq!(
            parse("[runtime]\nworker_threads = 1\n")
                .unwrap()
                .worker_threads,
            NonZeroUsize::new(1)
        );
        assert_eq!(
            parse("[runtime]\nworker_threads = 1024\n")
                .unwrap()
                .worker_threads,
            NonZeroUsize::new(1024)
        );
        for bad in ["0", "-2", "1025"] {
            let m = error(
                &format!("[runtime]\nworker_threads = {bad}\n"),
                2,
                "runtime.worker_threads",
            );
            assert!(m.contains("from 1 to 1024"), "{m}");
        }
        let m = error("[runtime]\nworker_threads = \"2\"\n", 2, "worker_threads");
        assert!(m.contains("integer"), "{m}");
    }

    #[test]
    fn plugin_errors_name_the_key_and_line() {
        let base = "[[listeners]]\nname = \"a\"\nbind = \"127.0.0.1:1\"\n";
        let cases = [
            (
                "[[plugins]]\nname = \"p\"\npath = \"\"\n",
                6,
                "plugins.path",
            ),
            (
                "[[plugins]]\nname = \"p\"\npath = \"x.wasm\"\nlisteners = [\"b\"]\n",
                7,
                "plugins.listeners",
            ),
            (
                "[[plugins]]\nname = \"p\"\npath = \"x.wasm\"\non_auth_failure = \"maybe\"\n",
                7,
                "plugins.on_auth_failure",
            ),
            (
                "[[plugins]]\nname = \"p\"\npath = \"x.wasm\"\n[[plugins]]\nname = \"p\"\npath = \"y.wasm\"\n",
                8,
                "plugins.name",
            ),
            (
                "[[plugins]]\nname = \"p\"\npath = \"x.wasm\"\nlimits = { memory_mb = 0 }\n",
                7,
                "plugins.limits.memory_mb",
            ),
            (
                "[[plugins]]\nname = \"p\"\npath = \"x.wasm\"\ndirs = [{ host = \"d\", guest = \"rel\" }]\n",
                7,
                "plugins.dirs.guest",
            ),
            (
                "[[plugins]]\nname = \"p\"\npath = \"x.wasm\"\nhttp = { hosts = [] }\n",
                7,
                "plugins.http.hosts is empty",
            ),
            (
                "[[plugins]]\nname = \"p\"\npath = \"x.wasm\"\nhttp = { hosts = [\"ok.example.com\",\n  \"https://idp.example.com/jwks\"] }\n",
                8,
                "plugins.http.hosts: \"https://idp.example.com/jwks\" is not a host or host:port",
            ),
            (
                "[[plugins]]\nname = \"p\"\npath = \"x.wasm\"\nhttp = { hosts = [\"idp:0\"] }\n",
                7,
                "plugins.http.hosts",
            ),
            (
                "[[plugins]]\nname = \"p\"\npath = \"x.wasm\"\nhttp = { hosts = [\"idp\"], ca_file = \"\" }\n",
                7,
                "plugins.http.ca_file is empty",
            ),
        ];
        for (plugin, line, key) in cases {
            let message = parse(&format!("{base}{plugin}")).unwrap_err().to_string();
            assert!(
                message.starts_with(&format!("wasp.toml:{line}:")),
                "{message}"
            );
            assert!(message.contains(key), "{message}");
        }
        let message = parse(&format!(
            "{base}[[plugins]]\nname = \"p\"\npath = \"x\"\nbogus = 1\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            message.contains("unknown key `bogus` in [[plugins]]"),
            "{message}"
        );
        let message = parse(&format!(
            "{base}[[plugins]]\nname = \"p\"\npath = \"x\"\nhttp = {{ hosts = [\"a\"], redirects = true }}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(message.contains("unknown key `redirects`"), "{message}");
        assert!(message.contains("plugins.http"), "{message}");
        let message = parse(&format!(
            "{base}[[plugins]]\nname = \"p\"\npath = \"x\"\nhttp = {{ ca_file = \"ca.pem\" }}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(message.contains("hosts"), "{message}");
    }

    #[test]
    fn plugin_paths_are_relative_to_the_config_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let file = dir.join("wasp.toml");
        std::fs::write(&file, "[[plugins]]\nname = \"p\"\npath = \"p.wasm\"\ndirs = [{ host = \"data\", guest = \"/d\" }]\nhttp = { hosts = [\"idp.example.com\"], ca_file = \"certs/ca.pem\" }\n").unwrap();
        let c = Config::load(&file).unwrap();
        assert_eq!(c.plugins[0].spec.wasm, dir.join("p.wasm"));
        assert_eq!(c.plugins[0].spec.dirs[0].host, dir.join("data"));
        let http = c.plugins[0].spec.http.as_ref().unwrap();
        assert_eq!(http.ca_file, Some(dir.join("certs/ca.pem")));
        assert_eq!(http.hosts, ["idp.example.com"]);
        assert!(!http.allow_plain_http);
        assert!(c.plugins[0].listeners.is_empty());
    }

    #[test]
    fn partial_tables_keep_other_defaults() {
        let c = parse("[limits]\nmax_inflight = 7\n[sys]\ninterval_secs = 60\n").unwrap();
        assert_eq!(c.limits.max_inflight, 7);
        assert_eq!(
            c.limits,
            Limits {
                max_inflight: 7,
                ..Limits::default()
            }
        );
        assert_eq!(c.sys_interval, Some(Duration::from_secs(60)));
        assert_eq!(c.listeners, Config::default().listeners);
        // Inline tables and dotted keys are ordinary TOML and work too.
        let c = parse("limits = { maximum_qos = 0 }\nlog.level = \"debug\"\n").unwrap();
        assert_eq!(c.limits.maximum_qos, QoS::AtMostOnce);
        assert_eq!(c.log.level, "debug");
    }

    #[test]
    fn upper_bounds_are_inclusive() {
        let c = parse(
            "[limits]\nmax_packet_size = 268435460\nmax_session_expiry_secs = 4294967295\n\
             max_keep_alive_secs = 65535\nconnect_timeout_secs = 3600\ntopic_alias_maximum = 65535\n\
             [sys]\ninterval_secs = 86400\n",
        )
        .unwrap();
        assert_eq!(c.limits.max_packet_size, MAX_PACKET_SIZE_LIMIT);
        assert_eq!(c.limits.max_session_expiry, u32::MAX);
        assert_eq!(c.limits.topic_alias_maximum, u16::MAX);
        assert_eq!(c.limits.connect_timeout, Duration::from_secs(3600));
        assert_eq!(c.sys_interval, Some(Duration::from_secs(86_400)));
    }

    #[test]
    fn out_of_range_values() {
        let m = error(
            "\n\n[limits]\nmax_packet_size = 0\n",
            4,
            "limits.max_packet_size",
        );
        assert_eq!(
            m,
            "wasp.toml:4: limits.max_packet_size = 0 is out of range: use a value from 2 to 268435460 bytes"
        );
        error(
            "[limits]\nmax_packet_size = 268435461\n",
            2,
            "limits.max_packet_size",
        );
        error(
            "[limits]\nmax_connections = 0\n",
            2,
            "limits.max_connections",
        );
        error(
            "[limits]\nmax_connections = -1\n",
            2,
            "limits.max_connections",
        );
        error(
            "[limits]\nreceive_maximum = 0\n",
            2,
            "limits.receive_maximum",
        );
        error(
            "[limits]\nreceive_maximum = 65536\n",
            2,
            "limits.receive_maximum",
        );
        error("[limits]\nmax_inflight = 0\n", 2, "limits.max_inflight");
        error(
            "[limits]\nmax_queued_messages = 0\n",
            2,
            "limits.max_queued_messages",
        );
        error(
            "[limits]\nmax_keep_alive_secs = 0\n",
            2,
            "limits.max_keep_alive_secs",
        );
        error(
            "[limits]\nmax_keep_alive_secs = 65536\n",
            2,
            "limits.max_keep_alive_secs",
        );
        error(
            "[limits]\nconnect_timeout_secs = 0\n",
            2,
            "limits.connect_timeout_secs",
        );
        error(
            "[limits]\nconnect_timeout_secs = 3601\n",
            2,
            "limits.connect_timeout_secs",
        );
        error(
            "[limits]\ntopic_alias_maximum = -1\n",
            2,
            "limits.topic_alias_maximum",
        );
        error(
            "[limits]\ntopic_alias_maximum = 65536\n",
            2,
            "limits.topic_alias_maximum",
        );
        error(
            "[limits]\nmax_session_expiry_secs = -1\n",
            2,
            "limits.max_session_expiry_secs",
        );
        error(
            "[limits]\nmax_session_expiry_secs = 4294967296\n",
            2,
            "limits.max_session_expiry_secs",
        );
        // Beyond TOML's 64-bit integers: still a range message, not a type error.
        let m = error(
            "[limits]\nmax_session_expiry_secs = 99999999999999999999\n",
            2,
            "out of range",
        );
        assert!(m.contains("limits.max_session_expiry_secs"), "{m}");
        let m = error("[limits]\nmaximum_qos = 3\n", 2, "limits.maximum_qos");
        assert!(
            m.contains("use 0 (at most once), 1 (at least once) or 2 (exactly once)"),
            "{m}"
        );
        error("[limits]\nmaximum_qos = -1\n", 2, "limits.maximum_qos");
        error("[sys]\ninterval_secs = -1\n", 2, "sys.interval_secs");
        error("[sys]\ninterval_secs = 86401\n", 2, "sys.interval_secs");
    }

    #[test]
    fn abuse_limits_parse_and_zero_means_unlimited() {
        let c = parse(
            "[limits]\nmax_connections_per_sec = 50\nmax_topic_length = 1\nmax_topic_levels = 65535\n\
             max_subscriptions_per_client = 0\nmax_publish_rate = 0\n\
             max_publish_bytes_per_sec = 9223372036854775807\nmax_queued_bytes = 0\n",
        )
        .unwrap();
        let l = &c.limits;
        assert_eq!(l.max_connections_per_sec, 50);
        assert_eq!(l.max_topic_length, 1);
        assert_eq!(l.max_topic_levels, 65_535);
        assert_eq!(l.max_subscriptions_per_client, 0);
        assert_eq!(l.max_publish_rate, 0);
        assert_eq!(l.max_publish_bytes_per_sec, i64::MAX as u64);
        assert_eq!(l.max_queued_bytes, 0);
    }

    #[test]
    fn abuse_limits_out_of_range() {
        let m = error(
            "[limits]\n\nmax_topic_length = 0\n",
            3,
            "limits.max_topic_length",
        );
        assert_eq!(
            m,
            "wasp.toml:3: limits.max_topic_length = 0 is out of range: use a value from 1 to 65535 bytes"
        );
        error(
            "[limits]\nmax_topic_length = 65536\n",
            2,
            "limits.max_topic_length",
        );
        error(
            "[limits]\nmax_topic_levels = 0\n",
            2,
            "limits.max_topic_levels",
        );
        error(
            "[limits]\nmax_connections_per_sec = -1\n",
            2,
            "limits.max_connections_per_sec",
        );
        error(
            "[limits]\nmax_connections_per_sec = 4294967296\n",
            2,
            "limits.max_connections_per_sec",
        );
        error(
            "[limits]\nmax_subscriptions_per_client = -1\n",
            2,
            "limits.max_subscriptions_per_client",
        );
        let m = error(
            "[limits]\nmax_publish_rate = -5\n",
            2,
            "limits.max_publish_rate",
        );
        assert!(m.contains("messages per second"), "{m}");
        error(
            "[limits]\nmax_publish_bytes_per_sec = -1\n",
            2,
            "limits.max_publish_bytes_per_sec",
        );
        error(
            "[limits]\nmax_queued_bytes = -1\n",
            2,
            "limits.max_queued_bytes",
        );
        let m = error(
            "[limits]\nmax_publish_bytes = 1\n",
            2,
            "`max_publish_bytes`",
        );
        assert!(m.contains("max_publish_bytes_per_sec"), "{m}");
    }

    #[test]
    fn range_error_is_the_invalid_variant() {
        match parse("[limits]\nmax_inflight = 0\n") {
            Err(ConfigError::Invalid { at, key, .. }) => {
                assert_eq!(
                    at,
                    Location {
                        file: "wasp.toml".into(),
                        line: Some(2)
                    }
                );
                assert_eq!(key, "limits.max_inflight");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn listener_errors() {
        let m = error("listeners = []\n", 1, "listeners");
        assert!(m.contains("at least one [[listeners]]"), "{m}");

        let two_names = "[[listeners]]\nname = \"a\"\nbind = \"127.0.0.1:1\"\n\n\
                         [[listeners]]\nname = \"a\"\nbind = \"127.0.0.1:2\"\n";
        let m = error(two_names, 6, "listeners.name");
        assert!(
            m.contains("\"a\" is already used by the listener on line 2"),
            "{m}"
        );

        let two_binds = "[[listeners]]\nname = \"a\"\nbind = \"127.0.0.1:1\"\n\n\
                         [[listeners]]\nname = \"b\"\nbind = \"127.0.0.1:1\"\n";
        let m = error(two_binds, 7, "listeners.bind");
        assert!(
            m.contains("already used by listener \"a\" on line 3"),
            "{m}"
        );

        let m = error(
            "[[listeners]]\nname = \"a\"\nbind = \"localhost:1883\"\n",
            3,
            "listeners.bind",
        );
        assert!(m.contains("not a socket address"), "{m}");
        error(
            "[[listeners]]\nname = \"a\"\nbind = \"127.0.0.1\"\n",
            3,
            "listeners.bind",
        );
        error(
            "[[listeners]]\nname = \"\"\nbind = \"127.0.0.1:1\"\n",
            2,
            "listeners.name",
        );
        let m = error(
            "[[listeners]]\nname = \"a\"\nbind = \"127.0.0.1:1\"\nprotocol = \"mqtts\"\n",
            4,
            "listeners.protocol",
        );
        assert!(
            m.contains("use \"tcp\"") && m.contains("\"ws\"") && m.contains("[listeners.tls]"),
            "{m}"
        );
    }

    #[test]
    fn websocket_and_tls_listeners() {
        let text = "allow_anonymous = false\n\
                    [[listeners]]\nname = \"ws\"\nbind = \"127.0.0.1:8080\"\nprotocol = \"ws\"\n\
                    [[listeners]]\nname = \"wss\"\nbind = \"127.0.0.1:8443\"\nprotocol = \"ws\"\n\
                    path = \"/broker\"\nallow_anonymous = true\n\
                    [listeners.tls]\ncert_file = \"certs/server.pem\"\nkey_file = \"/etc/wasp/server.key\"\n\
                    [[listeners]]\nname = \"mtls\"\nbind = \"127.0.0.1:8883\"\n\
                    tls = { cert_file = \"s.pem\", key_file = \"s.key\", client_ca_file = \"ca.pem\", \
                    require_client_cert = true, username_from_cert = \"san\", min_version = \"1.3\", \
                    reload_check_secs = 0 }\n";
        let c = Config::parse_in(text, "wasp.toml", Path::new("/etc/wasp")).unwrap();
        let [ws, wss, mtls] = &c.listeners[..] else {
            panic!("three listeners: {:?}", c.listeners)
        };
        assert_eq!(
            ws.kind,
            ListenerKind::WebSocket {
                path: "/mqtt".into()
            }
        );
        assert_eq!((ws.tls.as_ref(), ws.allow_anonymous), (None, None));
        assert_eq!(
            wss.kind,
            ListenerKind::WebSocket {
                path: "/broker".into()
            }
        );
        assert_eq!(wss.allow_anonymous, Some(true));
        assert_eq!(
            wss.tls,
            Some(TlsSettings {
                cert_file: "/etc/wasp/certs/server.pem".into(),
                key_file: "/etc/wasp/server.key".into(),
                client_ca_file: None,
                require_client_cert: false,
                username_from_cert: None,
                min_version: TlsVersion::V1_2,
                reload_check: Some(Duration::from_secs(10)),
            })
        );
        assert_eq!(mtls.kind, ListenerKind::Tcp);
        assert_eq!(
            mtls.tls,
            Some(TlsSettings {
                cert_file: "/etc/wasp/s.pem".into(),
                key_file: "/etc/wasp/s.key".into(),
                client_ca_file: Some("/etc/wasp/ca.pem".into()),
                require_client_cert: true,
                username_from_cert: Some(CertField::SubjectAltName),
                min_version: TlsVersion::V1_3,
                reload_check: None,
            })
        );
    }

    #[test]
    fn websocket_and_tls_listener_errors() {
        let base = "[[listeners]]\nname = \"a\"\nbind = \"127.0.0.1:1\"\n";
        let m = error(&format!("{base}path = \"/mqtt\"\n"), 4, "listeners.path");
        assert!(m.contains("protocol = \"ws\""), "{m}");
        let m = error(
            &format!("{base}protocol = \"ws\"\npath = \"mqtt\"\n"),
            5,
            "listeners.path",
        );
        assert!(m.contains("starts with \"/\""), "{m}");
        let tls = |rest: &str| {
            format!("{base}[listeners.tls]\ncert_file = \"c\"\nkey_file = \"k\"\n{rest}")
        };
        let m = error(
            &tls("require_client_cert = true\n"),
            7,
            "listeners.tls.require_client_cert",
        );
        assert!(m.contains("add client_ca_file"), "{m}");
        let m = error(
            &tls("username_from_cert = \"cn\"\n"),
            7,
            "listeners.tls.username_from_cert",
        );
        assert!(m.contains("client_ca_file"), "{m}");
        let m = error(
            &tls("client_ca_file = \"ca\"\nusername_from_cert = \"cn\"\n"),
            4,
            "listeners.tls.username_from_cert",
        );
        assert!(m.contains("require_client_cert = true"), "{m}");
        let m = error(
            &tls(
                "client_ca_file = \"ca\"\nrequire_client_cert = true\nusername_from_cert = \"dn\"\n",
            ),
            9,
            "listeners.tls.username_from_cert",
        );
        assert!(m.contains("\"cn\"") && m.contains("\"san\""), "{m}");
        let m = error(
            &tls("min_version = \"1.1\"\n"),
            7,
            "listeners.tls.min_version",
        );
        assert!(m.contains("\"1.2\" or \"1.3\""), "{m}");
        error(
            &tls("reload_check_secs = -1\n"),
            7,
            "listeners.tls.reload_check_secs",
        );
        let m = error(
            &format!("{base}[listeners.tls]\ncert_file = \"c\"\n"),
            4,
            "key_file",
        );
        assert!(m.contains("key_file"), "{m}");
        let m = error(&tls("ca = \"x\"\n"), 7, "ca");
        assert!(m.contains("client_ca_file"), "{m}");
    }

    #[test]
    fn listener_max_connections() {
        let c = parse("[[listeners]]\nname = \"a\"\nbind = \"127.0.0.1:1\"\nmax_connections = 7\n")
            .unwrap();
        assert_eq!(c.listeners[0].max_connections, 7);
        let m = error(
            "[[listeners]]\nname = \"a\"\nbind = \"127.0.0.1:1\"\nmax_connections = -1\n",
            4,
            "listeners.max_connections",
        );
        assert!(m.contains("out of range"), "{m}");
        let m = error(
            "[[listeners]]\nname = \"a\"\nbind = \"127.0.0.1:1\"\nmax_connections = \"10\"\n",
            4,
            "listeners.max_connections",
        );
        assert!(m.contains("wrong type"), "{m}");
    }

    #[test]
    fn port_zero_listeners_may_share_an_ip() {
        let c = parse(
            "[[listeners]]\nname = \"a\"\nbind = \"127.0.0.1:0\"\n\
             [[listeners]]\nname = \"b\"\nbind = \"127.0.0.1:0\"\n",
        )
        .unwrap();
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(c.listeners[1].bind.port(), 0);
    }

    #[test]
    fn missing_required_listener_keys() {
        let m = error(
            "[[listeners]]\nname = \"a\"\nbind = \"127.0.0.1:1\"\n\n[[listeners]]\nbind = \"127.0.0.1:2\"\n",
            5,
            "`name`",
        );
        assert!(m.contains("missing key `name` in [[listeners]]"), "{m}");
        let m = error("[[listeners]]\nname = \"a\"\n", 1, "`bind`");
        assert!(m.contains("bind = \"127.0.0.1:1883\""), "{m}");
    }

    #[test]
    fn log_errors() {
        error("[log]\nlevel = \"\"\n", 2, "log.level");
        let m = error("[log]\nlevel = \"wasp=loud\"\n", 2, "log.level");
        assert!(m.contains("not a valid filter"), "{m}");
        let m = error("[log]\nformat = \"json\"\n", 2, "log.format");
        assert!(m.contains("\"text\" or \"compact\""), "{m}");
    }

    #[test]
    fn unknown_keys() {
        let m = error(
            "allow_anonymous = true\nallow_anonymus = false\n",
            2,
            "`allow_anonymus`",
        );
        assert_eq!(
            m,
            "wasp.toml:2: unknown key `allow_anonymus` in the top level: expected one of \
             allow_anonymous, listeners, limits, sys, log, plugin_host, plugins, metrics, storage, runtime"
        );
        let m = error(
            "[[listeners]]\nname = \"a\"\nlisen = \"127.0.0.1:1\"\n",
            3,
            "`lisen`",
        );
        assert_eq!(
            m,
            "wasp.toml:3: unknown key `lisen` in [[listeners]]: expected one of name, bind, protocol, path, \
             allow_anonymous, tls, max_connections"
        );
        let m = error(
            "[limits]\nmax_inflight = 1\nmax_packets = 2\n",
            3,
            "`max_packets`",
        );
        assert!(m.contains("in [limits]"), "{m}");
        assert!(m.contains("max_packet_size"), "{m}");
        let m = error("\n[sys]\ninterval = 5\n", 3, "`interval`");
        assert!(
            m.ends_with("in [sys]: expected one of interval_secs"),
            "{m}"
        );
        let m = error("log.colour = true\n", 1, "`colour`");
        assert!(m.contains("in [log]: expected one of level, format"), "{m}");
        assert!(matches!(
            parse("[limits]\nfoo = 1\n"),
            Err(ConfigError::UnknownKey { .. })
        ));
    }

    #[test]
    fn type_errors() {
        let m = error(
            "[limits]\n\nmax_packet_size = \"1MB\"\n",
            3,
            "limits.max_packet_size",
        );
        assert!(m.contains("wrong type"), "{m}");
        assert!(m.contains("expected an integer"), "{m}");
        let m = error("allow_anonymous = \"yes\"\n", 1, "allow_anonymous");
        assert!(m.contains("expected a boolean"), "{m}");
        error(
            "[[listeners]]\nname = 1\nbind = \"127.0.0.1:1\"\n",
            2,
            "listeners.name",
        );
        error("[limits]\nmax_inflight = 1.5\n", 2, "limits.max_inflight");
        let m = error("\nlimits = 3\n", 2, "limits has the wrong type");
        assert!(m.ends_with("expected a table"), "{m}");
        let m = error("listeners = 3\n", 1, "listeners has the wrong type");
        assert!(m.ends_with("expected an array"), "{m}");
        assert!(matches!(
            parse("[log]\nlevel = 3\n"),
            Err(ConfigError::WrongType { .. })
        ));
    }

    #[test]
    fn syntax_errors() {
        let m = error("allow_anonymous = true\n[limits\n", 2, "invalid TOML");
        assert!(matches!(
            parse("allow_anonymous = true\n[limits\n"),
            Err(ConfigError::Syntax { .. })
        ));
        assert!(!m.contains('\n'), "one line: {m:?}");
        error(
            "[limits]\nmax_inflight = 1\nmax_inflight = 2\n",
            3,
            "duplicate key at `max_inflight`",
        );
        error("[limits]\n\n[limits]\n", 3, "duplicate key at `limits`");
    }

    #[test]
    fn load_reads_files_and_names_them() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let path = dir.join("broker.toml");
        std::fs::write(&path, "[limits]\nmax_inflight = 5\n").unwrap();
        assert_eq!(Config::load(&path).unwrap().limits.max_inflight, 5);

        std::fs::write(&path, "[limits]\nmax_inflight = 0\n").unwrap();
        let m = Config::load(&path).unwrap_err().to_string();
        assert!(m.starts_with(&format!("{}:2: ", path.display())), "{m}");

        let missing = dir.join("absent.toml");
        let e = Config::load(&missing).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
        assert!(e.to_string().contains("absent.toml"), "{e}");
    }
}
