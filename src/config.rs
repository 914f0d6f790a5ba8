//! Raw flags in, a validated [`CopyConfig`] / [`VerifyConfig`] out: typed values, no I/O.
//!
//! Every check whose failure is the user's to fix happens here, before any connection is made, and
//! each error names the flag or value at fault. What can only be known by talking to a server (is it
//! reachable, is the password right, is the CSV path writable) is checked in `pipeline.rs`'s preflight.

use std::num::NonZeroU32;
use std::time::Duration;

use crate::cli::{CopyArgs, VerifyArgs};
use crate::conn::Retry;

/// A configuration error: one line naming the flag or value, for exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn bad(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// Which side of the copy an endpoint is; used in messages and to pick the password variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The server keys are read from.
    Source,
    /// The server keys are written to.
    Target,
}

impl Role {
    /// Lower-case name for messages ("source", "target").
    pub fn name(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Target => "target",
        }
    }

    fn password_var(self) -> &'static str {
        match self {
            Role::Source => "REDIS_FERRY_SOURCE_PASSWORD",
            Role::Target => "REDIS_FERRY_TARGET_PASSWORD",
        }
    }
}

/// Where a server is and how to log in. Its `Display` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Source or target, for messages.
    pub role: Role,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// ACL user name, if any (`AUTH user password`).
    pub username: Option<String>,
    /// Password, from the URL or the role's environment variable.
    pub password: Option<String>,
    /// Logical database to SELECT.
    pub db: i64,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "{}:{}", self.host, self.port)?;
        }
        if self.db != 0 {
            write!(f, "/{}", self.db)?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Endpoint({} {})", self.role.name(), self)
    }
}

impl Endpoint {
    /// Parses `host:port` or `redis://[user[:password]@]host[:port][/db]`; `db_flag` overrides the URL's
    /// db and `env_password` (the role's variable) fills in a password the URL lacks.
    pub fn parse(
        role: Role,
        text: &str,
        db_flag: Option<i64>,
        env_password: Option<String>,
    ) -> Result<Endpoint, ConfigError> {
        let what = role.name().to_uppercase();
        let (rest, is_url) = if let Some(rest) = text.strip_prefix("redis://") {
            (rest, true)
        } else if text.starts_with("rediss://") {
            return Err(bad(format!(
                "{what} `{}`: TLS (rediss://) is not supported by this version yet",
                redact(text)
            )));
        } else if text.contains("://") {
            return Err(bad(format!(
                "{what} `{}`: unknown scheme; use host:port or redis://host:port",
                redact(text)
            )));
        } else {
            (text, false)
        };
        let (userinfo, hostpart) = match rest.rsplit_once('@') {
            Some((u, h)) if is_url => (Some(u), h),
            _ => (None, rest),
        };
        let (authority, path) = match hostpart.split_once('/') {
            Some((a, p)) if is_url => (a, Some(p)),
            _ => (hostpart, None),
        };
        let (host, port) = split_host_port(authority, is_url)
            .map_err(|why| bad(format!("{what} `{}`: {why}", redact(text))))?;
        let (mut username, mut password) = (None, None);
        if let Some(info) = userinfo {
            let (u, p) = match info.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (info, None),
            };
            if !u.is_empty() {
                username = Some(percent_decode(u).map_err(|why| bad(format!("{what}: user name {why}")))?);
            }
            if let Some(p) = p {
                password = Some(
                    percent_decode(p)
                        .map_err(|_| bad(format!("{what}: the password is not valid percent-encoding")))?,
                );
            }
        }
        if password.is_none() {
            password = env_password.filter(|p| !p.is_empty());
        }
        let url_db =
            match path.map(|p| p.split('?').next().unwrap_or("")) {
                None | Some("") => 0,
                Some(db) => db.parse::<i64>().ok().filter(|db| *db >= 0).ok_or_else(|| {
                    bad(format!("{what} `{}`: `{db}` is not a database number", redact(text)))
                })?,
            };
        let db = match db_flag {
            Some(db) if db < 0 => {
                return Err(bad(format!("--{}-db must be 0 or more (got {db})", role.name())))
            }
            Some(db) => db,
            None => url_db,
        };
        Ok(Endpoint { role, host, port, username, password, db })
    }

    /// Reads the role's password variable from the environment.
    pub fn env_password(role: Role) -> Option<String> {
        std::env::var(role.password_var()).ok()
    }
}

/// Splits `host[:port]` (IPv6 in brackets); the port is required without a URL scheme.
fn split_host_port(authority: &str, is_url: bool) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unclosed [ in the IPv6 address")?;
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(format!("unexpected `{after}` after the address")),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("the host is missing".into());
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("`{p}` is not a port number (1-65535)"))?,
        None if is_url => 6379,
        None => return Err("the port is missing (expected host:port)".into()),
    };
    Ok((host.to_string(), port))
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("has a bad %-escape")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "is not UTF-8".to_string())
}

/// The URL with any password replaced by `***`, for messages.
pub fn redact(text: &str) -> String {
    if let Some((scheme, rest)) = text.split_once("://") {
        if let Some((info, host)) = rest.rsplit_once('@') {
            if let Some((user, _)) = info.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    text.to_string()
}

/// A Redis data type that `--type` can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    String,
    List,
    Set,
    Zset,
    Hash,
    Stream,
}

impl KeyType {
    /// The name SCAN TYPE and TYPE use.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::String => "string",
            KeyType::List => "list",
            KeyType::Set => "set",
            KeyType::Zset => "zset",
            KeyType::Hash => "hash",
            KeyType::Stream => "stream",
        }
    }

    fn parse(text: &str) -> Result<KeyType, ConfigError> {
        Ok(match text.to_ascii_lowercase().as_str() {
            "string" => KeyType::String,
            "list" => KeyType::List,
            "set" => KeyType::Set,
            "zset" => KeyType::Zset,
            "hash" => KeyType::Hash,
            "stream" => KeyType::Stream,
            _ => {
                return Err(bad(format!(
                    "--type `{text}` is not one of string, list, set, zset, hash, stream"
                )))
            }
        })
    }
}

/// Where the keys to work on come from.
#[derive(Debug, Clone)]
pub enum KeySource {
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
    /// DUMP/RESTORE (the only path in this version; the fallback to type-aware copy comes later).
    Auto,
    /// DUMP/RESTORE only.
    Dump,
}

/// Connection timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Time allowed to establish a connection (and log in).
    pub connect: Duration,
    /// Time allowed for each read or write on an established connection.
    pub io: Duration,
}

/// Everything `copy` needs, checked and typed.
#[derive(Debug, Clone)]
pub struct CopyConfig {
    /// The server read from.
    pub source: Endpoint,
    /// The server written to.
    pub target: Endpoint,
    /// Where the keys come from.
    pub keys: KeySource,
    /// Skip or replace keys already on the target.
    pub on_conflict: OnConflict,
    /// DUMP/RESTORE or type-aware.
    pub mode: Mode,
    /// Keys per pipelined batch; at least 1.
    pub batch: usize,
    /// Fetch threads.
    pub readers: usize,
    /// Write threads.
    pub writers: usize,
    /// Keys per second through the token bucket; `None` is unlimited.
    pub rate: Option<NonZeroU32>,
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
    /// Interval of progress lines; `None` for none.
    pub progress: Option<Duration>,
    /// Connection timeouts for both sides.
    pub timeouts: Timeouts,
    /// How transient failures are retried.
    pub retry: Retry,
}

/// Everything `verify` needs, checked and typed.
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    /// The reference server.
    pub source: Endpoint,
    /// The server compared with it.
    pub target: Endpoint,
    /// Where the keys come from.
    pub keys: KeySource,
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
}

/// Default number of fetch threads: measured on 2 cores with both servers local (see README).
pub const DEFAULT_READERS: usize = 2;
/// Default number of write threads.
pub const DEFAULT_WRITERS: usize = 2;
const MAX_BATCH: u64 = 100_000;
const MAX_THREADS: u64 = 64;

fn key_source(
    patterns: &[String],
    types: &[String],
    scan_count: u64,
    keys_from: &Option<String>,
) -> Result<KeySource, ConfigError> {
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
        return Ok(KeySource::File(path.clone()));
    }
    if scan_count == 0 {
        return Err(bad("--scan-count must be at least 1 (got 0)"));
    }
    let mut types_parsed: Vec<KeyType> = Vec::new();
    for t in types {
        let t = KeyType::parse(t)?;
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
    Ok(KeySource::Scan { patterns: pats, types: types_parsed, count: scan_count })
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
    source_db: Option<i64>,
    target_db: Option<i64>,
) -> Result<(Endpoint, Endpoint), ConfigError> {
    let source = Endpoint::parse(Role::Source, source, source_db, Endpoint::env_password(Role::Source))?;
    let target = Endpoint::parse(Role::Target, target, target_db, Endpoint::env_password(Role::Target))?;
    if source.host == target.host && source.port == target.port && source.db == target.db {
        return Err(bad(format!("SOURCE and TARGET are the same database ({source}); nothing to copy")));
    }
    Ok((source, target))
}

/// Checks `--lock`, `--report` and `--checkpoint`: a name each, and no file named twice among them, `--errors` and
/// `--keys-from` (the lock file is truncated for our PID, the report replaced at the end).
fn cron_files(args: &CopyArgs) -> Result<(Option<String>, Option<String>), ConfigError> {
    let mut named: Vec<(&str, &str)> = vec![("--errors", args.errors.as_str())];
    if let Some(keys) = args.keys_from.as_deref().filter(|k| *k != "-") {
        named.push(("--keys-from", keys));
    }
    for (flag, value) in
        [("--lock", &args.lock), ("--report", &args.report), ("--checkpoint", &args.checkpoint)]
    {
        let Some(path) = value.as_deref() else { continue };
        if path.is_empty() {
            return Err(bad(format!("{flag} needs a file name")));
        }
        if let Some((other, _)) = named.iter().find(|(_, p)| *p == path) {
            return Err(bad(format!("{flag} and {other} name the same file ({path}); give each its own")));
        }
        named.push((flag, path));
    }
    Ok((args.lock.clone(), args.report.clone()))
}

impl CopyConfig {
    /// Validates the raw `copy` flags.
    pub fn from_args(args: &CopyArgs) -> Result<CopyConfig, ConfigError> {
        let (source, target) = endpoints(&args.source, &args.target, args.source_db, args.target_db)?;
        let keys = key_source(&args.patterns, &args.types, args.scan_count, &args.keys_from)?;
        let on_conflict = match args.on_conflict.as_str() {
            "skip" => OnConflict::Skip,
            "replace" => OnConflict::Replace,
            other => return Err(bad(format!("--on-conflict `{other}` is not skip or replace"))),
        };
        let mode = match args.mode.as_str() {
            "auto" => Mode::Auto,
            "dump" => Mode::Dump,
            "typed" => {
                return Err(bad("--mode typed is not available in this version yet; use auto or dump"))
            }
            other => return Err(bad(format!("--mode `{other}` is not auto, dump or typed"))),
        };
        let batch = batch(args.batch)?;
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
            on_conflict,
            mode,
            batch,
            readers: threads("readers", args.readers, DEFAULT_READERS)?,
            writers: threads("writers", args.writers, DEFAULT_WRITERS)?,
            rate,
            sleep_after_batch: Duration::from_millis(args.sleep_after_batch),
            errors_path: args.errors.clone(),
            errors_append: args.errors_append,
            lock,
            report,
            checkpoint: args.checkpoint.clone(),
            max_errors: (args.max_errors > 0).then_some(args.max_errors),
            limit: args.limit,
            dry_run: args.dry_run,
            progress: (args.progress > 0).then(|| Duration::from_secs(args.progress)),
            timeouts: timeouts(args.connect_timeout, args.timeout)?,
            retry: Retry { attempts: args.retries, ..Retry::DEFAULT },
        })
    }
}

impl VerifyConfig {
    /// Validates the raw `verify` flags.
    pub fn from_args(args: &VerifyArgs) -> Result<VerifyConfig, ConfigError> {
        let (source, target) = endpoints(&args.source, &args.target, args.source_db, args.target_db)?;
        let keys = key_source(&args.patterns, &args.types, args.scan_count, &args.keys_from)?;
        if args.check_extra && matches!(keys, KeySource::File(_)) {
            return Err(bad(
                "--check-extra cannot be combined with --keys-from (it scans the target with --match / --type)",
            ));
        }
        if let Some(path) = &args.diff {
            if path.is_empty() {
                return Err(bad("--diff needs a file name"));
            }
            // The diff CSV is truncated at the first difference, while --keys-from would still be reading it.
            if args.keys_from.as_deref() == Some(path.as_str()) {
                return Err(bad(format!(
                    "--diff and --keys-from name the same file ({path}); give the new diff its own file"
                )));
            }
        }
        Ok(VerifyConfig {
            source,
            target,
            keys,
            batch: batch(args.batch)?,
            ttl_tolerance: Duration::from_millis(args.ttl_tolerance),
            check_extra: args.check_extra,
            diff_path: args.diff.clone(),
            timeouts: timeouts(args.connect_timeout, args.timeout)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(text: &str) -> Result<Endpoint, ConfigError> {
        Endpoint::parse(Role::Source, text, None, None)
    }

    #[test]
    fn host_port_and_urls() {
        let e = ep("10.0.0.5:6380").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.db), ("10.0.0.5", 6380, 0));
        let e = ep("redis://alice:s%40cret@cache.local:7000/3").unwrap();
        assert_eq!(e.host, "cache.local");
        assert_eq!(e.port, 7000);
        assert_eq!(e.db, 3);
        assert_eq!(e.username.as_deref(), Some("alice"));
        assert_eq!(e.password.as_deref(), Some("s@cret"));
        let e = ep("redis://:pw@localhost").unwrap();
        assert_eq!((e.port, e.username, e.password.as_deref()), (6379, None, Some("pw")));
        let e = ep("redis://[::1]:7001").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 7001));
    }

    #[test]
    fn password_from_environment_and_db_override() {
        let e = Endpoint::parse(Role::Target, "redis://h:1/2", Some(5), Some("env".into())).unwrap();
        assert_eq!((e.db, e.password.as_deref()), (5, Some("env")));
        let e = Endpoint::parse(Role::Target, "redis://:url@h:1", None, Some("env".into())).unwrap();
        assert_eq!(e.password.as_deref(), Some("url"));
    }

    #[test]
    fn display_never_shows_the_password() {
        let e = ep("redis://u:topsecret@h:1/2").unwrap();
        assert_eq!(e.to_string(), "h:1/2");
        assert!(!format!("{e:?}").contains("topsecret"));
        assert_eq!(redact("redis://u:topsecret@h:1"), "redis://u:***@h:1");
    }

    #[test]
    fn malformed_endpoints_are_refused_by_name() {
        for text in
            ["redis://127.0.0.1:notaport", "localhost", ":6379", "redis://h:0", "redis://h:1/x", "http://h:1"]
        {
            let err = ep(text).unwrap_err().to_string();
            assert!(err.starts_with("SOURCE"), "{text}: {err}");
        }
        let err = ep("redis://u:pw@h:notaport").unwrap_err().to_string();
        assert!(!err.contains("pw@"), "{err}");
    }
}
