//! What a run tells while it goes and when it ends: a progress line on standard error every few seconds,
//! and the summary line, the last line of standard output.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::{Counters, Snapshot, StopReason};

/// The progress thread: a line on standard error every `interval` until `done` is disconnected;
/// `extra()` is appended to each line (a follow's phase and lag).
pub fn progress(
    counters: &Counters,
    interval: Duration,
    done: Receiver<()>,
    dry_run: bool,
    extra: &dyn Fn() -> String,
) {
    let start = Instant::now();
    let mut last = (start, 0u64);
    loop {
        match done.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let now = Instant::now();
        let s = counters.snapshot();
        let done_keys = s.copied + s.skipped + s.expired + s.failed + s.deleted;
        let rate = (done_keys - last.1.min(done_keys)) as f64 / now.duration_since(last.0).as_secs_f64();
        last = (now, done_keys);
        log::info!(
            "progress{}: scanned={} copied={} skipped={} expired={} failed={} keys_per_sec={:.0} elapsed={:.0}s{}{}",
            if dry_run { " (dry run)" } else { "" },
            s.scanned,
            s.copied,
            s.skipped,
            s.expired,
            s.failed,
            rate,
            now.duration_since(start).as_secs_f64(),
            if s.evicted > 0 { format!(" evicted={}", s.evicted) } else { String::new() },
            extra()
        );
    }
}

/// The result of a copy, printed as the last line of standard output.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Final counters.
    pub counts: Snapshot,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Whether it was a dry run (the buckets say what would have happened).
    pub dry_run: bool,
    /// Why it stopped early, if it did.
    pub stop: StopReason,
    /// With `--checkpoint`: the counters of the earlier runs of this copy (not in the summary line, which
    /// counts this run; in the report's `total`).
    pub earlier: Option<Snapshot>,
    /// Pairs a follow adds at the end of the line (` deleted=N events=N …`), or nothing.
    pub extra: String,
}

impl Summary {
    /// Keys scanned per second of the run (0 for a run that took no time).
    pub fn keys_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.counts.scanned as f64 / secs
        } else {
            0.0
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.counts;
        let (secs, rate) = (self.elapsed.as_secs_f64(), self.keys_per_sec());
        write!(
            f,
            "scanned={} copied={} skipped={} expired={} failed={} seconds={:.3} keys_per_sec={:.0} evicted={}",
            c.scanned, c.copied, c.skipped, c.expired, c.failed, secs, rate, c.evicted
        )?;
        if self.dry_run {
            write!(f, " dry_run=1")?;
        }
        write!(f, "{}", self.extra)?;
        Ok(())
    }
}
