//! Structured logging into the broker's log, tagged with the plugin's name.
//!
//! Each function takes a message and key/value fields:
//!
//! ```
//! use wasp_plugin_sdk::log;
//!
//! let user = "alice";
//! log::info("client allowed", &[("user", user)]);
//! log::warn(&format!("{} failed logins", 3), &[]);
//! ```
//!
//! Compiled natively (unit tests of plugin logic, doc tests), the lines go to standard error as
//! `LEVEL message key=value...` instead of a host.

pub use crate::bindings::wasp::plugin::log::Level;

/// Logs `message` with `fields` at `level`.
pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    #[cfg(target_arch = "wasm32")]
    {
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        crate::bindings::wasp::plugin::log::log(level, message, &fields);
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let level = match level {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        };
        let mut line = format!("{level} {message}");
        for (key, value) in fields {
            line.push_str(&format!(" {key}={value:?}"));
        }
        eprintln!("{line}");
    }
}

/// Logs at trace level.
pub fn trace(message: &str, fields: &[(&str, &str)]) {
    log(Level::Trace, message, fields);
}

/// Logs at debug level.
pub fn debug(message: &str, fields: &[(&str, &str)]) {
    log(Level::Debug, message, fields);
}

/// Logs at info level.
pub fn info(message: &str, fields: &[(&str, &str)]) {
    log(Level::Info, message, fields);
}

/// Logs at warn level.
pub fn warn(message: &str, fields: &[(&str, &str)]) {
    log(Level::Warn, message, fields);
}

/// Logs at error level.
pub fn error(message: &str, fields: &[(&str, &str)]) {
    log(Level::Error, message, fields);
}
