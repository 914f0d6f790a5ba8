//! Stage 3: read each key's DUMP payload and its absolute expiry from the source, one pipeline per
//! batch (DUMP + PEXPIRETIME on Redis 7.0+, DUMP + PTTL before that).
//!
//! A key that vanished (DUMP nil, or expiry -2) is counted as expired here; an error reply (NOPERM,
//! ...) makes the key a failure at stage `fetch`. Several fetch threads run side by side, each with its
//! own source connection. Only reads are sent, so a broken batch is simply sent again after a reconnect.

use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use redis::Value;

use crate::conn::{self, Conn};
use crate::key::Key;
use crate::report::{Counters, Reporter, Stage};
use crate::stage::{exchange, forward, new_pipe, Fetched};

/// Current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Runs one fetch thread until its input is drained. `pexpiretime`: the source has PEXPIRETIME.
pub fn run(
    mut conn: Conn,
    pexpiretime: bool,
    rx: Receiver<Vec<Key>>,
    out: Sender<Vec<Fetched>>,
    rep: Reporter,
) {
    let ttl_cmd = if pexpiretime { "PEXPIRETIME" } else { "PTTL" };
    let mut pipe = new_pipe();
    for batch in rx {
        if rep.stop.discard() {
            rep.unreached(batch.len());
            continue;
        }
        pipe.clear();
        for key in &batch {
            pipe.cmd("DUMP").arg(key.as_bytes()).cmd(ttl_cmd).arg(key.as_bytes());
        }
        let sent_at = now_ms();
        let Some(replies) = exchange(&mut conn, &pipe, true, &batch, Stage::Fetch, &rep) else {
            continue;
        };
        let mut fetched = Vec::with_capacity(batch.len());
        let mut expired = 0;
        let mut replies = replies.into_iter();
        for key in batch {
            let (dump, ttl) = (replies.next(), replies.next());
            match (dump, ttl) {
                (Some(Value::ServerError(err)), _) | (_, Some(Value::ServerError(err))) => {
                    let (code, message) = conn::classify_reply(&err);
                    rep.fail(key, Stage::Fetch, code, message);
                }
                (Some(Value::Nil), _) | (_, Some(Value::Int(-2))) => expired += 1,
                (Some(Value::BulkString(payload)), Some(Value::Int(ttl))) => {
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
                    format!("unexpected DUMP/{ttl_cmd} replies {dump:?} / {ttl:?}"),
                ),
            }
        }
        Counters::add(&rep.counters.expired, expired);
        forward(&out, fetched, &rep);
    }
}
