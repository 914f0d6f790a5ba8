//! The ledger: how far the copy has safely got, batch by batch, lane by lane.
//!
//! The ledger has one lane per scanner: a standalone source has one, a cluster source one per primary
//! (in the order of their addresses). The source numbers its batches and records, for each, its
//! lane and the [`Position`] (SCAN pass and the cursor of the page) of its first key. Every stage tells
//! the [`Ledger`] how many keys of a batch reached a bucket; a batch is closed when all of its keys
//! have. A lane's resume point is the position of its oldest batch still open, or, when none is, where
//! its scanner has got to, or nothing once it went through to the end. Restarting SCAN there re-reads
//! at most a part of one page twice (those keys are then skipped, or rewritten with `replace`) and
//! never misses a key. Keys dropped unprocessed after an abort keep their batch open, so they are
//! scanned again.
//!
//! The keys of a cluster's slots that changed hands during the scan are read again afterwards
//! (`CLUSTER GETKEYSINSLOT`); that reread has no cursor to resume. Its batches are in a lane of their
//! own, [`REREAD`], and from the moment a reread is needed until it is over and its batches are closed,
//! every lane's resume point is the beginning: a run resumed then starts the scan over (keys copied
//! already are skipped), never claiming more than is true.
//!
//! The `--checkpoint` file that keeps the resume points across runs is `checkpoint.rs`'s.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The lane of the batches of keys read again because their slot changed hands during a cluster scan:
/// they have no position to resume from (see the module doc).
pub const REREAD: usize = usize::MAX;

/// A place in the scan: which pass (type x pattern, in order) and the SCAN cursor to send next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Index of the pass: `type_index * patterns + pattern_index`.
    pub pass: usize,
    /// The cursor to send (0 starts the pass).
    pub cursor: u64,
}

/// Which batches are still in flight, and where each scanner (lane) is.
#[derive(Debug)]
pub struct Ledger {
    /// Guarded state; touched once per batch per stage.
    state: Mutex<LedgerState>,
}

#[derive(Debug)]
struct LedgerState {
    /// Id of the next batch (over all lanes).
    next_id: u64,
    /// Open batches by id, so the first of a lane is its oldest.
    open: BTreeMap<u64, OpenBatch>,
    /// One per scanner.
    lanes: Vec<Lane>,
    /// Slots moved during a cluster scan and their keys are being read again: until the scan
    /// finishes, a resumed run must start over.
    rereading: bool,
}

/// A batch some of whose keys have not reached a bucket yet.
#[derive(Debug)]
struct OpenBatch {
    /// Keys not yet in a bucket.
    left: usize,
    /// The lane it was opened in ([`REREAD`] for a reread).
    lane: usize,
    /// Where its first key was found.
    first: Position,
}

/// Where one scanner has got to.
#[derive(Debug)]
struct Lane {
    /// Every key of the lane before this position is in a batch already.
    scanned_to: Position,
    /// The lane's scan went through to the end.
    finished: bool,
}

impl Ledger {
    /// A ledger with one lane per entry of `starts`: the position the lane's scan starts at, or `None`
    /// for a lane that an earlier run took to its end.
    pub fn new(starts: &[Option<Position>]) -> Ledger {
        let lanes = starts
            .iter()
            .map(|s| Lane { scanned_to: s.unwrap_or_default(), finished: s.is_none() })
            .collect();
        Ledger {
            state: Mutex::new(LedgerState { next_id: 0, open: BTreeMap::new(), lanes, rereading: false }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LedgerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a batch of `len` keys in `lane` whose first key was found at `first`; returns its id.
    pub fn open(&self, lane: usize, len: usize, first: Position) -> u64 {
        let mut s = self.lock();
        let id = s.next_id;
        s.next_id += 1;
        if len > 0 {
            s.open.insert(id, OpenBatch { left: len, lane, first });
        }
        id
    }

    /// Whether some keys of batch `id` have not reached a bucket yet.
    pub fn is_open(&self, id: u64) -> bool {
        self.lock().open.contains_key(&id)
    }

    /// Records that `n` keys of batch `id` reached a bucket.
    pub fn done(&self, id: u64, n: usize) {
        if n == 0 {
            return;
        }
        let mut s = self.lock();
        if let Some(batch) = s.open.get_mut(&id) {
            batch.left = batch.left.saturating_sub(n);
            if batch.left == 0 {
                s.open.remove(&id);
            }
        }
    }

    /// The scanner of `lane` has put every key before `pos` into a batch.
    pub fn scanned_to(&self, lane: usize, pos: Position) {
        if let Some(lane) = self.lock().lanes.get_mut(lane) {
            lane.scanned_to = pos;
        }
    }

    /// The scanner of `lane` went through every pass to its end.
    pub fn finish_lane(&self, lane: usize) {
        if let Some(lane) = self.lock().lanes.get_mut(lane) {
            lane.finished = true;
        }
    }

    /// Slots of a cluster source changed hands during the scan and their keys are read again: until
    /// [`finish`](Ledger::finish), and while a batch of that reread is open, a resumed run starts over.
    pub fn reread(&self) {
        self.lock().rereading = true;
    }

    /// The whole scan went through to its end: every lane, and the reread of moved slots if any.
    pub fn finish(&self) {
        let mut s = self.lock();
        s.lanes.iter_mut().for_each(|lane| lane.finished = true);
        s.rereading = false;
    }

    /// Where a new run must start each lane so that no key is missed; `None` for a lane that is done.
    /// Every lane starts over while a reread is needed or in flight.
    pub fn resume_points(&self) -> Vec<Option<Position>> {
        let s = self.lock();
        if s.rereading || s.open.values().any(|b| b.lane == REREAD) {
            return vec![Some(Position::default()); s.lanes.len()];
        }
        let oldest = |lane: usize| s.open.values().find(|b| b.lane == lane).map(|b| b.first);
        s.lanes
            .iter()
            .enumerate()
            .map(|(i, lane)| match oldest(i) {
                Some(first) => Some(first),
                None if lane.finished => None,
                None => Some(lane.scanned_to),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: fn(usize, u64) -> Position = |pass, cursor| Position { pass, cursor };

    #[test]
    fn resume_point_is_the_oldest_open_batch() {
        let l = Ledger::new(&[Some(P(0, 0))]);
        let a = l.open(0, 3, P(0, 0));
        let b = l.open(0, 2, P(0, 40));
        l.scanned_to(0, P(0, 77));
        assert_eq!(l.resume_points(), [Some(P(0, 0))]);
        l.done(b, 2);
        assert_eq!(l.resume_points(), [Some(P(0, 0))]);
        l.done(a, 2);
        assert_eq!(l.resume_points(), [Some(P(0, 0))]);
        l.done(a, 1);
        assert_eq!(l.resume_points(), [Some(P(0, 77))]);
        l.finish();
        assert_eq!(l.resume_points(), [None]);
    }

    #[test]
    fn lanes_resume_each_from_their_own_oldest_batch() {
        // Lane 2 was done in an earlier run; lanes 0 and 1 start where that run left them.
        let l = Ledger::new(&[Some(P(0, 5)), Some(P(1, 0)), None]);
        assert_eq!(l.resume_points(), [Some(P(0, 5)), Some(P(1, 0)), None]);
        let a0 = l.open(0, 2, P(0, 5));
        let b1 = l.open(1, 4, P(1, 0));
        let c0 = l.open(0, 2, P(0, 9));
        l.scanned_to(0, P(0, 12));
        l.scanned_to(1, P(1, 30));
        assert_eq!(l.resume_points(), [Some(P(0, 5)), Some(P(1, 0)), None]);
        // A batch closed in one lane does not move another lane.
        l.done(b1, 4);
        assert_eq!(l.resume_points(), [Some(P(0, 5)), Some(P(1, 30)), None]);
        l.done(a0, 2);
        assert_eq!(l.resume_points(), [Some(P(0, 9)), Some(P(1, 30)), None]);
        // A finished lane is done once its last batch closes.
        l.finish_lane(0);
        assert_eq!(l.resume_points(), [Some(P(0, 9)), Some(P(1, 30)), None]);
        l.done(c0, 2);
        assert_eq!(l.resume_points(), [None, Some(P(1, 30)), None]);
        // Lanes out of range (a reread) are not positions.
        l.scanned_to(REREAD, P(9, 9));
        l.finish_lane(REREAD);
        assert_eq!(l.resume_points(), [None, Some(P(1, 30)), None]);
    }

    #[test]
    fn a_reread_starts_every_lane_over_until_its_batches_close() {
        let l = Ledger::new(&[Some(P(0, 0)), Some(P(0, 0))]);
        l.scanned_to(0, P(1, 0));
        l.finish_lane(0);
        l.finish_lane(1);
        assert_eq!(l.resume_points(), [None, None]);
        l.reread();
        assert_eq!(l.resume_points(), [Some(P(0, 0)), Some(P(0, 0))]);
        let r = l.open(REREAD, 3, P(0, 0));
        l.finish();
        // The scan is through, but the reread keys are not all in a bucket yet.
        assert_eq!(l.resume_points(), [Some(P(0, 0)), Some(P(0, 0))]);
        l.done(r, 3);
        assert_eq!(l.resume_points(), [None, None]);
    }
}
