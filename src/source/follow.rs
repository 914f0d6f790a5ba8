//! The keys of a follow: the dirty set's keys, batch by batch, for as long as the follow lasts.
//!
//! Each batch taken from the [`Dirty`] set is sent on like a scan's, and its keys stay in flight there
//! until the ledger says the batch was answered (every key reached a bucket): only then may an event
//! that named one of them again have it read again, so a key is never in flight twice and the later read
//! is always the later write. The source ends when the run stops, when the follow is over (the cutover),
//! or when a re-scan is due; the follow then drains what is in flight, as every pass does.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{Batcher, Source, SourceError};
use crate::follow::dirty::Dirty;
use crate::key::Key;
use crate::resume::{Ledger, Position};

/// How long the source waits for a dirty key before it looks at its batches in flight again.
const IDLE: Duration = Duration::from_millis(20);

/// The dirty keys, as a source.
pub struct FollowKeys<'a> {
    /// Where the keys wait.
    pub dirty: &'a Dirty,
    /// The ledger of the pass, to learn which batches were answered.
    pub ledger: &'a Ledger,
    /// Keys per batch.
    pub batch: usize,
    /// Raised when the follow is over (after a cutover): the source returns.
    pub over: &'a AtomicBool,
}

impl Source for FollowKeys<'_> {
    fn feed(self: Box<Self>, _start: &[Option<Position>], batcher: &mut Batcher) -> Result<(), SourceError> {
        let mut sent: VecDeque<(u64, Vec<Key>)> = VecDeque::new();
        let release = |sent: &mut VecDeque<(u64, Vec<Key>)>| {
            sent.retain(|(id, keys)| {
                let open = self.ledger.is_open(*id);
                if !open {
                    self.dirty.release(keys);
                }
                open
            });
        };
        loop {
            release(&mut sent);
            let stopping = batcher.rep.stop.stop_scanning() || self.over.load(Ordering::SeqCst);
            if stopping || self.dirty.rescan_due().is_some() {
                break;
            }
            let keys = self.dirty.take(self.batch, IDLE);
            if keys.is_empty() {
                continue;
            }
            let before = batcher.last_sent();
            let mut pushed = true;
            for key in &keys {
                pushed = pushed && batcher.push(key.clone());
            }
            pushed = pushed && batcher.flush();
            match batcher.last_sent() {
                Some(id) if pushed && batcher.last_sent() != before => sent.push_back((id, keys)),
                // Stopped before the batch went on: its keys were not read, they wait again.
                _ => {
                    self.dirty.give_back(keys);
                    if !pushed {
                        break;
                    }
                }
            }
        }
        // What is still in flight is answered while the pass drains; the follow releases it once the
        // pass is over (`Dirty::release_all`).
        Ok(())
    }
}
