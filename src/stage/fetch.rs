//! Stage 3: read each key's DUMP payload and its absolute expiry from the source, one pipeline per
//! batch (DUMP + PEXPIRETIME on Redis 7.0+, DUMP + PTTL before that).
//!
//! A key that vanished (DUMP nil, or expiry -2) is counted as expired here, or, in a follow, goes on as
//! [`Payload::Gone`] to be deleted on the target too; an error reply (NOPERM, ...) makes the key a
//! failure at stage `fetch`. Several fetch threads run side by side, each with its
//! own source connection.
//!
//! In `--mode auto` and `typed` (with a [`Router`]) a batch first goes by value where it can: strings up to
//! [`STRING_BY_VALUE`] (GETRANGE), then, for the keys left, one pipeline of TYPE and `MEMORY USAGE` (the
//! server's default sampling, which is O(1); `SAMPLES 0` walks every element of a hash, set or sorted
//! set): keys above `--big-key-bytes` go to the typed threads and are never DUMPed whole, and small
//! aggregates of the types [`ByValue`] names are read whole with their type's read and written in the
//! batch's pipeline: in `auto` as RESTORE payloads made of their elements, when every key goes type-aware
//! one MULTI/EXEC each ([`by_value`]). The rest are DUMPed in the same pipeline as those reads, one
//! round for both (or, with `--mode typed`, go to the typed threads); keys whose DUMP the source refuses
//! (NOPERM, a renamed or disabled command) go to the typed threads too ([`crate::stage::dump`]).
//! Without MEMORY USAGE (refused by the source), a payload longer than `--big-key-bytes` sends its key
//! there instead.

use crossbeam_channel::{Receiver, Sender};
use redis::Value;

use crate::account::{Counters, Reporter, Stage};
use crate::flow::{exchange, forward, Batch, Fetched, Lru, Payload, Vanished};
use crate::key::Key;
use crate::redis::clock::{Deadlines, Sent};
use crate::redis::conn::Conn;
use crate::redis::reply::{self, command_denied, kind};
use crate::resume::Ledger;
use crate::stage::by_value;
use crate::stage::dump::{dumped, Triage};
use crate::stage::route::{Detour, Router};

/// Runs one fetch thread until its input is drained. `deadlines`: how the source tells them;
/// `vanished`: what becomes of a key gone from the source. `route`: `--mode auto`'s way to the typed
/// threads.
#[allow(clippy::too_many_arguments)]
pub fn run(
    mut conn: Conn,
    deadlines: Deadlines,
    vanished: Vanished,
    rx: Receiver<Batch<Key>>,
    out: Sender<Batch<Fetched>>,
    rep: Reporter,
    ledger: &Ledger,
    route: Option<Router>,
) {
    let ttl_cmd = deadlines.command();
    for batch in rx {
        if rep.stop.discard() {
            rep.unreached(batch.len());
            continue;
        }
        let (id, taken) = (batch.id, batch.len());
        let mut sorted = Triage::new(batch.len(), vanished);
        let batch = match &route {
            Some(route) => before_dump(&mut conn, batch, route, deadlines, &mut sorted, &rep),
            None => batch,
        };
        let sent = Sent::new(deadlines, batch.len());
        let answers = exchange::<2>(
            &mut conn,
            batch.len(),
            |i| &batch[i],
            |pipe, i| {
                sent.stamp(i);
                pipe.cmd("DUMP").arg(batch[i].as_bytes()).cmd(ttl_cmd).arg(batch[i].as_bytes());
            },
            Stage::Fetch,
            &rep,
        );
        for (i, (key, answer)) in batch.items.into_iter().zip(answers).enumerate() {
            let Some([dump, ttl]) = answer else { continue };
            dumped(&mut sorted, key, dump, ttl, |t| sent.deadline(i, t), route.as_ref(), ttl_cmd, &rep);
        }
        let Triage { fetched, routed, expired, .. } = sorted;
        Counters::add(&rep.counters.expired, expired);
        // The routed keys stay open in the ledger until a typed thread has copied them.
        forward(&out, id, taken - routed.len(), fetched, &rep, ledger);
        if let Some(route) = &route {
            route.send(id, routed, &rep);
        }
    }
}

/// What happens to a batch before DUMP in `--mode auto` and `typed`: short strings are read by value;
/// then, without DUMP/RESTORE, every other key goes to the typed threads, else the size check sends the
/// big ones there. Returns the keys left to DUMP.
fn before_dump(
    conn: &mut Conn,
    batch: Batch<Key>,
    route: &Router,
    deadlines: Deadlines,
    sorted: &mut Triage,
    rep: &Reporter,
) -> Batch<Key> {
    let batch =
        if route.fallback.strings() { strings(conn, batch, route, deadlines, sorted, rep) } else { batch };
    let (batch, sized) = match route.fallback.by_value() {
        Some(by_value) if !batch.is_empty() => {
            (by_value::aggregates(conn, batch, route, by_value, deadlines, sorted, rep), true)
        }
        _ => (batch, false),
    };
    if !route.fallback.dump {
        sorted.routed.extend(batch.items);
        return Batch { id: batch.id, items: Vec::new() };
    }
    if route.fallback.size_check() && !sized && !batch.is_empty() {
        return sizes(conn, batch, route, sorted, rep);
    }
    batch
}

/// Strings up to this many bytes are read by value (and longer ones DUMPed, or copied type-aware
/// above `--big-key-bytes`): it bounds what one batch of them can hold (500 keys: 8 MiB).
pub const STRING_BY_VALUE: u64 = 16 << 10;

/// Reads every key of `batch` as a string: `GETRANGE key 0 <limit>` and its deadline, one pipeline,
/// where the limit is [`STRING_BY_VALUE`] (or `--big-key-bytes` when smaller). A string up to the limit
/// is then read whole and goes on to be written with SET: no DUMP serialization, checksum or
/// compression attempt on the source, no RESTORE parsing on the target. Longer strings and the keys
/// of other types (WRONGTYPE) come back for the size check and DUMP; a refused GETRANGE turns this
/// path off.
fn strings(
    conn: &mut Conn,
    batch: Batch<Key>,
    route: &Router,
    deadlines: Deadlines,
    sorted: &mut Triage,
    rep: &Reporter,
) -> Batch<Key> {
    let ttl_cmd = deadlines.command();
    // GETRANGE 0 <limit> returns one byte more than the limit for a longer string.
    let limit = STRING_BY_VALUE.min(route.fallback.big_key_bytes);
    let sent = Sent::new(deadlines, batch.len());
    let answers = exchange::<2>(
        conn,
        batch.len(),
        |i| &batch[i],
        |pipe, i| {
            sent.stamp(i);
            let k = batch[i].as_bytes();
            pipe.cmd("GETRANGE").arg(k).arg(0).arg(limit).cmd(ttl_cmd).arg(k);
        },
        Stage::Fetch,
        rep,
    );
    let Batch { id, items } = batch;
    let mut rest = Vec::new();
    for (i, (key, answer)) in items.into_iter().zip(answers).enumerate() {
        let Some([value, ttl]) = answer else { continue };
        match (value, ttl) {
            (_, Value::Int(-2)) => sorted.gone(key),
            (Value::ServerError(err), _) if err.code() == "WRONGTYPE" => rest.push(key),
            (Value::ServerError(err), _) if command_denied(&err) => {
                route.fallback.no_strings(&reply::classify_reply(&err).1);
                rest.push(key);
            }
            (Value::ServerError(err), _) | (_, Value::ServerError(err)) => {
                let (code, message) = reply::classify_reply(&err);
                rep.fail(key, Stage::Fetch, code, message);
            }
            (Value::BulkString(value), Value::Int(_)) if value.len() as u64 > limit => rest.push(key),
            (Value::BulkString(value), Value::Int(ttl)) => {
                let expire_at_ms = sent.deadline(i, ttl);
                sorted.fetched.push(Fetched {
                    key,
                    payload: Payload::String(value),
                    expire_at_ms,
                    lru: Lru::default(),
                });
            }
            (value, ttl) => rep.fail(
                key,
                Stage::Fetch,
                "PROTOCOL".into(),
                format!("unexpected GETRANGE/{ttl_cmd} replies: {} / {}", kind(&value), kind(&ttl)),
            ),
        }
    }
    Batch { id, items: rest }
}

/// Asks MEMORY USAGE for every key of `batch`: keys above `--big-key-bytes` go to `routed`, vanished
/// ones are counted in `expired`, the rest come back to be DUMPed. A key whose MEMORY USAGE fails is
/// DUMPed all the same (its payload length is checked); a refused MEMORY USAGE turns the check off.
fn sizes(
    conn: &mut Conn,
    batch: Batch<Key>,
    route: &Router,
    sorted: &mut Triage,
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
            Some([Value::Nil]) => sorted.gone(key),
            Some([Value::Int(bytes)]) if bytes as u64 > route.fallback.big_key_bytes => {
                route.fallback.note(Detour::Big, &key, &format!("MEMORY USAGE {bytes} bytes"));
                sorted.routed.push(key);
            }
            Some([Value::ServerError(err)]) if command_denied(&err) => {
                route.fallback.no_size_check(&reply::classify_reply(&err).1);
                rest.push(key);
            }
            Some(_) => rest.push(key),
        }
    }
    Batch { id, items: rest }
}
