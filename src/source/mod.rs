//! Where keys come from, behind one trait: a [`Source`] pushes its keys, in batches, into a [`Batcher`],
//! which is the first stage of a run. Today's sources: a SCAN of one server ([`scan`]), a SCAN of every
//! primary of a cluster with the moved slots read again ([`cluster`]), and the keys of a file
//! ([`keys_file`]), and the keys a follow's events made dirty ([`follow`]). A new source (an RDB file)
//! is one more file here.
//!
//! Keys are counted as scanned when their batch is sent on, after the batch took its tokens from the
//! `--rate` bucket: this is the one point every key passes, so the rate meters keys processed, skipped
//! ones included. A source stops early when the stop flag is raised, and the stage ends by returning,
//! which drops its sender and lets the next stage drain.
//!
//! Each scanner opens its batches in a lane of its own of the `--checkpoint` ledger (a cluster source
//! has one per primary, in the order of their addresses) and starts from that lane's resume point; the
//! keys of a cluster's moved slots, read again at the end, go in the [`crate::resume::REREAD`] lane.

pub mod backup;
pub mod cluster;
pub mod follow;
pub mod keys_file;
pub mod scan;

use crossbeam_channel::Sender;

use crate::account::{Counters, Reporter};
use crate::config::Keys;
use crate::exit::Fatal;
use crate::flow::{Batch, Keyed};
use crate::key::Key;
use crate::redis::conn::Conn;
use crate::redis::endpoint::Timeouts;
use crate::redis::reply;
use crate::redis::slots::SlotSet;
use crate::resume::checkpoint::SlotMap;
use crate::resume::{Ledger, Position};
use crate::throttle::Throttle;

/// Where keys come from. A source says how many lanes of the ledger its keys take and what a checkpoint
/// must find again to resume it, then pushes every key into the run's [`Batcher`].
pub trait Source: Send {
    /// Lanes of the ledger its scanners use (one per primary of a cluster, else one).
    fn lanes(&self) -> usize {
        1
    }

    /// The lane of the keys the run's own batcher carries: 0, or [`crate::resume::REREAD`] for a cluster (whose
    /// scanners have batchers of their own).
    fn main_lane(&self) -> usize {
        0
    }

    /// For a cluster: its primaries (the lanes), which served each slot, and their run ids, for
    /// `--checkpoint`.
    fn slot_map(&self) -> Option<SlotMap> {
        None
    }

    /// For a standalone server: its run id, for `--checkpoint`.
    fn run_id(&self) -> Option<&str> {
        None
    }

    /// Pushes every key into `batcher`, each lane from its entry of `start` (`None`: an earlier run took
    /// that lane to its end). Ends early, with `Ok`, when the batcher refuses a key (the run stops).
    fn feed(self: Box<Self>, start: &[Option<Position>], batcher: &mut Batcher) -> Result<(), SourceError>;
}

/// Why a source could not go on: a message, and whether it was the server that went away (a
/// connection that could not be made again), rather than a refusal.
#[derive(Debug)]
pub struct SourceError {
    /// One line for the user.
    pub message: String,
    /// The server was lost (not a refusal).
    pub lost: bool,
}

impl SourceError {
    /// A failure that is not a lost server.
    pub fn new(message: String) -> SourceError {
        SourceError { message, lost: false }
    }
}

/// Batches keys (or keys read already, from an RDB file) and sends them on, counting them as scanned
/// and opening them in the ledger.
pub struct Batcher<'a, T = Key> {
    /// The batch being filled.
    keys: Vec<T>,
    /// Where the first key of `keys` was found.
    first: Position,
    /// Where the keys being pushed now come from (the current SCAN page).
    page: Position,
    /// Keys per batch, the `--rate` bucket and the slots taken.
    rules: Batching<'a>,
    /// Its lane in the ledger: the scanner's, or [`crate::resume::REREAD`].
    lane: usize,
    /// The next stage.
    out: Sender<Batch<T>>,
    /// For the scanned counter.
    rep: &'a Reporter<'a>,
    /// The ledger id of the last batch sent on.
    last: Option<u64>,
    /// Batches in flight, for `--checkpoint`.
    ledger: &'a Ledger,
}

/// How a source's keys are cut into batches.
#[derive(Clone, Copy)]
pub struct Batching<'a> {
    /// Keys per batch.
    pub size: usize,
    /// The `--rate` bucket: a batch waits for its tokens before it is sent on; `None` is unmetered.
    pub throttle: Option<&'a Throttle>,
    /// `--slots` / `--shard`: the keys of other slots are dropped before they are counted; `None` keeps
    /// every key.
    pub slots: Option<&'a SlotSet>,
}

impl<'a, T: Keyed> Batcher<'a, T> {
    /// A batcher that sends to `out`, in `lane` of `ledger`, starting at `first`.
    pub fn new(
        rules: Batching<'a>,
        lane: usize,
        first: Position,
        out: Sender<Batch<T>>,
        rep: &'a Reporter<'a>,
        ledger: &'a Ledger,
    ) -> Batcher<'a, T> {
        let keys = Vec::with_capacity(rules.size);
        Batcher { keys, first, page: first, rules, lane, out, rep, last: None, ledger }
    }

    /// True when the run takes `key` (`--slots`, `--shard`).
    pub fn takes(&self, key: &[u8]) -> bool {
        self.rules.slots.is_none_or(|s| s.has_key(key))
    }

    /// Adds a key; returns false when the run is stopping or the next stage has gone away. A stop
    /// cuts the current SCAN page short: the keys not yet sent were never scanned. A key of a slot the
    /// run does not take is left out (and returns true): it is another shard's.
    pub fn push(&mut self, key: T) -> bool {
        if self.rep.stop.stop_scanning() {
            return false;
        }
        if !self.takes(key.key().as_bytes()) {
            return true;
        }
        if self.keys.is_empty() {
            self.first = self.page;
        }
        self.keys.push(key);
        self.keys.len() < self.rules.size || self.flush()
    }

    /// Sends the batch on once the bucket admits it; a batch the run stopped waiting for, or that the
    /// next stage no longer takes (after an abort), is not counted.
    pub fn flush(&mut self) -> bool {
        if self.keys.is_empty() {
            return true;
        }
        if self.rules.throttle.is_some_and(|t| !t.admit(self.keys.len(), self.rep.stop)) {
            return false;
        }
        let items = std::mem::replace(&mut self.keys, Vec::with_capacity(self.rules.size));
        let n = items.len();
        // Counted before sending, so that a downstream stage never accounts for a key not yet scanned.
        Counters::add(&self.rep.counters.scanned, n as u64);
        let id = self.ledger.open(self.lane, n, self.first);
        self.last = Some(id);
        match self.out.send(Batch { id, items }) {
            Ok(()) => true,
            Err(_) => {
                self.rep.unreached(n);
                false
            }
        }
    }

    /// One key handled outside the batches (a big key of an RDB file, built page by page by the
    /// source itself): once the bucket admits it, it is counted as scanned and opened in the ledger, whose
    /// id is returned; `None` when the run stops first.
    pub fn alone(&mut self) -> Option<u64> {
        if self.rules.throttle.is_some_and(|t| !t.admit(1, self.rep.stop)) || self.rep.stop.stop_scanning() {
            return None;
        }
        Counters::add(&self.rep.counters.scanned, 1);
        Some(self.ledger.open(self.lane, 1, self.first))
    }

    /// The ledger id of the last batch sent on, if any.
    pub fn last_sent(&self) -> Option<u64> {
        self.last
    }

    /// Tells the ledger that every key before `next` (the place after the current page) is batched,
    /// or, while some keys still wait in the batch being filled, every key before the first of them.
    pub fn mark(&self, next: Position) {
        self.ledger.scanned_to(self.lane, if self.keys.is_empty() { next } else { self.first });
    }
}

/// Runs the first stage until every key was found, the stop flag is raised, or the source failed: the
/// source's lanes start at their entries of `start` (from `--checkpoint`), and its keys are cut into
/// batches by `rules`.
pub fn run(
    source: Box<dyn Source + '_>,
    rules: Batching,
    start: &[Option<Position>],
    out: Sender<Batch<Key>>,
    rep: Reporter,
    ledger: &Ledger,
) {
    let first = start.first().copied().flatten().unwrap_or_default();
    let mut batcher = Batcher::new(rules, source.main_lane(), first, out, &rep, ledger);
    match source.feed(start, &mut batcher) {
        Err(e) => rep.stop.fatal(format!("scan stage: {}", e.message)),
        Ok(()) if !rep.stop.stop_scanning() => {
            batcher.flush();
            ledger.finish();
        }
        Ok(()) => {}
    }
}

/// Opens the keys of `keys`: the checked lines of a `--keys-from` file (opened at preflight, `file`), or
/// a SCAN of the server behind `conn`; for a cluster, a SCAN of each primary on a connection of its own
/// (in the order of their addresses, so `--checkpoint` finds each primary's position again), plus
/// `conn` itself to read the slots that move during the scan again. Checks that every server scanned
/// lets us SCAN.
pub fn open(
    keys: &Keys,
    file: Option<keys_file::KeysFile>,
    conn: Conn,
    timeouts: Timeouts,
    slots: Option<&SlotSet>,
) -> Result<Box<dyn Source>, Fatal> {
    let (patterns, types, count) = match (keys, file) {
        (_, Some(file)) => return Ok(Box::new(file)),
        (Keys::File(_), None) => unreachable!("a --keys-from file is opened at preflight"),
        (Keys::Scan { patterns, types, count }, None) => (patterns, types, *count),
    };
    let scan = |node: Conn| scan::ServerScan::new(node, patterns.clone(), types.clone(), count);
    if !conn.is_cluster() {
        return scan(conn).map(|s| Box::new(s) as Box<dyn Source>);
    }
    cluster::ClusterScan::new(conn, timeouts, scan, slots).map(|c| Box::new(c) as Box<dyn Source>)
}

/// Opens `--keys-from` (`-` is standard input) and checks every line of it; `None` when scanning.
pub fn keys_file(keys: &Keys) -> Result<Option<keys_file::KeysFile>, Fatal> {
    let Keys::File(path) = keys else { return Ok(None) };
    let file = keys_file::KeysFile::open("--keys-from", path).map_err(Fatal::bad_input)?;
    let what = match file.lines.format() {
        keys_file::Format::Lines => "one per line",
        keys_file::Format::Csv { .. } => "the key column of a redis-ferry CSV",
    };
    log::info!("--keys-from {path}: {} keys, {what}", file.keys);
    Ok(Some(file))
}

/// The probe of a server about to be scanned: one `SCAN 0 COUNT 1`.
fn refuses_scan(node: &mut Conn) -> Option<Fatal> {
    let probe: Result<(u64, Vec<Vec<u8>>), _> =
        node.call(redis::cmd("SCAN").arg(0).arg("COUNT").arg(1), || true);
    let e = probe.err()?;
    let (code, message) = reply::classify(&e);
    let role = node.endpoint().role.name();
    Some(Fatal::bad_input(format!("the {role} {} refuses SCAN: {code} {message}", node.endpoint())))
}
