//! Gentleness: how fast keys may enter the pipeline (`--rate`, `--burst`, `--max-latency`), and the
//! writers' pause after each batch (`--sleep-after-batch`).
//!
//! One token bucket, [`Throttle`], meters every key exactly once: the source takes one token per key
//! before it hands a batch on, so `--rate` counts keys *processed*, whether they end copied, skipped by
//! the EXISTS pre-filter, expired or failed, and SCAN, EXISTS, DUMP and RESTORE all follow that pace.
//! The bucket starts full and holds at most `--burst` tokens (at least `--batch`, so a whole batch can
//! always pass): N keys take at least (N − burst) / rate seconds, and no stretch of T seconds admits
//! more than burst + rate·T keys. The bucket's rate can change while the run goes on; that is the only
//! way `--max-latency` acts.
//!
//! `--max-latency` is in [`latency`]. Not here: where the stages call in (the sources take a token per
//! key, the typed copy one more per extra page of a big key; the write stage and the typed copy pause).

pub mod latency;

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::account::Stop;

/// Longest single sleep while waiting for tokens, so a stop or a raised rate is noticed promptly.
const SLICE: Duration = Duration::from_millis(50);
/// The floor never goes below this many keys per second.
pub const MIN_RATE: f64 = 10.0;

/// The token bucket and the post-batch pause, shared by the source, the writers and the probe.
pub struct Throttle {
    /// The governor bucket in force (`None`: unlimited) and its rate. A rate change puts a new bucket
    /// in place; takers pick up the current one at every retry.
    bucket: Mutex<(Option<f64>, Option<Arc<DefaultDirectRateLimiter>>)>,
    /// Held by a taker until its tokens are granted, so that takers queue rather than starve each other.
    turn: Mutex<()>,
    /// The most tokens the bucket holds (`--burst`), and the most one take asks for.
    burst: NonZeroU32,
    /// Keys admitted so far, limited or not: the probe measures throughput from it.
    admitted: AtomicU64,
    /// `--sleep-after-batch`.
    pause: Duration,
}

/// A governor bucket admitting `rate` keys per second with bursts of `burst`; `empty` drains it first.
fn bucket(rate: f64, burst: NonZeroU32, empty: bool) -> DefaultDirectRateLimiter {
    let period = Duration::from_secs_f64(1.0 / rate.max(MIN_RATE / 10.0));
    let quota = Quota::with_period(period).expect("a positive period").allow_burst(burst);
    let limiter = RateLimiter::direct(quota);
    if empty {
        let _ = limiter.check_n(burst);
    }
    limiter
}

impl Throttle {
    /// A full bucket of `burst` tokens (at least 1) admitting `rate` keys per second (`None`: no
    /// limit), and a pause of `pause` after each written batch.
    pub fn new(rate: Option<NonZeroU32>, burst: usize, pause: Duration) -> Throttle {
        let burst = NonZeroU32::new(u32::try_from(burst.max(1)).unwrap_or(u32::MAX)).expect("at least 1");
        let rate = rate.map(|r| f64::from(r.get()));
        Throttle {
            bucket: Mutex::new((rate, rate.map(|r| Arc::new(bucket(r, burst, false))))),
            turn: Mutex::new(()),
            burst,
            admitted: AtomicU64::new(0),
            pause,
        }
    }

    fn current(&self) -> Option<Arc<DefaultDirectRateLimiter>> {
        self.bucket.lock().unwrap_or_else(|e| e.into_inner()).1.clone()
    }

    /// Blocks until `n` keys (or pages of a big key) may go on. Returns false, without waiting further,
    /// once the run stops scanning (Ctrl-C, abort, limit): the source then drops those keys unscanned.
    ///
    /// governor's `until_ready` is async; in a thread we ask with `check_n` and sleep the wait time it
    /// gives (in slices, so a stop or a new rate is noticed), then ask again.
    pub fn admit(&self, n: usize, stop: &Stop) -> bool {
        let _turn = self.turn.lock().unwrap_or_else(|e| e.into_inner());
        let mut left = n;
        while left > 0 {
            // A request larger than the bucket goes in parts.
            let take = left.min(self.burst.get() as usize);
            let cells = NonZeroU32::new(take as u32).expect("take is at least 1");
            while let Some(limiter) = self.current() {
                match limiter.check_n(cells) {
                    Ok(Ok(())) => break,
                    Ok(Err(not_until)) => {
                        if stop.stop_scanning() {
                            return false;
                        }
                        // Made only to wait: making a clock asks the CPU what it has, every time.
                        let now = DefaultClock::default().now();
                        thread::sleep(not_until.wait_time_from(now).min(SLICE));
                    }
                    Err(_) => unreachable!("asked the bucket for more than its burst"),
                }
            }
            left -= take;
            self.admitted.fetch_add(take as u64, Ordering::Relaxed);
        }
        true
    }

    /// The current rate in keys per second; `None` is unlimited.
    pub fn rate(&self) -> Option<f64> {
        self.bucket.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// Changes the rate from now on. The new bucket starts empty, so that a limit imposed on (or
    /// lowered for) a source in trouble never begins with a burst; tokens left in the old one are lost,
    /// which errs on the gentle side.
    pub fn set_rate(&self, rate: Option<f64>) {
        let limiter = rate.map(|r| Arc::new(bucket(r, self.burst, true)));
        *self.bucket.lock().unwrap_or_else(|e| e.into_inner()) = (rate, limiter);
    }

    /// Keys admitted since the start.
    pub fn admitted(&self) -> u64 {
        self.admitted.load(Ordering::Relaxed)
    }

    /// The pause after a batch (`--sleep-after-batch`), cut short when the run stops (Ctrl-C, abort,
    /// limit): a stop never waits for the pauses of the batches still queued.
    pub fn after_batch(&self, stop: &Stop) {
        if !self.pause.is_zero() && !stop.stop_scanning() {
            stop.sleep(self.pause, Stop::stop_scanning);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn unlimited_admits_at_once() {
        let t = Throttle::new(None, 10, Duration::ZERO);
        let start = Instant::now();
        assert!(t.admit(1_000_000, &Stop::default()));
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(t.admitted(), 1_000_000);
    }

    #[test]
    fn rate_is_a_lower_bound_on_time() {
        // 300 keys at 1000/s with a burst of 100: the first 100 pass at once, the other 200 need 0.2 s.
        let t = Throttle::new(NonZeroU32::new(1000), 100, Duration::ZERO);
        let start = Instant::now();
        for _ in 0..3 {
            assert!(t.admit(100, &Stop::default()));
        }
        assert!(start.elapsed() >= ms(190), "{:?}", start.elapsed());
    }

    #[test]
    fn a_request_larger_than_the_burst_is_admitted_in_parts() {
        let t = Throttle::new(NonZeroU32::new(1000), 10, Duration::ZERO);
        let start = Instant::now();
        assert!(t.admit(110, &Stop::default()));
        assert!(start.elapsed() >= ms(90));
    }

    #[test]
    fn a_stop_ends_the_wait() {
        let t = Throttle::new(NonZeroU32::new(1), 1, Duration::ZERO);
        let stop = Stop::default();
        assert!(t.admit(1, &stop));
        stop.request(crate::account::StopReason::Interrupted);
        let start = Instant::now();
        assert!(!t.admit(1, &stop));
        assert!(start.elapsed() < ms(500));
    }

    #[test]
    fn a_new_rate_starts_from_an_empty_bucket_and_holds() {
        let t = Throttle::new(NonZeroU32::new(1_000_000), 100, Duration::ZERO);
        assert!(t.admit(100, &Stop::default()));
        t.set_rate(Some(500.0));
        assert_eq!(t.rate(), Some(500.0));
        // Empty after the change: 100 keys at 500/s need 0.2 s.
        let start = Instant::now();
        assert!(t.admit(100, &Stop::default()));
        assert!(start.elapsed() >= ms(180), "{:?}", start.elapsed());
        t.set_rate(None);
        let start = Instant::now();
        assert!(t.admit(100_000, &Stop::default()));
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
