//! Shared by the plugin host's integration tests.

use wasp_plugin_host::{HostConfig, PluginHost};

/// A host with default settings and a compiled-code cache of its own (a directory kept after the test).
pub fn host() -> PluginHost {
    let dir = tempfile::tempdir().unwrap().keep();
    PluginHost::new(HostConfig {
        cache_dir: Some(dir),
        ..HostConfig::default()
    })
    .unwrap()
}
