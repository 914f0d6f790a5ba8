//! The type-aware copier: `--mode typed` round-trips every type (TTLs, binary keys, the empty string,
//! streams with their groups, consumers and pending entries) and leaves no temporary key behind, not
//! even when a write fails; `--mode auto` falls back to it for keys DUMP/RESTORE cannot move, whether
//! the servers refuse DUMP or RESTORE for every key (real ACL users, a renamed command) or for some
//! keys only (ACL selectors), and for keys above `--big-key-bytes`, which are never DUMPed whole and
//! keep the tool's memory bounded; `--mode dump` reports the same keys as failed. The skip policy
//! leaves a key that appears on the target during the copy untouched (RENAMENX).

use std::thread;
use std::time::{Duration, Instant};

use redis::{Connection, Value};

use crate::support::*;

/// Every key of the target whose name starts with the temporary prefix.
fn temp_keys(con: &mut Connection) -> Vec<String> {
    show_keys(&keys_matching(con, "redis-ferry:tmp:*"))
}

/// `redis-ferry verify` between the two servers as the default user; asserts it agrees.
#[track_caller]
fn assert_verified(p: &Pair) {
    let out = ferry(["verify", &p.src.addr(), &p.dst.addr()]);
    assert_exit(&out, 0);
    let v = verify_summary(&out);
    assert_eq!((v.missing, v.different, v.ttl, v.errors), (0, 0, 0, 0), "{}", v.line);
}

/// Creates an ACL user `name` with password `pw` and the given rules on top of `on >pw`.
fn acl_user(con: &mut Connection, name: &str, rules: &[&str]) {
    let mut args: Vec<&[u8]> = vec![b"ACL", b"SETUSER", name.as_bytes(), b"reset", b"on", b">pw"];
    args.extend(rules.iter().map(|r| r.as_bytes()));
    let _: Value = q(con, &args);
}

fn user_url(server: &RedisServer, user: &str) -> String {
    format!("redis://{user}:pw@127.0.0.1:{}", server.port())
}

// ---------------------------------------------------------------------------------------------------
// --mode typed
// ---------------------------------------------------------------------------------------------------

#[test]
fn typed_mode_round_trips_every_type_and_leaves_no_temporary_key() {
    let p = Pair::new();
    let (mut s, mut d) = (p.src.conn(), p.dst.conn());
    let keys = fill_every_type(&mut s, true);
    let n = keys.len() as u64;

    let out = p.copy(&["--mode", "typed", "--progress", "0"]);
    assert_exit(&out, 0);
    assert!(stderr(&out).contains("type-aware reads and writes for every other key"), "{}", dump(&out));
    assert_eq!(buckets(&summary(&out)), (n, n, 0, 0, 0));
    assert_eq!(command_calls(&mut s, "dump"), 0, "--mode typed DUMPed");
    assert_eq!(command_calls(&mut d, "restore"), 0, "--mode typed RESTOREd");
    assert_eq!(
        show_keys(&all_keys(&mut d)),
        show_keys(&keys.iter().cloned().collect::<std::collections::BTreeSet<_>>()),
        "no extra key"
    );
    assert_same(&mut s, &mut d, &keys);
    assert_verified(&p);

    // replace: every key is rewritten (RENAME over it), whatever the target held, TTL included.
    run(&mut d, &[b"SET", b"list:small", b"now a string", b"EX", b"1000"]);
    run(&mut d, &[b"DEL", b"str:ttl-px"]);
    run(&mut d, &[b"DEL", b"str:plain"]);
    run(&mut d, &[b"RPUSH", b"str:plain", b"a list"]);
    let out =
        p.copy(&["--mode", "typed", "--progress", "0", "--on-conflict", "replace", "--typed-threads", "2"]);
    assert_exit(&out, 0);
    assert_eq!(buckets(&summary(&out)), (n, n, 0, 0, 0));
    assert_same(&mut s, &mut d, &keys);
    assert!(temp_keys(&mut d).is_empty(), "temporary keys left: {:?}", temp_keys(&mut d));
}

#[test]
fn typed_streams_carry_ids_counters_groups_consumers_and_pending_entries() {
    let p = Pair::new();
    let (mut s, mut d) = (p.src.conn(), p.dst.conn());
    let key: &[u8] = b"events\xff";
    for i in 1..=30 {
        let id = format!("{i}-{}", i % 3);
        run(&mut s, &[b"XADD", key, id.as_bytes(), b"n", i.to_string().as_bytes(), b"bin", b"\x00\xff"]);
    }
    run(&mut s, &[b"XGROUP", b"CREATE", key, b"g1", b"0"]);
    run(&mut s, &[b"XGROUP", b"CREATE", key, b"g2", b"$"]);
    run(&mut s, &[b"XGROUP", b"CREATE", key, b"g3", b"7-1"]);
    run(&mut s, &[b"XREADGROUP", b"GROUP", b"g1", b"alice", b"COUNT", b"5", b"STREAMS", key, b">"]);
    run(&mut s, &[b"XREADGROUP", b"GROUP", b"g1", b"bob", b"COUNT", b"4", b"STREAMS", key, b">"]);
    run(&mut s, &[b"XREADGROUP", b"GROUP", b"g3", b"carol", b"COUNT", b"2", b"STREAMS", key, b">"]);
    run(&mut s, &[b"XGROUP", b"CREATECONSUMER", key, b"g1", b"idle-dave"]);
    run(&mut s, &[b"XACK", key, b"g1", b"1-1"]);
    // A second delivery raises the delivery count of bob's first entry.
    run(&mut s, &[b"XCLAIM", key, b"g1", b"bob", b"0", b"6-0"]);
    // Deleted entries (never delivered): the last one, which is max-deleted-entry-id, and one inside.
    run(&mut s, &[b"XDEL", key, b"30-0", b"12-0"]);
    // An empty stream that only holds a group.
    run(&mut s, &[b"XGROUP", b"CREATE", b"empty", b"g", b"$", b"MKSTREAM"]);
    // A pending entry whose message was deleted cannot be recreated (XCLAIM needs the entry).
    fill_stream(&mut s, b"lossy", 5);
    let lost: Vec<(Vec<u8>, Vec<u8>, i64, i64)> =
        q(&mut s, &[b"XPENDING", b"lossy", b"g1", b"-", b"+", b"1"]);
    run(&mut s, &[b"XDEL", b"lossy", &lost[0].0]);

    let out = p.copy(&["--mode", "typed", "--progress", "0"]);
    assert_exit(&out, 0);
    assert_eq!(buckets(&summary(&out)), (3, 3, 0, 0, 0));

    for k in [key, b"empty".as_slice()] {
        let (a, b): (Value, Value) =
            (q(&mut s, &[b"XRANGE", k, b"-", b"+"]), q(&mut d, &[b"XRANGE", k, b"-", b"+"]));
        assert_eq!(a, b, "entries");
        let (mut a, mut b) = (
            field_map(&q(&mut s, &[b"XINFO", b"STREAM", k])),
            field_map(&q(&mut d, &[b"XINFO", b"STREAM", k])),
        );
        // The radix tree's shape depends on how the entries were inserted, not on the stream.
        for m in [&mut a, &mut b] {
            m.remove("radix-tree-keys");
            m.remove("radix-tree-nodes");
        }
        assert_eq!(a, b, "XINFO STREAM");
        let groups = |c: &mut Connection| -> Value { q(c, &[b"XINFO", b"GROUPS", k]) };
        assert_eq!(
            groups(&mut s),
            groups(&mut d),
            "XINFO GROUPS (consumers, pending, last-delivered-id, entries-read, lag)"
        );
    }
    for g in [&b"g1"[..], b"g3"] {
        let names = |c: &mut Connection| -> Vec<(Value, Value)> {
            let list: Vec<Value> = q(c, &[b"XINFO", b"CONSUMERS", key, g]);
            list.iter().map(field_map).map(|m| (m["name"].clone(), m["pending"].clone())).collect()
        };
        assert_eq!(names(&mut s), names(&mut d), "consumers of {}", String::from_utf8_lossy(g));
    }
    // Pending entries: id, consumer and delivery count carried (idle times too, roughly); the one
    // whose entry was deleted from the stream cannot be claimed on the target, so it is not.
    let pending = |c: &mut Connection| -> Vec<(Vec<u8>, Vec<u8>, i64)> {
        let rows: Vec<(Vec<u8>, Vec<u8>, i64, i64)> = q(c, &[b"XPENDING", key, b"g1", b"-", b"+", b"100"]);
        rows.into_iter().map(|(id, consumer, _, count)| (id, consumer, count)).collect()
    };
    let expected = pending(&mut s);
    assert_eq!(pending(&mut d), expected);
    assert!(expected.iter().any(|(id, c, n)| id == b"6-0" && c == b"bob" && *n == 2), "{expected:?}");

    // The deleted pending entry is the one thing not carried.
    let count = |c: &mut Connection| -> i64 {
        let summary: (i64, Value, Value, Value) = q(c, &[b"XPENDING", b"lossy", b"g1"]);
        summary.0
    };
    assert_eq!(count(&mut d), count(&mut s) - 1);
    let on_target: Vec<(Vec<u8>, Vec<u8>, i64, i64)> =
        q(&mut d, &[b"XPENDING", b"lossy", b"g1", b"-", b"+", b"100"]);
    assert!(on_target.iter().all(|row| row.0 != lost[0].0));
    assert!(temp_keys(&mut d).is_empty());
}

#[test]
fn typed_mode_reads_small_aggregates_in_batches_and_big_ones_in_pages() {
    let p = Pair::new();
    let mut s = p.src.conn();
    for i in 0..60 {
        let k = |t: &str| format!("{t}:{i}").into_bytes();
        run(&mut s, &[b"RPUSH", &k("l"), b"a", b"b"]);
        run(&mut s, &[b"SADD", &k("s"), b"x", b"y"]);
        run(&mut s, &[b"HSET", &k("h"), b"f", b"v"]);
        run(&mut s, &[b"ZADD", &k("z"), b"1.5", b"m"]);
        run(&mut s, &[b"PEXPIRE", &k("z"), b"600000"]);
    }
    fill_stream(&mut s, b"x:small", 8);
    // Above 16 KiB: page by page through the typed threads.
    let mut pipe = redis::pipe();
    for i in 0..3000 {
        pipe.cmd("SADD").arg("s:big").arg(format!("member-{i}-{}", "y".repeat(20))).ignore();
    }
    let _: () = pipe.query(&mut s).unwrap();
    run(&mut s, &[b"CONFIG", b"RESETSTAT"]);
    let out = p.copy(&["--progress", "0", "--mode", "typed"]);
    assert_exit(&out, 0);
    assert_eq!(summary(&out).copied, 242, "{}", dump(&out));
    // One read per small key, in the batch's pipeline; the big set alone is scanned in pages.
    let calls = |c: &str| command_calls(&mut p.src.conn(), c);
    assert_eq!((calls("lrange"), calls("smembers"), calls("hgetall")), (60, 60, 60));
    assert_eq!((calls("zrange"), calls("xinfo|stream")), (60, 1));
    assert!(calls("sscan") >= 3, "the big set goes in pages: {} SSCAN", calls("sscan"));
    assert_verified(&p);
    assert!(temp_keys(&mut p.dst.conn()).is_empty());
}

#[test]
fn auto_reads_small_lists_sets_and_hashes_by_value_and_dumps_the_rest() {
    let p = Pair::new();
    let mut s = p.src.conn();
    for i in 0..40 {
        let k = |t: &str| format!("{t}:{i}").into_bytes();
        run(&mut s, &[b"RPUSH", &k("l"), b"a", b"\x00b"]);
        run(&mut s, &[b"SADD", &k("s"), b"x", b"y"]);
        run(&mut s, &[b"HSET", &k("h"), b"f", b"v", b"g", b"\xff"]);
        run(&mut s, &[b"ZADD", &k("z"), b"1.5", b"m"]);
        run(&mut s, &[b"PEXPIRE", &k(if i % 2 == 0 { "h" } else { "l" }), b"600000"]);
    }
    fill_stream(&mut s, b"x:small", 8);
    // Above 16 KiB, below --big-key-bytes: one DUMP.
    let mut pipe = redis::pipe();
    for i in 0..3000 {
        pipe.cmd("SADD").arg("s:big").arg(format!("member-{i}-{}", "y".repeat(20))).ignore();
    }
    let _: () = pipe.query(&mut s).unwrap();
    let all = all_keys(&mut s).into_iter().collect::<Vec<_>>();
    run(&mut s, &[b"CONFIG", b"RESETSTAT"]);
    let out = p.copy(&["--progress", "0"]);
    assert_exit(&out, 0);
    assert_eq!(summary(&out).copied, 162, "{}", dump(&out));
    assert!(stderr(&out).contains("small lists, sets and hashes read by value"), "{}", dump(&out));
    let calls = |c: &str| command_calls(&mut p.src.conn(), c);
    assert_eq!((calls("lrange"), calls("smembers"), calls("hgetall")), (40, 40, 40));
    // Sorted sets and streams cost the source less by DUMP; the big set is DUMPed whole.
    assert_eq!((calls("dump"), calls("zrange"), calls("xinfo|stream")), (42, 0, 0));
    // All RESTOREd: the small lists, sets and hashes from payloads made of their elements, which the
    // target turns into the same compact encodings as the source's.
    let mut d = p.dst.conn();
    assert_eq!((command_calls(&mut d, "restore"), command_calls(&mut d, "exec")), (162, 0));
    assert_same(&mut s, &mut d, &all);
    for k in [&b"l:3"[..], b"s:3", b"h:4", b"s:big"] {
        let enc = |c: &mut redis::Connection| q::<String>(c, &[b"OBJECT", b"ENCODING", k]);
        assert_eq!(enc(&mut d), enc(&mut s), "{}", String::from_utf8_lossy(k));
    }
    assert_verified(&p);
    // Skip: a second run finds every key there (RESTORE's BUSYKEY), and overwrites none.
    run(&mut d, &[b"RPUSH", b"l:3", b"extra"]);
    let out = p.copy(&["--progress", "0"]);
    assert_exit(&out, 0);
    assert_eq!(summary(&out).skipped, 162, "{}", dump(&out));
    assert_eq!(q::<i64>(&mut d, &[b"LLEN", b"l:3"]), 3);
}

#[test]
fn typed_dry_run_writes_nothing_and_limit_counts_typed_copies() {
    let p = Pair::new();
    let (mut s, mut d) = (p.src.conn(), p.dst.conn());
    fill_hashes_and_lists(&mut s, 20);

    let out = p.copy(&["--mode", "typed", "--progress", "0", "--dry-run"]);
    assert_exit(&out, 0);
    let sum = summary(&out);
    assert_eq!(buckets(&sum), (40, 40, 0, 0, 0), "{}", sum.line);
    assert_eq!(sum.get("dry_run"), Some("1"));
    assert_eq!(dbsize(&mut d), 0, "a dry run wrote to the target");

    let out = p.copy(&["--mode", "typed", "--progress", "0", "--limit", "7", "--batch", "5"]);
    assert_exit(&out, 0);
    let sum = summary(&out);
    assert_eq!(sum.copied, 7, "{}", sum.line);
    assert_eq!(dbsize(&mut d), 7);
    assert!(temp_keys(&mut d).is_empty());
}

fn fill_hashes_and_lists(con: &mut Connection, n: usize) {
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("HSET").arg(format!("h:{i}")).arg("f").arg(i).ignore();
        pipe.cmd("RPUSH").arg(format!("l:{i}")).arg("a").arg(i).ignore();
    }
    pipe.exec(con).unwrap();
}

/// A list of 60,000 integers under `key`: about 60 pages, each after the first costs a token at
/// `--rate 20` (~3 s).
fn fill_long_list(con: &mut Connection, key: &str) {
    let mut pipe = redis::pipe();
    for chunk in 0..60 {
        let mut cmd = redis::cmd("RPUSH");
        cmd.arg(key);
        for i in 0..1000 {
            cmd.arg(chunk * 1000 + i);
        }
        pipe.add_command(cmd).ignore();
    }
    pipe.exec(con).unwrap();
}

/// Starts a type-aware copy of the pair at `--rate 20 --batch 1` (a token per page, so a long list
/// takes seconds) and hands it back once a temporary key is on the target (`d`).
#[track_caller]
fn slow_typed_copy_under_way(p: &Pair, d: &mut Connection) -> FerryProcess {
    let copying = spawn_ferry([
        "copy",
        &p.src.addr(),
        &p.dst.addr(),
        "--mode",
        "typed",
        "--rate",
        "20",
        "--batch",
        "1",
        "--progress",
        "0",
        "--errors",
        &path_str(&p.csv("errors.csv")),
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while temp_keys(d).is_empty() {
        assert!(Instant::now() < deadline, "no temporary key appeared on the target");
        thread::sleep(Duration::from_millis(5));
    }
    copying
}

#[test]
fn typed_skip_never_overwrites_a_key_that_appears_during_the_copy() {
    let p = Pair::new();
    let (mut s, mut d) = (p.src.conn(), p.dst.conn());
    fill_long_list(&mut s, "contested");
    let copying = slow_typed_copy_under_way(&p, &mut d);
    // The key did not exist when the check stage looked; it does now, before the rename.
    run(&mut d, &[b"SET", b"contested", b"written by someone else"]);
    let out = copying.wait();
    assert_exit(&out, 0);
    assert_eq!(buckets(&summary(&out)), (1, 0, 1, 0, 0));
    assert_eq!(q::<Vec<u8>>(&mut d, &[b"GET", b"contested"]), b"written by someone else");
    assert!(temp_keys(&mut d).is_empty(), "temporary keys left: {:?}", temp_keys(&mut d));
}

#[test]
fn a_failed_typed_write_leaves_no_temporary_key() {
    // About 4 MB of list on the source; the target refuses writes beyond 3 MB of memory.
    let p = Pair::with_target_args(&["--maxmemory", "3mb", "--maxmemory-policy", "noeviction"]);
    let (mut s, mut d) = (p.src.conn(), p.dst.conn());
    let mut pipe = redis::pipe();
    for chunk in 0..40 {
        let mut cmd = redis::cmd("RPUSH");
        cmd.arg("too-big");
        for i in 0..100 {
            cmd.arg(noise(1000, chunk * 100 + i));
        }
        pipe.add_command(cmd).ignore();
    }
    pipe.exec(&mut s).unwrap();

    let out = p.copy(&["--mode", "typed", "--progress", "0", "--retries", "0"]);
    assert_exit(&out, 1);
    assert_eq!(buckets(&summary(&out)), (1, 0, 0, 0, 1));
    let rows = read_errors(&p.csv("errors.csv"));
    assert_eq!((rows.len(), rows[0].stage.as_str(), rows[0].error.as_str()), (1, "write", "OOM"), "{rows:?}");
    assert_eq!(dbsize(&mut d), 0, "something was left on the target: {:?}", show_keys(&all_keys(&mut d)));
}

// ---------------------------------------------------------------------------------------------------
// --mode auto: falling back when DUMP or RESTORE is refused
// ---------------------------------------------------------------------------------------------------

#[test]
fn auto_copies_everything_when_acl_users_may_not_dump_or_restore_and_dump_mode_fails_them() {
    let p = Pair::new();
    let (mut s, mut d) = (p.src.conn(), p.dst.conn());
    let keys = fill_every_type(&mut s, false);
    let n = keys.len() as u64;
    acl_user(&mut s, "nodump", &["~*", "&*", "+@all", "-dump"]);
    acl_user(&mut d, "norestore", &["~*", "&*", "+@all", "-restore"]);
    let (src_url, dst_url) = (user_url(&p.src, "nodump"), user_url(&p.dst, "norestore"));

    // --mode dump: every key fails, at fetch (the source refuses DUMP).
    let out = p.copy_between(&src_url, &p.dst.url(), &["--mode", "dump"]);
    assert_exit(&out, 1);
    assert_eq!(buckets(&summary(&out)), (n, 0, 0, 0, n));
    let rows = read_errors(&p.csv("errors.csv"));
    assert!(rows.iter().all(|r| r.stage == "fetch" && r.error == "NOPERM"), "{rows:?}");
    // --mode dump: every key fails at write (the target refuses RESTORE).
    let out = p.copy_between(&p.src.url(), &dst_url, &["--mode", "dump"]);
    assert_exit(&out, 1);
    assert_eq!(buckets(&summary(&out)), (n, 0, 0, 0, n));
    let rows = read_errors(&p.csv("errors.csv"));
    assert!(rows.iter().all(|r| r.stage == "write" && r.error == "NOPERM"), "{rows:?}");
    assert_eq!(dbsize(&mut d), 0);

    // --mode auto (the default), both users: decided up front, every key type-aware, all copied.
    let out = p.copy_between(&src_url, &dst_url, &[]);
    assert_exit(&out, 0);
    assert_eq!(buckets(&summary(&out)), (n, n, 0, 0, 0));
    assert!(stderr(&out).contains("the source refuses DUMP"), "{}", dump(&out));
    assert_same(&mut s, &mut d, &keys);
    assert_verified(&p);

    // Only the target refuses: the same, said once.
    run(&mut d, &[b"FLUSHALL"]);
    let out = p.copy_between(&p.src.url(), &dst_url, &[]);
    assert_exit(&out, 0);
    assert_eq!(buckets(&summary(&out)), (n, n, 0, 0, 0));
    assert_eq!(stderr(&out).matches("the target refuses RESTORE").count(), 1, "{}", dump(&out));
    assert_verified(&p);
    assert!(temp_keys(&mut d).is_empty());
}

#[test]
fn auto_falls_back_key_by_key_when_only_some_keys_may_be_dumped_or_restored() {
    let p = Pair::new();
    let (mut s, mut d) = (p.src.conn(), p.dst.conn());
    // The source lets DUMP read ok:* and w:* only, the target lets RESTORE write ok:* only (ACL
    // selectors): ok:* keys go by DUMP/RESTORE, w:* keys are refused at RESTORE, t:* at DUMP. Strings
    // (a third of each prefix) go by value (GETRANGE, SET), which both users may run; sorted sets and
    // streams go by DUMP in `auto` (small hashes, lists and sets would go by value).
    acl_user(&mut s, "some", &["~*", "&*", "+@all", "-dump", "(+dump ~ok:* ~w:*)"]);
    acl_user(&mut d, "some", &["~*", "&*", "+@all", "-restore", "(+restore ~ok:*)"]);
    let mut keys = Vec::new();
    for prefix in ["ok", "w", "t"] {
        for i in 0..30 {
            let k = format!("{prefix}:{i}");
            match i % 3 {
                0 => run(&mut s, &[b"SET", k.as_bytes(), b"v", b"PX", b"900000"]),
                1 => run(&mut s, &[b"XADD", k.as_bytes(), b"7-1", b"f", b"v", b"g", b"\xff"]),
                _ => run(&mut s, &[b"ZADD", k.as_bytes(), b"1.5", b"a", b"-inf", b"b"]),
            }
            keys.push(k.into_bytes());
        }
    }
    let out = p.copy_between(&user_url(&p.src, "some"), &user_url(&p.dst, "some"), &["--batch", "7"]);
    assert_exit(&out, 0);
    assert_eq!(buckets(&summary(&out)), (90, 90, 0, 0, 0));
    let log = stderr(&out);
    assert_eq!(log.matches("keys the source will not DUMP are copied type-aware").count(), 1, "{log}");
    assert_eq!(log.matches("keys the target will not RESTORE are copied type-aware").count(), 1, "{log}");
    assert!(
        log.contains("0 big keys, 20 the source would not DUMP, 20 the target would not RESTORE"),
        "{log}"
    );
    assert_same(&mut s, &mut d, &keys);
    assert_verified(&p);
    assert!(temp_keys(&mut d).is_empty());
}

#[test]
fn auto_falls_back_when_restore_is_renamed_away() {
    let p = Pair::with_target_args(&["--rename-command", "RESTORE", ""]);
    let (mut s, mut d) = (p.src.conn(), p.dst.conn());
    let keys = fill_every_type(&mut s, false);
    let n = keys.len() as u64;
    let out = p.copy(&["--mode", "dump", "--progress", "0"]);
    assert_exit(&out, 1);
    assert_eq!(buckets(&summary(&out)), (n, 0, 0, 0, n));
    let out = p.copy(&["--progress", "0"]);
    assert_exit(&out, 0);
    assert_eq!(buckets(&summary(&out)), (n, n, 0, 0, 0));
    assert!(stderr(&out).contains("unknown command"), "{}", dump(&out));
    assert_same(&mut s, &mut d, &keys);
}

// ---------------------------------------------------------------------------------------------------
// Big keys
// ---------------------------------------------------------------------------------------------------

/// Peak RSS (VmHWM) of a running process in KiB, read from /proc until it exits; 0 if unreadable.
fn watch_peak_rss(run: &mut FerryProcess) -> u64 {
    let path = format!("/proc/{}/status", run.pid());
    let mut peak = 0;
    while run.running() {
        if let Ok(status) = std::fs::read_to_string(&path) {
            if let Some(kb) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kb);
            }
        }
        thread::sleep(Duration::from_millis(5));
    }
    peak
}

/// The bound the README states for the tool's peak RSS while copying big keys in pages.
const RSS_BOUND_KB: u64 = 32 * 1024;

#[test]
fn big_keys_are_copied_in_pages_never_dumped_whole_with_bounded_memory() {
    let p = Pair::new();
    let (mut s, mut d) = (p.src.conn(), p.dst.conn());
    let mut pipe = redis::pipe();
    for chunk in 0..200 {
        let mut list = redis::cmd("RPUSH");
        list.arg("big:list");
        for i in 0..1000 {
            list.arg(format!("element-{}", chunk * 1000 + i));
        }
        pipe.add_command(list).ignore();
    }
    for chunk in 0..100 {
        let mut hash = redis::cmd("HSET");
        hash.arg("big:hash");
        for i in 0..1000 {
            let n = chunk * 1000 + i;
            hash.arg(format!("field-{n}")).arg(format!("value-{n}"));
        }
        pipe.add_command(hash).ignore();
    }
    pipe.exec(&mut s).unwrap();
    run(&mut s, &[b"SET", b"big:string", &noise(20 << 20, 7)]);
    run(&mut s, &[b"PEXPIRE", b"big:hash", b"3600000"]);
    let small = fill_strings(&mut s, "small:", 50);

    let mut ferry = spawn_ferry([
        "copy",
        &p.src.addr(),
        &p.dst.addr(),
        "--big-key-bytes",
        "1000000",
        "--progress",
        "0",
        "--errors",
        &path_str(&p.csv("errors.csv")),
    ]);
    let peak_kb = watch_peak_rss(&mut ferry);
    let out = ferry.wait();
    assert_exit(&out, 0);
    assert_eq!(buckets(&summary(&out)), (53, 53, 0, 0, 0));
    assert!(
        stderr(&out).contains("keys above --big-key-bytes 1000000 are copied type-aware"),
        "{}",
        dump(&out)
    );
    assert!(stderr(&out).contains("3 big keys"), "{}", dump(&out));
    // No key was DUMPed whole (the probes of the plan run nothing): the small keys, strings, went by
    // value, and of the big string no more than redis-ferry's by-value limit was read at once.
    assert_eq!(command_calls(&mut s, "dump"), 0);
    assert_eq!(command_calls(&mut d, "restore"), 0);
    let mut keys = small;
    keys.extend([b"big:list".to_vec(), b"big:hash".to_vec(), b"big:string".to_vec()]);
    assert_same(&mut s, &mut d, &keys);
    assert_verified(&p);
    assert!(temp_keys(&mut d).is_empty());
    eprintln!("peak RSS of the copy: {peak_kb} KiB");
    assert!(peak_kb > 0, "could not read the peak RSS");
    assert!(peak_kb < RSS_BOUND_KB, "peak RSS {peak_kb} KiB, above the bound of {RSS_BOUND_KB} KiB");
}

#[test]
fn typed_flags_are_checked() {
    let p = Pair::new();
    for (args, needle) in [
        (&["--mode", "dump", "--big-key-bytes", "10"][..], "--big-key-bytes"),
        (&["--mode", "typed", "--big-key-bytes", "10"][..], "--big-key-bytes"),
        (&["--mode", "dump", "--typed-threads", "2"][..], "--typed-threads"),
        (&["--typed-threads", "0"][..], "--typed-threads"),
        (&["--mode", "copy"][..], "--mode"),
    ] {
        let out = p.copy(args);
        assert_exit(&out, 2);
        assert!(stderr(&out).contains(needle), "{args:?}\n{}", dump(&out));
    }
}

#[test]
fn without_memory_usage_big_keys_are_found_by_their_dump_length() {
    let p = Pair::new();
    let (mut s, mut d) = (p.src.conn(), p.dst.conn());
    acl_user(&mut s, "nomemory", &["~*", "&*", "+@all", "-memory"]);
    let mut list = redis::cmd("RPUSH");
    list.arg("big:list");
    for i in 0..50_000 {
        list.arg(format!("element-{i}"));
    }
    list.exec(&mut s).unwrap();
    let mut keys = fill_strings(&mut s, "small:", 20);
    keys.push(b"big:list".to_vec());
    let out = p.copy_between(&user_url(&p.src, "nomemory"), &p.dst.url(), &["--big-key-bytes", "100000"]);
    assert_exit(&out, 0);
    assert_eq!(buckets(&summary(&out)), (21, 21, 0, 0, 0));
    let log = stderr(&out);
    assert!(log.contains("by DUMP length: the source refuses MEMORY USAGE"), "{log}");
    assert!(log.contains("DUMP payload of"), "{log}");
    assert!(log.contains("1 big keys"), "{log}");
    // The list was DUMPed once (and found too big), but never RESTOREd whole: it was built type-aware
    // (one rename); the 20 small keys, strings, went by value.
    assert_eq!(command_calls(&mut s, "dump"), 1, "the list only");
    assert_eq!(command_calls(&mut d, "restore"), 0, "the list was RESTOREd");
    assert_eq!(command_calls(&mut d, "set"), 20, "the 20 small keys");
    assert_eq!(keys_written(&mut d), 21, "the 20 small keys and the list");
    assert_same(&mut s, &mut d, &keys);
}

#[test]
fn a_target_restarted_mid_key_starts_the_key_over_and_leaves_no_temporary_key() {
    // AOF on the target, so the half-built temporary key survives the restart and must be cleaned up.
    let mut p = Pair::with_target_args(&["--appendonly", "yes", "--appendfsync", "always"]);
    let mut s = p.src.conn();
    fill_long_list(&mut s, "restarted");
    run(&mut s, &[b"PEXPIRE", b"restarted", b"3600000"]);
    let mut d = p.dst.conn();
    let copying = slow_typed_copy_under_way(&p, &mut d);
    thread::sleep(Duration::from_millis(300));
    p.dst.restart(Duration::from_millis(500));
    let out = copying.wait();
    assert_exit(&out, 0);
    assert_eq!(buckets(&summary(&out)), (1, 1, 0, 0, 0));
    assert!(stderr(&out).contains("type-aware copy starts over"), "{}", dump(&out));
    let mut d = p.dst.conn();
    assert_same(&mut s, &mut d, &[b"restarted".to_vec()]);
    assert!(temp_keys(&mut d).is_empty(), "temporary keys left: {:?}", temp_keys(&mut d));
}
