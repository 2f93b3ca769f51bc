//! Host imports, one file per WIT interface (`log`, `clock`, `kv`, `metrics`, `http`) plus the guest's
//! stdio.
//! Each capability sits behind a trait or type that the broker and the test harness choose per plugin
//! ([`HostServices`]); what a guest can make the host store is capped here.

pub mod clock;
pub mod http;
pub mod kv;
pub mod log;
pub mod metrics;
pub mod stdio;

use std::sync::Arc;

/// The services one plugin's imports are backed by.
#[derive(Clone)]
pub struct HostServices {
    /// `clock.now-millis`, and the WASI wall clock the guest's standard library reads.
    pub clock: Arc<dyn clock::Clock>,
    /// `kv`: private to the plugin.
    pub kv: Arc<dyn kv::KvStore>,
    /// Where `log` calls and the guest's stdout/stderr lines go.
    pub log: Arc<dyn log::LogSink>,
    /// What sends the plugin's `http` requests once its grant allowed them. `None`: a
    /// [`ReqwestClient`](http::ReqwestClient) trusting the grant's `ca_file`, built at load when the
    /// component imports `http`.
    pub http: Option<Arc<dyn http::HttpClient>>,
}

impl Default for HostServices {
    /// The broker's: system clock, an in-memory kv, logs into `tracing`, the production HTTP client.
    fn default() -> Self {
        Self {
            clock: Arc::new(clock::SystemClock),
            kv: Arc::new(kv::MemoryKv::default()),
            log: Arc::new(log::TracingLog),
            http: None,
        }
    }
}

impl std::fmt::Debug for HostServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostServices").finish_non_exhaustive()
    }
}

/// What every instance of one plugin shares: its name, services and counters.
pub(crate) struct PluginCtx {
    pub name: Arc<str>,
    pub services: HostServices,
    pub metrics: metrics::Counters,
    /// The `http` grant and client; `None` when the component does not import `http`.
    pub http: Option<Arc<http::HttpAccess>>,
    /// The most linear memory (bytes, all memories together) any instance of the plugin has had.
    pub peak_memory: std::sync::atomic::AtomicU64,
}

/// Cuts `text` to at most `max` bytes on a character boundary.
pub(crate) fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}
