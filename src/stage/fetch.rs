//! Stage 3: read each key's DUMP payload and its absolute expiry from the source, one pipeline per
//! batch (DUMP + PEXPIRETIME on Redis 7.0+, DUMP + PTTL before that).
//!
//! A key that vanished (DUMP nil, or expiry -2) is counted as expired here; an error reply (NOPERM,
//! ...) makes the key a failure at stage `fetch`. Several fetch threads run side by side, each with its
//! own source connection.

use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use redis::Value;

use crate::checkpoint::Ledger;
use crate::conn::{self, Conn};
use crate::key::Key;
use crate::report::{Counters, Reporter, Stage};
use crate::stage::{exchange, forward, kind, Batch, Fetched};

/// Current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Runs one fetch thread until its input is drained. `pexpiretime`: the source has PEXPIRETIME.
pub fn run(
    mut conn: Conn,
    pexpiretime: bool,
    rx: Receiver<Batch<Key>>,
    out: Sender<Batch<Fetched>>,
    rep: Reporter,
    ledger: &Ledger,
) {
    let ttl_cmd = if pexpiretime { "PEXPIRETIME" } else { "PTTL" };
    for batch in rx {
        if rep.stop.discard() {
            rep.unreached(batch.len());
            continue;
        }
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
        let mut expired = 0;
        let (id, taken) = (batch.id, batch.len());
        for (key, answer) in batch.items.into_iter().zip(answers) {
            let Some([dump, ttl]) = answer else { continue };
            match (dump, ttl) {
                (Value::ServerError(err), _) | (_, Value::ServerError(err)) => {
                    let (code, message) = conn::classify_reply(&err);
                    rep.fail(key, Stage::Fetch, code, message);
                }
                (Value::Nil, _) | (_, Value::Int(-2)) => expired += 1,
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
        forward(&out, id, taken, fetched, &rep, ledger);
    }
}
