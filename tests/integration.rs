//! End-to-end tests of the `redis-ferry` binary against real `redis-server` processes (see
//! tests/support). Each test starts its own servers on free 127.0.0.1 ports, so tests run in parallel.
//! They check the contract in PRODUCT.md: what is copied (every type, value, TTL, awkward keys), the
//! buckets of the summary line, the error CSV and its round trip through `--keys-from`, filters,
//! the rate limit (a lower bound on time only), refusal of bad input, and that the source is only read.
//!
//! Ctrl-C is sent as a real SIGINT (`kill -INT`) to a running copy. `--lock` is checked with two real
//! processes contending for one lock file. TLS is in tests/tls, Redis Cluster in tests/cluster.

mod clocks;
mod cluster;
mod faults;
mod inputs;
mod resume;
mod servers;
mod stopping;
mod support;
mod throttle;
mod tls;
mod typed;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::thread;
use std::time::{Duration, Instant};

use redis::Value;
use support::*;

// ---------------------------------------------------------------------------------------------------
// 1. every core type round-trips with value and TTL
// ---------------------------------------------------------------------------------------------------

#[test]
fn every_core_type_round_trips_with_value_and_ttl() {
    let p = Pair::new();
    let mut s = p.src.conn();
    let keys = fill_every_type(&mut s, true);
    let n = keys.len() as u64;
    assert_eq!(dbsize(&mut s), n as i64, "fixture wrote duplicate keys");

    let out = p.copy(&[]);
    assert_exit(&out, 0);
    let sum = summary(&out);
    assert_eq!(buckets(&sum), (n, n, 0, 0, 0), "{}", sum.line);

    let mut d = p.dst.conn();
    assert_eq!(show_keys(&all_keys(&mut d)), show_keys(&set_of(&keys)), "target holds different keys");
    assert_same(&mut s, &mut d, &keys);
    assert!(!p.csv("errors.csv").exists(), "error CSV created although nothing failed");
}

// ---------------------------------------------------------------------------------------------------
// 2. conflict policy
// ---------------------------------------------------------------------------------------------------

#[test]
fn skip_leaves_existing_target_key_and_replace_overwrites_it() {
    let p = Pair::new();
    let (mut s, mut d) = (p.src.conn(), p.dst.conn());
    run(&mut s, &[b"SET", b"k:same", b"from-source"]);
    run(&mut s, &[b"SET", b"k:new", b"only-on-source"]);
    run(&mut s, &[b"SET", b"k:type", b"a string on the source"]);
    run(&mut d, &[b"SET", b"k:same", b"from-target", b"EX", b"1000"]);
    run(&mut d, &[b"RPUSH", b"k:type", b"a list on the target"]);

    let out = p.copy(&[]);
    assert_exit(&out, 0);
    let sum = summary(&out);
    assert_eq!(buckets(&sum), (3, 1, 2, 0, 0), "{}", sum.line);
    assert_eq!(q::<Vec<u8>>(&mut d, &[b"GET", b"k:same"]), b"from-target");
    assert!(pttl(&mut d, b"k:same") > 0, "skipped key lost its TTL");
    assert_eq!(q::<String>(&mut d, &[b"TYPE", b"k:type"]), "list");
    assert_eq!(q::<Vec<u8>>(&mut d, &[b"GET", b"k:new"]), b"only-on-source");

    let out = p.copy(&["--on-conflict", "replace"]);
    assert_exit(&out, 0);
    let sum = summary(&out);
    assert_eq!(buckets(&sum), (3, 3, 0, 0, 0), "{}", sum.line);
    // k:same had a TTL on the target; after replace it must carry the source's (none).
    let keys = [b"k:same".to_vec(), b"k:new".to_vec(), b"k:type".to_vec()];
    assert_same(&mut s, &mut d, &keys);
}

// ---------------------------------------------------------------------------------------------------
// 3. filters: --match, --type, --limit, --dry-run
// ---------------------------------------------------------------------------------------------------

#[test]
fn match_is_repeatable_union_with_each_key_once() {
    let p = Pair::new();
    let mut s = p.src.conn();
    for k in ["a:1", "a:2", "a:3", "a:4", "a:5", "a:z", "b:z", "b:1", "c:1", "zz"] {
        run(&mut s, &[b"SET", k.as_bytes(), b"v"]);
    }
    // "a:z" matches both patterns and must still be scanned (and counted) once.
    let out = p.copy(&["--match", "a:*", "--match", "*:z"]);
    assert_exit(&out, 0);
    let sum = summary(&out);
    assert_eq!(buckets(&sum), (7, 7, 0, 0, 0), "{}", sum.line);
    let want: BTreeSet<Vec<u8>> =
        ["a:1", "a:2", "a:3", "a:4", "a:5", "a:z", "b:z"].iter().map(|k| k.as_bytes().to_vec()).collect();
    assert_eq!(show_keys(&all_keys(&mut p.dst.conn())), show_keys(&want));
}

#[test]
fn type_filter_is_repeatable() {
    let p = Pair::new();
    let mut s = p.src.conn();
    let keys = fill_every_type(&mut s, false);
    let want: BTreeSet<Vec<u8>> = keys
        .iter()
        .filter(|k| {
            let t: String = q(&mut s, &[b"TYPE", k]);
            t == "list" || t == "hash"
        })
        .cloned()
        .collect();
    assert!(want.len() >= 6 && want.len() < keys.len());

    let out = p.copy(&["--type", "list", "--type", "hash"]);
    assert_exit(&out, 0);
    let sum = summary(&out);
    let n = want.len() as u64;
    assert_eq!(buckets(&sum), (n, n, 0, 0, 0), "{}", sum.line);
    let mut d = p.dst.conn();
    assert_eq!(show_keys(&all_keys(&mut d)), show_keys(&want));
    assert_same(&mut s, &mut d, &want.into_iter().collect::<Vec<_>>());
}

#[test]
fn limit_stops_after_exactly_n_copied() {
    let p = Pair::new();
    let (mut s, mut d) = (p.src.conn(), p.dst.conn());
    let keys = fill_strings(&mut s, "lim:", 300);
    // Some keys already on the target, so the run also meets skips while counting to the limit.
    for k in keys.iter().step_by(30) {
        run(&mut d, &[b"SET", k, b"already there"]);
    }
    let before = dbsize(&mut d);
    assert_eq!(before, 10);

    // Small batches and several workers make overshooting the limit likely if it is not exact.
    let out = p.copy(&["--limit", "50", "--batch", "7", "--writers", "2"]);
    assert_exit(&out, 0);
    let sum = summary(&out);
    assert_eq!(sum.copied, 50, "{}", sum.line);
    assert_eq!(sum.failed, 0, "{}", sum.line);
    assert!(sum.scanned <= 300, "{}", sum.line);
    assert_eq!(dbsize(&mut d), before + 50, "target should hold exactly 50 new keys");
}

#[test]
fn dry_run_writes_nothing_and_reports_what_would_happen() {
    let p = Pair::new();
    let (mut s, mut d) = (p.src.conn(), p.dst.conn());
    let keys = fill_strings(&mut s, "dry:", 30);

    // Empty target: everything would be copied, nothing is.
    let out = p.copy(&["--dry-run"]);
    assert_exit(&out, 0);
    let sum = summary(&out);
    assert_eq!(buckets(&sum), (30, 30, 0, 0, 0), "{}", sum.line);
    assert!(sum.line.ends_with(" dry_run=1"), "dry-run summary must end with dry_run=1: {}", sum.line);
    assert_eq!(dbsize(&mut d), 0, "dry run wrote to the target");

    // Five conflicting keys: 25 would be copied, 5 skipped, the target keeps its values.
    for k in &keys[..5] {
        run(&mut d, &[b"SET", k, b"target value"]);
    }
    let digest_before = digest(&mut d);
    let out = p.copy(&["--dry-run"]);
    assert_exit(&out, 0);
    let sum = summary(&out);
    assert_eq!(buckets(&sum), (30, 25, 5, 0, 0), "{}", sum.line);
    assert!(sum.line.ends_with(" dry_run=1"), "{}", sum.line);
    assert_eq!(dbsize(&mut d), 5);
    assert_eq!(digest(&mut d), digest_before, "dry run changed the target");

    // Same with --on-conflict replace: the 5 would be copied (overwritten), still nothing written.
    let out = p.copy(&["--dry-run", "--on-conflict", "replace"]);
    assert_exit(&out, 0);
    let sum = summary(&out);
    assert_eq!(buckets(&sum), (30, 30, 0, 0, 0), "{}", sum.line);
    assert_eq!(digest(&mut d), digest_before, "dry run changed the target");
}

// ---------------------------------------------------------------------------------------------------
// 4. failed keys: the CSV, --max-errors, and the retry through --keys-from
// ---------------------------------------------------------------------------------------------------

#[test]
fn failed_keys_land_in_the_csv_and_retry_through_keys_from() {
    const PASSWORD: &str = "ferry-acl-pass-7731";
    let p = Pair::new();
    let (mut s, mut d) = (p.src.conn(), p.dst.conn());
    // The user may touch ok:* only; every secret:* key fails with NOPERM (at EXISTS or at RESTORE).
    let pw = format!(">{PASSWORD}");
    run(&mut d, &[b"ACL", b"SETUSER", b"ferry", b"on", pw.as_bytes(), b"~ok:*", b"+@all"]);
    let target = format!("redis://ferry:{PASSWORD}@127.0.0.1:{}", p.dst.port());

    let ok = fill_strings(&mut s, "ok:", 20);
    let mut secret: Vec<Vec<u8>> = Vec::new();
    for i in 0..5 {
        let k = format!("secret:{i}").into_bytes();
        if i % 2 == 0 {
            run(&mut s, &[b"SET", &k, b"classified"]);
        } else {
            run(&mut s, &[b"HSET", &k, b"f", b"classified"]);
        }
        secret.push(k);
    }
    // A binary key with a comma, a quote and a newline proves the CSV round trip.
    let binary = b"secret:\xff,\"x\n".to_vec();
    run(&mut s, &[b"SET", &binary, b"binary secret", b"EX", b"3000"]);
    secret.push(binary);
    let total = (ok.len() + secret.len()) as u64;
    let nsecret = secret.len() as u64;

    // Run 1: default --max-errors, so the run finishes with exit 1.
    let csv1 = p.csv("errors-1.csv");
    let out = ferry(["copy", &p.src.addr(), &target, "--errors", &path_str(&csv1)]);
    assert_exit(&out, 1);
    let sum = summary(&out);
    assert_eq!(buckets(&sum), (total, ok.len() as u64, 0, 0, nsecret), "{}", sum.line);
    let rows = read_errors(&csv1);
    assert_eq!(rows.len() as u64, nsecret, "one CSV row per failed key: {rows:#?}");
    let failed: BTreeSet<Vec<u8>> = rows.iter().map(|r| r.key.clone()).collect();
    assert_eq!(show_keys(&failed), show_keys(&set_of(&secret)), "CSV keys");
    for r in &rows {
        assert_eq!(r.error, "NOPERM", "{r:?}");
        assert!(r.stage == "check" || r.stage == "write", "{r:?}");
        assert!(!r.message.is_empty(), "{r:?}");
    }
    let csv_text = std::fs::read_to_string(&csv1).unwrap();
    assert!(!csv_text.contains(PASSWORD), "password in the CSV");
    assert!(!String::from_utf8_lossy(&out.stderr).contains(PASSWORD), "password in the logs");
    assert_same(&mut s, &mut d, &ok);

    // Run 2: --max-errors 3 with 6 failing keys aborts with exit 3.
    let csv2 = p.csv("errors-2.csv");
    let out = ferry(["copy", &p.src.addr(), &target, "--errors", &path_str(&csv2), "--max-errors", "3"]);
    assert_exit(&out, 3);
    let rows2 = read_errors(&csv2);
    assert!(rows2.len() >= 3, "an abort at 3 errors leaves at least 3 rows: {rows2:#?}");
    assert!(rows2.iter().all(|r| r.error == "NOPERM"), "{rows2:#?}");
    // The summary is optional on abort; if printed it must still add up and match the CSV.
    if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.starts_with("scanned=")) {
        let sum = summary(&out);
        assert!(sum.failed >= 3, "{}", sum.line);
        assert_eq!(sum.failed, rows2.len() as u64, "{}", sum.line);
    }

    // Grant the rest and retry exactly the keys of run 1's CSV.
    run(&mut d, &[b"ACL", b"SETUSER", b"ferry", b"~*"]);
    let csv3 = p.csv("errors-3.csv");
    let out = ferry([
        "copy",
        &p.src.addr(),
        &target,
        "--errors",
        &path_str(&csv3),
        "--keys-from",
        &path_str(&csv1),
    ]);
    assert_exit(&out, 0);
    let sum = summary(&out);
    assert_eq!(buckets(&sum), (nsecret, nsecret, 0, 0, 0), "{}", sum.line);
    assert_same(&mut s, &mut d, &secret);
    assert_eq!(dbsize(&mut d), total as i64);
    assert!(!csv3.exists(), "error CSV created although nothing failed");
}

// ---------------------------------------------------------------------------------------------------
// 5. --rate
// ---------------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------------
// 6. keys expiring while in flight
// ---------------------------------------------------------------------------------------------------

#[test]
fn expiring_keys_are_counted_expired_or_copied_with_their_ttl() {
    let p = Pair::new();
    let (mut s, mut d) = (p.src.conn(), p.dst.conn());
    let mut pipe = redis::pipe();
    for i in 0..300u64 {
        let px = 50 + (i * 7919) % 351; // 50..=400 ms, spread
        pipe.cmd("SET").arg(format!("short:{i}")).arg("v").arg("PX").arg(px).ignore();
    }
    // Keys that cannot expire during the run, so some copies always happen and their deadlines can
    // be checked exactly.
    for i in 0..20 {
        pipe.cmd("SET").arg(format!("long:{i}")).arg("v").arg("PX").arg(120_000).ignore();
    }
    pipe.exec(&mut s).unwrap();
    let filled = Instant::now();

    // Slow copy (rate-limited), so short keys reach their deadlines while the run is in progress.
    let out = p.copy(&["--rate", "300", "--batch", "10"]);
    // Right away: any short key on the target must still carry a TTL.
    let no_ttl: Vec<String> = keys_matching(&mut d, "short:*")
        .iter()
        .filter(|k| pttl(&mut d, k) == -1)
        .map(|k| escape_key(k))
        .collect();
    assert_exit(&out, 0);
    let sum = summary(&out);
    assert_eq!(sum.failed, 0, "{}", sum.line);
    assert_eq!(sum.skipped, 0, "{}", sum.line);
    // Keys that expired before SCAN reached them are never scanned, so the total is `scanned`.
    assert_eq!(sum.copied + sum.expired, sum.scanned, "{}", sum.line);
    assert!(sum.scanned <= 320 && sum.copied >= 20, "{}", sum.line);
    assert!(no_ttl.is_empty(), "keys copied without their TTL: {no_ttl:?}");
    let long: Vec<Vec<u8>> = (0..20).map(|i| format!("long:{i}").into_bytes()).collect();
    assert_same(&mut s, &mut d, &long);

    // Nuance (Redis 7.0): RESTORE with an ABSTTL already in the past replies OK without creating the
    // key; the binary must count such a key as expired, not copied. We can only see the outcome: after
    // the last source deadline (+ margin) none of the short keys may exist on the target.
    let settle = Duration::from_millis(400 + 250);
    if let Some(rest) = settle.checked_sub(filled.elapsed()) {
        thread::sleep(rest);
    }
    let left = keys_matching(&mut d, "short:*");
    assert!(left.is_empty(), "short keys outlived their deadline on the target: {:?}", show_keys(&left));
}

// ---------------------------------------------------------------------------------------------------
// 7. bad input: exit 2, one line on stderr naming the culprit, nothing written
// ---------------------------------------------------------------------------------------------------

#[test]
fn bad_input_unknown_flag() {
    let (p, d) = filled_pair(&[]);
    let out = p.copy(&["--bogus-flag"]);
    assert_refused(&p, &out, &["--bogus-flag"], None, &d);
}

#[test]
fn bad_input_batch_zero() {
    let (p, d) = filled_pair(&[]);
    let out = p.copy(&["--batch", "0"]);
    assert_refused(&p, &out, &["--batch"], None, &d);
}

#[test]
fn bad_input_malformed_url() {
    let (p, d) = filled_pair(&[]);
    let csv = path_str(&p.csv("errors.csv"));
    let out = ferry(["copy", &p.src.addr(), "redis://127.0.0.1:notaport", "--errors", &csv]);
    assert_refused(&p, &out, &["notaport"], None, &d);
}

#[test]
fn bad_input_unreachable_target() {
    let (p, d) = filled_pair(&[]);
    // A port that was free a moment ago, with nothing listening.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let csv = path_str(&p.csv("errors.csv"));
    let out = ferry(["copy", &p.src.addr(), &nowhere, "--errors", &csv]);
    assert_refused(&p, &out, &[&nowhere, "target"], None, &d);
}

#[test]
fn bad_input_wrong_password() {
    let (p, d) = filled_pair(&["--requirepass", "right-pass-1234"]);
    let wrong = "wrong-pass-5678";
    let target = format!("redis://:{wrong}@127.0.0.1:{}", p.dst.port());
    let csv = path_str(&p.csv("errors.csv"));
    let out = ferry(["copy", &p.src.addr(), &target, "--errors", &csv]);
    assert_refused(&p, &out, &[&p.dst.addr(), "target"], Some(wrong), &d);
}

#[test]
fn bad_input_unwritable_error_csv() {
    let (p, d) = filled_pair(&[]);
    let out = ferry(["copy", &p.src.addr(), &p.dst.url(), "--errors", "/nonexistent-dir/x.csv"]);
    assert_refused(&p, &out, &["/nonexistent-dir/x.csv", "--errors"], None, &d);
}

// ---------------------------------------------------------------------------------------------------
// 8. the source is only read
// ---------------------------------------------------------------------------------------------------

#[test]
fn source_is_untouched() {
    let p = Pair::new();
    let mut s = p.src.conn();
    let keys = fill_every_type(&mut s, false);
    run(&mut s, &[b"CONFIG", b"RESETSTAT"]);
    let before = digest(&mut s);

    let out = p.copy(&[]);
    assert_exit(&out, 0);
    summary(&out);
    let out = p.copy(&["--on-conflict", "replace"]);
    assert_exit(&out, 0);
    summary(&out);
    let out = p.copy(&["--dry-run", "--on-conflict", "replace"]);
    assert_exit(&out, 0);
    summary(&out);

    assert_eq!(digest(&mut s), before, "DEBUG DIGEST of the source changed");
    assert_eq!(dbsize(&mut s), keys.len() as i64);

    // No command flagged `write` ran on the source (INFO commandstats, reset before the runs; our own
    // DEBUG/INFO/CONFIG/COMMAND calls carry no write flag). Redis 7 names subcommands `a|b`, which
    // COMMAND INFO accepts as is.
    let stats: String = q(&mut s, &[b"INFO", b"commandstats"]);
    let mut writes = Vec::new();
    for name in stats.lines().filter_map(|l| l.strip_prefix("cmdstat_")?.split(':').next()) {
        let info: Vec<Value> = q(&mut s, &[b"COMMAND", b"INFO", name.as_bytes()]);
        if let Some(Value::Array(entry)) = info.first() {
            if let Some(Value::Array(flags)) = entry.get(2) {
                let is_write = flags.iter().any(|f| match f {
                    Value::SimpleString(s) => s == "write",
                    Value::BulkString(b) => b == b"write",
                    _ => false,
                });
                if is_write {
                    writes.push(name.to_string());
                }
            }
        }
    }
    assert!(writes.is_empty(), "write commands ran on the source: {writes:?}\n{stats}");
}

// ---------------------------------------------------------------------------------------------------
// 9. --keys-from - (stdin), plain key per line
// ---------------------------------------------------------------------------------------------------

#[test]
fn keys_from_stdin_takes_plain_keys_literally() {
    let p = Pair::new();
    let mut s = p.src.conn();
    fill_strings(&mut s, "k", 20);
    // Plain lines are literal: no unescaping of `\x41`, commas and spaces kept.
    run(&mut s, &[b"SET", b"back\\x41slash", b"literal"]);
    run(&mut s, &[b"SET", b"sp ace, comma", b"literal"]);
    run(&mut s, &[b"SET", b"backAslash", b"must not be copied"]);
    let input = b"k3\nk5\r\nk7\n\nk9\nnot-on-source\nback\\x41slash\nsp ace, comma";
    let csv = path_str(&p.csv("errors.csv"));
    let out = ferry_with(
        ["copy", &p.src.addr(), &p.dst.url(), "--errors", &csv, "--keys-from", "-"],
        &[],
        Some(input),
    );
    assert_exit(&out, 0);
    let sum = summary(&out);
    // A listed key that does not exist on the source "vanished before it could be written": expired.
    assert_eq!(buckets(&sum), (7, 6, 0, 1, 0), "{}", sum.line);
    let want: Vec<Vec<u8>> = ["k3", "k5", "k7", "k9", "back\\x41slash", "sp ace, comma"]
        .iter()
        .map(|k| k.as_bytes().to_vec())
        .collect();
    let mut d = p.dst.conn();
    assert_eq!(show_keys(&all_keys(&mut d)), show_keys(&set_of(&want)));
    assert_same(&mut s, &mut d, &want);
}

// ---------------------------------------------------------------------------------------------------
// 10. verify
// ---------------------------------------------------------------------------------------------------

#[test]
fn verify_passes_after_copy_and_fails_after_a_change() {
    let p = Pair::new();
    let mut s = p.src.conn();
    let keys = fill_every_type(&mut s, false);
    let out = p.copy(&[]);
    assert_exit(&out, 0);

    let src_digest = digest(&mut s);
    let verify = || ferry(["verify", &p.src.addr(), &p.dst.url()]);
    let out = verify();
    assert_exit(&out, 0);
    let v = verify_summary(&out);
    assert_eq!((v.matched, v.missing, v.different, v.ttl), (keys.len() as u64, 0, 0, 0), "{}", v.line);

    let mut d = p.dst.conn();
    run(&mut d, &[b"HSET", b"hash:big", b"field-7", b"changed"]);
    let out = verify();
    assert_exit(&out, 1);
    let v = verify_summary(&out);
    assert_eq!((v.missing, v.different), (0, 1), "{}", v.line);

    run(&mut d, &[b"DEL", b"list:small"]);
    let out = verify();
    assert_exit(&out, 1);
    let v = verify_summary(&out);
    assert_eq!((v.missing, v.different), (1, 1), "{}", v.line);
    assert_eq!(digest(&mut s), src_digest, "verify changed the source");
}

// ---------------------------------------------------------------------------------------------------
// 10b. verify: big keys in pages, --check-extra, --diff and the repair through copy --keys-from,
//      keys expiring during the check
// ---------------------------------------------------------------------------------------------------

/// `redis-ferry verify SRC(host:port) DST(url) EXTRA...`
fn verify_run(p: &Pair, extra: &[&str]) -> Output {
    let mut args = vec!["verify".to_string(), p.src.addr(), p.dst.url()];
    args.extend(extra.iter().map(|s| s.to_string()));
    ferry(args)
}

/// The diff CSV's rows as key -> difference.
fn diff_kinds(path: &Path) -> std::collections::BTreeMap<Vec<u8>, String> {
    let rows = read_diff(path);
    let kinds: std::collections::BTreeMap<Vec<u8>, String> =
        rows.iter().map(|r| (r.key.clone(), r.difference.clone())).collect();
    assert_eq!(kinds.len(), rows.len(), "a key has two rows in the diff CSV: {rows:#?}");
    kinds
}

/// Fills the source with one big key of each core type: 5000 elements each, and a 3 MB string.
fn fill_big_keys(con: &mut redis::Connection) -> Vec<Vec<u8>> {
    let mut p = redis::pipe();
    for i in 0..5000 {
        p.cmd("RPUSH").arg("big:list").arg(format!("element-{i}")).ignore();
        p.cmd("HSET").arg("big:hash").arg(format!("field-{i}")).arg(format!("value-{i}")).ignore();
        p.cmd("SADD").arg("big:set").arg(format!("member-{i}")).ignore();
        p.cmd("ZADD").arg("big:zset").arg(i as f64 / 7.0).arg(format!("member-{i}")).ignore();
        p.cmd("XADD").arg("big:stream").arg(format!("1-{}", i + 1)).arg("n").arg(i).ignore();
    }
    p.exec(con).unwrap();
    run(con, &[b"SET", b"big:string", &noise(3 * 1024 * 1024, 7)]);
    ["big:list", "big:hash", "big:set", "big:zset", "big:stream", "big:string"]
        .iter()
        .map(|k| k.as_bytes().to_vec())
        .collect()
}

#[test]
fn verify_compares_big_keys_in_pages() {
    let p = Pair::new();
    let (mut s, mut d) = (p.src.conn(), p.dst.conn());
    let keys = fill_big_keys(&mut s);
    assert_exit(&p.copy(&[]), 0);
    run(&mut s, &[b"CONFIG", b"RESETSTAT"]);
    run(&mut d, &[b"CONFIG", b"RESETSTAT"]);

    let out = verify_run(&p, &[]);
    assert_exit(&out, 0);
    let v = verify_summary(&out);
    assert_eq!((v.matched, v.missing, v.different, v.ttl, v.errors), (6, 0, 0, 0, 0), "{}", v.line);
    // Paged reads on both sides (several calls per key), lookups of the source's pages on the target,
    // and not one whole-value read.
    for (side, con) in [("source", &mut s), ("target", &mut d)] {
        for cmd in ["getrange", "lrange", "xrange"] {
            assert!(command_calls(con, cmd) > 1, "{side}: {cmd} was not paged");
        }
        for whole in ["get", "smembers", "hgetall", "zrange", "dump"] {
            assert_eq!(command_calls(con, whole), 0, "{side}: a big key was read whole with {whole}");
        }
    }
    for cmd in ["sscan", "hscan", "zscan"] {
        assert!(command_calls(&mut s, cmd) > 1, "source: {cmd} was not paged");
    }
    for cmd in ["smismember", "hmget", "zmscore"] {
        assert!(command_calls(&mut d, cmd) > 1, "target: pages were not looked up with {cmd}");
    }

    // One element changed in each, sizes unchanged: only a page-by-page comparison can see it.
    run(&mut d, &[b"LSET", b"big:list", b"2500", b"changed"]);
    run(&mut d, &[b"HSET", b"big:hash", b"field-4000", b"changed"]);
    run(&mut d, &[b"SREM", b"big:set", b"member-3000"]);
    run(&mut d, &[b"SADD", b"big:set", b"member-new"]);
    run(&mut d, &[b"ZADD", b"big:zset", b"1.5", b"member-4999"]);
    run(&mut d, &[b"SETRANGE", b"big:string", b"2000000", b"\x00changed"]);
    run(&mut d, &[b"XDEL", b"big:stream", b"1-1000"]);
    run(&mut d, &[b"XADD", b"big:stream", b"2-0", b"n", b"new"]);
    let diff = p.csv("diff.csv");
    let out = verify_run(&p, &["--diff", &path_str(&diff)]);
    assert_exit(&out, 1);
    let v = verify_summary(&out);
    assert_eq!((v.matched, v.missing, v.different, v.ttl, v.errors), (0, 0, 6, 0, 0), "{}", v.line);
    let rows = read_diff(&diff);
    assert_eq!(rows.len(), 6, "{rows:#?}");
    assert_eq!(
        show_keys(&rows.iter().map(|r| r.key.clone()).collect::<BTreeSet<_>>()),
        show_keys(&set_of(&keys))
    );
    assert!(rows.iter().all(|r| r.difference == "value"), "{rows:#?}");
    let message = |key: &str| rows.iter().find(|r| r.key == key.as_bytes()).unwrap().message.clone();
    assert!(message("big:list").contains("2500"), "{rows:#?}");
    assert!(message("big:hash").contains("field-4000"), "{rows:#?}");
    assert!(message("big:set").contains("member-3000"), "{rows:#?}");
    assert!(message("big:zset").contains("member-4999"), "{rows:#?}");
    assert!(message("big:string").contains("2000000"), "{rows:#?}");
    assert!(message("big:stream").contains("1-1000"), "{rows:#?}");

    // A different size is a difference too, found without reading the values.
    run(&mut d, &[b"RPUSH", b"big:list", b"one more"]);
    let out = verify_run(&p, &["--match", "big:list"]);
    assert_exit(&out, 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("list length 5000 on the source, 5001"));
}

#[test]
fn verify_check_extra_lists_target_only_keys_with_the_same_filters() {
    let p = Pair::new();
    let (mut s, mut d) = (p.src.conn(), p.dst.conn());
    for k in ["a:1", "a:2", "a:3", "a:4", "a:5"] {
        run(&mut s, &[b"SET", k.as_bytes(), b"v"]);
    }
    run(&mut s, &[b"RPUSH", b"b:1", b"x"]);
    assert_exit(&p.copy(&[]), 0);
    let binary = b"a:\xff,\"x\n".to_vec();
    run(&mut d, &[b"SET", b"a:extra1", b"only on the target"]);
    run(&mut d, &[b"HSET", b"a:extra2", b"f", b"v"]);
    run(&mut d, &[b"SET", b"b:extra", b"v"]);
    run(&mut d, &[b"SET", &binary, b"v"]);
    run(&mut d, &[b"SET", b"z:other", b"v"]);

    // Without the flag the target is not scanned.
    let out = verify_run(&p, &[]);
    assert_exit(&out, 0);
    let v = verify_summary(&out);
    assert_eq!((v.matched, v.extra), (6, 0), "{}", v.line);

    let diff = p.csv("extra.csv");
    let out = verify_run(&p, &["--check-extra", "--diff", &path_str(&diff)]);
    assert_exit(&out, 1);
    let v = verify_summary(&out);
    assert_eq!((v.matched, v.missing, v.different, v.ttl, v.extra), (6, 0, 0, 0, 5), "{}", v.line);
    let want: BTreeSet<Vec<u8>> =
        [&b"a:extra1"[..], b"a:extra2", b"b:extra", &binary, b"z:other"].iter().map(|k| k.to_vec()).collect();
    let kinds = diff_kinds(&diff);
    assert_eq!(show_keys(kinds.keys()), show_keys(&want));
    assert!(kinds.values().all(|k| k == "extra"), "{kinds:?}");

    // The target is scanned with the same --match and --type as the source.
    let out = verify_run(&p, &["--check-extra", "--match", "a:*"]);
    assert_exit(&out, 1);
    let v = verify_summary(&out);
    assert_eq!((v.matched, v.extra), (5, 3), "{}", v.line);
    let out = verify_run(&p, &["--check-extra", "--match", "a:*", "--type", "hash"]);
    assert_exit(&out, 1);
    let v = verify_summary(&out);
    assert_eq!((v.matched, v.extra), (0, 1), "{}", v.line);
    let out = verify_run(&p, &["--check-extra", "--match", "b:*", "--type", "list"]);
    assert_exit(&out, 0);
    let v = verify_summary(&out);
    assert_eq!((v.matched, v.extra), (1, 0), "{}", v.line);
}

#[test]
fn verify_diff_csv_repairs_exactly_those_keys_through_copy() {
    let p = Pair::new();
    let (mut s, mut d) = (p.src.conn(), p.dst.conn());
    let keys = fill_every_type(&mut s, false);
    let n = keys.len() as u64;
    assert_exit(&p.copy(&[]), 0);
    let src_digest = digest(&mut s);

    // Damage the target in every way verify knows, binary keys included.
    let awkward = awkward_keys();
    let (new_line, all_of_them) = (awkward[2].clone(), awkward[8].clone());
    run(&mut d, &[b"DEL", b"list:small"]);
    run(&mut d, &[b"DEL", &new_line]);
    run(&mut d, &[b"HSET", b"hash:small", b"f1", b"changed"]);
    run(&mut d, &[b"SET", &all_of_them, b"changed"]);
    run(&mut d, &[b"LSET", b"list:big", b"1500", b"changed"]);
    run(&mut d, &[b"DEL", b"zset:small"]);
    run(&mut d, &[b"SET", b"zset:small", b"now a string"]);
    run(&mut d, &[b"PEXPIRE", b"str:plain", b"100000000"]);
    run(&mut d, &[b"PERSIST", b"str:ttl-px"]);
    run(&mut d, &[b"PEXPIRE", b"set:ttl", b"60000"]);
    let want: std::collections::BTreeMap<Vec<u8>, String> = [
        (b"list:small".to_vec(), "missing"),
        (new_line, "missing"),
        (b"hash:small".to_vec(), "value"),
        (all_of_them, "value"),
        (b"list:big".to_vec(), "value"),
        (b"zset:small".to_vec(), "type"),
        (b"str:plain".to_vec(), "ttl"),
        (b"str:ttl-px".to_vec(), "ttl"),
        (b"set:ttl".to_vec(), "ttl"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect();

    let diff = p.csv("diff.csv");
    let out = verify_run(&p, &["--diff", &path_str(&diff)]);
    assert_exit(&out, 1);
    let v = verify_summary(&out);
    assert_eq!((v.matched, v.missing, v.different, v.ttl, v.extra), (n - 9, 2, 4, 3, 0), "{}", v.line);
    let kinds = diff_kinds(&diff);
    assert_eq!(
        kinds.iter().map(|(k, v)| (escape_key(k), v.clone())).collect::<Vec<_>>(),
        want.iter().map(|(k, v)| (escape_key(k), v.clone())).collect::<Vec<_>>()
    );

    // The diff CSV fed to copy rewrites those keys and no other.
    run(&mut d, &[b"CONFIG", b"RESETSTAT"]);
    let out = p.copy(&["--keys-from", &path_str(&diff), "--on-conflict", "replace"]);
    assert_exit(&out, 0);
    let sum = summary(&out);
    assert_eq!(buckets(&sum), (9, 9, 0, 0, 0), "{}", sum.line);
    assert_eq!(keys_written(&mut d), 9, "copy wrote other keys than the diff's");

    let diff2 = p.csv("diff-2.csv");
    let out = verify_run(&p, &["--diff", &path_str(&diff2)]);
    assert_exit(&out, 0);
    let v = verify_summary(&out);
    assert_eq!((v.matched, v.missing, v.different, v.ttl, v.errors), (n, 0, 0, 0, 0), "{}", v.line);
    assert!(!diff2.exists(), "diff CSV created although nothing differs");
    assert_same(&mut s, &mut d, &keys);
    assert_eq!(digest(&mut s), src_digest, "verify or the repair changed the source");
}

#[test]
fn verify_counts_keys_expiring_during_the_check_as_vanished() {
    let p = Pair::new();
    let mut s = p.src.conn();
    let mut pipe = redis::pipe();
    let mut listed = String::new();
    for i in 0..1000u64 {
        let px = 100 + (i * 7919) % 1400; // 100..1500 ms, spread
        pipe.cmd("SET").arg(format!("short:{i}")).arg("v").arg("PX").arg(px).ignore();
        listed.push_str(&format!("short:{i}\n"));
    }
    for i in 0..50 {
        pipe.cmd("SET").arg(format!("long:{i}")).arg("v").arg("PX").arg(120_000).ignore();
        listed.push_str(&format!("long:{i}\n"));
    }
    pipe.exec(&mut s).unwrap();
    let filled = Instant::now();
    assert_exit(&p.copy(&["--batch", "50"]), 0);
    let list = p.csv("keys.txt");
    std::fs::write(&list, listed).unwrap();
    // The keys under 300 ms are gone by now; the rest expire during the checks below, on both sides
    // at the same deadline.
    if let Some(rest) = Duration::from_millis(300).checked_sub(filled.elapsed()) {
        thread::sleep(rest);
    }

    let diff = p.csv("diff.csv");
    let out = verify_run(&p, &["--keys-from", &path_str(&list), "--batch", "5", "--diff", &path_str(&diff)]);
    assert_exit(&out, 0);
    let v = verify_summary(&out);
    assert_eq!((v.missing, v.different, v.ttl, v.errors), (0, 0, 0, 0), "{}", v.line);
    assert_eq!(v.matched + v.vanished, 1050, "{}", v.line);
    assert!(v.vanished >= 100 && v.matched >= 50, "{}", v.line);
    assert!(!diff.exists(), "vanished keys were written to the diff CSV");

    // Scanning both sides while keys keep expiring: still no difference and no extra key.
    let out = verify_run(&p, &["--check-extra", "--batch", "5", "--diff", &path_str(&diff)]);
    assert_exit(&out, 0);
    let v = verify_summary(&out);
    assert_eq!((v.missing, v.different, v.ttl, v.extra, v.errors), (0, 0, 0, 0, 0), "{}", v.line);
    assert!(v.matched >= 50, "{}", v.line);
    assert!(!diff.exists(), "vanished keys were written to the diff CSV");
}

#[test]
fn verify_refuses_bad_diff_and_check_extra_flags() {
    let (p, d) = filled_pair(&[]);
    let out = verify_run(&p, &["--diff", "/nonexistent-dir/diff.csv"]);
    assert_refused(&p, &out, &["--diff"], None, &d);
    let list = p.csv("keys.txt");
    std::fs::write(&list, "bad:1\n").unwrap();
    let out = verify_run(&p, &["--check-extra", "--keys-from", &path_str(&list)]);
    assert_refused(&p, &out, &["--check-extra"], None, &d);
    let out = verify_run(&p, &["--keys-from", &path_str(&list), "--diff", &path_str(&list)]);
    assert_refused(&p, &out, &["--diff"], None, &d);

    let out = ferry(["verify", "--help"]);
    assert_exit(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--check-extra", "--diff", "--ttl-tolerance", "--keys-from", "--match", "--type"] {
        assert!(text.contains(flag), "verify --help does not mention {flag}\n{text}");
    }
}

// ---------------------------------------------------------------------------------------------------
// Beyond issue 2: other contract items that are cheap to check
// ---------------------------------------------------------------------------------------------------

#[test]
fn target_password_from_environment_and_db_flags() {
    let p = Pair::with_target_args(&["--requirepass", "env-pass-4242"]);
    let mut s = p.src.conn();
    run(&mut s, &[b"SELECT", b"3"]);
    let keys = fill_strings(&mut s, "db3:", 25);
    let csv = path_str(&p.csv("errors.csv"));
    let out = ferry_with(
        ["copy", &p.src.addr(), &p.dst.addr(), "--errors", &csv, "--source-db", "3", "--target-db", "5"],
        &[("REDIS_FERRY_TARGET_PASSWORD", "env-pass-4242")],
        None,
    );
    assert_exit(&out, 0);
    let sum = summary(&out);
    assert_eq!(buckets(&sum), (25, 25, 0, 0, 0), "{}", sum.line);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("env-pass-4242"), "password in the logs");
    let mut d = p.dst.conn();
    assert_eq!(dbsize(&mut d), 0, "db 0 of the target should stay empty");
    run(&mut d, &[b"SELECT", b"5"]);
    assert_same(&mut s, &mut d, &keys);
}

// ---------------------------------------------------------------------------------------------------
// 11. Ctrl-C, --errors-append, --sleep-after-batch, --progress, --help, --max-errors 0, more bad input
// ---------------------------------------------------------------------------------------------------

/// Every non-empty stdout line; for checking that stdout holds the results only.
fn stdout_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()).map(String::from).collect()
}

fn progress_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("progress") && l.contains("copied="))
        .map(String::from)
        .collect()
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

#[test]
fn errors_append_keeps_one_header_and_both_runs_rows() {
    let p = Pair::new();
    let mut s = p.src.conn();
    let target = ok_only_target(&p);
    fill_strings(&mut s, "ok:", 10);
    let secret = fill_strings(&mut s, "secret:", 4);
    let csv = p.csv("appended.csv");
    let copy = |extra: &[&str]| {
        let mut args =
            vec!["copy".to_string(), p.src.addr(), target.clone(), "--errors".into(), path_str(&csv)];
        args.extend(extra.iter().map(|a| a.to_string()));
        ferry(args)
    };
    let header_lines = |text: &str| text.lines().filter(|l| *l == "time,key,stage,error,message").count();
    let keys_of = |rows: &[ErrorRow]| {
        let mut keys: Vec<Vec<u8>> = rows.iter().map(|r| r.key.clone()).collect();
        keys.sort();
        keys
    };
    let mut want: Vec<Vec<u8>> = secret.clone();
    want.sort();

    // Run 1 creates the file, with its header.
    let out = copy(&["--errors-append"]);
    assert_exit(&out, 1);
    let first = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(header_lines(&first), 1, "{first}");
    assert_eq!(keys_of(&read_errors(&csv)), want);

    // Run 2 appends its rows after run 1's, without a second header.
    let out = copy(&["--errors-append"]);
    assert_exit(&out, 1);
    assert_eq!(summary(&out).failed, 4);
    let second = std::fs::read_to_string(&csv).unwrap();
    assert!(second.starts_with(&first), "run 1's rows were not kept:\n{second}");
    assert_eq!(header_lines(&second), 1, "one header expected:\n{second}");
    let rows = read_errors(&csv);
    assert_eq!(rows.len(), 8, "{rows:#?}");
    let mut twice: Vec<Vec<u8>> = want.iter().flat_map(|k| [k.clone(), k.clone()]).collect();
    twice.sort();
    assert_eq!(keys_of(&rows), twice);

    // A clean run with --errors-append leaves the file alone.
    let out = copy(&["--errors-append", "--match", "ok:*"]);
    assert_exit(&out, 0);
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), second, "a clean run touched the CSV");

    // Without --errors-append a failing run overwrites it.
    let out = copy(&[]);
    assert_exit(&out, 1);
    let third = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(header_lines(&third), 1, "{third}");
    assert_eq!(keys_of(&read_errors(&csv)), want, "the file was not overwritten:\n{third}");
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

#[test]
fn progress_lines_go_to_stderr_and_progress_0_prints_none() {
    let p = Pair::new();
    fill_strings(&mut p.src.conn(), "prog:", 2000);
    // About 1.9 s at 1000 keys/s: long enough for a progress line every second.
    let out = p.copy(&["--rate", "1000", "--batch", "100", "--progress", "1"]);
    assert_exit(&out, 0);
    let sum = summary(&out);
    assert_eq!(sum.copied, 2000, "{}", sum.line);
    assert!(!progress_lines(&out).is_empty(), "no progress line on stderr\n{}", dump(&out));
    assert_eq!(stdout_lines(&out), vec![sum.line.clone()], "stdout must hold the summary only");

    // Same slow copy again (replace, so every key is written again): no progress line at all.
    let out = p.copy(&["--rate", "1000", "--batch", "100", "--progress", "0", "--on-conflict", "replace"]);
    assert_exit(&out, 0);
    let sum = summary(&out);
    assert_eq!(sum.copied, 2000, "{}", sum.line);
    assert!(sum.seconds >= 1.0, "the run was too short to show a progress line: {}", sum.line);
    assert!(progress_lines(&out).is_empty(), "--progress 0 printed progress\n{}", dump(&out));
    assert_eq!(stdout_lines(&out), vec![sum.line.clone()], "stdout must hold the summary only");
}

#[test]
fn help_prints_usage_on_stdout_and_exits_0() {
    let out = ferry(["--help"]);
    assert_exit(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("Usage: redis-ferry"), "{}", dump(&out));
    assert!(text.contains("copy") && text.contains("verify"), "{}", dump(&out));
    assert!(out.stderr.is_empty(), "--help wrote to stderr\n{}", dump(&out));

    let out = ferry(["copy", "--help"]);
    assert_exit(&out, 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("Usage: redis-ferry copy"), "{}", dump(&out));
    assert!(out.stderr.is_empty(), "copy --help wrote to stderr\n{}", dump(&out));
    let flags = [
        "--match",
        "--type",
        "--scan-count",
        "--keys-from",
        "--on-conflict",
        "--mode",
        "--batch",
        "--readers",
        "--writers",
        "--rate",
        "--sleep-after-batch",
        "--errors",
        "--errors-append",
        "--max-errors",
        "--limit",
        "--dry-run",
        "--progress",
        "--source-db",
        "--target-db",
        "--lock",
        "--report",
    ];
    let missing: Vec<&str> = flags.iter().copied().filter(|f| !text.contains(f)).collect();
    assert!(missing.is_empty(), "copy --help does not mention {missing:?}\n{text}");
}

#[test]
fn clean_run_creates_no_error_csv() {
    let p = Pair::new();
    let (mut s, mut d) = (p.src.conn(), p.dst.conn());
    let keys = fill_strings(&mut s, "clean:", 50);
    // Skipped and expired keys are not failures: still no CSV.
    run(&mut d, &[b"SET", &keys[0], b"already there"]);
    // The default --errors path is relative to the working directory.
    let cwd = tempfile::tempdir().unwrap();
    let out = ferry_in(cwd.path(), ["copy", &p.src.addr(), &p.dst.url()]);
    assert_exit(&out, 0);
    let sum = summary(&out);
    assert_eq!(buckets(&sum), (50, 49, 1, 0, 0), "{}", sum.line);
    let left: Vec<String> = std::fs::read_dir(cwd.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "a clean run left files in its working directory: {left:?}");

    let out = p.copy(&["--on-conflict", "replace"]);
    assert_exit(&out, 0);
    assert!(!p.csv("errors.csv").exists(), "--errors file created although nothing failed");
}

#[test]
fn max_errors_0_never_aborts() {
    let p = Pair::new();
    let mut s = p.src.conn();
    let target = ok_only_target(&p);
    fill_strings(&mut s, "ok:", 50);
    // More failures than the default --max-errors (1000).
    fill_strings(&mut s, "secret:", 1200);
    let csv0 = p.csv("errors-0.csv");
    let out = ferry(["copy", &p.src.addr(), &target, "--errors", &path_str(&csv0), "--max-errors", "0"]);
    assert_exit(&out, 1);
    let sum = summary(&out);
    assert_eq!(buckets(&sum), (1250, 50, 0, 0, 1200), "{}", sum.line);
    assert_eq!(read_errors(&csv0).len(), 1200);

    // The same failures do abort under the default limit, so exit 1 above is --max-errors 0's doing.
    let csv1 = p.csv("errors-default.csv");
    let out = ferry(["copy", &p.src.addr(), &target, "--errors", &path_str(&csv1)]);
    assert_exit(&out, 3);
}

#[test]
fn bad_input_on_conflict_value() {
    let (p, d) = filled_pair(&[]);
    let out = p.copy(&["--on-conflict", "bogus"]);
    assert_refused(&p, &out, &["--on-conflict"], None, &d);
}

#[test]
fn bad_input_type_value() {
    let (p, d) = filled_pair(&[]);
    let out = p.copy(&["--type", "bogus"]);
    assert_refused(&p, &out, &["--type"], None, &d);
}

#[test]
fn bad_input_rate_zero() {
    let (p, d) = filled_pair(&[]);
    let out = p.copy(&["--rate", "0"]);
    assert_refused(&p, &out, &["--rate"], None, &d);
}

#[test]
fn bad_input_readers_zero() {
    let (p, d) = filled_pair(&[]);
    let out = p.copy(&["--readers", "0"]);
    assert_refused(&p, &out, &["--readers"], None, &d);
}

#[test]
fn bad_input_match_with_keys_from() {
    let (p, d) = filled_pair(&[]);
    // A readable file naming keys that exist, so only the combination can be at fault.
    let list = p.csv("keys.txt");
    std::fs::write(&list, "bad:1\nbad:2\n").unwrap();
    let out = p.copy(&["--match", "x", "--keys-from", &path_str(&list)]);
    assert_refused(&p, &out, &["--match"], None, &d);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--keys-from"), "{}", dump(&out));
}

// ---------------------------------------------------------------------------------------------------
// 12. cron: --lock and --report
// ---------------------------------------------------------------------------------------------------

/// The `--report` file parsed as JSON.
#[track_caller]
fn read_report(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON ({e}):\n{text}", path.display()))
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, the shape `report::rfc3339` writes.
fn is_utc_timestamp(v: &serde_json::Value) -> bool {
    let Some(t) = v.as_str() else { return false };
    let b = t.as_bytes();
    b.len() == 24
        && t.ends_with('Z')
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => true,
            _ => c.is_ascii_digit(),
        })
}

/// Checks a report against the run's summary line and exit code: same buckets, same seconds and
/// rate (as rounded on the line), RFC 3339 start <= end, and no temp file left next to it.
#[track_caller]
fn assert_report_matches(path: &Path, out: &Output, exit: i32) -> serde_json::Value {
    let r = read_report(path);
    let sum = summary(out);
    let n = |name: &str| r[name].as_u64().unwrap_or_else(|| panic!("{name} is not a count in {r:#}"));
    assert_eq!(
        (n("scanned"), n("copied"), n("skipped"), n("expired"), n("failed")),
        buckets(&sum),
        "report vs summary {}\n{r:#}",
        sum.line
    );
    assert_eq!(r["exit_code"], exit, "{r:#}");
    let secs = r["seconds"].as_f64().expect("seconds");
    assert!((secs - sum.seconds).abs() < 0.002, "seconds {secs} vs {}", sum.line);
    let rate = r["keys_per_sec"].as_f64().expect("keys_per_sec");
    assert!((rate - sum.keys_per_sec).abs() <= 1.0, "keys_per_sec {rate} vs {}", sum.line);
    assert!(is_utc_timestamp(&r["start"]) && is_utc_timestamp(&r["end"]), "{r:#}");
    assert!(r["start"].as_str() <= r["end"].as_str(), "{r:#}");
    assert_eq!(r["command"], "copy");
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    assert!(!tmp.exists(), "{} left behind", tmp.display());
    r
}

/// Waits until the `--lock` file holds `pid`: that run has taken the lock.
fn wait_for_lock_holder(run: &mut FerryProcess, lock: &Path) {
    let want = format!("{}\n", run.pid());
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(lock).ok().as_deref() != Some(want.as_str()) {
        assert!(run.running(), "redis-ferry exited before it took the lock");
        assert!(Instant::now() < deadline, "redis-ferry did not take the lock within 20 s");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn lock_turns_a_second_run_away_with_exit_4_naming_the_holder() {
    const N: usize = 5000;
    let p = Pair::new();
    fill_strings(&mut p.src.conn(), "cron:", N);
    // The second run writes to its own target, so "it wrote nothing" is a DBSIZE of 0.
    let other = RedisServer::new();
    let lock = p.csv("sync.lock");
    let lock_arg = path_str(&lock);
    // About 5 s at 1000 keys/s: the lock is held for that long.
    let mut first = spawn_ferry([
        "copy",
        &p.src.addr(),
        &p.dst.url(),
        "--errors",
        &path_str(&p.csv("errors-1.csv")),
        "--lock",
        &lock_arg,
        "--rate",
        "1000",
        "--batch",
        "100",
    ]);
    wait_for_lock_holder(&mut first, &lock);

    let (csv2, report2) = (p.csv("errors-2.csv"), p.csv("report-2.json"));
    let started = Instant::now();
    let out = ferry([
        "copy",
        &p.src.addr(),
        &other.url(),
        "--errors",
        &path_str(&csv2),
        "--report",
        &path_str(&report2),
        "--lock",
        &lock_arg,
    ]);
    let took = started.elapsed();
    assert_exit(&out, 4);
    assert!(took < Duration::from_secs(5), "a locked-out run took {took:?} to give up");
    assert!(first.running(), "the first run ended before the second was turned away: test proves nothing");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr\n{}", dump(&out));
    assert!(lines[0].contains(&format!("pid {}", first.pid())), "holder not named\n{}", dump(&out));
    assert!(lines[0].contains(&lock_arg), "lock file not named\n{}", dump(&out));
    assert!(out.stdout.is_empty(), "a locked-out run printed a summary\n{}", dump(&out));
    assert_eq!(dbsize(&mut other.conn()), 0, "a locked-out run wrote to its target");
    assert!(!csv2.exists() && !report2.exists(), "a locked-out run wrote files");
    assert_eq!(
        std::fs::read_to_string(&lock).unwrap(),
        format!("{}\n", first.pid()),
        "holder's pid clobbered"
    );

    let first_out = first.wait();
    assert_exit(&first_out, 0);
    assert_eq!(summary(&first_out).copied, N as u64);
    assert!(lock.exists(), "the lock file was deleted");

    // The lock is free again (the file still names the old pid): the next run goes ahead.
    let out = ferry(["copy", &p.src.addr(), &other.url(), "--errors", &path_str(&csv2), "--lock", &lock_arg]);
    assert_exit(&out, 0);
    assert_eq!(buckets(&summary(&out)), (N as u64, N as u64, 0, 0, 0));
    assert_eq!(dbsize(&mut other.conn()), N as i64);
}

#[test]
fn report_after_a_clean_run_has_every_counter_and_no_credentials() {
    const SOURCE_PW: &str = "src-report-pass-4412";
    const TARGET_PW: &str = "dst-report-pass-9087";
    const TARGET_USER: &str = "reportuser";
    let p = Pair {
        src: RedisServer::with_args(&["--requirepass", SOURCE_PW]),
        dst: RedisServer::new(),
        dir: tempfile::tempdir().unwrap(),
    };
    let pw = format!(">{TARGET_PW}");
    run(
        &mut p.dst.conn(),
        &[b"ACL", b"SETUSER", TARGET_USER.as_bytes(), b"on", pw.as_bytes(), b"~*", b"+@all"],
    );
    let mut s = p.src.conn();
    fill_strings(&mut s, "rep:", 300);
    fill_strings(&mut s, "other:", 20);
    run(&mut p.dst.conn(), &[b"SET", b"rep:0", b"already there"]);
    let target = format!("redis://{TARGET_USER}:{TARGET_PW}@127.0.0.1:{}/0", p.dst.port());
    let report = p.csv("report.json");
    let out = ferry_with(
        [
            "copy",
            &p.src.addr(),
            &target,
            "--errors",
            &path_str(&p.csv("errors.csv")),
            "--report",
            &path_str(&report),
            "--match",
            "rep:*",
            "--batch",
            "50",
        ],
        &[("REDIS_FERRY_SOURCE_PASSWORD", SOURCE_PW)],
        None,
    );
    assert_exit(&out, 0);
    assert_eq!(buckets(&summary(&out)), (300, 299, 1, 0, 0));
    let r = assert_report_matches(&report, &out, 0);
    assert!(r["error"].is_null() && r["stopped"].is_null(), "{r:#}");
    assert_eq!(r["pid"].as_u64().map(|p| p > 0), Some(true), "{r:#}");
    let o = &r["options"];
    assert_eq!(o["source"], format!("127.0.0.1:{}/0", p.src.port()));
    assert_eq!(o["target"], format!("127.0.0.1:{}/0", p.dst.port()));
    assert_eq!(o["match"], serde_json::json!(["rep:*"]));
    assert_eq!((o["batch"].as_u64(), o["on_conflict"].as_str()), (Some(50), Some("skip")));
    assert_eq!(o["report"], path_str(&report));
    assert!(o["lock"].is_null() && o["rate"].is_null() && o["limit"].is_null(), "{o:#}");
    let text = std::fs::read_to_string(&report).unwrap();
    for secret in [SOURCE_PW, TARGET_PW, TARGET_USER] {
        assert!(!text.contains(secret), "{secret} in the report:\n{text}");
    }
}

#[test]
fn report_after_failing_and_aborted_runs() {
    let p = Pair::new();
    let target = ok_only_target(&p);
    let mut s = p.src.conn();
    fill_strings(&mut s, "ok:", 30);
    fill_strings(&mut s, "secret:", 5);
    let report = p.csv("report.json");
    let copy = |extra: &[&str]| {
        let mut args = vec![
            "copy".to_string(),
            p.src.addr(),
            target.clone(),
            "--errors".into(),
            path_str(&p.csv("errors.csv")),
            "--report".into(),
            path_str(&report),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        ferry(args)
    };

    let out = copy(&[]);
    assert_exit(&out, 1);
    let r = assert_report_matches(&report, &out, 1);
    assert_eq!(r["failed"], 5, "{r:#}");
    assert!(r["error"].is_null() && r["stopped"].is_null(), "{r:#}");
    let text = std::fs::read_to_string(&report).unwrap();
    assert!(!text.contains("ferry-acl-pass-7731") && !text.contains("ferry:"), "credentials:\n{text}");

    // --max-errors 2 aborts (exit 3); the report is replaced by this run's.
    let out = copy(&["--max-errors", "2", "--on-conflict", "replace"]);
    assert_exit(&out, 3);
    let r = read_report(&report);
    assert_eq!((r["exit_code"].as_u64(), r["stopped"].as_str()), (Some(3), Some("aborted")), "{r:#}");
    assert!(r["failed"].as_u64().unwrap() >= 2, "{r:#}");
    assert_eq!(r["options"]["max_errors"], 2);
    if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.starts_with("scanned=")) {
        assert_report_matches(&report, &out, 3);
    }
}

#[test]
fn report_after_ctrl_c_says_130_and_matches_the_summary() {
    let p = Pair::new();
    let mut d = p.dst.conn();
    fill_strings(&mut p.src.conn(), "int:", 5000);
    let report = p.csv("report.json");
    let mut run = spawn_ferry([
        "copy",
        &p.src.addr(),
        &p.dst.url(),
        "--errors",
        &path_str(&p.csv("errors.csv")),
        "--report",
        &path_str(&report),
        "--lock",
        &path_str(&p.csv("run.lock")),
        "--rate",
        "1000",
        "--batch",
        "100",
    ]);
    interrupt_mid_copy(&mut run, &mut d, Duration::from_millis(500));
    let out = run.wait();
    assert_exit(&out, 130);
    let r = assert_report_matches(&report, &out, 130);
    assert_eq!(r["stopped"], "interrupted", "{r:#}");
    assert!(r["copied"].as_u64().unwrap() < 5000, "{r:#}");
    assert_eq!(r["copied"].as_u64(), Some(dbsize(&mut d) as u64), "{r:#}");
}

#[test]
fn report_is_written_when_preflight_fails_after_the_lock() {
    let (p, _) = filled_pair(&[]);
    let nowhere = format!("127.0.0.1:{}", free_port());
    let report = p.csv("report.json");
    let out = ferry([
        "copy",
        &p.src.addr(),
        &nowhere,
        "--errors",
        &path_str(&p.csv("errors.csv")),
        "--report",
        &path_str(&report),
        "--lock",
        &path_str(&p.csv("run.lock")),
    ]);
    assert_exit(&out, 2);
    let r = read_report(&report);
    assert_eq!((r["exit_code"].as_u64(), r["scanned"].as_u64()), (Some(2), Some(0)), "{r:#}");
    assert!(r["error"].as_str().is_some_and(|e| e.contains(&nowhere)), "{r:#}");
    assert!(r["stopped"].is_null(), "{r:#}");
}

#[test]
fn bad_input_unwritable_report_path() {
    let (p, d) = filled_pair(&[]);
    let lock = p.csv("run.lock");
    let out = p.copy(&["--report", "/nonexistent-dir/report.json", "--lock", &path_str(&lock)]);
    assert_refused(&p, &out, &["--report"], None, &d);
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent-dir/report.json"), "{}", dump(&out));
    // The report path is checked before the lock is taken: no lock file either.
    assert!(!lock.exists(), "the lock file was created for a refused run");
}

#[test]
fn bad_input_report_and_errors_name_the_same_file() {
    let (p, d) = filled_pair(&[]);
    // Pair::copy passes --errors <dir>/errors.csv.
    let out = p.copy(&["--report", &path_str(&p.csv("errors.csv"))]);
    assert_refused(&p, &out, &["--report"], None, &d);
}
