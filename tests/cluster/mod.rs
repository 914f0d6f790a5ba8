//! Redis Cluster on either side: the same `copy` and `verify` against real clusters of three primaries
//! (tests/support/cluster.rs), for standalone -> cluster, cluster -> standalone and cluster ->
//! cluster, with SOURCE / TARGET given as any one node (`host:port` or `redis://`). Checked: every type
//! with its TTL, binary and hash-tag keys, thousands of keys over all slots, summary buckets, `verify`
//! agreeing and finding a missing and a changed key, the skip policy, `--mode typed`, `--keys-from`,
//! refusal of a db other than 0 on a cluster side, and nothing lost while the target or the source
//! cluster is resharded during a copy, or while a primary of the target or of the source fails over to
//! its replica (clusters of three primaries with a replica each), and `--checkpoint` from a cluster
//! source: a copy interrupted with SIGINT resumes each primary where it stopped, and starts over when
//! slots were resharded between the two runs. The source is only read.
//!
//! Not here: clusters with passwords (a TLS cluster is in tests/tls), a slot left without any primary.
//! One test checks the harness itself (start, fill, reshard), without the binary, so a harness fault is
//! not mistaken for a product one; the failover tests check the harness's failover on the way (the
//! replica is the primary afterwards, the source cluster still holds every key).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Output;
use std::thread;
use std::time::{Duration, Instant};

use redis::cluster::ClusterConnection;
use redis::{Cmd, Connection, ConnectionLike, RedisResult, Value};

use crate::support::*;

// ---------------------------------------------------------------------------------------------------
// One side of a copy: a standalone server or a cluster
// ---------------------------------------------------------------------------------------------------

/// A connection to either kind of side, so the support helpers (generic over `ConnectionLike`) can
/// compare a standalone server with a cluster.
enum AnyConn {
    /// A plain connection to one server.
    One(Connection),
    /// A cluster connection (routes by key, follows MOVED / ASK); boxed, it is much the larger.
    Cluster(Box<ClusterConnection>),
}

impl ConnectionLike for AnyConn {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        match self {
            AnyConn::One(c) => c.req_packed_command(cmd),
            AnyConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands(&mut self, cmd: &[u8], offset: usize, count: usize) -> RedisResult<Vec<Value>> {
        match self {
            AnyConn::One(c) => c.req_packed_commands(cmd, offset, count),
            AnyConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn req_command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            AnyConn::One(c) => c.req_command(cmd),
            AnyConn::Cluster(c) => c.req_command(cmd),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            AnyConn::One(c) => c.get_db(),
            AnyConn::Cluster(c) => c.get_db(),
        }
    }

    fn supports_pipelining(&self) -> bool {
        match self {
            AnyConn::One(c) => c.supports_pipelining(),
            AnyConn::Cluster(c) => c.supports_pipelining(),
        }
    }

    fn check_connection(&mut self) -> bool {
        match self {
            AnyConn::One(c) => c.check_connection(),
            AnyConn::Cluster(c) => c.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            AnyConn::One(c) => c.is_open(),
            AnyConn::Cluster(c) => c.is_open(),
        }
    }
}

/// A standalone server or a cluster, as SOURCE or TARGET.
#[derive(Clone, Copy)]
enum Side<'a> {
    /// One `redis-server`.
    One(&'a RedisServer),
    /// A cluster of three primaries.
    Cluster(&'a RedisCluster),
}

impl Side<'_> {
    fn conn(&self) -> AnyConn {
        match self {
            Side::One(s) => AnyConn::One(s.conn()),
            Side::Cluster(c) => AnyConn::Cluster(Box::new(c.conn())),
        }
    }

    /// Every key (over all primaries of a cluster).
    fn keys(&self) -> BTreeSet<Vec<u8>> {
        match self {
            Side::One(s) => all_keys(&mut s.conn()),
            Side::Cluster(c) => c.cluster_keys(),
        }
    }

    /// DBSIZE (summed over the primaries of a cluster).
    fn dbsize(&self) -> i64 {
        match self {
            Side::One(s) => dbsize(&mut s.conn()),
            Side::Cluster(c) => c.cluster_dbsize(),
        }
    }

    /// DEBUG DIGEST per node: unchanged means nothing was written.
    fn digests(&self) -> Vec<String> {
        match self {
            Side::One(s) => vec![digest(&mut s.conn())],
            Side::Cluster(c) => c.digests(),
        }
    }

    /// How many times `command` ran, summed over the nodes.
    fn command_calls(&self, command: &str) -> u64 {
        match self {
            Side::One(s) => command_calls(&mut s.conn(), command),
            Side::Cluster(c) => c.node_conns().iter_mut().map(|con| command_calls(con, command)).sum(),
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Running the binary, fixtures
// ---------------------------------------------------------------------------------------------------

/// `redis-ferry copy SOURCE TARGET --errors <dir>/errors.csv --progress 0 EXTRA...`
fn copy(source: &str, target: &str, dir: &tempfile::TempDir, extra: &[&str]) -> Output {
    ferry(copy_args(source, target, &errors_csv(dir), extra))
}

fn errors_csv(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("errors.csv")
}

/// Asserts a copy's exit code; on a mismatch the failure shows the error CSV too (which keys failed,
/// at which stage, why), since the temp dir holding it is gone once the test ends.
#[track_caller]
fn assert_copy_exit(out: &Output, dir: &tempfile::TempDir, code: i32) {
    if out.status.code() != Some(code) {
        let csv = std::fs::read_to_string(errors_csv(dir)).unwrap_or_else(|_| "(none)".to_string());
        let mut shown: String = csv.lines().take(20).collect::<Vec<_>>().join("\n");
        if csv.lines().count() > 20 {
            shown.push_str("\n...");
        }
        panic!("expected exit {code}\n{}\n--- error CSV ---\n{shown}", dump(out));
    }
}

/// Asserts that `target` holds every key of `want`, naming how many and a few that are missing.
#[track_caller]
fn assert_holds_all(target: &BTreeSet<Vec<u8>>, want: &[Vec<u8>]) {
    let missing: Vec<&Vec<u8>> = want.iter().filter(|k| !target.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} keys missing on the target, e.g. {:?}",
        missing.len(),
        want.len(),
        show_keys(missing.iter().take(10).copied())
    );
}

/// `redis-ferry verify SOURCE TARGET`; asserts exit 0 and no difference; returns the parsed line.
#[track_caller]
fn assert_verified(source: &str, target: &str) -> VerifySummary {
    let out = ferry(["verify", source, target]);
    assert_exit(&out, 0);
    let v = verify_summary(&out);
    assert_eq!((v.missing, v.different, v.ttl, v.extra, v.errors), (0, 0, 0, 0, 0), "{}", v.line);
    v
}

/// `n` string keys `{prefix}{i}`, every tenth with a TTL; through a pipeline on a standalone server,
/// one command at a time on a cluster.
fn fill_plain_keys(con: &mut impl ConnectionLike, prefix: &str, n: usize) -> Vec<Vec<u8>> {
    let keys: Vec<Vec<u8>> = (0..n).map(|i| format!("{prefix}{i}").into_bytes()).collect();
    for (c, chunk) in keys.chunks(1000).enumerate() {
        let mut p = redis::pipe();
        for (i, k) in chunk.iter().enumerate() {
            p.cmd("SET").arg(k).arg(format!("v{}", c * 1000 + i)).ignore();
            if i % 10 == 0 {
                p.cmd("PEXPIRE").arg(k).arg(600_000 + i).ignore();
            }
        }
        exec_pipe(con, &p);
    }
    keys
}

/// Every core type with TTLs and awkward names (fill_every_type), hash-tag keys and 3000 plain keys
/// spread over all slots. Returns every key written.
fn fill_fixture(con: &mut impl ConnectionLike) -> Vec<Vec<u8>> {
    let mut keys = fill_every_type(con, false);
    keys.extend(fill_hash_tag_keys(con));
    keys.extend(fill_plain_keys(con, "plain:", 3000));
    keys
}

/// Asserts that every primary of the cluster holds some keys (so the keys really are spread).
#[track_caller]
fn assert_spread(c: &RedisCluster) {
    let sizes = c.node_dbsizes();
    assert!(sizes.iter().all(|&n| n > 0), "some primary holds no key: DBSIZE per node {sizes:?}");
}

/// Fills `src`, copies it to `dst` with the default flags, and checks the promise: every key copied
/// with type, value and TTL, buckets add up, `verify` agrees, the source is unchanged.
fn round_trip(src: Side, source: &str, dst: Side, target: &str) {
    let keys = fill_fixture(&mut src.conn());
    let n = keys.len() as u64;
    assert_eq!(src.dbsize(), n as i64, "fixture wrote duplicate keys");
    let before = src.digests();
    let dir = tempfile::tempdir().unwrap();

    let out = copy(source, target, &dir, &[]);
    assert_copy_exit(&out, &dir, 0);
    let sum = summary(&out);
    assert_eq!(buckets(&sum), (n, n, 0, 0, 0), "{}", sum.line);
    assert_eq!(show_keys(&dst.keys()), show_keys(&set_of(&keys)), "target holds different keys");
    assert_same(&mut src.conn(), &mut dst.conn(), &keys);
    if let Side::Cluster(c) = dst {
        assert_spread(c);
    }
    assert!(!errors_csv(&dir).exists(), "error CSV created although nothing failed");

    let v = assert_verified(source, target);
    assert_eq!(v.matched, n, "{}", v.line);
    assert_eq!(src.digests(), before, "the source changed");
}

// ---------------------------------------------------------------------------------------------------
// The harness itself
// ---------------------------------------------------------------------------------------------------

/// The cluster harness works without the binary: three primaries own all slots, a fill spreads over
/// them, and a reshard (foreground and background) moves slots with their keys and loses none.
#[test]
fn cluster_harness_starts_fills_and_reshards() {
    let c = RedisCluster::new();
    assert_eq!(c.nodes().len(), 3);
    let slots: Vec<usize> = (0..3).map(|i| c.slots_of(i)).collect();
    assert_eq!(slots.iter().sum::<usize>(), CLUSTER_SLOTS, "{slots:?}");
    assert!(slots.iter().all(|&n| n > 5000), "{slots:?}");

    let mut keys = c.fill_strings("h:", 3000);
    keys.extend(fill_hash_tag_keys(&mut c.conn()));
    assert_eq!(c.cluster_dbsize(), keys.len() as i64);
    assert_eq!(show_keys(&c.cluster_keys()), show_keys(&set_of(&keys)));
    assert_spread(&c);
    let before = c.node_dbsizes();

    c.reshard(0, 1, 500);
    assert_eq!((c.slots_of(0), c.slots_of(1)), (slots[0] - 500, slots[1] + 500));
    let after = c.node_dbsizes();
    assert!(after[0] < before[0] && after[1] > before[1], "no key moved: {before:?} -> {after:?}");
    assert_eq!(show_keys(&c.cluster_keys()), show_keys(&set_of(&keys)), "keys lost by the reshard");

    let bg = c.reshard_in_background(&[(2, 0, 300), (1, 2, 100)]);
    // A cluster connection keeps working (MOVED / ASK followed) while slots move.
    let mut con = c.conn();
    while !bg.finished() {
        let v: Vec<u8> = q(&mut con, &[b"GET", b"h:7"]);
        assert_eq!(v, b"value-h:7");
        thread::sleep(Duration::from_millis(5));
    }
    bg.wait();
    assert_eq!(
        (c.slots_of(0), c.slots_of(1), c.slots_of(2)),
        (slots[0] - 200, slots[1] + 400, slots[2] - 200)
    );
    assert_eq!(show_keys(&c.cluster_keys()), show_keys(&set_of(&keys)), "keys lost by the reshard");
    for k in keys.iter().filter(|k| k.starts_with(b"h:")) {
        let v: Vec<u8> = q(&mut con, &[b"GET", k]);
        assert_eq!(v, [b"value-".as_slice(), k].concat());
    }
}

// ---------------------------------------------------------------------------------------------------
// Every type, TTLs, awkward and hash-tag keys, in each direction
// ---------------------------------------------------------------------------------------------------

#[test]
fn cluster_standalone_to_cluster_copies_every_key_with_its_ttl() {
    let (s, d) = (RedisServer::new(), RedisCluster::new());
    // TARGET as the URL of the first node.
    round_trip(Side::One(&s), &s.addr(), Side::Cluster(&d), &d.url());
}

#[test]
fn cluster_cluster_to_standalone_copies_every_key_with_its_ttl() {
    let (s, d) = (RedisCluster::new(), RedisServer::new());
    // SOURCE as host:port of the last node: any node finds the whole cluster.
    round_trip(Side::Cluster(&s), &s.addr_of(2), Side::One(&d), &d.url());
}

#[test]
fn cluster_cluster_to_cluster_copies_every_key_with_its_ttl() {
    let (s, d) = RedisCluster::pair();
    round_trip(Side::Cluster(&s), &s.url_of(1), Side::Cluster(&d), &d.addr_of(2));
}

// ---------------------------------------------------------------------------------------------------
// Skip policy, db flags, verify
// ---------------------------------------------------------------------------------------------------

#[test]
fn cluster_skip_policy_leaves_keys_already_on_the_cluster_target() {
    let src = RedisServer::new();
    let dst = RedisCluster::new();
    let mut s = src.conn();
    let mut keys = fill_strings(&mut s, "k:", 1000);
    keys.extend(fill_hash_tag_keys(&mut s));
    let n = keys.len() as u64;
    let mut d = dst.conn();
    // Three keys already on the target: one with a TTL, one of another type, one with a hash tag.
    run(&mut d, &[b"SET", b"k:1", b"from the target", b"EX", b"1000"]);
    run(&mut d, &[b"RPUSH", b"k:2", b"a list on the target"]);
    run(&mut d, &[b"SET", b"{user:1000}:name", b"Grace"]);
    let dir = tempfile::tempdir().unwrap();

    let out = copy(&src.addr(), &dst.url(), &dir, &[]);
    assert_copy_exit(&out, &dir, 0);
    let sum = summary(&out);
    assert_eq!(buckets(&sum), (n, n - 3, 3, 0, 0), "{}", sum.line);
    assert_eq!(q::<Vec<u8>>(&mut d, &[b"GET", b"k:1"]), b"from the target");
    assert!(pttl(&mut d, b"k:1") > 0, "skipped key lost its TTL");
    assert_eq!(q::<String>(&mut d, &[b"TYPE", b"k:2"]), "list");
    assert_eq!(q::<Vec<u8>>(&mut d, &[b"GET", b"{user:1000}:name"]), b"Grace");
    let there: [&[u8]; 3] = [b"k:1", b"k:2", b"{user:1000}:name"];
    let others: Vec<Vec<u8>> = keys.iter().filter(|k| !there.contains(&k.as_slice())).cloned().collect();
    assert_eq!(others.len() as u64, n - 3);
    assert_same(&mut s, &mut d, &others);
    assert_eq!(show_keys(&dst.cluster_keys()), show_keys(&set_of(&keys)));

    // A second run finds every key on the target, on every node.
    let digests = dst.digests();
    let out = copy(&src.addr(), &dst.url(), &dir, &[]);
    assert_copy_exit(&out, &dir, 0);
    let sum = summary(&out);
    assert_eq!(buckets(&sum), (n, 0, n, 0, 0), "{}", sum.line);
    assert_eq!(dst.digests(), digests, "a run that skipped every key changed the target");
}

/// True when INFO keyspace lists no db at all (nothing written to any db).
fn keyspace_empty(con: &mut Connection) -> bool {
    let info: String = q(con, &[b"INFO", b"keyspace"]);
    !info.lines().any(|l| l.starts_with("db"))
}

#[test]
fn cluster_db_other_than_0_on_a_cluster_side_is_refused() {
    let src = RedisServer::new();
    let cluster = RedisCluster::new();
    let other = RedisServer::new();
    fill_strings(&mut src.conn(), "db:", 50);
    let src_digest = digest(&mut src.conn());
    let dir = tempfile::tempdir().unwrap();

    // Cluster TARGET: --target-db 1, or a URL naming db 1.
    let out = copy(&src.addr(), &cluster.url(), &dir, &["--target-db", "1"]);
    assert_refused_naming(&out, &["--target-db"]);
    let url_db1 = format!("{}/1", cluster.url());
    let out = copy(&src.addr(), &url_db1, &dir, &[]);
    assert_refused_naming(&out, &[&url_db1, &cluster.addr(), "target"]);
    assert_eq!(cluster.cluster_dbsize(), 0, "the cluster target was written although the input was refused");
    assert!(cluster.node_conns().iter_mut().all(keyspace_empty), "a refused run wrote to the cluster");
    assert_eq!(digest(&mut src.conn()), src_digest);

    // Cluster SOURCE: --source-db 1, or a URL naming db 1.
    cluster.fill_strings("db:", 50);
    let cluster_digests = cluster.digests();
    let out = copy(&cluster.addr(), &other.url(), &dir, &["--source-db", "1"]);
    assert_refused_naming(&out, &["--source-db"]);
    let url_db1 = format!("{}/1", cluster.url_of(1));
    let out = copy(&url_db1, &other.url(), &dir, &[]);
    assert_refused_naming(&out, &[&url_db1, &cluster.addr_of(1), "source"]);
    assert!(keyspace_empty(&mut other.conn()), "the target was written although the input was refused");
    assert_eq!(cluster.digests(), cluster_digests);
    assert!(!errors_csv(&dir).exists(), "a refused run created the error CSV");

    // The db flag of the standalone side still applies: standalone db 1 -> cluster.
    let mut s = src.conn();
    run(&mut s, &[b"SELECT", b"1"]);
    let keys = fill_strings(&mut s, "one:", 30);
    let out = copy(&src.addr(), &cluster.url(), &dir, &["--source-db", "1"]);
    assert_copy_exit(&out, &dir, 0);
    assert_eq!(buckets(&summary(&out)), (30, 30, 0, 0, 0));
    assert_same(&mut s, &mut cluster.conn(), &keys);
    assert_eq!(cluster.cluster_dbsize(), 80);
}

#[test]
fn cluster_onto_itself_through_another_node_is_refused_for_copy_and_verify() {
    let cluster = RedisCluster::new();
    cluster.fill_strings("self:", 300);
    let before = cluster.digests();
    let dir = tempfile::tempdir().unwrap();
    let out = copy(&cluster.url_of(0), &cluster.url_of(1), &dir, &["--on-conflict", "replace"]);
    assert_refused_naming(&out, &["are nodes of one Redis Cluster"]);
    let out = ferry(["verify", &cluster.addr_of(2), &cluster.addr_of(0)]);
    assert_refused_naming(&out, &["are nodes of one Redis Cluster"]);
    assert_eq!(cluster.digests(), before, "the cluster was written");
}

#[test]
fn cluster_verify_finds_a_missing_and_a_changed_key() {
    let (src, dst) = RedisCluster::pair();
    let mut keys = fill_every_type(&mut src.conn(), false);
    keys.extend(src.fill_strings("v:", 2000));
    let n = keys.len() as u64;
    let dir = tempfile::tempdir().unwrap();
    let out = copy(&src.addr(), &dst.url(), &dir, &[]);
    assert_copy_exit(&out, &dir, 0);
    assert_eq!(buckets(&summary(&out)), (n, n, 0, 0, 0));
    let before = src.digests();

    let verify = || ferry(["verify", &src.url_of(2), &dst.addr_of(1)]);
    let out = verify();
    assert_exit(&out, 0);
    let v = verify_summary(&out);
    assert_eq!((v.matched, v.missing, v.different, v.ttl, v.errors), (n, 0, 0, 0, 0), "{}", v.line);

    let mut d = dst.conn();
    run(&mut d, &[b"HSET", b"hash:big", b"field-7", b"changed"]);
    let out = verify();
    assert_exit(&out, 1);
    let v = verify_summary(&out);
    assert_eq!((v.matched, v.missing, v.different), (n - 1, 0, 1), "{}", v.line);

    run(&mut d, &[b"DEL", b"v:1234"]);
    let out = verify();
    assert_exit(&out, 1);
    let v = verify_summary(&out);
    assert_eq!((v.matched, v.missing, v.different), (n - 2, 1, 1), "{}", v.line);
    assert_eq!(src.digests(), before, "verify changed the source");
}

// ---------------------------------------------------------------------------------------------------
// Resharding during a copy
// ---------------------------------------------------------------------------------------------------

/// Keys in the resharding tests: enough that the copy is still under way when the reshard starts.
const RESHARD_KEYS: usize = 200_000;
/// `--rate` for those copies: they take at least RESHARD_KEYS / RESHARD_RATE seconds (5 s), so the
/// reshard (2-3 s on an idle machine) starts and moves its first slots while the copy runs.
const RESHARD_RATE: &str = "40000";
/// The reshard run during the copy: 2000 slots from node 0 to node 1, then 1000 from node 2 to node 0.
const RESHARD_MOVES: [(usize, usize, usize); 2] = [(0, 1, 2000), (2, 0, 1000)];

/// Waits until `target_size()` is above 0 (the copy is writing) and hands the run back; panics with
/// its output if it ends first.
fn wait_until_writing(run: FerryProcess, target_size: impl FnMut() -> i64) -> FerryProcess {
    wait_until_written(run, 1, target_size)
}

/// Waits until `target_size()` is at least `keys` and hands the run back; panics with its output if
/// it ends first.
fn wait_until_written(
    mut run: FerryProcess,
    keys: i64,
    mut target_size: impl FnMut() -> i64,
) -> FerryProcess {
    let deadline = Instant::now() + Duration::from_secs(30);
    while target_size() < keys {
        if !run.running() {
            panic!("redis-ferry exited before writing {keys} keys\n{}", dump(&run.wait()));
        }
        assert!(Instant::now() < deadline, "redis-ferry wrote fewer than {keys} keys within 30 s");
        thread::sleep(Duration::from_millis(10));
    }
    run
}

/// Asserts that the cluster `dst` holds exactly `keys`, and no other key.
#[track_caller]
fn assert_cluster_holds_exactly(dst: &RedisCluster, keys: &[Vec<u8>]) {
    let on_target = dst.cluster_keys();
    assert_holds_all(&on_target, keys);
    assert_eq!(on_target, set_of(keys), "the target holds other keys than the source");
    assert_eq!(dst.cluster_dbsize(), keys.len() as i64);
}

/// Runs a copy with `args`, starts a reshard of `c` once the copy is writing (`target_size` counts the
/// keys on the target) and returns the copy's output once both are done.
fn copy_while_resharding(args: Vec<String>, target_size: impl FnMut() -> i64, c: &RedisCluster) -> Output {
    let mut run = wait_until_writing(spawn_ferry(args), target_size);
    let took = reshard_during(&mut run, c).wait();
    // For the record: did the copy outlast the whole reshard?
    eprintln!("reshard took {took:?}; copy still running at its end: {}", run.running());
    run.wait()
}

/// Starts [`RESHARD_MOVES`] on `c` in the background and waits until the first slot has moved (node
/// `to` of the first move owns more slots); asserts that the copy is still running then, so the
/// reshard really happens during the copy.
fn reshard_during(run: &mut FerryProcess, c: &RedisCluster) -> Resharding {
    let to = RESHARD_MOVES[0].1;
    let owned = c.slots_of(to);
    let reshard = c.reshard_in_background(&RESHARD_MOVES);
    while c.slots_of(to) == owned && !reshard.finished() {
        thread::sleep(Duration::from_millis(10));
    }
    if c.slots_of(to) == owned {
        reshard.wait();
        panic!("the reshard finished without moving a slot");
    }
    assert!(
        run.running(),
        "the copy ended before the reshard moved its first slot: the test proves nothing; lower RESHARD_RATE"
    );
    reshard
}

/// Every 100th key: a sample compared value by value (all keys are compared by `verify`).
fn sample(keys: &[Vec<u8>]) -> Vec<Vec<u8>> {
    keys.iter().step_by(100).cloned().collect()
}

#[test]
fn cluster_reshard_of_the_target_during_a_copy_loses_nothing() {
    let src = RedisServer::new();
    let dst = RedisCluster::new();
    let mut s = src.conn();
    let keys = fill_strings(&mut s, "rs:", RESHARD_KEYS);
    let n = keys.len() as u64;
    let slots_before: Vec<usize> = (0..3).map(|i| dst.slots_of(i)).collect();
    let dir = tempfile::tempdir().unwrap();

    let args = copy_args(&src.addr(), &dst.url(), &errors_csv(&dir), &["--rate", RESHARD_RATE]);
    let out = copy_while_resharding(args, || dst.cluster_dbsize(), &dst);
    assert_copy_exit(&out, &dir, 0);
    let sum = summary(&out);
    assert_cluster_holds_exactly(&dst, &keys);
    assert_eq!(buckets(&sum), (n, n, 0, 0, 0), "{}", sum.line);
    assert_eq!(
        (0..3).map(|i| dst.slots_of(i)).collect::<Vec<_>>(),
        [slots_before[0] - 1000, slots_before[1] + 2000, slots_before[2] - 1000],
        "the reshard did not move the slots"
    );
    assert_same(&mut s, &mut dst.conn(), &sample(&keys));
    assert!(!errors_csv(&dir).exists(), "error CSV created although nothing failed");
    let v = assert_verified(&src.addr(), &dst.url());
    assert_eq!(v.matched, n, "{}", v.line);
}

#[test]
fn cluster_reshard_of_the_source_during_a_copy_loses_nothing() {
    let src = RedisCluster::new();
    let dst = RedisServer::new();
    let keys = src.fill_strings("rs:", RESHARD_KEYS);
    let n = keys.len() as u64;
    let mut d = dst.conn();
    let dir = tempfile::tempdir().unwrap();

    let args = copy_args(&src.addr(), &dst.url(), &errors_csv(&dir), &["--rate", RESHARD_RATE]);
    let out = copy_while_resharding(args, || dbsize(&mut d), &src);
    assert_copy_exit(&out, &dir, 0);
    let sum = summary(&out);
    assert_eq!(src.cluster_dbsize(), n as i64, "the reshard lost source keys");
    let on_target = all_keys(&mut d);
    assert_holds_all(&on_target, &keys);
    assert_eq!(on_target, set_of(&keys), "the target holds other keys than the source");
    assert_same(&mut src.conn(), &mut d, &sample(&keys));
    let v = assert_verified(&src.addr_of(1), &dst.addr());
    assert_eq!(v.matched, n, "{}", v.line);
    // A key may be seen twice while its slot moves (the second time it is skipped), but each is
    // created on the target once, by this run: copied counts every key, and none failed.
    assert_eq!((sum.copied, sum.failed), (n, 0), "{}", sum.line);
    assert!(sum.scanned >= n, "{}", sum.line);
}

// ---------------------------------------------------------------------------------------------------
// A primary failing over to its replica during a copy
// ---------------------------------------------------------------------------------------------------

/// Keys in the failover tests: with [`FAILOVER_RATE`] the copy takes at least 5 s, so it is still
/// writing when the primary is stopped (after [`FAILOVER_KILL_AT`] keys, about 0.5 s in).
const FAILOVER_KEYS: usize = 100_000;
/// `--rate` for those copies.
const FAILOVER_RATE: &str = "20000";
/// Keys on the target when the primary is stopped: the copy is well under way (the scan of the
/// primary stopped on a source is part done), with most of the keys still to come.
const FAILOVER_KILL_AT: i64 = 10_000;

/// Picks two primaries of `c`: the node given to redis-ferry (which stays up) and the one to stop;
/// returns them with the stopped one's replica.
fn failover_roles(c: &RedisCluster) -> (usize, usize, usize) {
    let primaries = c.primaries();
    assert_eq!(primaries.len(), 3, "{primaries:?}");
    let (entry, victim) = (primaries[0], primaries[1]);
    let replicas = c.replicas_of(victim);
    assert_eq!(replicas.len(), 1, "replicas of node {victim}: {replicas:?}");
    (entry, victim, replicas[0])
}

/// Stops primary `victim` of `c` (SIGTERM) while `run` copies, asserts that the copy is still running
/// once the node is gone (else the test proves nothing), waits for the failover and checks that
/// `heir`, the replica, is a primary now.
fn fail_over_during(run: &mut FerryProcess, c: &mut RedisCluster, victim: usize, heir: usize) {
    let port = c.node(victim).port();
    c.kill_node(victim);
    let running = run.running();
    eprintln!("primary {port} stopped; copy still running: {running}");
    assert!(
        running,
        "the copy ended before the primary was stopped: the test proves nothing; lower FAILOVER_RATE"
    );
    let took = c.wait_failover();
    // For the record: was the copy still running when the replica had taken over?
    eprintln!("failover took {took:?}; copy still running at its end: {}", run.running());
    assert!(c.primaries().contains(&heir), "replica {heir} did not take over: primaries {:?}", c.primaries());
}

#[test]
fn cluster_failover_of_a_target_primary_during_a_copy_loses_nothing() {
    let src = RedisServer::new();
    let mut dst = RedisCluster::with_replicas(3, 1);
    let mut s = src.conn();
    let keys = fill_strings(&mut s, "fo:", FAILOVER_KEYS);
    let n = keys.len() as u64;
    let (entry, victim, heir) = failover_roles(&dst);
    let target = dst.addr_of(entry);
    let dir = tempfile::tempdir().unwrap();

    let run = spawn_ferry(copy_args(&src.addr(), &target, &errors_csv(&dir), &["--rate", FAILOVER_RATE]));
    let mut run = wait_until_written(run, FAILOVER_KILL_AT, || dst.cluster_dbsize());
    fail_over_during(&mut run, &mut dst, victim, heir);
    let out = run.wait();
    assert_copy_exit(&out, &dir, 0);
    let sum = summary(&out);
    // On SIGTERM a Redis 7 primary pauses writes and waits for its replica to acknowledge everything
    // before it exits (SHUTDOWN semantics): no acknowledged write is lost with it, and the writes it
    // held back were never run, so they reach the new primary as new keys. (A SIGKILL could lose
    // acknowledged writes, or leave a write run but unanswered, counted as skipped when resent.)
    assert_cluster_holds_exactly(&dst, &keys);
    assert_eq!((sum.copied, sum.failed), (n, 0), "{}", sum.line);
    assert!(sum.scanned >= n, "{}", sum.line);
    assert_same(&mut s, &mut dst.conn(), &sample(&keys));
    assert!(!errors_csv(&dir).exists(), "error CSV created although nothing failed");
    let v = assert_verified(&src.addr(), &target);
    assert_eq!(v.matched, n, "{}", v.line);
    // Any node gives the cluster, a replica too: its primaries are the ones written.
    let replica = dst.replicas_of(entry)[0];
    let out = copy(&src.addr(), &dst.addr_of(replica), &dir, &["--dry-run"]);
    assert_copy_exit(&out, &dir, 0);
    assert_eq!(summary(&out).skipped, n);
}

#[test]
fn cluster_failover_of_a_source_primary_during_a_copy_loses_nothing() {
    let mut src = RedisCluster::with_replicas(3, 1);
    let dst = RedisServer::new();
    let keys = src.fill_strings("fo:", FAILOVER_KEYS);
    let n = keys.len() as u64;
    // Every key on a replica too, so the failover itself loses none (replication is asynchronous).
    src.wait_replicated();
    let (entry, victim, heir) = failover_roles(&src);
    let source = src.addr_of(entry);
    let mut d = dst.conn();
    let dir = tempfile::tempdir().unwrap();

    let run = spawn_ferry(copy_args(&source, &dst.url(), &errors_csv(&dir), &["--rate", FAILOVER_RATE]));
    let mut run = wait_until_written(run, FAILOVER_KILL_AT, || dbsize(&mut d));
    fail_over_during(&mut run, &mut src, victim, heir);
    let out = run.wait();
    assert_copy_exit(&out, &dir, 0);
    let sum = summary(&out);
    assert_eq!(src.cluster_dbsize(), n as i64, "the failover lost source keys");
    // The scan of the stopped primary was given up and its slots read again from the replica.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lost = format!("source primary 127.0.0.1:{} was lost during its scan", src.node(victim).port());
    assert!(stderr.contains(&lost), "no warning {lost:?}\n{}", dump(&out));
    assert!(
        stderr.contains("slots of the source changed primary during the scan"),
        "no re-read\n{}",
        dump(&out)
    );
    let on_target = all_keys(&mut d);
    assert_holds_all(&on_target, &keys);
    assert_eq!(on_target, set_of(&keys), "the target holds other keys than the source");
    assert_same(&mut src.conn(), &mut d, &sample(&keys));
    assert!(!errors_csv(&dir).exists(), "error CSV created although nothing failed");
    let v = assert_verified(&source, &dst.addr());
    assert_eq!(v.matched, n, "{}", v.line);
    // Keys of the stopped primary scanned before it went are read again from its replica (and
    // skipped then), but each is created on the target once, by this run.
    assert_eq!((sum.copied, sum.failed), (n, 0), "{}", sum.line);
    assert!(sum.scanned >= n, "{}", sum.line);
}

// ---------------------------------------------------------------------------------------------------
// --mode typed, --keys-from
// ---------------------------------------------------------------------------------------------------

#[test]
fn cluster_typed_mode_copies_every_type_between_clusters() {
    let (s, d) = RedisCluster::pair();
    let (src, dst) = (Side::Cluster(&s), Side::Cluster(&d));
    let mut keys = fill_every_type(&mut src.conn(), false);
    keys.extend(fill_hash_tag_keys(&mut src.conn()));
    keys.extend(s.fill_strings("t:", 500));
    let n = keys.len() as u64;
    let before = src.digests();
    let dir = tempfile::tempdir().unwrap();

    let out = copy(&s.addr(), &d.url(), &dir, &["--mode", "typed"]);
    assert_copy_exit(&out, &dir, 0);
    assert_eq!(buckets(&summary(&out)), (n, n, 0, 0, 0));
    assert_eq!(src.command_calls("dump"), 0, "--mode typed DUMPed");
    assert_eq!(dst.command_calls("restore"), 0, "--mode typed RESTOREd");
    // No temporary key left behind on any node, and no other extra key.
    assert_eq!(show_keys(&dst.keys()), show_keys(&set_of(&keys)));
    assert_same(&mut src.conn(), &mut dst.conn(), &keys);
    assert_verified(&s.addr(), &d.addr());
    assert_eq!(src.digests(), before, "the source changed");
}

#[test]
fn cluster_keys_from_a_file_copies_exactly_those_keys_between_clusters() {
    let (src, dst) = RedisCluster::pair();
    let mut s = src.conn();
    let plain = src.fill_strings("kf:", 500);
    let mut tagged = fill_hash_tag_keys(&mut s);
    let awkward = awkward_keys();
    for k in &awkward {
        run(&mut s, &[b"SET", k, b"awkward", b"PX", b"800000"]);
    }
    // An error CSV as redis-ferry writes it (escaped keys), so binary keys survive: 100 plain keys,
    // the tagged and awkward ones, and one key that is not on the source.
    let mut listed: Vec<Vec<u8>> = plain.iter().step_by(5).cloned().collect();
    listed.append(&mut tagged);
    listed.extend(awkward);
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("keys.csv");
    let mut w = csv::Writer::from_path(&list).unwrap();
    w.write_record(["time", "key", "stage", "error", "message"]).unwrap();
    for k in listed.iter().map(Vec::as_slice).chain([&b"kf:not-on-source"[..]]) {
        w.write_record(["2024-01-01T00:00:00Z", &escape_key(k), "write", "IO", "retry me"]).unwrap();
    }
    w.flush().unwrap();
    drop(w);
    let n = listed.len() as u64;

    let out = copy(&src.url_of(2), &dst.url_of(1), &dir, &["--keys-from", &path_str(&list)]);
    assert_copy_exit(&out, &dir, 0);
    let sum = summary(&out);
    // The key that is not on the source "vanished before it could be written": expired.
    assert_eq!(buckets(&sum), (n + 1, n, 0, 1, 0), "{}", sum.line);
    assert_eq!(show_keys(&dst.cluster_keys()), show_keys(&set_of(&listed)));
    assert_same(&mut s, &mut dst.conn(), &listed);
}

// ---------------------------------------------------------------------------------------------------
// --checkpoint with a cluster source
// ---------------------------------------------------------------------------------------------------

/// Keys in the checkpoint tests: with [`CHECKPOINT_RATE`] a whole copy takes at least 7.5 s.
const CHECKPOINT_KEYS: usize = 150_000;
/// `--rate` for those copies.
const CHECKPOINT_RATE: &str = "20000";
/// Keys on the target when the first run is interrupted: every primary's scan is under way, most of
/// the keys are still to come.
const CHECKPOINT_STOP_AT: i64 = 30_000;

/// A cluster source of [`CHECKPOINT_KEYS`] keys copied to a standalone server with `--checkpoint`,
/// the copy interrupted (SIGINT) once [`CHECKPOINT_STOP_AT`] keys are on the target.
struct Interrupted {
    src: RedisCluster,
    dst: RedisServer,
    keys: Vec<Vec<u8>>,
    dir: tempfile::TempDir,
    /// The checkpoint file.
    cp: String,
    /// The arguments of the copy (the second run is the same command).
    args: Vec<String>,
    /// Keys on the target after the first run.
    on_target: u64,
}

impl Interrupted {
    fn new() -> Interrupted {
        let src = RedisCluster::new();
        let dst = RedisServer::new();
        let keys = src.fill_strings("cp:", CHECKPOINT_KEYS);
        assert_spread(&src);
        let dir = tempfile::tempdir().unwrap();
        let cp = path_str(&dir.path().join("checkpoint.json"));
        let args = copy_args(
            &src.addr(),
            &dst.addr(),
            &errors_csv(&dir),
            &["--checkpoint", &cp, "--rate", CHECKPOINT_RATE],
        );
        let mut d = dst.conn();
        let mut first = wait_until_written(spawn_ferry(args.clone()), CHECKPOINT_STOP_AT, || dbsize(&mut d));
        first.signal("INT");
        let out = first.wait();
        assert_copy_exit(&out, &dir, 130);
        let on_target = dbsize(&mut d) as u64;
        assert!(
            on_target < CHECKPOINT_KEYS as u64,
            "the first run copied everything: {}",
            summary(&out).line
        );
        Interrupted { src, dst, keys, dir, cp, args, on_target }
    }

    /// The checkpoint file, parsed.
    fn checkpoint(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(&self.cp).expect("the checkpoint was written");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    /// Each primary's address and resume point in the checkpoint (`null`: done).
    fn saved_primaries(&self) -> Vec<(String, serde_json::Value)> {
        let cp = self.checkpoint();
        assert!(cp.get("resume").is_none(), "a single resume point for a cluster source: {cp}");
        let primaries = cp["cluster"]["primaries"].as_array().unwrap_or_else(|| panic!("no primaries: {cp}"));
        primaries.iter().map(|p| (p["node"].as_str().unwrap().to_string(), p["resume"].clone())).collect()
    }

    /// Runs the same command again; asserts exit 0, a target equal to the source (by key, and by
    /// `verify`), that every key not yet on the target was copied once, and a checkpoint saying done.
    fn run_again(&self) -> (Summary, Output) {
        let out = ferry(&self.args);
        assert_copy_exit(&out, &self.dir, 0);
        let sum = summary(&out);
        let n = CHECKPOINT_KEYS as u64;
        assert_eq!((sum.copied, sum.failed), (n - self.on_target, 0), "{}", sum.line);
        let mut d = self.dst.conn();
        assert_eq!(dbsize(&mut d), n as i64);
        assert_eq!(all_keys(&mut d), set_of(&self.keys), "the target holds other keys than the source");
        assert_same(&mut self.src.conn(), &mut d, &sample(&self.keys));
        let v = assert_verified(&self.src.addr(), &self.dst.addr());
        assert_eq!(v.matched, n, "{}", v.line);
        let done = self.saved_primaries();
        assert!(done.iter().all(|(_, at)| at.is_null()), "not every primary done: {done:?}");
        (sum, out)
    }
}

#[test]
fn cluster_checkpoint_resumes_each_primary_where_it_stopped() {
    let run = Interrupted::new();
    let saved = run.saved_primaries();
    let mut nodes: Vec<String> = run.src.nodes().iter().map(|p| format!("127.0.0.1:{p}")).collect();
    nodes.sort();
    assert_eq!(
        saved.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
        nodes,
        "one lane per primary, by address"
    );
    assert!(saved.iter().any(|(_, at)| at.is_object()), "no primary left to resume: {saved:?}");

    let (sum, out) = run.run_again();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("resuming from --checkpoint"), "did not resume\n{}", dump(&out));
    // Resumed, not restarted: what was left, plus at most a few pages per primary again.
    let n = CHECKPOINT_KEYS as u64;
    assert!(sum.scanned < n * 9 / 10, "scanned {} of {n} again: {}", sum.scanned, sum.line);
    assert!(sum.scanned >= n - run.on_target, "{}", sum.line);
}

#[test]
fn cluster_checkpoint_after_slots_moved_scans_everything_again() {
    let run = Interrupted::new();
    let before = run.checkpoint()["cluster"]["slot_map"].clone();
    run.src.reshard(0, 1, 100);
    assert_eq!(run.src.cluster_dbsize(), CHECKPOINT_KEYS as i64, "the reshard lost source keys");

    let (sum, out) = run.run_again();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("slots are not served as when the checkpoint was made"),
        "no warning about the moved slots\n{}",
        dump(&out)
    );
    assert!(!stderr.contains("resuming from --checkpoint"), "resumed on another slot map\n{}", dump(&out));
    // Started over: every key scanned again, the ones copied already skipped.
    let n = CHECKPOINT_KEYS as u64;
    assert!(sum.scanned >= n, "{}", sum.line);
    assert!(sum.skipped >= run.on_target, "{}", sum.line);
    assert_ne!(run.checkpoint()["cluster"]["slot_map"], before, "the checkpoint kept the old slot map");
}
