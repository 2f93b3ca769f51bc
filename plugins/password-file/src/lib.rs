//! Mosquitto-compatible password files for Wasp's authenticator plugin.
//!
//! The logic is host-independent: [`PasswordFile`] parses and verifies, [`hash_entry`] writes entries,
//! [`Reloader`] swaps in a new table when the file changes, and [`Config`] is the plugin's configuration.
//! [`PasswordFilePlugin`] is the WebAssembly plugin over them (built for `wasm32-wasip2`).

mod config;
mod file;
mod hash;
mod plugin;
mod reload;

pub use config::{AuthOutcome, BAD_USERNAME_OR_PASSWORD, Config, decide};
pub use file::{ParseError, PasswordFile, Verify};
pub use hash::{
    Format, HashError, PasswordHash, hash_entry, hash_entry_with_salt, hash_password_with_salt,
};
pub use plugin::PasswordFilePlugin;
pub use reload::{ReloadOutcome, Reloader};

wasp_plugin_sdk::export_plugin!(PasswordFilePlugin);
