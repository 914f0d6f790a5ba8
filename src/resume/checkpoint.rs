//! The `--checkpoint` file: resuming a copy across runs.
//!
//! The checkpoint file (JSON, written atomically every few seconds and at exit) holds the resume
//! point(s), the cumulative counters, and the identity of the copy (source, target, filters, conflict
//! policy); a checkpoint made for another copy is refused. For a standalone source it holds one resume
//! point (`resume`), as it always did. For a cluster source it holds one per primary, by address, and a
//! fingerprint of the slot map (which address serves each slot) taken when the run started: cursors
//! are only meaningful on the server that gave them, and a key may move between primaries, so a run
//! that finds another slot map or other primaries starts the scan over, with a warning. Cursors are
//! opaque: a checkpoint is only valid for the same source servers (a restart or a resize may still
//! make SCAN repeat keys, never lose them).

use std::fs;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde::{Deserialize, Deserializer, Serialize};

use super::ledger::{Ledger, Position};
use crate::account::csv::rfc3339;
use crate::account::{Counters, Snapshot};
use crate::config::{CopyConfig, Keys};
use crate::files;
use crate::key::Key;

/// How often the checkpoint file is rewritten during a run.
pub const SAVE_EVERY: Duration = Duration::from_secs(2);

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
    /// `--slots` / `--shard`: the slots taken (`shard 2/8 (slots 4096-6143)`); absent for a whole copy
    /// (and in files written before shards existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<String>,
}

impl Identity {
    /// The identity of the copy `cfg` describes (SCAN mode only).
    pub fn of(cfg: &CopyConfig) -> Identity {
        let (patterns, types) = match &cfg.keys {
            Keys::Scan { patterns, types, .. } => (
                patterns.iter().map(|p| Key(p.clone()).escaped()).collect(),
                types.iter().map(|t| t.name().to_string()).collect(),
            ),
            Keys::File(_) => (Vec::new(), Vec::new()),
        };
        Identity {
            source: cfg.source.to_string(),
            target: cfg.target.to_string(),
            patterns,
            types,
            on_conflict: format!("{:?}", cfg.on_conflict).to_lowercase(),
            slots: cfg.split.as_ref().map(|s| s.describe()),
        }
    }
}

/// The primaries of a cluster source when a run started: the lanes of its scan, and which of them
/// served each slot (as a fingerprint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMap {
    /// The primaries' addresses (`host:port`), in lane order.
    pub primaries: Vec<String>,
    /// A hash of the address serving each slot (FNV-1a, 64 bits, in hex).
    pub fingerprint: String,
}

impl SlotMap {
    /// The map of a cluster whose scan has a lane for each of `primaries`, and whose slot `s` is served
    /// by `owners[s]` (`None`: by no primary).
    /// The primaries' `run_ids` go into the fingerprint too: a restarted primary orders its keys anew,
    /// and a SCAN cursor from before could skip some.
    pub fn new<'a>(
        primaries: Vec<String>,
        owners: &'a [Option<String>],
        run_ids: impl IntoIterator<Item = &'a str>,
    ) -> SlotMap {
        let owners = owners.iter().map(|o| o.as_deref().unwrap_or("-"));
        let fingerprint = crate::fingerprint::fnv1a(owners.chain(run_ids).map(str::as_bytes));
        SlotMap { primaries, fingerprint }
    }
}

/// What a run's resume points are relative to: the source as the run found it when it started.
#[derive(Debug, Clone, Copy, Default)]
pub struct Origin<'a> {
    /// A cluster source: its primaries and slot map; `None` for a standalone source.
    pub map: Option<&'a SlotMap>,
    /// A standalone source: its `run_id`.
    pub run_id: Option<&'a str>,
}

/// The checkpoint file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Format version.
    pub version: u32,
    /// The copy this checkpoint belongs to.
    pub identity: Identity,
    /// A standalone source: where to resume, `null` when the copy went through to the end. The field
    /// is absent (outer `None`) for a cluster source.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub resume: Option<Option<Position>>,
    /// A standalone source: its `run_id` when the run that wrote this started (absent in files written
    /// before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// A cluster source: where to resume each primary, and the slot map those positions belong to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterResume>,
    /// Counters over all runs of this copy so far.
    pub counts: Snapshot,
    /// When it was written (RFC 3339 UTC).
    pub saved_at: String,
}

/// A field that is present, even as `null`: `Some(None)`, so that an absent one stays `None`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<Position>>, D::Error> {
    Option::<Position>::deserialize(d).map(Some)
}

/// Where to resume the scan of a cluster source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterResume {
    /// [`SlotMap::fingerprint`] when the run that wrote this started.
    pub slot_map: String,
    /// One per primary, in lane order (by address).
    pub primaries: Vec<PrimaryResume>,
}

/// Where to resume the scan of one primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrimaryResume {
    /// Its address (`host:port`).
    pub node: String,
    /// Where to resume; `null` when its scan went through to the end.
    pub resume: Option<Position>,
}

const VERSION: u32 = 1;

/// What a run starts from: each lane's resume position and the counters of the earlier runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// Where to start scanning each lane; `None` for a lane an earlier run took to its end.
    pub at: Vec<Option<Position>>,
    /// Counters carried over from earlier runs.
    pub base: Snapshot,
}

impl Start {
    /// A scan from the beginning of every lane: one, or one per primary of the cluster `map`.
    pub fn fresh(map: Option<&SlotMap>) -> Start {
        let lanes = map.map_or(1, |m| m.primaries.len());
        Start { at: vec![Some(Position::default()); lanes], base: Snapshot::default() }
    }
}

/// Reads the checkpoint at `path` for the copy `identity`; `None` when there is no such file. A file
/// for another copy, or one that cannot be read, is an error for the user (exit 2). Whether and where
/// it resumes is for [`start`] to say, once the source's slot map is known.
pub fn load(path: &str, identity: &Identity) -> Result<Option<Checkpoint>, String> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("--checkpoint {path}: cannot read it ({e})")),
    };
    let cp: Checkpoint = serde_json::from_str(&text)
        .map_err(|e| format!("--checkpoint {path}: not a redis-ferry checkpoint ({e})"))?;
    if cp.version != VERSION {
        return Err(format!("--checkpoint {path}: format version {} is not {VERSION}", cp.version));
    }
    if &cp.identity != identity {
        return Err(format!(
            "--checkpoint {path} was made for another copy ({} -> {}, match {:?}, type {:?}, on-conflict {}{}); \
             delete it or name another file",
            cp.identity.source,
            cp.identity.target,
            cp.identity.patterns,
            cp.identity.types,
            cp.identity.on_conflict,
            cp.identity.slots.as_deref().map(|s| format!(", {s}")).unwrap_or_default()
        ));
    }
    if cp.resume.is_none() && cp.cluster.is_none() {
        return Err(format!("--checkpoint {path}: not a redis-ferry checkpoint (no resume point)"));
    }
    Ok(Some(cp))
}

/// Where a run of the copy starts, given the checkpoint `saved` (read from `path`) and the source as
/// it is now (`origin`). No checkpoint, or one whose copy went through to the end, starts afresh. A
/// cluster checkpoint resumes only on the same primaries serving the same slots, a standalone one only
/// on the same server process (run id); otherwise the scan starts over (logged as a warning), and so
/// do the counters: the new scan puts every key in a bucket again (those copied before as skipped), so
/// keeping the earlier runs' counts would count those keys twice.
pub fn start(saved: Option<Checkpoint>, path: &str, origin: Origin) -> Start {
    let Origin { map, run_id } = origin;
    let Some(cp) = saved else { return Start::fresh(map) };
    let over = |why: String| {
        log::warn!(
            "--checkpoint {path} (saved {}): {why}; scanning the source from the beginning, the counters too \
             (keys copied already count as skipped)",
            cp.saved_at
        );
        Start::fresh(map)
    };
    let at: Vec<Option<Position>> = match (&cp.cluster, map) {
        (None, None) => {
            if let (Some(then), Some(now)) = (&cp.run_id, run_id) {
                if then != now {
                    return over(format!(
                        "the source server restarted since it was made (run_id {then} then, {now} now), and a SCAN \
                         cursor from before a restart may skip keys"
                    ));
                }
            }
            vec![cp.resume.flatten()]
        }
        (Some(saved), Some(now)) => {
            let nodes: Vec<&String> = saved.primaries.iter().map(|p| &p.node).collect();
            if nodes.iter().copied().ne(now.primaries.iter()) {
                return over(format!(
                    "the source's primaries are not those the checkpoint was made with ({} then, {} now)",
                    nodes.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", "),
                    now.primaries.join(", ")
                ));
            }
            if saved.slot_map != now.fingerprint {
                return over(
                    "the source's slots are not served as when the checkpoint was made (slots moved, a \
                     failover, or a primary restarted)"
                        .into(),
                );
            }
            saved.primaries.iter().map(|p| p.resume).collect()
        }
        (None, Some(_)) => return over("it was made for a standalone source, which is a cluster now".into()),
        (Some(_), None) => return over("it was made for a cluster source, which is standalone now".into()),
    };
    if at.iter().all(Option::is_none) {
        log::info!("--checkpoint {path}: the previous copy went through to the end; starting afresh");
        return Start::fresh(map);
    }
    let c = cp.counts;
    log::info!(
        "resuming from --checkpoint {path} (saved {}): {}; earlier runs: scanned={} copied={} skipped={} expired={} failed={}",
        cp.saved_at, describe(&at, map), c.scanned, c.copied, c.skipped, c.expired, c.failed
    );
    Start { at, base: c }
}

/// The resume points for the log: `pass P cursor C`, or that per primary.
fn describe(at: &[Option<Position>], map: Option<&SlotMap>) -> String {
    let one = |p: &Option<Position>| match p {
        Some(p) => format!("pass {} cursor {}", p.pass, p.cursor),
        None => "done".to_string(),
    };
    match map {
        None => at.iter().map(one).collect::<Vec<_>>().join(", "),
        Some(m) => m
            .primaries
            .iter()
            .zip(at)
            .map(|(node, p)| format!("{node} {}", one(p)))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// Writes a checkpoint atomically: `resume` holds each lane's resume point, for a standalone source
/// (one lane, kept with the server's run id) or for the primaries of the cluster `origin.map`.
pub fn save(
    path: &str,
    identity: &Identity,
    origin: Origin,
    resume: &[Option<Position>],
    counts: Snapshot,
) -> Result<(), String> {
    let Origin { map, run_id } = origin;
    let (resume, cluster) = match map {
        None => (Some(resume.first().copied().flatten()), None),
        Some(m) => {
            let primaries = m
                .primaries
                .iter()
                .zip(resume)
                .map(|(node, at)| PrimaryResume { node: node.clone(), resume: *at })
                .collect();
            (None, Some(ClusterResume { slot_map: m.fingerprint.clone(), primaries }))
        }
    };
    let cp = Checkpoint {
        version: VERSION,
        identity: identity.clone(),
        resume,
        run_id: run_id.filter(|_| map.is_none()).map(String::from),
        cluster,
        counts,
        saved_at: rfc3339(SystemTime::now()),
    };
    let bytes = serde_json::to_vec_pretty(&cp).expect("a checkpoint always serialises");
    files::replace_file(path, &bytes).map_err(|e| format!("cannot write --checkpoint {path}: {e}"))
}

/// The checkpoint thread: saves every [`SAVE_EVERY`] until `done` is disconnected, then once more.
pub fn keep_saving(
    path: &str,
    identity: &Identity,
    origin: Origin,
    ledger: &Ledger,
    counters: &Counters,
    base: Snapshot,
    done: Receiver<()>,
) {
    let save_now = || {
        // Counters first: a key counted a moment after its batch closed only makes them run ahead.
        // Keys in flight are not carried over: the next run scans them again.
        let counts = base.plus(counters.snapshot().settled());
        if let Err(e) = save(path, identity, origin, &ledger.resume_points(), counts) {
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

    fn identity() -> Identity {
        Identity {
            source: "a:1".into(),
            target: "b:2".into(),
            patterns: vec!["*".into()],
            types: vec![],
            on_conflict: "skip".into(),
            slots: None,
        }
    }

    /// `load` then `start`, as `copy` does.
    fn resume(path: &str, id: &Identity, map: Option<&SlotMap>) -> Result<Start, String> {
        load(path, id).map(|cp| start(cp, path, Origin { map, run_id: Some("r1") }))
    }

    #[test]
    fn a_checkpoint_of_one_shard_is_refused_for_another() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        let path = path.to_str().unwrap();
        let shard0 = Identity { slots: Some("shard 0/2 (slots 0-8191)".into()), ..identity() };
        save(path, &shard0, Origin { map: None, run_id: Some("r1") }, &[Some(P(0, 7))], Snapshot::default())
            .unwrap();
        assert!(load(path, &shard0).unwrap().is_some());
        let shard1 = Identity { slots: Some("shard 1/2 (slots 8192-16383)".into()), ..identity() };
        let refused = load(path, &shard1).unwrap_err();
        assert!(refused.contains("shard 0/2 (slots 0-8191)"), "{refused}");
        assert!(load(path, &identity()).is_err(), "a whole copy is another copy too");
    }

    #[test]
    fn a_restarted_server_or_primary_starts_the_scan_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        let path = path.to_str().unwrap();
        let id = identity();
        let counts =
            Snapshot { scanned: 5, copied: 5, skipped: 0, expired: 0, failed: 0, deleted: 0, evicted: 0 };
        save(path, &id, Origin { map: None, run_id: Some("r1") }, &[Some(P(0, 99))], counts).unwrap();
        let same = start(load(path, &id).unwrap(), path, Origin { map: None, run_id: Some("r1") });
        assert_eq!(same.at, [Some(P(0, 99))]);
        let restarted = start(load(path, &id).unwrap(), path, Origin { map: None, run_id: Some("r2") });
        assert_eq!((restarted.at, restarted.base), (vec![Some(P(0, 0))], Snapshot::default()));
        // A cluster primary's run id is part of the slot map's fingerprint.
        let owners = vec![Some("a:1".to_string()); crate::redis::cluster::SLOTS];
        let before = SlotMap::new(vec!["a:1".into()], &owners, ["r1"]);
        assert_ne!(before.fingerprint, SlotMap::new(vec!["a:1".into()], &owners, ["r2"]).fingerprint);
    }

    #[test]
    fn checkpoints_round_trip_and_refuse_another_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        let path = path.to_str().unwrap();
        let id = identity();
        assert_eq!(resume(path, &id, None).unwrap(), Start::fresh(None));
        let counts =
            Snapshot { scanned: 5, copied: 4, skipped: 1, expired: 0, failed: 0, deleted: 0, evicted: 0 };
        save(path, &id, Origin { map: None, run_id: Some("r1") }, &[Some(P(1, 99))], counts).unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.contains("\"resume\": {") && !text.contains("cluster"), "{text}");
        assert_eq!(resume(path, &id, None).unwrap(), Start { at: vec![Some(P(1, 99))], base: counts });
        let other = Identity { target: "c:3".into(), ..id.clone() };
        assert!(load(path, &other).unwrap_err().contains("another copy"));
        save(path, &id, Origin { map: None, run_id: Some("r1") }, &[None], counts).unwrap();
        assert!(std::fs::read_to_string(path).unwrap().contains("\"resume\": null"));
        assert_eq!(resume(path, &id, None).unwrap(), Start::fresh(None));
        std::fs::write(path, "garbage").unwrap();
        assert!(load(path, &id).is_err());
    }

    #[test]
    fn a_checkpoint_written_before_lanes_still_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        let path = path.to_str().unwrap();
        // Exactly what the version without lanes wrote.
        let old = r#"{
  "version": 1,
  "identity": {"source": "a:1", "target": "b:2", "patterns": ["*"], "types": [], "on_conflict": "skip"},
  "resume": {"pass": 0, "cursor": 4242},
  "counts": {"scanned": 7, "copied": 7, "skipped": 0, "expired": 0, "failed": 0},
  "saved_at": "2026-11-01T00:00:00Z"
}"#;
        std::fs::write(path, old).unwrap();
        let start = resume(path, &identity(), None).unwrap();
        assert_eq!(start.at, [Some(P(0, 4242))]);
        assert_eq!(start.base.copied, 7);
        std::fs::write(path, old.replace("\"version\": 1", "\"version\": 9")).unwrap();
        assert!(load(path, &identity()).unwrap_err().contains("format version 9"));
        // Neither a resume point nor a cluster: not a checkpoint.
        std::fs::write(path, old.replace("\"resume\": {\"pass\": 0, \"cursor\": 4242},", "")).unwrap();
        assert!(load(path, &identity()).unwrap_err().contains("no resume point"));
    }

    fn owners(split: usize) -> Vec<Option<String>> {
        (0..16384).map(|s| Some(if s < split { "h:1" } else { "h:2" }.to_string())).collect()
    }

    #[test]
    fn the_slot_map_fingerprint_changes_when_one_slot_moves() {
        let nodes = || vec!["h:1".to_string(), "h:2".to_string()];
        let a = SlotMap::new(nodes(), &owners(8000), []);
        assert_eq!(a, SlotMap::new(nodes(), &owners(8000), []));
        assert_eq!(a.fingerprint.len(), 16);
        assert_ne!(a.fingerprint, SlotMap::new(nodes(), &owners(8001), []).fingerprint);
        let mut uncovered = owners(8000);
        uncovered[3] = None;
        assert_ne!(a.fingerprint, SlotMap::new(nodes(), &uncovered, []).fingerprint);
    }

    #[test]
    fn a_cluster_checkpoint_resumes_only_on_the_same_slot_map() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        let path = path.to_str().unwrap();
        let id = identity();
        let nodes = || vec!["h:1".to_string(), "h:2".to_string()];
        let map = SlotMap::new(nodes(), &owners(8000), []);
        assert_eq!(resume(path, &id, Some(&map)).unwrap().at, [Some(P(0, 0)), Some(P(0, 0))]);
        let counts =
            Snapshot { scanned: 9, copied: 9, skipped: 0, expired: 0, failed: 0, deleted: 0, evicted: 0 };
        save(path, &id, Origin { map: Some(&map), run_id: None }, &[Some(P(0, 300)), None], counts).unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.contains(&map.fingerprint) && text.contains("\"node\": \"h:2\""), "{text}");
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(json.get("resume").is_none(), "a top-level resume point for a cluster: {text}");
        let cp = load(path, &id).unwrap().unwrap();
        assert_eq!((cp.resume, cp.cluster.as_ref().map(|c| c.primaries.len())), (None, Some(2)));
        assert_eq!(
            resume(path, &id, Some(&map)).unwrap(),
            Start { at: vec![Some(P(0, 300)), None], base: counts }
        );
        // One slot served elsewhere: from the beginning, the counters too (the new scan counts every key).
        let moved = SlotMap::new(nodes(), &owners(8001), []);
        let over = Start { at: vec![Some(P(0, 0)), Some(P(0, 0))], base: Snapshot::default() };
        assert_eq!(resume(path, &id, Some(&moved)).unwrap(), over);
        // Other primaries (here a third one), even with the same fingerprint: from the beginning.
        let more = SlotMap { primaries: vec!["h:1".into(), "h:2".into(), "h:3".into()], ..map.clone() };
        assert_eq!(resume(path, &id, Some(&more)).unwrap().at, [Some(P(0, 0)); 3]);
        // The source is standalone now.
        assert_eq!(
            resume(path, &id, None).unwrap(),
            Start { at: vec![Some(P(0, 0))], base: Snapshot::default() }
        );
        // A standalone checkpoint for a cluster source.
        save(path, &id, Origin { map: None, run_id: Some("r1") }, &[Some(P(0, 300))], counts).unwrap();
        assert_eq!(resume(path, &id, Some(&map)).unwrap(), over);
        // Every primary done: the copy went through; a fresh one starts.
        save(path, &id, Origin { map: Some(&map), run_id: None }, &[None, None], counts).unwrap();
        assert_eq!(resume(path, &id, Some(&map)).unwrap(), Start::fresh(Some(&map)));
    }
}
