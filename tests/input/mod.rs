//! The command line and the files a run reads. `--help` prints the usage and every flag on standard
//! output. Bad input is refused before anything is written, with exit 2 and one line on standard
//! error naming the culprit: an unknown flag, a value out of range, flags that do not go together, a
//! malformed URL, a target that cannot be reached or logged in to (the password never shown), a file
//! that cannot be written, and input found bad only by reading a file or a number's range. No file a
//! run reads can be one it writes, however it is named (a symlink, `./x`, a hard link, standard input
//! redirected from it). `--keys-from -` takes plain keys from standard input literally, and
//! `--keys-from` reads a redis-ferry CSV in every form a spreadsheet saves it again (a byte order
//! mark, quoted headers, `;`, CRLF) and refuses, by line, a file that looks like one but is not. The
//! results on standard output survive a closed pipe quietly and report a full disk.

use std::process::{Command, Output, Stdio};

use crate::support::*;

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

// ---------------------------------------------------------------------------------------------------
// Bad input: exit 2, one line on stderr naming the culprit, nothing written
// ---------------------------------------------------------------------------------------------------

/// How a [`BadInput`] case runs `copy` against its pair.
enum Attempt {
    /// [`Pair::copy`] with these flags.
    Flags(&'static [&'static str]),
    /// A run that is more than flags: its own TARGET or `--errors`, a path in the pair's dir, a file
    /// written first. Returns the output and the needles known only once the run is built (an
    /// address), which come before the case's `needles`.
    Built(fn(&Pair) -> (Output, Vec<String>)),
}

/// One way to give `copy` bad input. Each case runs against its own [`filled_pair`] and is checked by
/// [`assert_refused`]: exit 2, one stderr line naming one of the needles, no `secret` in the output,
/// nothing written to the target, the source unchanged.
struct BadInput {
    /// The case (the test it was before the table), printed before it runs, so that a failure shows
    /// which case it was.
    name: &'static str,
    /// Extra `redis-server` arguments for the target.
    target_args: &'static [&'static str],
    attempt: Attempt,
    /// The one stderr line names one of these (after any the attempt returns).
    needles: &'static [&'static str],
    /// A password that must appear nowhere in the output.
    secret: Option<&'static str>,
    /// What the case checks beyond [`assert_refused`], after it.
    then: Option<fn(&Pair, &Output)>,
}

/// The defaults of a case: a plain target, no secret, no further check.
const CASE: BadInput = BadInput {
    name: "",
    target_args: &[],
    attempt: Attempt::Flags(&[]),
    needles: &[],
    secret: None,
    then: None,
};

impl BadInput {
    /// A case that is [`Pair::copy`] with `flags`, refused naming one of `needles`.
    const fn flags(
        name: &'static str,
        flags: &'static [&'static str],
        needles: &'static [&'static str],
    ) -> Self {
        BadInput { name, attempt: Attempt::Flags(flags), needles, ..CASE }
    }
}

/// The password the `wrong_password` case logs in with (the target wants another one).
const WRONG_PASSWORD: &str = "wrong-pass-5678";

#[test]
fn bad_input_is_refused_with_one_line_naming_the_culprit_and_nothing_written() {
    let cases = [
        BadInput::flags("unknown_flag", &["--bogus-flag"], &["--bogus-flag"]),
        BadInput::flags("batch_zero", &["--batch", "0"], &["--batch"]),
        BadInput::flags("on_conflict_value", &["--on-conflict", "bogus"], &["--on-conflict"]),
        BadInput::flags("type_value", &["--type", "bogus"], &["--type"]),
        BadInput::flags("rate_zero", &["--rate", "0"], &["--rate"]),
        BadInput::flags("readers_zero", &["--readers", "0"], &["--readers"]),
        BadInput {
            name: "malformed_url",
            attempt: Attempt::Built(|p| {
                let csv = path_str(&p.csv("errors.csv"));
                (ferry(["copy", &p.src.addr(), "redis://127.0.0.1:notaport", "--errors", &csv]), vec![])
            }),
            needles: &["notaport"],
            ..CASE
        },
        BadInput {
            name: "wrong_password",
            target_args: &["--requirepass", "right-pass-1234"],
            attempt: Attempt::Built(|p| {
                let target = format!("redis://:{WRONG_PASSWORD}@127.0.0.1:{}", p.dst.port());
                let csv = path_str(&p.csv("errors.csv"));
                (ferry(["copy", &p.src.addr(), &target, "--errors", &csv]), vec![p.dst.addr()])
            }),
            needles: &["target"],
            secret: Some(WRONG_PASSWORD),
            ..CASE
        },
        BadInput {
            name: "unwritable_error_csv",
            attempt: Attempt::Built(|p| {
                (ferry(["copy", &p.src.addr(), &p.dst.url(), "--errors", "/nonexistent-dir/x.csv"]), vec![])
            }),
            needles: &["/nonexistent-dir/x.csv", "--errors"],
            ..CASE
        },
        BadInput {
            name: "match_with_keys_from",
            attempt: Attempt::Built(|p| {
                // A readable file naming keys that exist, so only the combination can be at fault.
                let list = p.csv("keys.txt");
                std::fs::write(&list, "bad:1\nbad:2\n").unwrap();
                (p.copy(&["--match", "x", "--keys-from", &path_str(&list)]), vec![])
            }),
            needles: &["--match"],
            then: Some(|_, out| {
                assert!(String::from_utf8_lossy(&out.stderr).contains("--keys-from"), "{}", dump(out));
            }),
            ..CASE
        },
        BadInput {
            name: "unwritable_report_path",
            attempt: Attempt::Built(|p| {
                let lock = p.csv("run.lock");
                (p.copy(&["--report", "/nonexistent-dir/report.json", "--lock", &path_str(&lock)]), vec![])
            }),
            needles: &["--report"],
            then: Some(|p, out| {
                let lock = p.csv("run.lock");
                assert!(
                    String::from_utf8_lossy(&out.stderr).contains("/nonexistent-dir/report.json"),
                    "{}",
                    dump(out)
                );
                // The report path is checked before the lock is taken: no lock file either.
                assert!(!lock.exists(), "the lock file was created for a refused run");
            }),
            ..CASE
        },
        BadInput {
            name: "report_and_errors_name_the_same_file",
            // Pair::copy passes --errors <dir>/errors.csv.
            attempt: Attempt::Built(|p| (p.copy(&["--report", &path_str(&p.csv("errors.csv"))]), vec![])),
            needles: &["--report"],
            ..CASE
        },
    ];
    for case in &cases {
        eprintln!("case: {}", case.name);
        let (p, d) = filled_pair(case.target_args);
        let (out, mut needles) = match case.attempt {
            Attempt::Flags(flags) => (p.copy(flags), Vec::new()),
            Attempt::Built(attempt) => attempt(&p),
        };
        needles.extend(case.needles.iter().map(|n| n.to_string()));
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        assert_refused(&p, &out, &needles, case.secret, &d);
        if let Some(then) = case.then {
            then(&p, &out);
        }
    }
}

#[test]
fn bad_input_found_by_reading_is_one_line_and_exit_2() {
    let p = Pair::new();
    fill_strings(&mut p.src.conn(), "k:", 20);
    let dir = path_str(p.dir.path());
    let list = p.csv("keys.txt");
    std::fs::write(&list, "k:1\n").unwrap();
    let list = path_str(&list);
    let cases: &[(&[&str], &str)] = &[
        (&["--keys-from", &dir], "is a directory"),
        (&["--scan-count", "18446744073709551615"], "--scan-count"),
        (&["--sleep-after-batch", "18446744073709551615"], "--sleep-after-batch"),
        (&["--rate", "1", "--batch", "500"], "--batch 500 with --rate 1"),
        (&["--rate", "2", "--batch", "1000", "--burst", "1000"], "--batch 1000 with --rate 2"),
    ];
    for (extra, needle) in cases {
        let out = p.copy(extra);
        assert_refused_naming(&out, &[needle]);
    }
    for source in ["127.0.0.1:6379:99", "redis://127.0.0.1:1:2"] {
        let out = ferry(["copy", source, &p.dst.addr(), "--keys-from", &list]);
        assert_refused_naming(&out, &["more than one `:`"]);
    }
    assert_eq!(dbsize(&mut p.dst.conn()), 0);
    // A --rate without --batch batches one second of it: the copy moves keys from the start.
    let out = p.copy(&["--rate", "10", "--progress", "0"]);
    assert_exit(&out, 0);
    assert_eq!(summary(&out).copied, 20);
}

/// A pair whose source holds `fail:0..n` strings and a target that refuses to write any of them: the
/// ACL user `w` may write only `ok:*` keys, so every copy fails each key with NOPERM.
fn failing_pair(n: usize) -> (Pair, String) {
    let p = Pair::new();
    fill_strings(&mut p.src.conn(), "fail:", n);
    let _: redis::Value =
        q(&mut p.dst.conn(), &[b"ACL", b"SETUSER", b"w", b"on", b">pw", b"~ok:*", b"+@all"]);
    let target = format!("redis://w:pw@127.0.0.1:{}", p.dst.port());
    (p, target)
}

fn copy_to(p: &Pair, target: &str, extra: &[&str]) -> std::process::Output {
    let mut args =
        vec!["copy".to_string(), p.src.addr(), target.to_string(), "--progress".into(), "0".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    ferry(args)
}

#[test]
fn a_file_read_and_a_file_written_are_never_one_file_under_any_name() {
    let (p, target) = failing_pair(300);
    // A first run leaves a 300-row error CSV: the retry list.
    let csv = p.csv("errors.csv");
    let out = copy_to(&p, &target, &["--errors", &path_str(&csv)]);
    assert_exit(&out, 1);
    assert_eq!(read_errors(&csv).len(), 300);
    let before = std::fs::read(&csv).unwrap();
    let link = p.csv("link.csv");
    std::os::unix::fs::symlink(&csv, &link).unwrap();
    let hard = p.csv("hard.csv");
    std::fs::hard_link(&csv, &hard).unwrap();
    let dotted = format!("{}/./errors.csv", p.dir.path().display());
    for (keys, errors) in [
        (path_str(&csv), path_str(&link)),
        (path_str(&link), path_str(&csv)),
        (path_str(&hard), dotted.clone()),
        (dotted.clone(), path_str(&csv)),
    ] {
        for append in [false, true] {
            let mut extra = vec!["--keys-from", &keys, "--errors", &errors];
            if append {
                extra.push("--errors-append");
            }
            let out = copy_to(&p, &target, &extra);
            assert_refused_naming(&out, &["are the same file"]);
        }
    }
    // Standard input redirected from the CSV is the CSV.
    let out = Command::new(BIN)
        .args(["copy", &p.src.addr(), &target, "--keys-from", "-", "--errors-append", "--errors"])
        .arg(&csv)
        .stdin(std::fs::File::open(&csv).unwrap())
        .output()
        .unwrap();
    assert_refused_naming(&out, &["--keys-from standard input and --errors"]);
    // --report and --lock may not be the list either, nor --checkpoint the error CSV.
    for flag in ["--report", "--lock"] {
        let out = copy_to(&p, &target, &["--keys-from", &path_str(&link), flag, &path_str(&csv)]);
        assert_refused_naming(&out, &["are the same file"]);
    }
    let out = copy_to(&p, &target, &["--errors", &path_str(&csv), "--checkpoint", &path_str(&hard)]);
    assert_refused_naming(&out, &["are the same file"]);
    assert_eq!(std::fs::read(&csv).unwrap(), before, "the retry list was changed");
    assert_eq!(dbsize(&mut p.dst.conn()), 0);
    // verify --diff may not be its own --keys-from either.
    let out = ferry(
        ["verify", &p.src.addr(), &p.dst.addr(), "--keys-from", &path_str(&csv), "--diff"]
            .into_iter()
            .map(String::from)
            .chain([path_str(&link)]),
    );
    assert_refused_naming(&out, &["are the same file"]);
}

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

/// Rewrites a redis-ferry error CSV the way a spreadsheet saves it: a byte order mark, every field
/// quoted, `sep` between fields, CRLF line ends, a blank row at the end.
fn as_spreadsheet(rows: &[ErrorRow], sep: &str) -> Vec<u8> {
    let quote = |f: &str| format!("\"{}\"", f.replace('"', "\"\""));
    let mut out = b"\xEF\xBB\xBF".to_vec();
    let header = ["time", "key", "stage", "error", "message"].map(quote).join(sep);
    out.extend_from_slice(format!("{header}\r\n").as_bytes());
    for r in rows {
        let fields = [r.time.clone(), r.raw_key.clone(), r.stage.clone(), r.error.clone(), r.message.clone()];
        out.extend_from_slice(format!("{}\r\n", fields.map(|f| quote(&f)).join(sep)).as_bytes());
    }
    out.extend_from_slice(format!("{}\r\n", [""; 5].join(sep)).as_bytes());
    out
}

#[test]
fn keys_from_reads_the_csv_as_a_spreadsheet_saves_it_and_refuses_a_broken_one_by_line() {
    let p = Pair::new();
    let mut src = p.src.conn();
    let keys = awkward_keys();
    for (i, k) in keys.iter().enumerate() {
        let _: redis::Value = q(&mut src, &[b"SET", k, format!("v{i}").as_bytes()]);
    }
    let rows: Vec<ErrorRow> = keys
        .iter()
        .map(|k| ErrorRow {
            time: "2026-12-01T00:00:00.000Z".into(),
            raw_key: escape_key(k),
            key: k.clone(),
            stage: "write".into(),
            error: "OOM".into(),
            message: "command not allowed, \"really\"".into(),
        })
        .collect();
    for sep in [",", ";", "\t"] {
        let list = p.csv("saved.csv");
        std::fs::write(&list, as_spreadsheet(&rows, sep)).unwrap();
        let out = p.copy(&["--keys-from", &path_str(&list), "--on-conflict", "replace", "--progress", "0"]);
        assert_exit(&out, 0);
        let s = summary(&out);
        assert_eq!(
            (s.scanned, s.copied, s.expired),
            (keys.len() as u64, keys.len() as u64, 0),
            "sep {sep:?}"
        );
        assert_same(&mut src, &mut p.dst.conn(), &keys);
    }
    // Looks like a CSV, cannot be read as one: refused naming the line, nothing written.
    let _: () = redis::cmd("FLUSHALL").query(&mut p.dst.conn()).unwrap();
    for (text, line) in [
        (
            &b"\xEF\xBB\xBF\"time\",\"key\",\"stage\"\r\n\"t\",\"k\",\"w\"\r\n\"t\",\"open,\"w\"\r\n"[..],
            "line 3",
        ),
        (b"time,key,stage,error,message\nt,k\\q,write,OOM,m\n", "line 2"),
        (b"\"time\",\"key\n", "line 1"),
    ] {
        let list = p.csv("broken.csv");
        std::fs::write(&list, text).unwrap();
        let out = p.copy(&["--keys-from", &path_str(&list)]);
        assert_refused_naming(&out, &[line]);
        assert_eq!(dbsize(&mut p.dst.conn()), 0);
    }
}

/// Runs `redis-ferry ARGS` with standard output on `stdout`; returns the exit code and standard error.
fn run_with_stdout(args: &[&str], stdout: Stdio) -> (Option<i32>, String) {
    let out = Command::new(BIN).args(args).stdout(stdout).stderr(Stdio::piped()).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn results_survive_a_closed_pipe_quietly_and_report_a_full_disk() {
    let p = Pair::new();
    fill_strings(&mut p.src.conn(), "k:", 50);
    let csv = path_str(&p.csv("errors.csv"));
    let copy = ["copy", &p.src.addr(), &p.dst.addr(), "--errors", &csv, "--progress", "0"];
    let verify = ["verify", &p.src.addr(), &p.dst.addr()];
    let help: &[&str] = &["--help"];
    for args in [&copy[..], &verify[..], help] {
        // A reader that has gone: the pipe's read end is closed before the run starts.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let (code, stderr) = run_with_stdout(args, Stdio::from(writer));
        assert_eq!(code, Some(0), "{args:?} with a closed pipe\n{stderr}");
        assert!(!stderr.contains("panicked") && !stderr.contains("error:"), "{args:?}\n{stderr}");
        // A full disk: the results are lost, which is an error.
        let (code, stderr) = run_with_stdout(args, Stdio::from(std::fs::File::create("/dev/full").unwrap()));
        assert_eq!(code, Some(3), "{args:?} into /dev/full\n{stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}\n{stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(
            errors,
            ["error: cannot write the results to standard output: No space left on device (os error 28)"]
        );
    }
}
