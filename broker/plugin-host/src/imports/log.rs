//! `wasp:plugin/log`: structured logs tagged with the plugin's name, into a [`LogSink`] (by default
//! `tracing`, target `wasp::plugin`). Messages and fields are capped so a plugin cannot flood memory
//! through one call.

use std::sync::Arc;

use crate::bindings::wasp::plugin::log::{Host, Level};
use crate::instance::State;

const MAX_MESSAGE: usize = 4096;
const MAX_FIELDS: usize = 32;
const MAX_FIELD: usize = 1024;

/// One log line from a plugin: a `log` call, or a line it wrote on stdout (level info) or stderr
/// (level warn, field `stream`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub plugin: Arc<str>,
    pub level: Level,
    pub message: String,
    pub fields: Vec<(String, String)>,
}

/// Where plugin logs go.
pub trait LogSink: Send + Sync {
    fn log(&self, record: LogRecord);
}

/// Logs into `tracing`, target `wasp::plugin`, with the plugin's name as field `plugin` and the guest's
/// fields rendered as `fields`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingLog;

impl LogSink for TracingLog {
    fn log(&self, record: LogRecord) {
        let plugin: &str = &record.plugin;
        let message = &record.message;
        let fields = record
            .fields
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join(" ");
        match record.level {
            Level::Trace => tracing::trace!(target: "wasp::plugin", plugin, fields, "{message}"),
            Level::Debug => tracing::debug!(target: "wasp::plugin", plugin, fields, "{message}"),
            Level::Info => tracing::info!(target: "wasp::plugin", plugin, fields, "{message}"),
            Level::Warn => tracing::warn!(target: "wasp::plugin", plugin, fields, "{message}"),
            Level::Error => tracing::error!(target: "wasp::plugin", plugin, fields, "{message}"),
        }
    }
}

impl Host for State {
    fn log(&mut self, level: Level, message: String, fields: Vec<(String, String)>) {
        let fields = fields
            .into_iter()
            .take(MAX_FIELDS)
            .map(|(k, v)| (super::truncate(k, MAX_FIELD), super::truncate(v, MAX_FIELD)))
            .collect();
        self.ctx.services.log.log(LogRecord {
            plugin: self.ctx.name.clone(),
            level,
            message: super::truncate(message, MAX_MESSAGE),
            fields,
        });
    }
}
