//! Accounting: the counters every key ends up in, the stop flag, progress lines, the summary line and
//! the thread that owns a CSV file (the error CSV of `copy`, and the diff CSV of `verify`).
//!
//! A failed key is data: a stage hands it to [`Reporter::fail`], which counts it, forwards it to the
//! CSV thread and raises the abort once `--max-errors` is reached. Keys a stage throws away after an
//! abort or when `--limit` is met are handed to [`Reporter::unreached`], which takes them back out of
//! `scanned`, so `scanned = copied + skipped + expired + failed` holds however a run ends.
//! This file does no Redis I/O.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::key::Key;

/// The CSV header, as the product contract fixes it.
pub const CSV_HEADER: [&str; 5] = ["time", "key", "stage", "error", "message"];

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
    /// See [`Counters::evicted`].
    #[serde(default)]
    pub evicted: u64,
}

impl Snapshot {
    /// These counters plus `other`, bucket by bucket.
    pub fn plus(self, other: Snapshot) -> Snapshot {
        Snapshot {
            scanned: self.scanned + other.scanned,
            copied: self.copied + other.copied,
            skipped: self.skipped + other.skipped,
            expired: self.expired + other.expired,
            failed: self.failed + other.failed,
            evicted: self.evicted + other.evicted,
        }
    }
}

/// Why a run is stopping early. Ordered: a later, stronger reason replaces a weaker one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum StopReason {
    /// Running normally.
    None = 0,
    /// `--limit` keys were copied: stop scanning, drop what is queued.
    Limit = 1,
    /// Ctrl-C / SIGTERM: stop scanning, finish the batches in flight.
    Interrupted = 2,
    /// `--max-errors` reached or a connection lost: stop scanning, drop what is queued.
    Aborted = 3,
}

/// The one stop flag shared by every stage, the Ctrl-C handler and the reporter, with the first
/// fatal error (a connection lost for good, a source that stopped answering SCAN) that caused an abort.
///
/// It also cuts pauses short: a stage that pauses (`--sleep-after-batch`, a retry's back-off) sleeps in
/// [`Stop::sleep`], which a stop request wakes at once.
#[derive(Debug, Default)]
pub struct Stop {
    /// A `StopReason` as u8.
    reason: AtomicU8,
    /// The first fatal error, for the final message and exit 3.
    error: Mutex<Option<String>>,
    /// Held while a sleeper checks the reason and while a request is announced.
    gate: Mutex<()>,
    /// Wakes the sleepers when the reason rises.
    wake: Condvar,
}

impl Stop {
    /// A flag with no stop requested (usable in a `static`).
    pub const fn new() -> Stop {
        Stop { reason: AtomicU8::new(0), error: Mutex::new(None), gate: Mutex::new(()), wake: Condvar::new() }
    }

    /// Raises the stop reason (never lowers it) and wakes every sleeper.
    pub fn request(&self, reason: StopReason) {
        let _gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        self.reason.fetch_max(reason as u8, Ordering::SeqCst);
        self.wake.notify_all();
    }

    /// Sleeps for `pause`, or less if `cut(self)` becomes true (checked at every stop request); returns
    /// false when it was cut short.
    pub fn sleep(&self, pause: Duration, cut: impl Fn(&Stop) -> bool) -> bool {
        let gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        let (_gate, waited) =
            self.wake.wait_timeout_while(gate, pause, |_| !cut(self)).unwrap_or_else(|e| e.into_inner());
        waited.timed_out()
    }

    /// Aborts the run because of a fatal error; the first one is kept for the final message.
    pub fn fatal(&self, message: String) {
        log::error!("{message}");
        self.error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(message);
        self.request(StopReason::Aborted);
    }

    /// The first fatal error, if there was one.
    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The current reason.
    pub fn reason(&self) -> StopReason {
        match self.reason.load(Ordering::SeqCst) {
            0 => StopReason::None,
            1 => StopReason::Limit,
            2 => StopReason::Interrupted,
            _ => StopReason::Aborted,
        }
    }

    /// True when the scanner must stop producing keys.
    pub fn stop_scanning(&self) -> bool {
        self.reason() != StopReason::None
    }

    /// True when queued batches must be dropped rather than finished.
    pub fn discard(&self) -> bool {
        matches!(self.reason(), StopReason::Limit | StopReason::Aborted)
    }
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
}

impl<'a> Reporter<'a> {
    /// A reporter sending failures to `failures`.
    pub fn new(
        counters: &'a Counters,
        stop: &'a Stop,
        failures: Sender<Failure>,
        max_errors: Option<u64>,
    ) -> Self {
        Reporter { counters, stop, failures, max_errors }
    }

    /// Records one failed key: counter, CSV row, and the abort when `--max-errors` is reached.
    pub fn fail(&self, key: Key, stage: Stage, code: String, message: String) {
        log::debug!("{} failed at {}: {code} {message}", key, stage.name());
        let failed = self.counters.failed.fetch_add(1, Ordering::SeqCst) + 1;
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

/// One CSV file redis-ferry writes (the error CSV of `copy`, the diff CSV of `verify`): where it goes,
/// its header, and how it is named in messages.
#[derive(Debug, Clone, Copy)]
pub struct CsvFile<'a> {
    /// The path.
    pub path: &'a str,
    /// Append to an existing file (its header is written only if it is empty) rather than overwrite it.
    pub append: bool,
    /// The header row.
    pub header: &'a [&'a str],
    /// What the file is, for messages (`error CSV`, `diff CSV`).
    pub what: &'a str,
}

/// The CSV thread: opens `file` at the first row (so a run with nothing to report leaves no file),
/// writes one record per item with `row`, flushes whenever the queue is empty, and returns how many
/// rows it wrote. A write error is fatal for the run: it is recorded in `stop` and returned.
pub fn write_csv<T, R>(rx: Receiver<T>, file: CsvFile, stop: &Stop, row: impl Fn(T) -> R) -> io::Result<u64>
where
    R: IntoIterator,
    R::Item: AsRef<[u8]>,
{
    let mut writer: Option<csv::Writer<BufWriter<File>>> = None;
    let mut rows = 0u64;
    let result = (|| -> io::Result<()> {
        while let Ok(first) = rx.recv() {
            let w = match writer.as_mut() {
                Some(w) => w,
                None => writer.insert(open_csv(&file)?),
            };
            let mut next = Some(first);
            while let Some(item) = next {
                w.write_record(row(item))?;
                rows += 1;
                next = rx.try_recv().ok();
            }
            w.flush()?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(rows),
        Err(e) => {
            stop.fatal(format!("cannot write the {} {}: {e}", file.what, file.path));
            Err(e)
        }
    }
}

/// The error CSV thread: [`write_csv`] with the header `time,key,stage,error,message`.
pub fn write_errors(rx: Receiver<Failure>, path: &str, append: bool, stop: &Stop) -> io::Result<u64> {
    let file = CsvFile { path, append, header: &CSV_HEADER, what: "error CSV" };
    write_csv(rx, file, stop, |f: Failure| {
        [rfc3339(f.time), f.key.escaped(), f.stage.name().to_string(), f.code, f.message]
    })
}

fn open_csv(file: &CsvFile) -> io::Result<csv::Writer<BufWriter<File>>> {
    let path = file.path;
    let f = if file.append {
        OpenOptions::new().create(true).append(true).open(path)?
    } else {
        File::create(path)?
    };
    let needs_header = f.metadata()?.len() == 0;
    let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(BufWriter::new(f));
    if needs_header {
        w.write_record(file.header)?;
    }
    Ok(w)
}

/// Checks, without leaving a trace, that the file `flag` names can be created or appended to; the
/// message names the flag.
pub fn check_writable(flag: &str, path: &str) -> Result<(), String> {
    let existed = std::path::Path::new(path).exists();
    let opened = if existed {
        OpenOptions::new().append(true).open(path)
    } else {
        OpenOptions::new().write(true).create_new(true).open(path)
    };
    match opened {
        Ok(_) => {
            if !existed {
                let _ = std::fs::remove_file(path);
            }
            Ok(())
        }
        Err(e) => Err(format!("{flag} {path}: cannot write there ({e})")),
    }
}

/// Checks, without leaving a trace, that `path` can be replaced atomically by [`replace_file`]:
/// it is not a directory and `FILE.tmp` can be created next to it.
pub fn check_replaceable(flag: &str, path: &str) -> Result<(), String> {
    let refuse = |why: String| format!("{flag} {path}: cannot write there ({why})");
    if std::path::Path::new(path).is_dir() {
        return Err(refuse("it is a directory".into()));
    }
    let tmp = format!("{path}.tmp");
    let existed = std::path::Path::new(&tmp).exists();
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&tmp)
        .map_err(|e| refuse(e.to_string()))?;
    if !existed {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(())
}

/// Replaces `path` with `bytes` atomically: writes `FILE.tmp` in the same directory, syncs it, renames
/// it over FILE. A reader sees the old file or the new one, never half of one.
pub fn replace_file(path: &str, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = format!("{path}.tmp");
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Formats a time as RFC 3339 in UTC with milliseconds, e.g. `2026-11-21T22:39:12.123Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// The progress thread: a line on standard error every `interval` until `done` is disconnected.
pub fn progress(counters: &Counters, interval: Duration, done: Receiver<()>, dry_run: bool) {
    let start = Instant::now();
    let mut last = (start, 0u64);
    loop {
        match done.recv_timeout(interval) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let now = Instant::now();
        let s = counters.snapshot();
        let done_keys = s.copied + s.skipped + s.expired + s.failed;
        let rate = (done_keys - last.1.min(done_keys)) as f64 / now.duration_since(last.0).as_secs_f64();
        last = (now, done_keys);
        log::info!(
            "progress{}: scanned={} copied={} skipped={} expired={} failed={} keys_per_sec={:.0} elapsed={:.0}s{}",
            if dry_run { " (dry run)" } else { "" },
            s.scanned,
            s.copied,
            s.skipped,
            s.expired,
            s.failed,
            rate,
            now.duration_since(start).as_secs_f64(),
            if s.evicted > 0 { format!(" evicted={}", s.evicted) } else { String::new() }
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_300_752_123);
        assert_eq!(rfc3339(t), "2026-11-21T22:39:12.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn stop_reasons_only_rise() {
        let stop = Stop::default();
        assert!(!stop.stop_scanning());
        stop.request(StopReason::Interrupted);
        assert!(stop.stop_scanning() && !stop.discard());
        stop.request(StopReason::Limit);
        assert_eq!(stop.reason(), StopReason::Interrupted);
        stop.request(StopReason::Aborted);
        assert!(stop.discard());
    }

    #[test]
    fn a_stop_cuts_a_pause_short() {
        let stop = Stop::default();
        assert!(stop.sleep(Duration::from_millis(10), Stop::stop_scanning), "slept the whole pause");
        let started = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                stop.request(StopReason::Interrupted);
            });
            assert!(!stop.sleep(Duration::from_secs(30), Stop::stop_scanning));
        });
        assert!(started.elapsed() < Duration::from_secs(5));
        // A pause that only an abort cuts goes on through an interrupt.
        assert!(stop.sleep(Duration::from_millis(20), Stop::discard));
    }

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
    fn csv_rows_quote_and_escape() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.csv");
        let path = path.to_str().unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        tx.send(Failure {
            time: UNIX_EPOCH,
            key: Key(b"a,\"b\n\xff".to_vec()),
            stage: Stage::Check,
            code: "NOPERM".into(),
            message: "no, \"perm\"".into(),
        })
        .unwrap();
        drop(tx);
        assert_eq!(write_errors(rx, path, false, &Stop::default()).unwrap(), 1);
        let text = std::fs::read_to_string(path).unwrap();
        assert_eq!(
            text,
            "time,key,stage,error,message\n1970-01-01T00:00:00.000Z,\"a,\"\"b\\x0a\\xff\",check,NOPERM,\"no, \"\"perm\"\"\"\n"
        );
    }

    #[test]
    fn no_failure_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.csv");
        let (tx, rx) = crossbeam_channel::unbounded::<Failure>();
        drop(tx);
        write_errors(rx, path.to_str().unwrap(), false, &Stop::default()).unwrap();
        assert!(!path.exists());
    }
}
