//! `copy --follow`: the copy, then the target kept in step with a source that real writers keep
//! changing (`ferry-tools load`: SET, INCR, APPEND, DEL, UNLINK, EXPIRE with short TTLs, PERSIST, hashes,
//! lists, sets, sorted sets, streams, RENAME, COPY, keys that change type), until a guarded cutover
//! pauses the source, fences the events and drains; then the target equals the source key by key
//! (`verify` exit 0 and `DEBUG DIGEST`). Also: keys changed and deleted while their snapshot copy is in
//! flight never end stale or resurrected; the subscriber's connection killed twice, the target
//! restarted, and the dirty set overflowing all end in a re-scan that brings the target back in step;
//! notifications off are refused (exit 2, nothing written), and `--enable-notifications` puts the old
//! setting back; a key that failed is read again until it is copied, and a cutover that finds a key still
//! failing says it is not safe (exit 6); Ctrl-C is exit 130 with the summary; `--metrics` and the report
//! show the phase and the lag while it runs.

mod cluster;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

/// The writer-load helper.
pub const TOOLS: &str = env!("CARGO_BIN_EXE_ferry-tools");

/// Turns on every notification class a follow needs.
pub fn notify_on(con: &mut impl redis::ConnectionLike) {
    run(con, &[b"CONFIG", b"SET", b"notify-keyspace-events", b"KEA"]);
}

/// A follow running in the background, with `--metrics` on a port of its own.
pub struct Follow {
    pub run: FerryProcess,
    pub metrics: u16,
}

/// Spawns `copy SOURCE TARGET --follow --metrics 127.0.0.1:PORT --progress 1 EXTRA…`.
pub fn spawn_follow(source: &str, target: &str, errors: &std::path::Path, extra: &[&str]) -> Follow {
    let metrics = free_port();
    let addr = format!("127.0.0.1:{metrics}");
    let mut args = copy_args(source, target, errors, &["--follow", "--metrics", &addr]);
    args.extend(extra.iter().map(|s| s.to_string()));
    Follow { run: spawn_ferry(args), metrics }
}

impl Follow {
    /// The metrics text, or `None` while nothing answers.
    pub fn metrics(&self) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.metrics)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        Some(body)
    }

    /// One figure of the metrics (`name` with its labels, as it is printed).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let text = self.metrics()?;
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// Waits until the copy is over and the follow has nothing waiting.
    pub fn wait_caught_up(&mut self) {
        wait_until(Duration::from_secs(60), "the follow to catch up", || {
            assert!(self.run.running(), "the follow exited early");
            self.metric("redis_ferry_follow_phase{phase=\"following\"}") == Some(1.0)
                && self.metric("redis_ferry_dirty_keys") == Some(0.0)
                && self.metric("redis_ferry_dirty_in_flight") == Some(0.0)
        });
    }
}

/// `ferry-tools load` against `url` at `rate` commands a second for `seconds`, on its own key space.
pub fn load(url: &str, rate: u32, seconds: f64, extra: &[&str]) -> Child {
    Command::new(TOOLS)
        .args(["load", "--url", url, "--rate", &rate.to_string(), "--seconds", &seconds.to_string()])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn ferry-tools load")
}

/// Waits for a load and returns its `ops=` figure (it must have done real work).
pub fn finish_load(child: Child) -> u64 {
    let out = child.wait_with_output().expect("wait for ferry-tools load");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "ferry-tools load failed: {text}");
    let ops = text.split_whitespace().find_map(|t| t.strip_prefix("ops=")).expect("ops= in the load's line");
    ops.parse().expect("ops is a number")
}

/// After the last short TTL of the load has run out: every key read once on each side (SCAN expires what
/// it meets), then the two must be equal: the same DEBUG DIGEST, and `verify` exit 0.
pub fn assert_converged(
    src: &mut impl redis::ConnectionLike,
    dst: &mut impl redis::ConnectionLike,
    source: &str,
    target: &str,
) {
    thread::sleep(Duration::from_millis(2_500));
    let (on_src, on_dst) = (scan_all(src), scan_all(dst));
    assert_same_keys(src, dst, &on_src, &on_dst, source, target);
    assert_eq!(digest(src), digest(dst), "DEBUG DIGEST differs");
}

/// Every key of the db, by SCAN, which deletes the expired keys it meets (KEYS only skips them, and DEBUG
/// DIGEST counts them): call it once the source's pause is over.
pub fn scan_all(con: &mut impl redis::ConnectionLike) -> std::collections::BTreeSet<Vec<u8>> {
    let mut keys = std::collections::BTreeSet::new();
    let mut cursor = 0u64;
    loop {
        let (next, page): (u64, Vec<Vec<u8>>) =
            redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(1000).query(con).expect("SCAN");
        keys.extend(page);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

/// The same keys on both sides (`on_src`, `on_dst`: their key sets), each with the same type, value and
/// TTL, and `verify --check-extra` exit 0.
pub fn assert_same_keys(
    src: &mut impl redis::ConnectionLike,
    dst: &mut impl redis::ConnectionLike,
    on_src: &std::collections::BTreeSet<Vec<u8>>,
    on_dst: &std::collections::BTreeSet<Vec<u8>>,
    source: &str,
    target: &str,
) {
    let only_src: Vec<_> = on_src.difference(on_dst).take(5).collect();
    let only_dst: Vec<_> = on_dst.difference(on_src).take(5).collect();
    assert!(
        only_src.is_empty() && only_dst.is_empty(),
        "only on the source: {:?}; only on the target: {:?}",
        show_keys(only_src),
        show_keys(only_dst)
    );
    for key in on_src {
        if let Some(diff) = diff_key(src, dst, key) {
            panic!("{} differs: {diff}", show_keys([key])[0]);
        }
    }
    let out = ferry(["verify", source, target, "--check-extra"]);
    assert!(out.status.code() == Some(0), "verify after the follow:\n{}", dump(&out));
}

/// Asks a caught-up follow for the cutover (SIGUSR1) and checks that it was ready: exit 0, the line, the
/// summary. Returns the run's output.
pub fn cut_over(mut f: Follow) -> std::process::Output {
    f.wait_caught_up();
    f.run.signal("USR1");
    let out = f.run.wait();
    assert_exit(&out, 0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("cutover ready"), "{}", dump(&out));
    assert_eq!(follow_summary(&out).get("cutover"), Some("ready"));
    out
}

/// The follow's summary, checked, with its follow pairs.
#[track_caller]
pub fn follow_summary(out: &std::process::Output) -> Summary {
    let s = summary(out);
    for pair in
        ["deleted", "events", "dirty", "failing", "gaps", "overflows", "rescans", "rescan_due", "cutover"]
    {
        assert!(s.get(pair).is_some(), "no {pair}= in {:?}", s.line);
    }
    if s.get("cutover") == Some("ready") {
        let left = (s.get("dirty"), s.get("failing"), s.get("rescan_due"));
        assert_eq!(left, (Some("0"), Some("0"), Some("0")), "{}", s.line);
    }
    s
}

fn n(s: &Summary, pair: &str) -> u64 {
    s.get(pair).unwrap_or("0").parse().unwrap()
}

#[test]
fn a_follow_under_a_writer_load_ends_in_a_cutover_with_the_target_equal_to_the_source() {
    let p = Pair::new();
    let mut src = p.src.conn();
    notify_on(&mut src);
    fill_every_type(&mut src, false);
    fill_strings(&mut src, "k:", 3_000);
    let report = p.csv("report.json");
    let mut f = spawn_follow(
        &p.src.addr(),
        &p.dst.addr(),
        &p.csv("errors.csv"),
        &["--cutover-pause", "1500", "--report", &path_str(&report)],
    );
    let writers = load(&p.src.addr(), 2_000, 4.0, &["--keys", "300"]);
    f.wait_caught_up();
    // Written while it runs, not only at the end.
    wait_until(Duration::from_secs(20), "a report written on the way", || {
        std::fs::read_to_string(&report).is_ok_and(|t| t.contains("\"running\": true"))
    });
    let ops = finish_load(writers);
    assert!(ops > 5_000, "the load did {ops} commands");
    let out = cut_over(f);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let cut = stdout
        .lines()
        .find(|l| l.starts_with("cutover ready: writes on the source stay paused for "))
        .unwrap_or_else(|| panic!("no cutover line\n{}", dump(&out)));
    // Printed while the source was still paused.
    let left: u64 = cut["cutover ready: writes on the source stay paused for ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(left > 0 && left <= 1_500, "{cut}");
    let s = follow_summary(&out);
    assert_eq!(s.get("cutover"), Some("ready"));
    assert!(n(&s, "events") > 1_000 && n(&s, "deleted") > 0, "{}", s.line);
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(json["follow"]["running"], false);
    assert_eq!(json["follow"]["cutover"]["safe"], true);
    assert_converged(&mut src, &mut p.dst.conn(), &p.src.addr(), &p.dst.addr());
}

#[test]
fn keys_changed_and_deleted_while_their_snapshot_copy_is_in_flight_never_end_stale_or_resurrected() {
    let p = Pair::new();
    let mut src = p.src.conn();
    notify_on(&mut src);
    let keys = fill_strings(&mut src, "k:", 4_000);
    // Slow writes: batches read from the source wait in the channels while the test changes and deletes
    // their keys on the source.
    let f = spawn_follow(
        &p.src.addr(),
        &p.dst.addr(),
        &p.csv("errors.csv"),
        &["--batch", "50", "--sleep-after-batch", "40", "--cutover-after", "1", "--cutover-pause", "2000"],
    );
    let mut dst = p.dst.conn();
    wait_until(Duration::from_secs(30), "the snapshot copy to start", || dbsize(&mut dst) > 0);
    let mut changed = 0;
    for (i, key) in keys.iter().enumerate().step_by(7) {
        if dbsize(&mut dst) as usize >= keys.len() - 200 {
            break;
        }
        match i % 3 {
            0 => run(&mut src, &[b"DEL", key]),
            1 => run(&mut src, &[b"SET", key, format!("new-{i}").as_bytes()]),
            _ => {
                run(&mut src, &[b"DEL", key]);
                run(&mut src, &[b"HSET", key, b"field", b"now a hash"]);
            }
        }
        changed += 1;
        thread::sleep(Duration::from_millis(2));
    }
    assert!(changed > 50, "only {changed} keys changed during the snapshot");
    let out = f.run.wait();
    assert_exit(&out, 0);
    let s = follow_summary(&out);
    assert!(n(&s, "deleted") > 0, "{}", s.line);
    assert_converged(&mut src, &mut dst, &p.src.addr(), &p.dst.addr());
}

#[test]
fn the_subscriber_killed_twice_ends_in_a_rescan_that_deletes_and_copies_what_the_gaps_hid() {
    let p = Pair::new();
    let mut src = p.src.conn();
    notify_on(&mut src);
    let keys = fill_strings(&mut src, "k:", 2_000);
    let mut f =
        spawn_follow(&p.src.addr(), &p.dst.addr(), &p.csv("errors.csv"), &["--cutover-pause", "2000"]);
    f.wait_caught_up();
    for round in 0..2 {
        let writers = load(&p.src.addr(), 1_000, 1.5, &["--keys", "200", "--seed", &(round + 7).to_string()]);
        thread::sleep(Duration::from_millis(300));
        let list: String = q(&mut src, &[b"CLIENT", b"LIST"]);
        let killed: i64 = q(&mut src, &[b"CLIENT", b"KILL", b"TYPE", b"pubsub"]);
        if killed < 1 {
            f.run.signal("INT");
            panic!("no subscriber to kill: {list}\n{}", dump(&f.run.wait()));
        }
        // In the gap, before the subscriber is back: a delete, a rename and a new key nobody hears of.
        let gone = &keys[round];
        run(&mut src, &[b"DEL", gone]);
        run(&mut src, &[b"RENAME", &keys[10 + round], format!("renamed:{round}").as_bytes()]);
        run(&mut src, &[b"SET", format!("in-the-gap:{round}").as_bytes(), b"x"]);
        finish_load(writers);
        f.wait_caught_up();
    }
    let out = cut_over(f);
    let s = follow_summary(&out);
    assert!(n(&s, "gaps") >= 2 && n(&s, "rescans") >= 1, "{}", s.line);
    let stderr = stderr(&out);
    assert!(stderr.contains("lost its connection") && stderr.contains("re-scan"), "{stderr}");
    assert_converged(&mut src, &mut p.dst.conn(), &p.src.addr(), &p.dst.addr());
}

#[test]
fn a_target_restarted_mid_follow_is_written_again_by_a_rescan() {
    let mut p = Pair::new();
    let mut src = p.src.conn();
    notify_on(&mut src);
    fill_strings(&mut src, "k:", 2_000);
    let mut f =
        spawn_follow(&p.src.addr(), &p.dst.addr(), &p.csv("errors.csv"), &["--cutover-pause", "2000"]);
    f.wait_caught_up();
    let writers = load(&p.src.addr(), 1_000, 3.0, &["--keys", "200"]);
    thread::sleep(Duration::from_millis(500));
    // Without persistence: it comes back empty.
    p.dst.restart(Duration::from_millis(300));
    finish_load(writers);
    let out = cut_over(f);
    let s = follow_summary(&out);
    assert!(n(&s, "rescans") >= 1, "{}", s.line);
    assert!(stderr(&out).contains("restarted or failed over"), "{}", stderr(&out));
    assert_converged(&mut src, &mut p.dst.conn(), &p.src.addr(), &p.dst.addr());
}

#[test]
fn a_full_dirty_set_overflows_into_a_rescan_instead_of_dropping_events() {
    let p = Pair::new();
    let mut src = p.src.conn();
    notify_on(&mut src);
    fill_strings(&mut src, "k:", 1_000);
    let mut f = spawn_follow(
        &p.src.addr(),
        &p.dst.addr(),
        &p.csv("errors.csv"),
        &["--follow-queue", "20", "--batch", "10", "--sleep-after-batch", "50", "--cutover-pause", "2000"],
    );
    f.wait_caught_up();
    // Far more distinct keys at once than the set holds, while the follow is slowed down.
    let mut pipe = redis::pipe();
    for i in 0..2_000 {
        pipe.cmd("SET").arg(format!("burst:{i}")).arg(i).ignore();
    }
    exec_pipe(&mut src, &pipe);
    run(&mut src, &[b"DEL", b"k:1", b"k:2"]);
    wait_until(Duration::from_secs(60), "a re-scan", || {
        f.metric("redis_ferry_follow_rescans_total").unwrap_or(0.0) >= 1.0
    });
    let out = cut_over(f);
    let s = follow_summary(&out);
    assert!(n(&s, "overflows") >= 1 && n(&s, "rescans") >= 1, "{}", s.line);
    assert!(stderr(&out).contains("the dirty set is full (--follow-queue 20)"), "{}", stderr(&out));
    assert_converged(&mut src, &mut p.dst.conn(), &p.src.addr(), &p.dst.addr());
}

#[test]
fn notifications_off_are_refused_before_anything_is_written() {
    let p = Pair::new();
    let mut src = p.src.conn();
    fill_strings(&mut src, "k:", 100);
    run(&mut src, &[b"CONFIG", b"SET", b"notify-keyspace-events", b"Kx"]);
    let out = p.copy(&["--follow", "--progress", "0"]);
    assert_exit(&out, 2);
    let text = stderr(&out);
    assert!(
        text.contains("lack the classes `Eg$lshzte`") && text.contains("--enable-notifications"),
        "{text}"
    );
    assert_eq!(text.lines().filter(|l| l.starts_with("error:")).count(), 1, "{text}");
    assert_eq!(dbsize(&mut p.dst.conn()), 0);
    let now: Vec<String> = q(&mut src, &[b"CONFIG", b"GET", b"notify-keyspace-events"]);
    assert_eq!(now[1], "xK");
}

#[test]
fn enable_notifications_sets_them_and_puts_the_old_value_back_after_a_cutover_and_after_ctrl_c() {
    let p = Pair::new();
    let mut src = p.src.conn();
    fill_strings(&mut src, "k:", 500);
    run(&mut src, &[b"CONFIG", b"SET", b"notify-keyspace-events", b"Kl"]);
    let before: Vec<String> = q(&mut src, &[b"CONFIG", b"GET", b"notify-keyspace-events"]);
    let config = |src: &mut redis::Connection| {
        q::<Vec<String>>(src, &[b"CONFIG", b"GET", b"notify-keyspace-events"])[1].clone()
    };
    // A cutover.
    let mut f = spawn_follow(
        &p.src.addr(),
        &p.dst.addr(),
        &p.csv("errors.csv"),
        &["--enable-notifications", "--cutover-after", "1", "--cutover-pause", "1000"],
    );
    f.wait_caught_up();
    let during = config(&mut src);
    assert!(
        during.contains('E') && during.contains('t') && during.contains('K'),
        "during the follow: {during}"
    );
    run(&mut src, &[b"SET", b"k:1", b"changed"]);
    let out = f.run.wait();
    assert_exit(&out, 0);
    assert_eq!(config(&mut src), before[1]);
    assert_eq!(q::<Vec<u8>>(&mut p.dst.conn(), &[b"GET", b"k:1"]), b"changed");
    // Ctrl-C: exit 130, the summary, and the setting back.
    let mut f =
        spawn_follow(&p.src.addr(), &p.dst.addr(), &p.csv("errors2.csv"), &["--enable-notifications"]);
    f.wait_caught_up();
    run(&mut src, &[b"SET", b"k:2", b"changed too"]);
    wait_until(Duration::from_secs(10), "k:2 followed", || {
        q::<Vec<u8>>(&mut p.dst.conn(), &[b"GET", b"k:2"]) == b"changed too"
    });
    f.run.signal("INT");
    let out = f.run.wait();
    assert_exit(&out, 130);
    let s = follow_summary(&out);
    assert_eq!(s.get("cutover"), Some("none"));
    assert_eq!(config(&mut src), before[1]);
}

#[test]
fn a_cutover_that_finds_a_failed_key_says_it_is_not_safe_and_lifts_the_pause() {
    let p = Pair::new();
    let mut src = p.src.conn();
    notify_on(&mut src);
    fill_strings(&mut src, "ok:", 200);
    run(&mut src, &[b"SET", b"refused:1", b"the target's user may not write this"]);
    let target = ok_only_target(&p);
    let mut f = spawn_follow(
        &p.src.addr(),
        &target,
        &p.csv("errors.csv"),
        &["--cutover-after", "1", "--cutover-pause", "30000"],
    );
    let out = {
        f.wait_caught_up();
        f.run.wait()
    };
    assert_exit(&out, 6);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains("cutover not safe: 1 keys are failing"), "{}", dump(&out));
    assert_eq!(follow_summary(&out).get("cutover"), Some("unsafe"));
    // The pause was lifted: a write goes through at once, not after 30 s.
    let t = Instant::now();
    run(&mut src, &[b"SET", b"after", b"1"]);
    assert!(t.elapsed() < Duration::from_secs(5), "a write waited {:?}", t.elapsed());
}

#[test]
fn a_key_that_failed_is_read_again_until_it_is_copied_and_then_the_cutover_is_safe() {
    let p = Pair::new();
    let mut src = p.src.conn();
    notify_on(&mut src);
    fill_strings(&mut src, "ok:", 100);
    run(&mut src, &[b"SET", b"refused:1", b"refused by the target's user, at first"]);
    let target = ok_only_target(&p);
    let f = spawn_follow(&p.src.addr(), &target, &p.csv("errors.csv"), &["--cutover-pause", "2000"]);
    wait_until(Duration::from_secs(30), "the key to fail", || {
        std::fs::read_to_string(p.csv("errors.csv")).is_ok_and(|t| t.contains("refused:1"))
    });
    // The cause is fixed on the target: the next attempt goes through.
    run(&mut p.dst.conn(), &[b"ACL", b"SETUSER", b"ferry", b"~*"]);
    wait_until(Duration::from_secs(30), "the failed key copied", || {
        q::<Option<Vec<u8>>>(&mut p.dst.conn(), &[b"GET", b"refused:1"]).is_some()
    });
    let out = cut_over(f);
    let s = follow_summary(&out);
    assert!(n(&s, "failed") >= 1, "the failure is still counted: {}", s.line);
    assert_converged(&mut src, &mut p.dst.conn(), &p.src.addr(), &p.dst.addr());
}

#[test]
fn follow_flags_are_checked_before_anything_is_written() {
    let p = Pair::new();
    fill_strings(&mut p.src.conn(), "k:", 10);
    for (args, needle) in [
        (vec!["--cutover-after", "5"], "--cutover-after is a --follow option"),
        (vec!["--follow", "--follow-queue", "0"], "--follow-queue must be at least 1"),
        (vec!["--follow", "--keys-from", "keys.txt"], "--keys-from cannot be combined with --follow"),
        (vec!["--follow", "--dry-run"], "--dry-run cannot be combined with --follow"),
        (vec!["--follow", "--cutover-pause", "700000"], "--cutover-pause 700000 is above"),
        (vec!["--follow", "--cutover-pause", "200"], "--cutover-pause 200 is below 1000 ms"),
        (vec!["--follow", "--shard", "0/2"], "--shard cannot be combined with --follow"),
        (vec!["--follow", "--read-from", "replica"], "--read-from replica cannot be combined with --follow"),
        (vec!["--follow", "--type", "hash"], "--type cannot be combined with --follow"),
        (vec!["--follow", "--metrics", "nowhere"], "--metrics `nowhere`"),
    ] {
        let mut all = vec!["--progress", "0"];
        all.extend(args);
        let out = p.copy(&all);
        assert_refused_naming(&out, &[needle]);
    }
    assert_eq!(dbsize(&mut p.dst.conn()), 0);
}

#[test]
fn a_source_that_refuses_config_and_client_pause_is_followed_on_the_operators_word_and_cut_over_unpaused() {
    let p = Pair::new();
    let mut src = p.src.conn();
    notify_on(&mut src);
    fill_strings(&mut src, "k:", 300);
    // As on a managed service: no CONFIG, no CLIENT PAUSE.
    run(
        &mut src,
        &[b"ACL", b"SETUSER", b"app", b"on", b">pw", b"~*", b"&*", b"+@all", b"-config", b"-client|pause"],
    );
    let source = format!("redis://app:pw@127.0.0.1:{}", p.src.port());
    let out = p.copy_between(&source, &p.dst.addr(), &["--follow"]);
    assert_refused_naming(
        &out,
        &["refuses CONFIG GET notify-keyspace-events", "parameter group", "--notifications-configured"],
    );
    assert_eq!(dbsize(&mut p.dst.conn()), 0);
    // Vouched for: it follows; CLIENT PAUSE is refused at the cutover, which is then not safe.
    let f = spawn_follow(
        &source,
        &p.dst.addr(),
        &p.csv("errors.csv"),
        &["--notifications-configured", "--cutover-after", "1"],
    );
    let out = f.run.wait();
    assert_exit(&out, 6);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.contains("cutover not safe: CLIENT PAUSE 10000 WRITE failed")
            && stdout.contains("--cutover-pause 0"),
        "{}",
        dump(&out)
    );
    // With the writers stopped by hand: the same fence and drain, no pause.
    let mut f = spawn_follow(
        &source,
        &p.dst.addr(),
        &p.csv("errors2.csv"),
        &["--notifications-configured", "--cutover-pause", "0"],
    );
    f.wait_caught_up();
    run(&mut src, &[b"SET", b"k:1", b"last write"]);
    let out = cut_over(f);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.contains("cutover ready: the target holds every change")
            && stdout.contains("writes were not paused"),
        "{}",
        dump(&out)
    );
    assert_converged(&mut src, &mut p.dst.conn(), &p.src.addr(), &p.dst.addr());
}

#[test]
fn a_replica_as_source_is_refused_before_anything_is_written() {
    let p = Pair::new();
    let replica = RedisServer::with_args(&["--replicaof", "127.0.0.1", &p.src.port().to_string()]);
    notify_on(&mut replica.conn());
    let out = p.copy_between(&replica.addr(), &p.dst.addr(), &["--follow"]);
    assert_refused_naming(&out, &["--follow needs the server the application writes to", "is a replica"]);
    assert_eq!(dbsize(&mut p.dst.conn()), 0);
}

#[test]
fn a_source_restarted_mid_follow_has_its_notifications_set_again_and_is_rescanned() {
    let mut p = Pair::new();
    let mut src = p.src.conn();
    fill_strings(&mut src, "k:", 1_000);
    let mut f = spawn_follow(
        &p.src.addr(),
        &p.dst.addr(),
        &p.csv("errors.csv"),
        &["--enable-notifications", "--cutover-pause", "2000"],
    );
    f.wait_caught_up();
    // Without persistence: it comes back empty, with notifications off again.
    p.src.restart(Duration::from_millis(200));
    let mut src = p.src.conn();
    fill_strings(&mut src, "after:", 300);
    wait_until(Duration::from_secs(30), "a re-scan after the restart", || {
        f.metric("redis_ferry_follow_rescans_total").unwrap_or(0.0) >= 1.0
    });
    f.wait_caught_up();
    // Heard again: a write after the re-scan is followed.
    run(&mut src, &[b"SET", b"late", b"heard"]);
    wait_until(Duration::from_secs(10), "the late write followed", || {
        q::<Option<Vec<u8>>>(&mut p.dst.conn(), &[b"GET", b"late"]).is_some()
    });
    let out = cut_over(f);
    let text = stderr(&out);
    assert!(text.contains("restarted (its run_id changed)"), "{text}");
    assert!(
        text.matches("set notify-keyspace-events to").count() >= 2,
        "set again after the restart: {text}"
    );
    let config: Vec<String> = q(&mut src, &[b"CONFIG", b"GET", b"notify-keyspace-events"]);
    assert_eq!(config[1], "", "put back at the end");
    assert_converged(&mut src, &mut p.dst.conn(), &p.src.addr(), &p.dst.addr());
}

#[test]
fn a_stop_during_the_cutover_lifts_the_pause_and_exits_130() {
    let p = Pair::new();
    let mut src = p.src.conn();
    notify_on(&mut src);
    fill_strings(&mut src, "k:", 10);
    // A slow follow (5 keys a second): the drain of what is written just before the cutover cannot finish
    // before the test stops it.
    let mut f = spawn_follow(
        &p.src.addr(),
        &p.dst.addr(),
        &p.csv("errors.csv"),
        &["--batch", "1", "--sleep-after-batch", "200", "--writers", "1", "--cutover-pause", "60000"],
    );
    f.wait_caught_up();
    let mut pipe = redis::pipe();
    for i in 0..100 {
        pipe.cmd("SET").arg(format!("slow:{i}")).arg(i).ignore();
    }
    exec_pipe(&mut src, &pipe);
    f.run.signal("USR1");
    wait_until(Duration::from_secs(10), "the cutover to pause the source", || {
        f.metric("redis_ferry_follow_phase{phase=\"cutover\"}") == Some(1.0)
    });
    thread::sleep(Duration::from_millis(300));
    f.run.signal("INT");
    let out = f.run.wait();
    assert_exit(&out, 130);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains("cutover not safe: the run was stopped during the cutover"), "{}", dump(&out));
    let t = Instant::now();
    run(&mut src, &[b"SET", b"after", b"1"]);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "a write waited {:?}: the pause was not lifted",
        t.elapsed()
    );
}

#[test]
fn a_type_aware_follow_under_a_writer_load_ends_equal() {
    let p = Pair::new();
    let mut src = p.src.conn();
    notify_on(&mut src);
    fill_every_type(&mut src, false);
    fill_hashes(&mut src, "h:", 200);
    let f = spawn_follow(
        &p.src.addr(),
        &p.dst.addr(),
        &p.csv("errors.csv"),
        &["--mode", "typed", "--cutover-pause", "1500"],
    );
    let writers = load(&p.src.addr(), 1_000, 3.0, &["--keys", "200"]);
    finish_load(writers);
    let out = cut_over(f);
    let s = follow_summary(&out);
    assert!(n(&s, "deleted") > 0, "{}", s.line);
    assert_converged(&mut src, &mut p.dst.conn(), &p.src.addr(), &p.dst.addr());
}
