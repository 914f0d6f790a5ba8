//! The type-aware copier: keys that DUMP/RESTORE cannot move (`--mode typed`, a DUMP or RESTORE the
//! servers refuse, a key above `--big-key-bytes`) are read with each type's own commands and written
//! in pages, one key at a time, by a pool of `--typed-threads` threads, each with one source and one
//! target connection.
//!
//! One key: `TYPE` and its deadline (`PEXPIRETIME`, or `PTTL` on Redis < 7.0); then pages read from the
//! source (GETRANGE chunks, LRANGE pages, SSCAN / ZSCAN / HSCAN, XRANGE pages), each together with the
//! deadline again, and written under a temporary name in the key's hash slot, each page in its own
//! MULTI/EXEC; then one last MULTI/EXEC sets the deadline on the temporary key (`PEXPIREAT`, or `PERSIST`),
//! asks whether it is still there (`EXISTS`: the target's clock decides whether the deadline has passed,
//! and then PEXPIREAT deletes the key) and renames it (`RENAME` under `replace`, `RENAMENX` + `DEL` of the temporary key under `skip`). The
//! deadline goes on the temporary key before the rename, in the same transaction: a reader never sees
//! the key without its TTL, and no crash can leave it between the two. Streams also carry their last
//! ID, `entries-added` and `max-deleted-entry-id` (XSETID), their consumer groups (XGROUP CREATE at the
//! last-delivered ID with ENTRIESREAD), the consumers (XGROUP CREATECONSUMER) and the pending entries
//! (XCLAIM … IDLE … RETRYCOUNT … FORCE JUSTID), bar those whose entry was deleted from the stream.
//!
//! Memory and server time are bounded by the page (about [`PAGE_BYTES`], at most [`MAX_PAGE`] elements;
//! [`STRING_CHUNK`] for strings), whatever the key's size. The copy is not a snapshot: a key written to
//! on the source while it is copied may arrive as a mix of before and after (DUMP is atomic; pages
//! are not).
//!
//! Faults: source reads go through [`exchange`] (they are idempotent). A target write whose answer was
//! lost leaves the temporary key in an unknown state, so the key starts over under a new temporary
//! name after a pause (the old one is deleted), up to the retry policy; a transaction the target
//! refused with a transient error (OOM, LOADING, ...) was not applied and is sent again. Every page
//! after the first checks, inside its transaction, that the temporary key still exists (it carries a
//! safety TTL of [`SAFETY_TTL_MS`] while it is built, so a killed run leaves nothing behind for
//! long), and the rename fails on a temporary key that is gone: a key is never published incomplete.
//! On every other way out the temporary key is deleted.
//!
//! A second Ctrl-C quits at once; [`drop_in_flight`] first closes the gate every typed write passes and
//! deletes the temporary keys registered in [`IN_FLIGHT`].
//!
//! This file also holds what routes keys here in `--mode auto` ([`Plan`], [`Router`], [`Fallback`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, RwLock};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use redis::{Cmd, Pipeline, Value};

use crate::clock::Deadlines;
use crate::cluster::{hash_tag, key_in_slot, slot};
use crate::config::{CopyConfig, Endpoint, Mode, OnConflict, Timeouts};
use crate::conn::{self, Conn, ServerInfo};
use crate::key::Key;
use crate::report::{Counters, Reporter, Stage, Stop, StopReason};
use crate::stage::write::WriteShared;
use crate::stage::{exchange, kind, Batch};

/// Prefix of every temporary key on the target.
pub const TEMP_PREFIX: &[u8] = b"redis-ferry:tmp:";
/// TTL of a temporary key while it is being built, renewed with every page.
pub const SAFETY_TTL_MS: u64 = 600_000;
/// A page of an aggregate aims at about this many bytes.
pub const PAGE_BYTES: usize = 1 << 20;
/// Most elements (members, fields, entries) in one page.
pub const MAX_PAGE: usize = 1000;
/// Elements asked for in the first page of a key.
const FIRST_PAGE: usize = 250;
/// Bytes of a string read and written at once.
pub const STRING_CHUNK: usize = 1 << 20;
/// Keys whose name is longer than this are not spelled out inside their temporary key's name.
const MAX_NAME_IN_TEMP: usize = 256;

/// What the typed threads need to know about the two servers.
#[derive(Debug, Clone, Copy)]
pub struct Servers {
    /// How the source tells deadlines (PEXPIRETIME, or PTTL on its clock).
    pub deadlines: Deadlines,
    /// The target's version, for the stream options it takes (7.0: ENTRIESADDED, ENTRIESREAD; 6.2:
    /// CREATECONSUMER).
    pub target: (u32, u32, u32),
    /// `--batch`: a typed thread pauses (`--sleep-after-batch`) after this many keys and pages.
    pub batch: usize,
}

// ---------------------------------------------------------------------------------------------------
// Routing (--mode auto)
// ---------------------------------------------------------------------------------------------------

/// Why a key goes the type-aware way in `--mode auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// MEMORY USAGE (or the DUMP length) is above `--big-key-bytes`.
    Big,
    /// The source refused DUMP.
    DumpRefused,
    /// The target refused RESTORE.
    RestoreRefused,
}

/// The fallback state shared by fetch and write threads: which reasons were logged already, and
/// whether the size check by MEMORY USAGE still works.
#[derive(Debug)]
pub struct Fallback {
    /// Keys above this many bytes go type-aware.
    pub big_key_bytes: u64,
    /// MEMORY USAGE is pipelined before DUMP (turned off when the source refuses it).
    size_check: AtomicBool,
    /// Strings are read by value (GETRANGE) and written with SET (turned off when a server refuses).
    strings: AtomicBool,
    /// Keys that are not read by value go by DUMP/RESTORE; when false, they all go type-aware.
    pub dump: bool,
    /// One flag per [`Why`]: the first key of that kind was logged.
    said: [AtomicBool; 3],
    /// Keys routed so far, per [`Why`].
    routed: [AtomicU64; 3],
}

impl Fallback {
    /// A fallback for `--big-key-bytes` `big_key_bytes`; `size_check` says MEMORY USAGE may be used,
    /// `strings` that strings may be read by value and written with SET, `dump` that the other keys go
    /// by DUMP/RESTORE (else all of them go type-aware).
    pub fn new(big_key_bytes: u64, size_check: bool, strings: bool, dump: bool) -> Fallback {
        Fallback {
            big_key_bytes,
            size_check: AtomicBool::new(size_check),
            strings: AtomicBool::new(strings),
            dump,
            said: Default::default(),
            routed: Default::default(),
        }
    }

    /// True while MEMORY USAGE is asked before DUMP.
    pub fn size_check(&self) -> bool {
        self.size_check.load(Ordering::Relaxed)
    }

    /// MEMORY USAGE was refused: from now on a big key is found by its DUMP length.
    pub fn no_size_check(&self, why: &str) {
        if self.size_check.swap(false, Ordering::Relaxed) {
            log::warn!(
                "the source refuses MEMORY USAGE ({why}): keys above --big-key-bytes are now found by their DUMP \
                 length, so each one is read whole once before it goes type-aware"
            );
        }
    }

    /// True while strings are read by value first.
    pub fn strings(&self) -> bool {
        self.strings.load(Ordering::Relaxed)
    }

    /// A server refused GETRANGE: from now on strings are DUMPed like other keys.
    pub fn no_strings(&self, why: &str) {
        if self.strings.swap(false, Ordering::Relaxed) {
            log::warn!("the source refuses GETRANGE ({why}): strings are now copied with DUMP/RESTORE too");
        }
    }

    /// Records that `key` goes type-aware for `why`; the first key of each kind is logged.
    pub fn note(&self, why: Why, key: &Key, detail: &str) {
        let i = why as usize;
        self.routed[i].fetch_add(1, Ordering::Relaxed);
        if self.said[i].swap(true, Ordering::Relaxed) {
            log::debug!("{key}: type-aware copy ({detail})");
            return;
        }
        let what = match why {
            Why::Big => format!("keys above --big-key-bytes {}", self.big_key_bytes),
            Why::DumpRefused => "keys the source will not DUMP".to_string(),
            Why::RestoreRefused => "keys the target will not RESTORE".to_string(),
        };
        log::info!("{what} are copied type-aware, key by key (first: {key}: {detail})");
    }

    /// Keys routed for each reason: (big, DUMP refused, RESTORE refused).
    pub fn counts(&self) -> (u64, u64, u64) {
        let n = |i: usize| self.routed[i].load(Ordering::Relaxed);
        (n(0), n(1), n(2))
    }
}

/// One fetch or write thread's way to the typed threads (it owns its sender, so the typed threads
/// see the channel disconnect once every such thread has returned).
pub struct Router<'a> {
    /// To the typed threads.
    pub tx: Sender<Batch<Key>>,
    /// Shared fallback state.
    pub fallback: &'a Fallback,
}

impl Router<'_> {
    /// Hands `keys` of ledger batch `id` to the typed threads; if they are gone (only after a panic),
    /// the keys are given back as unreached.
    pub fn send(&self, id: u64, keys: Vec<Key>, rep: &Reporter) {
        if keys.is_empty() {
            return;
        }
        if let Err(lost) = self.tx.send(Batch { id, items: keys }) {
            rep.unreached(lost.into_inner().items.len());
        }
    }
}

/// True when a DUMP error reply means "this server will not DUMP for us" (ACL, renamed or disabled
/// command), so that the key may go type-aware.
pub fn dump_refused(err: &redis::ServerError) -> bool {
    err.code() == "NOPERM" || unknown_command(err)
}

/// True when a RESTORE error reply means the target will not take this payload (an RDB version it
/// does not know, a format it cannot read) or RESTORE at all (ACL, renamed or disabled command).
pub fn restore_refused(err: &redis::ServerError) -> bool {
    let details = err.details().unwrap_or("");
    err.code() == "NOPERM"
        || unknown_command(err)
        || details.contains("payload version or checksum are wrong")
        || details.contains("Bad data format")
}

fn unknown_command(err: &redis::ServerError) -> bool {
    err.code() == "ERR" && err.details().unwrap_or("").starts_with("unknown command")
}

/// NOPERM about the command itself (not about the keys or channels it names), or an unknown command.
pub fn command_denied(err: &redis::ServerError) -> bool {
    (err.code() == "NOPERM" && err.details().unwrap_or("").contains("run the")) || unknown_command(err)
}

/// The RDB format version a Redis version writes in its DUMP payloads (`None` when unknown).
pub fn rdb_version(version: (u32, u32, u32)) -> Option<u32> {
    Some(match (version.0, version.1) {
        (0, _) | (1, _) | (2, 0..=5) => return None,
        (2, _) => 6,
        (3, _) => 7,
        (4, _) => 8,
        (5, _) | (6, _) => 9,
        (7, 0 | 1) => 10,
        (7, 2 | 3) => 11,
        _ => 12,
    })
}

/// How a copy moves its keys, decided up front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// No key goes by DUMP/RESTORE: every key goes type-aware, but for short strings when `strings` is
    /// set (then the fetch and write stages run for them alone; else they are not started).
    pub all_typed: bool,
    /// Typed threads are started (`--mode auto` or `typed`).
    pub typed_threads: bool,
    /// MEMORY USAGE works on the source (auto only).
    pub size_check: bool,
    /// Short strings go by value, in batches: GETRANGE on the source, SET on the target (auto, typed).
    pub strings: bool,
    /// The one log line saying which path the copy takes and why.
    pub why: String,
}

/// Decides, before anything is copied, which path the keys take: from INFO (the RDB versions the
/// two servers read and write) and, in `--mode auto`, from probes that run nothing: DUMP and MEMORY
/// USAGE on the source and RESTORE on the target, each queued inside MULTI and then DISCARDed, which
/// tells whether the server knows the command and the user may run it (see [`refused`]).
pub fn plan(
    cfg: &CopyConfig,
    conns: Option<(&mut Conn, &mut Conn)>,
    source: &ServerInfo,
    target: &ServerInfo,
) -> Plan {
    let probe = probe_name();
    let (src, dst) = match (cfg.mode, conns) {
        (Mode::Dump, _) | (_, None) => {
            return Plan {
                all_typed: false,
                typed_threads: false,
                size_check: false,
                strings: false,
                why: "DUMP/RESTORE (--mode dump: keys DUMP/RESTORE cannot move are failed rows)".into(),
            }
        }
        (_, Some(conns)) => conns,
    };
    let set = redis::cmd("SET").arg(&probe[..]).arg(&b""[..]).clone();
    let strings = refused(src, &probe, redis::cmd("GETRANGE").arg(&probe[..]).arg(0).arg(0)).is_none()
        && refused(dst, &probe, &set).is_none();
    let by_value = if strings { "strings up to 16 KiB by value (GETRANGE, SET), " } else { "" };
    let all = |why: String| Plan {
        all_typed: true,
        typed_threads: true,
        size_check: false,
        strings,
        why: format!("{by_value}{why}"),
    };
    if cfg.mode == Mode::Typed {
        return all("type-aware reads and writes for every other key (--mode typed)".into());
    }
    let (rs, rt) = (rdb_version(source.version), rdb_version(target.version));
    if let (Some(rs), Some(rt)) = (rs, rt) {
        if rs > rt {
            return all(format!(
                "type-aware for every other key: the source writes RDB version {rs} DUMP payloads, \
                 which the target (RDB version {rt}) cannot RESTORE"
            ));
        }
    }
    if let Some(why) = refused(src, &probe, redis::cmd("DUMP").arg(&probe[..])) {
        return all(format!("type-aware for every other key: the source refuses DUMP ({why})"));
    }
    let restore = redis::cmd("RESTORE").arg(&probe[..]).arg(0).arg(&b"not a payload"[..]).clone();
    if let Some(why) = refused(dst, &probe, &restore) {
        return all(format!("type-aware for every other key: the target refuses RESTORE ({why})"));
    }
    let size_check = cfg.big_key_bytes.is_some()
        && refused(src, &probe, redis::cmd("MEMORY").arg("USAGE").arg(&probe[..])).is_none();
    let big = match cfg.big_key_bytes {
        None => String::new(),
        Some(n) if size_check => format!("keys above --big-key-bytes {n} (MEMORY USAGE) and "),
        Some(n) => {
            format!("keys above --big-key-bytes {n} (by DUMP length: the source refuses MEMORY USAGE) and ")
        }
    };
    Plan {
        all_typed: false,
        typed_threads: true,
        size_check,
        strings,
        why: format!(
            "{by_value}DUMP/RESTORE; type-aware, key by key, for {big}keys a server refuses to DUMP or \
             RESTORE"
        ),
    }
}

/// Whether `conn`'s server refuses `cmd` for good: unknown (renamed, disabled) or denied to the user
/// (NOPERM for the command, not for the key it names); `Some(why)` then. The command is queued inside
/// MULTI and DISCARDed, so these checks are made and nothing runs: not even a DUMP is counted in the
/// server's commandstats, and a dry run writes nothing. A connection failure says nothing (`None`):
/// the keys then find out one by one.
fn refused(conn: &mut Conn, probe: &[u8], cmd: &Cmd) -> Option<String> {
    let (mut replies, broken) = conn.round(
        &[0],
        |_| Some(probe),
        |pipe, _| {
            pipe.cmd("MULTI").add_command(cmd.clone()).cmd("DISCARD");
        },
    );
    if broken.is_some() {
        return None;
    }
    match replies.unit(0).and_then(|unit| unit.get(1)) {
        Some(Value::ServerError(e)) if command_denied(e) => Some(conn::classify_reply(e).1),
        _ => None,
    }
}

fn probe_name() -> Vec<u8> {
    let mut name = b"redis-ferry:probe:".to_vec();
    name.extend_from_slice(format!("{:016x}", random()).as_bytes());
    name
}

// ---------------------------------------------------------------------------------------------------
// Temporary key names
// ---------------------------------------------------------------------------------------------------

/// A fresh temporary name in the same hash slot as `key`: `redis-ferry:tmp:{TAG}:<random>`, where TAG
/// is the key's own hash tag, else the key itself (when it is short, not empty, and has no `}`, so
/// that the braces around it make it the tag), else a number whose slot is the key's.
pub fn temp_name(key: &[u8]) -> Vec<u8> {
    let mut name = TEMP_PREFIX.to_vec();
    name.push(b'{');
    match hash_tag(key) {
        Some(tag) => name.extend_from_slice(tag),
        None if !key.is_empty() && key.len() <= MAX_NAME_IN_TEMP && !key.contains(&b'}') => {
            name.extend_from_slice(key)
        }
        None => name.extend_from_slice(&key_in_slot(slot(key))),
    }
    name.extend_from_slice(format!("}}:{:016x}", random()).as_bytes());
    name
}

/// A number that differs between threads, calls and processes (xorshift seeded by the clock, the
/// process id and a counter).
fn random() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for _ in 0..3 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

// ---------------------------------------------------------------------------------------------------
// The typed threads
// ---------------------------------------------------------------------------------------------------

/// What became of one key.
#[derive(Debug, PartialEq)]
enum End {
    /// Renamed into place.
    Copied,
    /// Under `skip`, the key appeared on the target before the rename.
    Skipped,
    /// Gone from the source, or its deadline passed, before the rename.
    Expired,
    /// Failed, not reported yet: (stage, code, message).
    Failed(Stage, String, String),
    /// Failed and already reported (by [`exchange`]).
    Reported,
    /// Dropped unfinished because the run is discarding its work (abort, limit).
    Dropped,
}

/// Why an attempt at a key did not come to an end of its own.
#[derive(Debug)]
enum Fault {
    /// The key ends here (the temporary key, if any, is deleted).
    End(End),
    /// The temporary key's state is unknown (the connection broke mid-write), it vanished, or the
    /// source key changed under the copy: start the key over. What to report if it keeps happening:
    /// (stage, code, message).
    Again(Stage, String, String),
}

impl From<End> for Fault {
    fn from(end: End) -> Fault {
        Fault::End(end)
    }
}

/// The key's deadline as last read: `None` without TTL, else absolute Unix milliseconds.
type Deadline = Option<i64>;

/// Runs one typed thread until its input is drained.
pub fn run(
    src: Conn,
    dst: Conn,
    rx: Receiver<Batch<Key>>,
    shared: &WriteShared,
    servers: Servers,
    rep: Reporter,
) {
    let mut copier = Copier { src, dst, shared, servers, rep: &rep, units: 0, orphans: Vec::new() };
    for Batch { id, items } in rx {
        let mut keys = items.into_iter();
        while let Some(key) = keys.next() {
            if rep.stop.discard() {
                rep.unreached(1 + keys.len());
                break;
            }
            let reserved = match shared.budget {
                Some(budget) => budget.reserve(1),
                None => 1,
            };
            if reserved == 0 {
                rep.stop.request(StopReason::Limit);
                rep.unreached(1 + keys.len());
                break;
            }
            let end = copier.copy(&key);
            if let Some(budget) = shared.budget {
                budget.settle(reserved, u64::from(end == End::Copied));
            }
            let counters = rep.counters;
            match end {
                End::Copied => Counters::add(&counters.copied, 1),
                End::Skipped => Counters::add(&counters.skipped, 1),
                End::Expired => Counters::add(&counters.expired, 1),
                End::Failed(stage, code, message) => rep.fail(key, stage, code, message),
                End::Reported => {}
                End::Dropped => {
                    rep.unreached(1);
                    continue;
                }
            }
            shared.ledger.done(id, 1);
        }
    }
    copier.drop_orphans();
}

/// One typed thread's connections and state.
struct Copier<'a> {
    /// Its own source connection.
    src: Conn,
    /// Its own target connection.
    dst: Conn,
    /// Policy, throttle, budget, ledger.
    shared: &'a WriteShared<'a>,
    /// Facts about the servers.
    servers: Servers,
    /// Accounting.
    rep: &'a Reporter<'a>,
    /// Keys and pages since the last `--sleep-after-batch` pause.
    units: usize,
    /// Temporary keys of failed attempts that could not be deleted yet (the target was unreachable);
    /// deleted as soon as it answers again.
    orphans: Vec<Vec<u8>>,
}

/// A key being built under its temporary name.
struct Build<'k> {
    /// The key.
    key: &'k Key,
    /// Its temporary name.
    tmp: Vec<u8>,
    /// Pages written so far (0: the temporary key does not exist yet).
    pages: usize,
    /// A write was sent: the temporary key may exist (even when no answer came back).
    sent: bool,
    /// The deadline as last read.
    deadline: Deadline,
}

impl Build<'_> {
    /// A write is about to be sent: from now on the temporary key may exist (and is in [`IN_FLIGHT`]).
    fn mark_sent(&mut self) {
        if !self.sent {
            IN_FLIGHT.add(&self.tmp);
            self.sent = true;
        }
    }
}

/// The temporary keys that may exist on the target right now (being built, or left by a failed attempt
/// and not deleted yet), and where the target is: what the fast exit of a second Ctrl-C deletes
/// ([`drop_in_flight`]) before the process quits.
pub struct InFlight {
    /// The target, with whether it is a cluster; set when the typed threads start.
    target: OnceLock<(Endpoint, bool)>,
    /// The temporary names.
    names: Mutex<Vec<Vec<u8>>>,
    /// Held (shared) by every typed write while it is sent and answered; true once the fast exit has
    /// closed it: from then on no typed write is sent, so none can make a temporary key after the
    /// fast exit deleted them.
    gate: RwLock<bool>,
}

/// The one registry of the process.
pub static IN_FLIGHT: InFlight =
    InFlight { target: OnceLock::new(), names: Mutex::new(Vec::new()), gate: RwLock::new(false) };

impl InFlight {
    /// Says where the temporary keys are made.
    pub fn aim(&self, target: &Endpoint, cluster: bool) {
        let _ = self.target.set((target.clone(), cluster));
    }

    fn names(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, tmp: &[u8]) {
        self.names().push(tmp.to_vec());
    }

    /// Runs a typed write unless the fast exit has begun (`None` then).
    fn write<T>(&self, send: impl FnOnce() -> T) -> Option<T> {
        let closed = self.gate.read().unwrap_or_else(|e| e.into_inner());
        (!*closed).then(send)
    }

    fn remove(&self, tmp: &[u8]) {
        let mut names = self.names();
        if let Some(i) = names.iter().position(|n| n == tmp) {
            names.swap_remove(i);
        }
    }
}

/// Deletes the temporary keys in [`IN_FLIGHT`] on a connection of its own, giving up after `within`
/// (the caller then quits whatever happened). Returns how many were deleted, and how many are left
/// (they expire within [`SAFETY_TTL_MS`]). A page whose write was already on its way when this runs
/// may still make its temporary key after the DEL; its safety TTL covers that too.
pub fn drop_in_flight(within: Duration) -> (usize, usize) {
    // No typed write starts from now on; the ones under way are answered first.
    *IN_FLIGHT.gate.write().unwrap_or_else(|e| e.into_inner()) = true;
    let names = IN_FLIGHT.names().clone();
    let Some((target, cluster)) = IN_FLIGHT.target.get().cloned() else { return (0, names.len()) };
    if names.is_empty() {
        return (0, 0);
    }
    let (tx, rx) = crossbeam_channel::bounded(1);
    let total = names.len();
    std::thread::spawn(move || {
        let timeouts = Timeouts { connect: within / 2, io: within / 2 };
        let conn =
            if cluster { Conn::open_cluster(&target, timeouts) } else { Conn::open(&target, timeouts) };
        let deleted = conn.ok().map_or(0, |mut conn| {
            let units: Vec<usize> = (0..names.len()).collect();
            let (mut replies, _) = conn.round(
                &units,
                |i| Some(&names[i][..]),
                |pipe, i| {
                    pipe.cmd("DEL").arg(&names[i][..]);
                },
            );
            (0..names.len()).filter(|&i| replies.take::<1>(i).is_some()).count()
        });
        let _ = tx.send(deleted);
    });
    let deleted = rx.recv_timeout(within).unwrap_or(0);
    (deleted, total - deleted)
}

/// An adaptive page size: grows to [`MAX_PAGE`] elements while pages stay under [`PAGE_BYTES`],
/// shrinks when one is bigger.
struct Pager {
    /// Elements to ask for in the next page.
    count: usize,
}

impl Pager {
    fn new() -> Pager {
        Pager { count: FIRST_PAGE }
    }

    fn saw(&mut self, elements: usize, bytes: usize) {
        if bytes > PAGE_BYTES && elements > 0 {
            self.count = (PAGE_BYTES * elements / bytes).clamp(1, MAX_PAGE);
        } else if bytes < PAGE_BYTES / 2 {
            self.count = (self.count * 2).min(MAX_PAGE);
        }
    }
}

impl<'a> Copier<'a> {
    /// Copies one key, starting it over when a target write was lost; the temporary key never
    /// outlives the attempt that made it.
    fn copy(&mut self, key: &Key) -> End {
        let retry = self.dst.retry();
        let mut attempt = 0;
        loop {
            let mut build =
                Build { key, tmp: temp_name(key.as_bytes()), pages: 0, sent: false, deadline: None };
            let (stage, code, why) = match self.attempt(&mut build) {
                Ok(end) | Err(Fault::End(end)) => {
                    // Copied or skipped: the rename (or the DEL after RENAMENX) took the temporary key.
                    if matches!(end, End::Copied | End::Skipped) {
                        IN_FLIGHT.remove(&build.tmp);
                    } else {
                        self.drop_temp(&build);
                    }
                    return end;
                }
                Err(Fault::Again(stage, code, why)) => {
                    self.drop_temp(&build);
                    (stage, code, why)
                }
            };
            attempt += 1;
            if attempt > retry.attempts || self.rep.stop.discard() {
                if self.dst.ensure().is_err() {
                    self.rep.stop.fatal(format!(
                        "typed copy lost the connection to target {}: {why}",
                        self.dst.endpoint()
                    ));
                }
                return End::Failed(stage, code, why);
            }
            let pause = retry.pause(attempt);
            log::warn!("{key}: type-aware copy starts over in {pause:?} (attempt {attempt}): {why}");
            self.rep.stop.sleep(pause, Stop::discard);
            self.drop_orphans();
        }
    }

    /// Deletes the temporary key of a failed attempt, and those of earlier attempts that could not be
    /// deleted then; what cannot be deleted now is tried again later (and its safety TTL covers a target
    /// that never comes back).
    fn drop_temp(&mut self, build: &Build) {
        if build.sent {
            self.orphans.push(build.tmp.clone());
        }
        self.drop_orphans();
    }

    /// One try at deleting the orphaned temporary keys.
    fn drop_orphans(&mut self) {
        if self.orphans.is_empty() || self.dst.ensure().is_err() {
            return;
        }
        // One DEL each: on a cluster they live in different slots.
        let dst = &mut self.dst;
        self.orphans.retain(|tmp| {
            let kept = dst.call::<i64>(redis::cmd("DEL").arg(&tmp[..]), || true).is_err();
            if !kept {
                IN_FLIGHT.remove(tmp);
            }
            kept
        });
    }

    /// One attempt at a key.
    fn attempt(&mut self, b: &mut Build) -> Result<End, Fault> {
        let k = b.key.as_bytes().to_vec();
        let ttl_cmd = self.ttl_cmd();
        let sent = self.servers.deadlines.sent();
        let [ty, ttl] = self.read::<2>(b.key, |p| {
            p.cmd("TYPE").arg(&k[..]).cmd(ttl_cmd).arg(&k[..]);
        })?;
        let ty = match ty {
            Value::SimpleString(s) => s,
            Value::BulkString(s) => String::from_utf8_lossy(&s).into_owned(),
            Value::ServerError(e) => return Err(failed(Stage::Fetch, &e).into()),
            other => return Err(protocol(format!("unexpected TYPE reply: {}", kind(&other))).into()),
        };
        b.deadline = self.deadline(ttl, sent)?;
        if ty == "none" {
            return Ok(End::Expired);
        }
        if self.shared.dry_run {
            // The source still had it.
            return Ok(End::Copied);
        }
        match ty.as_str() {
            "string" => self.string(b),
            "list" => self.list(b),
            "set" => self.scanned(b, "SSCAN", "SADD", 1),
            "zset" => self.scanned(b, "ZSCAN", "ZADD", 2),
            "hash" => self.scanned(b, "HSCAN", "HSET", 2),
            "stream" => self.stream(b),
            other => Ok(End::Failed(
                Stage::Fetch,
                "WRONGTYPE".into(),
                format!("type {other} has no type-aware copy (only string, list, set, zset, hash, stream)"),
            )),
        }
    }

    /// PEXPIRETIME where the source has it (7.0+), else PTTL.
    fn ttl_cmd(&self) -> &'static str {
        self.servers.deadlines.command()
    }

    /// Sends one pipeline of `K` commands for this key to the source (retried through
    /// [`exchange`]); a key it reports as failed ends here.
    fn read<const K: usize>(
        &mut self,
        key: &Key,
        build: impl Fn(&mut Pipeline),
    ) -> Result<[Value; K], Fault> {
        let mut answers =
            exchange::<K>(&mut self.src, 1, |_| key, |pipe, _| build(pipe), Stage::Fetch, self.rep);
        answers.pop().flatten().ok_or(Fault::End(End::Reported))
    }

    /// Reads a page, with the key's deadline in the same pipeline (it updates `b.deadline`; a key found
    /// gone ends as expired).
    fn page(&mut self, b: &mut Build, cmd: &Cmd) -> Result<Value, Fault> {
        let ttl_cmd = self.ttl_cmd();
        let k = b.key.as_bytes().to_vec();
        let sent = self.servers.deadlines.sent();
        let [reply, ttl] = self.read::<2>(b.key, |p| {
            p.add_command(cmd.clone()).cmd(ttl_cmd).arg(&k[..]);
        })?;
        b.deadline = self.deadline(ttl, sent)?;
        match reply {
            Value::ServerError(e) => Err(failed(Stage::Fetch, &e).into()),
            reply => Ok(reply),
        }
    }

    /// The deadline from a PEXPIRETIME / PTTL reply sent at `sent`; a key gone is expired.
    fn deadline(&self, ttl: Value, sent: i64) -> Result<Deadline, Fault> {
        match ttl {
            Value::Int(-2) => Err(End::Expired.into()),
            Value::Int(t) => Ok(self.servers.deadlines.deadline(t, sent)),
            Value::ServerError(e) => Err(failed(Stage::Fetch, &e).into()),
            other => Err(protocol(format!("unexpected {} reply: {}", self.ttl_cmd(), kind(&other))).into()),
        }
    }

    /// Strings: GETRANGE chunks; the first is SET (which also makes an empty string), the rest
    /// SETRANGE at their offset (idempotent). A string longer than one chunk is given its full length
    /// with the first chunk (one allocation on the target, zero-filled), so that the later chunks are
    /// written in place: grown chunk by chunk, Redis would reallocate and copy it again and again
    /// (measured: 135 ms for one SETRANGE near 100 MB, against 64 ms for the one zero-fill). If the
    /// source string then turns out shorter, the copy starts over.
    fn string(&mut self, b: &mut Build) -> Result<End, Fault> {
        let mut offset = 0usize;
        let mut presized = 0usize;
        loop {
            let k = b.key.as_bytes();
            let end = offset + STRING_CHUNK - 1;
            let chunk = match self.page(b, redis::cmd("GETRANGE").arg(k).arg(offset).arg(end))? {
                Value::BulkString(bytes) => bytes,
                Value::Nil => Vec::new(),
                other => return Err(protocol(format!("unexpected GETRANGE reply: {}", kind(&other))).into()),
            };
            let last = chunk.len() < STRING_CHUNK;
            let mut write = if offset == 0 { redis::cmd("SET") } else { redis::cmd("SETRANGE") };
            write.arg(&b.tmp[..]);
            if offset > 0 {
                write.arg(offset);
            }
            write.arg(&chunk[..]);
            let mut writes = vec![write];
            if offset == 0 && !last {
                let k = b.key.as_bytes().to_vec();
                let [len] = self.read::<1>(b.key, |p| {
                    p.cmd("STRLEN").arg(&k[..]);
                })?;
                if let Value::Int(len) = len {
                    let len = len as usize;
                    if len > chunk.len() {
                        writes.push(
                            redis::cmd("SETRANGE").arg(&b.tmp[..]).arg(len - 1).arg(&b"\0"[..]).clone(),
                        );
                        presized = len;
                    }
                }
            }
            offset += chunk.len();
            if last {
                if offset < presized {
                    return Err(Fault::Again(
                        Stage::Fetch,
                        "PROTOCOL".into(),
                        format!("the string shrank from {presized} to {offset} bytes on the source during the copy"),
                    ));
                }
                return self.finish(b, writes.pop());
            }
            self.put(b, writes)?;
        }
    }

    /// Lists: LRANGE pages, RPUSH (whose reply, the new length, is checked).
    fn list(&mut self, b: &mut Build) -> Result<End, Fault> {
        let mut pager = Pager::new();
        let mut start = 0usize;
        loop {
            let k = b.key.as_bytes();
            let want = pager.count;
            let reply = self.page(b, redis::cmd("LRANGE").arg(k).arg(start).arg(start + want - 1))?;
            let items = bulk_items(reply, "LRANGE")?;
            pager.saw(items.len(), items.iter().map(Vec::len).sum());
            let last = items.len() < want;
            let write = (!items.is_empty()).then(|| {
                let mut c = redis::cmd("RPUSH");
                c.arg(&b.tmp[..]);
                for item in &items {
                    c.arg(&item[..]);
                }
                c
            });
            start += items.len();
            if last {
                return self.finish(b, write);
            }
            if let Some(write) = write {
                self.put(b, vec![write])?;
            }
        }
    }

    /// Sets, sorted sets and hashes: SSCAN / ZSCAN / HSCAN pages (`width` 1 or 2 items per element),
    /// SADD / ZADD / HSET (idempotent, so SCAN's repeats do no harm). ZSCAN's scores are passed on as
    /// the bytes the server wrote, so they round-trip exactly.
    fn scanned(&mut self, b: &mut Build, scan: &str, add: &str, width: usize) -> Result<End, Fault> {
        let mut pager = Pager::new();
        let mut cursor: Vec<u8> = b"0".to_vec();
        loop {
            let k = b.key.as_bytes();
            let reply =
                self.page(b, redis::cmd(scan).arg(k).arg(&cursor[..]).arg("COUNT").arg(pager.count))?;
            let (next, items) = match reply {
                Value::Array(mut parts) if parts.len() == 2 => {
                    let items = bulk_items(parts.pop().unwrap_or_default(), scan)?;
                    let next = match parts.pop() {
                        Some(Value::BulkString(c)) => c,
                        Some(Value::SimpleString(c)) => c.into_bytes(),
                        _ => return Err(protocol(format!("unexpected {scan} cursor")).into()),
                    };
                    (next, items)
                }
                other => return Err(protocol(format!("unexpected {scan} reply: {}", kind(&other))).into()),
            };
            if items.len() % width != 0 {
                return Err(protocol(format!("{scan} returned an odd number of items")).into());
            }
            pager.saw(items.len() / width, items.iter().map(Vec::len).sum());
            let last = next == b"0";
            let write = (!items.is_empty()).then(|| {
                let mut c = redis::cmd(add);
                c.arg(&b.tmp[..]);
                if width == 2 && add == "ZADD" {
                    // ZSCAN gives member, score; ZADD takes score, member.
                    for pair in items.chunks(2) {
                        c.arg(&pair[1][..]).arg(&pair[0][..]);
                    }
                } else {
                    for item in &items {
                        c.arg(&item[..]);
                    }
                }
                c
            });
            cursor = next;
            if last {
                return self.finish(b, write);
            }
            if let Some(write) = write {
                self.put(b, vec![write])?;
            }
        }
    }

    /// Streams: XRANGE pages written with XADD at the same IDs; then the stream's last ID and counters
    /// (XSETID), its groups (XGROUP CREATE), consumers (XGROUP CREATECONSUMER) and pending entries
    /// (XCLAIM ... FORCE). An empty stream is made with XGROUP CREATE ... MKSTREAM.
    fn stream(&mut self, b: &mut Build) -> Result<End, Fault> {
        let mut pager = Pager::new();
        let mut start: Vec<u8> = b"-".to_vec();
        loop {
            let k = b.key.as_bytes();
            let want = pager.count;
            let reply =
                self.page(b, redis::cmd("XRANGE").arg(k).arg(&start[..]).arg("+").arg("COUNT").arg(want))?;
            let entries = match reply {
                Value::Array(entries) => entries,
                other => return Err(protocol(format!("unexpected XRANGE reply: {}", kind(&other))).into()),
            };
            let n = entries.len();
            let mut bytes = 0;
            let mut writes = Vec::with_capacity(n);
            let mut last_id = None;
            for entry in entries {
                let (id, fields) = match entry {
                    Value::Array(mut pair) if pair.len() == 2 => {
                        let fields = bulk_items(pair.pop().unwrap_or_default(), "XRANGE")?;
                        let id = bytes_of(pair.pop().unwrap_or_default())
                            .ok_or_else(|| protocol("XRANGE entry without an ID".into()))?;
                        (id, fields)
                    }
                    _ => return Err(protocol("unexpected XRANGE entry".into()).into()),
                };
                bytes += fields.iter().map(Vec::len).sum::<usize>();
                let mut c = redis::cmd("XADD");
                c.arg(&b.tmp[..]).arg(&id[..]);
                for f in &fields {
                    c.arg(&f[..]);
                }
                writes.push(c);
                last_id = Some(id);
            }
            pager.saw(n, bytes);
            if !writes.is_empty() {
                self.put(b, writes)?;
            }
            match last_id.as_deref().and_then(next_stream_id) {
                Some(next) if n == want => start = next,
                _ => break,
            }
        }
        self.stream_meta(b)?;
        self.finish(b, None)
    }

    /// The stream's counters and groups, then each group's consumers and pending entries.
    fn stream_meta(&mut self, b: &mut Build) -> Result<(), Fault> {
        let k = b.key.as_bytes().to_vec();
        let ttl_cmd = self.ttl_cmd();
        let sent = self.servers.deadlines.sent();
        let [info, groups, ttl] = self.read::<3>(b.key, |p| {
            p.cmd("XINFO")
                .arg("STREAM")
                .arg(&k[..])
                .cmd("XINFO")
                .arg("GROUPS")
                .arg(&k[..])
                .cmd(ttl_cmd)
                .arg(&k[..]);
        })?;
        b.deadline = self.deadline(ttl, sent)?;
        let info = fields(info, "XINFO STREAM")?;
        let groups = match groups {
            Value::Array(groups) => {
                groups.into_iter().map(|g| fields(g, "XINFO GROUPS")).collect::<Result<Vec<_>, _>>()?
            }
            Value::ServerError(e) => return Err(failed(Stage::Fetch, &e).into()),
            other => return Err(protocol(format!("unexpected XINFO GROUPS reply: {}", kind(&other))).into()),
        };
        let v7 = self.servers.target >= (7, 0, 0);
        let tmp = &b.tmp[..];
        let mut meta = Vec::new();
        if b.pages == 0 {
            // No entries: make the (empty) stream by creating a group and removing it again.
            let placeholder = b"redis-ferry:placeholder";
            meta.push(
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(tmp)
                    .arg(&placeholder[..])
                    .arg("0")
                    .arg("MKSTREAM")
                    .clone(),
            );
            meta.push(redis::cmd("XGROUP").arg("DESTROY").arg(tmp).arg(&placeholder[..]).clone());
        }
        let last_id = get(&info, "last-generated-id").and_then(|v| bytes_of(v.clone()));
        if let Some(last_id) = last_id {
            let mut setid = redis::cmd("XSETID");
            setid.arg(tmp).arg(&last_id[..]);
            if v7 {
                if let Some(added) = get(&info, "entries-added").and_then(int_of) {
                    setid.arg("ENTRIESADDED").arg(added);
                }
                if let Some(max) = get(&info, "max-deleted-entry-id").and_then(|v| bytes_of(v.clone())) {
                    setid.arg("MAXDELETEDID").arg(&max[..]);
                }
            }
            meta.push(setid);
        }
        let mut names = Vec::new();
        for g in &groups {
            let name = get(g, "name")
                .and_then(|v| bytes_of(v.clone()))
                .ok_or_else(|| protocol("group without a name".into()))?;
            let last = get(g, "last-delivered-id")
                .and_then(|v| bytes_of(v.clone()))
                .ok_or_else(|| protocol("group without last-delivered-id".into()))?;
            let mut create = redis::cmd("XGROUP");
            create.arg("CREATE").arg(tmp).arg(&name[..]).arg(&last[..]);
            if v7 {
                if let Some(read) = get(g, "entries-read").and_then(int_of) {
                    create.arg("ENTRIESREAD").arg(read);
                }
            }
            meta.push(create);
            let pending = get(g, "pending").and_then(int_of).unwrap_or(0);
            let consumers = get(g, "consumers").and_then(int_of).unwrap_or(0);
            names.push((name, pending, consumers));
        }
        self.put(b, meta)?;
        for (group, pending, consumers) in names {
            if consumers > 0 {
                self.consumers(b, &group)?;
            }
            if pending > 0 {
                self.pending(b, &group)?;
            }
        }
        Ok(())
    }

    /// Creates a group's consumers (Redis 6.2+ targets; older ones get them through XCLAIM only).
    fn consumers(&mut self, b: &mut Build, group: &[u8]) -> Result<(), Fault> {
        if self.servers.target < (6, 2, 0) {
            return Ok(());
        }
        let k = b.key.as_bytes().to_vec();
        let reply = self.page(b, redis::cmd("XINFO").arg("CONSUMERS").arg(&k[..]).arg(group))?;
        let consumers = match reply {
            Value::Array(list) => list,
            other => {
                return Err(protocol(format!("unexpected XINFO CONSUMERS reply: {}", kind(&other))).into())
            }
        };
        let mut writes = Vec::new();
        for c in consumers {
            let c = fields(c, "XINFO CONSUMERS")?;
            if let Some(name) = get(&c, "name").and_then(|v| bytes_of(v.clone())) {
                writes.push(
                    redis::cmd("XGROUP")
                        .arg("CREATECONSUMER")
                        .arg(&b.tmp[..])
                        .arg(group)
                        .arg(&name[..])
                        .clone(),
                );
            }
        }
        for chunk in writes.chunks(MAX_PAGE) {
            self.put(b, chunk.to_vec())?;
        }
        Ok(())
    }

    /// Copies a group's pending entries: XPENDING pages, XCLAIM each to its consumer with its idle
    /// time and delivery count.
    fn pending(&mut self, b: &mut Build, group: &[u8]) -> Result<(), Fault> {
        let k = b.key.as_bytes().to_vec();
        let mut start = b"-".to_vec();
        loop {
            let want = MAX_PAGE;
            let reply = self
                .page(b, redis::cmd("XPENDING").arg(&k[..]).arg(group).arg(&start[..]).arg("+").arg(want))?;
            let rows = match reply {
                Value::Array(rows) => rows,
                other => return Err(protocol(format!("unexpected XPENDING reply: {}", kind(&other))).into()),
            };
            let n = rows.len();
            let mut writes = Vec::with_capacity(n);
            let mut last = None;
            for row in rows {
                let Value::Array(cols) = row else {
                    return Err(protocol("unexpected XPENDING row".into()).into());
                };
                let mut cols = cols.into_iter();
                let (Some(id), Some(consumer), Some(idle), Some(count)) = (
                    cols.next().and_then(bytes_of),
                    cols.next().and_then(bytes_of),
                    cols.next().as_ref().and_then(int_of),
                    cols.next().as_ref().and_then(int_of),
                ) else {
                    return Err(protocol("unexpected XPENDING row".into()).into());
                };
                let mut c = redis::cmd("XCLAIM");
                c.arg(&b.tmp[..]).arg(group).arg(&consumer[..]).arg(0).arg(&id[..]);
                c.arg("IDLE").arg(idle).arg("RETRYCOUNT").arg(count).arg("FORCE").arg("JUSTID");
                writes.push(c);
                last = Some(id);
            }
            if !writes.is_empty() {
                self.put(b, writes)?;
            }
            match last.as_deref().and_then(next_stream_id) {
                Some(next) if n == want => start = next,
                _ => return Ok(()),
            }
        }
    }

    /// Writes one page that is not the last: in one transaction, the check that the temporary key
    /// still exists (from the second page on), the writes, and the safety TTL.
    fn put(&mut self, b: &mut Build, writes: Vec<Cmd>) -> Result<(), Fault> {
        self.pace(b)?;
        let check = b.pages > 0;
        let tx = page_tx(&b.tmp, check, &writes);
        b.mark_sent();
        let mut results = self.transact(&b.tmp, &[tx])?;
        let results = results.pop().unwrap_or_default();
        check_page(&results, check, writes.len())?;
        b.pages += 1;
        Ok(())
    }

    /// Takes a token per page after the first (so a big key is paced like as many keys as it has
    /// pages) and pauses after every `--batch` keys and pages.
    fn pace(&mut self, b: &Build) -> Result<(), Fault> {
        if b.pages > 0 && !self.shared.throttle.admit(1, self.rep.stop) && self.rep.stop.discard() {
            return Err(End::Dropped.into());
        }
        if self.rep.stop.discard() {
            return Err(End::Dropped.into());
        }
        self.units += 1;
        if self.units >= self.servers.batch {
            self.units = 0;
            self.shared.throttle.after_batch(self.rep.stop);
        }
        Ok(())
    }

    /// Writes the last page (if any), sets the deadline and renames, all of which a reader sees at
    /// once. A one-page key goes in a single round trip: its page and the rename are two transactions
    /// sent together (if the first is refused, the temporary key does not exist and the rename does
    /// nothing).
    fn finish(&mut self, b: &mut Build, last: Option<Cmd>) -> Result<End, Fault> {
        let together = b.pages == 0 && last.is_some();
        if !together {
            if let Some(write) = last.clone() {
                self.put(b, vec![write])?;
            }
        } else {
            self.pace(b)?;
        }
        let final_tx = self.final_tx(b);
        b.mark_sent();
        let results = if together {
            let page = page_tx(&b.tmp, false, &[last.expect("together has a page")]);
            let mut results = self.transact(&b.tmp, &[page, final_tx])?;
            let last = results.pop().unwrap_or_default();
            check_page(&results.pop().unwrap_or_default(), false, 1)?;
            b.pages += 1;
            last
        } else {
            self.transact(&b.tmp, &[final_tx])?.pop().unwrap_or_default()
        };
        // [PEXPIREAT | PERSIST, EXISTS, RENAME | RENAMENX, (DEL)]: a PEXPIREAT that found the key
        // (1) and left none (EXISTS 0) met a deadline the target's clock says has passed.
        let vanished = || {
            Err(Fault::Again(
                Stage::Write,
                "ERR".into(),
                "no such key: the temporary key vanished from the target before the rename (evicted?)".into(),
            ))
        };
        match (results.first(), results.get(1), results.get(2)) {
            (Some(Value::Int(1)), Some(Value::Int(0)), _) if b.deadline.is_some() => Ok(End::Expired),
            (_, Some(Value::Int(0)), _) => vanished(),
            (_, _, Some(Value::Okay) | Some(Value::SimpleString(_)) | Some(Value::Int(1))) => Ok(End::Copied),
            (_, _, Some(Value::Int(0))) => Ok(End::Skipped),
            (_, _, Some(Value::ServerError(e))) if e.details().unwrap_or("").contains("no such key") => {
                vanished()
            }
            (_, _, Some(Value::ServerError(e))) => Ok(failed(Stage::Write, e)),
            (_, _, other) => Ok(protocol(format!("unexpected RENAME reply: {}", other.map_or("none", kind)))),
        }
    }

    /// The last transaction: deadline on the temporary key (the target's clock decides whether it has
    /// passed: then the key is gone at once), whether it is still there, then the rename.
    fn final_tx(&self, b: &Build) -> Pipeline {
        let mut tx = redis::pipe();
        tx.atomic();
        match b.deadline {
            Some(at) => tx.cmd("PEXPIREAT").arg(&b.tmp[..]).arg(at),
            None => tx.cmd("PERSIST").arg(&b.tmp[..]),
        };
        tx.cmd("EXISTS").arg(&b.tmp[..]);
        match self.shared.on_conflict {
            OnConflict::Replace => {
                tx.cmd("RENAME").arg(&b.tmp[..]).arg(b.key.as_bytes());
            }
            OnConflict::Skip => {
                tx.cmd("RENAMENX").arg(&b.tmp[..]).arg(b.key.as_bytes()).cmd("DEL").arg(&b.tmp[..]);
            }
        }
        tx
    }

    /// Sends transactions (MULTI/EXEC pipelines) on the temporary key `tmp` to the target in one round
    /// trip (to the node of its slot) and returns each
    /// one's results. A transaction the server refused (an error while queueing, or from EXEC) was
    /// not applied: if the error is transient it is sent again, with those after it, after a pause;
    /// otherwise the key fails. A broken connection means the temporary key's state is unknown.
    fn transact(&mut self, tmp: &[u8], txs: &[Pipeline]) -> Result<Vec<Vec<Value>>, Fault> {
        let retry = self.dst.retry();
        let mut done: Vec<Vec<Value>> = Vec::with_capacity(txs.len());
        let mut attempt = 0;
        loop {
            if let Err(e) = self.dst.ensure() {
                return Err(Fault::Again(Stage::Write, "IO".into(), e.to_string()));
            }
            let pending = &txs[done.len()..];
            // Every transaction of one key works on its temporary key, in the key's slot.
            let dst = &mut self.dst;
            let sent = IN_FLIGHT.write(|| {
                dst.round(
                    &[0],
                    |_| Some(tmp),
                    |pipe, _| {
                        for tx in pending {
                            pipe.cmd("MULTI");
                            for cmd in tx.cmd_iter() {
                                pipe.add_command(cmd.clone());
                            }
                            pipe.cmd("EXEC");
                        }
                    },
                )
            });
            // The process is quitting (a second Ctrl-C): nothing more is written.
            let Some((mut replies, broken)) = sent else { return Err(End::Dropped.into()) };
            let Some(unit) = replies.unit(0) else {
                let (code, message) =
                    broken.as_ref().map_or_else(|| ("IO".into(), "no reply".into()), conn::classify);
                return Err(Fault::Again(Stage::Write, code, message));
            };
            let mut replies = unit.iter_mut().map(std::mem::take);
            let mut refused = None;
            for tx in pending {
                let group: Vec<Value> = replies.by_ref().take(tx.len() + 2).collect();
                if refused.is_some() {
                    continue;
                }
                match outcome(group) {
                    Ok(results) => done.push(results),
                    Err(why) => refused = Some(why),
                }
            }
            let Some((code, message)) = refused else { return Ok(done) };
            attempt += 1;
            if !conn::is_transient(&code) || attempt > retry.attempts || self.rep.stop.discard() {
                return Err(End::Failed(Stage::Write, code, message).into());
            }
            let pause = retry.pause(attempt);
            log::debug!("target refused a typed write ({code}); again in {pause:?} (attempt {attempt})");
            self.rep.stop.sleep(pause, Stop::discard);
        }
    }
}

/// A page's transaction: `EXISTS tmp` (when `check`), the writes, the safety TTL.
fn page_tx(tmp: &[u8], check: bool, writes: &[Cmd]) -> Pipeline {
    let mut tx = redis::pipe();
    tx.atomic();
    if check {
        tx.cmd("EXISTS").arg(tmp);
    }
    for w in writes {
        tx.add_command(w.clone());
    }
    tx.cmd("PEXPIRE").arg(tmp).arg(SAFETY_TTL_MS);
    tx
}

/// Checks a page transaction's results: the temporary key was still there, no write failed.
fn check_page(results: &[Value], check: bool, writes: usize) -> Result<(), Fault> {
    let expected = usize::from(check) + writes + 1;
    if results.len() != expected {
        return Err(protocol(format!(
            "a page transaction returned {} results, not {expected}",
            results.len()
        ))
        .into());
    }
    if check && results[0] != Value::Int(1) {
        return Err(Fault::Again(
            Stage::Write,
            "ERR".into(),
            "the temporary key vanished from the target while it was built (evicted?)".into(),
        ));
    }
    if let Some(Value::ServerError(e)) = results.iter().find(|v| matches!(v, Value::ServerError(_))) {
        return Err(failed(Stage::Write, e).into());
    }
    Ok(())
}

/// The results of one MULTI/EXEC from its replies (`+OK`, `+QUEUED`..., the EXEC reply), or the
/// error that kept it from running (the first refused command's, which says why better than
/// EXECABORT).
fn outcome(group: Vec<Value>) -> Result<Vec<Value>, (String, String)> {
    let first_error = group.iter().find_map(|v| match v {
        Value::ServerError(e) => Some(conn::classify_reply(e)),
        _ => None,
    });
    match group.last() {
        Some(Value::Array(_)) => match group.into_iter().last() {
            Some(Value::Array(results)) => Ok(results),
            _ => unreachable!("checked just above"),
        },
        Some(Value::ServerError(e)) => Err(first_error.unwrap_or_else(|| conn::classify_reply(e))),
        Some(Value::Nil) => Err(("PROTOCOL".into(), "EXEC was aborted".into())),
        Some(other) => Err(first_error
            .unwrap_or_else(|| ("PROTOCOL".into(), format!("unexpected EXEC reply: {}", kind(other))))),
        None => Err(("PROTOCOL".into(), "no reply to EXEC".into())),
    }
}

/// An error reply as a failure of the key at `stage`.
fn failed(stage: Stage, err: &redis::ServerError) -> End {
    let (code, message) = conn::classify_reply(err);
    End::Failed(stage, code, message)
}

fn protocol(message: String) -> End {
    End::Failed(Stage::Fetch, "PROTOCOL".into(), message)
}

/// The items of a flat array of bulk strings (members, fields and values).
fn bulk_items(reply: Value, what: &str) -> Result<Vec<Vec<u8>>, Fault> {
    match reply {
        Value::Array(items) | Value::Set(items) => items
            .into_iter()
            .map(|v| bytes_of(v).ok_or_else(|| protocol(format!("{what} returned a non-string item")).into()))
            .collect(),
        Value::Nil => Ok(Vec::new()),
        Value::ServerError(e) => Err(failed(Stage::Fetch, &e).into()),
        other => Err(protocol(format!("unexpected {what} reply: {}", kind(&other))).into()),
    }
}

fn bytes_of(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

/// An XINFO reply (a flat `[name, value, ...]` array, or a map) as name/value pairs.
fn fields(v: Value, what: &str) -> Result<Vec<(String, Value)>, Fault> {
    let name = |k: Value| bytes_of(k).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    match v {
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((name(k), v));
            }
            Ok(out)
        }
        Value::Map(pairs) => Ok(pairs.into_iter().map(|(k, v)| (name(k), v)).collect()),
        Value::ServerError(e) => Err(failed(Stage::Fetch, &e).into()),
        other => Err(protocol(format!("unexpected {what} reply: {}", kind(&other))).into()),
    }
}

fn get<'v>(fields: &'v [(String, Value)], name: &str) -> Option<&'v Value> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v).filter(|v| !matches!(v, Value::Nil))
}

/// The stream ID right after `id` (`ms-seq`), for an exclusive range start that works before Redis
/// 6.2; `None` after the last possible ID.
fn next_stream_id(id: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(id).ok()?;
    let (ms, seq) = text.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    let (ms, seq) = match seq.checked_add(1) {
        Some(seq) => (ms, seq),
        None => (ms.checked_add(1)?, 0),
    };
    Some(format!("{ms}-{seq}").into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_stay_in_the_key_slot() {
        let keys: Vec<&[u8]> = vec![
            b"plain",
            b"{tag}rest",
            b"a{b",
            b"a}b",
            b"a{}b",
            b"}{x}",
            b"",
            b"\xff\x00{\n}",
            b"{",
            b"}",
            b"{}",
        ];
        for key in keys {
            let tmp = temp_name(key);
            assert!(tmp.starts_with(TEMP_PREFIX), "{tmp:?}");
            assert_eq!(slot(&tmp), slot(key), "key {:?} temp {:?}", Key(key.to_vec()), Key(tmp.clone()));
            assert_ne!(temp_name(key), tmp, "two temp names for one key must differ");
        }
        let long = vec![b'x'; 1000];
        let tmp = temp_name(&long);
        assert!(tmp.len() < 64 && slot(&tmp) == slot(&long));
        assert!(temp_name(b"session:42").starts_with(b"redis-ferry:tmp:{session:42}:"));
    }

    #[test]
    fn every_slot_has_a_small_tag() {
        for s in (0..16384).step_by(97) {
            assert_eq!(crate::cluster::slot(&key_in_slot(s)), s);
        }
    }

    #[test]
    fn stream_ids_step_to_the_next() {
        assert_eq!(next_stream_id(b"5-3").unwrap(), b"5-4");
        assert_eq!(next_stream_id(b"5-18446744073709551615").unwrap(), b"6-0");
        assert_eq!(next_stream_id(b"18446744073709551615-18446744073709551615"), None);
        assert_eq!(next_stream_id(b"junk"), None);
    }

    #[test]
    fn rdb_versions_by_redis_version() {
        assert_eq!(rdb_version((7, 0, 15)), Some(10));
        assert_eq!(rdb_version((7, 2, 4)), Some(11));
        assert_eq!(rdb_version((6, 2, 0)), Some(9));
        assert_eq!(rdb_version((8, 0, 0)), Some(12));
        assert_eq!(rdb_version((2, 4, 0)), None);
    }

    #[test]
    fn refusals_that_fall_back() {
        let make = |text: &str| -> redis::ServerError {
            match redis::parse_redis_value(format!("-{text}\r\n").as_bytes()).unwrap() {
                Value::ServerError(e) => e,
                other => panic!("{other:?}"),
            }
        };
        assert!(dump_refused(&make("NOPERM User u has no permissions to run the 'dump' command")));
        assert!(dump_refused(&make("ERR unknown command 'DUMP', with args beginning with: 'k'")));
        assert!(!dump_refused(&make("OOM command not allowed")));
        assert!(restore_refused(&make("ERR DUMP payload version or checksum are wrong")));
        assert!(restore_refused(&make("ERR Bad data format")));
        assert!(!restore_refused(&make("BUSYKEY Target key name already exists.")));
        assert!(command_denied(&make("NOPERM this user has no permissions to run the 'restore' command")));
        assert!(!command_denied(&make(
            "NOPERM this user has no permissions to access one of the keys used as arguments"
        )));
    }

    #[test]
    fn pages_adapt_to_element_size() {
        let mut p = Pager::new();
        p.saw(FIRST_PAGE, FIRST_PAGE * 10);
        assert_eq!(p.count, (FIRST_PAGE * 2).min(MAX_PAGE));
        for _ in 0..10 {
            p.saw(p.count, p.count * 10);
        }
        assert_eq!(p.count, MAX_PAGE);
        p.saw(MAX_PAGE, MAX_PAGE * 100_000);
        assert_eq!(p.count, (PAGE_BYTES / 100_000).max(1));
        p.saw(1, 10 << 20);
        assert_eq!(p.count, 1);
    }
}
