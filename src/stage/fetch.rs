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
//! batch's pipeline, one MULTI/EXEC each ([`aggregates`]). The rest are DUMPed (or, with `--mode typed`,
//! go to the typed threads), like keys whose DUMP the source refuses (NOPERM, a renamed or disabled
//! command). Without MEMORY USAGE (refused by the source), a payload longer than `--big-key-bytes` sends
//! its key there instead.

use crossbeam_channel::{Receiver, Sender};
use redis::Value;

use crate::account::{Counters, Reporter, Stage};
use crate::flow::{exchange, forward, Batch, Fetched, Lru, Payload, Vanished};
use crate::key::Key;
use crate::rdb::{Part, StreamConsumer, StreamEntry, StreamGroup, StreamMeta, StreamPending};
use crate::redis::clock::{Deadlines, Sent};
use crate::redis::conn::Conn;
use crate::redis::reply::{self, command_denied, dump_refused, kind};
use crate::resume::Ledger;
use crate::stage::route::{ByValue, Detour, Router};
use crate::stage::typed::temp::temp_name;
use crate::stage::typed::Decoded;

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
            match (dump, ttl) {
                (Value::ServerError(err), _) if route.is_some() && dump_refused(&err) => {
                    let (_, message) = reply::classify_reply(&err);
                    route.as_ref().expect("checked").fallback.note(Detour::DumpRefused, &key, &message);
                    sorted.routed.push(key);
                }
                (Value::ServerError(err), _) | (_, Value::ServerError(err)) => {
                    let (code, message) = reply::classify_reply(&err);
                    rep.fail(key, Stage::Fetch, code, message);
                }
                (Value::Nil, _) | (_, Value::Int(-2)) => sorted.gone(key),
                (Value::BulkString(payload), Value::Int(_))
                    if route.as_ref().is_some_and(|r| payload.len() as u64 > r.fallback.big_key_bytes) =>
                {
                    let detail = format!("DUMP payload of {} bytes", payload.len());
                    route.as_ref().expect("checked").fallback.note(Detour::Big, &key, &detail);
                    sorted.routed.push(key);
                }
                (Value::BulkString(payload), Value::Int(ttl)) => {
                    let expire_at_ms = sent.deadline(i, ttl);
                    sorted.fetched.push(Fetched {
                        key,
                        payload: Payload::Dump(payload),
                        expire_at_ms,
                        lru: Lru::default(),
                    });
                }
                (dump, ttl) => rep.fail(
                    key,
                    Stage::Fetch,
                    "PROTOCOL".into(),
                    format!("unexpected DUMP/{ttl_cmd} replies: {} / {}", kind(&dump), kind(&ttl)),
                ),
            }
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

/// Where the keys of a batch went before DUMP: read, for the typed threads, or gone.
struct Triage {
    /// Keys read, ready to be written (and, in a follow, keys gone, to be deleted).
    fetched: Vec<Fetched>,
    /// Keys for the typed threads.
    routed: Vec<Key>,
    /// Keys found gone, counted as expired.
    expired: u64,
    /// What becomes of a key found gone.
    vanished: Vanished,
}

impl Triage {
    fn new(n: usize, vanished: Vanished) -> Triage {
        Triage { fetched: Vec::with_capacity(n), routed: Vec::new(), expired: 0, vanished }
    }

    /// A key found gone from the source: expired, or (a follow) to be deleted on the target.
    fn gone(&mut self, key: Key) {
        match self.vanished {
            Vanished::Expired => self.expired += 1,
            Vanished::Deleted => self.fetched.push(Fetched {
                key,
                payload: Payload::Gone,
                expire_at_ms: None,
                lru: Lru::default(),
            }),
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
            aggregates(conn, batch, route, by_value, deadlines, sorted, rep)
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

/// Aggregates up to this many bytes (MEMORY USAGE) are read by value; with [`STRING_BY_VALUE`], it
/// bounds what one batch of them holds.
pub const AGGREGATE_BY_VALUE: u64 = 16 << 10;
/// A list or sorted set read by value that turns out longer than this (it grew since its size was
/// asked) goes the way of the others instead.
const MAX_BY_VALUE_ELEMENTS: usize = 10_000;

/// The keys left after [`strings`] (aggregates, long strings): one pipeline asks each its TYPE and its
/// MEMORY USAGE; a key above `--big-key-bytes` goes to the typed threads; a small list, set, hash or
/// sorted set (as [`ByValue`] says) is read whole with its type's read and its deadline, in a second
/// pipeline, and goes on as the writes that make it ([`Payload::Built`], one MULTI/EXEC on the target).
/// Returns the keys left (to DUMP), and whether their sizes were asked already.
fn aggregates(
    conn: &mut Conn,
    batch: Batch<Key>,
    route: &Router,
    by_value: ByValue,
    deadlines: Deadlines,
    sorted: &mut Triage,
    rep: &Reporter,
) -> (Batch<Key>, bool) {
    let answers = exchange::<2>(
        conn,
        batch.len(),
        |i| &batch[i],
        |pipe, i| {
            let k = batch[i].as_bytes();
            pipe.cmd("TYPE").arg(k).cmd("MEMORY").arg("USAGE").arg(k);
        },
        Stage::Fetch,
        rep,
    );
    let Batch { id, items } = batch;
    let mut rest = Vec::with_capacity(items.len());
    let mut small: Vec<(Key, &'static str)> = Vec::new();
    for (key, answer) in items.into_iter().zip(answers) {
        let Some([ty, size]) = answer else { continue };
        let ty = match ty {
            Value::SimpleString(t) => t,
            Value::BulkString(t) => String::from_utf8_lossy(&t).into_owned(),
            _ => {
                rest.push(key);
                continue;
            }
        };
        match size {
            Value::Nil if ty == "none" => sorted.gone(key),
            Value::Int(bytes) if bytes as u64 > route.fallback.big_key_bytes => {
                route.fallback.note(Detour::Big, &key, &format!("MEMORY USAGE {bytes} bytes"));
                sorted.routed.push(key);
            }
            Value::Int(bytes) if bytes as u64 <= AGGREGATE_BY_VALUE => match by_value.read(&ty) {
                Some(read) => small.push((key, read)),
                None => rest.push(key),
            },
            Value::ServerError(err) if command_denied(&err) => {
                route.fallback.no_size_check(&reply::classify_reply(&err).1);
                rest.push(key);
            }
            _ => rest.push(key),
        }
    }
    if small.is_empty() {
        return (Batch { id, items: rest }, true);
    }
    let ttl_cmd = deadlines.command();
    let sent = Sent::new(deadlines, small.len());
    let answers = exchange::<2>(
        conn,
        small.len(),
        |i| &small[i].0,
        |pipe, i| {
            sent.stamp(i);
            let (key, read) = &small[i];
            let k = key.as_bytes();
            let cmd = pipe.cmd(read);
            match *read {
                "LRANGE" => cmd.arg(k).arg(0).arg(MAX_BY_VALUE_ELEMENTS),
                "ZRANGE" => cmd.arg(k).arg(0).arg(MAX_BY_VALUE_ELEMENTS).arg("WITHSCORES"),
                "XINFO" => cmd.arg("STREAM").arg(k).arg("FULL").arg("COUNT").arg(MAX_BY_VALUE_ELEMENTS),
                _ => cmd.arg(k),
            };
            pipe.cmd(ttl_cmd).arg(k);
        },
        Stage::Fetch,
        rep,
    );
    for (i, ((key, read), answer)) in small.into_iter().zip(answers).enumerate() {
        let Some([value, ttl]) = answer else { continue };
        match (value, ttl) {
            (_, Value::Int(-2)) => sorted.gone(key),
            // The key changed type since TYPE: it goes the way of the others.
            (Value::ServerError(err), _) if err.code() == "WRONGTYPE" => rest.push(key),
            (Value::ServerError(err), _) if command_denied(&err) => {
                route.fallback.no_by_value(&reply::classify_reply(&err).1);
                rest.push(key);
            }
            (Value::ServerError(err), _) | (_, Value::ServerError(err)) => {
                let (code, message) = reply::classify_reply(&err);
                rep.fail(key, Stage::Fetch, code, message);
            }
            (Value::Array(items), Value::Int(ttl)) => match parts(read, items) {
                // No aggregate is empty (a stream may be): it was deleted between the two reads.
                Some(parts) if read != "XINFO" && parts.iter().map(elements).sum::<usize>() == 0 => {
                    sorted.gone(key)
                }
                Some(parts) if parts.iter().all(|p| elements(p) <= MAX_BY_VALUE_ELEMENTS) => {
                    let tmp = temp_name(key.as_bytes());
                    let mut decoded = Decoded::new(tmp, by_value.target);
                    let mut writes = Vec::new();
                    let built = parts.iter().try_for_each(|p| decoded.writes(p).map(|w| writes.extend(w)));
                    match built {
                        Ok(()) => sorted.fetched.push(Fetched {
                            key,
                            payload: Payload::Built { tmp: decoded.tmp().to_vec(), writes },
                            expire_at_ms: sent.deadline(i, ttl),
                            lru: Lru::default(),
                        }),
                        Err(_) => rest.push(key),
                    }
                }
                // Grew past what one read takes, or an answer of another shape: the other way.
                _ => rest.push(key),
            },
            (value, ttl) => rep.fail(
                key,
                Stage::Fetch,
                "PROTOCOL".into(),
                format!("unexpected {read}/{ttl_cmd} replies: {} / {}", kind(&value), kind(&ttl)),
            ),
        }
    }
    (Batch { id, items: rest }, true)
}

/// A by-value read's reply as the pages of a decoded value; `None` for a reply of another shape, or a
/// stream longer than one read gives.
fn parts(read: &str, items: Vec<Value>) -> Option<Vec<Part>> {
    if read == "XINFO" {
        return stream_parts(items);
    }
    let flat: Vec<Vec<u8>> = items.into_iter().map(bytes_of).collect::<Option<_>>()?;
    let part = match read {
        "LRANGE" => Part::Items(flat),
        "SMEMBERS" => Part::Members(flat),
        "HGETALL" => {
            let mut it = flat.into_iter();
            let mut fields = Vec::new();
            while let (Some(f), Some(v)) = (it.next(), it.next()) {
                fields.push((f, v, None));
            }
            Part::Fields(fields)
        }
        _ => {
            let mut it = flat.into_iter();
            let mut scored = Vec::new();
            while let (Some(m), Some(s)) = (it.next(), it.next()) {
                let score = std::str::from_utf8(&s).ok().and_then(crate::rdb::value::parse_score)?;
                scored.push((score, m));
            }
            Part::Scored(scored)
        }
    };
    Some(vec![part])
}

fn bytes_of(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        _ => None,
    }
}

/// A stream ID as text, to (milliseconds, sequence).
fn stream_id(v: &Value) -> Option<(u64, u64)> {
    let text = match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.to_string(),
        Value::SimpleString(s) => s.clone(),
        _ => return None,
    };
    let (ms, seq) = text.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// The fields of a flat name-value reply.
fn fields_of(v: Value) -> Option<Vec<(String, Value)>> {
    let Value::Array(items) = v else { return None };
    let mut out = Vec::new();
    let mut it = items.into_iter();
    while let (Some(name), Some(value)) = (it.next(), it.next()) {
        out.push((String::from_utf8(bytes_of(name)?).ok()?, value));
    }
    Some(out)
}

fn take(fields: &mut [(String, Value)], name: &str) -> Option<Value> {
    fields.iter_mut().find(|(n, _)| n == name).map(|(_, v)| std::mem::take(v))
}

fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        _ => None,
    }
}

/// XINFO STREAM … FULL as the pages of a decoded stream: its entries, then its metadata and groups
/// (pending entries with their consumers, delivery times and counts). `None` when the reply holds
/// fewer entries or pending entries than the stream has (it is longer than one read gives).
fn stream_parts(items: Vec<Value>) -> Option<Vec<Part>> {
    let mut f = fields_of(Value::Array(items))?;
    let length = int_of(&take(&mut f, "length")?)? as u64;
    let last_id = stream_id(&take(&mut f, "last-generated-id")?)?;
    let max_deleted = take(&mut f, "max-deleted-entry-id").as_ref().and_then(stream_id).unwrap_or((0, 0));
    let added = take(&mut f, "entries-added").as_ref().and_then(int_of).map_or(length, |n| n as u64);
    let Value::Array(raw_entries) = take(&mut f, "entries")? else { return None };
    let mut entries = Vec::with_capacity(raw_entries.len());
    for e in raw_entries {
        let Value::Array(pair) = e else { return None };
        let [id, Value::Array(kv)] = <[Value; 2]>::try_from(pair).ok()? else { return None };
        let flat: Vec<Vec<u8>> = kv.into_iter().map(bytes_of).collect::<Option<_>>()?;
        let mut it = flat.into_iter();
        let mut fields = Vec::new();
        while let (Some(a), Some(b)) = (it.next(), it.next()) {
            fields.push((a, b));
        }
        entries.push(StreamEntry { id: stream_id(&id)?, fields });
    }
    if entries.len() as u64 != length {
        return None;
    }
    let Value::Array(raw_groups) = take(&mut f, "groups")? else { return None };
    let mut groups = Vec::new();
    for g in raw_groups {
        let mut g = fields_of(g)?;
        let name = bytes_of(take(&mut g, "name")?)?;
        let last = stream_id(&take(&mut g, "last-delivered-id")?)?;
        let entries_read =
            take(&mut g, "entries-read").as_ref().and_then(int_of).and_then(|n| u64::try_from(n).ok());
        let pel_count = int_of(&take(&mut g, "pel-count")?)? as usize;
        let Value::Array(pel) = take(&mut g, "pending")? else { return None };
        if pel.len() != pel_count {
            return None;
        }
        let mut pending = Vec::with_capacity(pel.len());
        let mut owners: Vec<(Vec<u8>, Vec<(u64, u64)>)> = Vec::new();
        for p in pel {
            let Value::Array(p) = p else { return None };
            let [id, consumer, time, count] = <[Value; 4]>::try_from(p).ok()?;
            let (id, consumer) = (stream_id(&id)?, bytes_of(consumer)?);
            pending.push(StreamPending { id, delivered: int_of(&time)?, deliveries: int_of(&count)? as u64 });
            match owners.iter_mut().find(|(n, _)| *n == consumer) {
                Some((_, ids)) => ids.push(id),
                None => owners.push((consumer, vec![id])),
            }
        }
        let Value::Array(raw_consumers) = take(&mut g, "consumers")? else { return None };
        let mut consumers = Vec::new();
        for c in raw_consumers {
            let mut c = fields_of(c)?;
            let name = bytes_of(take(&mut c, "name")?)?;
            let seen = take(&mut c, "seen-time").as_ref().and_then(int_of).unwrap_or(0);
            let ids = owners.iter().find(|(n, _)| *n == name).map(|(_, ids)| ids.clone()).unwrap_or_default();
            consumers.push(StreamConsumer { name, seen, active: None, pending: ids });
        }
        groups.push(StreamGroup { name, last_id: last, entries_read, pending, consumers });
    }
    let meta = StreamMeta { length, last_id, first_id: (0, 0), max_deleted, added, groups };
    let mut parts = Vec::new();
    if !entries.is_empty() {
        parts.push(Part::Entries(entries));
    }
    parts.push(Part::StreamEnd(meta));
    Some(parts)
}

/// The elements of a page.
fn elements(part: &Part) -> usize {
    match part {
        Part::Items(v) | Part::Members(v) => v.len(),
        Part::Fields(v) => v.len(),
        Part::Scored(v) => v.len(),
        Part::Entries(v) => v.len(),
        Part::StreamEnd(m) => m.groups.iter().map(|g| g.pending.len() + g.consumers.len()).sum(),
        Part::Chunk(_) => 0,
    }
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
