//! Stage 3: read each key's DUMP payload and its absolute expiry from the source, one pipeline per
//! batch (DUMP + PEXPIRETIME on Redis 7.0+, DUMP + PTTL before that).
//!
//! A key that vanished (DUMP nil, or expiry -2) is counted as expired here; an error reply (NOPERM,
//! ...) makes the key a failure at stage `fetch`. Several fetch threads run side by side, each with its
//! own source connection.
//!
//! In `--mode auto` (with a [`Router`]) a batch first goes through one pipeline of `MEMORY USAGE` (the
//! server's default sampling, which is O(1); `SAMPLES 0` walks every element of a hash, set or sorted
//! set), so that keys above `--big-key-bytes` are never DUMPed whole: they go to the typed threads,
//! like keys whose DUMP the source refuses (NOPERM, a renamed or disabled command). Without MEMORY
//! USAGE (refused by the source), a payload longer than `--big-key-bytes` sends its key there instead.

use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use redis::Value;

use crate::checkpoint::Ledger;
use crate::conn::{self, Conn};
use crate::key::Key;
use crate::report::{Counters, Reporter, Stage};
use crate::stage::typed::{self, Router, Why};
use crate::stage::{exchange, forward, kind, Batch, Fetched};

/// Current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Runs one fetch thread until its input is drained. `pexpiretime`: the source has PEXPIRETIME.
/// `route`: `--mode auto`'s way to the typed threads.
pub fn run(
    mut conn: Conn,
    pexpiretime: bool,
    rx: Receiver<Batch<Key>>,
    out: Sender<Batch<Fetched>>,
    rep: Reporter,
    ledger: &Ledger,
    route: Option<Router>,
) {
    let ttl_cmd = if pexpiretime { "PEXPIRETIME" } else { "PTTL" };
    for batch in rx {
        if rep.stop.discard() {
            rep.unreached(batch.len());
            continue;
        }
        let (id, taken) = (batch.id, batch.len());
        let mut expired = 0;
        let mut routed = Vec::new();
        let batch = match &route {
            Some(route) if route.fallback.size_check() => {
                sizes(&mut conn, batch, route, &mut routed, &mut expired, &rep)
            }
            _ => batch,
        };
        let sent_at = now_ms();
        let answers = exchange::<2>(
            &mut conn,
            batch.len(),
            |i| &batch[i],
            |pipe, i| {
                pipe.cmd("DUMP").arg(batch[i].as_bytes()).cmd(ttl_cmd).arg(batch[i].as_bytes());
            },
            Stage::Fetch,
            &rep,
        );
        let mut fetched = Vec::with_capacity(batch.len());
        for (key, answer) in batch.items.into_iter().zip(answers) {
            let Some([dump, ttl]) = answer else { continue };
            match (dump, ttl) {
                (Value::ServerError(err), _) if route.is_some() && typed::dump_refused(&err) => {
                    let (_, message) = conn::classify_reply(&err);
                    route.as_ref().expect("checked").fallback.note(Why::DumpRefused, &key, &message);
                    routed.push(key);
                }
                (Value::ServerError(err), _) | (_, Value::ServerError(err)) => {
                    let (code, message) = conn::classify_reply(&err);
                    rep.fail(key, Stage::Fetch, code, message);
                }
                (Value::Nil, _) | (_, Value::Int(-2)) => expired += 1,
                (Value::BulkString(payload), Value::Int(_))
                    if route.as_ref().is_some_and(|r| payload.len() as u64 > r.fallback.big_key_bytes) =>
                {
                    let detail = format!("DUMP payload of {} bytes", payload.len());
                    route.as_ref().expect("checked").fallback.note(Why::Big, &key, &detail);
                    routed.push(key);
                }
                (Value::BulkString(payload), Value::Int(ttl)) => {
                    let expire_at_ms = match ttl {
                        -1 => None,
                        t if pexpiretime => Some(t),
                        // PTTL is relative: anchor it at the moment the batch was sent, which errs
                        // on the side of an earlier deadline, never a later one.
                        t => Some(sent_at + t),
                    };
                    fetched.push(Fetched { key, payload, expire_at_ms });
                }
                (dump, ttl) => rep.fail(
                    key,
                    Stage::Fetch,
                    "PROTOCOL".into(),
                    format!("unexpected DUMP/{ttl_cmd} replies: {} / {}", kind(&dump), kind(&ttl)),
                ),
            }
        }
        Counters::add(&rep.counters.expired, expired);
        // The routed keys stay open in the ledger until a typed thread has copied them.
        forward(&out, id, taken - routed.len(), fetched, &rep, ledger);
        if let Some(route) = &route {
            route.send(id, routed, &rep);
        }
    }
}

/// Asks MEMORY USAGE for every key of `batch`: keys above `--big-key-bytes` go to `routed`, vanished
/// ones are counted in `expired`, the rest come back to be DUMPed. A key whose MEMORY USAGE fails is
/// DUMPed all the same (its payload length is checked); a refused MEMORY USAGE turns the check off.
fn sizes(
    conn: &mut Conn,
    batch: Batch<Key>,
    route: &Router,
    routed: &mut Vec<Key>,
    expired: &mut u64,
    rep: &Reporter,
) -> Batch<Key> {
    let answers = exchange::<1>(
        conn,
        batch.len(),
        |i| &batch[i],
        |pipe, i| {
            pipe.cmd("MEMORY").arg("USAGE").arg(batch[i].as_bytes());
        },
        Stage::Fetch,
        rep,
    );
    let Batch { id, items } = batch;
    let mut rest = Vec::with_capacity(items.len());
    for (key, answer) in items.into_iter().zip(answers) {
        match answer {
            // Failed and reported: counted in its bucket already.
            None => {}
            Some([Value::Nil]) => *expired += 1,
            Some([Value::Int(bytes)]) if bytes as u64 > route.fallback.big_key_bytes => {
                route.fallback.note(Why::Big, &key, &format!("MEMORY USAGE {bytes} bytes"));
                routed.push(key);
            }
            Some([Value::ServerError(err)]) if typed::command_denied(&err) => {
                route.fallback.no_size_check(&conn::classify_reply(&err).1);
                rest.push(key);
            }
            Some(_) => rest.push(key),
        }
    }
    Batch { id, items: rest }
}
