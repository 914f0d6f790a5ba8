//! Small aggregates read by value: one pipeline asks the keys a batch has left after its strings their
//! TYPE and MEMORY USAGE; a key above `--big-key-bytes` goes to the typed threads; a small list, set, hash,
//! sorted set or stream (as [`ByValue`] says) is read whole with its type's read (LRANGE, SMEMBERS,
//! HGETALL, ZRANGE … WITHSCORES, XINFO STREAM … FULL) and its deadline in a second pipeline, which also
//! DUMPs the other keys (one round for both; `stage::dump` sorts their replies). In `--mode auto` a list,
//! set or hash then goes on as a RESTORE payload made of its elements (`rdb::payload`), like a DUMP's, the
//! elements taken from the reply's bytes (`Pipe::raw`: no allocation per element). When every key goes
//! type-aware it goes on as the writes that make it ([`Payload::Built`]: one MULTI/EXEC on the target,
//! under a temporary name, with the deadline and the rename): the replies become the pages of a decoded
//! value (`rdb::Part`), so the writes are those of a value decoded from an RDB file ([`Decoded`]). Part
//! of the fetch stage (`fetch.rs`).

use redis::Value;

use crate::account::{Reporter, Stage};
use crate::flow::{exchange, Batch, Fetched, Lru, Payload};
use crate::key::Key;
use crate::rdb::payload::{self, Plain};
use crate::rdb::{Part, StreamConsumer, StreamEntry, StreamGroup, StreamMeta, StreamPending};
use crate::redis::clock::{Deadlines, Sent};
use crate::redis::conn::Conn;
use crate::redis::reply::{self, command_denied, kind};
use crate::redis::wire::bulks;
use crate::stage::dump::{dumped, Triage};
use crate::stage::route::{ByValue, Detour, Router};
use crate::stage::typed::temp::temp_name;
use crate::stage::typed::Decoded;

/// Aggregates up to this many bytes (MEMORY USAGE) are read by value; with the strings' limit (`fetch.rs`), it
/// bounds what one batch of them holds.
pub const AGGREGATE_BY_VALUE: u64 = 16 << 10;
/// A list or sorted set read by value that turns out longer than this (it grew since its size was
/// asked) goes the way of the others instead.
const MAX_BY_VALUE_ELEMENTS: usize = 10_000;

/// The keys left after the strings (aggregates, long strings): one pipeline asks each its TYPE and its
/// MEMORY USAGE; a key above `--big-key-bytes` goes to the typed threads; a small list, set, hash or
/// sorted set (as [`ByValue`] says) is read whole with its type's read and its deadline, in a second
/// pipeline, and goes on as a RESTORE payload (`--mode auto`) or as the writes that make it
/// ([`Payload::Built`], one MULTI/EXEC on the target). Where DUMP is used, the other keys are DUMPed in
/// that same pipeline. Each key goes into `sorted`, or is returned: the keys left (to DUMP: they changed
/// type or grew between the two pipelines; with `--mode typed`, every key not read by value) had their
/// sizes asked already.
pub(super) fn aggregates(
    conn: &mut Conn,
    batch: Batch<Key>,
    route: &Router,
    by_value: ByValue,
    deadlines: Deadlines,
    sorted: &mut Triage,
    rep: &Reporter,
) -> Batch<Key> {
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
    // Each key's read: its type's, or DUMP.
    let mut reads: Vec<(Key, &'static str)> = Vec::new();
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
                Some(read) => reads.push((key, read)),
                None => rest.push(key),
            },
            Value::ServerError(err) if command_denied(&err) => {
                route.fallback.no_size_check(&reply::classify_reply(&err).1);
                rest.push(key);
            }
            _ => rest.push(key),
        }
    }
    // The keys not read by value are DUMPed in the same pipeline as the others' reads: one round.
    if route.fallback.dump {
        reads.extend(rest.drain(..).map(|key| (key, "DUMP")));
    }
    if reads.is_empty() {
        return Batch { id, items: rest };
    }
    let ttl_cmd = deadlines.command();
    let sent = Sent::new(deadlines, reads.len());
    let answers = exchange::<2>(
        conn,
        reads.len(),
        |i| &reads[i].0,
        |pipe, i| {
            sent.stamp(i);
            let (key, read) = &reads[i];
            let k = key.as_bytes();
            let cmd = pipe.cmd(read);
            match *read {
                "LRANGE" => cmd.arg(k).arg(0).arg(MAX_BY_VALUE_ELEMENTS),
                "ZRANGE" => cmd.arg(k).arg(0).arg(MAX_BY_VALUE_ELEMENTS).arg("WITHSCORES"),
                "XINFO" => cmd.arg("STREAM").arg(k).arg("FULL").arg("COUNT").arg(MAX_BY_VALUE_ELEMENTS),
                _ => cmd.arg(k),
            };
            // Elements only copied into a RESTORE payload are taken from the reply's bytes.
            if by_value.restore.is_some() && plain(read).is_some() {
                cmd.raw();
            }
            pipe.cmd(ttl_cmd).arg(k);
        },
        Stage::Fetch,
        rep,
    );
    for (i, ((key, read), answer)) in reads.into_iter().zip(answers).enumerate() {
        let Some([value, ttl]) = answer else { continue };
        if read == "DUMP" {
            dumped(sorted, key, value, ttl, |t| sent.deadline(i, t), Some(route), ttl_cmd, rep);
            continue;
        }
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
            // In `--mode auto`: a list, set or hash goes on as a RESTORE payload made of its elements.
            (Value::BulkString(raw), Value::Int(ttl))
                if by_value.restore.is_some() && plain(read).is_some() =>
            {
                let version = by_value.restore.expect("checked");
                // A reply of another shape (`None`) goes the other way.
                let items = bulks(&raw);
                match items.as_deref().and_then(|items| restore_payload(read, items, version)) {
                    Some(payload) => sorted.fetched.push(Fetched {
                        key,
                        payload: Payload::Dump(payload),
                        expire_at_ms: sent.deadline(i, ttl),
                        lru: Lru::default(),
                    }),
                    None if items.is_some_and(|items| items.is_empty()) => sorted.gone(key),
                    None => rest.push(key),
                }
            }
            (Value::Array(items), Value::Int(ttl)) => match parts(read, items) {
                // No aggregate is empty (a stream may be): it was deleted between the two reads.
                Some(parts) if read != "XINFO" && parts.iter().map(Part::elements).sum::<usize>() == 0 => {
                    sorted.gone(key)
                }
                Some(parts) if parts.iter().all(|p| p.elements() <= MAX_BY_VALUE_ELEMENTS) => {
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
    Batch { id, items: rest }
}

/// The plain RDB type a by-value read's reply is made into, for a RESTORE payload.
fn plain(read: &str) -> Option<Plain> {
    match read {
        "LRANGE" => Some(Plain::List),
        "SMEMBERS" => Some(Plain::Set),
        "HGETALL" => Some(Plain::Hash),
        _ => None,
    }
}

/// The RESTORE payload of a list, set or hash from the elements of its by-value read (read from the
/// reply's bytes, [`bulks`]); `None` when there is none (the key was deleted between the two reads),
/// too many (it grew past one read), or an odd number for a hash.
fn restore_payload(read: &str, items: &[&[u8]], version: u16) -> Option<Vec<u8>> {
    let kind = plain(read)?;
    let count = if kind == Plain::Hash { items.len() / 2 } else { items.len() };
    if count == 0 || count > MAX_BY_VALUE_ELEMENTS || (kind == Plain::Hash && items.len() % 2 == 1) {
        return None;
    }
    Some(payload::payload(kind, count, items.iter().copied(), version))
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

/// A consumer's name and the IDs of its pending entries.
type Owned = (Vec<u8>, Vec<(u64, u64)>);

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
        // Each consumer's pending IDs, from the group's list.
        let mut owners: Vec<Owned> = Vec::new();
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
