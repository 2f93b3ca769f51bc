//! The tests are in `tests/plugin.rs`; the plugin is `../app.py`.
