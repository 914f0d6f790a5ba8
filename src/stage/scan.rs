//! Stage 1: find the keys, in batches. Either SCAN the source (one pass per `--type`, each `--match`
//! pattern with the server's own MATCH, until the cursor returns to 0), or read `--keys-from`.
//!
//! Several patterns form a union: a key found by pattern *i* is dropped if it matches an earlier
//! pattern too, so each key comes once (bar SCAN's own rare repeats while the server resizes its
//! table). Several types are disjoint passes with SCAN TYPE. Keys are counted as scanned when their
//! batch is sent on, after the batch took its tokens from the `--rate` bucket: this is the one point
//! every key passes, so the rate meters keys processed, skipped ones included. The stage stops early when the stop flag is raised, and ends by returning, which
//! drops its sender and lets the next stage drain.
//!
//! Each scanner opens its batches in a lane of its own of the `--checkpoint` ledger (a cluster source
//! has one per primary, in the order of their addresses) and starts from that lane's resume point; the
//! keys of a cluster's moved slots, read again at the end, go in the [`REREAD`] lane.

use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use redis::Value;

use crate::checkpoint::{Ledger, Position, SlotMap, REREAD};
use crate::cluster;
use crate::config::KeyType;
use crate::conn::{self, Conn};
use crate::glob;
use crate::key::Key;
use crate::keyfile::KeysFile;
use crate::report::{Counters, Reporter};
use crate::stage::Batch;
use crate::throttle::Throttle;

/// Where the scan stage gets its keys.
pub enum KeyInput {
    /// SCAN a server.
    Server(Scan),
    /// The keys of `--keys-from`, read through and checked during preflight.
    Lines(KeysFile),
    /// Every primary of a cluster, each scanned by a thread of its own; then the slots that moved
    /// while they were scanned are read again.
    Cluster {
        /// One scan per primary, each with its own connection, in the order of their addresses (the
        /// lanes of the [`Ledger`]).
        primaries: Vec<Scan>,
        /// A connection to the whole cluster, to read the slot map and the keys of moved slots.
        conn: Conn,
        /// The primary serving each slot when the scan started (by address).
        owners: Vec<Option<String>>,
    },
}

impl KeyInput {
    /// How many lanes its scan has in the [`Ledger`]: one per primary of a cluster, else one.
    pub fn lanes(&self) -> usize {
        match self {
            KeyInput::Cluster { primaries, .. } => primaries.len(),
            KeyInput::Server(_) | KeyInput::Lines(_) => 1,
        }
    }

    /// For a cluster: its primaries (the lanes), which served each slot when the scan was set up, and
    /// their run ids, for `--checkpoint`.
    pub fn slot_map(&self) -> Option<SlotMap> {
        match self {
            KeyInput::Cluster { primaries, owners, .. } => Some(SlotMap::new(
                primaries.iter().map(|p| p.conn.endpoint().to_string()).collect(),
                owners,
                primaries.iter().map(|p| p.run_id.as_str()),
            )),
            KeyInput::Server(_) | KeyInput::Lines(_) => None,
        }
    }

    /// For a standalone server: its run id when the scan was set up, for `--checkpoint`.
    pub fn run_id(&self) -> Option<&str> {
        match self {
            KeyInput::Server(scan) => Some(&scan.run_id),
            KeyInput::Cluster { .. } | KeyInput::Lines(_) => None,
        }
    }
}

/// The SCAN of one server.
pub struct Scan {
    /// Its own connection to the server.
    pub conn: Conn,
    /// MATCH patterns (at least one).
    pub patterns: Vec<Vec<u8>>,
    /// TYPE filters; empty is every type.
    pub types: Vec<KeyType>,
    /// COUNT hint.
    pub count: u64,
    /// The server's `run_id` when the scan was set up: a SCAN cursor means nothing after a restart.
    pub run_id: String,
}

/// How many times the slots that moved during a cluster scan are read again (a reshard that goes on
/// longer than that is reported as a warning).
const RESCANS: usize = 10;
/// How long a cluster scan waits, at its end, for slots being migrated to settle.
const SETTLE: Duration = Duration::from_secs(300);

/// Batches keys and sends them on, counting them as scanned and opening them in the ledger.
struct Batcher<'a> {
    /// The batch being filled.
    keys: Vec<Key>,
    /// Where the first key of `keys` was found.
    first: Position,
    /// Where the keys being pushed now come from (the current SCAN page).
    page: Position,
    /// Keys per batch.
    size: usize,
    /// Its lane in the ledger: the scanner's, or [`REREAD`].
    lane: usize,
    /// The next stage.
    out: Sender<Batch<Key>>,
    /// For the scanned counter.
    rep: &'a Reporter<'a>,
    /// Batches in flight, for `--checkpoint`.
    ledger: &'a Ledger,
    /// The `--rate` bucket: a batch waits for its tokens before it is sent on; `None` is unmetered.
    throttle: Option<&'a Throttle>,
}

impl Batcher<'_> {
    /// Adds a key; returns false when the run is stopping or the next stage has gone away. A stop
    /// cuts the current SCAN page short: the keys not yet sent were never scanned.
    fn push(&mut self, key: Key) -> bool {
        if self.rep.stop.stop_scanning() {
            return false;
        }
        if self.keys.is_empty() {
            self.first = self.page;
        }
        self.keys.push(key);
        self.keys.len() < self.size || self.flush()
    }

    /// Sends the batch on once the bucket admits it; a batch the run stopped waiting for, or that the
    /// next stage no longer takes (after an abort), is not counted.
    fn flush(&mut self) -> bool {
        if self.keys.is_empty() {
            return true;
        }
        if self.throttle.is_some_and(|t| !t.admit(self.keys.len(), self.rep.stop)) {
            return false;
        }
        let items = std::mem::replace(&mut self.keys, Vec::with_capacity(self.size));
        let n = items.len();
        // Counted before sending, so that a downstream stage never accounts for a key not yet scanned.
        Counters::add(&self.rep.counters.scanned, n as u64);
        let id = self.ledger.open(self.lane, n, self.first);
        match self.out.send(Batch { id, items }) {
            Ok(()) => true,
            Err(_) => {
                self.rep.unreached(n);
                false
            }
        }
    }

    /// Tells the ledger that every key before `next` (the place after the current page) is batched,
    /// or, while some keys still wait in the batch being filled, every key before the first of them.
    fn mark(&self, next: Position) {
        self.ledger.scanned_to(self.lane, if self.keys.is_empty() { next } else { self.first });
    }
}

/// Runs the scan stage until every key was found, the stop flag is raised, or the connection is lost.
/// A SCAN starts each lane (the server, or each primary of a cluster) at its entry of `start` (from
/// `--checkpoint`; `None`: an earlier run scanned all of it); `--keys-from` always reads from its
/// beginning. With a `throttle` (copy's `--rate`), each batch waits for its tokens before it is sent on.
pub fn run(
    input: KeyInput,
    batch: usize,
    start: &[Option<Position>],
    out: Sender<Batch<Key>>,
    rep: Reporter,
    ledger: &Ledger,
    throttle: Option<&Throttle>,
) {
    let first = start.first().copied().flatten().unwrap_or_default();
    // A cluster's own batcher only carries the keys of the slots read again.
    let lane = if matches!(input, KeyInput::Cluster { .. }) { REREAD } else { 0 };
    let mut batcher = Batcher {
        keys: Vec::with_capacity(batch),
        first,
        page: first,
        size: batch,
        lane,
        out,
        rep: &rep,
        ledger,
        throttle,
    };
    let scanned = match input {
        KeyInput::Cluster { primaries, conn, owners } => {
            cluster(primaries, conn, owners, start, &mut batcher)
        }
        KeyInput::Server(scan) => match start.first().copied().flatten() {
            Some(at) => scan_server(scan, at, &mut batcher),
            None => Ok(()),
        },
        KeyInput::Lines(reader) => read_lines(reader, &mut batcher),
    };
    match scanned {
        Err(StageError(message, _)) => rep.stop.fatal(format!("scan stage: {message}")),
        Ok(()) if !rep.stop.stop_scanning() => {
            batcher.flush();
            ledger.finish();
        }
        Ok(()) => {}
    }
}

/// Scans a cluster: each primary in a thread of its own, with a batcher of its own in its own lane
/// of the ledger, from its entry of `start` (a primary whose entry is `None` was scanned to its end by
/// an earlier run); then the slots that changed hands meanwhile are read again ([`rescan_moved`]). A
/// primary lost during its scan (a connection that could not be made again: it failed, and a replica
/// may be taking over) does not end the run: its slots count as moved, so they are read from whichever
/// primary serves them at the end.
fn cluster(
    primaries: Vec<Scan>,
    conn: Conn,
    mut owners: Vec<Option<String>>,
    start: &[Option<Position>],
    batcher: &mut Batcher,
) -> Result<(), StageError> {
    let filter = match primaries.first() {
        Some(scan) => (scan.patterns.clone(), scan.types.clone()),
        None => return Ok(()),
    };
    let parent = &*batcher;
    let results: Vec<(String, Result<(), StageError>)> = std::thread::scope(|s| {
        let threads: Vec<_> = primaries
            .into_iter()
            .zip(start)
            .enumerate()
            .filter_map(|(lane, (primary, at))| Some((lane, primary, (*at)?)))
            .map(|(lane, primary, at)| {
                let node = primary.conn.endpoint().to_string();
                let mut own = Batcher {
                    keys: Vec::with_capacity(parent.size),
                    first: at,
                    page: at,
                    lane,
                    out: parent.out.clone(),
                    ..*parent
                };
                s.spawn(move || {
                    let scanned = scan_server(primary, at, &mut own);
                    if scanned.is_ok() && !own.rep.stop.stop_scanning() && own.flush() {
                        own.ledger.finish_lane(lane);
                    }
                    (node, scanned)
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().expect("a scanner panicked")).collect()
    });
    for (node, scanned) in results {
        match scanned {
            Ok(()) => {}
            Err(StageError(message, true)) => {
                log::warn!(
                    "source primary {node} was lost during its scan ({message}); its slots will be read from \
                     the primaries that serve them once the scans are done"
                );
                owners.iter_mut().filter(|o| o.as_deref() == Some(node.as_str())).for_each(|o| *o = None);
            }
            Err(e) => return Err(e),
        }
    }
    if batcher.rep.stop.stop_scanning() {
        return Ok(());
    }
    rescan_moved(conn, owners, &filter, batcher)
}

/// After the primaries of a cluster were scanned: the keys of every slot that changed hands since
/// `owners` was read (moved by a reshard, or taken over by a replica after its primary was lost) are
/// read again from the slot's primary now (CLUSTER GETKEYSINSLOT), filtered like the scan, since a key
/// that moved during the scan may have been missed by both primaries' SCANs. Slots being migrated, or
/// without a primary (a failover under way), are waited for first, up to [`SETTLE`]; a slot still
/// without a primary then ends the scan with an error. Then again for the slots that moved meanwhile.
/// Keys found twice this way are counted twice (the second time as skipped, or copied again with
/// `--on-conflict replace`). These keys have no SCAN position: once slots have moved, the ledger is
/// told ([`Ledger::reread`]), and until the scan is over a resumed run starts from the beginning.
fn rescan_moved(
    mut conn: Conn,
    mut owners: Vec<Option<String>>,
    (patterns, types): &(Vec<Vec<u8>>, Vec<KeyType>),
    batcher: &mut Batcher,
) -> Result<(), StageError> {
    let stop = batcher.rep.stop;
    let failed = |e: conn::ConnectError| StageError::new(format!("cannot read the slot map: {e}"));
    for _ in 0..RESCANS {
        let waited = Instant::now();
        let now = loop {
            let (now, migrating) = conn.slot_owners().map_err(failed)?;
            let uncovered = now.iter().filter(|o| o.is_none()).count();
            if (migrating == 0 && uncovered == 0) || waited.elapsed() > SETTLE || stop.stop_scanning() {
                if migrating > 0 {
                    log::warn!(
                        "{migrating} slots of the source are still being migrated; reading them as they are"
                    );
                }
                break now;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let moved: Vec<u16> = (0..now.len()).filter(|&s| now[s] != owners[s]).map(|s| s as u16).collect();
        if moved.is_empty() {
            return Ok(());
        }
        batcher.ledger.reread();
        log::info!(
            "{} slots of the source changed primary during the scan (a reshard or a failover); reading their keys again",
            moved.len()
        );
        if let Some(&slot) = moved.iter().find(|&&s| now[usize::from(s)].is_none()) {
            return Err(StageError::new(format!(
                "slot {slot} of the source is served by no primary: its keys cannot be read"
            )));
        }
        for slot in moved {
            let route = cluster::key_in_slot(slot);
            let failed = |what: &str, e: redis::RedisError| {
                StageError::new(format!("CLUSTER {what} {slot} failed: {}", conn::classify(&e).1))
            };
            let count: u64 = conn
                .call_routed(Some(&route), redis::cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(slot), || {
                    stop.discard()
                })
                .map_err(|e| failed("COUNTKEYSINSLOT", e))?;
            if count == 0 {
                continue;
            }
            let get = redis::cmd("CLUSTER").arg("GETKEYSINSLOT").arg(slot).arg(count).clone();
            let keys: Vec<Vec<u8>> = conn
                .call_routed(Some(&route), &get, || stop.discard())
                .map_err(|e| failed("GETKEYSINSLOT", e))?;
            let mut keys: Vec<Vec<u8>> =
                keys.into_iter().filter(|k| patterns.iter().any(|p| glob::matches(p, k))).collect();
            if !types.is_empty() && !keys.is_empty() {
                let replies = conn
                    .query(
                        keys.len(),
                        |i| Some(&keys[i][..]),
                        |pipe, i| {
                            pipe.cmd("TYPE").arg(&keys[i][..]);
                        },
                    )
                    .map_err(|e| StageError::new(format!("TYPE failed: {}", conn::classify(&e).1)))?;
                let kinds = replies.into_values();
                let wanted = |v: &Value| match v {
                    Value::SimpleString(t) => types.iter().any(|ty| ty.name() == t),
                    _ => false,
                };
                let mut kinds = kinds.iter();
                keys.retain(|_| kinds.next().is_some_and(wanted));
            }
            for key in keys {
                if !batcher.push(Key(key)) {
                    return Ok(());
                }
            }
        }
        owners = now;
    }
    log::warn!(
        "the source's slots kept moving; keys moved after the last of {RESCANS} rereads may be missing"
    );
    Ok(())
}

/// Why the scan could not go on: a message, and whether it was the server that went away (a
/// connection that could not be made again), rather than a refusal.
struct StageError(String, bool);

impl StageError {
    /// A failure that is not a lost server.
    fn new(message: String) -> StageError {
        StageError(message, false)
    }
}

/// Scans one server: one pass per type and pattern, from `start`.
fn scan_server(scan: Scan, start: Position, batcher: &mut Batcher) -> Result<(), StageError> {
    let Scan { mut conn, patterns, types, count, .. } = scan;
    let types: Vec<Option<KeyType>> =
        if types.is_empty() { vec![None] } else { types.into_iter().map(Some).collect() };
    let passes = types.iter().flat_map(|ty| (0..patterns.len()).map(move |i| (*ty, i)));
    for (pass, (ty, i)) in passes.enumerate().skip(start.pass) {
        let cursor = if pass == start.pass { start.cursor } else { 0 };
        let pass = Pass { pattern: &patterns[i], earlier: &patterns[..i], ty, count, index: pass };
        if !scan_pass(&mut conn, &pass, cursor, batcher)? {
            return Ok(());
        }
    }
    Ok(())
}

/// One SCAN pass: a pattern, maybe a type.
struct Pass<'a> {
    /// The MATCH pattern.
    pattern: &'a [u8],
    /// Patterns of earlier passes of the same type: a key matching one of them was found already.
    earlier: &'a [Vec<u8>],
    /// The TYPE filter.
    ty: Option<KeyType>,
    /// COUNT hint.
    count: u64,
    /// Its index among all passes (for the checkpoint).
    index: usize,
}

/// Runs one SCAN pass from `cursor` to its end; returns false when it was cut short.
fn scan_pass(
    conn: &mut Conn,
    pass: &Pass,
    mut cursor: u64,
    batcher: &mut Batcher,
) -> Result<bool, StageError> {
    let rep = batcher.rep;
    loop {
        if rep.stop.stop_scanning() {
            return Ok(false);
        }
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor).arg("MATCH").arg(pass.pattern).arg("COUNT").arg(pass.count);
        if let Some(ty) = pass.ty {
            cmd.arg("TYPE").arg(ty.name());
        }
        // SCAN is stateless on the server: after a reconnect the same cursor carries on.
        let (next, keys): (u64, Vec<Vec<u8>>) = match conn.call(&cmd, || rep.stop.discard()) {
            Ok(page) => page,
            // The source refused to scan, or stayed unreachable: no more keys can be found.
            Err(err) => {
                let (code, message) = conn::classify(&err);
                let lost = conn::is_connection_error(&err);
                return Err(StageError(format!("SCAN {cursor} failed: {code} {message}"), lost));
            }
        };
        batcher.page = Position { pass: pass.index, cursor };
        for key in keys {
            if pass.earlier.iter().any(|p| glob::matches(p, &key)) {
                continue;
            }
            if !batcher.push(Key(key)) {
                return Ok(false);
            }
        }
        let after = if next == 0 {
            Position { pass: pass.index + 1, cursor: 0 }
        } else {
            Position { pass: pass.index, cursor: next }
        };
        batcher.mark(after);
        if next == 0 {
            return Ok(true);
        }
        cursor = next;
    }
}

/// Reads `--keys-from`, checked whole at preflight (so only an I/O error can stop it here).
fn read_lines(file: KeysFile, batcher: &mut Batcher) -> Result<(), StageError> {
    let mut lines = file.lines;
    loop {
        let key = match lines.next_key() {
            Ok(Some(key)) => key,
            Ok(None) => return Ok(()),
            Err(e) => return Err(StageError::new(format!("cannot read --keys-from: {e}"))),
        };
        if !batcher.push(key) {
            return Ok(());
        }
    }
}
