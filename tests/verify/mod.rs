//! `verify`: it passes after a copy and fails with exit 1 after a change, counting the missing and the
//! different keys, without writing the source; big keys are compared page by page on both sides,
//! never read whole, and one changed element (or a changed size) is found; `--check-extra` lists the
//! keys only on the target, scanned with the same `--match` / `--type`; the `--diff` CSV names each
//! key with its kind of difference and, fed to `copy --keys-from`, repairs exactly those keys; keys
//! expiring during the check are counted vanished, not different; bad `--diff` / `--check-extra`
//! combinations are refused, and `verify --help` lists its flags.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

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
