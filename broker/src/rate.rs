//! A token bucket: the rate limits (`limits.max_connections_per_sec`, `limits.max_publish_rate`,
//! `limits.max_publish_bytes_per_sec`) are each one of these.
//!
//! Pure arithmetic on an explicit `now`, so it is tested without sleeping. The bucket holds at most one
//! second's worth of tokens and refills continuously. A cost larger than the bucket (a message bigger
//! than one second of bandwidth) is let through when the bucket is full, and the balance then goes
//! negative: the debt is paid by waiting before the next one, so the long-run rate still holds.

use std::time::{Duration, Instant};

/// Tokens refilled at `per_sec`, at most `per_sec` held.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket; `None` for a rate of 0 (unlimited).
    pub(crate) fn new(per_sec: u64, now: Instant) -> Option<Self> {
        (per_sec > 0).then_some(Self {
            per_sec: per_sec as f64,
            tokens: per_sec as f64,
            last: now,
        })
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.per_sec);
        self.last = now;
    }

    /// How long until `cost` may be taken; zero when it may be taken now.
    pub(crate) fn wait(&mut self, cost: u64, now: Instant) -> Duration {
        self.refill(now);
        let needed = (cost as f64).min(self.per_sec);
        if self.tokens >= needed {
            Duration::ZERO
        } else {
            // Rounded up to the next millisecond so that waking up at that time finds the tokens there.
            let secs = (needed - self.tokens) / self.per_sec;
            Duration::from_millis((secs * 1000.0).ceil() as u64)
        }
    }

    /// Takes `cost`; the balance may go negative (see the module documentation).
    pub(crate) fn take(&mut self, cost: u64, now: Instant) {
        self.refill(now);
        self.tokens -= cost as f64;
    }

    /// Takes `cost` if it may be taken now.
    pub(crate) fn try_take(&mut self, cost: u64, now: Instant) -> bool {
        let ok = self.wait(cost, now).is_zero();
        if ok {
            self.take(cost, now);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn zero_is_unlimited() {
        assert!(TokenBucket::new(0, Instant::now()).is_none());
    }

    #[test]
    fn a_full_second_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, t0).unwrap();
        for _ in 0..10 {
            assert!(b.try_take(1, t0));
        }
        assert!(!b.try_take(1, t0));
        assert_eq!(b.wait(1, t0), 100 * MS);
        // 100 ms later one token is back, not two.
        assert!(b.try_take(1, t0 + 100 * MS));
        assert!(!b.try_take(1, t0 + 100 * MS));
        // Never more than one second's worth, however long the pause.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..10 {
            assert!(b.try_take(1, later));
        }
        assert!(!b.try_take(1, later));
    }

    #[test]
    fn refused_attempts_cost_nothing() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2, t0).unwrap();
        assert!(b.try_take(2, t0));
        for _ in 0..100 {
            assert!(!b.try_take(1, t0 + 100 * MS));
        }
        assert!(b.try_take(1, t0 + 500 * MS));
    }

    #[test]
    fn a_cost_above_the_capacity_passes_when_full_and_is_paid_afterwards() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, t0).unwrap();
        // 300 bytes at 100 bytes/s: allowed on a full bucket, then 2 s of debt plus 1 s for the next.
        assert!(b.try_take(300, t0));
        assert_eq!(b.wait(100, t0), Duration::from_secs(3));
        assert!(!b.try_take(1, t0 + Duration::from_secs(2)));
        assert!(b.try_take(100, t0 + Duration::from_secs(3)));
    }
}
