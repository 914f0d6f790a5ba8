//! The SCAN of a cluster: each primary scanned by a thread of its own, on its own connection and in its
//! own lane of the ledger; then the slots that changed hands meanwhile (a reshard, a failover) read
//! again from their primary now.

use std::time::{Duration, Instant};

use redis::Value;

use super::scan::{scan_server, ServerScan};
use super::{Batcher, Source, SourceError};
use crate::exit::Fatal;
use crate::key::{Key, KeyType};
use crate::redis::conn::Conn;
use crate::redis::connect::ConnectError;
use crate::redis::endpoint::Timeouts;
use crate::redis::slots::SlotSet;
use crate::redis::{cluster, glob, reply};
use crate::resume::checkpoint::SlotMap;
use crate::resume::Position;

/// Every primary of a cluster, each scanned by a thread of its own; then the slots that moved while
/// they were scanned are read again.
pub struct ClusterScan {
    /// One scan per primary, each with its own connection, in the order of their addresses (the lanes
    /// of the ledger).
    primaries: Vec<ServerScan>,
    /// A connection to the whole cluster, to read the slot map and the keys of moved slots.
    conn: Conn,
    /// The primary serving each slot when the scan started (by address).
    owners: Vec<Option<String>>,
    /// `--slots` / `--shard`: only these slots are read again when they move.
    slots: Option<SlotSet>,
}

impl ClusterScan {
    /// Opens a scan of each primary of the cluster behind `conn`, in the order of their addresses, with
    /// `scan` (which checks that the primary lets us SCAN). With `slots`, only the primaries serving one
    /// of them now are scanned (the others hold none of this shard's keys; slots that move later are read
    /// again at the end, as always).
    pub fn new(
        mut conn: Conn,
        timeouts: Timeouts,
        scan: impl Fn(Conn) -> Result<ServerScan, Fatal>,
        slots: Option<&SlotSet>,
    ) -> Result<ClusterScan, Fatal> {
        let (nodes, owners) = conn.primaries_serving(slots).map_err(Fatal::from)?;
        // A slot the run reads that no reachable primary serves (a failed primary, a cluster being set
        // up) holds keys no scan can find: they would end in no bucket. Not now, then; later.
        let unserved: Vec<(u16, u16)> = (0..owners.len() as u16)
            .filter(|&s| owners[usize::from(s)].is_none() && slots.is_none_or(|set| set.has(s)))
            .map(|s| (s, s))
            .collect();
        if !unserved.is_empty() {
            return Err(Fatal::unreachable(format!(
                "source {}: {} slots this run reads are served by no reachable primary ({}): a failed primary, \
                 or a cluster not set up yet; their keys cannot be read, try again when every slot is served",
                conn.endpoint(),
                unserved.len(),
                SlotSet::from_ranges(&unserved).ranges_text()
            )));
        }
        if let Some(set) = slots {
            log::info!(
                "{}: scanning the {} primaries that serve them: {}",
                set.ranges_text(),
                nodes.len(),
                nodes.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
            );
        }
        let primaries = nodes
            .iter()
            .map(|node| {
                let node = Conn::open(node, timeouts).map_err(Fatal::from)?;
                scan(node.with_retry(conn.retry()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ClusterScan { primaries, conn, owners, slots: slots.cloned() })
    }
}

impl Source for ClusterScan {
    fn lanes(&self) -> usize {
        self.primaries.len()
    }

    fn main_lane(&self) -> usize {
        crate::resume::REREAD
    }

    fn slot_map(&self) -> Option<SlotMap> {
        Some(SlotMap::new(
            self.primaries.iter().map(|p| p.conn.endpoint().to_string()).collect(),
            &self.owners,
            self.primaries.iter().map(|p| p.run_id.as_str()),
        ))
    }

    fn feed(self: Box<Self>, start: &[Option<Position>], batcher: &mut Batcher) -> Result<(), SourceError> {
        let ClusterScan { primaries, conn, owners, slots } = *self;
        cluster(primaries, conn, owners, slots.as_ref(), start, batcher)
    }
}

/// How many times the slots that moved during a cluster scan are read again (a reshard that goes on
/// longer than that is reported as a warning).
const RESCANS: usize = 10;
/// How long a cluster scan waits, at its end, for slots being migrated to settle.
const SETTLE: Duration = Duration::from_secs(300);

/// Scans a cluster: each primary in a thread of its own, with a batcher of its own in its own lane
/// of the ledger, from its entry of `start` (a primary whose entry is `None` was scanned to its end by
/// an earlier run); then the slots that changed hands meanwhile are read again ([`rescan_moved`]). A
/// primary lost during its scan (a connection that could not be made again: it failed, and a replica
/// may be taking over) does not end the run: its slots count as moved, so they are read from whichever
/// primary serves them at the end.
fn cluster(
    primaries: Vec<ServerScan>,
    conn: Conn,
    mut owners: Vec<Option<String>>,
    slots: Option<&SlotSet>,
    start: &[Option<Position>],
    batcher: &mut Batcher,
) -> Result<(), SourceError> {
    let filter = match primaries.first() {
        Some(scan) => (scan.patterns.clone(), scan.types.clone()),
        None => return Ok(()),
    };
    let parent = &*batcher;
    let results: Vec<(String, Result<(), SourceError>)> = std::thread::scope(|s| {
        let threads: Vec<_> = primaries
            .into_iter()
            .zip(start)
            .enumerate()
            .filter_map(|(lane, (primary, at))| Some((lane, primary, (*at)?)))
            .map(|(lane, primary, at)| {
                let node = primary.conn.endpoint().to_string();
                let mut own = Batcher {
                    keys: Vec::with_capacity(parent.rules.size),
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
            Err(SourceError { message, lost: true }) => {
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
    rescan_moved(conn, owners, slots, &filter, batcher)
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
    slots: Option<&SlotSet>,
    (patterns, types): &(Vec<Vec<u8>>, Vec<KeyType>),
    batcher: &mut Batcher,
) -> Result<(), SourceError> {
    let stop = batcher.rep.stop;
    let failed = |e: ConnectError| SourceError::new(format!("cannot read the slot map: {e}"));
    for _ in 0..RESCANS {
        let waited = Instant::now();
        let now = loop {
            let (now, migrating) = conn.slot_owners().map_err(failed)?;
            // Only the run's own slots matter: another shard's failed primary is not this run's wait.
            let uncovered = (0..now.len())
                .filter(|&s| now[s].is_none() && slots.is_none_or(|set| set.has(s as u16)))
                .count();
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
        let moved: Vec<u16> = (0..now.len())
            .filter(|&s| now[s] != owners[s] && slots.is_none_or(|set| set.has(s as u16)))
            .map(|s| s as u16)
            .collect();
        if moved.is_empty() {
            return Ok(());
        }
        batcher.ledger.reread();
        log::info!(
            "{} slots of the source changed primary during the scan (a reshard or a failover); reading their keys again",
            moved.len()
        );
        if let Some(&slot) = moved.iter().find(|&&s| now[usize::from(s)].is_none()) {
            return Err(SourceError::new(format!(
                "slot {slot} of the source is served by no primary: its keys cannot be read"
            )));
        }
        for slot in moved {
            let keys = slot_keys(&mut conn, slot, patterns, types, &|| stop.discard())?;
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

/// The keys of `slot` now, from the primary serving it (CLUSTER COUNTKEYSINSLOT, then GETKEYSINSLOT of that
/// many: it cannot page), kept if they match a pattern and, with `types`, one of the types.
fn slot_keys(
    conn: &mut Conn,
    slot: u16,
    patterns: &[Vec<u8>],
    types: &[KeyType],
    give_up: &dyn Fn() -> bool,
) -> Result<Vec<Vec<u8>>, SourceError> {
    let route = cluster::key_in_slot(slot);
    let failed = |what: &str, e: redis::RedisError| {
        SourceError::new(format!("CLUSTER {what} {slot} failed: {}", reply::classify(&e).1))
    };
    let count: u64 = conn
        .call_routed(Some(&route), redis::cmd("CLUSTER").arg("COUNTKEYSINSLOT").arg(slot), give_up)
        .map_err(|e| failed("COUNTKEYSINSLOT", e))?;
    if count == 0 {
        return Ok(Vec::new());
    }
    let get = redis::cmd("CLUSTER").arg("GETKEYSINSLOT").arg(slot).arg(count).clone();
    let keys: Vec<Vec<u8>> =
        conn.call_routed(Some(&route), &get, give_up).map_err(|e| failed("GETKEYSINSLOT", e))?;
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
            .map_err(|e| SourceError::new(format!("TYPE failed: {}", reply::classify(&e).1)))?;
        let kinds = replies.into_values();
        let wanted = |v: &Value| match v {
            Value::SimpleString(t) => types.iter().any(|ty| ty.name() == t),
            _ => false,
        };
        let mut kinds = kinds.iter();
        keys.retain(|_| kinds.next().is_some_and(wanted));
    }
    Ok(keys)
}
