//! Resume with `--checkpoint`: a copy interrupted by SIGINT, or killed outright with SIGKILL (so only
//! the periodic checkpoint exists), is run again with the same file and ends with a target equal to the
//! source (`verify`), having scanned only what was left (give or take one SCAN page). A checkpoint made
//! for another copy is refused with exit 2.

use std::time::Duration;

use crate::support::*;

fn num(s: &Summary, key: &str) -> u64 {
    s.get(key).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no {key} in {}", s.line))
}

fn fill_big(p: &Pair, n: usize) {
    let mut s = p.src.conn();
    for chunk in 0..n / 10_000 {
        let mut pipe = redis::pipe();
        for i in chunk * 10_000..(chunk + 1) * 10_000 {
            pipe.cmd("SET").arg(format!("resume:{i}")).arg(i).ignore();
        }
        pipe.query::<()>(&mut s).unwrap();
    }
}

fn copy_with_checkpoint(p: &Pair, cp: &str, extra: &[&str]) -> FerryProcess {
    let mut args = vec![
        "copy".to_string(),
        p.src.addr(),
        p.dst.addr(),
        "--checkpoint".into(),
        cp.to_string(),
        "--errors".into(),
        path_str(&p.csv("errors.csv")),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    spawn_ferry(args)
}

const N: usize = 200_000;

#[test]
fn interrupted_copy_resumes_where_it_stopped() {
    let p = Pair::new();
    fill_big(&p, N);
    let cp = path_str(&p.csv("checkpoint.json"));
    let mut first = copy_with_checkpoint(&p, &cp, &["--rate", "40000", "--batch", "500"]);
    let mut dst = p.dst.conn();
    wait_until(Duration::from_secs(60), "a good part of the copy", || dbsize(&mut dst) > 40_000);
    first.signal("INT");
    let out = first.wait();
    assert_exit(&out, 130);
    let one = summary(&out);
    let copied_first = num(&one, "copied");
    assert!(copied_first < N as u64, "{}", one.line);
    let saved = std::fs::read_to_string(&cp).expect("the checkpoint was written");
    assert!(saved.contains("\"resume\": {"), "{saved}");

    let out = copy_with_checkpoint(&p, &cp, &[]).wait();
    assert_exit(&out, 0);
    let two = summary(&out);
    // Resumed, not restarted: the second run scans what was left, plus at most a page or two again.
    let left = N as u64 - copied_first;
    assert!(num(&two, "scanned") <= left + 3_000, "first {} / second {}", one.line, two.line);
    assert_eq!(num(&two, "failed"), 0, "{}", two.line);
    assert_eq!(dbsize(&mut dst), N as i64);
    assert_exit(&ferry(["verify", &p.src.addr(), &p.dst.addr()]), 0);
    let done = std::fs::read_to_string(&cp).unwrap();
    assert!(done.contains("\"resume\": null"), "{done}");
}

#[test]
fn killed_copy_resumes_from_its_last_periodic_checkpoint() {
    let p = Pair::new();
    fill_big(&p, N);
    let cp = path_str(&p.csv("checkpoint.json"));
    let mut first = copy_with_checkpoint(&p, &cp, &["--rate", "30000", "--batch", "500"]);
    let mut dst = p.dst.conn();
    // At least one periodic save (every 2 s) has happened once the target holds this much.
    wait_until(Duration::from_secs(60), "a good part of the copy", || dbsize(&mut dst) > 90_000);
    first.signal("KILL");
    let _ = first.wait();
    let saved = std::fs::read_to_string(&cp).expect("a periodic checkpoint was written");
    assert!(saved.contains("\"resume\": {"), "{saved}");

    let out = copy_with_checkpoint(&p, &cp, &[]).wait();
    assert_exit(&out, 0);
    let two = summary(&out);
    assert!(num(&two, "scanned") < N as u64 - 30_000, "did not resume: {}", two.line);
    assert_eq!(dbsize(&mut dst), N as i64);
    assert_exit(&ferry(["verify", &p.src.addr(), &p.dst.addr()]), 0);
}

#[test]
fn checkpoint_of_another_copy_is_refused() {
    let p = Pair::new();
    fill_strings(&mut p.src.conn(), "cp:", 100);
    let cp = path_str(&p.csv("checkpoint.json"));
    let out = copy_with_checkpoint(&p, &cp, &["--match", "cp:1*"]).wait();
    assert_exit(&out, 0);
    let mut dst = p.dst.conn();
    let _: () = redis::cmd("FLUSHALL").query(&mut dst).unwrap();
    let out = copy_with_checkpoint(&p, &cp, &["--match", "cp:2*"]).wait();
    assert_exit(&out, 2);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--checkpoint") && err.contains("another copy"), "{err}");
    assert_eq!(dbsize(&mut dst), 0);
}
