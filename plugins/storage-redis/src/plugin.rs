//! The WebAssembly glue: the [`Plugin`] the broker loads as its storage backend, over [`RedisStore`].
//!
//! Configuration: `address`, the server as `IP:port` (also listed in the plugin's `sockets` grant);
//! optional `prefix` (default `wasp`), `username`, `password`, `database`; and `require_fsync` (default
//! true): init refuses a server that does not sync every write to disk (`appendonly yes`,
//! `appendfsync always`), since the broker acknowledges messages once `write` returns.

use std::net::SocketAddr;

use serde::Deserialize;
use wasp_plugin_sdk::storage::{Key, Keyspace, Op};
use wasp_plugin_sdk::{Hooks, Interests, Plugin, log};

use crate::{RedisStore, Settings};

/// The plugin's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The Redis server, `IP:port` (no host names: a plugin's sockets grant lists addresses).
    pub address: SocketAddr,
    /// The key prefix: keys are `{prefix}:retained`, `{prefix}:sessions:order`, ...
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// `AUTH` user name (Redis ACLs).
    pub username: Option<String>,
    /// `AUTH` password.
    pub password: Option<String>,
    /// The database number (`SELECT`).
    #[serde(default)]
    pub database: u32,
    /// Refuse a server that does not sync every write (default true).
    #[serde(default = "yes")]
    pub require_fsync: bool,
}

fn default_prefix() -> String {
    "wasp".into()
}

fn yes() -> bool {
    true
}

/// The storage backend plugin.
pub struct RedisPlugin {
    store: RedisStore,
}

impl Plugin for RedisPlugin {
    fn init(config: wasp_plugin_sdk::Config) -> Result<Self, String> {
        let config: Config = config.parse()?;
        if config.username.is_some() && config.password.is_none() {
            return Err("username is set without password".into());
        }
        let address = config.address;
        let store = RedisStore::open(Settings {
            addr: address,
            prefix: config.prefix.clone(),
            username: config.username,
            password: config.password,
            database: config.database,
        })
        .map_err(|e| {
            format!(
                "Redis at {address}: {e} (is it running, and is the address in the plugin's \
                 sockets = [\"{address}\"] grant?)"
            )
        })?;
        if config.require_fsync {
            let (appendonly, appendfsync) = store.fsync_settings().map_err(|e| {
                format!(
                    "Redis at {address}: {e}; set require_fsync = false if the server is known \
                     to sync every write"
                )
            })?;
            if appendonly != "yes" || appendfsync != "always" {
                return Err(format!(
                    "Redis at {address} does not sync every write to disk (appendonly {appendonly}, \
                     appendfsync {appendfsync}): a crash could lose acknowledged messages. Set \
                     `appendonly yes` and `appendfsync always` in its configuration, or \
                     require_fsync = false to accept that"
                ));
            }
        }
        let address = address.to_string();
        log::info(
            "storage on Redis",
            &[("address", &address), ("prefix", &config.prefix)],
        );
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
