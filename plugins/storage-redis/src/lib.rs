//! Wasp's Redis storage backend: the broker's records (WIT `wasp:plugin/storage`, 0.1.2) in a Redis
//! server the plugin reaches through the TCP sockets its `[[plugins]]` entry grants.
//!
//! [`RedisStore`] is the backend itself, host-independent (its unit tests run natively against a real
//! `redis-server` on loopback); [`RedisPlugin`] is the WebAssembly glue over it. The data model (a hash
//! and a lexically ordered sorted set per keyspace, one Lua script per batch) is described in
//! `store.rs` and the README.

mod client;
mod plugin;
mod store;

pub use plugin::{Config, RedisPlugin};
pub use store::{RedisStore, Settings, StoreError};

wasp_plugin_sdk::export_plugin!(RedisPlugin);
