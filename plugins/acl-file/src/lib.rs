//! Mosquitto's `acl_file` for Wasp's authorizer plugin.
//!
//! [`AclFile::parse`] reads the file, [`AclFile::check`] decides one access, [`Config`] is the plugin's
//! configuration. Host-independent: no I/O here, except in [`AclFilePlugin`], the WebAssembly plugin over
//! them (built for `wasm32-wasip2`), which reads the file from the directory granted to it.

mod acl;
mod config;
mod plugin;
mod topic;

pub use acl::{Access, AclFile, ParseError};
pub use config::Config;
pub use plugin::{AclFilePlugin, CACHE_SECS, RELOAD_CHECK_SECS};
pub use topic::{filter_covers, filter_matches, filters_overlap, valid_filter, valid_topic};

wasp_plugin_sdk::export_plugin!(AclFilePlugin);
