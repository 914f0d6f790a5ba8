//! Stage 4: hand the fetched keys to the sink (the target server, or the dry run's), batch by batch, on
//! several writer threads; `--sleep-after-batch` pauses here (the `--rate` bucket meters keys earlier,
//! in the source, so that skipped keys count too). `--limit` is enforced by a budget shared by the
//! writers, so exactly N keys are copied and the rest are given back as unreached.
//!
//! In `--mode auto` (with a [`Router`]) a RESTORE the target refuses for good reasons of its own is not
//! a failure: the key goes to the typed threads, after the writer has settled its `--limit` reservation
//! (a typed thread may be waiting for it) and without closing the key in the ledger.

use crossbeam_channel::Receiver;

use crate::account::{Counters, Reporter, StopReason};
use crate::flow::{Batch, Fetched};
use crate::sink::{Sink, WriteContext, Written};
use crate::stage::route::{Detour, Router};

/// Runs one writer thread until its input is drained. `route`: `--mode auto`'s way to the typed threads.
pub fn run(
    mut sink: Box<dyn Sink>,
    rx: Receiver<Batch<Fetched>>,
    ctx: &WriteContext,
    rep: Reporter,
    route: Option<Router>,
) {
    for Batch { id, mut items } in rx {
        while !items.is_empty() {
            if rep.stop.discard() {
                rep.unreached(items.len());
                break;
            }
            let take = match ctx.budget {
                Some(budget) => budget.reserve(items.len()),
                None => items.len(),
            };
            if take == 0 {
                rep.stop.request(StopReason::Limit);
                rep.unreached(items.len());
                break;
            }
            let rest = items.split_off(take);
            let n = items.len();
            let Written { copied, skipped, expired, deleted, refused } = sink.write(items, &rep);
            let counters = rep.counters;
            Counters::add(&counters.deleted, deleted);
            Counters::add(&counters.copied, copied);
            Counters::add(&counters.skipped, skipped);
            Counters::add(&counters.expired, expired);
            ctx.ledger.done(id, n - refused.len());
            ctx.throttle.after_batch(rep.stop);
            if let Some(budget) = ctx.budget {
                budget.settle(take, copied);
            }
            if let Some(route) = &route {
                let keys = refused
                    .into_iter()
                    .map(|(key, why)| {
                        route.fallback.note(Detour::RestoreRefused, &key, &why);
                        key
                    })
                    .collect();
                route.send(id, keys, &rep);
            }
            items = rest;
        }
    }
}
