//! A follow of a cluster source: a subscriber on every primary, a writer load routed by slot, and a
//! reshard moving slots (and their keys, MIGRATE deleting them on one node and RESTORE-ASKING making
//! them on the other) between primaries mid-follow; the cutover pauses every primary and the target ends
//! equal to the cluster key by key.

use std::time::Duration;

use super::{assert_same_keys, cut_over, finish_load, load, notify_on, spawn_follow};
use crate::support::*;

#[test]
fn a_cluster_source_resharded_mid_follow_ends_equal_after_the_cutover() {
    let c = RedisCluster::new();
    let dst = RedisServer::new();
    let dir = tempfile::tempdir().unwrap();
    for mut node in c.node_conns() {
        notify_on(&mut node);
    }
    c.fill_strings("k:", 3_000);
    let mut f =
        spawn_follow(&c.addr(), &dst.addr(), &dir.path().join("errors.csv"), &["--cutover-pause", "3000"]);
    f.wait_caught_up();
    let writers = load(&c.url(), 1_500, 6.0, &["--cluster", "--keys", "300"]);
    let reshard = c.reshard_in_background(&[(0, 1, 200), (2, 0, 150)]);
    reshard.wait();
    finish_load(writers);
    cut_over(f);
    // Once the load's short TTLs are over, the same keys with the same values.
    std::thread::sleep(Duration::from_millis(2_500));
    let mut target = dst.conn();
    let (on_src, on_dst) = (c.cluster_keys(), all_keys(&mut target));
    assert_same_keys(&mut c.conn(), &mut target, &on_src, &on_dst, &c.addr(), &dst.addr());
}

#[test]
fn a_failover_of_a_source_primary_mid_follow_subscribes_to_the_new_primary_and_rescans() {
    let mut c = RedisCluster::with_replicas(3, 1);
    let dst = RedisServer::new();
    let dir = tempfile::tempdir().unwrap();
    // On the primaries only: the replica that takes over has them off, and --enable-notifications sets them
    // on it when it appears (a primary that sends no events cannot be followed).
    for mut node in c.node_conns() {
        notify_on(&mut node);
    }
    c.fill_strings("k:", 2_000);
    c.wait_replicated();
    let primaries = c.primaries();
    let (entry, victim) = (primaries[0], primaries[1]);
    let heir = c.replicas_of(victim)[0];
    let mut f = spawn_follow(
        &c.addr_of(entry),
        &dst.addr(),
        &dir.path().join("errors.csv"),
        &["--cutover-pause", "3000", "--enable-notifications"],
    );
    f.wait_caught_up();
    let mut h = c.node(heir).conn();
    let off: Vec<String> = q(&mut h, &[b"CONFIG", b"GET", b"notify-keyspace-events"]);
    assert_eq!(off[1], "", "the replica has notifications off");
    c.kill_node(victim);
    c.wait_failover();
    assert!(c.primaries().contains(&heir), "replica {heir} did not take over");
    // Written after the failover, on every primary, the new one among them.
    let writers = load(&c.url_of(entry), 1_000, 2.0, &["--cluster", "--keys", "200"]);
    finish_load(writers);
    wait_until(Duration::from_secs(30), "a re-scan after the new primary", || {
        f.metric("redis_ferry_follow_rescans_total").unwrap_or(0.0) >= 1.0
    });
    let out = cut_over(f);
    let text = stderr(&out);
    assert!(text.contains("a new primary of the source serves the run's slots"), "{text}");
    assert!(text.contains("no longer serves the run's slots"), "{text}");
    assert!(text.contains("set notify-keyspace-events to `Eg$lshztxe` on the source"), "{text}");
    // Put back as it was, on the new primary too.
    let back: Vec<String> = q(&mut h, &[b"CONFIG", b"GET", b"notify-keyspace-events"]);
    assert_eq!(back[1], "");
    std::thread::sleep(Duration::from_millis(2_500));
    let check = ferry(["verify", &c.addr_of(entry), &dst.addr(), "--check-extra"]);
    assert!(check.status.code() == Some(0), "{}\nthe follow:\n{}", dump(&check), dump(&out));
}
