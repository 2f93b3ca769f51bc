//! The WebAssembly glue: the [`Plugin`] the broker loads as its storage backend, over [`RedbStore`].
//!
//! Configuration: `path`, the database file as the plugin sees it, inside a writable directory granted
//! in its `[[plugins]]` entry (`dirs = [{ host = "/var/lib/wasp", guest = "/data", writable = true }]`,
//! `path = "/data/wasp.redb"`). The broker calls a storage backend one call at a time; run it with
//! `max_instances = 1` so that a single instance has the file open.

use std::path::Path;

use serde::Deserialize;
use wasp_plugin_sdk::storage::{Key, Keyspace, Op};
use wasp_plugin_sdk::{Hooks, Interests, Plugin, log};

use crate::RedbStore;

/// The plugin's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The database file, as the plugin sees it (inside a granted writable directory).
    pub path: String,
}

/// The storage backend plugin.
pub struct RedbPlugin {
    store: RedbStore,
}

impl Plugin for RedbPlugin {
    fn init(config: wasp_plugin_sdk::Config) -> Result<Self, String> {
        let config: Config = config.parse()?;
        let store = RedbStore::open(Path::new(&config.path)).map_err(|e| {
            format!(
                "{e} (is a writable directory granted that contains it? \
                 dirs = [{{ host = \"...\", guest = \"/data\", writable = true }}])"
            )
        })?;
        log::info("storage database open", &[("path", &config.path)]);
        Ok(Self { store })
    }

    fn interests(&self) -> Interests {
        Interests::hooks(Hooks::empty())
    }

    fn storage_write(&self, batch: Vec<Op>) -> Result<(), String> {
        self.store.write(&batch).map_err(|e| e.to_string())
    }

    fn storage_load(
        &self,
        keyspace: Keyspace,
        after: Option<Key>,
        limit: u32,
    ) -> Result<Vec<(Key, Vec<u8>)>, String> {
        self.store
            .load(keyspace, after.as_ref(), limit)
            .map_err(|e| e.to_string())
    }
}
