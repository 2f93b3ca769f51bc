//! The guest's stdout and stderr (a Rust guest's `println!`, and its panic messages), routed line by
//! line into the plugin's [`LogSink`]: stdout at info, stderr at warn, with field `stream`. Lines are
//! capped at 4 KiB.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use super::log::{LogRecord, LogSink};
use crate::bindings::wasp::plugin::log::Level;

const MAX_LINE: usize = 4096;

#[derive(Clone)]
pub(crate) struct GuestOutput {
    pub plugin: Arc<str>,
    pub sink: Arc<dyn LogSink>,
    pub stderr: bool,
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            output: self.clone(),
            line: Vec::new(),
        })
    }
}

struct LineWriter {
    output: GuestOutput,
    line: Vec<u8>,
}

impl LineWriter {
    fn emit(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.line).trim_end().to_owned();
        self.line.clear();
        let (level, stream) = if self.output.stderr {
            (Level::Warn, "stderr")
        } else {
            (Level::Info, "stdout")
        };
        self.output.sink.log(LogRecord {
            plugin: self.output.plugin.clone(),
            level,
            message: text,
            fields: vec![("stream".to_owned(), stream.to_owned())],
        });
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        for &byte in buf {
            if byte == b'\n' {
                this.emit();
            } else {
                this.line.push(byte);
                if this.line.len() >= MAX_LINE {
                    this.emit();
                }
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().emit();
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.emit();
    }
}
