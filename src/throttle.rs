//! Gentleness: the token bucket behind `--rate` and the pause behind `--sleep-after-batch`.
//!
//! One [`Throttle`] is shared by all writer threads. Before a batch a writer takes as many tokens as
//! the batch has keys; governor's `until_ready` is async, so a thread asks with `check_n` and sleeps
//! the wait time it is told, in short slices so that an abort is not kept waiting. The burst is the
//! batch size, so a whole batch can always be admitted at once and the average stays at the rate.

use std::num::NonZeroU32;
use std::thread;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::report::Stop;

/// Longest single sleep while waiting for tokens, so a stop is noticed promptly.
const SLICE: Duration = Duration::from_millis(50);

/// Rate limit and post-batch pause, shared by the writers.
pub struct Throttle {
    /// The token bucket; `None` without `--rate`.
    limiter: Option<DefaultDirectRateLimiter>,
    /// Tokens one `check_n` may ask for at most (the bucket's burst).
    burst: NonZeroU32,
    /// `--sleep-after-batch`.
    pause: Duration,
}

impl Throttle {
    /// A throttle admitting `rate` keys per second with bursts of `burst` keys, pausing `pause` after
    /// each batch.
    pub fn new(rate: Option<NonZeroU32>, burst: usize, pause: Duration) -> Throttle {
        let burst = NonZeroU32::new(u32::try_from(burst.max(1)).unwrap_or(u32::MAX)).expect("at least 1");
        let limiter = rate.map(|r| RateLimiter::direct(Quota::per_second(r).allow_burst(burst)));
        Throttle { limiter, burst, pause }
    }

    /// Blocks until `n` keys may be written. Returns false, without waiting further, when the run is
    /// told to drop its queued work (abort or limit).
    pub fn admit(&self, n: usize, stop: &Stop) -> bool {
        let Some(limiter) = &self.limiter else { return true };
        let clock = DefaultClock::default();
        let mut left = n;
        while left > 0 {
            let take = left.min(self.burst.get() as usize);
            let cells = NonZeroU32::new(take as u32).expect("take is at least 1");
            match limiter.check_n(cells) {
                Ok(Ok(())) => left -= take,
                Ok(Err(not_until)) => {
                    if stop.discard() {
                        return false;
                    }
                    thread::sleep(not_until.wait_time_from(clock.now()).min(SLICE));
                }
                // Cannot happen: `take` never exceeds the burst.
                Err(_) => unreachable!("asked the bucket for more than its burst"),
            }
        }
        true
    }

    /// The pause after a batch (`--sleep-after-batch`).
    pub fn after_batch(&self) {
        if !self.pause.is_zero() {
            thread::sleep(self.pause);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn unlimited_admits_at_once() {
        let t = Throttle::new(None, 10, Duration::ZERO);
        let start = Instant::now();
        assert!(t.admit(1_000_000, &Stop::default()));
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn rate_is_a_lower_bound_on_time() {
        // 300 keys at 1000/s with a burst of 100: the first 100 pass at once, the other 200 need 0.2 s.
        let t = Throttle::new(NonZeroU32::new(1000), 100, Duration::ZERO);
        let start = Instant::now();
        for _ in 0..3 {
            assert!(t.admit(100, &Stop::default()));
        }
        assert!(start.elapsed() >= Duration::from_millis(190), "{:?}", start.elapsed());
    }

    #[test]
    fn a_batch_larger_than_the_burst_is_admitted_in_parts() {
        let t = Throttle::new(NonZeroU32::new(1000), 10, Duration::ZERO);
        let start = Instant::now();
        assert!(t.admit(110, &Stop::default()));
        assert!(start.elapsed() >= Duration::from_millis(90));
    }

    #[test]
    fn discard_stops_the_wait() {
        let t = Throttle::new(NonZeroU32::new(1), 1, Duration::ZERO);
        let stop = Stop::default();
        assert!(t.admit(1, &stop));
        stop.request(crate::report::StopReason::Aborted);
        let start = Instant::now();
        assert!(!t.admit(1, &stop));
        assert!(start.elapsed() < Duration::from_millis(500));
    }
}
