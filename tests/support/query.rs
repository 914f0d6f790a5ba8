//! Asking a server: one command given as byte arguments ([`q`], [`run`]), a pipeline on any
//! connection ([`exec_pipe`]), the keys it holds, and what INFO commandstats says ran on it (how many
//! keys a copy read from a source or wrote to a target), and keeping a server busy ([`keep_busy`]).
//! Every helper takes any `redis::ConnectionLike`, so it works on a cluster connection too.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use redis::{ConnectionLike, Value};

use super::{escape_key, RedisServer};

/// Runs one command given as byte arguments and converts the reply.
#[track_caller]
pub fn q<T: redis::FromRedisValue>(con: &mut impl ConnectionLike, args: &[&[u8]]) -> T {
    let mut cmd = redis::cmd(std::str::from_utf8(args[0]).unwrap());
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(con).unwrap_or_else(|e| {
        panic!("{:?} failed: {e}", args.iter().map(|a| escape_key(a)).collect::<Vec<_>>())
    })
}

/// Runs one command given as byte arguments and ignores the reply.
#[track_caller]
pub fn run(con: &mut impl ConnectionLike, args: &[&[u8]]) {
    let _: Value = q(con, args);
}

/// The hash slot of `key`, as a cluster node computes it (CLUSTER KEYSLOT).
pub fn key_slot(con: &mut impl ConnectionLike, key: &[u8]) -> u16 {
    q(con, &[b"CLUSTER", b"KEYSLOT", key])
}

pub fn dbsize(con: &mut impl ConnectionLike) -> i64 {
    q(con, &[b"DBSIZE"])
}

/// Every key of the current db (KEYS * is fine on test-sized dbs; it skips logically expired keys).
pub fn all_keys(con: &mut impl ConnectionLike) -> BTreeSet<Vec<u8>> {
    q::<Vec<Vec<u8>>>(con, &[b"KEYS", b"*"]).into_iter().collect()
}

pub fn keys_matching(con: &mut impl ConnectionLike, pattern: &str) -> BTreeSet<Vec<u8>> {
    q::<Vec<Vec<u8>>>(con, &[b"KEYS", pattern.as_bytes()]).into_iter().collect()
}

pub fn pttl(con: &mut impl ConnectionLike, key: &[u8]) -> i64 {
    q(con, &[b"PTTL", key])
}

/// How many times `command` (lower case, e.g. `dump`, `restore`) ran on the server, from INFO
/// commandstats; 0 if it never ran.
pub fn command_calls(con: &mut impl ConnectionLike, command: &str) -> u64 {
    command_stat(con, command, "calls")
}

/// One field (`calls`, `failed_calls`, `rejected_calls`) of `command`'s line in INFO commandstats; 0 if
/// it never ran.
pub fn command_stat(con: &mut impl ConnectionLike, command: &str, field: &str) -> u64 {
    let stats: String = q(con, &[b"INFO", b"commandstats"]);
    let prefix = format!("cmdstat_{command}:");
    let Some(line) = stats.lines().find_map(|l| l.strip_prefix(prefix.as_str())) else { return 0 };
    line.split(',')
        .find_map(|kv| kv.strip_prefix(field).and_then(|v| v.strip_prefix('=')))
        .map(|v| v.parse().expect("a number in INFO commandstats"))
        .unwrap_or(0)
}

/// Keys a copy read whole from a source: its DUMPs, the GETRANGEs that found a string (`--mode auto`
/// reads short strings by value; a GETRANGE on another type fails with WRONGTYPE), and the reads of small
/// aggregates by value (LRANGE, SMEMBERS, HGETALL, ZRANGE, XINFO STREAM … FULL) that found their type.
pub fn keys_read(con: &mut impl ConnectionLike) -> u64 {
    let whole = |con: &mut _, c| command_calls(con, c) - command_stat(con, c, "failed_calls");
    command_calls(con, "dump")
        + ["getrange", "lrange", "smembers", "hgetall", "zrange", "xinfo|stream"]
            .iter()
            .map(|c| whole(con, c))
            .sum::<u64>()
}

/// Keys a copy wrote to a target: its RESTOREs, its SETs (short strings go by value), and the renames
/// that end a key built under a temporary name (small aggregates by value, the type-aware copy).
pub fn keys_written(con: &mut impl ConnectionLike) -> u64 {
    ["restore", "set", "rename", "renamenx"].iter().map(|c| command_calls(con, c)).sum()
}

/// Runs a pipeline of single-key commands on any connection: as one pipeline where the connection
/// pipelines (standalone), one command at a time where it does not (a `ClusterConnection`, which
/// routes each command to its key's node).
#[track_caller]
pub fn exec_pipe(con: &mut impl ConnectionLike, p: &redis::Pipeline) {
    if con.supports_pipelining() {
        p.exec(con).expect("pipeline");
        return;
    }
    for cmd in p.cmd_iter() {
        cmd.exec(con).unwrap_or_else(|e| panic!("{cmd:?} failed: {e}"));
    }
}

/// Runs `DEBUG SLEEP 0.05` back to back on `server` until the returned flag is set (or 30 s pass), so
/// that a PING waits up to 50 ms.
pub fn keep_busy(server: &RedisServer) -> (Arc<AtomicBool>, thread::JoinHandle<()>) {
    let done = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&done);
    let mut con = server.conn();
    let handle = thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(30);
        while !flag.load(Ordering::SeqCst) && Instant::now() < until {
            let _: () = redis::cmd("DEBUG").arg("SLEEP").arg("0.05").query(&mut con).expect("DEBUG SLEEP");
        }
    });
    (done, handle)
}
