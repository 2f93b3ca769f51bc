//! The storage-redb plugin through its real `.wasm`, loaded by the broker's own plugin host, writing its
//! database in a granted directory: the storage contract (the harness's conformance check), and a
//! read-only grant refused.

use tempfile::TempDir;
use wasp_plugin_harness::{Harness, HostError, plugin_wasm};

fn load(dir: &TempDir) -> Result<Harness, HostError> {
    Harness::load(plugin_wasm!())
        .dir_writable(dir.path(), "/data")
        .config_toml("path = '/data/wasp.redb'")
        .build()
}

#[test]
fn keeps_the_storage_contract() {
    let dir = tempfile::tempdir().unwrap();
    wasp_plugin_harness::conformance::storage_backend(|| load(&dir).unwrap());
    assert!(dir.path().join("wasp.redb").exists());
}

#[test]
fn without_a_writable_directory_init_says_what_to_grant() {
    let dir = tempfile::tempdir().unwrap();
    let error = Harness::load(plugin_wasm!())
        .dir(dir.path(), "/data")
        .config_toml("path = '/data/wasp.redb'")
        .build()
        .err()
        .expect("a read-only directory is refused");
    let message = error.to_string();
    assert!(message.contains("writable = true"), "{message}");
}
