//! Wasp's embedded storage backend: the broker's records (WIT `wasp:plugin/storage`, 0.1.2) in one
//! [redb](https://www.redb.org) database file inside the directory the broker grants to the plugin.
//!
//! [`RedbStore`] is the backend itself, host-independent (its unit tests run natively on a temporary
//! file); [`RedbPlugin`] is the WebAssembly glue over it. One table per keyspace, keyed by
//! `(name, seq)` so that a keyspace reads back in the broker's key order and a session's records are
//! one key range. Every `write` is one redb transaction committed with `Durability::Immediate`: when
//! it returns, the batch is on disk (fsync through WASI), and a crash mid-batch leaves none of it.

mod plugin;
mod store;

pub use plugin::{Config, RedbPlugin};
pub use store::{RedbStore, StoreError};

wasp_plugin_sdk::export_plugin!(RedbPlugin);
