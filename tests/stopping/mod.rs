//! Stopping: a stop (SIGTERM, as systemd and Kubernetes send it) cuts every `--sleep-after-batch`
//! pause short instead of sleeping once more after each queued batch; a second Ctrl-C during a
//! type-aware copy quits at once and still deletes the temporary key it was building.

use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

/// Waits until `cond` holds (panics after `within`).
#[track_caller]
fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_stop_does_not_wait_out_the_pause_after_each_queued_batch() {
    let p = Pair::new();
    fill_strings(&mut p.src.conn(), "k:", 5_000);
    let csv = path_str(&p.csv("errors.csv"));
    let pause_ms = 10_000;
    let mut run = spawn_ferry([
        "copy",
        &p.src.addr(),
        &p.dst.addr(),
        "--errors",
        &csv,
        "--batch",
        "100",
        "--sleep-after-batch",
        &pause_ms.to_string(),
        "--progress",
        "0",
    ]);
    let mut dst = p.dst.conn();
    // Both writers have written a batch and are in their pause; more batches are queued.
    wait_until(Duration::from_secs(30), "the first batches", || dbsize(&mut dst) >= 200);
    let stopped = Instant::now();
    run.signal("TERM");
    let out = run.wait();
    let took = stopped.elapsed();
    assert_exit(&out, 130);
    assert!(took < Duration::from_millis(pause_ms), "the stop waited {took:?}, a pause is {pause_ms} ms");
    let s = summary(&out);
    assert_eq!(s.copied, dbsize(&mut dst) as u64);
}

#[test]
fn a_second_ctrl_c_in_a_typed_copy_still_deletes_its_temporary_key() {
    let p = Pair::new();
    let mut src = p.src.conn();
    // One big list, copied in pages of at most 1000 elements, 20 pages a second.
    for chunk in 0..200 {
        let mut pipe = redis::pipe();
        pipe.cmd("RPUSH").arg("big");
        for i in 0..1000 {
            pipe.arg(format!("element-{chunk}-{i}"));
        }
        pipe.exec(&mut src).unwrap();
    }
    let csv = path_str(&p.csv("errors.csv"));
    let mut run = spawn_ferry([
        "copy",
        &p.src.addr(),
        &p.dst.addr(),
        "--mode",
        "typed",
        "--rate",
        "20",
        "--errors",
        &csv,
        "--progress",
        "0",
    ]);
    let mut dst = p.dst.conn();
    wait_until(Duration::from_secs(30), "a temporary key", || {
        !keys_matching(&mut dst, "redis-ferry:tmp:*").is_empty()
    });
    run.signal("INT");
    thread::sleep(Duration::from_millis(20));
    run.signal("INT");
    let out = run.wait();
    assert_exit(&out, 130);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("interrupted twice"), "{stderr}");
    thread::sleep(Duration::from_millis(200));
    let left = keys_matching(&mut dst, "redis-ferry:tmp:*");
    assert!(left.is_empty(), "temporary keys left: {:?}\n{stderr}", show_keys(&left));
    assert_eq!(dbsize(&mut dst), 0, "a half-built key was published");
}
