//! Faults survived, nothing lost: the target shut down and restarted in the middle of a copy, the
//! source's client connections killed mid-scan, the target refusing writes with OOM until it gets more
//! memory. Each run either ends with a complete copy (checked with `verify`) or with exactly the keys
//! that could not be written in the CSV and the matching exit code. Real servers only; the copies are
//! slowed with `--rate` so that the fault lands in the middle, and no test depends on speed.

use std::thread;
use std::time::Duration;

use crate::support::*;

/// `n` keys `oom:I` of 1000 bytes each on the source: enough to overrun a target with 3 MB.
fn fill_kilobytes(p: &Pair, n: u64) {
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("SET").arg(format!("oom:{i}")).arg(noise(1000, i)).ignore();
    }
    pipe.query::<()>(&mut p.src.conn()).unwrap();
}

fn verify_equal(p: &Pair) {
    let out = ferry(["verify", &p.src.addr(), &p.dst.addr()]);
    assert_exit(&out, 0);
}

#[test]
fn target_restarted_mid_copy_loses_nothing() {
    let mut p = Pair::with_target_args(&["--appendonly", "yes", "--appendfsync", "always"]);
    let mut s = p.src.conn();
    fill_strings(&mut s, "restart:", 12_000);
    let ferry = spawn_ferry([
        "copy",
        &p.src.addr(),
        &p.dst.addr(),
        "--rate",
        "4000",
        "--batch",
        "200",
        "--errors",
        &path_str(&p.csv("errors.csv")),
    ]);
    let mut dst = p.dst.conn();
    wait_until(Duration::from_secs(30), "the first keys on the target", || dbsize(&mut dst) > 2000);
    p.dst.restart(Duration::from_millis(800));
    let out = ferry.wait();
    assert_exit(&out, 0);
    let sum = summary(&out);
    assert_eq!(sum.get("failed"), Some("0"), "{}", sum.line);
    assert_eq!(dbsize(&mut p.dst.conn()), 12_000);
    verify_equal(&p);
}

#[test]
fn source_connections_killed_mid_scan_lose_nothing() {
    let p = Pair::new();
    let mut s = p.src.conn();
    fill_strings(&mut s, "kill:", 12_000);
    let ferry = spawn_ferry([
        "copy",
        &p.src.addr(),
        &p.dst.addr(),
        "--rate",
        "4000",
        "--batch",
        "200",
        "--scan-count",
        "100",
        "--errors",
        &path_str(&p.csv("errors.csv")),
    ]);
    let mut dst = p.dst.conn();
    let mut killed = 0;
    for threshold in [1500, 4000, 7000] {
        wait_until(Duration::from_secs(30), "progress on the target", || dbsize(&mut dst) > threshold);
        let n: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes")
            .query(&mut s)
            .unwrap();
        killed += n;
    }
    assert!(killed >= 3, "CLIENT KILL found only {killed} connections to kill");
    let out = ferry.wait();
    assert_exit(&out, 0);
    let sum = summary(&out);
    assert_eq!((sum.get("scanned"), sum.get("failed")), (Some("12000"), Some("0")), "{}", sum.line);
    verify_equal(&p);
}

#[test]
fn target_oom_until_it_gets_more_memory_loses_nothing() {
    let p = Pair::with_target_args(&["--maxmemory", "3mb", "--maxmemory-policy", "noeviction"]);
    fill_kilobytes(&p, 4000);
    let ferry = spawn_ferry([
        "copy",
        &p.src.addr(),
        &p.dst.addr(),
        "--batch",
        "100",
        "--errors",
        &path_str(&p.csv("errors.csv")),
    ]);
    let mut dst = p.dst.conn();
    // Let it run into the wall: writes refused with OOM are being retried. (The target's used_memory is
    // no sign of that: it is over the limit while a pipeline sits in the query buffer, and can fall back
    // under it between retries.)
    wait_until(Duration::from_secs(30), "the target to refuse writes with OOM", || {
        let info: String = redis::cmd("INFO").arg("errorstats").query(&mut dst).unwrap();
        info.lines().any(|l| l.starts_with("errorstat_OOM:count="))
    });
    thread::sleep(Duration::from_millis(700));
    let _: () = redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg("0").query(&mut dst).unwrap();
    let out = ferry.wait();
    assert_exit(&out, 0);
    let sum = summary(&out);
    assert_eq!((sum.get("copied"), sum.get("failed")), (Some("4000"), Some("0")), "{}", sum.line);
    verify_equal(&p);
}

#[test]
fn target_oom_for_good_leaves_exactly_the_unwritten_keys_in_the_csv() {
    let p = Pair::with_target_args(&["--maxmemory", "3mb", "--maxmemory-policy", "noeviction"]);
    fill_kilobytes(&p, 4000);
    let csv = p.csv("errors.csv");
    let out = ferry([
        "copy",
        &p.src.addr(),
        &p.dst.addr(),
        "--batch",
        "100",
        "--retries",
        "1",
        "--max-errors",
        "0",
        "--errors",
        &path_str(&csv),
    ]);
    assert_exit(&out, 1);
    let sum = summary(&out);
    let rows = read_errors(&csv);
    let mut dst = p.dst.conn();
    let written = dbsize(&mut dst) as usize;
    assert!(written > 0 && written < 4000, "{written} keys written");
    assert_eq!(rows.len(), 4000 - written, "{}", sum.line);
    assert!(rows.iter().all(|r| r.error == "OOM" && r.stage == "write"));
    let on_target = all_keys(&mut dst);
    assert!(rows.iter().all(|r| !on_target.contains(&r.key)), "a CSV row names a key that was written");
}
