//! Where batches go, behind one trait: a [`Sink`] writes a batch of fetched keys and says what became of
//! each. [`target::Target`] writes them to the target server (RESTORE, SET); [`dry_run::DryRun`] writes
//! nothing and says what would have happened. A new way of writing is one more file here. What every
//! writer shares (the policy, the pause after a batch, the `--limit` [`budget`], the ledger) is a
//! [`WriteContext`].

pub mod budget;
pub mod dry_run;
pub mod target;

use crate::account::Reporter;
use crate::config::OnConflict;
use crate::flow::{Fetched, Payload, Vanished};
use crate::key::Key;
use crate::redis::clock::Deadlines;
use crate::resume::Ledger;
use crate::throttle::Throttle;
use budget::Budget;

/// What became of the keys of a batch a sink was given. A key that failed is not counted here: the sink
/// reported it (a CSV row).
#[derive(Debug, Default)]
pub struct Written {
    /// Keys written.
    pub copied: u64,
    /// Keys the target already had (skip policy).
    pub skipped: u64,
    /// Keys whose deadline had passed.
    pub expired: u64,
    /// Keys gone from the source, deleted on the target (a follow).
    pub deleted: u64,
    /// Keys the target refused to RESTORE for reasons of its own that the type-aware copy can go around
    /// (an RDB version or format it cannot read, NOPERM, a renamed command), with the target's reply;
    /// only from a sink told it may hand keys on.
    pub refused: Vec<(Key, String)>,
}

/// Where a batch of fetched keys goes.
pub trait Sink: Send {
    /// Writes `items` and says what became of each; a key that failed is reported through `rep`.
    fn write(&mut self, items: Vec<Fetched>, rep: &Reporter) -> Written;
}

/// How keys are written: the conflict policy, what the target understands, and the dry run.
#[derive(Debug, Clone, Copy)]
pub struct WritePolicy {
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
    /// What becomes of a key found gone from the source when it is read.
    pub vanished: Vanished,
}

/// What every writer (the write stage's threads and the type-aware copier) shares.
pub struct WriteContext<'a> {
    /// How keys are written.
    pub policy: WritePolicy,
    /// The post-batch pause.
    pub throttle: &'a Throttle,
    /// `--limit`, when given.
    pub budget: Option<&'a Budget>,
    /// Where keys that reached a bucket are recorded, for `--checkpoint`.
    pub ledger: &'a Ledger,
}

/// How a key's deadline is sent.
#[derive(Debug, Clone, Copy)]
pub enum Ttl {
    /// No TTL.
    None,
    /// The absolute deadline (ABSTTL, PXAT).
    At(i64),
    /// What is left of it on the source's clock, for a target without ABSTTL or PXAT.
    Left(i64),
}

impl WritePolicy {
    /// How `f`'s deadline is sent; `None` when it has to go as a relative TTL (a target without ABSTTL
    /// or PXAT) and has passed on the source's clock: such a key is expired and is not sent.
    pub fn ttl(&self, f: &Fetched) -> Option<Ttl> {
        let relative = match f.payload {
            Payload::Dump(_) => !self.abs_ttl,
            Payload::String(_) => !self.pxat,
            // PEXPIREAT, which every target has.
            Payload::Built { .. } => false,
            Payload::Gone => return Some(Ttl::None),
        };
        match f.expire_at_ms {
            None => Some(Ttl::None),
            Some(at) if !relative => Some(Ttl::At(at)),
            Some(at) => self.deadlines.left(at).map(Ttl::Left),
        }
    }
}
