//! Routing in `--mode auto`: which path the keys take, decided up front ([`Plan`], from INFO and probes
//! that run nothing), and the keys sent to the type-aware copier one by one on the way ([`Fallback`],
//! [`Router`]): keys above `--big-key-bytes`, and keys a server refuses to DUMP or RESTORE.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_channel::Sender;
use redis::{Cmd, Value};

use crate::account::Reporter;
use crate::config::{CopyConfig, Mode};
use crate::flow::Batch;
use crate::key::Key;
use crate::redis::conn::Conn;
use crate::redis::reply::{self, command_denied};
use crate::redis::server::{rdb_version, ServerInfo};

/// Detour a key goes the type-aware way in `--mode auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detour {
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
    /// Small aggregates are read by value (turned off when a server refuses one of the commands).
    by_value: Option<ByValue>,
    /// `by_value` still holds.
    by_value_on: AtomicBool,
    /// One flag per [`Detour`]: the first key of that kind was logged.
    said: [AtomicBool; 3],
    /// Keys routed so far, per [`Detour`].
    routed: [AtomicU64; 3],
}

impl Fallback {
    /// A fallback for `--big-key-bytes` `big_key_bytes`; `size_check` says MEMORY USAGE may be used,
    /// `strings` that strings may be read by value and written with SET, `dump` that the other keys go
    /// by DUMP/RESTORE (else all of them go type-aware).
    pub fn new(
        big_key_bytes: u64,
        size_check: bool,
        strings: bool,
        dump: bool,
        by_value: Option<ByValue>,
    ) -> Fallback {
        Fallback {
            big_key_bytes,
            size_check: AtomicBool::new(size_check),
            strings: AtomicBool::new(strings),
            dump,
            by_value,
            by_value_on: AtomicBool::new(by_value.is_some()),
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

    /// Which aggregates are read by value, while that path holds.
    pub fn by_value(&self) -> Option<ByValue> {
        self.by_value.filter(|_| self.by_value_on.load(Ordering::Relaxed))
    }

    /// A server refused a command of the by-value path: from now on aggregates go as before.
    pub fn no_by_value(&self, why: &str) {
        if self.by_value_on.swap(false, Ordering::Relaxed) {
            log::warn!(
                "a server refuses a command of the by-value path ({why}): aggregates now go as before"
            );
        }
    }

    /// Records that `key` goes type-aware for `why`; the first key of each kind is logged.
    pub fn note(&self, why: Detour, key: &Key, detail: &str) {
        let i = why as usize;
        self.routed[i].fetch_add(1, Ordering::Relaxed);
        if self.said[i].swap(true, Ordering::Relaxed) {
            log::debug!("{key}: type-aware copy ({detail})");
            return;
        }
        let what = match why {
            Detour::Big => format!("keys above --big-key-bytes {}", self.big_key_bytes),
            Detour::DumpRefused => "keys the source will not DUMP".to_string(),
            Detour::RestoreRefused => "keys the target will not RESTORE".to_string(),
        };
        log::info!("{what} are copied type-aware, key by key (first: {key}: {detail})");
    }

    /// Keys routed for each reason: (big, DUMP refused, RESTORE refused).
    pub fn counts(&self) -> (u64, u64, u64) {
        let n = |i: usize| self.routed[i].load(Ordering::Relaxed);
        (n(0), n(1), n(2))
    }
}

/// The aggregates read by value, each with its type's read (HGETALL, LRANGE, SMEMBERS, ZRANGE … WITHSCORES,
/// XINFO STREAM … FULL) in the batch's pipeline. When every key goes type-aware they are written in the
/// batch's pipeline, one MULTI/EXEC per key, instead of one by one through the typed threads; in `--mode
/// auto` (lists, sets and hashes only) as RESTORE payloads made of their elements. Hashes only from a
/// source without hash field deadlines (before Redis 7.4: HGETALL does not give them); streams from Redis
/// 7.0 on (for their counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByValue {
    /// The target's version, for the writes.
    pub target: (u32, u32, u32),
    /// Hashes too.
    pub hashes: bool,
    /// Sorted sets too.
    pub zsets: bool,
    /// Streams too, with their groups (XINFO STREAM … FULL).
    pub streams: bool,
    /// `Some(version)`: a list, set or hash read by value goes on as a RESTORE payload stamped with this
    /// RDB version (`--mode auto`, [`crate::rdb::payload`]); `None`: as the writes that build it.
    pub restore: Option<u16>,
}

impl ByValue {
    /// The read of a key of type `ty` by value (`None`: that type does not go by value).
    pub fn read(&self, ty: &str) -> Option<&'static str> {
        match ty {
            "list" => Some("LRANGE"),
            "set" => Some("SMEMBERS"),
            "hash" if self.hashes => Some("HGETALL"),
            "zset" if self.zsets => Some("ZRANGE"),
            "stream" if self.streams => Some("XINFO"),
            _ => None,
        }
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

impl Plan {
    /// `--mode auto` with DUMP/RESTORE at hand: small lists, sets and hashes are read by value too, in
    /// batches ([`ByValue`]), which costs the source less than their DUMP, and RESTOREd from payloads
    /// made of their elements. It needs the strings' path and MEMORY USAGE (they must be small).
    pub fn aggregates(&self) -> bool {
        !self.all_typed && self.strings && self.size_check
    }
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
    // Small lists, sets and hashes are read by value where the source says how big they are: it pays less
    // for LRANGE, SMEMBERS and HGETALL than for their DUMP (see docs/modes.md); sorted sets and streams it
    // does not. They are RESTOREd all the same, from payloads made here.
    let small = match (strings && size_check, source.version < (7, 4, 0)) {
        (false, _) => "",
        (true, true) => "small lists, sets and hashes read by value (LRANGE, SMEMBERS, HGETALL), ",
        // HGETALL does not give hash field deadlines: hashes keep DUMP.
        (true, false) => "small lists and sets read by value (LRANGE, SMEMBERS), ",
    };
    Plan {
        all_typed: false,
        typed_threads: true,
        size_check,
        strings,
        why: format!(
            "{by_value}{small}DUMP/RESTORE; type-aware, key by key, for {big}keys a server refuses to DUMP or \
             RESTORE"
        ),
    }
}

/// Whether the target behind `conn` refuses RESTORE for good (unknown or denied to the user), probed
/// without running it.
pub fn refuses_restore(conn: &mut Conn) -> bool {
    let probe = probe_name();
    let restore = redis::cmd("RESTORE").arg(&probe[..]).arg(0).arg(&b"not a payload"[..]).clone();
    refused(conn, &probe, &restore).is_some()
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
            pipe.cmd("MULTI").add_command(cmd).cmd("DISCARD");
        },
    );
    if broken.is_some() {
        return None;
    }
    match replies.unit(0).and_then(|unit| unit.get(1)) {
        Some(Value::ServerError(e)) if command_denied(e) => Some(reply::classify_reply(e).1),
        _ => None,
    }
}

fn probe_name() -> Vec<u8> {
    let mut name = b"redis-ferry:probe:".to_vec();
    name.extend_from_slice(format!("{:016x}", random()).as_bytes());
    name
}

/// A number that differs between calls and processes, for a probe's key name.
fn random() -> u64 {
    super::typed::temp::random()
}
