//! Time is the servers': a machine whose clock runs a minute ahead of the servers' (simulated with
//! `faketime`, which scripts/test.sh installs) copies keys with 30 s left as live keys, with their
//! deadlines kept to the millisecond, in every mode, and says how far its clock is off; `verify`
//! compares deadlines, not TTLs read at different moments, so identical deadlines agree with a
//! tolerance of 0 even in batches of 100,000, and a deadline really moved is still found.

use redis::Value;

use crate::support::*;

/// `redis-ferry ARGS` under `faketime OFFSET` (this process's clock moved, the servers' not).
fn ferry_faked(offset: &str, args: &[&str]) -> std::process::Output {
    let probe = std::process::Command::new("faketime").arg("--help").output();
    assert!(probe.is_ok(), "faketime is not installed (scripts/test.sh installs Debian's faketime)");
    FerryProcess::spawn_under(&["faketime", "-f", offset], args, &[], None, None).wait()
}

/// Fills the source with `n` strings (by value) and `n` hashes (DUMP/RESTORE) that have 30 s left.
fn fill_expiring(con: &mut redis::Connection, n: usize) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    let mut pipe = redis::pipe();
    for i in 0..n {
        let (s, h) = (format!("s:{i}"), format!("h:{i}"));
        pipe.cmd("SET").arg(&s).arg(i).arg("PX").arg(30_000).ignore();
        pipe.cmd("HSET").arg(&h).arg("f").arg(i).ignore();
        pipe.cmd("PEXPIRE").arg(&h).arg(30_000).ignore();
        keys.push(s.into_bytes());
        keys.push(h.into_bytes());
    }
    pipe.exec(con).unwrap();
    keys
}

fn pexpiretime(con: &mut redis::Connection, key: &[u8]) -> i64 {
    q(con, &[b"PEXPIRETIME", key])
}

#[test]
fn a_clock_a_minute_ahead_decides_no_key_s_fate_in_any_mode() {
    let p = Pair::new();
    let mut src = p.src.conn();
    let keys = fill_expiring(&mut src, 1000);
    for mode in ["auto", "dump", "typed"] {
        let _: () = redis::cmd("FLUSHALL").query(&mut p.dst.conn()).unwrap();
        let csv = path_str(&p.csv("errors.csv"));
        let out = ferry_faked(
            "+60s",
            &["copy", &p.src.addr(), &p.dst.addr(), "--mode", mode, "--errors", &csv, "--progress", "0"],
        );
        assert_exit(&out, 0);
        let s = summary(&out);
        assert_eq!((s.copied, s.expired), (2000, 0), "--mode {mode}: {}", s.line);
        let mut dst = p.dst.conn();
        for key in &keys {
            assert_eq!(
                pexpiretime(&mut dst, key),
                pexpiretime(&mut src, key),
                "--mode {mode}: deadline of {key:?}"
            );
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let ahead: Option<i64> = stderr.lines().filter(|l| l.contains("WARN")).find_map(|l| {
            let rest = l.split("this machine's is ").nth(1)?;
            rest.split(" ms ahead").next()?.parse().ok()
        });
        assert!(
            ahead.is_some_and(|ms| (ms - 60_000).abs() < 1_000),
            "no skew warning of about 60 s\n{stderr}"
        );
    }
    // Keys whose deadline has passed on the target's clock are still counted as expired.
    let _: () = redis::cmd("FLUSHALL").query(&mut p.dst.conn()).unwrap();
    let _: Value = q(&mut src, &[b"SET", b"soon", b"v", b"PX", b"300"]);
    let out =
        ferry_faked("-60s", &["copy", &p.src.addr(), &p.dst.addr(), "--match", "soon", "--progress", "0"]);
    assert_exit(&out, 0);
    let s = summary(&out);
    assert_eq!(s.copied + s.expired, s.scanned);
}

#[test]
fn verify_compares_deadlines_not_ttls_read_at_different_moments() {
    let p = Pair::new();
    let mut src = p.src.conn();
    let mut pipe = redis::pipe();
    for i in 0..20_000 {
        pipe.cmd("SET").arg(format!("k:{i}")).arg(i).arg("PX").arg(3_600_000).ignore();
    }
    pipe.exec(&mut src).unwrap();
    let out = p.copy(&["--progress", "0"]);
    assert_exit(&out, 0);
    for extra in [&["--ttl-tolerance", "0"][..], &["--ttl-tolerance", "20", "--batch", "100000"]] {
        let (s, d) = (p.src.addr(), p.dst.addr());
        let mut args = vec!["verify", &s, &d];
        args.extend_from_slice(extra);
        let out = ferry(&args);
        assert_exit(&out, 0);
        let v = verify_summary(&out);
        assert_eq!((v.matched, v.ttl), (20_000, 0), "{extra:?}: {}", v.line);
    }
    // A deadline moved by 5 s on the target is found, with a tolerance of 2 s.
    let mut dst = p.dst.conn();
    let at = pexpiretime(&mut dst, b"k:7");
    let _: Value = q(&mut dst, &[b"PEXPIREAT", b"k:7", (at + 5000).to_string().as_bytes()]);
    let diff = p.csv("diff.csv");
    let (s, d, diff_arg) = (p.src.addr(), p.dst.addr(), path_str(&diff));
    let out = ferry(["verify", &s, &d, "--diff", &diff_arg]);
    assert_exit(&out, 1);
    let rows = read_diff(&diff);
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].key.as_slice(), rows[0].difference.as_str()), (&b"k:7"[..], "ttl"), "{rows:?}");
    assert!(rows[0].message.contains("5000 ms apart"), "{rows:?}");
}
