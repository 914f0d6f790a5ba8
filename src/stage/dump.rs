//! One key's DUMP and deadline replies, sorted: read (a payload to RESTORE), for the typed threads (a
//! refused DUMP, a payload above `--big-key-bytes`), gone, or failed. Shared by the fetch stage's DUMP
//! round (`fetch.rs`) and the by-value round (`by_value.rs`), whose pipeline carries the DUMPs of the
//! keys it does not read by value.

use redis::Value;

use crate::account::{Reporter, Stage};
use crate::flow::{Fetched, Lru, Payload};
use crate::key::Key;
use crate::redis::reply::{self, dump_refused, kind};
use crate::stage::route::{Detour, Router};

/// What one key's DUMP and deadline replies make of it.
pub(super) enum Dumped {
    /// Read: ready to be written.
    Fetched(Fetched),
    /// For the typed threads: the source will not DUMP it, or its payload is above `--big-key-bytes`.
    Routed(Key),
    /// Gone from the source (DUMP nil, or no deadline to read).
    Gone(Key),
    /// Failed, and reported.
    Failed,
}

/// Sorts one key by its DUMP and deadline (`ttl_cmd`) replies; `deadline` makes the deadline reply
/// absolute. `route`: `--mode auto`'s way to the typed threads, for a refused DUMP or a payload above
/// `--big-key-bytes`; without it such a key is a failure.
pub(super) fn dumped(
    key: Key,
    dump: Value,
    ttl: Value,
    deadline: impl FnOnce(i64) -> Option<i64>,
    route: Option<&Router>,
    ttl_cmd: &str,
    rep: &Reporter,
) -> Dumped {
    match (dump, ttl) {
        (Value::ServerError(err), _) if route.is_some() && dump_refused(&err) => {
            let (_, message) = reply::classify_reply(&err);
            route.expect("checked").fallback.note(Detour::DumpRefused, &key, &message);
            Dumped::Routed(key)
        }
        (Value::ServerError(err), _) | (_, Value::ServerError(err)) => {
            let (code, message) = reply::classify_reply(&err);
            rep.fail(key, Stage::Fetch, code, message);
            Dumped::Failed
        }
        (Value::Nil, _) | (_, Value::Int(-2)) => Dumped::Gone(key),
        (Value::BulkString(payload), Value::Int(_))
            if route.is_some_and(|r| payload.len() as u64 > r.fallback.big_key_bytes) =>
        {
            let detail = format!("DUMP payload of {} bytes", payload.len());
            route.expect("checked").fallback.note(Detour::Big, &key, &detail);
            Dumped::Routed(key)
        }
        (Value::BulkString(payload), Value::Int(ttl)) => Dumped::Fetched(Fetched {
            key,
            payload: Payload::Dump(payload),
            expire_at_ms: deadline(ttl),
            lru: Lru::default(),
        }),
        (dump, ttl) => {
            let detail = format!("unexpected DUMP/{ttl_cmd} replies: {} / {}", kind(&dump), kind(&ttl));
            rep.fail(key, Stage::Fetch, "PROTOCOL".into(), detail);
            Dumped::Failed
        }
    }
}
