//! Stage 2 (skip policy only): one pipelined EXISTS per key on the target, so keys the target already
//! has are counted as skipped before their values are read from the source.
//!
//! This is only a pre-filter that saves source reads: the write stage still RESTOREs without REPLACE,
//! so a key that appears on the target in between is never overwritten. With `--on-conflict replace`
//! this stage is not started at all.

use crossbeam_channel::{Receiver, Sender};
use redis::Value;

use crate::checkpoint::Ledger;
use crate::conn::{self, Conn};
use crate::key::Key;
use crate::report::{Counters, Reporter, Stage};
use crate::stage::{exchange, forward, Batch};

/// Runs the check stage until its input is drained.
pub fn run(
    mut conn: Conn,
    rx: Receiver<Batch<Key>>,
    out: Sender<Batch<Key>>,
    rep: Reporter,
    ledger: &Ledger,
) {
    for batch in rx {
        if rep.stop.discard() {
            rep.unreached(batch.len());
            continue;
        }
        let answers = exchange::<1>(
            &mut conn,
            batch.len(),
            |i| &batch[i],
            |pipe, i| {
                pipe.cmd("EXISTS").arg(batch[i].as_bytes());
            },
            Stage::Check,
            &rep,
        );
        let mut missing = Vec::with_capacity(batch.len());
        let mut skipped = 0;
        let (id, taken) = (batch.id, batch.len());
        for (key, answer) in batch.items.into_iter().zip(answers) {
            let Some([reply]) = answer else { continue };
            match reply {
                Value::Int(0) => missing.push(key),
                Value::Int(_) => skipped += 1,
                Value::ServerError(err) => {
                    let (code, message) = conn::classify_reply(&err);
                    rep.fail(key, Stage::Check, code, message);
                }
                other => rep.fail(
                    key,
                    Stage::Check,
                    "PROTOCOL".into(),
                    format!("unexpected EXISTS reply {other:?}"),
                ),
            }
        }
        Counters::add(&rep.counters.skipped, skipped);
        forward(&out, id, taken, missing, &rep, ledger);
    }
}
