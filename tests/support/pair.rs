//! A source and a target server with a temp dir for the files a run writes ([`Pair`]), the common
//! shapes of a copy between them, and the fixtures built on a pair: a filled source for a refused run
//! ([`filled_pair`], checked by [`assert_refused`]) and a target that refuses every key but `ok:*`
//! ([`ok_only_target`]).

use std::path::{Path, PathBuf};
use std::process::Output;

use super::{assert_refused_naming, dbsize, digest, dump, ferry, fill_strings, run, RedisServer};

/// A source and a target server plus a temp dir for error CSVs.
pub struct Pair {
    pub src: RedisServer,
    pub dst: RedisServer,
    pub dir: tempfile::TempDir,
}

impl Pair {
    pub fn new() -> Pair {
        Pair::with_target_args(&[])
    }

    pub fn with_target_args(dst_args: &[&str]) -> Pair {
        Pair {
            src: RedisServer::new(),
            dst: RedisServer::with_args(dst_args),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A path for an error CSV inside this test's temp dir.
    pub fn csv(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `redis-ferry copy SOURCE TARGET --errors <dir>/errors.csv --progress 0 EXTRA...` with other
    /// endpoints than the pair's own (another user's URL, another server).
    pub fn copy_between(&self, source: &str, target: &str, extra: &[&str]) -> Output {
        ferry(copy_args(source, target, &self.csv("errors.csv"), extra))
    }

    /// `redis-ferry copy SRC(host:port) DST(url) --errors <dir>/errors.csv EXTRA...`
    pub fn copy(&self, extra: &[&str]) -> Output {
        let mut args = vec![
            "copy".to_string(),
            self.src.addr(),
            self.dst.url(),
            "--errors".to_string(),
            path_str(&self.csv("errors.csv")),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        ferry(args)
    }
}

/// The arguments of `redis-ferry copy SOURCE TARGET --errors ERRORS --progress 0 EXTRA...`.
pub fn copy_args(source: &str, target: &str, errors: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "copy".to_string(),
        source.to_string(),
        target.to_string(),
        "--errors".to_string(),
        path_str(errors),
        "--progress".to_string(),
        "0".to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// A path as a command-line argument.
pub fn path_str(p: &Path) -> String {
    p.to_str().expect("utf-8 temp path").to_string()
}

/// A pair whose source holds 50 keys; returns it with the source digest.
pub fn filled_pair(dst_args: &[&str]) -> (Pair, String) {
    let p = Pair::with_target_args(dst_args);
    let mut s = p.src.conn();
    fill_strings(&mut s, "bad:", 50);
    let d = digest(&mut s);
    (p, d)
}

/// Asserts a refused run: exit 2, exactly one non-empty stderr line that contains one of `needles`,
/// no panic, no `secret` anywhere in the output; then that the target is empty and the source intact.
#[track_caller]
pub fn assert_refused(p: &Pair, out: &Output, needles: &[&str], secret: Option<&str>, src_digest: &str) {
    assert_refused_naming(out, needles);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if let Some(secret) = secret {
        assert!(!stderr.contains(secret), "password on stderr\n{}", dump(out));
        assert!(!String::from_utf8_lossy(&out.stdout).contains(secret), "password on stdout");
    }
    assert_eq!(dbsize(&mut p.dst.conn()), 0, "target written although the input was refused");
    assert_eq!(digest(&mut p.src.conn()), src_digest, "source changed");
}

/// The password of the ACL user `ferry` that [`ok_only_target`] creates.
pub const OK_ONLY_PASSWORD: &str = "ferry-acl-pass-7731";

/// The ACL user on the target that may only touch `ok:*` keys: every other key fails with NOPERM
/// (at EXISTS, or at RESTORE with `--on-conflict replace`). Returns the TARGET URL logging in as it.
pub fn ok_only_target(p: &Pair) -> String {
    let pw = format!(">{OK_ONLY_PASSWORD}");
    run(&mut p.dst.conn(), &[b"ACL", b"SETUSER", b"ferry", b"on", pw.as_bytes(), b"~ok:*", b"+@all"]);
    format!("redis://ferry:{OK_ONLY_PASSWORD}@127.0.0.1:{}", p.dst.port())
}
