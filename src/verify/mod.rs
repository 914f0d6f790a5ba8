//! `verify`: do the matched keys of the source exist on the target with the same type, value and TTL,
//! and (with `--check-extra`) does the target hold matched keys the source does not?
//!
//! ```text
//! scan source ──Batch<Key>──> compare ×2 (source + target conn each) ──┐
//! scan target ──Batch<Key>──> extra ×1 (only with --check-extra) ───────┴─ differences ──> diff CSV thread
//! ```
//! Keys come from the sources of `copy` (SCAN with `--match` / `--type`, or `--keys-from`). How one
//! batch is compared is in [`compare`], big keys page by page in [`paged`]; the extra-key check is in
//! [`extra`]. This file wires the threads, counts the verdicts (a batch's only once it was checked
//! whole), logs the first differences, sends every difference to the `--diff` CSV thread and makes the
//! summary line. Keys that vanish from the source during the check are counted as vanished, never as
//! differences.

mod compare;
mod extra;
mod file;
mod paged;
mod probe;

use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Instant, SystemTime};

use crossbeam_channel::{bounded, Receiver, Sender};

use crate::account::csv::{self, CsvFile};
use crate::account::{Counters, Reporter, Stop, StopReason};
use crate::config::VerifyConfig;
use crate::exit::{Exit, Fatal};
use crate::flow::Batch;
use crate::key::Key;
use crate::redis::endpoint::Endpoint;
use crate::redis::reply;
use crate::resume::{Ledger, Position};
use crate::source::{self, Batching, Source};
use crate::{files, preflight};

use compare::{Comparer, Kind, Verdict};
use extra::Extra;

/// Compare threads (each holds a source and a target connection).
const COMPARERS: usize = 2;
/// At most this many differences, and this many unreadable keys, are logged one by one.
const LOGGED: u64 = 100;
/// The diff CSV header. It starts with `time,key,` like the error CSV, so that `copy --keys-from`
/// reads it as a redis-ferry CSV and takes its key column.
pub const DIFF_HEADER: [&str; 4] = ["time", "key", "difference", "message"];

/// One difference: a row of the diff CSV.
#[derive(Debug, Clone)]
pub struct Difference {
    /// When it was found.
    pub time: SystemTime,
    /// The key.
    pub key: Key,
    /// What differs.
    pub kind: Kind,
    /// The explanation, one line.
    pub message: String,
}

/// The verdict counters, shared by every compare thread.
#[derive(Default)]
struct Verdicts {
    /// Same type, value and TTL.
    matched: AtomicU64,
    /// On the source, not on the target.
    missing: AtomicU64,
    /// Different type or value.
    different: AtomicU64,
    /// Same value, TTL off by more than the tolerance.
    ttl: AtomicU64,
    /// On the target, not on the source (`--check-extra`).
    extra: AtomicU64,
    /// Gone from the source during the check.
    vanished: AtomicU64,
    /// Could not be read (error reply, connection trouble).
    errors: AtomicU64,
    /// Differences logged so far.
    logged_differences: AtomicU64,
    /// Unreadable keys logged so far.
    logged_errors: AtomicU64,
}

impl Verdicts {
    /// The counter a difference of this kind goes to.
    fn of(&self, kind: Kind) -> &AtomicU64 {
        match kind {
            Kind::Missing => &self.missing,
            Kind::Type | Kind::Value => &self.different,
            Kind::Ttl => &self.ttl,
            Kind::Extra => &self.extra,
        }
    }

    /// True while fewer than [`LOGGED`] lines were logged with `counter`.
    fn may_log(counter: &AtomicU64) -> bool {
        counter.fetch_add(1, Ordering::Relaxed) < LOGGED
    }
}

/// A thread's handle on the accounting: the shared counters and its own sender to the diff CSV thread
/// (which ends when the last sender is dropped).
#[derive(Clone)]
struct Recorder<'a> {
    /// The shared counters.
    verdicts: &'a Verdicts,
    /// To the diff CSV thread, with `--diff`.
    diffs: Option<Sender<Difference>>,
}

impl Recorder<'_> {
    /// Counts the verdicts of one checked batch, logs the first ones, and queues its differences.
    fn record(&self, results: impl IntoIterator<Item = (Key, Verdict)>) {
        let v = self.verdicts;
        let (mut matched, mut vanished, mut errors) = (0, 0, 0);
        let mut differences = Vec::new();
        for (key, verdict) in results {
            match verdict {
                Verdict::Matched => matched += 1,
                Verdict::Vanished => vanished += 1,
                Verdict::Error(code, message) => {
                    errors += 1;
                    if Verdicts::may_log(&v.logged_errors) {
                        log::warn!("cannot check {key}: {code} {message}");
                    }
                }
                Verdict::Differs(kind, message) => {
                    if Verdicts::may_log(&v.logged_differences) {
                        log::warn!("{}: {key} ({message})", kind.name());
                    }
                    differences.push(Difference { time: SystemTime::now(), key, kind, message });
                }
            }
        }
        for (counter, n) in [(&v.matched, matched), (&v.vanished, vanished), (&v.errors, errors)] {
            Counters::add(counter, n);
        }
        for d in &differences {
            Counters::add(v.of(d.kind), 1);
        }
        if let Some(tx) = &self.diffs {
            // The CSV thread only goes away after a write error, which has already aborted the run.
            differences.into_iter().for_each(|d| drop(tx.send(d)));
        }
    }

    /// Counts a batch that could not be checked at all.
    fn lost(&self, keys: usize, err: &redis::RedisError) {
        let (code, message) = reply::classify(err);
        log::warn!("cannot check a batch of {keys} keys: {code} {message}");
        Counters::add(&self.verdicts.errors, keys as u64);
    }
}

/// Everything a verify run opened at preflight: what it reads keys from and the connections of its
/// threads.
struct Prepared {
    /// The source's keys.
    keys: Box<dyn Source>,
    /// One per compare thread.
    comparers: Vec<Comparer>,
    /// With `--check-extra`: the target's keys and the thread that looks them up on the source.
    extra: Option<(Box<dyn Source>, Extra)>,
}

/// Runs `verify`; returns exit 0 when every key agrees, 1 otherwise, and the summary line (for
/// standard output).
pub fn run(cfg: &VerifyConfig, stop: &Stop) -> Result<(Exit, String), Fatal> {
    let start = Instant::now();
    let verdicts = Verdicts::default();
    let extra_scanned = match cfg.source.file() {
        Some(backup) => {
            file::check(cfg, backup, &verdicts, stop)?;
            0
        }
        None => check(cfg, prepare(cfg)?, &verdicts, stop),
    };
    if cfg.check_extra {
        log::info!("--check-extra scanned {extra_scanned} keys on the target");
    }
    let v = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let bad = v(&verdicts.missing)
        + v(&verdicts.different)
        + v(&verdicts.ttl)
        + v(&verdicts.extra)
        + v(&verdicts.errors);
    let summary = format!(
        "matched={} missing={} different={} ttl={} extra={} seconds={:.3} vanished={} errors={}",
        v(&verdicts.matched),
        v(&verdicts.missing),
        v(&verdicts.different),
        v(&verdicts.ttl),
        v(&verdicts.extra),
        start.elapsed().as_secs_f64(),
        v(&verdicts.vanished),
        v(&verdicts.errors)
    );
    if let Some(error) = stop.error() {
        crate::out::error(&error);
        return Ok((Exit::Aborted, summary));
    }
    if let (Some(path), true) = (&cfg.diff_path, bad > 0) {
        log::warn!("{bad} keys differ or could not be checked; the differences are listed in {path}");
    }
    let exit = match stop.reason() {
        StopReason::Interrupted => Exit::Interrupted,
        _ if bad == 0 => Exit::Ok,
        _ => Exit::KeysFailed,
    };
    Ok((exit, summary))
}

/// Preflight: everything that can refuse the run does so before anything is checked; then every
/// connection the run uses is opened.
fn prepare(cfg: &VerifyConfig) -> Result<Prepared, Fatal> {
    let named: Vec<_> = cfg.files.iter().map(|f| f.named()).collect();
    files::refuse_shared(&named).map_err(Fatal::bad_input)?;
    let keys_file = source::keys_file(&cfg.keys)?;
    if let Some(path) = &cfg.diff_path {
        files::check_writable("--diff", path).map_err(Fatal::bad_input)?;
    }
    let (scan_conn, source_info) = preflight::open_checked(cfg.source.server(), cfg.timeouts)?;
    let (first_target, target_info) = preflight::open_checked(&cfg.target, cfg.timeouts)?;
    preflight::distinct((&scan_conn, &source_info), (&first_target, &target_info))?;
    log::info!(
        "verifying {} ({}) against {} ({})",
        cfg.target,
        preflight::describe(&first_target, &target_info),
        cfg.source,
        preflight::describe(&scan_conn, &source_info)
    );
    let keys = source::open(&cfg.keys, keys_file, scan_conn, cfg.timeouts, cfg.slots())?;
    let open = |endpoint: &Endpoint| {
        let info = if endpoint.role == cfg.source.server().role { &source_info } else { &target_info };
        preflight::open_like(endpoint, info, cfg.timeouts)
    };
    let tolerance_ms = i64::try_from(cfg.ttl_tolerance.as_millis()).unwrap_or(i64::MAX);
    let pexpiretime = source_info.has_pexpiretime() && target_info.has_pexpiretime();
    let mut comparers = Vec::new();
    let mut first_target = Some(first_target);
    for _ in 0..COMPARERS {
        let target = match first_target.take() {
            Some(c) => c,
            None => open(&cfg.target)?,
        };
        comparers.push(Comparer { source: open(cfg.source.server())?, target, tolerance_ms, pexpiretime });
    }
    let extra = match cfg.check_extra {
        true => Some((
            extra::target_scan(cfg, open(&cfg.target)?)?,
            Extra { source: open(cfg.source.server())?, target: open(&cfg.target)? },
        )),
        false => None,
    };
    Ok(Prepared { keys, comparers, extra })
}

/// Runs the scanners, compare threads and the diff CSV thread until the keys are checked; counts the
/// verdicts in `verdicts` and returns how many keys `--check-extra` scanned on the target.
fn check(cfg: &VerifyConfig, prepared: Prepared, verdicts: &Verdicts, stop: &Stop) -> u64 {
    let Prepared { keys, comparers, extra } = prepared;
    let (source_counters, target_counters) = (Counters::default(), Counters::default());
    // No scanner fails a key (a --keys-from file was checked whole at preflight); a reporter needs a
    // CSV channel all the same.
    let (fail_tx, fail_rx) = bounded(64);
    let (diff_tx, diff_rx) = bounded::<Difference>(1024);
    let recorder = Recorder { verdicts, diffs: cfg.diff_path.is_some().then_some(diff_tx) };
    thread::scope(|s| {
        if let Some(path) = cfg.diff_path.as_deref() {
            let file = CsvFile { path, append: false, header: &DIFF_HEADER, what: "diff CSV" };
            s.spawn(move || csv::write_csv(diff_rx, file, stop, diff_row));
        }
        let (tx, rx) = bounded(2 * COMPARERS);
        // verify does not resume: its scanners' ledgers are never read.
        let scanner = |keys: Box<dyn Source>, tx: Sender<Batch<Key>>, counters| {
            let rep = Reporter::new(counters, stop, fail_tx.clone(), None);
            s.spawn(move || {
                let starts = vec![Some(Position::default()); keys.lanes()];
                let ledger = Ledger::new(&starts);
                let rules = Batching { size: cfg.batch, throttle: None, slots: cfg.slots() };
                source::run(keys, rules, &starts, tx, rep, &ledger)
            });
        };
        scanner(keys, tx, &source_counters);
        for comparer in comparers {
            let (rx, rec) = (rx.clone(), recorder.clone());
            s.spawn(move || compare_thread(comparer, rx, rec, stop));
        }
        if let Some((keys, extra)) = extra {
            let (tx, rx) = bounded(2);
            scanner(keys, tx, &target_counters);
            let rec = recorder.clone();
            s.spawn(move || extra_thread(extra, rx, rec, stop));
        }
        drop((fail_tx, recorder));
        s.spawn(move || {
            for f in fail_rx {
                log::warn!("cannot check {}: {} {}", f.key, f.code, f.message);
                Counters::add(&verdicts.errors, 1);
            }
        });
    });
    target_counters.snapshot().scanned
}

/// A diff CSV record: `time,key,difference,message`, the key escaped like in the error CSV.
fn diff_row(d: Difference) -> [String; 4] {
    [csv::rfc3339(d.time), d.key.escaped(), d.kind.name().to_string(), reply::one_line(&d.message)]
}

/// One compare thread: checks each batch of source keys whole, then records its verdicts. A batch whose
/// connection failed is checked once more after a reconnect (reads are safe to repeat), then counted as
/// errors; a connection that cannot be re-established aborts the run.
fn compare_thread(mut comparer: Comparer, rx: Receiver<Batch<Key>>, rec: Recorder, stop: &Stop) {
    for batch in rx {
        if stop.discard() {
            continue;
        }
        let checked = comparer.batch(&batch).or_else(|e| match comparer.reconnect() {
            Ok(()) => comparer.batch(&batch),
            Err(lost) => {
                stop.fatal(format!("verify lost the connection: {lost}"));
                Err(e)
            }
        });
        match checked {
            Ok(verdicts) => rec.record(batch.into_iter().zip(verdicts)),
            Err(e) => rec.lost(batch.len(), &e),
        }
    }
}

/// The `--check-extra` thread: like [`compare_thread`], for batches of target keys.
fn extra_thread(mut extra: Extra, rx: Receiver<Batch<Key>>, rec: Recorder, stop: &Stop) {
    for batch in rx {
        if stop.discard() {
            continue;
        }
        let checked = extra.batch(&batch).or_else(|e| match extra.reconnect() {
            Ok(()) => extra.batch(&batch),
            Err(lost) => {
                stop.fatal(format!("verify --check-extra lost the connection: {lost}"));
                Err(e)
            }
        });
        match checked {
            Ok(found) => rec.record(found.into_iter().map(|(i, verdict)| (batch[i].clone(), verdict))),
            Err(e) => rec.lost(batch.len(), &e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_csv_is_read_back_by_keys_from() {
        // `copy --keys-from` takes a file whose header starts with `time,key,` as a redis-ferry CSV.
        assert_eq!(DIFF_HEADER[..2], csv::CSV_HEADER[..2]);
    }

    #[test]
    fn diff_rows_escape_the_key_and_keep_one_line() {
        let d = Difference {
            time: std::time::UNIX_EPOCH,
            key: Key(b"a,\"b\n\xff".to_vec()),
            kind: Kind::Value,
            message: "element 3\ndiffers".into(),
        };
        assert_eq!(
            diff_row(d),
            ["1970-01-01T00:00:00.000Z", "a,\"b\\x0a\\xff", "value", "element 3 differs"].map(String::from)
        );
    }
}
