//! `wasp:plugin/clock`, and the WASI wall clock, from one [`Clock`] so that a test clock governs both.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::bindings::wasp::plugin::clock::Host;
use crate::instance::State;

/// Wall-clock time as plugins see it.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_millis(&self) -> u64;
}

/// The host's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

impl Host for State {
    fn now_millis(&mut self) -> u64 {
        self.ctx.services.clock.now_millis()
    }
}

/// The WASI wall clock (`std::time::SystemTime` in a Rust guest), read from the plugin's [`Clock`].
pub(crate) struct WasiWallClock(pub Arc<dyn Clock>);

impl wasmtime_wasi::HostWallClock for WasiWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        Duration::from_millis(self.0.now_millis())
    }
}
