//! `wasp:plugin/clock`, and the WASI wall clock, from one [`Clock`] so that a test clock governs both.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::bindings::wasp::plugin::clock::Host;
use crate::instance::State;

/// Wall-clock time as plugins see it.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_millis(&self) -> u64;

    /// Milliseconds since the Unix epoch at `at`, a moment of the monotonic clock the caller has just
    /// read for its own needs: the time stamps get (WIT 0.1.4). By default the clock now, a moment after
    /// `at`; [`SystemClock`] derives it from `at` without reading the wall clock.
    fn millis_at(&self, at: Instant) -> u64 {
        let _ = at;
        self.now_millis()
    }
}

/// The host's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> u64 {
        since_epoch(SystemTime::now()).as_millis() as u64
    }

    /// The wall-clock time at `at` from a moment both clocks were read at, kept per thread for
    /// [`ANCHOR_LIFETIME`]: a stamp on the broker's fast path costs no second clock read. On Linux
    /// `Instant` is `CLOCK_MONOTONIC`, which the kernel slews with `CLOCK_REALTIME` and which differs
    /// from it only by the steps of the wall clock (`settimeofday`, an NTP step): the result is the wall
    /// clock's at `at`, and a step shows in it within [`ANCHOR_LIFETIME`].
    fn millis_at(&self, at: Instant) -> u64 {
        ANCHOR.with(|cell| {
            let anchor = match cell.get() {
                Some(anchor) if anchor.holds_for(at) => anchor,
                _ => {
                    let anchor = Anchor::read();
                    cell.set(Some(anchor));
                    anchor
                }
            };
            anchor.millis_at(at)
        })
    }
}

/// How long a thread uses the same [`Anchor`] before reading the clocks again.
const ANCHOR_LIFETIME: Duration = Duration::from_secs(1);

/// A moment read on both clocks: the monotonic clock (`Instant`) and the wall clock.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    at: Instant,
    since_epoch: Duration,
}

thread_local! {
    /// The thread's last [`Anchor`]: per thread, so that reading it takes no lock.
    static ANCHOR: Cell<Option<Anchor>> = const { Cell::new(None) };
}

impl Anchor {
    /// Reads the wall clock between two reads of the monotonic clock and takes their midpoint. A pair
    /// read across a preemption (over 20 us apart) is read again, up to four times in all.
    fn read() -> Anchor {
        let mut anchor = None;
        for _ in 0..4 {
            let before = Instant::now();
            let wall = SystemTime::now();
            let gap = before.elapsed();
            anchor = Some(Anchor {
                at: before + gap / 2,
                since_epoch: since_epoch(wall),
            });
            if gap < Duration::from_micros(20) {
                break;
            }
        }
        anchor.expect("read at least once")
    }

    /// Whether `at` is within [`ANCHOR_LIFETIME`] of the anchor, on either side.
    fn holds_for(&self, at: Instant) -> bool {
        let apart = at
            .checked_duration_since(self.at)
            .unwrap_or_else(|| self.at - at);
        apart < ANCHOR_LIFETIME
    }

    fn millis_at(&self, at: Instant) -> u64 {
        let since_epoch = match at.checked_duration_since(self.at) {
            Some(later) => self.since_epoch + later,
            None => self.since_epoch.saturating_sub(self.at - at),
        };
        since_epoch.as_millis() as u64
    }
}

/// `time` since the Unix epoch; zero for a time before it.
fn since_epoch(time: SystemTime) -> Duration {
    time.duration_since(UNIX_EPOCH).unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_at_a_moment_is_the_wall_clock_then() {
        // The anchor is exact within half its read window (under 20 us), which may carry a stamp
        // across a millisecond's boundary: 1 ms either side.
        for _ in 0..1000 {
            let before = SystemClock.now_millis();
            let stamp = SystemClock.millis_at(Instant::now());
            let after = SystemClock.now_millis();
            assert!(
                before - 1 <= stamp && stamp <= after + 1,
                "{before} <= {stamp} <= {after}"
            );
        }
        // A moment long before the thread's anchor, and one after its lifetime: read on their own. The
        // instant is read between two wall-clock reads, so that a preempted test stays exact.
        let before = SystemClock.now_millis();
        let now = Instant::now();
        let after = SystemClock.now_millis();
        let within = |stamp: u64, shift: i64| {
            let (low, high) = (
                before.saturating_add_signed(shift),
                after.saturating_add_signed(shift),
            );
            assert!(
                low - 1 <= stamp && stamp <= high + 1,
                "{low} <= {stamp} <= {high} (shifted {shift} ms)"
            );
        };
        for offset in [1500, 10] {
            if let Some(earlier) = now.checked_sub(Duration::from_millis(offset)) {
                within(SystemClock.millis_at(earlier), -(offset as i64));
            }
        }
        let later = ANCHOR_LIFETIME * 3;
        within(SystemClock.millis_at(now + later), later.as_millis() as i64);
    }

    #[test]
    fn an_anchor_holds_for_its_lifetime_on_either_side() {
        let anchor = Anchor::read();
        assert!(anchor.holds_for(anchor.at));
        assert!(anchor.holds_for(anchor.at + ANCHOR_LIFETIME / 2));
        assert!(!anchor.holds_for(anchor.at + ANCHOR_LIFETIME));
        if let Some(before) = anchor.at.checked_sub(ANCHOR_LIFETIME / 2) {
            assert!(anchor.holds_for(before));
        }
        assert_eq!(
            anchor.millis_at(anchor.at + Duration::from_millis(1234)),
            (anchor.since_epoch + Duration::from_millis(1234)).as_millis() as u64
        );
    }
}
