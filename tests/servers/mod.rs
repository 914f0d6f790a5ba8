//! What preflight learns from the servers themselves, before anything is written: one server under two
//! names is refused as its own target (and the source is never written); a user name is always used to
//! log in, and a server that wants a password says how to give one; a read-only replica is refused as a
//! target, dry run or not; a db that does not exist is refused by the flag that names it; a port that
//! does not speak Redis says so. During the run, a target that evicts the keys it is given makes it
//! exit 1 with the evictions counted. Messages show an error code once and a long key cut short (the
//! CSV keeps it whole).

use std::io::Write;
use std::net::TcpListener;

use redis::Value;

use crate::support::*;

#[test]
fn the_same_server_under_another_name_is_refused_and_the_source_is_never_written() {
    let p = Pair::new();
    let mut src = p.src.conn();
    fill_strings(&mut src, "k:", 200);
    let before = digest(&mut src);
    let writes = command_calls(&mut src, "restore") + command_calls(&mut src, "set");
    let port = p.src.port();
    for target in
        [format!("localhost:{port}"), format!("127.1:{port}"), format!("redis://127.0.0.1:{port}/0")]
    {
        let out = p.copy_between(&p.src.addr(), &target, &["--on-conflict", "replace"]);
        assert_refused_naming(&out, &["are the same server"]);
        let out = ferry(["verify", &p.src.addr(), &target]);
        assert_refused_naming(&out, &["are the same server"]);
    }
    assert_eq!(digest(&mut src), before, "the source was written");
    assert_eq!(command_calls(&mut src, "restore") + command_calls(&mut src, "set"), writes);
    // Another db of the same server is another database.
    let out = p.copy_between(&p.src.addr(), &format!("redis://localhost:{port}/1"), &[]);
    assert_exit(&out, 0);
    assert_eq!(summary(&out).copied, 200);
}

fn acl(con: &mut redis::Connection, args: &[&str]) {
    let mut all: Vec<&[u8]> = vec![b"ACL", b"SETUSER"];
    all.extend(args.iter().map(|a| a.as_bytes()));
    let _: Value = q(con, &all);
}

#[test]
fn a_user_name_is_always_used_and_a_missing_password_is_explained() {
    let p = Pair::new();
    fill_strings(&mut p.src.conn(), "denied:", 20);
    let mut dst = p.dst.conn();
    // `limited` has a password; `open` has none (nopass) but may only write `allowed:*`.
    acl(&mut dst, &["limited", "on", ">secret", "~allowed:*", "+@all"]);
    acl(&mut dst, &["open", "on", "nopass", "~allowed:*", "+@all"]);
    let port = p.dst.port();
    let out = p.copy_between(&p.src.addr(), &format!("redis://limited@127.0.0.1:{port}"), &[]);
    assert_refused_naming(&out, &["authentication failed"]);
    assert_eq!(dbsize(&mut dst), 0);
    // The nopass user logs in as itself: its ACL holds, every key is refused with NOPERM.
    let out = p.copy_between(&p.src.addr(), &format!("redis://open@127.0.0.1:{port}"), &[]);
    assert_exit(&out, 1);
    assert_eq!(summary(&out).failed, 20);
    assert_eq!(dbsize(&mut dst), 0);
    let rows = read_errors(&p.csv("errors.csv"));
    assert!(rows.iter().all(|r| r.error == "NOPERM" && !r.message.starts_with("NOPERM")), "{rows:?}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("NOPERM NOPERM"), "{}", dump(&out));
    // A server that wants a password, given none: which side, and how to give it.
    let locked = RedisServer::with_args(&["--requirepass", "pw"]);
    for target in [locked.addr(), format!("redis://127.0.0.1:{}/2", locked.port())] {
        let out = p.copy_between(&p.src.addr(), &target, &[]);
        assert_refused_naming(&out, &["REDIS_FERRY_TARGET_PASSWORD"]);
        assert!(String::from_utf8_lossy(&out.stderr).contains("requires a password"), "{}", dump(&out));
    }
}

#[test]
fn a_read_only_replica_is_refused_as_target_even_for_a_dry_run() {
    let p = Pair::new();
    fill_strings(&mut p.src.conn(), "k:", 50);
    let replica = RedisServer::with_args(&["--replicaof", "127.0.0.1", &p.dst.port().to_string()]);
    for extra in [&[][..], &["--dry-run"][..]] {
        let out = p.copy_between(&p.src.addr(), &replica.addr(), extra);
        assert_refused_naming(&out, &["is a read-only replica"]);
    }
    assert!(!p.csv("errors.csv").exists());
    // A replica and its primary hold the same data: copying one onto the other is refused too.
    let mut r = replica.conn();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !q::<String>(&mut r, &[b"INFO", b"replication"]).contains("master_link_status:up") {
        assert!(std::time::Instant::now() < deadline, "the replica did not sync");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = p.copy_between(&replica.addr(), &p.dst.addr(), &["--on-conflict", "replace"]);
    assert_refused_naming(&out, &["hold the same data: one replicates the other"]);
}

#[test]
fn a_missing_db_and_a_port_that_is_not_redis_are_named() {
    let p = Pair::new();
    fill_strings(&mut p.src.conn(), "k:", 5);
    let out = p.copy_between(&p.src.addr(), &p.dst.addr(), &["--target-db", "16"]);
    assert_refused_naming(&out, &["--target-db 16"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("has 16 databases, 0 to 15"), "{}", dump(&out));
    // Something that answers, but not in RESP: an SSH banner, an HTTP reply.
    for banner in [&b"SSH-2.0-OpenSSH_9.2\r\n"[..], b"HTTP/1.1 400 Bad Request\r\n\r\n"] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let banner = banner.to_vec();
        let server = std::thread::spawn(move || {
            if let Ok((mut peer, _)) = listener.accept() {
                let _ = peer.write_all(&banner);
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
        });
        let out = p.copy_between(&addr, &p.dst.addr(), &[]);
        assert_refused_naming(&out, &["does not speak the Redis protocol"]);
        server.join().unwrap();
    }
    assert_eq!(dbsize(&mut p.dst.conn()), 0);
}

#[test]
fn evictions_on_the_target_are_counted_and_fail_the_run() {
    let p = Pair::with_target_args(&["--maxmemory", "3mb", "--maxmemory-policy", "allkeys-lru"]);
    let mut src = p.src.conn();
    for chunk in 0..50 {
        let mut pipe = redis::pipe();
        for i in 0..1000 {
            pipe.cmd("SET").arg(format!("k:{chunk}:{i}")).arg(noise(100, (chunk * 1000 + i) as u64)).ignore();
        }
        pipe.exec(&mut src).unwrap();
    }
    let report = p.csv("report.json");
    let out = p.copy_between(&p.src.addr(), &p.dst.addr(), &["--report", &path_str(&report)]);
    assert_exit(&out, 1);
    let s = summary(&out);
    let evicted: u64 = s.get("evicted").expect("evicted= in the summary").parse().unwrap();
    let kept = dbsize(&mut p.dst.conn()) as u64;
    assert_eq!(s.copied, 50_000);
    assert!(evicted > 0 && evicted + kept >= 50_000, "evicted={evicted}, {kept} keys left\n{}", dump(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the target evicts keys when it is full"), "no preflight warning\n{stderr}");
    assert!(stderr.contains("is more than the target has free"), "no room warning\n{stderr}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["evicted"].as_u64(), Some(evicted));
    assert_eq!(r["exit_code"], 1);
}

#[test]
fn long_keys_are_cut_in_logs_and_kept_whole_in_the_csv() {
    let p = Pair::new();
    let key = vec![b'x'; 100_000];
    let _: Value = q(&mut p.src.conn(), &[b"SET", &key, b"v"]);
    acl(&mut p.dst.conn(), &["w", "on", ">pw", "~ok:*", "+@all"]);
    let target = format!("redis://w:pw@127.0.0.1:{}", p.dst.port());
    let csv = path_str(&p.csv("errors.csv"));
    let out = ferry_with(["copy", &p.src.addr(), &target, "--errors", &csv], &[("RUST_LOG", "debug")], None);
    assert_exit(&out, 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("...(100000 bytes)"),
        "the key is not named at all\n{}",
        &stderr[..stderr.len().min(2000)]
    );
    let longest = stderr.lines().map(str::len).max().unwrap_or(0);
    assert!(longest < 2_000, "a log line of {longest} bytes");
    assert_eq!(read_errors(&p.csv("errors.csv"))[0].key, key);
}

#[test]
fn a_server_not_reachable_at_the_start_is_exit_5_and_bad_input_stays_2() {
    let p = Pair::new();
    fill_strings(&mut p.src.conn(), "k:", 20);
    // A port that was free a moment ago, with nothing listening.
    let nowhere = format!("127.0.0.1:{}", free_port());
    for (source, target, side) in
        [(p.src.addr(), nowhere.clone(), "target"), (nowhere.clone(), p.dst.addr(), "source")]
    {
        for command in ["copy", "verify"] {
            let out = ferry([command, &source, &target]);
            assert_exit(&out, 5);
            let stderr = String::from_utf8_lossy(&out.stderr);
            let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
            assert_eq!(errors.len(), 1, "{}", dump(&out));
            assert!(errors[0].contains(side) && errors[0].contains(&nowhere), "{}", dump(&out));
        }
    }
    assert_eq!(dbsize(&mut p.dst.conn()), 0);
    // A server that is up but full (maxclients reached, one client holding the only place): it may have
    // room later, so exit 5 too, for both commands.
    let full = RedisServer::with_args(&["--maxclients", "1"]);
    let _holder = full.conn();
    for command in ["copy", "verify"] {
        let out = ferry([command, &p.src.addr(), &full.addr()]);
        assert_exit(&out, 5);
    }
    drop(_holder);
    assert_eq!(dbsize(&mut full.conn()), 0);
    // A wrong password is not worth retrying: still exit 2.
    let locked = RedisServer::with_args(&["--requirepass", "right"]);
    let out = ferry(["copy", &p.src.addr(), &format!("redis://:wrong@127.0.0.1:{}", locked.port())]);
    assert_refused_naming(&out, &["authentication failed"]);
}
