//! `verify`: do the matched keys of the source exist on the target with the same type, value and TTL?
//!
//! Keys come from the same scan stage as `copy` (SCAN with `--match` / `--type`, or `--keys-from`);
//! compare threads, each with its own source and target connection, read TYPE and PTTL on both sides
//! in one pipeline per batch, then each key's whole value with its type's own read command on both
//! sides, normalised (sets and hashes sorted) and compared byte for byte; streams compare their entries
//! and their consumer groups (XINFO GROUPS). A key that disappears from the source while it is being
//! checked is counted as vanished, not as a difference. Differences are logged to standard error; the
//! summary line counts them. This version loads each value whole; chunked comparison comes later.

use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver};
use redis::Value;

use crate::config::{Endpoint, VerifyConfig};
use crate::conn::{self, Conn};
use crate::exit::Exit;
use crate::key::Key;
use crate::pipeline::{self, Fatal};
use crate::report::{Counters, Reporter, Stop, StopReason};
use crate::stage::scan;

/// Compare threads (each holds a source and a target connection).
const COMPARERS: usize = 2;
/// At most this many differences are logged one by one.
const LOGGED: u64 = 100;
/// Differences logged so far.
static LOGGED_SO_FAR: AtomicU64 = AtomicU64::new(0);

/// The verdict counters.
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
    /// Gone from the source during the check.
    vanished: AtomicU64,
    /// Could not be read (error reply, connection trouble).
    errors: AtomicU64,
}

/// The verdicts of one batch, added to the shared counters only once the whole batch was checked.
#[derive(Default)]
struct Tally {
    matched: u64,
    missing: u64,
    different: u64,
    ttl: u64,
    vanished: u64,
}

impl Verdicts {
    fn add(&self, t: &Tally) {
        for (counter, n) in [
            (&self.matched, t.matched),
            (&self.missing, t.missing),
            (&self.different, t.different),
            (&self.ttl, t.ttl),
            (&self.vanished, t.vanished),
        ] {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// One side's view of a key.
struct Side {
    /// TYPE reply ("none" when the key does not exist).
    ty: String,
    /// PTTL reply (-1 no expiry, -2 missing).
    pttl: i64,
}

/// Runs `verify`; returns exit 0 when every key agrees, 1 otherwise.
pub fn run(cfg: &VerifyConfig, stop: &Stop) -> Result<Exit, Fatal> {
    let (scan_conn, _) = pipeline::open_checked(&cfg.source, cfg.timeouts)?;
    let (first_target, _) = pipeline::open_checked(&cfg.target, cfg.timeouts)?;
    let input = pipeline::key_input(&cfg.keys, scan_conn)?;
    let open =
        |endpoint: &Endpoint| Conn::open(endpoint, cfg.timeouts).map_err(|e| Fatal::bad_input(e.to_string()));
    let mut pairs = Vec::new();
    let mut first_target = Some(first_target);
    for _ in 0..COMPARERS {
        let target = match first_target.take() {
            Some(c) => c,
            None => open(&cfg.target)?,
        };
        pairs.push((open(&cfg.source)?, target));
    }

    let start = Instant::now();
    let counters = Counters::default();
    let verdicts = Verdicts::default();
    let (fail_tx, fail_rx) = bounded(64);
    let reporter = Reporter::new(&counters, stop, fail_tx, None);
    thread::scope(|s| {
        let (tx, rx) = bounded(2 * COMPARERS);
        let rep = reporter.clone();
        s.spawn(move || scan::run(input, cfg.batch, tx, rep));
        drop(reporter);
        let verdicts = &verdicts;
        s.spawn(move || {
            for f in fail_rx {
                log::warn!("cannot check {}: {} {}", f.key, f.code, f.message);
                verdicts.errors.fetch_add(1, Ordering::Relaxed);
            }
        });
        for (source, target) in pairs {
            let rx = rx.clone();
            s.spawn(move || compare(source, target, rx, cfg, verdicts, stop));
        }
    });

    let v = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let bad = v(&verdicts.missing) + v(&verdicts.different) + v(&verdicts.ttl) + v(&verdicts.errors);
    println!(
        "matched={} missing={} different={} ttl={} extra=0 seconds={:.3} vanished={} errors={}",
        v(&verdicts.matched),
        v(&verdicts.missing),
        v(&verdicts.different),
        v(&verdicts.ttl),
        start.elapsed().as_secs_f64(),
        v(&verdicts.vanished),
        v(&verdicts.errors)
    );
    if let Some(error) = stop.error() {
        eprintln!("error: {error}");
        return Ok(Exit::Aborted);
    }
    Ok(match stop.reason() {
        StopReason::Interrupted => Exit::Interrupted,
        _ if bad == 0 => Exit::Ok,
        _ => Exit::KeysFailed,
    })
}

/// One compare thread.
fn compare(
    mut source: Conn,
    mut target: Conn,
    rx: Receiver<Vec<Key>>,
    cfg: &VerifyConfig,
    verdicts: &Verdicts,
    stop: &Stop,
) {
    for batch in rx {
        if stop.discard() {
            continue;
        }
        match compare_batch(&mut source, &mut target, &batch, cfg) {
            Ok(tally) => verdicts.add(&tally),
            Err(e) => {
                let (code, message) = conn::classify(&e);
                log::warn!("cannot check a batch of {} keys: {code} {message}", batch.len());
                verdicts.errors.fetch_add(batch.len() as u64, Ordering::Relaxed);
                for c in [&mut source, &mut target] {
                    if conn::is_connection_error(&e) {
                        if let Err(lost) = c.reconnect() {
                            stop.fatal(format!("verify lost the connection: {lost}"));
                        }
                    }
                }
            }
        }
    }
}

fn sides(conn: &mut Conn, batch: &[Key]) -> redis::RedisResult<Vec<Side>> {
    let mut pipe = redis::pipe();
    for key in batch {
        pipe.cmd("TYPE").arg(key.as_bytes()).cmd("PTTL").arg(key.as_bytes());
    }
    let replies: Vec<(String, i64)> = pipe.query(conn.raw())?;
    Ok(replies.into_iter().map(|(ty, pttl)| Side { ty, pttl }).collect())
}

/// Reads the whole values of `keys` (all of type `ty[i]`) in one pipeline, normalised.
fn values(conn: &mut Conn, keys: &[(&Key, &str)]) -> redis::RedisResult<Vec<Value>> {
    let mut pipe = redis::pipe();
    for (key, ty) in keys {
        let k = key.as_bytes();
        match *ty {
            "string" => pipe.cmd("GET").arg(k),
            "list" => pipe.cmd("LRANGE").arg(k).arg(0).arg(-1),
            "set" => pipe.cmd("SMEMBERS").arg(k),
            "zset" => pipe.cmd("ZRANGE").arg(k).arg(0).arg(-1).arg("WITHSCORES"),
            "hash" => pipe.cmd("HGETALL").arg(k),
            "stream" => pipe.cmd("XRANGE").arg(k).arg("-").arg("+").cmd("XINFO").arg("GROUPS").arg(k),
            // Module types and others: their DUMP payload is the only common form.
            _ => pipe.cmd("DUMP").arg(k),
        };
    }
    let raw: Vec<Value> = pipe.query(conn.raw())?;
    let mut raw = raw.into_iter();
    let mut out = Vec::with_capacity(keys.len());
    for (_, ty) in keys {
        let value = raw.next().unwrap_or(Value::Nil);
        out.push(match *ty {
            "set" => sorted(value, 1),
            "hash" => sorted(value, 2),
            "stream" => Value::Array(vec![value, raw.next().unwrap_or(Value::Nil)]),
            _ => value,
        });
    }
    Ok(out)
}

/// Sorts a flat array in groups of `width` (members, or field/value pairs), so order does not matter.
fn sorted(value: Value, width: usize) -> Value {
    let items = match value {
        Value::Array(items) | Value::Set(items) => items,
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        other => return other,
    };
    let mut groups: Vec<Vec<Value>> = Vec::new();
    let mut it = items.into_iter();
    loop {
        let group: Vec<Value> = it.by_ref().take(width).collect();
        if group.is_empty() {
            break;
        }
        groups.push(group);
    }
    groups.sort_by_key(|g| format!("{g:?}"));
    Value::Array(groups.into_iter().flatten().collect())
}

fn compare_batch(
    source: &mut Conn,
    target: &mut Conn,
    batch: &[Key],
    cfg: &VerifyConfig,
) -> redis::RedisResult<Tally> {
    let mut tally = Tally::default();
    let src = sides(source, batch)?;
    let dst = sides(target, batch)?;
    let mut same_type: Vec<(&Key, &str)> = Vec::new();
    let mut ttl_ok = Vec::new();
    let mut suspects: Vec<(&Key, &'static str)> = Vec::new();
    for ((key, s), d) in batch.iter().zip(&src).zip(&dst) {
        if s.ty == "none" {
            tally.vanished += 1;
        } else if d.ty == "none" {
            suspects.push((key, "missing"));
        } else if s.ty != d.ty {
            suspects.push((key, "type"));
        } else {
            same_type.push((key, s.ty.as_str()));
            let tolerance = cfg.ttl_tolerance.as_millis() as i64;
            ttl_ok.push(match (s.pttl, d.pttl) {
                (-1, -1) => true,
                (a, b) if a >= 0 && b >= 0 => (a - b).abs() <= tolerance,
                _ => false,
            });
        }
    }
    if !same_type.is_empty() {
        let a = values(source, &same_type)?;
        let b = values(target, &same_type)?;
        for (((key, _), ttl_ok), (a, b)) in same_type.iter().zip(ttl_ok).zip(a.iter().zip(&b)) {
            if a != b {
                suspects.push((key, "value"));
            } else if !ttl_ok {
                suspects.push((key, "ttl"));
            } else {
                tally.matched += 1;
            }
        }
    }
    if suspects.is_empty() {
        return Ok(tally);
    }
    // A key that is gone from the source by now expired or was deleted during the check: no difference.
    let mut pipe = redis::pipe();
    for (key, _) in &suspects {
        pipe.cmd("EXISTS").arg(key.as_bytes());
    }
    let still: Vec<i64> = pipe.query(source.raw())?;
    for ((key, what), exists) in suspects.into_iter().zip(still) {
        let counter = match (exists, what) {
            (0, _) => &mut tally.vanished,
            (_, "missing") => &mut tally.missing,
            (_, "ttl") => &mut tally.ttl,
            _ => &mut tally.different,
        };
        *counter += 1;
        if exists != 0 && LOGGED_SO_FAR.fetch_add(1, Ordering::Relaxed) < LOGGED {
            log::warn!("{what}: {key}");
        }
    }
    Ok(tally)
}
