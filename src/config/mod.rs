//! Raw flags in, a validated [`CopyConfig`] / [`VerifyConfig`] out: typed values, no I/O but reading the
//! TLS certificate and key files that flags name (read once here, so every reconnection uses the same ones)
//! and the password variables.
//!
//! Every check whose failure is the user's to fix happens here, before any connection is made, and each
//! error names the flag or value at fault. SOURCE and TARGET are parsed in `endpoint.rs` (and an RDB file
//! SOURCE told from a server in `backup.rs`), the TLS flags checked in `tls.rs`, `--slots` and `--shard` in
//! `split.rs`, the pace flags in `pacing.rs`. What can only be known by looking at files or talking to a
//! server (two flags naming one file, a server that is not reachable, a password that is wrong) is checked at
//! preflight.

pub mod backup;
pub use backup::Source;
mod endpoint;
pub mod follow;
mod pacing;
mod split;
mod tls;

use std::num::NonZeroU32;
use std::time::Duration;

use pacing::Pacing;
use split::split;
pub use split::Split;
use tls::{Shared, TlsFlags};

use crate::cli::{CopyArgs, VerifyArgs};
use crate::files::Use;
use crate::key::KeyType;
use crate::redis::endpoint::{Endpoint, Reads, Retry, Role, Timeouts, Tls};

/// A configuration error: one line naming the flag or value, for exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn bad(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// Where the keys to work on come from.
#[derive(Debug, Clone)]
pub enum Keys {
    /// SCAN the source: one pass per type (or one untyped pass), each pattern with SCAN MATCH.
    Scan {
        /// MATCH patterns, as bytes; never empty (`*` by default).
        patterns: Vec<Vec<u8>>,
        /// TYPE filters; empty means every type.
        types: Vec<KeyType>,
        /// SCAN COUNT hint.
        count: u64,
    },
    /// Read keys from a file (`-` is standard input).
    File(String),
}

/// What to do with a key that already exists on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    /// Leave it alone: EXISTS pre-filter, RESTORE without REPLACE, BUSYKEY counts as skipped.
    Skip,
    /// Overwrite it: RESTORE ... REPLACE.
    Replace,
}

/// How a key's value is moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// DUMP/RESTORE, with a type-aware copy for big keys and for keys a server refuses to DUMP or RESTORE.
    Auto,
    /// DUMP/RESTORE only.
    Dump,
    /// Type-aware reads and writes for every key.
    Typed,
}

/// A file a flag names (see [`crate::files`]).
#[derive(Debug, Clone)]
pub struct NamedFile {
    /// The flag, for messages.
    pub flag: String,
    /// The path as given (`-` is standard input).
    pub path: String,
    /// Read or written.
    pub how: Use,
}

impl NamedFile {
    /// As [`crate::files::Named`], for [`crate::files::refuse_shared`].
    pub fn named(&self) -> crate::files::Named<'_> {
        crate::files::Named { flag: &self.flag, path: &self.path, how: self.how }
    }
}

/// Everything `copy` needs, checked and typed.
#[derive(Debug, Clone)]
pub struct CopyConfig {
    /// The server (or RDB file) read from.
    pub source: Source,
    /// The server written to.
    pub target: Endpoint,
    /// Where the keys come from.
    pub keys: Keys,
    /// `--slots` / `--shard`: only the keys of these hash slots; `None` takes every key.
    pub split: Option<Split>,
    /// Skip or replace keys already on the target.
    pub on_conflict: OnConflict,
    /// DUMP/RESTORE or type-aware.
    pub mode: Mode,
    /// `--mode auto`: keys above this many bytes (MEMORY USAGE) are copied type-aware; `None`
    /// (`--big-key-bytes 0`) asks no size at all.
    pub big_key_bytes: Option<u64>,
    /// `--typed-threads`: threads of the type-aware copier; `None` leaves it to the plan (1, or 4 when
    /// every key goes type-aware). Always `None` with `--mode dump`.
    pub typed_threads: Option<usize>,
    /// Keys per pipelined batch; at least 1.
    pub batch: usize,
    /// Fetch threads.
    pub readers: usize,
    /// Write threads.
    pub writers: usize,
    /// Keys per second through the token bucket; `None` is unlimited.
    pub rate: Option<NonZeroU32>,
    /// Depth of the token bucket (`--burst`); at least `batch`.
    pub burst: usize,
    /// `--max-latency`: the source's p90 PING time above which the rate is lowered; `None` for none.
    pub max_latency: Option<Duration>,
    /// Pause of each writer after each batch.
    pub sleep_after_batch: Duration,
    /// Path of the error CSV.
    pub errors_path: String,
    /// Append to the CSV rather than overwrite it.
    pub errors_append: bool,
    /// `--lock`: the file to flock for the whole run; `None` takes no lock.
    pub lock: Option<String>,
    /// `--report`: where to write the JSON report at the end; `None` writes none.
    pub report: Option<String>,
    /// `--checkpoint`: where the scan position is saved and resumed from; `None` for none.
    pub checkpoint: Option<String>,
    /// Abort once this many keys failed; `None` never aborts.
    pub max_errors: Option<u64>,
    /// Stop after this many keys have been copied.
    pub limit: Option<u64>,
    /// Read but do not write.
    pub dry_run: bool,
    /// `--follow` and its options; `None` for a copy that ends.
    pub follow: Option<follow::FollowConfig>,
    /// `--metrics`: where to serve Prometheus text.
    pub metrics: Option<std::net::SocketAddr>,
    /// Interval of progress lines; `None` for none.
    pub progress: Option<Duration>,
    /// `--progress-style`: a bar or lines.
    pub progress_style: crate::account::progress::Style,
    /// Connection timeouts for both sides.
    pub timeouts: Timeouts,
    /// How transient failures are retried.
    pub retry: Retry,
    /// Every file the flags name: no two may be one file (checked at preflight).
    pub files: Vec<NamedFile>,
}

/// Everything `verify` needs, checked and typed.
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    /// The reference server (or RDB file).
    pub source: Source,
    /// The server compared with it.
    pub target: Endpoint,
    /// Where the keys come from.
    pub keys: Keys,
    /// `--slots` / `--shard`: only the keys of these hash slots; `None` takes every key.
    pub split: Option<Split>,
    /// Keys per pipelined batch.
    pub batch: usize,
    /// Largest TTL difference still counted as equal.
    pub ttl_tolerance: Duration,
    /// `--check-extra`: also scan the target for keys the source does not have.
    pub check_extra: bool,
    /// `--diff`: the CSV that lists every difference; `None` writes none.
    pub diff_path: Option<String>,
    /// Connection timeouts for both sides.
    pub timeouts: Timeouts,
    /// Every file the flags name: no two may be one file (checked at preflight).
    pub files: Vec<NamedFile>,
}

/// Default number of fetch threads: measured on 2 cores with both servers local (see README).
pub const DEFAULT_READERS: usize = 2;
/// Default number of write threads.
pub const DEFAULT_WRITERS: usize = 2;
/// Default `--big-key-bytes`: a key of 8 MiB blocks a server for tens of milliseconds in one DUMP or
/// RESTORE (measured in the README); above it, a paged copy is gentler and keeps memory bounded.
pub const DEFAULT_BIG_KEY_BYTES: u64 = 8 << 20;
/// Default `--typed-threads` when only some keys go type-aware (`--mode auto`): big keys are rare, one
/// at a time is gentle.
pub const DEFAULT_TYPED_THREADS_AUTO: usize = 1;
/// Default `--typed-threads` when every key goes type-aware (`--mode typed`, or auto deciding so up
/// front): each key takes several round trips, so more threads overlap them (measured in the README).
pub const DEFAULT_TYPED_THREADS_TYPED: usize = 4;
/// The largest `--scan-count`.
const MAX_SCAN_COUNT: u64 = 100_000;
/// Default `--batch`.
pub const DEFAULT_BATCH: usize = 500;
const MAX_BATCH: u64 = 100_000;
/// A batch may hold at most this many seconds of `--rate`: it waits for all its tokens at once.
const MAX_BATCH_SECONDS: u64 = 60;
/// The longest `--sleep-after-batch`: 10 s after every batch is already 50 keys/s at the default batch.
const MAX_SLEEP_AFTER_BATCH_MS: u64 = 10_000;
const MAX_THREADS: u64 = 64;

fn key_source(
    patterns: &[String],
    types: &[String],
    scan_count: u64,
    keys_from: &Option<String>,
) -> Result<Keys, ConfigError> {
    if let Some(path) = keys_from {
        if !patterns.is_empty() {
            return Err(bad("--match cannot be combined with --keys-from (the file already names the keys)"));
        }
        if !types.is_empty() {
            return Err(bad("--type cannot be combined with --keys-from (the file already names the keys)"));
        }
        if path.is_empty() {
            return Err(bad("--keys-from needs a file name, or - for standard input"));
        }
        return Ok(Keys::File(path.clone()));
    }
    if scan_count == 0 {
        return Err(bad("--scan-count must be at least 1 (got 0)"));
    }
    if scan_count > MAX_SCAN_COUNT {
        return Err(bad(format!(
            "--scan-count must be at most {MAX_SCAN_COUNT} (got {scan_count}): one SCAN call blocks the server \
             for as long as it takes to visit that many slots"
        )));
    }
    let mut types_parsed: Vec<KeyType> = Vec::new();
    for t in types {
        let t = KeyType::parse(t).map_err(ConfigError)?;
        if !types_parsed.contains(&t) {
            types_parsed.push(t);
        }
    }
    let mut pats: Vec<Vec<u8>> = Vec::new();
    for p in patterns {
        if !pats.iter().any(|q| q == p.as_bytes()) {
            pats.push(p.as_bytes().to_vec());
        }
    }
    if pats.is_empty() || pats.iter().any(|p| p == b"*") {
        pats = vec![b"*".to_vec()];
    }
    Ok(Keys::Scan { patterns: pats, types: types_parsed, count: scan_count })
}

fn timeouts(connect: u64, io: u64) -> Result<Timeouts, ConfigError> {
    if connect == 0 {
        return Err(bad("--connect-timeout must be at least 1 second (got 0)"));
    }
    if io == 0 {
        return Err(bad("--timeout must be at least 1 second (got 0)"));
    }
    Ok(Timeouts { connect: Duration::from_secs(connect), io: Duration::from_secs(io) })
}

fn threads(flag: &str, value: Option<u64>, default: usize) -> Result<usize, ConfigError> {
    match value {
        None => Ok(default),
        Some(0) => Err(bad(format!("--{flag} must be at least 1 (got 0)"))),
        Some(n) if n > MAX_THREADS => Err(bad(format!("--{flag} must be at most {MAX_THREADS} (got {n})"))),
        Some(n) => Ok(n as usize),
    }
}

fn big_key_bytes(mode: Mode, value: Option<u64>, file: bool) -> Result<Option<u64>, ConfigError> {
    // From an RDB file, a typed copy decodes every value: the ones above the limit page by page.
    match (mode, value) {
        (Mode::Typed, None) if file => return Ok(Some(DEFAULT_BIG_KEY_BYTES)),
        (Mode::Typed, Some(0)) if file => return Ok(None),
        (Mode::Typed, Some(n)) if file => return Ok(Some(n)),
        _ => {}
    }
    match (mode, value) {
        (Mode::Auto, None) => Ok(Some(DEFAULT_BIG_KEY_BYTES)),
        (Mode::Auto, Some(0)) => Ok(None),
        (Mode::Auto, Some(n)) => Ok(Some(n)),
        (_, None) => Ok(None),
        (Mode::Dump, Some(_)) => {
            Err(bad("--big-key-bytes only applies to --mode auto (--mode dump never goes type-aware)"))
        }
        (Mode::Typed, Some(_)) => {
            Err(bad("--big-key-bytes only applies to --mode auto (--mode typed copies every key type-aware)"))
        }
    }
}

fn batch(value: u64) -> Result<usize, ConfigError> {
    match value {
        0 => Err(bad("--batch must be at least 1 (got 0)")),
        n if n > MAX_BATCH => Err(bad(format!("--batch must be at most {MAX_BATCH} (got {n})"))),
        n => Ok(n as usize),
    }
}

fn endpoints(
    source: &str,
    target: &str,
    (source_db, all_dbs): (Option<i64>, bool),
    target_db: Option<i64>,
    (shared, [source_tls, target_tls]): (TlsFlags<'_>, [TlsFlags<'_>; 2]),
) -> Result<(Source, Endpoint), ConfigError> {
    if backup::is_file(target)? && target != "-" && !target.contains(':') {
        return Err(bad(format!(
            "TARGET `{target}` looks like a file: TARGET is a server (host:port or a URL)"
        )));
    }
    if backup::is_file(source)? {
        if source_tls.any() {
            return Err(bad(
                "the --source-tls-* flags are for a rediss:// SOURCE, but SOURCE is an RDB file",
            ));
        }
        let mut target =
            Endpoint::parse(Role::Target, target, target_db, Endpoint::env_password(Role::Target))?;
        if shared.any() && target.tls.is_none() {
            return Err(bad(
                "the --tls-* flags are for TLS, but SOURCE is an RDB file and TARGET is not a rediss:// URL",
            ));
        }
        target.tls = Tls::from_flags(Role::Target, target_tls.or(shared), target.tls.is_some())?;
        if all_dbs && target_db.is_some() {
            return Err(bad("--target-db picks one database; --all-dbs writes each database of the file into the target's database of the same number"));
        }
        return Ok((Source::File(backup::backup(source, source_db, all_dbs)?), target));
    }
    if all_dbs {
        return Err(bad(
            "--all-dbs is for an RDB file SOURCE (a server is read one database at a time: --source-db)",
        ));
    }
    let mut source = Endpoint::parse(Role::Source, source, source_db, Endpoint::env_password(Role::Source))?;
    let mut target = Endpoint::parse(Role::Target, target, target_db, Endpoint::env_password(Role::Target))?;
    if shared.any() && source.tls.is_none() && target.tls.is_none() {
        let what =
            [("ca", shared.ca.is_some()), ("cert", shared.cert.is_some()), ("key", shared.key.is_some())]
                .into_iter()
                .find(|(_, on)| *on)
                .map_or("insecure", |(what, _)| what);
        return Err(bad(format!(
            "--tls-{what} is for TLS, but neither SOURCE nor TARGET is a rediss:// URL; write the TLS side as \
             rediss://host:port"
        )));
    }
    source.tls = Tls::from_flags(Role::Source, source_tls.or(shared), source.tls.is_some())?;
    target.tls = Tls::from_flags(Role::Target, target_tls.or(shared), target.tls.is_some())?;
    Ok((Source::Server(source), target))
}

/// `--read-from`: which server of the source's shard is read.
fn reads(arg: &Option<String>) -> Result<Reads, ConfigError> {
    match arg.as_deref() {
        None | Some("primary") => Ok(Reads::Primary),
        Some("replica") => Ok(Reads::Replica),
        Some(other) => Err(bad(format!("--read-from `{other}` is not primary or replica"))),
    }
}

/// Checks that `--lock`, `--report` and `--checkpoint` each name a file when given.
fn cron_files(args: &CopyArgs) -> Result<(Option<String>, Option<String>), ConfigError> {
    for (flag, value) in
        [("--lock", &args.lock), ("--report", &args.report), ("--checkpoint", &args.checkpoint)]
    {
        if value.as_deref() == Some("") {
            return Err(bad(format!("{flag} needs a file name")));
        }
    }
    Ok((args.lock.clone(), args.report.clone()))
}

/// Every file a run names, with what it does with it: for [`crate::files::refuse_shared`], which
/// preflight calls before it opens or locks any of them.
fn named_files(
    keys_from: &Option<String>,
    source: &str,
    outputs: &[(&str, &Option<String>)],
    (shared, tls): (TlsFlags<'_>, [TlsFlags<'_>; 2]),
) -> Vec<NamedFile> {
    let mut files = Vec::new();
    let mut add = |flag: String, path: Option<&str>, how: Use| {
        if let Some(path) = path.filter(|p| !p.is_empty()) {
            files.push(NamedFile { flag, path: path.to_string(), how });
        }
    };
    add("--keys-from".into(), keys_from.as_deref(), Use::Read);
    if backup::is_file(source).unwrap_or(false) {
        add("SOURCE".into(), Some(source), Use::Read);
    }
    for (flag, path) in outputs {
        add(flag.to_string(), path.as_deref(), Use::Write);
    }
    for (side, flags) in ["".to_string()]
        .into_iter()
        .chain([Role::Source, Role::Target].map(|r| format!("{}-", r.name())))
        .zip([shared, tls[0], tls[1]])
    {
        for (what, path) in [("ca", flags.ca), ("cert", flags.cert), ("key", flags.key)] {
            add(format!("--{side}tls-{what}"), path, Use::Read);
        }
    }
    files
}

/// The TLS flags, which `copy` and `verify` spell the same way: the `--tls-*` shorthands, then each
/// side's own, with the shorthands filled in where the side gives none of that kind.
macro_rules! tls_flags {
    ($args:expr) => {{
        let shared = TlsFlags {
            ca: $args.tls_ca.as_deref(),
            cert: $args.tls_cert.as_deref(),
            key: $args.tls_key.as_deref(),
            insecure: $args.tls_insecure,
            shared: Shared::default(),
        };
        let own = [
            TlsFlags {
                ca: $args.source_tls_ca.as_deref(),
                cert: $args.source_tls_cert.as_deref(),
                key: $args.source_tls_key.as_deref(),
                insecure: $args.source_tls_insecure,
                shared: Shared::default(),
            },
            TlsFlags {
                ca: $args.target_tls_ca.as_deref(),
                cert: $args.target_tls_cert.as_deref(),
                key: $args.target_tls_key.as_deref(),
                insecure: $args.target_tls_insecure,
                shared: Shared::default(),
            },
        ];
        (shared, own)
    }};
}

impl CopyConfig {
    /// `--slots` / `--shard`: the slots taken, `None` for every slot.
    pub fn slots(&self) -> Option<&crate::redis::slots::SlotSet> {
        Split::slots_of(&self.split)
    }

    /// Validates the raw `copy` flags.
    pub fn from_args(args: &CopyArgs) -> Result<CopyConfig, ConfigError> {
        let (source, target) = endpoints(
            &args.source,
            &args.target,
            (args.source_db, args.all_dbs),
            args.target_db,
            tls_flags!(args),
        )?;
        let mut source = source;
        source.read_from(reads(&args.read_from)?)?;
        let keys = key_source(&args.patterns, &args.types, args.scan_count, &args.keys_from)?;
        let split = split(&args.slots, &args.shard)?;
        let follow = follow::follow(args)?;
        if let Source::File(b) = &source {
            backup::refusals(args, b)?;
        }
        let from_file = source.file().is_some();
        let on_conflict = match args.on_conflict.as_deref() {
            None if follow.is_some() => OnConflict::Replace,
            None | Some("skip") => OnConflict::Skip,
            Some("replace") => OnConflict::Replace,
            Some(other) => return Err(bad(format!("--on-conflict `{other}` is not skip or replace"))),
        };
        let mode = match args.mode.as_str() {
            "auto" => Mode::Auto,
            "dump" => Mode::Dump,
            "typed" => Mode::Typed,
            other => return Err(bad(format!("--mode `{other}` is not auto, dump or typed"))),
        };
        let Pacing { batch, rate, burst, max_latency, sleep_after_batch } = Pacing::of(args)?;
        if args.errors.is_empty() {
            return Err(bad("--errors needs a file name"));
        }
        if args.limit == Some(0) {
            return Err(bad("--limit must be at least 1 (got 0); leave it out to copy everything"));
        }
        let (lock, report) = cron_files(args)?;
        if args.checkpoint.is_some() && args.keys_from.is_some() {
            return Err(bad("--checkpoint resumes a SCAN; it cannot be combined with --keys-from"));
        }
        if args.checkpoint.is_some() && args.dry_run {
            return Err(bad("--checkpoint cannot be combined with --dry-run (there is nothing to resume)"));
        }
        Ok(CopyConfig {
            source,
            target,
            keys,
            split,
            on_conflict,
            mode,
            big_key_bytes: big_key_bytes(mode, args.big_key_bytes, from_file)?,
            typed_threads: match (mode, args.typed_threads) {
                (Mode::Dump, Some(_)) => {
                    return Err(bad(
                        "--typed-threads has no use with --mode dump (nothing is copied type-aware)",
                    ))
                }
                (_, None) => None,
                (_, n) => Some(threads("typed-threads", n, DEFAULT_TYPED_THREADS_AUTO)?),
            },
            batch,
            readers: threads("readers", args.readers, DEFAULT_READERS)?,
            writers: threads("writers", args.writers, DEFAULT_WRITERS)?,
            rate,
            burst,
            max_latency,
            sleep_after_batch,
            errors_path: args.errors.clone(),
            errors_append: args.errors_append,
            lock,
            report,
            checkpoint: args.checkpoint.clone(),
            max_errors: (args.max_errors > 0).then_some(args.max_errors),
            limit: args.limit,
            dry_run: args.dry_run,
            follow,
            metrics: follow::metrics(&args.metrics)?,
            progress: (args.progress > 0).then(|| Duration::from_secs(args.progress)),
            progress_style: match args.progress_style.as_str() {
                "auto" => crate::account::progress::Style::Auto,
                "plain" => crate::account::progress::Style::Plain,
                other => return Err(bad(format!("--progress-style `{other}` is not auto or plain"))),
            },
            timeouts: timeouts(args.connect_timeout, args.timeout)?,
            retry: Retry { attempts: args.retries, ..Retry::DEFAULT },
            files: named_files(
                &args.keys_from,
                &args.source,
                &[
                    ("--errors", &Some(args.errors.clone())),
                    ("--lock", &args.lock),
                    ("--report", &args.report),
                    ("--checkpoint", &args.checkpoint),
                ],
                tls_flags!(args),
            ),
        })
    }
}

impl VerifyConfig {
    /// `--slots` / `--shard`: the slots taken, `None` for every slot.
    pub fn slots(&self) -> Option<&crate::redis::slots::SlotSet> {
        Split::slots_of(&self.split)
    }

    /// Validates the raw `verify` flags.
    pub fn from_args(args: &VerifyArgs) -> Result<VerifyConfig, ConfigError> {
        let (mut source, target) =
            endpoints(&args.source, &args.target, (args.source_db, false), args.target_db, tls_flags!(args))?;
        source.read_from(reads(&args.read_from)?)?;
        let keys = key_source(&args.patterns, &args.types, args.scan_count, &args.keys_from)?;
        let split = split(&args.slots, &args.shard)?;
        if let Source::File(b) = &source {
            if args.check_extra {
                return Err(bad(format!(
                    "--check-extra needs a server SOURCE: it would hold every key of {} to tell the target's \
                     extra keys",
                    b.describe()
                )));
            }
            if b.is_stdin() && args.keys_from.as_deref() == Some("-") {
                return Err(bad("SOURCE and --keys-from cannot both be standard input"));
            }
        }
        if args.check_extra && matches!(keys, Keys::File(_)) {
            return Err(bad(
                "--check-extra cannot be combined with --keys-from (it scans the target with --match / --type)",
            ));
        }
        if let Some(path) = &args.diff {
            if path.is_empty() {
                return Err(bad("--diff needs a file name"));
            }
        }
        Ok(VerifyConfig {
            source,
            target,
            keys,
            split,
            batch: batch(args.batch)?,
            ttl_tolerance: Duration::from_millis(args.ttl_tolerance),
            check_extra: args.check_extra,
            diff_path: args.diff.clone(),
            timeouts: timeouts(args.connect_timeout, args.timeout)?,
            files: named_files(&args.keys_from, &args.source, &[("--diff", &args.diff)], tls_flags!(args)),
        })
    }
}
