//! Stage 4: RESTORE the fetched keys on the target, one pipeline per batch, several writer threads,
//! each with its own target connection; `--sleep-after-batch` pauses here (the `--rate` bucket meters
//! keys earlier, in the scan stage, so that skipped keys count too).
//!
//! Each key keeps its deadline: `RESTORE key <abs-ms> payload ABSTTL` (or ttl 0 for a key without
//! expiry), `SET key value PXAT <abs-ms>`, so time in flight is not added. The target's clock decides
//! whether that deadline has passed, as Redis does (it creates nothing for a past ABSTTL or PXAT): an
//! `EXISTS key` right after the write, in the same pipeline, tells whether the key is there, and a key
//! with a deadline that is not there is counted as expired. This machine's clock decides nothing (see
//! `clock.rs`). Skip policy: no REPLACE, and a BUSYKEY reply counts as skipped, which is atomic on the
//! server. `--limit` is enforced by a budget
//! shared by the writers, so exactly N keys are copied and the rest are given back as unreached.
//! In a dry run nothing is sent: every key that would be restored is counted as copied.
//!
//! In `--mode auto` (with a [`Router`]) a RESTORE the target refuses for good reasons of its own (an
//! RDB version or format it cannot read, NOPERM, a renamed or disabled command) is not a failure: the
//! key goes to the typed threads, after the writer has settled its `--limit` reservation (a typed thread
//! may be waiting for it) and without closing the key in the ledger.

use std::sync::{Condvar, Mutex};

use crossbeam_channel::Receiver;
use redis::Value;

use crate::checkpoint::Ledger;
use crate::clock::Deadlines;
use crate::config::OnConflict;
use crate::conn::{self, Conn};
use crate::key::Key;
use crate::report::{Counters, Reporter, Stage, StopReason};
use crate::stage::typed::{self, Router, Why};
use crate::stage::{exchange_units, kind, Batch, Fetched, Payload};
use crate::throttle::Throttle;

/// What every writer thread shares.
pub struct WriteShared<'a> {
    /// Skip or replace.
    pub on_conflict: OnConflict,
    /// The target understands RESTORE ... ABSTTL (Redis 5.0+).
    pub abs_ttl: bool,
    /// The target understands SET ... PXAT (Redis 6.2+).
    pub pxat: bool,
    /// The source's clock, for what is left of a deadline on a target without ABSTTL or PXAT.
    pub deadlines: Deadlines,
    /// Count, but send nothing.
    pub dry_run: bool,
    /// The post-batch pause.
    pub throttle: &'a Throttle,
    /// `--limit`, when given.
    pub budget: Option<&'a CopyBudget>,
    /// Where keys that reached a bucket are recorded, for `--checkpoint`.
    pub ledger: &'a Ledger,
}

/// The number of keys still allowed to be copied under `--limit`, shared by the writers. A writer
/// reserves slots before a write and gives back those that did not end up copied; a writer that
/// finds nothing left waits while others hold reservations, since those may come back.
pub struct CopyBudget {
    /// (slots left, slots reserved by writers in flight).
    state: Mutex<(u64, u64)>,
    /// Signalled when reservations are settled.
    settled: Condvar,
}

impl CopyBudget {
    /// A budget of `limit` copies.
    pub fn new(limit: u64) -> CopyBudget {
        CopyBudget { state: Mutex::new((limit, 0)), settled: Condvar::new() }
    }

    /// Reserves up to `want` slots; 0 means the limit is reached for good.
    pub fn reserve(&self, want: usize) -> usize {
        let mut state = self.state.lock().expect("budget lock");
        loop {
            let (left, held) = *state;
            if left > 0 {
                let n = left.min(want as u64);
                *state = (left - n, held + n);
                return n as usize;
            }
            if held == 0 {
                return 0;
            }
            state = self.settled.wait(state).expect("budget lock");
        }
    }

    /// Settles a reservation of `reserved` slots of which `used` were copied.
    pub fn settle(&self, reserved: usize, used: u64) {
        let mut state = self.state.lock().expect("budget lock");
        state.0 += reserved as u64 - used;
        state.1 -= reserved as u64;
        self.settled.notify_all();
    }
}

/// Runs one writer thread until its input is drained. `route`: `--mode auto`'s way to the typed threads.
pub fn run(
    mut conn: Conn,
    rx: Receiver<Batch<Fetched>>,
    shared: &WriteShared,
    rep: Reporter,
    route: Option<Router>,
) {
    for Batch { id, mut items } in rx {
        while !items.is_empty() {
            if rep.stop.discard() {
                rep.unreached(items.len());
                break;
            }
            let take = match shared.budget {
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
            let (copied, routed) = write_batch(&mut conn, items, shared, &rep, route.as_ref());
            shared.ledger.done(id, n - routed.len());
            shared.throttle.after_batch(rep.stop);
            if let Some(budget) = shared.budget {
                budget.settle(take, copied);
            }
            if let Some(route) = &route {
                route.send(id, routed, &rep);
            }
            items = rest;
        }
    }
}

/// How a key's deadline is sent.
enum Ttl {
    /// No TTL.
    None,
    /// The absolute deadline (ABSTTL, PXAT).
    At(i64),
    /// What is left of it on the source's clock, for a target without ABSTTL or PXAT.
    Left(i64),
}

/// Writes one batch and accounts for every key of it but those it returns for the typed threads;
/// returns how many were copied, and those keys.
fn write_batch(
    conn: &mut Conn,
    items: Vec<Fetched>,
    shared: &WriteShared,
    rep: &Reporter,
    route: Option<&Router>,
) -> (u64, Vec<Key>) {
    let (mut copied, mut skipped, mut expired) = (0u64, 0u64, 0u64);
    let mut routed = Vec::new();
    // A deadline sent as a relative TTL (a target without ABSTTL or PXAT) is what is left of it on the
    // source's clock, taken now; a key whose deadline has passed there is not sent.
    let relative = |f: &Fetched| match f.payload {
        Payload::Dump(_) => !shared.abs_ttl,
        Payload::String(_) => !shared.pxat,
    };
    let mut live: Vec<(Fetched, Ttl)> = Vec::with_capacity(items.len());
    for f in items {
        let ttl = match f.expire_at_ms {
            None => Ttl::None,
            Some(at) if !relative(&f) => Ttl::At(at),
            Some(at) => match shared.deadlines.left(at) {
                Some(left) => Ttl::Left(left),
                None => {
                    expired += 1;
                    continue;
                }
            },
        };
        live.push((f, ttl));
    }
    if shared.dry_run {
        // The source still had every one of them when it was read.
        copied = live.len() as u64;
    } else if !live.is_empty() {
        let replace = shared.on_conflict == OnConflict::Replace;
        let answers = exchange_units(
            conn,
            live.len(),
            |i| &live[i].0.key,
            |pipe, i| {
                let (f, ttl) = &live[i];
                match &f.payload {
                    Payload::Dump(payload) => {
                        let cmd = pipe.cmd("RESTORE").arg(f.key.as_bytes());
                        match ttl {
                            Ttl::None => cmd.arg(0),
                            Ttl::At(ms) | Ttl::Left(ms) => cmd.arg(*ms),
                        };
                        cmd.arg(&payload[..]);
                        if replace {
                            cmd.arg("REPLACE");
                        }
                        if let Ttl::At(_) = ttl {
                            cmd.arg("ABSTTL");
                        }
                    }
                    // SET replaces a key of any type, as RESTORE REPLACE does; NX is the skip policy's
                    // atomic "only if absent", as RESTORE without REPLACE is.
                    Payload::String(value) => {
                        let cmd = pipe.cmd("SET").arg(f.key.as_bytes()).arg(&value[..]);
                        match ttl {
                            Ttl::None => {}
                            Ttl::At(ms) => {
                                cmd.arg("PXAT").arg(*ms);
                            }
                            Ttl::Left(ms) => {
                                cmd.arg("PX").arg(*ms);
                            }
                        }
                        if !replace {
                            cmd.arg("NX");
                        }
                    }
                }
                // Whether the target kept it: its clock says whether the deadline had passed.
                if f.expire_at_ms.is_some() {
                    pipe.cmd("EXISTS").arg(f.key.as_bytes());
                }
            },
            Stage::Write,
            rep,
        );
        for ((f, _), answer) in live.into_iter().zip(answers) {
            let Some(replies) = answer else { continue };
            let mut replies = replies.into_iter();
            let (reply, exists) = (replies.next().unwrap_or_default(), replies.next());
            match reply {
                // A key with a deadline that is not there: the target found the deadline passed (it
                // creates nothing for a past ABSTTL or PXAT), or it expired right after.
                Value::Okay | Value::SimpleString(_) if exists == Some(Value::Int(0)) => expired += 1,
                Value::Okay | Value::SimpleString(_) => copied += 1,
                // RESTORE's BUSYKEY, SET NX's nil: the key exists on the target.
                Value::ServerError(err) if err.code() == "BUSYKEY" => skipped += 1,
                Value::Nil if matches!(f.payload, Payload::String(_)) => skipped += 1,
                Value::ServerError(err)
                    if route.is_some()
                        && matches!(f.payload, Payload::Dump(_))
                        && typed::restore_refused(&err) =>
                {
                    let (_, message) = conn::classify_reply(&err);
                    route.expect("checked").fallback.note(Why::RestoreRefused, &f.key, &message);
                    routed.push(f.key);
                }
                Value::ServerError(err) => {
                    let (code, message) = conn::classify_reply(&err);
                    rep.fail(f.key, Stage::Write, code, message);
                }
                other => rep.fail(
                    f.key,
                    Stage::Write,
                    "PROTOCOL".into(),
                    format!("unexpected RESTORE or SET reply: {}", kind(&other)),
                ),
            }
        }
    }
    Counters::add(&rep.counters.copied, copied);
    Counters::add(&rep.counters.skipped, skipped);
    Counters::add(&rep.counters.expired, expired);
    (copied, routed)
}

#[cfg(test)]
mod tests {
    use super::CopyBudget;

    #[test]
    fn budget_gives_back_unused_slots() {
        let b = CopyBudget::new(5);
        assert_eq!(b.reserve(3), 3);
        assert_eq!(b.reserve(10), 2);
        b.settle(3, 1); // two of the three were skipped: their slots come back
        assert_eq!(b.reserve(10), 2);
        b.settle(2, 2);
        b.settle(2, 2);
        assert_eq!(b.reserve(1), 0);
    }
}
