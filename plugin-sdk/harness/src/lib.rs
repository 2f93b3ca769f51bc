//! Test harness for Wasp plugins: loads a plugin's `.wasm` into the broker's own plugin host
//! (`wasp-plugin-host`, the same code and production sandbox limits, no mocks of the host), with a
//! controllable clock, an in-memory kv and captured logs, and offers typed calls that look synchronous.
//!
//! ```no_run
//! use wasp_plugin_harness::{client, plugin_wasm, AuthVerdict, Harness};
//!
//! // In a plugin crate's tests, under #[test]:
//! fn alice_gets_in() {
//!     let plugin = Harness::load(plugin_wasm!()).config_toml("users = ['alice']").build().unwrap();
//!     let verdict = plugin.authenticate(client("c1").username("alice").auth_request()).unwrap();
//!     assert!(matches!(verdict, AuthVerdict::Allow(_)));
//! }
//! ```
//!
//! Calls block on a runtime owned by the harness: use the harness from plain `#[test]` functions, not
//! from inside an async runtime.
//!
//! Plugins in other languages run through the same harness: [`build_python`] (componentize-py) and
//! [`build_js`] (componentize-js) build a plugin's sources into a component, cached in the target dir,
//! for [`Harness::load`].
//!
//! Outgoing HTTP (the WIT 0.1.1 `http` import) is scripted: grant hosts with
//! [`HarnessBuilder::http_grant`], say what URLs answer with [`Harness::http`] ([`ScriptedHttp`]) and
//! check what the plugin sent. The host's grant check, request checks and deadline run as in the broker;
//! nothing leaves the process.

mod build;
mod client;
pub mod conformance;
mod http;
mod interpreted;
pub mod redis;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
pub use wasp_plugin_host::storage;
pub use wasp_plugin_host::types::*;
pub use wasp_plugin_host::{
    CallError, Clock, DirGrant, Exports, FailurePolicy, HostError, HttpGrant, KvStore, LogRecord,
    LogSink, MemoryKv, Plugin, PluginStats, SandboxLimits,
};
use wasp_plugin_host::{HostConfig, HostServices, PluginHost, PluginSpec, TracingLog};

pub use build::build_wasm;
pub use client::{ClientBuilder, client, message};
pub use http::{HttpError, HttpRequest, HttpResponse, ScriptedHttp};
pub use interpreted::{
    COMPONENTIZE_JS_VERSION, COMPONENTIZE_PY_VERSION, build_js, build_python, wasp_wit_dir,
};

/// Builds the plugin crate this macro is used in (its `CARGO_MANIFEST_DIR`) and returns the `.wasm` path.
#[macro_export]
macro_rules! plugin_wasm {
    () => {
        $crate::build_wasm(::std::path::Path::new(env!("CARGO_MANIFEST_DIR")))
    };
}

/// A clock the test sets. Starts at 2023-11-14T22:13:20Z (1 700 000 000 000 ms).
#[derive(Debug)]
pub struct TestClock(AtomicU64);

impl Default for TestClock {
    fn default() -> Self {
        Self(AtomicU64::new(1_700_000_000_000))
    }
}

impl TestClock {
    pub fn set_millis(&self, millis: u64) {
        self.0.store(millis, Ordering::SeqCst);
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn millis(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl Clock for TestClock {
    fn now_millis(&self) -> u64 {
        self.millis()
    }
}

/// Keeps every log record (and forwards it to `tracing`).
#[derive(Default)]
struct Capture(Mutex<Vec<LogRecord>>);

impl LogSink for Capture {
    fn log(&self, record: LogRecord) {
        TracingLog.log(record.clone());
        self.0.lock().push(record);
    }
}

/// Configures a [`Harness`].
#[must_use]
pub struct HarnessBuilder {
    wasm: PathBuf,
    config_json: String,
    dirs: Vec<DirGrant>,
    limits: SandboxLimits,
    cache_dir: Option<PathBuf>,
    http: Option<HttpGrant>,
    sockets: Vec<std::net::SocketAddr>,
}

impl HarnessBuilder {
    /// The plugin's config as JSON text (default `{}`).
    pub fn config_json(mut self, json: &str) -> Self {
        self.config_json = json.to_owned();
        self
    }

    /// The plugin's config as TOML (the body of its `[plugins.config]` table), converted to JSON as the
    /// broker does. Panics if it is not valid TOML.
    pub fn config_toml(mut self, toml_text: &str) -> Self {
        let value: toml::Table =
            toml::from_str(toml_text).unwrap_or_else(|e| panic!("config_toml: invalid TOML: {e}"));
        self.config_json = serde_json::to_string(&value).expect("TOML values convert to JSON");
        self
    }

    /// Grants a read-only directory: `host` is visible to the plugin as `guest`.
    pub fn dir(mut self, host: impl AsRef<Path>, guest: &str) -> Self {
        self.dirs.push(DirGrant {
            host: host.as_ref().to_owned(),
            guest: guest.to_owned(),
            writable: false,
        });
        self
    }

    /// Grants a writable directory.
    pub fn dir_writable(mut self, host: impl AsRef<Path>, guest: &str) -> Self {
        self.dirs.push(DirGrant {
            host: host.as_ref().to_owned(),
            guest: guest.to_owned(),
            writable: true,
        });
        self
    }

    /// Grants outgoing HTTPS to `hosts` (`"host"` or `"host:port"`, as in the broker's
    /// `http = { hosts = [...] }`). Answers come from [`Harness::http`]. A plugin that imports `http`
    /// does not load without a grant, as in the broker.
    pub fn http_grant<S: Into<String>>(self, hosts: impl IntoIterator<Item = S>) -> Self {
        self.http_grant_with(HttpGrant {
            hosts: hosts.into_iter().map(Into::into).collect(),
            ..HttpGrant::default()
        })
    }

    /// Grants TCP connections to `addresses` through WASI sockets (the broker's `sockets = [...]`), for
    /// a plugin that talks to a real server, such as a storage backend's database on loopback.
    pub fn sockets(mut self, addresses: impl IntoIterator<Item = std::net::SocketAddr>) -> Self {
        self.sockets.extend(addresses);
        self
    }

    /// Grants outgoing HTTP with every option (e.g. `allow_plain_http`; `ca_file` is checked but
    /// unused, since answers are scripted).
    pub fn http_grant_with(mut self, grant: HttpGrant) -> Self {
        self.http = Some(grant);
        self
    }

    /// Sandbox limits (default: the broker's defaults).
    pub fn limits(mut self, limits: SandboxLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Where compiled plugins are cached (default: the host's default, `$XDG_CACHE_HOME/wasp`).
    pub fn cache_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.cache_dir = Some(dir.as_ref().to_owned());
        self
    }

    /// Loads the plugin and calls its `init`.
    pub fn build(self) -> Result<Harness, HostError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| HostError::Engine(format!("cannot start the harness runtime: {e}")))?;
        let host = PluginHost::new(HostConfig {
            cache_dir: self.cache_dir,
            ..HostConfig::default()
        })?;
        let clock = Arc::new(TestClock::default());
        let kv = Arc::new(MemoryKv::default());
        let logs = Arc::new(Capture::default());
        let http = Arc::new(ScriptedHttp::default());
        let services = HostServices {
            clock: clock.clone(),
            kv: kv.clone(),
            log: logs.clone(),
            http: Some(http.clone()),
        };
        let name = self
            .wasm
            .file_stem()
            .map_or_else(|| "plugin".to_owned(), |s| s.to_string_lossy().into_owned());
        let spec = PluginSpec {
            name,
            wasm: self.wasm,
            config_json: self.config_json,
            limits: self.limits,
            failure: FailurePolicy::default(),
            dirs: self.dirs,
            http: self.http,
            sockets: self.sockets,
        };
        let plugin = runtime.block_on(host.load(spec, services))?;
        Ok(Harness {
            runtime,
            plugin,
            clock,
            kv,
            logs,
            http,
            _host: host,
        })
    }
}

/// A loaded plugin under test.
pub struct Harness {
    runtime: tokio::runtime::Runtime,
    plugin: Plugin,
    clock: Arc<TestClock>,
    kv: Arc<MemoryKv>,
    logs: Arc<Capture>,
    http: Arc<ScriptedHttp>,
    _host: PluginHost,
}

impl Harness {
    /// Starts configuring a harness for this `.wasm` (see [`plugin_wasm!`] to build it).
    pub fn load(wasm: impl AsRef<Path>) -> HarnessBuilder {
        HarnessBuilder {
            wasm: wasm.as_ref().to_owned(),
            config_json: "{}".to_owned(),
            dirs: Vec::new(),
            limits: SandboxLimits::default(),
            cache_dir: None,
            http: None,
            sockets: Vec::new(),
        }
    }

    pub fn authenticate(&self, request: AuthRequest) -> Result<AuthVerdict, CallError> {
        self.runtime.block_on(self.plugin.authenticate(&request))
    }

    pub fn authorize_publish(
        &self,
        session: &Session,
        topic: &str,
        qos: Qos,
        retain: bool,
    ) -> Result<AuthzVerdict, CallError> {
        self.runtime
            .block_on(self.plugin.authorize_publish(session, topic, qos, retain))
    }

    pub fn authorize_subscribe(
        &self,
        session: &Session,
        filter: &str,
        qos: Qos,
    ) -> Result<SubscribeVerdict, CallError> {
        self.runtime
            .block_on(self.plugin.authorize_subscribe(session, filter, qos))
    }

    pub fn transform(
        &self,
        session: &Session,
        message: Message,
    ) -> Result<TransformVerdict, CallError> {
        self.runtime
            .block_on(self.plugin.transform(session, &message))
    }

    /// [`transform`](Self::transform) with how long the broker may reuse the verdict (WIT 0.1.3):
    /// `cache_seconds` is what the plugin answered (`None` from a plugin that exports only
    /// `transformer`). Stamps (WIT 0.1.4) are set in the verdict at the harness's clock, as in
    /// [`transform`](Self::transform); [`transform_stamping`](Self::transform_stamping) keeps them apart.
    pub fn transform_cacheable(
        &self,
        session: &Session,
        message: Message,
    ) -> Result<CacheableTransformVerdict, CallError> {
        self.runtime
            .block_on(self.plugin.transform_cacheable(session, &message))
    }

    /// The plugin's transform answer as it gave it (WIT 0.1.4): the verdict, how long the broker may
    /// reuse it, and the stamps the broker would set on each message it gives the verdict to (empty from
    /// a plugin that exports no `stamping-transformer`).
    pub fn transform_stamping(
        &self,
        session: &Session,
        message: Message,
    ) -> Result<StampingTransformVerdict, CallError> {
        self.runtime
            .block_on(self.plugin.transform_stamping(session, &message))
    }

    /// The plugin's transform answer as it gave it (WIT 0.1.5): [`transform_stamping`]'s, and the
    /// payload sizes the broker may reuse it for (`None`: any, and always from a plugin that exports no
    /// `sized-transformer`). [`transform_stamping`] gives a verdict for a range of sizes no lifetime.
    ///
    /// [`transform_stamping`]: Self::transform_stamping
    pub fn transform_sized(
        &self,
        session: &Session,
        message: Message,
    ) -> Result<SizedTransformVerdict, CallError> {
        self.runtime
            .block_on(self.plugin.transform_sized(session, &message))
    }

    /// Calls the plugin's `ticker` export (WIT 0.1.1): the seconds until the broker would call it
    /// again, 0 for never. [`CallError::MissingExport`] when the plugin does not export it.
    pub fn tick(&self) -> Result<u32, CallError> {
        self.runtime.block_on(self.plugin.tick())
    }

    /// Calls the plugin's `storage` export's `write` (WIT 0.1.2) with one batch: `Ok(Err(message))` is
    /// the backend's refusal. [`CallError::MissingExport`] when the plugin does not export it.
    pub fn storage_write(&self, batch: &[storage::Op]) -> Result<Result<(), String>, CallError> {
        self.runtime.block_on(self.plugin.storage_write(batch))
    }

    /// Calls the plugin's `storage` export's `load` (WIT 0.1.2): up to `limit` records of `keyspace`
    /// after `after`, checked to be in key order as the broker checks them.
    #[allow(clippy::type_complexity)]
    pub fn storage_load(
        &self,
        keyspace: storage::Keyspace,
        after: Option<&storage::Key>,
        limit: u32,
    ) -> Result<Result<Vec<(storage::Key, Vec<u8>)>, String>, CallError> {
        self.runtime
            .block_on(self.plugin.storage_load(keyspace, after, limit))
    }

    /// The scripted HTTP answers and the requests the plugin sent.
    pub fn http(&self) -> &ScriptedHttp {
        &self.http
    }

    /// What the plugin's `init` declared.
    pub fn interests(&self) -> &Interests {
        self.plugin.interests()
    }

    pub fn exports(&self) -> Exports {
        self.plugin.exports()
    }

    pub fn clock(&self) -> &TestClock {
        &self.clock
    }

    pub fn kv(&self) -> &MemoryKv {
        &self.kv
    }

    /// Everything the plugin logged so far (`log` calls, stdout and stderr lines), in order.
    pub fn logs(&self) -> Vec<LogRecord> {
        self.logs.0.lock().clone()
    }

    /// The plugin's counters, sorted by name.
    pub fn metrics(&self) -> Vec<(String, u64)> {
        self.plugin.metrics()
    }

    /// Calls, failures and instances, as the broker counts them.
    pub fn stats(&self) -> PluginStats {
        self.plugin.stats()
    }

    /// The loaded plugin itself, e.g. to put it in a `wasp_plugin_host::Chain`.
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }
}
