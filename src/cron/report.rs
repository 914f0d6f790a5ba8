//! The `--report` JSON that tells a scheduler or a monitor how the last run went.
//!
//! The report is written to `FILE.tmp` in the same directory, synced, then renamed over FILE, so a reader
//! sees the previous report or the new one, never half of one. It never holds a user name or password.
//! This file does no Redis I/O and knows nothing of the stages: it only reads the config and the final
//! [`Summary`].

use std::time::SystemTime;

use serde::Serialize;

use crate::account::csv::rfc3339;
use crate::account::progress::Summary;
use crate::account::{Snapshot, StopReason};
use crate::config::{CopyConfig, Keys, OnConflict};
use crate::exit::Exit;
use crate::files;
use crate::redis::endpoint::Endpoint;

/// The `--report` file: how a `copy` run went, for a scheduler or a monitor. Field order is the JSON's.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    /// Always `redis-ferry`, so the file says what wrote it.
    pub tool: &'static str,
    /// The version of redis-ferry that wrote it.
    pub version: &'static str,
    /// The subcommand, `copy`.
    pub command: &'static str,
    /// The process id of the run.
    pub pid: u32,
    /// When the run started (right after taking the lock), RFC 3339 UTC.
    pub start: String,
    /// When the run ended (when the report was made), RFC 3339 UTC.
    pub end: String,
    /// The exit code of the process.
    pub exit_code: u8,
    /// Why the run stopped early: `limit`, `interrupted` or `aborted`; null when it ran to the end.
    pub stopped: Option<&'static str>,
    /// The fatal error that ended or refused the run, one line; null when there was none.
    pub error: Option<String>,
    /// The buckets, as in the summary line: `scanned`, `copied`, `skipped`, `expired`, `failed`, and `evicted`.
    #[serde(flatten)]
    pub counts: Snapshot,
    /// The summary line's `seconds`: the copy's wall time after preflight; 0 if preflight refused the run.
    pub seconds: f64,
    /// The summary line's `keys_per_sec`: `scanned / seconds`, rounded.
    pub keys_per_sec: f64,
    /// The options the run used, defaults filled in.
    pub options: Options<'a>,
}

/// The options of a run, named like their flags, with the defaults filled in. No user name, no password.
#[derive(Debug, Serialize)]
pub struct Options<'a> {
    /// SOURCE as `host:port/db`.
    pub source: String,
    /// TARGET as `host:port/db`.
    pub target: String,
    /// `--match` patterns; empty with `--keys-from`.
    #[serde(rename = "match")]
    pub patterns: Vec<String>,
    /// `--type` filters; empty means every type.
    #[serde(rename = "type")]
    pub types: Vec<&'static str>,
    /// `--scan-count`; null with `--keys-from`.
    pub scan_count: Option<u64>,
    /// `--keys-from` (`-` is standard input); null when scanning.
    pub keys_from: Option<&'a str>,
    /// `--on-conflict`: `skip` or `replace`.
    pub on_conflict: &'static str,
    /// `--mode`.
    pub mode: String,
    /// `--batch`.
    pub batch: usize,
    /// `--readers`.
    pub readers: usize,
    /// `--writers`.
    pub writers: usize,
    /// `--rate` in keys per second; null is unlimited.
    pub rate: Option<u32>,
    /// `--sleep-after-batch` in milliseconds.
    pub sleep_after_batch: u128,
    /// `--errors`, the error CSV path.
    pub errors: &'a str,
    /// `--errors-append`.
    pub errors_append: bool,
    /// `--max-errors`; 0 never aborts.
    pub max_errors: u64,
    /// `--limit`; null is no limit.
    pub limit: Option<u64>,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `--progress` in seconds; 0 is none.
    pub progress: u64,
    /// `--timeout` in seconds.
    pub timeout: u64,
    /// `--connect-timeout` in seconds.
    pub connect_timeout: u64,
    /// `--retries`: retries of a key after a transient failure.
    pub retries: u32,
    /// `--lock`; null when not given.
    pub lock: Option<&'a str>,
    /// `--report`: this file.
    pub report: Option<&'a str>,
}

impl<'a> Report<'a> {
    /// The report of a run that started at `start` and ends now. `summary` is `None` when preflight
    /// refused the run; `error` is the fatal error, if any (passwords are masked again, to be sure).
    pub fn new(
        cfg: &'a CopyConfig,
        start: SystemTime,
        summary: Option<&Summary>,
        exit: Exit,
        error: Option<&str>,
    ) -> Report<'a> {
        let counts = summary.map(|s| s.counts).unwrap_or_default();
        let secs = summary.map_or(0.0, |s| s.elapsed.as_secs_f64());
        let rate = summary.map_or(0.0, Summary::keys_per_sec);
        let stopped = match summary.map(|s| s.stop) {
            None | Some(StopReason::None) => None,
            Some(StopReason::Limit) => Some("limit"),
            Some(StopReason::Interrupted) => Some("interrupted"),
            Some(StopReason::Aborted) => Some("aborted"),
        };
        Report {
            tool: "redis-ferry",
            version: env!("CARGO_PKG_VERSION"),
            command: "copy",
            pid: std::process::id(),
            start: rfc3339(start),
            end: rfc3339(SystemTime::now()),
            exit_code: exit.code(),
            stopped,
            error: error.map(|e| mask_passwords(e, cfg)),
            counts,
            // Rounded like the summary line, so the two agree.
            seconds: (secs * 1000.0).round() / 1000.0,
            keys_per_sec: rate.round(),
            options: Options::new(cfg),
        }
    }

    /// Writes the report atomically: `FILE.tmp` in the same directory, synced, then renamed over FILE.
    pub fn write(&self, path: &str) -> Result<(), String> {
        let mut bytes =
            serde_json::to_vec_pretty(self).map_err(|e| format!("cannot write the report {path}: {e}"))?;
        bytes.push(b'\n');
        files::replace_file(path, &bytes).map_err(|e| format!("cannot write the report {path}: {e}"))
    }
}

impl<'a> Options<'a> {
    fn new(cfg: &'a CopyConfig) -> Options<'a> {
        let (patterns, types, scan_count, keys_from) = match &cfg.keys {
            Keys::Scan { patterns, types, count } => (
                patterns.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect(),
                types.iter().map(|t| t.name()).collect(),
                Some(*count),
                None,
            ),
            Keys::File(path) => (Vec::new(), Vec::new(), None, Some(path.as_str())),
        };
        Options {
            source: address(&cfg.source),
            target: address(&cfg.target),
            patterns,
            types,
            scan_count,
            keys_from,
            on_conflict: match cfg.on_conflict {
                OnConflict::Skip => "skip",
                OnConflict::Replace => "replace",
            },
            // The variant names are the flag's values; Debug keeps this working as modes are added.
            mode: format!("{:?}", cfg.mode).to_lowercase(),
            batch: cfg.batch,
            readers: cfg.readers,
            writers: cfg.writers,
            rate: cfg.rate.map(|r| r.get()),
            sleep_after_batch: cfg.sleep_after_batch.as_millis(),
            errors: &cfg.errors_path,
            errors_append: cfg.errors_append,
            max_errors: cfg.max_errors.unwrap_or(0),
            limit: cfg.limit,
            dry_run: cfg.dry_run,
            progress: cfg.progress.map_or(0, |p| p.as_secs()),
            timeout: cfg.timeouts.io.as_secs(),
            connect_timeout: cfg.timeouts.connect.as_secs(),
            retries: cfg.retry.attempts,
            lock: cfg.lock.as_deref(),
            report: cfg.report.as_deref(),
        }
    }
}

/// `host:port/db` (IPv6 in brackets), always with the db, never with a user name or password.
fn address(e: &Endpoint) -> String {
    if e.host.contains(':') {
        format!("[{}]:{}/{}", e.host, e.port, e.db)
    } else {
        format!("{}:{}/{}", e.host, e.port, e.db)
    }
}

/// Error messages are already written without passwords; this masks any that slipped in anyway.
fn mask_passwords(text: &str, cfg: &CopyConfig) -> String {
    let mut text = text.to_string();
    for password in [&cfg.source.password, &cfg.target.password].into_iter().flatten() {
        if !password.is_empty() {
            text = text.replace(password.as_str(), "***");
        }
    }
    text
}

/// Checks, without leaving a trace, that the report can be written (see [`files::check_replaceable`]).
pub fn check_report_writable(path: &str) -> Result<(), String> {
    files::check_replaceable("--report", path)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::cli::Args;
    use crate::cli::Command;
    use argh::FromArgs;

    fn config(extra: &[&str]) -> CopyConfig {
        let mut args = vec!["copy", "redis://bob:s3cret-pw@10.0.0.1:7000/2", "[::1]:7001"];
        args.extend_from_slice(extra);
        let Command::Copy(raw) = Args::from_args(&["redis-ferry"], &args).unwrap().command else {
            panic!("not a copy")
        };
        CopyConfig::from_args(&raw).unwrap()
    }

    #[test]
    fn report_holds_counters_and_options_but_no_credentials() {
        let cfg = config(&["--match", "a:*", "--match", "b:*", "--rate", "50", "--report", "r.json"]);
        let summary = Summary {
            counts: crate::account::Snapshot {
                scanned: 10,
                copied: 6,
                skipped: 2,
                expired: 1,
                failed: 1,
                evicted: 0,
            },
            elapsed: Duration::from_millis(2500),
            dry_run: false,
            stop: StopReason::Interrupted,
        };
        let report =
            Report::new(&cfg, SystemTime::now(), Some(&summary), Exit::Interrupted, Some("lost s3cret-pw"));
        let text = serde_json::to_string(&report).unwrap();
        assert!(!text.contains("s3cret-pw") && !text.contains("bob"), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["exit_code"], 130);
        assert_eq!(v["stopped"], "interrupted");
        assert_eq!(v["error"], "lost ***");
        assert_eq!((v["scanned"].as_u64(), v["failed"].as_u64()), (Some(10), Some(1)));
        assert_eq!((v["seconds"].as_f64(), v["keys_per_sec"].as_f64()), (Some(2.5), Some(4.0)));
        let o = &v["options"];
        assert_eq!(o["source"], "10.0.0.1:7000/2");
        assert_eq!(o["target"], "[::1]:7001/0");
        assert_eq!(o["match"], serde_json::json!(["a:*", "b:*"]));
        assert_eq!((o["rate"].as_u64(), o["max_errors"].as_u64()), (Some(50), Some(1000)));
        assert_eq!((o["mode"].as_str(), o["on_conflict"].as_str()), (Some("auto"), Some("skip")));
        assert!(o["lock"].is_null() && o["keys_from"].is_null());
    }

    #[test]
    fn a_refused_run_reports_zeroes_and_its_error() {
        let cfg = config(&["--keys-from", "-"]);
        let report = Report::new(&cfg, SystemTime::now(), None, Exit::BadInput, Some("cannot connect"));
        let v = serde_json::to_value(&report).unwrap();
        assert_eq!((v["exit_code"].as_u64(), v["scanned"].as_u64()), (Some(2), Some(0)));
        assert!(v["stopped"].is_null());
        assert_eq!(v["options"]["keys_from"], "-");
        assert!(v["options"]["scan_count"].is_null());
    }

    #[test]
    fn report_is_written_by_rename_and_checked_without_a_trace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        let path = path.to_str().unwrap();
        check_report_writable(path).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "the check left a file");
        let cfg = config(&[]);
        Report::new(&cfg, SystemTime::now(), None, Exit::BadInput, None).write(path).unwrap();
        let v: serde_json::Value = serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(v["tool"], "redis-ferry");
        assert!(!Path::new(&format!("{path}.tmp")).exists());
        // An existing report is kept by the check.
        check_report_writable(path).unwrap();
        assert!(Path::new(path).exists());
        assert!(check_report_writable("/nonexistent-dir/r.json").unwrap_err().starts_with("--report"));
        assert!(check_report_writable(dir.path().to_str().unwrap()).is_err());
    }
}
