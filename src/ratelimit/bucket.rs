//! The token bucket, kept as one number per key: the time at which the
//! bucket will be full again (the generic cell rate algorithm). A request
//! costs one emission interval (`period / rate`); it is allowed while the
//! debt it leaves stays within `burst` intervals.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Where "now" comes from, as nanoseconds since some fixed start.
pub trait Clock: Send + Sync {
    fn now_nanos(&self) -> u64;
}

/// The monotonic system clock, counted from one instant per process: every
/// snapshot's limiter reads the same time line, so buckets that outlive a
/// reload stay right.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl SystemClock {
    pub fn new() -> SystemClock {
        SystemClock
    }
}

impl Clock for SystemClock {
    fn now_nanos(&self) -> u64 {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        let epoch = EPOCH.get_or_init(Instant::now);
        u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A clock tests move by hand.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.0.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now_nanos(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A limit's shape: `rate` requests per `period`, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Nanoseconds one request costs.
    pub interval: u64,
    pub burst: u32,
    /// Requests per window and the window, for the `RateLimit-Policy`
    /// header (`q` and `w`).
    pub quota: u64,
    pub window_secs: u64,
}

impl Rate {
    /// `rate` requests per `period`, bursts of `burst`. None when any is 0.
    pub fn new(rate: u64, period: Duration, burst: u32) -> Option<Rate> {
        let period = u64::try_from(period.as_nanos()).ok()?;
        if rate == 0 || burst == 0 || period == 0 {
            return None;
        }
        Some(Rate {
            interval: (period / rate).max(1),
            burst,
            quota: rate,
            window_secs: (period / 1_000_000_000).max(1),
        })
    }

    fn tolerance(&self) -> u64 {
        self.interval.saturating_mul(u64::from(self.burst))
    }
}

/// The outcome of one request against one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests left right now.
    pub remaining: u64,
    /// Nanoseconds until the next request would be allowed (0 if now).
    pub retry_after: u64,
    /// Nanoseconds until the bucket is full again.
    pub reset: u64,
}

/// One request at `now` against a bucket full again at `full_at` (0: a new
/// bucket). Returns the decision and the bucket's new `full_at`.
pub fn take(rate: &Rate, full_at: u64, now: u64) -> (Decision, u64) {
    let tolerance = rate.tolerance();
    let start = full_at.max(now);
    let after = start.saturating_add(rate.interval);
    let debt = after - now;
    if debt <= tolerance {
        let decision = Decision {
            allowed: true,
            remaining: (tolerance - debt) / rate.interval,
            retry_after: 0,
            reset: debt,
        };
        (decision, after)
    } else {
        let decision = Decision {
            allowed: false,
            remaining: 0,
            retry_after: debt - tolerance,
            reset: start - now,
        };
        (decision, full_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clocks_made_apart_share_one_time_line() {
        let first = SystemClock::new();
        let _ = first.now_nanos();
        std::thread::sleep(Duration::from_millis(5));
        let later = SystemClock::new();
        assert!(later.now_nanos() >= first.now_nanos().saturating_sub(1_000_000));
        assert!(
            later.now_nanos() >= 5_000_000,
            "counted from the first clock's start"
        );
    }

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn a_burst_is_allowed_at_once_then_the_rate_refills() {
        let rate = Rate::new(10, Duration::from_secs(1), 5).unwrap();
        let mut full_at = 0;
        let now = 100 * SEC;
        for left in (0..5).rev() {
            let (d, next) = take(&rate, full_at, now);
            assert!(d.allowed);
            assert_eq!(d.remaining, left);
            full_at = next;
        }
        let (d, _) = take(&rate, full_at, now);
        assert!(!d.allowed);
        assert_eq!(
            d.retry_after,
            SEC / 10,
            "one interval until a token is back"
        );
        // 0.1 s later exactly one more request fits.
        let (d, next) = take(&rate, full_at, now + SEC / 10);
        assert!(d.allowed && d.remaining == 0);
        let (d, _) = take(&rate, next, now + SEC / 10);
        assert!(!d.allowed);
        // After the whole burst's time the bucket is full again.
        let (d, _) = take(&rate, next, now + SEC);
        assert!(d.allowed);
        assert_eq!(d.remaining, 4);
    }

    #[test]
    fn a_denied_request_costs_nothing() {
        let rate = Rate::new(1, Duration::from_secs(1), 1).unwrap();
        let (_, full_at) = take(&rate, 0, 0);
        for _ in 0..100 {
            let (d, same) = take(&rate, full_at, SEC / 2);
            assert!(!d.allowed);
            assert_eq!(same, full_at);
        }
        assert!(take(&rate, full_at, SEC).0.allowed);
    }

    #[test]
    fn zero_rates_are_refused() {
        assert!(Rate::new(0, Duration::from_secs(1), 1).is_none());
        assert!(Rate::new(1, Duration::from_secs(1), 0).is_none());
    }
}
