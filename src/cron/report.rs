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
use crate::config::{CopyConfig, Keys, OnConflict, Source};
use crate::exit::Exit;
use crate::files;
use crate::redis::endpoint::{Endpoint, Reads};

/// The `--report` file: how a `copy` run went, for a scheduler or a monitor. Field order is the JSON's.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    /// Always `redis-ferry`, so the file says what wrote it.
    pub tool: &'static str,
    /// The version of redis-ferry that wrote it.
    pub version: &'static str,
    /// The subcommand, `copy`.
    pub command: &'static str,
    /// `--shard I/N`: this process's shard; null for `--slots` or a whole copy.
    pub shard: Option<ShardOf>,
    /// The hash slots the run took (`--slots`, `--shard`), `0-5460,10923`; null for a whole copy.
    pub slots: Option<String>,
    /// What makes the reports of shards parts of one copy, for `report merge`: a hash of SOURCE, TARGET,
    /// `--match`, `--type`, `--keys-from`, `--on-conflict`, `--mode`, `--limit` and `--dry-run` (see
    /// [`Options::copy_id`]), taken before the report is cut to size. Tuning flags and per-process files
    /// are not in it: shards may differ in those.
    pub copy_id: String,
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
    /// With `--checkpoint`: the buckets over every run of this copy so far (this run's plus the earlier
    /// runs' the checkpoint kept), which `report merge` adds up for a shard that was started again; null
    /// without a checkpoint.
    pub total: Option<Snapshot>,
    /// A follow's state (`--follow`), left out for a copy that ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub follow: Option<FollowReport>,
    /// The options the run used, defaults filled in.
    pub options: Options<'a>,
}

/// A follow's figures in the report: written every few seconds while it runs, and at the end.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FollowReport {
    /// The follow is still running (a report written on the way).
    pub running: bool,
    /// `copying`, `following`, `rescan` or `cutover`.
    pub phase: &'static str,
    /// Dirty keys waiting to be copied again.
    pub dirty: u64,
    /// Dirty keys being copied now.
    pub in_flight: u64,
    /// The lag: the age of the oldest event whose key is not written yet (waiting or in flight), ms.
    pub oldest_dirty_ms: u64,
    /// Keyspace events received.
    pub events: u64,
    /// Events per second, over the last seconds.
    pub events_per_sec: f64,
    /// Keys that reached a bucket per second, over the last seconds.
    pub keys_per_sec: f64,
    /// Gaps in the event stream (a subscriber reconnected, a source restarted, a primary appeared).
    pub gaps: u64,
    /// Times the dirty set was full.
    pub overflows: u64,
    /// Re-scans run (after a gap or an overflow).
    pub rescans: u64,
    /// A re-scan is due and has not run: events were lost, the target is not in step (a follow stopped
    /// then must be started again).
    pub rescan_due: bool,
    /// Keys whose last attempt failed (each a CSV row) and that no later attempt has copied yet: they
    /// are read again after 1 s, 2, 4 … up to a minute.
    pub failing: u64,
    /// The cutover, once it ran.
    pub cutover: Option<CutoverReport>,
}

/// How the guarded cutover went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CutoverReport {
    /// The target holds every write made to the source before the pause: the application may switch.
    pub safe: bool,
    /// The line printed on standard output.
    pub message: String,
    /// Milliseconds the source's writes stayed paused after the line was printed (0 without a pause).
    pub paused_ms_left: u64,
    /// Dirty keys written between the pause and the line.
    pub drained: u64,
}

/// Shard `index` of `of`, as `--shard index/of` gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ShardOf {
    /// 0 to `of` - 1.
    pub index: u32,
    /// How many shards the run was split into.
    pub of: u32,
}

/// The most bytes a report holds: a Kubernetes termination message is cut at 4096.
pub const MAX_REPORT_BYTES: usize = 4096;

/// The options of a run, named like their flags, with the defaults filled in. No user name, no password.
#[derive(Debug, Serialize)]
pub struct Options<'a> {
    /// SOURCE as `host:port/db`.
    pub source: String,
    /// TARGET as `host:port/db`.
    pub target: String,
    /// `--read-from`: `primary` or `replica`; null for an RDB file SOURCE.
    pub read_from: Option<&'static str>,
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
        let options = Options::new(cfg);
        Report {
            tool: "redis-ferry",
            version: env!("CARGO_PKG_VERSION"),
            command: "copy",
            shard: cfg.split.as_ref().and_then(|s| s.shard).map(|(index, of)| ShardOf { index, of }),
            slots: cfg.split.as_ref().map(|s| s.slots.ranges_text()),
            copy_id: options.copy_id(),
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
            total: summary.and_then(|s| s.earlier.map(|e| e.plus(s.counts))),
            follow: None,
            options,
        }
    }

    /// Writes the report: atomically (`FILE.tmp` in the same directory, synced, renamed over FILE), or in
    /// place where rename cannot replace FILE (see [`files::write_file`]).
    pub fn write(&self, path: &str) -> Result<(), String> {
        files::write_file(path, &self.bytes()).map_err(|e| format!("cannot write the report {path}: {e}"))
    }

    /// The report as JSON in at most [`MAX_REPORT_BYTES`]: pretty-printed when it fits, else on one line,
    /// else with its largest parts (a long error, many `--match` patterns, long paths) halved until it fits.
    pub fn bytes(&self) -> Vec<u8> {
        let pretty = |v: &serde_json::Value| {
            let mut b = serde_json::to_vec_pretty(v).unwrap_or_default();
            b.push(b'\n');
            b
        };
        let mut value = serde_json::to_value(self).unwrap_or_default();
        let bytes = pretty(&value);
        if bytes.len() <= MAX_REPORT_BYTES {
            return bytes;
        }
        loop {
            let mut line = serde_json::to_vec(&value).unwrap_or_default();
            line.push(b'\n');
            if line.len() <= MAX_REPORT_BYTES || !cut_largest(&mut value) {
                return line;
            }
        }
    }
}

impl<'a> Options<'a> {
    /// The hash of the options that say which keys go where and how ([`COPY_ID_OPTIONS`]; see
    /// [`Report::copy_id`]).
    fn copy_id(&self) -> String {
        let all = serde_json::to_value(self).unwrap_or_default();
        let identity: Vec<&serde_json::Value> = COPY_ID_OPTIONS.iter().map(|k| &all[*k]).collect();
        crate::fingerprint::fnv1a([serde_json::to_string(&identity).unwrap_or_default().as_bytes()])
    }

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
            source: match &cfg.source {
                Source::Server(endpoint) => address(endpoint),
                Source::File(b) => b.path.clone(),
            },
            target: address(&cfg.target),
            read_from: match &cfg.source {
                Source::Server(endpoint) => Some(match endpoint.reads {
                    Reads::Primary => "primary",
                    Reads::Replica => "replica",
                }),
                Source::File(_) => None,
            },
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
    let source = match &cfg.source {
        Source::Server(endpoint) => &endpoint.password,
        Source::File(_) => &None,
    };
    for password in [source, &cfg.target.password].into_iter().flatten() {
        if !password.is_empty() {
            text = text.replace(password.as_str(), "***");
        }
    }
    text
}

/// Checks, without leaving a trace, that the report can be written (see [`files::check_replaceable`]).
pub fn check_report_writable(path: &str) -> Result<(), String> {
    files::check_writable_somehow("--report", path)
}

/// The options, by their name in the report, that make a copy what it is: which keys, from where, to
/// where, how. Two shards' reports with the same of these are parts of one copy.
pub const COPY_ID_OPTIONS: [&str; 9] =
    ["source", "target", "match", "type", "keys_from", "on_conflict", "mode", "limit", "dry_run"];

/// The top-level fields a report is never cut in: what `report merge` reads to match and order reports.
const KEPT_WHOLE: [&str; 5] = ["tool", "command", "copy_id", "start", "end"];

/// Halves the largest part of the report that can shrink: a string longer than 16 bytes (cut, with `…`)
/// or a list of more than two items (its second half replaced by one `"… N more"`), never one of the
/// fields `report merge` relies on ([`KEPT_WHOLE`]). False when nothing is left to cut.
fn cut_largest(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    fn size(v: &Value) -> usize {
        serde_json::to_vec(v).map_or(0, |b| b.len())
    }
    fn shrinkable(v: &Value) -> bool {
        matches!(v, Value::String(s) if s.len() > 16) || matches!(v, Value::Array(items) if items.len() > 2)
    }
    /// The JSON pointer and size of the largest shrinkable node under `v` (itself included).
    fn largest(v: &Value, at: String) -> Option<(String, usize)> {
        let children: Vec<(String, &Value)> = match v {
            Value::Array(items) => items.iter().enumerate().map(|(i, c)| (format!("{at}/{i}"), c)).collect(),
            Value::Object(map) => map
                .iter()
                .map(|(k, c)| (format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), c))
                .collect(),
            _ => Vec::new(),
        };
        let kept = KEPT_WHOLE.iter().any(|k| at.strip_prefix('/') == Some(k));
        let own = (shrinkable(v) && !kept).then(|| (at.clone(), size(v)));
        children.into_iter().filter_map(|(p, c)| largest(c, p)).chain(own).max_by_key(|(_, n)| *n)
    }
    let Some(node) = largest(value, String::new()).and_then(|(at, _)| value.pointer_mut(&at)) else {
        return false;
    };
    match node {
        Value::String(s) => {
            let mut cut = s.len() / 2;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            s.push('…');
        }
        Value::Array(items) => {
            let keep = items.len() / 2;
            let more = items.len() - keep;
            items.truncate(keep);
            items.push(Value::String(format!("… {more} more")));
        }
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::FileTypeExt;
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
                deleted: 0,
                evicted: 0,
            },
            elapsed: Duration::from_millis(2500),
            dry_run: false,
            stop: StopReason::Interrupted,
            earlier: None,
            extra: String::new(),
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
    fn a_report_stays_under_4_kb_however_long_its_strings() {
        let patterns: Vec<String> = (0..400).map(|i| format!("tenant:{i:04}:*")).collect();
        let mut args: Vec<&str> = patterns.iter().flat_map(|p| ["--match", p.as_str()]).collect();
        args.extend(["--report", "r.json"]);
        let cfg = config(&args);
        let error = "x".repeat(10_000);
        let bytes = Report::new(&cfg, SystemTime::now(), None, Exit::Aborted, Some(&error)).bytes();
        assert!(bytes.len() <= MAX_REPORT_BYTES, "{} bytes", bytes.len());
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!((v["exit_code"].as_u64(), v["tool"].as_str()), (Some(3), Some("redis-ferry")));
        let patterns = v["options"]["match"].as_array().unwrap();
        assert_eq!(patterns[0], "tenant:0000:*");
        assert!(patterns.last().unwrap().as_str().unwrap().ends_with(" more"), "{patterns:?}");
        let small = Report::new(&config(&[]), SystemTime::now(), None, Exit::Ok, None).bytes();
        assert!(
            small.contains(&b'\n') && String::from_utf8_lossy(&small).contains("\n  \"tool\""),
            "pretty when it fits"
        );
    }

    #[test]
    fn a_report_is_written_in_place_where_rename_cannot_replace_it() {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("termination-log");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let path = fifo.to_str().unwrap().to_string();
        // No reader: refused at once, not waited on.
        let started = std::time::Instant::now();
        assert!(check_report_writable(&path).is_err());
        assert!(started.elapsed() < Duration::from_secs(5));
        // With a reader: checked, then written through the pipe, which stays a pipe.
        let mut reader =
            fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&fifo).unwrap();
        check_report_writable(&path).unwrap();
        Report::new(&config(&[]), SystemTime::now(), None, Exit::Ok, None).write(&path).unwrap();
        let mut got = Vec::new();
        reader.read_to_end(&mut got).unwrap();
        assert_eq!(serde_json::from_slice::<serde_json::Value>(&got).unwrap()["tool"], "redis-ferry");
        assert!(fs::metadata(&path).unwrap().file_type().is_fifo(), "the pipe was replaced");
        assert!(!Path::new(&format!("{path}.tmp")).exists());
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
