//! The tests are in `tests/plugin.rs`; the plugin is `../plugin.js`.
