//! Comparing a key between two servers, type-aware: its type, its value in a canonical form (sets and
//! hashes sorted, a stream with its groups and pending entries) and its deadline within
//! [`TTL_AHEAD_MS`] / [`TTL_BEHIND_MS`]; and the helpers around that comparison: a server's DEBUG
//! DIGEST (unchanged means nothing was written) and key sets shown readably in assertion messages.

use std::collections::{BTreeMap, BTreeSet};

use redis::{ConnectionLike, Value};

use super::{escape_key, pttl, q};

/// A copied key's deadline may sit this much later than the source's (clock read / rounding slack when the
/// binary computes the absolute deadline from PTTL + its own clock). Anything more means time spent in
/// flight was added to the TTL.
pub const TTL_AHEAD_MS: i64 = 100;
/// How much earlier the target's deadline may look than the source's: covers the time between our two
/// PTTL reads on a loaded machine.
pub const TTL_BEHIND_MS: i64 = 1500;

/// Compares one key between source and target: type, value (type-aware), and TTL (the target's deadline
/// may not be later than the source's by more than TTL_AHEAD_MS, nor earlier by more than
/// TTL_BEHIND_MS; no TTL on the source means none on the target). Returns a description of the first
/// difference found.
pub fn diff_key(src: &mut impl ConnectionLike, dst: &mut impl ConnectionLike, key: &[u8]) -> Option<String> {
    // Source first, target second: with equal deadlines the target's PTTL can only be smaller.
    let sp = pttl(src, key);
    let tp = pttl(dst, key);
    let name = escape_key(key);
    if sp == -2 {
        return Some(format!("{name}: missing on the source"));
    }
    if tp == -2 {
        return Some(format!("{name}: missing on the target"));
    }
    if sp == -1 && tp != -1 {
        return Some(format!("{name}: no TTL on source but PTTL {tp} on target"));
    }
    if sp >= 0 {
        if tp < 0 {
            return Some(format!("{name}: PTTL {sp} on source but none on target"));
        }
        if tp > sp + TTL_AHEAD_MS {
            return Some(format!(
                "{name}: target deadline later than source's (PTTL source {sp}, target {tp}): time in flight added?"
            ));
        }
        if tp < sp - TTL_BEHIND_MS {
            return Some(format!("{name}: PTTL source {sp}, target {tp}"));
        }
    }
    let st: String = q(src, &[b"TYPE", key]);
    let tt: String = q(dst, &[b"TYPE", key]);
    if st != tt {
        return Some(format!("{name}: type {st} on source, {tt} on target"));
    }
    let (a, b) = (value_of(src, key, &st), value_of(dst, key, &st));
    if let (Value::BulkString(x), Value::BulkString(y)) = (&a, &b) {
        if x != y {
            let at = x.iter().zip(y.iter()).position(|(p, q)| p != q).unwrap_or(x.len().min(y.len()));
            return Some(format!(
                "{name} ({st}): {} bytes on source, {} on target, first difference at byte {at}",
                x.len(),
                y.len()
            ));
        }
    }
    if a != b {
        let show = |v: &Value| {
            let s = format!("{v:?}");
            if s.len() > 300 {
                format!("{}...", &s[..300])
            } else {
                s
            }
        };
        return Some(format!("{name} ({st}): source {} != target {}", show(&a), show(&b)));
    }
    None
}

/// A canonical, comparable form of a key's value for its type.
pub fn value_of(con: &mut impl ConnectionLike, key: &[u8], ty: &str) -> Value {
    let sorted = |v: Vec<Vec<u8>>| {
        let mut v = v;
        v.sort();
        Value::Array(v.into_iter().map(Value::BulkString).collect())
    };
    match ty {
        "string" => q(con, &[b"GET", key]),
        "list" => q(con, &[b"LRANGE", key, b"0", b"-1"]),
        "set" => sorted(q(con, &[b"SMEMBERS", key])),
        // Scores compared as Redis prints them (e.g. "1.5", "inf", "-inf").
        "zset" => q(con, &[b"ZRANGE", key, b"0", b"-1", b"WITHSCORES"]),
        "hash" => {
            let flat: Vec<Vec<u8>> = q(con, &[b"HGETALL", key]);
            let mut pairs: Vec<(Vec<u8>, Vec<u8>)> =
                flat.chunks(2).map(|c| (c[0].clone(), c[1].clone())).collect();
            pairs.sort();
            Value::Array(
                pairs.into_iter().flat_map(|(f, v)| [Value::BulkString(f), Value::BulkString(v)]).collect(),
            )
        }
        "stream" => stream_value(con, key),
        other => panic!("unexpected type {other} for {}", escape_key(key)),
    }
}

/// XRANGE, then per group (sorted by name): name, pending, last-delivered-id and the XPENDING summary.
fn stream_value(con: &mut impl ConnectionLike, key: &[u8]) -> Value {
    let entries: Value = q(con, &[b"XRANGE", key, b"-", b"+"]);
    let groups: Vec<Value> = q(con, &[b"XINFO", b"GROUPS", key]);
    let mut per_group: Vec<(Vec<u8>, Value)> = Vec::new();
    for g in groups {
        let fields = field_map(&g);
        let get = |name: &str| {
            fields.get(name).cloned().unwrap_or_else(|| panic!("XINFO GROUPS without {name}: {g:?}"))
        };
        let name = match get("name") {
            Value::BulkString(b) => b,
            Value::SimpleString(s) => s.into_bytes(),
            v => panic!("group name {v:?}"),
        };
        let pending_summary: Value = q(con, &[b"XPENDING", key, &name]);
        per_group.push((
            name.clone(),
            Value::Array(vec![
                Value::BulkString(name),
                get("pending"),
                get("last-delivered-id"),
                pending_summary,
            ]),
        ));
    }
    per_group.sort_by(|a, b| a.0.cmp(&b.0));
    Value::Array(vec![entries, Value::Array(per_group.into_iter().map(|(_, v)| v).collect())])
}

/// A RESP2 flat `[k, v, k, v]` array or a RESP3 map (XINFO fields) as a name -> value map.
pub fn field_map(v: &Value) -> BTreeMap<String, Value> {
    let key = |k: &Value| match k {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        other => format!("{other:?}"),
    };
    match v {
        Value::Array(items) => items.chunks(2).map(|c| (key(&c[0]), c[1].clone())).collect(),
        Value::Map(items) => items.iter().map(|(k, v)| (key(k), v.clone())).collect(),
        other => panic!("expected an array or map, got {other:?}"),
    }
}

/// Asserts that every key in `keys` agrees between the two servers; lists every difference.
#[track_caller]
pub fn assert_same(src: &mut impl ConnectionLike, dst: &mut impl ConnectionLike, keys: &[Vec<u8>]) {
    let diffs: Vec<String> = keys.iter().filter_map(|k| diff_key(src, dst, k)).collect();
    assert!(diffs.is_empty(), "{} key(s) differ:\n{}", diffs.len(), diffs.join("\n"));
}

/// The set of keys as readable strings, for assertion messages.
pub fn show_keys<'a>(keys: impl IntoIterator<Item = &'a Vec<u8>>) -> Vec<String> {
    keys.into_iter().map(|k| escape_key(k)).collect()
}

/// The keys as a set, to compare with what a server holds.
pub fn set_of(keys: &[Vec<u8>]) -> BTreeSet<Vec<u8>> {
    keys.iter().cloned().collect()
}

/// DEBUG DIGEST of the current db: unchanged means nothing was written.
pub fn digest(con: &mut impl ConnectionLike) -> String {
    q(con, &[b"DEBUG", b"DIGEST"])
}
