//! Running unattended (cron, a systemd timer): `--lock` turns a second run away at once with exit 4,
//! naming the holder's pid, and is free again once the holder ends; `--report` writes a JSON report
//! that matches the summary line (buckets, seconds, rate, exit code, start and end) after a clean, a
//! failing, an aborted and an interrupted run, and even when preflight fails after the lock was
//! taken, with no credentials in it; standard output holds the summary line only, progress lines go
//! to standard error, and `--progress 0` prints none.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

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
    assert_eq!(o["read_from"], "primary");
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
    // Not reachable at the start: exit 5 (try again later), not 2 (bad input).
    assert_exit(&out, 5);
    let r = read_report(&report);
    assert_eq!((r["exit_code"].as_u64(), r["scanned"].as_u64()), (Some(5), Some(0)), "{r:#}");
    assert!(r["error"].as_str().is_some_and(|e| e.contains(&nowhere)), "{r:#}");
    assert!(r["stopped"].is_null(), "{r:#}");
}

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

/// Runs `redis-ferry ARGS` on a terminal (`script`, a pseudo-terminal for both standard output and
/// standard error) and returns what the terminal showed.
fn on_a_terminal(args: &[String]) -> String {
    let cmd = std::iter::once(BIN.to_string()).chain(args.iter().cloned()).collect::<Vec<_>>().join(" ");
    let out =
        std::process::Command::new("script").args(["-qec", &cmd, "/dev/null"]).output().expect("run script");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn on_a_terminal_progress_is_a_bar_and_plain_lines_on_request() {
    let p = Pair::new();
    fill_strings(&mut p.src.conn(), "bar:", 6_000);
    let args = |style: &str| {
        let mut a = vec![
            "copy".to_string(),
            p.src.addr(),
            p.dst.addr(),
            "--errors".into(),
            path_str(&p.csv("e.csv")),
        ];
        // About 1.5 s at 4000 keys/s, with a line every second.
        a.extend(
            ["--progress", "1", "--rate", "4000", "--on-conflict", "replace", "--progress-style", style]
                .map(String::from),
        );
        a
    };
    let bar = on_a_terminal(&args("auto"));
    assert!(bar.contains("/6,000 keys, ") && bar.contains("keys/s, failed=0, ETA"), "no bar:\n{bar}");
    assert!(!bar.contains("progress: scanned="), "lines as well as the bar:\n{bar}");
    assert!(bar.contains("scanned=6000 copied=6000"), "no summary:\n{bar}");
    let plain = on_a_terminal(&args("plain"));
    assert!(plain.contains("progress: scanned=") && !plain.contains("keys/s, failed=0, ETA"), "{plain}");
    // Not a terminal: lines, as with plain.
    let out = ferry(args("auto"));
    assert_exit(&out, 0);
    assert!(!progress_lines(&out).is_empty() && !stderr(&out).contains(", ETA"), "{}", dump(&out));
}
