//! The storage plugins of the workspace as the broker's `[storage]` backend, for the persistence tests and
//! the storage benchmark.

use std::path::{Path, PathBuf};
use std::time::Duration;

use wasp::config::{Config, PluginConfig, StorageConfig};
use wasp_plugin_harness::redis::RedisServer;
use wasp_plugin_host::{DirGrant, PluginSpec};

/// Builds the plugin crate `plugins/<name>` (e.g. `storage-redb`) and returns its `.wasm`.
pub fn plugin_wasm(name: &str) -> PathBuf {
    wasp_plugin_harness::build_wasm(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../plugins")
            .join(name),
    )
}

/// A plugin named `storage` from `wasm`, with `dir` granted writable at `guest`.
pub fn with_dir(wasm: &Path, dir: &Path, guest: &str, config_json: &str) -> PluginSpec {
    let mut spec = PluginSpec::new("storage", wasm);
    spec.config_json = config_json.to_owned();
    spec.dirs.push(DirGrant {
        host: dir.to_owned(),
        guest: guest.to_owned(),
        writable: true,
    });
    spec
}

/// storage-redb (`wasm`) on a database in `dir`.
pub fn redb(wasm: &Path, dir: &Path) -> PluginSpec {
    with_dir(wasm, dir, "/data", r#"{"path": "/data/wasp.redb"}"#)
}

/// storage-redis (`wasm`) on `server`, its address granted.
pub fn redis(wasm: &Path, server: &RedisServer) -> PluginSpec {
    let mut spec = PluginSpec::new("storage", wasm);
    spec.config_json = format!(r#"{{"address": "{}"}}"#, server.addr());
    spec.sockets.push(server.addr());
    spec
}

/// Installs `spec` as the storage plugin (one instance, as the broker's configuration forces).
pub fn install(config: &mut Config, mut spec: PluginSpec, batch_delay: Duration) {
    spec.limits.max_instances = 1;
    config.plugins.push(PluginConfig {
        spec,
        listeners: Vec::new(),
    });
    config.storage = Some(StorageConfig {
        plugin: "storage".into(),
        batch_delay,
    });
}
