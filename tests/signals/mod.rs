//! Stopping a copy: Ctrl-C (a real SIGINT, `kill -INT`) lets the batches in flight finish, writes
//! nothing beyond what the summary counts, exits 130, flushes one CSV row per failed key and does not
//! send the rest of the SCAN page it was walking; a stop (SIGTERM, as systemd and Kubernetes send it)
//! cuts every `--sleep-after-batch` pause short instead of sleeping once more after each queued
//! batch; a second Ctrl-C during a type-aware copy quits at once and still deletes the temporary key it
//! was building.

use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

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

#[test]
fn ctrl_c_finishes_batches_in_flight_and_exits_130() {
    const N: usize = 5000;
    let p = Pair::new();
    let (mut s, mut d) = (p.src.conn(), p.dst.conn());
    fill_strings(&mut s, "int:", N);
    let csv = p.csv("errors.csv");
    let mut ferry = spawn_ferry([
        "copy",
        &p.src.addr(),
        &p.dst.url(),
        "--errors",
        &path_str(&csv),
        "--rate",
        "1000",
        "--batch",
        "100",
    ]);
    // At 1000 keys/s the whole copy needs about 5 s; interrupt it after about 1 s of writing.
    interrupt_mid_copy(&mut ferry, &mut d, Duration::from_millis(1000));
    let out = ferry.wait();
    assert_exit(&out, 130);
    let sum = summary(&out);
    assert_eq!((sum.skipped, sum.expired, sum.failed), (0, 0, 0), "{}", sum.line);
    assert!(sum.copied > 0 && sum.copied < N as u64, "Ctrl-C did not stop the copy: {}", sum.line);
    // Nothing was written beyond what was counted ...
    assert_eq!(dbsize(&mut d), sum.copied as i64, "target DBSIZE differs from copied: {}", sum.line);
    // ... and batches in flight were finished, not dropped: every key read from the source was
    // written (only a dropped batch would leave reads without their write).
    assert_eq!(keys_read(&mut s), sum.copied, "keys read from the source vs {}", sum.line);
    assert_eq!(keys_written(&mut d), sum.copied, "keys written to the target vs {}", sum.line);
    let copied: Vec<Vec<u8>> = all_keys(&mut d).into_iter().collect();
    assert_same(&mut s, &mut d, &copied);
    assert!(!csv.exists(), "error CSV created although nothing failed");
}

#[test]
fn ctrl_c_with_failures_flushes_one_csv_row_per_failed_key() {
    let p = Pair::new();
    let (mut s, mut d) = (p.src.conn(), p.dst.conn());
    let target = ok_only_target(&p);
    // Twice the keys of the test above: SCAN pages hold ~1000 keys, and the scanner only stops between
    // pages, so "copied < all ok keys" needs pages to spare after the interrupt.
    fill_strings(&mut s, "ok:", 8000);
    fill_hashes(&mut s, "secret:", 2000);
    let csv = p.csv("errors.csv");
    let mut ferry = spawn_ferry([
        "copy",
        &p.src.addr(),
        &target,
        "--errors",
        &path_str(&csv),
        "--rate",
        "1000",
        "--batch",
        "100",
        "--max-errors",
        "0",
    ]);
    interrupt_mid_copy(&mut ferry, &mut d, Duration::from_millis(1000));
    let out = ferry.wait();
    assert_exit(&out, 130);
    let sum = summary(&out);
    assert!(sum.failed > 0, "no key failed before the interrupt: {}", sum.line);
    assert!(sum.copied < 8000, "Ctrl-C did not stop the copy: {}", sum.line);
    assert_eq!(dbsize(&mut d), sum.copied as i64, "target DBSIZE differs from copied: {}", sum.line);
    // Every key read from the source was finished: written, or refused at the write (a secret key fails
    // at EXISTS while the pre-filter checks, at RESTORE once it rests on a quiet target).
    let rows = read_errors(&csv);
    let refused_at_write = rows.iter().filter(|r| r.stage == "write").count() as u64;
    assert_eq!(keys_read(&mut s), sum.copied + refused_at_write, "keys read from the source vs {}", sum.line);
    assert_eq!(rows.len() as u64, sum.failed, "CSV rows vs failed in {}", sum.line);
    let distinct: BTreeSet<Vec<u8>> = rows.iter().map(|r| r.key.clone()).collect();
    assert_eq!(distinct.len(), rows.len(), "a key has two CSV rows");
    for r in &rows {
        assert!(r.key.starts_with(b"secret:") && r.error == "NOPERM", "{r:?}");
    }
}

/// After Ctrl-C only the batches already in flight may still be written, not the rest of the SCAN
/// page the scanner was walking: with `--rate 200 --batch 10` the pipeline holds a few hundred keys at
/// most, a SCAN page (`--scan-count 1000`) about a thousand.
#[test]
fn ctrl_c_does_not_send_the_rest_of_the_scan_page() {
    let p = Pair::new();
    let (mut s, mut d) = (p.src.conn(), p.dst.conn());
    fill_strings(&mut s, "page:", 5000);
    let mut ferry = spawn_ferry([
        "copy",
        &p.src.addr(),
        &p.dst.url(),
        "--errors",
        &path_str(&p.csv("errors.csv")),
        "--rate",
        "200",
        "--batch",
        "10",
        "--scan-count",
        "1000",
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while dbsize(&mut d) == 0 {
        assert!(ferry.running() && Instant::now() < deadline, "redis-ferry wrote nothing");
        thread::sleep(Duration::from_millis(10));
    }
    thread::sleep(Duration::from_millis(300));
    let before = dbsize(&mut d) as u64;
    ferry.signal("INT");
    let out = ferry.wait();
    assert_exit(&out, 130);
    let sum = summary(&out);
    // 2 readers, 2 writers: three channels of 4 batches plus one batch per stage thread is under 200
    // keys; 500 leaves room for a slow machine (200 keys/s for 1.5 s between DBSIZE and the signal).
    assert!(
        sum.scanned <= before + 500,
        "{} keys on the target at Ctrl-C, yet {} were scanned and written in the end: {}",
        before,
        sum.scanned,
        sum.line
    );
}
