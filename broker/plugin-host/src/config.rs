//! What the broker tells the host: the host-wide settings and one spec per plugin. These are domain
//! types, already validated by whoever parsed the configuration file.

use std::path::PathBuf;
use std::time::Duration;

/// Host-wide settings, fixed for the life of the [`PluginHost`](crate::PluginHost).
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Where compiled plugins are cached. `None`: `$XDG_CACHE_HOME/wasp`, else `$HOME/.cache/wasp`, else
    /// no cache (every start compiles).
    pub cache_dir: Option<PathBuf>,
    /// The largest linear memory any plugin may be given, in bytes. The pooling allocator reserves this
    /// much address space per memory slot; a plugin's [`SandboxLimits::memory_bytes`] above it is
    /// refused at load. Default 256 MiB.
    pub max_memory_bytes: u64,
    /// Instances the whole host may keep alive at once, across plugins (pooling allocator slots, and
    /// fiber stacks for calls in flight). Each plugin reserves its `max_instances` at load; a plugin
    /// that does not fit is refused with [`HostError::Limits`](crate::HostError::Limits). Default 256.
    pub total_instances: u32,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            max_memory_bytes: 256 << 20,
            total_instances: 256,
        }
    }
}

/// The sandbox of one plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxLimits {
    /// Linear memory per instance, in bytes (all memories of a component together). Default 128 MiB: a
    /// limit, not an allocation (an instance's memory is what it touches; a Rust plugin stays near
    /// 2 MiB), and what the interpreter guests need: componentize-js' SpiderMonkey grows its heap past
    /// 64 MiB before collecting (json-guard in JavaScript ran out of 64 MiB on 64 KiB payloads).
    pub memory_bytes: u64,
    /// Wall-clock budget of one call, a kill switch rather than a budget: epochs tick every 10 ms, so a
    /// runaway call ends between `call_timeout` and `call_timeout + 10 ms`. Default 100 ms.
    pub call_timeout: Duration,
    /// Warm instances kept for concurrent calls; a call waits when all are busy. Default 4.
    pub max_instances: u32,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 128 << 20,
            call_timeout: Duration::from_millis(100),
            max_instances: 4,
        }
    }
}

/// What an authentication or authorization answer is when the plugin's call fails (trap, deadline,
/// out of memory, invalid output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnAccessFailure {
    /// Refuse (reason code 0x80, unspecified error). The safe default.
    #[default]
    Deny,
    /// Ask the next plugin, as if this one had no opinion.
    Defer,
    /// Let the client in (no attributes) or allow the operation. For plugins that only add information.
    Allow,
}

/// What happens to a message when a transformer's call fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnTransformFailure {
    /// Route the message as this plugin received it. The default.
    #[default]
    Pass,
    /// Drop the message (reason code 0x80 to MQTT 5 publishers).
    Drop,
}

/// The failure policy of one plugin, per hook family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailurePolicy {
    pub authenticate: OnAccessFailure,
    pub authorize: OnAccessFailure,
    pub transform: OnTransformFailure,
}

/// A host directory made visible to a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    pub host: PathBuf,
    /// The path the plugin opens it by, e.g. `/data`.
    pub guest: String,
    /// Read-only unless set.
    pub writable: bool,
}

/// Outgoing HTTP a plugin may make through the `http` import (WIT 0.1.1). A plugin whose component
/// imports `wasp:plugin/http` is refused at load without one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpGrant {
    /// The hosts the plugin may reach: `"host"` (the scheme's default port: 443, or 80 for plain
    /// HTTP) or `"host:port"`; IPv6 addresses in brackets (`"[::1]:8443"`). Compared case-insensitively
    /// with the URL's host; no wildcards. Empty: every request is refused.
    pub hosts: Vec<String>,
    /// PEM certificates trusted besides the built-in (webpki) roots, e.g. the CA of a private identity
    /// provider.
    pub ca_file: Option<PathBuf>,
    /// Whether `http://` URLs are allowed (default: only `https://`).
    pub allow_plain_http: bool,
}

impl HttpGrant {
    /// Checks one `hosts` entry: a host name or IP address with an optional port, nothing else (no
    /// scheme, path, user or wildcard). `Err` says what is wrong.
    pub fn check_host_entry(entry: &str) -> Result<(), String> {
        crate::imports::http::parse_host_entry(entry).map(|_| ())
    }
}

/// One plugin to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSpec {
    /// Unique among the broker's plugins; names its logs, metrics and errors.
    pub name: String,
    pub wasm: PathBuf,
    /// The plugin's `config` table, as JSON text, given to `init`.
    pub config_json: String,
    pub limits: SandboxLimits,
    pub failure: FailurePolicy,
    pub dirs: Vec<DirGrant>,
    /// Outgoing HTTP (the `http` import); `None`: a component importing it is refused at load.
    pub http: Option<HttpGrant>,
    /// TCP addresses the plugin may connect to through WASI sockets (a storage backend's database
    /// server); empty: no network. Nothing else is allowed: no listening, no UDP, no name lookup.
    pub sockets: Vec<std::net::SocketAddr>,
}

impl PluginSpec {
    /// A spec with default limits and policy, config `{}`, no directories, no HTTP and no sockets.
    pub fn new(name: impl Into<String>, wasm: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            wasm: wasm.into(),
            config_json: "{}".to_owned(),
            limits: SandboxLimits::default(),
            failure: FailurePolicy::default(),
            dirs: Vec::new(),
            http: None,
            sockets: Vec::new(),
        }
    }
}
