//! Raw flags in, a validated [`CopyConfig`] / [`VerifyConfig`] out: typed values, no I/O but reading the
//! TLS certificate and key files that flags name (read once here, so every reconnection uses the same ones).
//!
//! Every check whose failure is the user's to fix happens here, before any connection is made, and
//! each error names the flag or value at fault. What can only be known by talking to a server (is it
//! reachable, is the password right, is the CSV path writable) is checked in `pipeline.rs`'s preflight.

use std::num::NonZeroU32;
use std::time::Duration;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::cli::{CopyArgs, VerifyArgs};
use crate::conn::Retry;
use crate::files::Use;

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

    /// The environment variable a password for this side may come from.
    pub fn password_var(self) -> &'static str {
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
    /// `Some` for a `rediss://` URL: how to speak TLS to it.
    pub tls: Option<Tls>,
}

/// How to speak TLS to one `rediss://` server. Holds PEM bytes, never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// CA certificates trusted instead of the system roots (`--<role>-tls-ca`); `None` trusts the system's.
    pub ca: Option<Vec<u8>>,
    /// Certificate and key presented to a server that requires client certificates (mutual TLS).
    pub client: Option<ClientCert>,
    /// `--<role>-tls-insecure`: accept any certificate for any name.
    pub insecure: bool,
}

impl std::fmt::Debug for Tls {
    /// Which options are set; never the certificates or the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("ca", &if self.ca.is_some() { "from file" } else { "system roots" })
            .field("client_cert", &self.client.is_some())
            .field("insecure", &self.insecure)
            .finish()
    }
}

/// A client certificate for mutual TLS, as PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The certificate chain, leaf first (`--<role>-tls-cert`).
    pub cert: Vec<u8>,
    /// Its private key (`--<role>-tls-key`).
    pub key: Vec<u8>,
}

/// The `--<role>-tls-*` flags of one side, as given on the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct TlsFlags<'a> {
    /// `--<role>-tls-ca FILE`.
    pub ca: Option<&'a str>,
    /// `--<role>-tls-cert FILE`.
    pub cert: Option<&'a str>,
    /// `--<role>-tls-key FILE`.
    pub key: Option<&'a str>,
    /// `--<role>-tls-insecure`.
    pub insecure: bool,
}

impl Tls {
    /// Checks one side's TLS flags against its URL and reads the files they name. `url_tls` says whether
    /// the URL was `rediss://`: TLS flags on a plain endpoint are refused rather than silently ignored.
    pub fn from_flags(role: Role, flags: TlsFlags<'_>, url_tls: bool) -> Result<Option<Tls>, ConfigError> {
        let name = role.name();
        let flag = |what: &str| format!("--{name}-tls-{what}");
        if !url_tls {
            let given = [
                ("ca", flags.ca.is_some()),
                ("cert", flags.cert.is_some()),
                ("key", flags.key.is_some()),
                ("insecure", flags.insecure),
            ];
            return match given.iter().find(|(_, on)| *on) {
                Some((what, _)) => Err(bad(format!(
                    "{} is for TLS, but {} is not a rediss:// URL; write it as rediss://host:port",
                    flag(what),
                    name.to_uppercase()
                ))),
                None => Ok(None),
            };
        }
        if flags.insecure && flags.ca.is_some() {
            return Err(bad(format!(
                "{} skips certificate verification, so {} would be ignored; give one or the other",
                flag("insecure"),
                flag("ca")
            )));
        }
        let ca = match flags.ca {
            None => None,
            Some(path) => {
                let bytes = read_pem_file(&flag("ca"), path)?;
                let mut roots = rustls::RootCertStore::empty();
                for (i, cert) in certificates(&flag("ca"), path, &bytes)?.into_iter().enumerate() {
                    roots.add(cert).map_err(|e| {
                        bad(format!(
                            "{} {path}: certificate {} cannot be a trust anchor: {e}",
                            flag("ca"),
                            i + 1
                        ))
                    })?;
                }
                Some(bytes)
            }
        };
        let client = match (flags.cert, flags.key) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(bad(format!(
                    "{} needs {} (the certificate's private key)",
                    flag("cert"),
                    flag("key")
                )))
            }
            (None, Some(_)) => {
                return Err(bad(format!(
                    "{} needs {} (the certificate it belongs to)",
                    flag("key"),
                    flag("cert")
                )))
            }
            (Some(cert_path), Some(key_path)) => {
                let cert = read_pem_file(&flag("cert"), cert_path)?;
                let chain = certificates(&flag("cert"), cert_path, &cert)?;
                let key = read_pem_file(&flag("key"), key_path)?;
                let parsed = PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
                    bad(format!(
                        "{} {key_path}: {}",
                        flag("key"),
                        match e {
                            pem::Error::NoItemsFound => "no private key in it (expected an unencrypted PEM key: \
                                                         BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
                                .to_string(),
                            e => pem_problem(&e),
                        }
                    ))
                })?;
                // The checks rustls makes when it connects, made now so the error can name the flag.
                let provider = rustls::crypto::ring::default_provider();
                rustls::sign::CertifiedKey::from_der(chain, parsed, &provider).map_err(|e| match e {
                    rustls::Error::InconsistentKeys(_) => bad(format!(
                        "{} {key_path} is not the private key of {} {cert_path}",
                        flag("key"),
                        flag("cert")
                    )),
                    rustls::Error::InvalidCertificate(_)
                        if e.to_string().contains("UnsupportedCertVersion") =>
                    {
                        bad(format!(
                            "{} {cert_path}: an X.509 version 1 certificate, which rustls refuses; issue a \
                             version 3 one (with extensions)",
                            flag("cert")
                        ))
                    }
                    rustls::Error::InvalidCertificate(_) => {
                        bad(format!("{} {cert_path}: rustls cannot use this certificate ({e})", flag("cert")))
                    }
                    e => bad(format!("{} {key_path}: unusable private key ({e})", flag("key"))),
                })?;
                Some(ClientCert { cert, key })
            }
        };
        Ok(Some(Tls { ca, client, insecure: flags.insecure }))
    }
}

/// Reads a PEM file named by `flag`.
fn read_pem_file(flag: &str, path: &str) -> Result<Vec<u8>, ConfigError> {
    if path.is_empty() {
        return Err(bad(format!("{flag} needs a file name")));
    }
    std::fs::read(path).map_err(|e| bad(format!("{flag} {path}: cannot read it: {e}")))
}

/// The certificates in a PEM file; at least one.
fn certificates(flag: &str, path: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("{flag} {path}: {}", pem_problem(&e))))?;
    if certs.is_empty() {
        return Err(bad(format!(
            "{flag} {path}: no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)"
        )));
    }
    Ok(certs)
}

/// A PEM parse error in words (its own Display prints raw bytes).
fn pem_problem(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { .. } => "not valid PEM: a section has no -----END line".into(),
        pem::Error::IllegalSectionStart { .. } => "not valid PEM: a malformed -----BEGIN line".into(),
        pem::Error::Base64Decode(_) => "not valid PEM: bad base64 inside a section".into(),
        pem::Error::NoItemsFound => "nothing usable in it".into(),
        other => format!("not valid PEM: {other}"),
    }
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
        let (rest, is_url, tls) = if let Some(rest) = text.strip_prefix("redis://") {
            (rest, true, false)
        } else if let Some(rest) = text.strip_prefix("rediss://") {
            (rest, true, true)
        } else if text.contains("://") {
            return Err(bad(format!(
                "{what} `{}`: unknown scheme; use host:port, redis://host:port or rediss://host:port (TLS)",
                redact(text)
            )));
        } else {
            (text, false, false)
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
        // A user name is always used: without a password it logs in with an empty one, which the server
        // accepts for a `nopass` user and refuses otherwise (never the default user instead).
        if username.is_some() && password.is_none() {
            password = Some(String::new());
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
        Ok(Endpoint { role, host, port, username, password, db, tls: tls.then(Tls::default) })
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
        match authority.split_once(':') {
            Some((_, rest)) if rest.contains(':') => {
                return Err("more than one `:` (an IPv6 address goes in brackets: [::1]:6379)".into())
            }
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
    /// DUMP/RESTORE, with a type-aware copy for big keys and for keys a server refuses to DUMP or RESTORE.
    Auto,
    /// DUMP/RESTORE only.
    Dump,
    /// Type-aware reads and writes for every key.
    Typed,
}

/// Connection timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Time allowed to establish a connection (and log in).
    pub connect: Duration,
    /// Time allowed for each read or write on an established connection.
    pub io: Duration,
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
    /// Interval of progress lines; `None` for none.
    pub progress: Option<Duration>,
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
/// The `--rate` bucket's burst (`--burst`, else `--batch`) may hold at most this many seconds of the rate.
const MAX_BURST_SECONDS: u64 = 60;
/// The longest `--sleep-after-batch`: 10 s after every batch is already 50 keys/s at the default batch.
const MAX_SLEEP_AFTER_BATCH_MS: u64 = 10_000;
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
    if scan_count > MAX_SCAN_COUNT {
        return Err(bad(format!(
            "--scan-count must be at most {MAX_SCAN_COUNT} (got {scan_count}): one SCAN call blocks the server \
             for as long as it takes to visit that many slots"
        )));
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

fn big_key_bytes(mode: Mode, value: Option<u64>) -> Result<Option<u64>, ConfigError> {
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
    source_db: Option<i64>,
    target_db: Option<i64>,
    [source_tls, target_tls]: [TlsFlags<'_>; 2],
) -> Result<(Endpoint, Endpoint), ConfigError> {
    let mut source = Endpoint::parse(Role::Source, source, source_db, Endpoint::env_password(Role::Source))?;
    let mut target = Endpoint::parse(Role::Target, target, target_db, Endpoint::env_password(Role::Target))?;
    source.tls = Tls::from_flags(Role::Source, source_tls, source.tls.is_some())?;
    target.tls = Tls::from_flags(Role::Target, target_tls, target.tls.is_some())?;
    Ok((source, target))
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
    outputs: &[(&str, &Option<String>)],
    tls: [TlsFlags<'_>; 2],
) -> Vec<NamedFile> {
    let mut files = Vec::new();
    let mut add = |flag: String, path: Option<&str>, how: Use| {
        if let Some(path) = path.filter(|p| !p.is_empty()) {
            files.push(NamedFile { flag, path: path.to_string(), how });
        }
    };
    add("--keys-from".into(), keys_from.as_deref(), Use::Read);
    for (flag, path) in outputs {
        add(flag.to_string(), path.as_deref(), Use::Write);
    }
    for (role, flags) in [Role::Source, Role::Target].into_iter().zip(tls) {
        for (what, path) in [("ca", flags.ca), ("cert", flags.cert), ("key", flags.key)] {
            add(format!("--{}-tls-{what}", role.name()), path, Use::Read);
        }
    }
    files
}

/// The per-side TLS flags, which `copy` and `verify` spell the same way.
macro_rules! tls_flags {
    ($args:expr) => {
        [
            TlsFlags {
                ca: $args.source_tls_ca.as_deref(),
                cert: $args.source_tls_cert.as_deref(),
                key: $args.source_tls_key.as_deref(),
                insecure: $args.source_tls_insecure,
            },
            TlsFlags {
                ca: $args.target_tls_ca.as_deref(),
                cert: $args.target_tls_cert.as_deref(),
                key: $args.target_tls_key.as_deref(),
                insecure: $args.target_tls_insecure,
            },
        ]
    };
}

impl CopyConfig {
    /// Validates the raw `copy` flags.
    pub fn from_args(args: &CopyArgs) -> Result<CopyConfig, ConfigError> {
        let (source, target) =
            endpoints(&args.source, &args.target, args.source_db, args.target_db, tls_flags!(args))?;
        let keys = key_source(&args.patterns, &args.types, args.scan_count, &args.keys_from)?;
        let on_conflict = match args.on_conflict.as_str() {
            "skip" => OnConflict::Skip,
            "replace" => OnConflict::Replace,
            other => return Err(bad(format!("--on-conflict `{other}` is not skip or replace"))),
        };
        let mode = match args.mode.as_str() {
            "auto" => Mode::Auto,
            "dump" => Mode::Dump,
            "typed" => Mode::Typed,
            other => return Err(bad(format!("--mode `{other}` is not auto, dump or typed"))),
        };
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
        if let Some(r) = rate.map(|r| u64::from(r.get())).filter(|r| burst as u64 > MAX_BURST_SECONDS * r) {
            let (flag, n) = if args.burst.is_some() { ("--burst", burst) } else { ("--batch", batch) };
            return Err(bad(format!(
                "{flag} {n} with --rate {r}: a batch waits for all its tokens, so {burst} keys would pass at once \
                 and then nothing for {} s; give {flag} {} or less, or a higher --rate",
                burst as u64 / r,
                MAX_BURST_SECONDS * r
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
            big_key_bytes: big_key_bytes(mode, args.big_key_bytes)?,
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
            sleep_after_batch: match args.sleep_after_batch {
                ms if ms > MAX_SLEEP_AFTER_BATCH_MS => {
                    return Err(bad(format!(
                        "--sleep-after-batch must be at most {MAX_SLEEP_AFTER_BATCH_MS} ms (got {ms}); for a \
                         slower copy use --rate"
                    )))
                }
                ms => Duration::from_millis(ms),
            },
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
            files: named_files(
                &args.keys_from,
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
    /// Validates the raw `verify` flags.
    pub fn from_args(args: &VerifyArgs) -> Result<VerifyConfig, ConfigError> {
        let (source, target) =
            endpoints(&args.source, &args.target, args.source_db, args.target_db, tls_flags!(args))?;
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
            files: named_files(&args.keys_from, &[("--diff", &args.diff)], tls_flags!(args)),
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
    fn a_user_name_without_a_password_logs_in_with_an_empty_one() {
        let e = ep("redis://limited@h:1").unwrap();
        assert_eq!((e.username.as_deref(), e.password.as_deref()), (Some("limited"), Some("")));
        let e = Endpoint::parse(Role::Source, "redis://limited@h:1", None, Some("env".into())).unwrap();
        assert_eq!(e.password.as_deref(), Some("env"));
        assert_eq!(ep("redis://h:1").unwrap().password, None);
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
    fn rediss_urls_and_tls_flags() {
        let e = ep("rediss://u:pw@cache.example:6380/1").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.db), ("cache.example", 6380, 1));
        assert!(e.tls == Some(Tls::default()), "system roots, verified");
        assert!(ep("rediss://cache.example").unwrap().port == 6379);
        assert!(ep("redis://h:1").unwrap().tls.is_none());
        let insecure = TlsFlags { insecure: true, ..TlsFlags::default() };
        let t = Tls::from_flags(Role::Target, insecure, true).unwrap().unwrap();
        assert!(t.insecure && t.ca.is_none() && t.client.is_none());
        let refused =
            |flags: TlsFlags<'_>, tls: bool| Tls::from_flags(Role::Source, flags, tls).unwrap_err().0;
        let err = refused(insecure, false);
        assert!(
            err.starts_with("--source-tls-insecure is for TLS, but SOURCE is not a rediss:// URL"),
            "{err}"
        );
        let err = refused(TlsFlags { cert: Some("c.pem"), ..TlsFlags::default() }, true);
        assert_eq!(err, "--source-tls-cert needs --source-tls-key (the certificate's private key)");
        let err = refused(TlsFlags { ca: Some("ca.pem"), insecure: true, ..TlsFlags::default() }, true);
        assert!(err.contains("give one or the other"), "{err}");
        let err = refused(TlsFlags { ca: Some(""), ..TlsFlags::default() }, true);
        assert_eq!(err, "--source-tls-ca needs a file name");
    }

    #[test]
    fn malformed_endpoints_are_refused_by_name() {
        for text in [
            "redis://127.0.0.1:notaport",
            "localhost",
            ":6379",
            "redis://h:0",
            "redis://h:1/x",
            "http://h:1",
            "127.0.0.1:6379:99",
            "redis://h:6379:1",
            "h:",
        ] {
            let err = ep(text).unwrap_err().to_string();
            assert!(err.starts_with("SOURCE"), "{text}: {err}");
        }
        let err = ep("redis://u:pw@h:notaport").unwrap_err().to_string();
        assert!(!err.contains("pw@"), "{err}");
    }
}
