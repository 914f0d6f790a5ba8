//! `--read-from replica`: a copy (and a verify) that reads the source's replicas and sends its primaries
//! no read at all, checked in the primaries' own `INFO commandstats`. A standalone primary's replica is
//! found in its INFO; a cluster's are found in CLUSTER NODES, one per primary, and read with READONLY.
//! Split with `--shard`, the processes take every key once, and still read no primary. A primary without
//! a replica, or whose replica cannot be reached, is read itself, and the run says so; a bad value, a
//! file source and a follow are refused before anything is written.

use crate::support::*;

/// The commands a copy or a verify reads keys with.
const READS: [&str; 10] = [
    "scan",
    "getrange",
    "dump",
    "pexpiretime",
    "pttl",
    "memory|usage",
    "type",
    "hgetall",
    "lrange",
    "exists",
];

/// Waits until `replica` is linked to its primary and holds `n` keys.
fn wait_synced(replica: &RedisServer, n: usize) {
    let mut r = replica.conn();
    wait_until(std::time::Duration::from_secs(30), "the replica to sync", || {
        q::<String>(&mut r, &[b"INFO", b"replication"]).contains("master_link_status:up")
            && dbsize(&mut r) == n as i64
    });
}

/// The read commands `con` has run since its stats were reset, by name.
fn reads_on(con: &mut impl redis::ConnectionLike) -> Vec<(&'static str, u64)> {
    READS.iter().map(|c| (*c, command_calls(con, c))).filter(|(_, n)| *n > 0).collect()
}

#[test]
fn a_copy_and_a_verify_read_from_a_replica_send_the_primary_no_read() {
    let p = Pair::new();
    let mut s = p.src.conn();
    let keys = fill_every_type(&mut s, false);
    let replica = RedisServer::with_args(&["--replicaof", "127.0.0.1", &p.src.port().to_string()]);
    wait_synced(&replica, keys.len());
    run(&mut s, &[b"CONFIG", b"RESETSTAT"]);

    let out = p.copy(&["--progress", "0", "--read-from", "replica"]);
    assert_exit(&out, 0);
    let sum = summary(&out);
    assert_eq!((sum.copied, sum.failed), (keys.len() as u64, 0), "{}", sum.line);
    let said = format!("reading from its replica {}", replica.addr());
    assert!(stderr(&out).contains(&said), "no {said:?}\n{}", dump(&out));
    let out = ferry(["verify", &p.src.addr(), &p.dst.addr(), "--read-from", "replica"]);
    assert_exit(&out, 0);
    assert_eq!(verify_summary(&out).matched, keys.len() as u64);

    // (Before this test reads the primary itself to compare.)
    assert_eq!(reads_on(&mut s), [], "the primary was read");
    let mut r = replica.conn();
    assert!(command_calls(&mut r, "scan") > 0, "the replica was not scanned");
    assert!(keys_read(&mut r) > 0, "no key was read from the replica");
    assert_same(&mut s, &mut p.dst.conn(), &keys);
}

#[test]
fn a_primary_without_a_replica_is_read_itself_and_the_run_says_so() {
    let p = Pair::new();
    let keys = fill_strings(&mut p.src.conn(), "k:", 300);
    let out = p.copy(&["--progress", "0", "--read-from", "replica"]);
    assert_exit(&out, 0);
    assert_eq!(summary(&out).copied, keys.len() as u64);
    let warning =
        format!("source {}: it lists no replica online (INFO replication): reading from it", p.src.addr());
    let err = stderr(&out);
    assert_eq!(err.matches(&warning).count(), 1, "said once, not once per thread\n{}", dump(&out));
    // A replica the primary lists at an address where nothing answers (a wrong replica-announce-port):
    // the primary is read, and the run says why.
    let nowhere = free_port();
    let replica = RedisServer::with_args(&[
        "--replicaof",
        "127.0.0.1",
        &p.src.port().to_string(),
        "--replica-announce-port",
        &nowhere.to_string(),
    ]);
    wait_synced(&replica, keys.len());
    let mut s = p.src.conn();
    wait_until(std::time::Duration::from_secs(30), "the primary to list its replica", || {
        q::<String>(&mut s, &[b"INFO", b"replication"]).contains(&format!("port={nowhere},state=online"))
    });
    run(&mut s, &[b"CONFIG", b"RESETSTAT"]);
    let out = p.copy(&["--progress", "0", "--read-from", "replica", "--on-conflict", "replace"]);
    assert_exit(&out, 0);
    assert_eq!(summary(&out).copied, keys.len() as u64);
    let warning = format!("source {}: its replica 127.0.0.1:{nowhere} cannot be read", p.src.addr());
    assert_eq!(stderr(&out).matches(&warning).count(), 1, "{}", dump(&out));
    assert!(command_calls(&mut s, "scan") > 0, "the primary was not read");
    // A bad value is refused before anything is written.
    let _: () = redis::cmd("FLUSHALL").query(&mut p.dst.conn()).unwrap();
    let out = p.copy(&["--read-from", "sideways"]);
    assert_refused_naming(&out, &["--read-from `sideways` is not primary or replica"]);
    assert_eq!(dbsize(&mut p.dst.conn()), 0);
}

#[test]
fn a_cluster_copy_reads_one_replica_per_primary_and_no_primary() {
    let src = RedisCluster::with_replicas(3, 1);
    let dst = RedisServer::new();
    let mut keys = src.fill_strings("r:", 2000);
    let mut c = src.conn();
    for i in 0..300 {
        let key = format!("h:{i}").into_bytes();
        run(&mut c, &[b"HSET", &key, b"f", b"v", b"g", &noise(40, i)]);
        run(&mut c, &[b"PEXPIRE", &key, b"3600000"]);
        keys.push(key);
    }
    src.wait_replicated();
    let mut nodes: Vec<redis::Connection> = (0..src.nodes().len()).map(|i| src.node(i).conn()).collect();
    for n in &mut nodes {
        run(n, &[b"CONFIG", b"RESETSTAT"]);
    }
    let dir = tempfile::tempdir().unwrap();
    let errors = dir.path().join("errors.csv");

    let out = ferry(copy_args(&src.addr(), &dst.url(), &errors, &["--read-from", "replica"]));
    assert_exit(&out, 0);
    let sum = summary(&out);
    assert_eq!((sum.copied, sum.failed), (keys.len() as u64, 0), "{}", sum.line);
    assert_eq!(all_keys(&mut dst.conn()), set_of(&keys));
    assert!(stderr(&out).contains("read from 3 replicas"), "{}", dump(&out));

    for primary in src.primaries() {
        assert_eq!(reads_on(&mut nodes[primary]), [], "primary {} was read", src.addr_of(primary));
        for replica in src.replicas_of(primary) {
            let r = &mut nodes[replica];
            assert!(command_calls(r, "readonly") > 0, "no READONLY on replica {}", src.addr_of(replica));
            assert!(command_calls(r, "scan") > 0, "replica {} was not scanned", src.addr_of(replica));
            assert!(keys_read(r) > 0, "no key read from replica {}", src.addr_of(replica));
        }
    }
    // (After the counts: this compares with the primaries.)
    assert_same(&mut c, &mut dst.conn(), &keys[keys.len() - 50..]);
    assert_same(&mut c, &mut dst.conn(), &keys[..50]);
}

#[test]
fn a_cluster_without_replicas_is_read_from_its_primaries_with_a_warning_each() {
    let src = RedisCluster::new();
    let dst = RedisServer::new();
    let keys = src.fill_strings("k:", 500);
    let dir = tempfile::tempdir().unwrap();
    let out = ferry(copy_args(
        &src.addr(),
        &dst.url(),
        &dir.path().join("errors.csv"),
        &["--read-from", "replica"],
    ));
    assert_exit(&out, 0);
    assert_eq!(summary(&out).copied, keys.len() as u64);
    let err = stderr(&out);
    for primary in src.primaries() {
        let warning = format!("source {}: this primary has no replica to read", src.addr_of(primary));
        assert_eq!(err.matches(&warning).count(), 1, "{warning:?} not said once\n{}", dump(&out));
    }
}

#[test]
fn shards_read_from_replicas_take_every_key_once_and_no_primary_is_read() {
    let src = RedisCluster::with_replicas(3, 1);
    let dst = RedisServer::new();
    let keys = src.fill_strings("sh:", 1500);
    src.wait_replicated();
    let mut nodes: Vec<redis::Connection> = (0..src.nodes().len()).map(|i| src.node(i).conn()).collect();
    for n in &mut nodes {
        run(n, &[b"CONFIG", b"RESETSTAT"]);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut copied = 0;
    for i in 0..3 {
        let shard = format!("{i}/3");
        let errors = dir.path().join(format!("errors-{i}.csv"));
        let out = ferry(copy_args(
            &src.addr(),
            &dst.url(),
            &errors,
            &["--shard", &shard, "--read-from", "replica"],
        ));
        assert_exit(&out, 0);
        copied += summary(&out).copied;
    }
    assert_eq!(copied, keys.len() as u64, "each key once");
    assert_eq!(all_keys(&mut dst.conn()), set_of(&keys));
    for primary in src.primaries() {
        assert_eq!(reads_on(&mut nodes[primary]), [], "primary {} was read", src.addr_of(primary));
    }
}
