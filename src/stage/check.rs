//! Stage 2 (skip policy only): one pipelined EXISTS per key on the target, so keys the target already
//! has are counted as skipped before their values are read from the source.
//!
//! This is only a pre-filter that saves source reads: the write stage still RESTOREs without REPLACE,
//! so a key that appears on the target in between is never overwritten, and a key that exists but was
//! not filtered out still ends as skipped (BUSYKEY). So the filter may rest when it finds nothing: after
//! [`QUIET_BATCHES`] batches in a row without a single existing key (a copy into an empty target), it
//! checks only one batch in [`PROBE_EVERY`], and goes back to checking every batch at the first hit.
//! That spares the target one command per key where it would buy nothing. A dry run always checks,
//! since there no RESTORE tells what would be skipped. With `--on-conflict replace` this stage is not
//! started at all.

use crossbeam_channel::{Receiver, Sender};
use redis::Value;

use crate::account::{Counters, Reporter, Stage};
use crate::flow::{exchange, forward, Batch};
use crate::key::Key;
use crate::redis::conn::Conn;
use crate::redis::reply;
use crate::resume::Ledger;

/// Batches in a row without an existing key after which the filter rests.
pub const QUIET_BATCHES: u32 = 8;
/// While it rests, the filter still checks one batch in this many, to notice existing keys again.
pub const PROBE_EVERY: u64 = 16;

/// Whether the pre-filter has been finding anything lately.
#[derive(Debug, Default)]
struct Usefulness {
    /// Batches checked in a row that held no existing key.
    quiet: u32,
    /// Batches passed while resting.
    rested: u64,
}

impl Usefulness {
    /// Whether to check the next batch.
    fn check_next(&mut self) -> bool {
        if self.quiet < QUIET_BATCHES {
            return true;
        }
        self.rested += 1;
        self.rested.is_multiple_of(PROBE_EVERY)
    }

    /// Records what a checked batch found.
    fn found(&mut self, existing: u64) {
        self.quiet = if existing == 0 { self.quiet.saturating_add(1) } else { 0 };
    }
}

/// Runs the check stage until its input is drained. `always`: check every batch (dry run).
pub fn run(
    mut conn: Conn,
    rx: Receiver<Batch<Key>>,
    out: Sender<Batch<Key>>,
    rep: Reporter,
    ledger: &Ledger,
    always: bool,
) {
    let mut usefulness = Usefulness::default();
    for batch in rx {
        if rep.stop.discard() {
            rep.unreached(batch.len());
            continue;
        }
        if !always && !usefulness.check_next() {
            let (id, taken) = (batch.id, batch.len());
            forward(&out, id, taken, batch.items, &rep, ledger);
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
                    let (code, message) = reply::classify_reply(&err);
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
        usefulness.found(skipped);
        forward(&out, id, taken, missing, &rep, ledger);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_rests_after_quiet_batches_and_wakes_at_a_hit() {
        let mut u = Usefulness::default();
        for _ in 0..QUIET_BATCHES {
            assert!(u.check_next());
            u.found(0);
        }
        let checked = (0..PROBE_EVERY * 4).filter(|_| u.check_next()).count();
        assert_eq!(checked, 4);
        u.found(3);
        assert!(u.check_next() && u.check_next());
    }
}
