//! The flags that set how fast keys go, checked together: `--batch`, `--rate`, `--burst`,
//! `--max-latency`, `--sleep-after-batch` (a batch waits for all its tokens, so they bound each other).

use std::num::NonZeroU32;
use std::time::Duration;

use super::{bad, batch, ConfigError, DEFAULT_BATCH, MAX_BATCH_SECONDS, MAX_SLEEP_AFTER_BATCH_MS};
use crate::cli::CopyArgs;

/// The flags that set how fast keys go: `--batch`, `--rate`, `--burst`, `--max-latency`,
/// `--sleep-after-batch`, checked together (a batch waits for all its tokens).
pub(super) struct Pacing {
    /// Keys per batch.
    pub(super) batch: usize,
    /// `--rate`.
    pub(super) rate: Option<NonZeroU32>,
    /// The bucket's depth.
    pub(super) burst: usize,
    /// `--max-latency`.
    pub(super) max_latency: Option<Duration>,
    /// `--sleep-after-batch`.
    pub(super) sleep_after_batch: Duration,
}

impl Pacing {
    pub(super) fn of(args: &CopyArgs) -> Result<Pacing, ConfigError> {
        let rate = match args.rate {
            None => None,
            Some(0) => return Err(bad("--rate must be at least 1 key per second (got 0)")),
            Some(r) => Some(
                u32::try_from(r)
                    .ok()
                    .and_then(NonZeroU32::new)
                    .ok_or_else(|| bad(format!("--rate must be at most {} (got {r})", u32::MAX)))?,
            ),
        };
        // A batch waits for all its tokens: by default a batch is at most one second of --rate.
        let batch = match (args.batch, rate) {
            (Some(n), _) => batch(n)?,
            (None, Some(r)) => (r.get() as usize).min(DEFAULT_BATCH),
            (None, None) => DEFAULT_BATCH,
        };
        let burst = match args.burst {
            None => batch,
            Some(_) if rate.is_none() && args.max_latency.is_none() => {
                return Err(bad(
                    "--burst sizes the --rate token bucket; give it with --rate or --max-latency",
                ))
            }
            Some(b) if b < batch as u64 => {
                return Err(bad(format!(
                    "--burst must be at least --batch ({batch}), so a batch can pass (got {b})"
                )))
            }
            Some(b) if b > u64::from(u32::MAX) => {
                return Err(bad(format!("--burst must be at most {} (got {b})", u32::MAX)))
            }
            Some(b) => b as usize,
        };
        if let Some(r) = rate.map(|r| u64::from(r.get())).filter(|r| batch as u64 > MAX_BATCH_SECONDS * r) {
            return Err(bad(format!(
                "--batch {batch} with --rate {r}: a batch waits for all its tokens, so the copy would move \
                 {batch} keys at once and then nothing for {} s, batch after batch; give --batch {} or less, or \
                 a higher --rate",
                batch as u64 / r,
                MAX_BATCH_SECONDS * r
            )));
        }
        let max_latency = match args.max_latency {
            None => None,
            Some(0) => return Err(bad("--max-latency must be at least 1 millisecond (got 0)")),
            Some(ms) if ms > 60_000 => {
                return Err(bad(format!("--max-latency must be at most 60000 ms (got {ms})")))
            }
            Some(ms) => Some(Duration::from_millis(ms)),
        };
        let sleep_after_batch = match args.sleep_after_batch {
            ms if ms > MAX_SLEEP_AFTER_BATCH_MS => {
                return Err(bad(format!(
                "--sleep-after-batch must be at most {MAX_SLEEP_AFTER_BATCH_MS} ms (got {ms}); for a slower \
                     copy use --rate"
            )))
            }
            ms => Duration::from_millis(ms),
        };
        Ok(Pacing { batch, rate, burst, max_latency, sleep_after_batch })
    }
}
