//! Gentleness: `--rate` takes at least the token bucket's time and meters every key that enters the
//! pipeline, skipped ones included; `--sleep-after-batch` pauses each writer after each batch; `--burst`
//! and `--max-latency` are checked by the flags they take; and `--max-latency` lowers the rate when the
//! source answers slowly (made slow here by a thread running `DEBUG SLEEP 0.05` back to back). Only
//! lower bounds on time are asserted, never that something is fast.

use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn rate_also_meters_keys_that_end_up_skipped() {
    let p = Pair::new();
    let (mut s, mut d) = (p.src.conn(), p.dst.conn());
    // Every key already exists on the target: the EXISTS pre-filter skips all 3000.
    fill_strings(&mut s, "have:", 3000);
    fill_strings(&mut d, "have:", 3000);
    let started = Instant::now();
    let out = p.copy(&["--rate", "1000", "--batch", "100"]);
    let elapsed = started.elapsed();
    assert_exit(&out, 0);
    let sum = summary(&out);
    assert_eq!(buckets(&sum), (3000, 0, 3000, 0, 0), "{}", sum.line);
    // Tokens are taken before the check: (N - burst) / rate seconds at least, with 10% slack for timers.
    let min = Duration::from_secs_f64(2900.0 / 1000.0 * 0.9);
    assert!(elapsed >= min, "3000 skipped keys at --rate 1000 took {elapsed:?}, expected at least {min:?}");
    assert_eq!(command_calls(&mut s, "dump"), 0, "skipped keys were read from the source");
}

#[test]
fn a_larger_burst_still_keeps_the_rate() {
    let p = Pair::new();
    fill_strings(&mut p.src.conn(), "burst:", 3000);
    let started = Instant::now();
    let out = p.copy(&["--rate", "1000", "--batch", "100", "--burst", "1000"]);
    let elapsed = started.elapsed();
    assert_exit(&out, 0);
    assert_eq!(buckets(&summary(&out)), (3000, 3000, 0, 0, 0));
    let min = Duration::from_secs_f64(2000.0 / 1000.0 * 0.9);
    assert!(
        elapsed >= min,
        "3000 keys at --rate 1000 --burst 1000 took {elapsed:?}, expected at least {min:?}"
    );
}

#[test]
fn burst_and_max_latency_are_checked() {
    let p = Pair::new();
    fill_strings(&mut p.src.conn(), "k:", 10);
    for (args, needle) in [
        (&["--rate", "100", "--batch", "100", "--burst", "99"][..], "--burst must be at least --batch (100)"),
        (&["--burst", "1000"][..], "--burst sizes the --rate token bucket"),
        (&["--max-latency", "0"][..], "--max-latency must be at least 1"),
        (&["--max-latency", "soon"][..], "--max-latency"),
    ] {
        let out = p.copy(args);
        assert_exit(&out, 2);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: expected {needle:?}\n{}", dump(&out));
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: one line\n{}", dump(&out));
    }
    assert_eq!(dbsize(&mut p.dst.conn()), 0);
}

#[test]
fn max_latency_lowers_the_rate_while_the_source_is_slow() {
    let p = Pair {
        src: RedisServer::with_args(&["--enable-debug-command", "yes"]),
        dst: RedisServer::new(),
        dir: tempfile::tempdir().unwrap(),
    };
    let keys = fill_strings(&mut p.src.conn(), "slow:", 2000);
    let (done, busy) = keep_busy(&p.src);
    let ferry = spawn_ferry([
        "copy",
        &p.src.addr(),
        &p.dst.addr(),
        "--errors",
        &path_str(&p.csv("errors.csv")),
        "--rate",
        "1000",
        "--batch",
        "100",
        "--max-latency",
        "10",
    ]);
    // The source is slow for the first 3 s of the copy, then answers at once again.
    thread::sleep(Duration::from_secs(3));
    done.store(true, Ordering::SeqCst);
    busy.join().unwrap();
    let out = ferry.wait();
    assert_exit(&out, 0);
    let sum = summary(&out);
    assert_eq!(buckets(&sum), (2000, 2000, 0, 0, 0), "{}", sum.line);
    // The run's own clock (the test slept 3 s above, which would make its clock a poor witness).
    let elapsed = Duration::from_secs_f64(sum.seconds);
    assert_same(&mut p.src.conn(), &mut p.dst.conn(), &keys);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--max-latency: source p90 PING"), "no rate change logged\n{}", dump(&out));
    assert!(stderr.contains("rate lowered to"), "no lowered rate logged\n{}", dump(&out));
    // At a steady 1000 keys/s the copy needs (2000 - 100) / 1000 = 1.9 s at least. Cut by 0.7 every half
    // second while the source is slow, the rate admits about 1570 keys in the first 3 s and the rest at
    // 70-200 keys/s: over 4 s. 2.7 s still holds if the probe's first decision comes as late as 1.1 s.
    let min = Duration::from_millis(2700);
    assert!(elapsed >= min, "the lowered rate did not slow the copy: {elapsed:?} < {min:?}\n{}", dump(&out));
}

#[test]
fn rate_limit_takes_at_least_the_token_bucket_time() {
    let p = Pair::new();
    let mut s = p.src.conn();
    let keys = fill_strings(&mut s, "rate:", 3000);
    let started = Instant::now();
    let out = p.copy(&["--rate", "1000", "--batch", "100"]);
    let elapsed = started.elapsed();
    assert_exit(&out, 0);
    let sum = summary(&out);
    assert_eq!(buckets(&sum), (3000, 3000, 0, 0, 0), "{}", sum.line);
    // Token bucket with burst = batch: at least (N - batch) / rate seconds; 10% slack for timers.
    // Only a lower bound: never assert that something is fast.
    let min = Duration::from_secs_f64((keys.len() - 100) as f64 / 1000.0 * 0.9);
    assert!(elapsed >= min, "3000 keys at --rate 1000 took {elapsed:?}, expected at least {min:?}");
}

#[test]
fn sleep_after_batch_pauses_each_writer_after_each_batch() {
    let p = Pair::new();
    fill_strings(&mut p.src.conn(), "nap:", 1000);
    let started = Instant::now();
    let out = p.copy(&["--sleep-after-batch", "200", "--batch", "100", "--writers", "1"]);
    let elapsed = started.elapsed();
    assert_exit(&out, 0);
    let sum = summary(&out);
    assert_eq!(buckets(&sum), (1000, 1000, 0, 0, 0), "{}", sum.line);
    // 10 batches through one writer, 200 ms after each: at least 9 pauses before the last batch is
    // even written. A lower bound only.
    let min = Duration::from_millis(9 * 200);
    assert!(elapsed >= min, "took {elapsed:?}, expected at least {min:?}");
    assert_eq!(dbsize(&mut p.dst.conn()), 1000);
}
