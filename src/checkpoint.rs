//! Resuming: the ledger that knows how far the copy has safely got, and the `--checkpoint` file that
//! keeps it across runs.
//!
//! The scan stage numbers its batches and records, for each, the [`Position`] (SCAN pass and the cursor
//! of the page) of its first key. Every stage tells the [`Ledger`] how many keys of a batch reached a
//! bucket; a batch is closed when all of its keys have. The resume point is the position of the oldest
//! batch still open, or, when none is, where the scanner has got to. Restarting SCAN there re-reads at
//! most a part of one page twice (those keys are then skipped, or rewritten with `replace`) and never
//! misses a key. Keys dropped unprocessed after an abort keep their batch open, so they are scanned again.
//!
//! The checkpoint file (JSON, written atomically every few seconds and at exit) holds the resume point,
//! the cumulative counters, and the identity of the copy (source, target, filters, conflict policy);
//! a checkpoint made for another copy is refused. Cursors are opaque: a checkpoint is only valid for
//! the same source server (a restart or a resize may still make SCAN repeat keys, never lose them).

use std::collections::BTreeMap;
use std::fs;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde::{Deserialize, Serialize};

use crate::config::{CopyConfig, KeySource};
use crate::key::Key;
use crate::report::{self, Counters, Snapshot};

/// How often the checkpoint file is rewritten during a run.
pub const SAVE_EVERY: Duration = Duration::from_secs(2);

/// A place in the scan: which pass (type x pattern, in order) and the SCAN cursor to send next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Index of the pass: `type_index * patterns + pattern_index`.
    pub pass: usize,
    /// The cursor to send (0 starts the pass).
    pub cursor: u64,
}

/// Which batches are still in flight, and where the scanner is.
#[derive(Debug)]
pub struct Ledger {
    /// Guarded state; touched once per batch per stage.
    state: Mutex<LedgerState>,
}

#[derive(Debug)]
struct LedgerState {
    /// Id of the next batch.
    next_id: u64,
    /// Open batches: id -> (keys not yet in a bucket, position of the first key).
    open: BTreeMap<u64, (usize, Position)>,
    /// Every key before this position is in a batch already.
    scanned_to: Position,
    /// The scan went through to the end.
    finished: bool,
}

impl Ledger {
    /// A ledger for a scan starting at `start`.
    pub fn new(start: Position) -> Ledger {
        Ledger {
            state: Mutex::new(LedgerState {
                next_id: 0,
                open: BTreeMap::new(),
                scanned_to: start,
                finished: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LedgerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a batch of `len` keys whose first key was found at `first`; returns its id.
    pub fn open(&self, len: usize, first: Position) -> u64 {
        let mut s = self.lock();
        let id = s.next_id;
        s.next_id += 1;
        if len > 0 {
            s.open.insert(id, (len, first));
        }
        id
    }

    /// Records that `n` keys of batch `id` reached a bucket.
    pub fn done(&self, id: u64, n: usize) {
        if n == 0 {
            return;
        }
        let mut s = self.lock();
        if let Some(entry) = s.open.get_mut(&id) {
            entry.0 = entry.0.saturating_sub(n);
            if entry.0 == 0 {
                s.open.remove(&id);
            }
        }
    }

    /// The scanner has put every key before `pos` into a batch.
    pub fn scanned_to(&self, pos: Position) {
        self.lock().scanned_to = pos;
    }

    /// The scanner went through every pass to its end.
    pub fn finish(&self) {
        self.lock().finished = true;
    }

    /// Where a new run must start so that no key is missed; `None` once everything is done.
    pub fn resume_point(&self) -> Option<Position> {
        let s = self.lock();
        match s.open.values().next() {
            Some((_, first)) => Some(*first),
            None if s.finished => None,
            None => Some(s.scanned_to),
        }
    }
}

/// What makes two runs the same copy: a checkpoint only resumes the copy it was made for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Source `host:port/db` (no credentials).
    pub source: String,
    /// Target `host:port/db` (no credentials).
    pub target: String,
    /// `--match` patterns, escaped.
    pub patterns: Vec<String>,
    /// `--type` filters.
    pub types: Vec<String>,
    /// `--on-conflict`.
    pub on_conflict: String,
}

impl Identity {
    /// The identity of the copy `cfg` describes (SCAN mode only).
    pub fn of(cfg: &CopyConfig) -> Identity {
        let (patterns, types) = match &cfg.keys {
            KeySource::Scan { patterns, types, .. } => (
                patterns.iter().map(|p| Key(p.clone()).to_string()).collect(),
                types.iter().map(|t| t.name().to_string()).collect(),
            ),
            KeySource::File(_) => (Vec::new(), Vec::new()),
        };
        Identity {
            source: cfg.source.to_string(),
            target: cfg.target.to_string(),
            patterns,
            types,
            on_conflict: format!("{:?}", cfg.on_conflict).to_lowercase(),
        }
    }
}

/// The checkpoint file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Format version.
    pub version: u32,
    /// The copy this checkpoint belongs to.
    pub identity: Identity,
    /// Where to resume; `null` when the copy went through to the end.
    pub resume: Option<Position>,
    /// Counters over all runs of this copy so far.
    pub counts: Snapshot,
    /// When it was written (RFC 3339 UTC).
    pub saved_at: String,
}

const VERSION: u32 = 1;

/// What a run starts from: the resume position and the counters of the earlier runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Start {
    /// Where to start scanning.
    pub at: Position,
    /// Counters carried over from earlier runs.
    pub base: Snapshot,
}

/// Reads the checkpoint at `path` for the copy `identity`: a missing file, or one whose copy went
/// through to the end, starts afresh. A file for another copy, or one that cannot be read, is an error
/// for the user (exit 2).
pub fn load(path: &str, identity: &Identity) -> Result<Start, String> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Start::default()),
        Err(e) => return Err(format!("--checkpoint {path}: cannot read it ({e})")),
    };
    let cp: Checkpoint = serde_json::from_str(&text)
        .map_err(|e| format!("--checkpoint {path}: not a redis-ferry checkpoint ({e})"))?;
    if cp.version != VERSION {
        return Err(format!("--checkpoint {path}: format version {} is not {VERSION}", cp.version));
    }
    if &cp.identity != identity {
        return Err(format!(
            "--checkpoint {path} was made for another copy ({} -> {}, match {:?}, type {:?}, on-conflict {}); \
             delete it or name another file",
            cp.identity.source, cp.identity.target, cp.identity.patterns, cp.identity.types, cp.identity.on_conflict
        ));
    }
    match cp.resume {
        Some(at) => {
            log::info!(
                "resuming from --checkpoint {path} (saved {}): pass {} cursor {}; earlier runs: scanned={} copied={} skipped={} expired={} failed={}",
                cp.saved_at, at.pass, at.cursor, cp.counts.scanned, cp.counts.copied, cp.counts.skipped, cp.counts.expired, cp.counts.failed
            );
            Ok(Start { at, base: cp.counts })
        }
        None => {
            log::info!("--checkpoint {path}: the previous copy went through to the end; starting afresh");
            Ok(Start::default())
        }
    }
}

/// Writes a checkpoint atomically.
pub fn save(
    path: &str,
    identity: &Identity,
    resume: Option<Position>,
    counts: Snapshot,
) -> Result<(), String> {
    let cp = Checkpoint {
        version: VERSION,
        identity: identity.clone(),
        resume,
        counts,
        saved_at: report::rfc3339(SystemTime::now()),
    };
    let bytes = serde_json::to_vec_pretty(&cp).expect("a checkpoint always serialises");
    report::replace_file(path, &bytes).map_err(|e| format!("cannot write --checkpoint {path}: {e}"))
}

/// The checkpoint thread: saves every [`SAVE_EVERY`] until `done` is disconnected, then once more.
pub fn keep_saving(
    path: &str,
    identity: &Identity,
    ledger: &Ledger,
    counters: &Counters,
    base: Snapshot,
    done: Receiver<()>,
) {
    let save_now = || {
        // Counters first: a key counted a moment after its batch closed only makes them run ahead.
        let counts = base.plus(counters.snapshot());
        if let Err(e) = save(path, identity, ledger.resume_point(), counts) {
            log::warn!("{e}");
        }
    };
    while let Err(RecvTimeoutError::Timeout) = done.recv_timeout(SAVE_EVERY) {
        save_now();
    }
    save_now();
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: fn(usize, u64) -> Position = |pass, cursor| Position { pass, cursor };

    #[test]
    fn resume_point_is_the_oldest_open_batch() {
        let l = Ledger::new(P(0, 0));
        let a = l.open(3, P(0, 0));
        let b = l.open(2, P(0, 40));
        l.scanned_to(P(0, 77));
        assert_eq!(l.resume_point(), Some(P(0, 0)));
        l.done(b, 2);
        assert_eq!(l.resume_point(), Some(P(0, 0)));
        l.done(a, 2);
        assert_eq!(l.resume_point(), Some(P(0, 0)));
        l.done(a, 1);
        assert_eq!(l.resume_point(), Some(P(0, 77)));
        l.finish();
        assert_eq!(l.resume_point(), None);
    }

    #[test]
    fn checkpoints_round_trip_and_refuse_another_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        let path = path.to_str().unwrap();
        let id = Identity {
            source: "a:1".into(),
            target: "b:2".into(),
            patterns: vec!["*".into()],
            types: vec![],
            on_conflict: "skip".into(),
        };
        assert_eq!(load(path, &id).unwrap(), Start::default());
        let counts = Snapshot { scanned: 5, copied: 4, skipped: 1, expired: 0, failed: 0 };
        save(path, &id, Some(P(1, 99)), counts).unwrap();
        assert_eq!(load(path, &id).unwrap(), Start { at: P(1, 99), base: counts });
        let other = Identity { target: "c:3".into(), ..id.clone() };
        assert!(load(path, &other).unwrap_err().contains("another copy"));
        save(path, &id, None, counts).unwrap();
        assert_eq!(load(path, &id).unwrap(), Start::default());
        std::fs::write(path, "garbage").unwrap();
        assert!(load(path, &id).is_err());
    }
}
