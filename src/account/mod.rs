//! Accounting: the buckets every key ends up in, and each stage's handle on them.
//!
//! A failed key is data: a stage hands it to [`Reporter::fail`], which counts it, forwards it to the CSV
//! thread and raises the abort once `--max-errors` is reached. Keys a stage throws away after an abort or
//! when `--limit` is met are handed to [`Reporter::unreached`], which takes them back out of `scanned`, so
//! `scanned = copied + skipped + expired + failed` (`+ deleted` in a follow) holds however a run ends.
//! The rest of the room: the stop flag ([`stop`]), the thread that owns a CSV file ([`csv`]), progress
//! lines and the summary line ([`progress`]), the watch on the target's evictions ([`evictions`]) and
//! the `--metrics` server ([`metrics`]). Only `evictions` does Redis I/O.

pub mod csv;
pub mod evictions;
pub mod metrics;
pub mod progress;
pub mod stop;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crossbeam_channel::Sender;

use crate::key::Key;
pub use stop::{Stop, StopReason};

/// The stage where a key failed (the CSV's `stage` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The EXISTS pre-filter on the target.
    Check,
    /// Reading the value from the source.
    Fetch,
    /// Writing it to the target.
    Write,
}

impl Stage {
    /// The CSV name of the stage.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Check => "check",
            Stage::Fetch => "fetch",
            Stage::Write => "write",
        }
    }
}

/// One key that could not be copied: a row of the error CSV.
#[derive(Debug, Clone)]
pub struct Failure {
    /// When it failed.
    pub time: SystemTime,
    /// The key.
    pub key: Key,
    /// Where it failed.
    pub stage: Stage,
    /// The server's error code, or IO / TIMEOUT / PROTOCOL.
    pub code: String,
    /// The error text, one line.
    pub message: String,
}

/// The buckets. Stages add; nothing else writes them.
#[derive(Debug, Default)]
pub struct Counters {
    /// Keys found by the scan (or read from `--keys-from`) and not later given back as unreached.
    pub scanned: AtomicU64,
    /// Keys written to the target (or that would be, in a dry run).
    pub copied: AtomicU64,
    /// Keys left alone because they already existed on the target.
    pub skipped: AtomicU64,
    /// Keys that vanished or expired before they could be written.
    pub expired: AtomicU64,
    /// Keys that failed; each is a CSV row.
    pub failed: AtomicU64,
    /// Keys a follow found gone from the source and deleted on the target.
    pub deleted: AtomicU64,
    /// Not a bucket: keys the target evicted while the run went on (its `evicted_keys` grew by this
    /// much); some may be keys the run copied.
    pub evicted: AtomicU64,
}

impl Counters {
    /// Adds `n` to one counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// A consistent-enough copy of the counters for progress and the summary.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            scanned: self.scanned.load(Ordering::Relaxed),
            copied: self.copied.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            deleted: self.deleted.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
        }
    }
}

/// The counters at one moment (also what a checkpoint carries over and a report shows).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// See [`Counters::scanned`].
    pub scanned: u64,
    /// See [`Counters::copied`].
    pub copied: u64,
    /// See [`Counters::skipped`].
    pub skipped: u64,
    /// See [`Counters::expired`].
    pub expired: u64,
    /// See [`Counters::failed`].
    pub failed: u64,
    /// See [`Counters::deleted`] (0, and not in the report, for a copy without `--follow`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub deleted: u64,
    /// See [`Counters::evicted`].
    #[serde(default)]
    pub evicted: u64,
}

impl Snapshot {
    /// These counters with `scanned` cut back to the keys that reached a bucket: what a checkpoint may
    /// carry over. A key scanned but still in flight when the run dies is scanned again by the next run,
    /// from the resume point, and counted there; counting its first scan too would leave the buckets
    /// short of `scanned` in the sum of the runs.
    pub fn settled(self) -> Snapshot {
        Snapshot { scanned: self.copied + self.skipped + self.expired + self.failed + self.deleted, ..self }
    }

    /// These counters plus `other`, bucket by bucket.
    pub fn plus(self, other: Snapshot) -> Snapshot {
        Snapshot {
            scanned: self.scanned + other.scanned,
            copied: self.copied + other.copied,
            skipped: self.skipped + other.skipped,
            expired: self.expired + other.expired,
            failed: self.failed + other.failed,
            deleted: self.deleted + other.deleted,
            evicted: self.evicted + other.evicted,
        }
    }
}

/// For serde: a zero counter is left out.
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A stage's handle on the accounting: counters, stop flag and the CSV channel. Cheap to clone; each
/// stage thread owns one, and the CSV thread ends when the last one is dropped.
#[derive(Clone)]
pub struct Reporter<'a> {
    /// The shared counters.
    pub counters: &'a Counters,
    /// The shared stop flag.
    pub stop: &'a Stop,
    /// To the CSV thread.
    failures: Sender<Failure>,
    /// Abort once this many keys failed.
    max_errors: Option<u64>,
    /// Told of every failed key (a follow reads it again later).
    on_fail: Option<&'a (dyn Fn(&Key) + Sync)>,
}

impl<'a> Reporter<'a> {
    /// A reporter sending failures to `failures`.
    pub fn new(
        counters: &'a Counters,
        stop: &'a Stop,
        failures: Sender<Failure>,
        max_errors: Option<u64>,
    ) -> Self {
        Reporter { counters, stop, failures, max_errors, on_fail: None }
    }

    /// The same reporter, telling `hook` of every failed key too.
    pub fn on_fail(self, hook: &'a (dyn Fn(&Key) + Sync)) -> Self {
        Reporter { on_fail: Some(hook), ..self }
    }

    /// Records one failed key: counter, CSV row, and the abort when `--max-errors` is reached.
    pub fn fail(&self, key: Key, stage: Stage, code: String, message: String) {
        log::debug!("{} failed at {}: {code} {message}", key, stage.name());
        let failed = self.counters.failed.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(hook) = self.on_fail {
            hook(&key);
        }
        // The CSV thread only goes away after a write error, which has already raised the abort.
        let _ = self.failures.send(Failure { time: SystemTime::now(), key, stage, code, message });
        if let Some(max) = self.max_errors {
            if failed >= max && self.stop.reason() != StopReason::Aborted {
                log::error!("{failed} keys failed (--max-errors {max}): aborting");
                self.stop.request(StopReason::Aborted);
            }
        }
    }

    /// Gives `n` keys back: they were dropped unprocessed (abort or limit) and so were never scanned
    /// as far as the summary is concerned.
    pub fn unreached(&self, n: usize) {
        self.counters.scanned.fetch_sub(n as u64, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_counts_and_aborts_at_max_errors() {
        let (counters, stop) = (Counters::default(), Stop::default());
        let (tx, rx) = crossbeam_channel::unbounded();
        let r = Reporter::new(&counters, &stop, tx, Some(2));
        r.fail(Key::from("a"), Stage::Write, "OOM".into(), "OOM".into());
        assert_eq!(stop.reason(), StopReason::None);
        r.fail(Key::from("b"), Stage::Write, "OOM".into(), "OOM".into());
        assert_eq!(stop.reason(), StopReason::Aborted);
        assert_eq!(rx.len(), 2);
        assert_eq!(counters.snapshot().failed, 2);
    }

    #[test]
    fn a_checkpoint_carries_over_only_the_keys_in_buckets() {
        // 1000 scanned, 500 of them still in flight: the next run scans those 500 again.
        let now = Snapshot {
            scanned: 1000,
            copied: 400,
            skipped: 50,
            expired: 30,
            failed: 20,
            ..Snapshot::default()
        };
        assert_eq!(now.settled(), Snapshot { scanned: 500, ..now });
        let follow = Snapshot { scanned: 9, copied: 3, deleted: 2, ..Snapshot::default() };
        assert_eq!(follow.settled().scanned, 5);
    }
}
