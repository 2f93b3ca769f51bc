//! Shared by the plugin host's integration tests.

use wasp_plugin_host::{Clock, HostConfig, PluginHost};

/// A host with default settings and a compiled-code cache of its own (a directory kept after the test).
pub fn host() -> PluginHost {
    let dir = tempfile::tempdir().unwrap().keep();
    PluginHost::new(HostConfig {
        cache_dir: Some(dir),
        ..HostConfig::default()
    })
    .unwrap()
}

/// A clock that always reads the same time.
#[allow(dead_code)] // Not every test binary that includes this module uses it.
pub struct FixedClock(pub u64);

impl Clock for FixedClock {
    fn now_millis(&self) -> u64 {
        self.0
    }
}
