//! Where the keys of a batch go on their way through the fetch stage ([`Triage`]: read, for the typed
//! threads, or gone), and one key sorted there by its DUMP and deadline replies ([`dumped`]). Shared by the
//! fetch stage's own rounds (`fetch.rs`) and the by-value round (`by_value.rs`), whose pipeline carries the
//! DUMPs of the keys it does not read by value.

use redis::Value;

use crate::account::{Reporter, Stage};
use crate::flow::{Fetched, Lru, Payload, Vanished};
use crate::key::Key;
use crate::redis::reply::{self, dump_refused, kind};
use crate::stage::route::{Detour, Router};

/// Where the keys of a batch went in the fetch stage: read, for the typed threads, or gone.
pub(super) struct Triage {
    /// Keys read, ready to be written (and, in a follow, keys gone, to be deleted).
    pub fetched: Vec<Fetched>,
    /// Keys for the typed threads.
    pub routed: Vec<Key>,
    /// Keys found gone, counted as expired.
    pub expired: u64,
    /// What becomes of a key found gone.
    vanished: Vanished,
}

impl Triage {
    pub fn new(n: usize, vanished: Vanished) -> Triage {
        Triage { fetched: Vec::with_capacity(n), routed: Vec::new(), expired: 0, vanished }
    }

    /// A key found gone from the source: expired, or (a follow) to be deleted on the target.
    pub fn gone(&mut self, key: Key) {
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

/// Sorts one key into `sorted` by its DUMP and deadline (`ttl_cmd`) replies: read, for the typed threads
/// (the source will not DUMP it, or its payload is above `--big-key-bytes`), gone (DUMP nil, or no deadline
/// to read), or failed and reported. `deadline` makes the deadline reply absolute. `route`: `--mode auto`'s
/// way to the typed threads; without it a refused DUMP is a failure.
#[allow(clippy::too_many_arguments)]
pub(super) fn dumped(
    sorted: &mut Triage,
    key: Key,
    dump: Value,
    ttl: Value,
    deadline: impl FnOnce(i64) -> Option<i64>,
    route: Option<&Router>,
    ttl_cmd: &str,
    rep: &Reporter,
) {
    match (dump, ttl) {
        (Value::ServerError(err), _) if route.is_some() && dump_refused(&err) => {
            let (_, message) = reply::classify_reply(&err);
            route.expect("checked").fallback.note(Detour::DumpRefused, &key, &message);
            sorted.routed.push(key);
        }
        (Value::ServerError(err), _) | (_, Value::ServerError(err)) => {
            let (code, message) = reply::classify_reply(&err);
            rep.fail(key, Stage::Fetch, code, message);
        }
        (Value::Nil, _) | (_, Value::Int(-2)) => sorted.gone(key),
        (Value::BulkString(payload), Value::Int(_))
            if route.is_some_and(|r| payload.len() as u64 > r.fallback.big_key_bytes) =>
        {
            let detail = format!("DUMP payload of {} bytes", payload.len());
            route.expect("checked").fallback.note(Detour::Big, &key, &detail);
            sorted.routed.push(key);
        }
        (Value::BulkString(payload), Value::Int(ttl)) => sorted.fetched.push(Fetched {
            key,
            payload: Payload::Dump(payload),
            expire_at_ms: deadline(ttl),
            lru: Lru::default(),
        }),
        (dump, ttl) => {
            let detail = format!("unexpected DUMP/{ttl_cmd} replies: {} / {}", kind(&dump), kind(&ttl));
            rep.fail(key, Stage::Fetch, "PROTOCOL".into(), detail);
        }
    }
}
