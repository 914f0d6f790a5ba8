//! Sharded runs (`--shard I/N`, `--slots`): a standalone source split 4 ways gives every key to exactly
//! one shard; a shard killed outright and started again on its checkpoint (as a Job retry would, the
//! checkpoint on a shared path) resumes, and `report merge` still adds every key up, with `verify` passing;
//! shards copying while the source cluster reshards lose nothing; `--checkpoint` refuses another shard's
//! file; a shard whose slots no live primary serves exits 5 while the others go on; `--max-latency` probes the primary the shard reads, not the node given; `report merge` names a
//! missing shard and refuses reports of another run. The manifest's own pods
//! are in tests/kubernetes.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::*;

/// `copy SOURCE TARGET --shard I/N --errors DIR/errors-I.csv --report DIR/report-I.json --progress 0 EXTRA`.
fn shard_args(
    source: &str,
    target: &str,
    i: u32,
    n: u32,
    dir: &std::path::Path,
    extra: &[&str],
) -> Vec<String> {
    let mut args = vec![
        "copy".to_string(),
        source.to_string(),
        target.to_string(),
        "--shard".to_string(),
        format!("{i}/{n}"),
        "--errors".to_string(),
        path_str(&dir.join(format!("errors-{i}.csv"))),
        "--report".to_string(),
        path_str(&dir.join(format!("report-{i}.json"))),
        "--progress".to_string(),
        "0".to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// `report merge` of the reports of shards 0..n in `dir`.
fn merge(dir: &std::path::Path, n: u32) -> std::process::Output {
    let mut args = vec!["report".to_string(), "merge".to_string()];
    args.extend((0..n).map(|i| path_str(&dir.join(format!("report-{i}.json")))));
    ferry(args)
}

#[test]
fn a_standalone_source_split_4_ways_gives_every_key_to_one_shard() {
    let src = RedisServer::new();
    let mut s = src.conn();
    let keys: BTreeSet<Vec<u8>> =
        fill_strings(&mut s, "split:", 4000).into_iter().chain(awkward_keys()).collect();
    for (i, k) in awkward_keys().iter().enumerate() {
        run(&mut s, &[b"SET", k, format!("v{i}").as_bytes()]);
    }
    let dir = tempfile::tempdir().unwrap();
    let targets: Vec<RedisServer> = (0..4).map(|_| RedisServer::new()).collect();
    let runs: Vec<_> = (0..4)
        .map(|i| spawn_ferry(shard_args(&src.addr(), &targets[i as usize].addr(), i, 4, dir.path(), &[])))
        .collect();
    let mut union = BTreeSet::new();
    for (i, run) in runs.into_iter().enumerate() {
        let out = run.wait();
        assert_exit(&out, 0);
        let held = all_keys(&mut targets[i].conn());
        assert!(!held.is_empty(), "shard {i} copied nothing");
        for key in held {
            assert!(union.insert(key.clone()), "{key:?} was copied by two shards");
        }
    }
    assert_eq!(union, keys, "the shards together are not the source");
}

#[test]
fn a_shard_killed_and_started_again_resumes_and_the_merge_adds_up() {
    let src = RedisCluster::new();
    let keys = src.fill_strings("again:", 30_000);
    let n = keys.len() as u64;
    let dst = RedisServer::new();
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = |i: u32| path_str(&dir.path().join(format!("checkpoint-{i}.json")));
    let args = |i: u32| {
        let cp = checkpoint(i);
        // Shard 1 goes slowly, so that it can be killed half way.
        let rate: &[&str] = if i == 1 { &["--rate", "2000"] } else { &[] };
        let mut extra = vec!["--checkpoint", cp.as_str()];
        extra.extend_from_slice(rate);
        shard_args(&src.addr(), &dst.addr(), i, 3, dir.path(), &extra)
    };
    let others: Vec<_> = [0, 2].into_iter().map(|i| spawn_ferry(args(i))).collect();
    let mut slow = spawn_ferry(args(1));
    let mut d = dst.conn();
    // Shard 1's slots hold about a third of the keys; kill it once it has written some and saved twice.
    wait_until(Duration::from_secs(60), "shard 1 to checkpoint", || {
        std::fs::read_to_string(checkpoint(1)).is_ok_and(|t| t.contains("\"copied\"")) && dbsize(&mut d) > 0
    });
    std::thread::sleep(Duration::from_millis(2500));
    assert!(slow.running(), "shard 1 ended before it was killed: the test proves nothing");
    slow.signal("KILL");
    let _ = slow.wait();
    for run in others {
        assert_exit(&run.wait(), 0);
    }
    // The retry: the same command, on the same checkpoint, at full speed.
    let cp = checkpoint(1);
    let out = ferry(shard_args(&src.addr(), &dst.addr(), 1, 3, dir.path(), &["--checkpoint", &cp]));
    assert_exit(&out, 0);
    assert!(summary(&out).scanned < n / 3, "the retry scanned its whole shard again: {}", summary(&out).line);
    let merged = merge(dir.path(), 3);
    assert_exit(&merged, 0);
    let s = summary(&merged);
    assert!(s.copied + s.skipped >= n && s.copied <= n && s.failed == 0, "{}", s.line);
    let out = ferry(["verify", &src.addr(), &dst.addr()]);
    assert_exit(&out, 0);
    assert_eq!(verify_summary(&out).matched, n);
    // The checkpoint belongs to shard 1: shard 2 is refused it.
    let out = ferry(shard_args(&src.addr(), &dst.addr(), 2, 3, dir.path(), &["--checkpoint", &cp]));
    assert_refused_naming(&out, &["--checkpoint"]);
}

#[test]
fn shards_lose_nothing_while_the_source_reshards() {
    let src = RedisCluster::new();
    let keys = src.fill_strings("moving:", 20_000);
    let n = keys.len() as u64;
    let dst = RedisServer::new();
    let dir = tempfile::tempdir().unwrap();
    let mut runs: Vec<_> = (0..3)
        .map(|i| spawn_ferry(shard_args(&src.addr(), &dst.addr(), i, 3, dir.path(), &["--rate", "2000"])))
        .collect();
    let mut d = dst.conn();
    wait_until(Duration::from_secs(60), "the first keys", || dbsize(&mut d) > 0);
    // Slots move between primaries, across the shards' boundaries, while the shards copy.
    let owned = src.slots_of(1);
    let reshard = src.reshard_in_background(&[(0, 1, 300), (2, 0, 300)]);
    wait_until(Duration::from_secs(60), "the first slot to move", || {
        src.slots_of(1) != owned || reshard.finished()
    });
    assert!(
        runs.iter_mut().all(|r| r.running()),
        "a shard ended before the first slot moved: the test proves nothing; lower the rate"
    );
    let outs: Vec<_> = runs.into_iter().map(|r| r.wait()).collect();
    reshard.wait();
    for out in &outs {
        assert_exit(out, 0);
    }
    assert_eq!(dbsize(&mut d) as u64, n);
    let out = ferry(["verify", &src.addr(), &dst.addr()]);
    assert_exit(&out, 0);
    let merged = merge(dir.path(), 3);
    assert_exit(&merged, 0);
    let s = summary(&merged);
    assert!(s.copied + s.skipped >= n, "{}", s.line);
}

#[test]
fn max_latency_probes_the_primary_of_its_shard_not_the_node_given() {
    // redis-cli gives node 2 the slots of shard 2/3; SOURCE names node 0, which stays quick.
    let src = RedisCluster::new();
    src.fill_strings("probe:", 3000);
    let own = src.node_dbsizes()[2] as u64;
    let dst = RedisServer::new();
    let dir = tempfile::tempdir().unwrap();
    let (done, busy) = keep_busy(src.node(2));
    let extra = ["--rate", "300", "--batch", "50", "--max-latency", "10"];
    let run = spawn_ferry(shard_args(&src.addr(), &dst.addr(), 2, 3, dir.path(), &extra));
    std::thread::sleep(Duration::from_secs(3));
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    busy.join().unwrap();
    let out = run.wait();
    assert_exit(&out, 0);
    assert_eq!(summary(&out).scanned, own, "{}", summary(&out).line);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rate lowered to"),
        "the slow primary of the shard was not probed\n{}",
        dump(&out)
    );
}

#[test]
fn a_shard_whose_primary_failed_exits_5_and_the_other_shards_go_on() {
    let mut src = RedisCluster::new();
    src.fill_strings("gone:", 3000);
    let before = src.node_dbsizes();
    let dst = RedisServer::new();
    let dir = tempfile::tempdir().unwrap();
    let id = src.node_id(2).to_string();
    // The others keep serving their slots while node 2's are unserved (by default the whole cluster
    // would refuse every command, and no shard could read).
    for i in [0, 1] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("cluster-require-full-coverage")
            .arg("no")
            .query(&mut src.node(i).conn())
            .unwrap();
    }
    src.kill_node(2);
    // Wait until the others flag it failed (not only suspected): it is then left out of the slot map.
    let mut c0 = src.node(0).conn();
    wait_until(Duration::from_secs(60), "node 2 flagged as failed", || {
        let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(&mut c0).unwrap();
        nodes.lines().any(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            f[0] == id && f[2].split(',').any(|flag| flag == "fail")
        })
    });
    // Shard 2's slots are node 2's: their keys cannot be read, so the shard must not end "done".
    let out = ferry(shard_args(&src.addr(), &dst.addr(), 2, 3, dir.path(), &[]));
    assert_exit(&out, 5);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("served by no reachable primary (10923-16383)"), "{}", dump(&out));
    assert_eq!(dbsize(&mut dst.conn()), 0);
    // Shard 0 reads node 0 only, which is up.
    let out = ferry(shard_args(&src.addr(), &dst.addr(), 0, 3, dir.path(), &[]));
    assert_exit(&out, 0);
    assert_eq!(summary(&out).copied, before[0] as u64, "{}", summary(&out).line);
}

#[test]
fn report_merge_names_a_missing_shard_and_refuses_another_run() {
    let src = RedisServer::new();
    fill_strings(&mut src.conn(), "m:", 300);
    let dst = RedisServer::new();
    let dir = tempfile::tempdir().unwrap();
    for i in [0, 2] {
        assert_exit(&ferry(shard_args(&src.addr(), &dst.addr(), i, 3, dir.path(), &[])), 0);
    }
    let mut args = vec!["report".to_string(), "merge".to_string()];
    args.extend([0, 2].map(|i| path_str(&dir.path().join(format!("report-{i}.json")))));
    let out = ferry(&args);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("1 of 3 shards have no report: 1"), "{}", dump(&out));
    assert_eq!(summary(&out).get("missing"), Some("1"));
    // A shard of a 2-way split is of another run.
    let other = tempfile::tempdir().unwrap();
    assert_exit(&ferry(shard_args(&src.addr(), &dst.addr(), 1, 2, other.path(), &[])), 0);
    args.push(path_str(&other.path().join("report-1.json")));
    assert_refused_naming(&ferry(&args), &["of different runs"]);
    // One JSON per line on standard input, as termination messages are collected.
    let lines: String = [0, 2]
        .map(|i| {
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.path().join(format!("report-{i}.json"))).unwrap())
                    .unwrap();
            v.to_string() + "\n"
        })
        .concat();
    let out = ferry_with(["report", "merge", "-"], &[], Some(lines.as_bytes()));
    assert_exit(&out, 1);
    assert_eq!(summary(&out).get("shards"), Some("2"));
}
