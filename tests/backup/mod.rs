//! Copying from an RDB file, and from an RDB stream on standard input (`copy FILE TARGET`, `copy -
//! TARGET`), and `verify FILE TARGET`. Promises checked here:
//! - a file the local redis-server wrote (SAVE) with every type in every encoding it writes, binary keys,
//!   deadlines, an expired key and several databases arrives key by key equal to the server that wrote
//!   it: by RESTORE of the file's bytes, from the file and from a pipe, and decoded (`--mode typed`);
//!   values above `--big-key-bytes` are built page by page; the buckets add up, the expired key counted;
//! - `--all-dbs` copies each database into its own; `--source-db` picks one; `--match`, `--type`,
//!   `--keys-from`, `--limit`, `--dry-run` and the skip policy hold as for a server;
//! - the published dump files of other Redis versions (2.x to 8.6, redis-stack) land on the target as
//!   their expected JSON says, keys the target cannot take listed in the CSV;
//! - a corrupt or truncated file is exit 2 naming the byte offset, with nothing written; a stream cut
//!   short is reported with its offset, its keys so far counted, and exit 3;
//! - `verify FILE TARGET` says 0 for a target that holds the file, 1 with a `--diff` row per difference.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::support::*;

/// Where the published dump files are (see tests/fixtures/rdb/README.md).
fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rdb")
}

/// A source holding every type in every encoding Redis 7.0 writes, plus encodings `fill_every_type`
/// leaves out (an intset past 512 members, a list with a plain node, a long hash value), a key in db 3,
/// and `soon`, saved with a deadline that has passed by the time this returns. Returns the pair, the
/// saved file and the keys of db 0 (without `soon`).
fn saved() -> (Pair, PathBuf, Vec<Vec<u8>>) {
    let p = Pair::new();
    let mut s = p.src.conn();
    let mut keys = fill_every_type(&mut s, false);
    let mut pipe = redis::pipe();
    for i in 0..600 {
        pipe.cmd("SADD").arg("set:ints").arg(i * 7).ignore();
    }
    let _: () = pipe.query(&mut s).unwrap();
    run(&mut s, &[b"RPUSH", b"list:plain", b"a", &noise(20_000, 7), b"b"]);
    run(&mut s, &[b"HSET", b"hash:long", b"f", &noise(5000, 8)]);
    run(&mut s, &[b"SET", b"str:long", &noise(100_000, 9)]);
    // A listpack entry of exactly 16383 bytes, whose back length takes 3 bytes.
    run(&mut s, &[b"RPUSH", b"list:edge", &[b'a'; 16378], b"b"]);
    keys.extend([
        b"set:ints".to_vec(),
        b"list:plain".to_vec(),
        b"hash:long".to_vec(),
        b"str:long".to_vec(),
        b"list:edge".to_vec(),
    ]);
    run(&mut s, &[b"SELECT", b"3"]);
    run(&mut s, &[b"SET", b"in:three", b"3"]);
    run(&mut s, &[b"SELECT", b"0"]);
    run(&mut s, &[b"SET", b"soon", b"gone", b"PX", b"400"]);
    let file = p.src.save();
    std::thread::sleep(std::time::Duration::from_millis(600));
    (p, file, keys)
}

fn copy_file(p: &Pair, file: &str, extra: &[&str]) -> std::process::Output {
    ferry(copy_args(file, &p.dst.url(), &p.csv("errors.csv"), extra))
}

#[test]
fn a_saved_file_arrives_key_by_key_by_restore_from_the_file_and_from_a_pipe() {
    let (p, file, keys) = saved();
    let out = copy_file(&p, &path_str(&file), &[]);
    assert_exit(&out, 0);
    let s = summary(&out);
    // db 0's keys and `soon`, whose deadline in the file has passed: the target made nothing of it.
    assert_eq!(
        (s.scanned, s.copied, s.expired, s.failed),
        (keys.len() as u64 + 1, keys.len() as u64, 1, 0),
        "{}",
        dump(&out)
    );
    let err = stderr(&out);
    assert!(err.contains("RDB version 10, written by Redis 7.0"), "{err}");
    assert!(err.contains("CRC-64 matches"), "{err}");
    assert!(err.contains("RESTORE of the file's own bytes"), "{err}");
    assert!(err.contains("1 in db 3"), "the other database is named in the log: {err}");
    assert_same(&mut p.src.conn(), &mut p.dst.conn(), &keys);
    assert_eq!(dbsize(&mut p.dst.conn()), keys.len() as i64, "nothing but db 0's keys");

    // The same bytes on standard input.
    run(&mut p.dst.conn(), &[b"FLUSHALL"]);
    let bytes = std::fs::read(&file).unwrap();
    let out = ferry_with(copy_args("-", &p.dst.url(), &p.csv("errors.csv"), &[]), &[], Some(&bytes));
    assert_exit(&out, 0);
    assert_eq!(summary(&out).copied, keys.len() as u64);
    assert_same(&mut p.src.conn(), &mut p.dst.conn(), &keys);

    // And again: every key is there already (skip policy), or overwritten (replace).
    let out = copy_file(&p, &path_str(&file), &[]);
    assert_eq!(summary(&out).skipped, keys.len() as u64, "{}", dump(&out));
    let out = copy_file(&p, &path_str(&file), &["--on-conflict", "replace"]);
    assert_eq!(summary(&out).copied, keys.len() as u64, "{}", dump(&out));
    assert_same(&mut p.src.conn(), &mut p.dst.conn(), &keys);
}

#[test]
fn a_saved_file_arrives_key_by_key_decoded_and_page_by_page() {
    let (p, file, keys) = saved();
    let out = copy_file(&p, &path_str(&file), &["--mode", "typed"]);
    if out.status.code() != Some(0) {
        eprintln!("{}", std::fs::read_to_string(p.csv("errors.csv")).unwrap_or_default());
    }
    assert_exit(&out, 0);
    let s = summary(&out);
    assert_eq!((s.copied, s.expired, s.failed), (keys.len() as u64, 1, 0), "{}", dump(&out));
    assert!(stderr(&out).contains("decoded and written type-aware"), "{}", dump(&out));
    assert_same(&mut p.src.conn(), &mut p.dst.conn(), &keys);
    assert_eq!(dbsize(&mut p.dst.conn()), keys.len() as i64, "no temporary key is left");

    // Values above 2 KB go page by page, the rest by RESTORE; then every value decoded, big ones in pages.
    for mode in ["auto", "typed"] {
        run(&mut p.dst.conn(), &[b"FLUSHALL"]);
        let execs = command_calls(&mut p.dst.conn(), "exec");
        let out = copy_file(&p, &path_str(&file), &["--mode", mode, "--big-key-bytes", "2000"]);
        assert_exit(&out, 0);
        assert_eq!(summary(&out).copied, keys.len() as u64, "{}", dump(&out));
        let err = stderr(&out);
        let paged: u64 = err
            .lines()
            .find_map(|l| l.split_once(" values above --big-key-bytes were written page by page"))
            .and_then(|(before, _)| before.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0);
        // The big list, set, sorted set and hash, the long string, the plain-node list, the long hash.
        assert!(paged >= 5, "{paged} values paged: {err}");
        // Each page is a transaction of its own, and the rename one more.
        assert!(command_calls(&mut p.dst.conn(), "exec") - execs >= 2 * paged, "{}", dump(&out));
        assert_same(&mut p.src.conn(), &mut p.dst.conn(), &keys);
        assert_eq!(dbsize(&mut p.dst.conn()), keys.len() as i64, "no temporary key is left ({mode})");
    }
}

#[test]
fn databases_filters_limit_and_dry_run() {
    let (p, file, keys) = saved();
    let f = path_str(&file);
    let out = copy_file(&p, &f, &["--all-dbs"]);
    assert_exit(&out, 0);
    assert_eq!(summary(&out).copied, keys.len() as u64 + 1, "{}", dump(&out));
    let mut three = p.dst.conn();
    run(&mut three, &[b"SELECT", b"3"]);
    assert_eq!(q::<String>(&mut three, &[b"GET", b"in:three"]), "3");
    assert_eq!(dbsize(&mut three), 1);
    assert_same(&mut p.src.conn(), &mut p.dst.conn(), &keys);

    run(&mut p.dst.conn(), &[b"FLUSHALL"]);
    let out = copy_file(&p, &f, &["--source-db", "3"]);
    assert_eq!(summary(&out).copied, 1, "{}", dump(&out));
    assert_eq!(
        q::<String>(&mut p.dst.conn(), &[b"GET", b"in:three"]),
        "3",
        "db 3 of the file goes to the URL's db"
    );

    run(&mut p.dst.conn(), &[b"FLUSHALL"]);
    let out = copy_file(&p, &f, &["--match", "hash:*", "--match", "set:*"]);
    let want: Vec<Vec<u8>> =
        keys.iter().filter(|k| k.starts_with(b"hash:") || k.starts_with(b"set:")).cloned().collect();
    assert_eq!(summary(&out).copied, want.len() as u64, "{}", dump(&out));
    assert_eq!(all_keys(&mut p.dst.conn()), set_of(&want));

    run(&mut p.dst.conn(), &[b"FLUSHALL"]);
    let out = copy_file(&p, &f, &["--type", "stream"]);
    assert_eq!(summary(&out).copied, 3, "{}", dump(&out));

    run(&mut p.dst.conn(), &[b"FLUSHALL"]);
    let list = p.csv("keys.txt");
    std::fs::write(&list, "list:small\nzset:big\nno-such-key\n").unwrap();
    let out = copy_file(&p, &f, &["--keys-from", &path_str(&list)]);
    assert_eq!(summary(&out).copied, 2, "{}", dump(&out));

    run(&mut p.dst.conn(), &[b"FLUSHALL"]);
    let out = copy_file(&p, &f, &["--limit", "5"]);
    assert_eq!(summary(&out).copied, 5, "{}", dump(&out));
    assert_eq!(dbsize(&mut p.dst.conn()), 5);

    let before = digest(&mut p.dst.conn());
    let out = copy_file(&p, &f, &["--dry-run"]);
    assert_exit(&out, 0);
    let s = summary(&out);
    assert_eq!(
        (s.copied, s.skipped),
        (keys.len() as u64 - 5, 5),
        "the 5 keys there would be skipped: {}",
        dump(&out)
    );
    assert_eq!(digest(&mut p.dst.conn()), before, "a dry run writes nothing");
}

#[test]
fn verify_a_file_against_the_target() {
    let (p, file, keys) = saved();
    let f = path_str(&file);
    assert_exit(&copy_file(&p, &f, &[]), 0);
    let out = ferry(["verify", &f, &p.dst.url()]);
    assert_exit(&out, 0);
    let v = verify_summary(&out);
    assert_eq!(
        (v.matched, v.missing, v.different, v.vanished),
        (keys.len() as u64, 0, 0, 1),
        "{}",
        dump(&out)
    );

    let mut d = p.dst.conn();
    run(&mut d, &[b"DEL", b"str:plain"]);
    run(&mut d, &[b"RPUSH", b"list:big", b"one more"]);
    run(&mut d, &[b"HSET", b"hash:big", b"field-7", b"changed"]);
    run(&mut d, &[b"SADD", b"set:big", b"extra"]);
    run(&mut d, &[b"ZADD", b"zset:small", b"99", b"a"]);
    run(&mut d, &[b"PERSIST", b"list:ttl"]);
    run(&mut d, &[b"XADD", b"stream:groups", b"*", b"x", b"y"]);
    let diff = p.csv("diff.csv");
    let out = ferry(["verify", &f, &p.dst.url(), "--diff", &path_str(&diff)]);
    assert_exit(&out, 1);
    let v = verify_summary(&out);
    assert_eq!((v.missing, v.different, v.ttl), (1, 5, 1), "{}", dump(&out));
    let rows: BTreeMap<String, String> = read_diff(&diff)
        .into_iter()
        .map(|r| (String::from_utf8_lossy(&r.key).into_owned(), r.difference))
        .collect();
    assert_eq!(rows.get("str:plain").map(String::as_str), Some("missing"));
    assert_eq!(rows.get("list:ttl").map(String::as_str), Some("ttl"));
    for k in ["list:big", "hash:big", "set:big", "zset:small", "stream:groups"] {
        assert_eq!(rows.get(k).map(String::as_str), Some("value"), "{k}: {rows:?}");
    }
}

/// Bytes as the fixtures' JSON writes them: UTF-8 where they are, else one character per byte.
fn text(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => b.iter().map(|&c| char::from(c)).collect(),
    }
}

/// A key of the target as the fixtures' JSON writes it.
fn as_json(con: &mut redis::Connection, key: &[u8]) -> serde_json::Value {
    use serde_json::Value as J;
    let ty: String = q(con, &[b"TYPE", key]);
    let map = |pairs: Vec<Vec<u8>>| {
        J::Object(pairs.chunks(2).map(|p| (text(&p[0]), J::String(text(&p[1])))).collect())
    };
    match ty.as_str() {
        "string" => J::String(text(&q::<Vec<u8>>(con, &[b"GET", key]))),
        "list" => J::Array(
            q::<Vec<Vec<u8>>>(con, &[b"LRANGE", key, b"0", b"-1"])
                .iter()
                .map(|e| J::String(text(e)))
                .collect(),
        ),
        "set" => {
            let mut m: Vec<String> =
                q::<Vec<Vec<u8>>>(con, &[b"SMEMBERS", key]).iter().map(|e| text(e)).collect();
            m.sort();
            J::Array(m.into_iter().map(J::String).collect())
        }
        "hash" => map(q(con, &[b"HGETALL", key])),
        "zset" => map(q(con, &[b"ZRANGE", key, b"0", b"-1", b"WITHSCORES"])),
        other => J::String(format!("<{other}>")),
    }
}

/// The JSON value normalised as [`as_json`] gives it: sets sorted, scores as numbers.
fn normal(kind: &str, v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match (kind, v) {
        ("set", J::Array(a)) => {
            let mut m: Vec<String> = a.iter().map(|e| e.as_str().unwrap_or_default().to_string()).collect();
            m.sort();
            J::Array(m.into_iter().map(J::String).collect())
        }
        _ => v.clone(),
    }
}

#[test]
fn dump_files_of_other_redis_versions_land_as_their_json_says() {
    let mut checked = 0;
    let mut versions = std::collections::BTreeSet::new();
    let files: Vec<PathBuf> = {
        let mut f: Vec<PathBuf> = std::fs::read_dir(fixtures())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "rdb"))
            .collect();
        f.sort();
        f
    };
    assert!(files.len() >= 30, "the fixtures are there: {files:?}");
    let p = Pair::new();
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        versions.insert(String::from_utf8_lossy(&bytes[5..9]).into_owned());
        let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
        let expected: serde_json::Value = serde_json::from_slice(
            &std::fs::read(fixtures().join("json").join(format!("{stem}.json"))).unwrap(),
        )
        .unwrap();
        run(&mut p.dst.conn(), &[b"FLUSHALL"]);
        let errors = p.csv(&format!("{stem}.csv"));
        let out = ferry(copy_args(
            &path_str(&file),
            &p.dst.url(),
            &errors,
            &["--all-dbs", "--on-conflict", "replace"],
        ));
        let s = summary(&out);
        let failed: Vec<Vec<u8>> = read_errors_if(&errors).into_iter().map(|r| r.key).collect();
        assert_eq!(s.failed as usize, failed.len(), "{stem}: {}", dump(&out));
        for row in read_errors_if(&errors) {
            assert_eq!(row.error, "UNSUPPORTED", "{stem}: only what the target cannot hold fails: {row:?}");
        }
        let mut missing = 0;
        for keys in expected.as_array().unwrap() {
            for (key, want) in keys.as_object().unwrap() {
                // The JSON writes a binary key one character per byte: try its UTF-8 bytes, then those.
                let mut con = p.dst.conn();
                let forms =
                    [key.as_bytes().to_vec(), key.chars().map(|c| c as u32 as u8).collect::<Vec<u8>>()];
                // The key may be in another database of the target (--all-dbs).
                let found = (0..16).find_map(|db: u32| {
                    run(&mut con, &[b"SELECT", db.to_string().as_bytes()]);
                    forms.iter().find(|raw| q::<i64>(&mut con, &[b"EXISTS", raw]) == 1).cloned()
                });
                let Some(raw) = found else {
                    if !forms.iter().any(|f| failed.contains(f)) {
                        missing += 1;
                    }
                    continue;
                };
                let ty: String = q(&mut con, &[b"TYPE", &raw]);
                let got = as_json(&mut con, &raw);
                let same = if ty == "zset" {
                    let (g, w) = (got.as_object().unwrap(), want.as_object().unwrap());
                    g.len() == w.len()
                        && w.iter().all(|(m, sc)| {
                            let want: f64 = sc.as_str().unwrap().parse().unwrap();
                            let got: f64 = g[m].as_str().unwrap().parse().unwrap();
                            (got - want).abs() <= want.abs() * 1e-12
                        })
                } else {
                    got == normal(&ty, want)
                };
                assert!(same, "{stem}: key {key} ({ty}): target {got}, file {want}");
                checked += 1;
            }
        }
        // Every key of the JSON not on the target failed with a row, or expired.
        assert_eq!(missing as u64, s.expired, "{stem}: {}", dump(&out));
        // verify agrees: only the failed keys are missing.
        let out = ferry(["verify", &path_str(&file), &p.dst.url()]);
        let v = verify_summary(&out);
        assert_eq!((v.missing, v.different), (s.failed, 0), "{stem}: {}", dump(&out));
    }
    assert!(checked > 60, "only {checked} keys compared");
    for v in ["0002", "0003", "0006", "0007", "0011", "0012", "0013"] {
        assert!(versions.contains(v), "RDB version {v} among the fixtures: {versions:?}");
    }
}

/// The rows of an error CSV, or none when it was not written.
fn read_errors_if(path: &Path) -> Vec<ErrorRow> {
    if path.exists() {
        read_errors(path)
    } else {
        Vec::new()
    }
}

#[test]
fn a_corrupt_or_truncated_file_is_refused_naming_the_offset_and_nothing_is_written() {
    let p = Pair::new();
    let mut s = p.src.conn();
    run(&mut s, &[b"SET", b"s", b"v"]);
    run(&mut s, &[b"RPUSH", b"l", b"a", b"b"]);
    run(&mut s, &[b"SADD", b"i", b"1", b"2"]);
    run(&mut s, &[b"SADD", b"m", b"x", b"y"]);
    run(&mut s, &[b"ZADD", b"z", b"1.5", b"a"]);
    run(&mut s, &[b"HSET", b"h", b"f", b"v"]);
    fill_stream(&mut s, b"x", 3);
    let good = std::fs::read(p.src.save()).unwrap();
    let bad = p.csv("bad.rdb");
    let mut cases: Vec<Vec<u8>> = (0..good.len()).step_by(5).map(|n| good[..n].to_vec()).collect();
    for at in (0..good.len()).step_by(7) {
        let mut changed = good.clone();
        changed[at] ^= 0x5a;
        cases.push(changed);
    }
    let before = digest(&mut p.dst.conn());
    for case in &cases {
        std::fs::write(&bad, case).unwrap();
        let out = copy_file(&p, &path_str(&bad), &[]);
        assert_exit(&out, 2);
        let err = stderr(&out);
        let line: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(line.len(), 1, "one error line: {err}");
        assert!(line[0].contains("byte ") && line[0].contains("nothing was written"), "{}", line[0]);
        assert_eq!(digest(&mut p.dst.conn()), before, "nothing written for {}", line[0]);
    }

    // A stream cut short: written as it is read, then the cut is reported and the run did not complete.
    let cut = &good[..good.len() - 30];
    let out = ferry_with(copy_args("-", &p.dst.url(), &p.csv("errors.csv"), &[]), &[], Some(cut));
    assert_exit(&out, 3);
    assert!(stderr(&out).contains("truncated at byte"), "{}", dump(&out));
    let s = summary(&out);
    assert!(s.copied >= 1 && s.copied < 7, "the keys before the cut are counted: {}", dump(&out));
}

#[test]
fn bad_sources_are_refused_with_one_line() {
    let p = Pair::new();
    let text = p.csv("notes.rdb");
    std::fs::write(&text, "this is not a dump\n").unwrap();
    let dir = p.dir.path().to_string_lossy().into_owned() + "/";
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![path_str(&p.csv("absent.rdb"))], "cannot open"),
        (vec![path_str(&text)], "not an RDB file"),
        (vec![dir], "directory"),
        (vec!["cache:6379/2".into()], "ambiguous"),
        (vec![path_str(&text), "--follow".into()], "--follow"),
        (vec!["-".into(), "--all-dbs".into()], "--all-dbs"),
        (vec![path_str(&text), "--checkpoint".into(), path_str(&p.csv("c.json"))], "--checkpoint"),
        (vec![path_str(&text), "--source-db".into(), "1".into(), "--all-dbs".into()], "--all-dbs"),
        (vec![path_str(&text), "--read-from".into(), "replica".into()], "a file has no replica"),
    ];
    let before = digest(&mut p.dst.conn());
    for (args, needle) in cases {
        let mut all = vec!["copy".to_string(), args[0].clone(), p.dst.url(), "--progress".into(), "0".into()];
        all.extend(args[1..].iter().cloned());
        let out = ferry(&all);
        assert_refused_naming(&out, &[needle]);
        assert_eq!(digest(&mut p.dst.conn()), before);
    }
}

#[test]
fn idle_time_frequency_rate_and_report_go_along() {
    // LFU: the file records each key's frequency, and RESTORE ... FREQ puts it back.
    let p = Pair::with_target_args(&["--maxmemory-policy", "allkeys-lfu"]);
    let mut s = p.src.conn();
    run(&mut s, &[b"CONFIG", b"SET", b"maxmemory-policy", b"allkeys-lfu"]);
    run(&mut s, &[b"SET", b"hot", b"v"]);
    run(&mut s, &[b"SET", b"cold", b"v"]);
    for _ in 0..2000 {
        let _: Option<String> = q(&mut s, &[b"GET", b"hot"]);
    }
    let freq = |con: &mut redis::Connection, k: &[u8]| q::<i64>(con, &[b"OBJECT", b"FREQ", k]);
    let (hot, cold) = (freq(&mut s, b"hot"), freq(&mut s, b"cold"));
    assert!(hot > cold + 5, "the source's counters differ: {hot} {cold}");
    let file = p.src.save();
    let report = p.csv("report.json");
    let out = copy_file(&p, &path_str(&file), &["--report", &path_str(&report)]);
    assert_exit(&out, 0);
    let mut d = p.dst.conn();
    assert_eq!((freq(&mut d, b"hot"), freq(&mut d, b"cold")), (hot, cold), "{}", dump(&out));
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(json["options"]["source"], serde_json::Value::String(path_str(&file)), "{json}");
    assert_eq!(json["copied"], 2, "{json}");

    // LRU: the idle time goes along as IDLETIME.
    let p = Pair::with_target_args(&["--maxmemory-policy", "allkeys-lru"]);
    let mut s = p.src.conn();
    run(&mut s, &[b"CONFIG", b"SET", b"maxmemory-policy", b"allkeys-lru"]);
    run(&mut s, &[b"SET", b"old", b"v"]);
    std::thread::sleep(std::time::Duration::from_millis(3100));
    run(&mut s, &[b"SET", b"new", b"v"]);
    let file = p.src.save();
    assert_exit(&copy_file(&p, &path_str(&file), &[]), 0);
    let idle = |con: &mut redis::Connection, k: &[u8]| q::<i64>(con, &[b"OBJECT", b"IDLETIME", k]);
    let mut d = p.dst.conn();
    assert!(
        idle(&mut d, b"old") >= 3 && idle(&mut d, b"new") <= 1,
        "{} {}",
        idle(&mut d, b"old"),
        idle(&mut d, b"new")
    );

    // --rate meters the file's keys as it does a server's: 40 keys at 10 per second take 3 s at least.
    let mut s = p.src.conn();
    fill_strings(&mut s, "r:", 38);
    let file = p.src.save();
    run(&mut p.dst.conn(), &[b"FLUSHALL"]);
    let started = std::time::Instant::now();
    let out = copy_file(&p, &path_str(&file), &["--rate", "10"]);
    assert_exit(&out, 0);
    assert_eq!(summary(&out).copied, 40);
    assert!(started.elapsed() >= std::time::Duration::from_millis(2900), "{:?}", started.elapsed());
}

#[test]
fn a_limit_or_a_cut_inside_a_big_value_leaves_every_bucket_right() {
    let p = Pair::new();
    let mut s = p.src.conn();
    fill_strings(&mut s, "a:", 8);
    let mut pipe = redis::pipe();
    for i in 0..20_000 {
        pipe.cmd("RPUSH").arg("big").arg(format!("element-{i}-{}", "x".repeat(40))).ignore();
    }
    let _: () = pipe.query(&mut s).unwrap();
    let file = p.src.save();
    let f = path_str(&file);
    // --limit reached at the big value: it is not counted, and nothing is left half-built.
    for extra in [&["--limit", "4", "--batch", "1"][..], &["--limit", "9"][..]] {
        run(&mut p.dst.conn(), &[b"FLUSHALL"]);
        let mut args = vec!["--big-key-bytes", "100000"];
        args.extend_from_slice(extra);
        let out = copy_file(&p, &f, &args);
        assert_exit(&out, 0);
        let s = summary(&out);
        assert_eq!(s.copied, extra[1].parse::<u64>().unwrap(), "{}", dump(&out));
        assert_eq!(dbsize(&mut p.dst.conn()), s.copied as i64, "no temporary key: {}", dump(&out));
    }
    // A stream cut inside the big value: the key fails with a row, its temporary key is gone.
    run(&mut p.dst.conn(), &[b"FLUSHALL"]);
    let bytes = std::fs::read(&file).unwrap();
    let cut = &bytes[..bytes.len() - 2000];
    let errors = p.csv("cut.csv");
    let out =
        ferry_with(copy_args("-", &p.dst.url(), &errors, &["--big-key-bytes", "100000"]), &[], Some(cut));
    assert_exit(&out, 3);
    let s = summary(&out);
    let rows = read_errors(&errors);
    // The keys before it in the file (their order is the server's) are written; the big one fails.
    assert_eq!((s.failed, rows.len()), (1, 1), "{}", dump(&out));
    assert!(s.copied <= 8, "{}", dump(&out));
    assert_eq!(rows[0].key, b"big".to_vec());
    assert_eq!(rows[0].error, "CORRUPT");
    assert_eq!(dbsize(&mut p.dst.conn()), s.copied as i64, "no temporary key left: {}", dump(&out));
}

#[test]
fn verify_a_file_takes_the_same_shard() {
    let p = Pair::new();
    let keys = fill_strings(&mut p.src.conn(), "k:", 200);
    let file = path_str(&p.src.save());
    assert_exit(&copy_file(&p, &file, &["--shard", "1/2"]), 0);
    let out = ferry(["verify", &file, &p.dst.url(), "--shard", "1/2"]);
    assert_exit(&out, 0);
    let v = verify_summary(&out);
    assert_eq!(v.matched as i64, dbsize(&mut p.dst.conn()), "{}", dump(&out));
    assert!(v.matched > 50 && (v.matched as usize) < keys.len(), "{}", dump(&out));
    let out = ferry(["verify", &file, &p.dst.url()]);
    assert_exit(&out, 1);
}
