//! Keys that fail: each lands in the error CSV (one row per key, binary names escaped, no password
//! in it or in the logs) and that CSV, fed back through `--keys-from`, retries exactly those keys;
//! `--max-errors N` aborts with exit 3 and `--max-errors 0` never aborts; `--errors-append` keeps one
//! header and the rows of every run, a clean run leaves the file alone, a run without it overwrites
//! the file; a run where nothing fails creates no CSV, not even the default one in its working
//! directory.

use std::collections::BTreeSet;

use crate::support::*;

#[test]
fn failed_keys_land_in_the_csv_and_retry_through_keys_from() {
    const PASSWORD: &str = OK_ONLY_PASSWORD;
    let p = Pair::new();
    let (mut s, mut d) = (p.src.conn(), p.dst.conn());
    // The user may touch ok:* only; every secret:* key fails with NOPERM (at EXISTS or at RESTORE).
    let target = ok_only_target(&p);

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
