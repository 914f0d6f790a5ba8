//! Test support for the integration suite: real `redis-server` processes on free 127.0.0.1 ports
//! (modelled on redis-rs's `redis-test/src/server.rs`), a runner for the `redis-ferry` binary with a hard
//! time limit, parsers for its summary line and its error CSV, helpers that fill a source with every core
//! type, and a type-aware comparison of one key between two servers.
//!
//! It does not mock anything: every helper talks to a real server, and every server started here is
//! killed and reaped by its own `Child` handle when its `RedisServer` is dropped. Redis Cluster
//! (several such servers joined by `redis-cli --cluster create`) is in `cluster.rs`; the helpers that
//! talk to servers take any `redis::ConnectionLike`, so they work on a cluster connection too.
#![allow(dead_code)]

mod cluster;
pub use cluster::*;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use redis::{Connection, ConnectionLike, Value};

/// The binary under test, built by cargo for this integration test.
pub const BIN: &str = env!("CARGO_BIN_EXE_redis-ferry");

/// How long a server may take to answer PING after spawning.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(15);
/// The server's stdout/stderr (its log) inside its own dir.
const LOG_FILE: &str = "redis.log";
/// How long [`RedisServer::terminate`] waits for the exit after SIGTERM before it kills: more than the
/// 10 s a primary may spend letting its replicas catch up.
const TERMINATE_TIMEOUT: Duration = Duration::from_secs(15);
/// How often to pick a new port when another process took ours between bind-and-drop and spawn.
const SPAWN_ATTEMPTS: usize = 8;
/// Hard limit for one `redis-ferry` run, so a hung binary fails its test instead of hanging the suite.
const FERRY_TIMEOUT: Duration = Duration::from_secs(180);
/// A copied key's deadline may sit this much later than the source's (clock read / rounding slack when the
/// binary computes the absolute deadline from PTTL + its own clock). Anything more means time spent in
/// flight was added to the TTL.
pub const TTL_AHEAD_MS: i64 = 100;
/// How much earlier the target's deadline may look than the source's: covers the time between our two
/// PTTL reads on a loaded machine.
pub const TTL_BEHIND_MS: i64 = 1500;

/// Returns a port on 127.0.0.1 that was free a moment ago (bind port 0, read it, drop the listener).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// One `redis-server` child on its own port and in its own temp dir; killed and reaped on drop.
pub struct RedisServer {
    /// The server process; `None` only while dropping.
    child: Option<Child>,
    /// The TCP port it listens on (127.0.0.1 only).
    port: u16,
    /// The default user's password when started with `--requirepass`.
    password: Option<String>,
    /// Its working dir (`--dir`) and log file; removed on drop.
    dir: tempfile::TempDir,
    /// The extra arguments it was started with, for `restart`.
    extra: Vec<String>,
}

impl RedisServer {
    /// A plain server: no password, no memory limit.
    pub fn new() -> RedisServer {
        RedisServer::with_args(&[])
    }

    /// A server with extra `redis-server` arguments (e.g. `["--requirepass", "pw"]`).
    pub fn with_args(extra: &[&str]) -> RedisServer {
        RedisServer::with_args_on(extra, free_port)
    }

    /// Like [`with_args`](RedisServer::with_args), on a port from `pick_port` (asked again when the
    /// port turns out to be taken), e.g. one whose cluster bus port (+10000) is free too.
    pub fn with_args_on(extra: &[&str], mut pick_port: impl FnMut() -> u16) -> RedisServer {
        let password = extra
            .iter()
            .position(|a| *a == "--requirepass")
            .and_then(|i| extra.get(i + 1))
            .map(|p| p.to_string());
        let dir = tempfile::Builder::new()
            .prefix("ferry-redis-")
            .tempdir()
            .expect("create temp dir for redis-server");
        let extra_owned = extra.iter().map(|a| a.to_string()).collect();
        let mut server = RedisServer { child: None, port: 0, password, dir, extra: extra_owned };
        let mut last_log = String::new();
        for _ in 0..SPAWN_ATTEMPTS {
            server.port = pick_port();
            server.child = Some(spawn_server(server.port, server.dir.path(), extra));
            match server.wait_ready() {
                Ok(()) => return server,
                // The port was taken between our bind-and-drop and the spawn (our server exited, or
                // another one answers there): kill ours if it still runs and try another port.
                Err(log) => {
                    server.kill();
                    last_log = log;
                }
            }
        }
        panic!("redis-server did not start after {SPAWN_ATTEMPTS} attempts; last log:\n{last_log}");
    }

    /// Polls until this server (checked by its process id) answers, or explains why not.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        let log_path = self.dir.path().join(LOG_FILE);
        loop {
            let child = self.child.as_mut().expect("child present");
            if let Some(status) = child.try_wait().expect("try_wait redis-server") {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                if log.contains("Address already in use") {
                    return Err(log);
                }
                panic!("redis-server exited at start ({status}); its log:\n{log}");
            }
            let pid = child.id();
            if let Ok(answered) = self.ping_pid() {
                if answered == pid {
                    return Ok(());
                }
                return Err(format!("another redis-server (pid {answered}) answered on port {}", self.port));
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!(
                    "redis-server on port {} did not answer PING within {:?}; its log:\n{log}",
                    self.port, SERVER_START_TIMEOUT
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// PING, then the process id from INFO server (to be sure the answer came from our child).
    fn ping_pid(&self) -> redis::RedisResult<u32> {
        let client = redis::Client::open(self.url())?;
        let mut con = client.get_connection_with_timeout(Duration::from_millis(500))?;
        con.set_read_timeout(Some(Duration::from_secs(2)))?;
        let _: String = redis::cmd("PING").query(&mut con)?;
        let info: String = redis::cmd("INFO").arg("server").query(&mut con)?;
        let pid = info
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        Ok(pid)
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server for good with SIGTERM (`kill -TERM PID`, as a supervisor would), waits for it
    /// to exit (SIGKILL after [`TERMINATE_TIMEOUT`]) and reaps it; its drop then does nothing. Redis 7
    /// answers SIGTERM like SHUTDOWN: a primary first pauses writes and lets its replicas catch up
    /// (up to its `shutdown-timeout`, 10 s). Does nothing if the server is already stopped.
    pub fn terminate(&mut self) {
        let Some(child) = self.child.as_mut() else { return };
        if child.try_wait().expect("try_wait redis-server").is_none() {
            let status =
                Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("run kill");
            assert!(
                status.success(),
                "kill -TERM {} (redis-server on port {}) failed",
                child.id(),
                self.port
            );
            let deadline = Instant::now() + TERMINATE_TIMEOUT;
            while child.try_wait().expect("try_wait redis-server").is_none() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
        }
        self.kill();
    }

    /// True once [`terminate`](RedisServer::terminate) has stopped the server.
    pub fn is_stopped(&self) -> bool {
        self.child.is_none()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log file (its stdout and stderr), for failure messages.
    pub fn log_path(&self) -> std::path::PathBuf {
        self.dir.path().join(LOG_FILE)
    }

    /// Shuts the server down (SHUTDOWN, so an AOF is flushed; a kill if it does not go) and starts it
    /// again on the same port, dir and arguments, after `down` has passed.
    pub fn restart(&mut self, down: Duration) {
        let _ = redis::cmd("SHUTDOWN").query::<()>(&mut self.conn());
        if let Some(child) = self.child.as_mut() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
        }
        self.kill();
        thread::sleep(down);
        let extra_owned = self.extra.clone();
        let extra: Vec<&str> = extra_owned.iter().map(String::as_str).collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.child = Some(spawn_server(self.port, self.dir.path(), &extra));
            match self.wait_ready() {
                Ok(()) => return,
                Err(log) if Instant::now() < deadline => {
                    self.kill();
                    eprintln!(
                        "restart on port {} failed, retrying: {}",
                        self.port,
                        log.lines().last().unwrap_or("")
                    );
                    thread::sleep(Duration::from_millis(100));
                }
                Err(log) => panic!("redis-server did not restart on port {}: {log}", self.port),
            }
        }
    }

    /// `127.0.0.1:PORT`, the plain host:port form of SOURCE / TARGET.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `redis://[:password@]127.0.0.1:PORT` (with the `--requirepass` password when there is one).
    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// A fresh connection with read/write timeouts (authenticated when the server has a password).
    pub fn conn(&self) -> Connection {
        let client = redis::Client::open(self.url()).expect("redis client");
        let con = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.addr()));
        con.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        con.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        con
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_server(port: u16, dir: &Path, extra: &[&str]) -> Child {
    let log = File::create(dir.join(LOG_FILE)).expect("create redis-server log file");
    let log2 = log.try_clone().expect("clone log handle");
    Command::new("redis-server")
        .arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir"])
        .arg(dir)
        .args(["--enable-debug-command", "yes", "--protected-mode", "no"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .expect("spawn redis-server (is it installed? scripts/test.sh installs it)")
}

// ---------------------------------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------------------------------

/// Runs `redis-ferry ARGS` with no stdin, `RUST_LOG` and the password variables unset, in a fresh
/// temp cwd (so a forgotten `--errors` never litters the repo).
pub fn ferry<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    ferry_with(args, &[], None)
}

/// Like [`ferry`], with extra environment variables and optional bytes on stdin.
pub fn ferry_with<I, S>(args: I, env: &[(&str, &str)], stdin: Option<&[u8]>) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    FerryProcess::spawn(args, env, stdin, None).wait()
}

/// Like [`ferry`], but in the working directory `cwd`, so a test can see what the run left there
/// (e.g. the default `redis-ferry-errors.csv`).
pub fn ferry_in<I, S>(cwd: &Path, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    FerryProcess::spawn(args, &[], None, Some(cwd)).wait()
}

/// Starts `redis-ferry ARGS` (no stdin, fresh temp cwd) and returns at once, so a test can signal it
/// while it runs.
pub fn spawn_ferry<I, S>(args: I) -> FerryProcess
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    FerryProcess::spawn(args, &[], None, None)
}

/// A running `redis-ferry` with its stdout and stderr drained by threads (so a full pipe never blocks
/// it). Killed and reaped on drop if the test did not [`wait`](FerryProcess::wait) for it.
pub struct FerryProcess {
    /// The process; `None` once waited for.
    child: Option<Child>,
    /// The command line, for failure messages.
    display: String,
    /// Writes the stdin bytes, if any.
    feeder: Option<thread::JoinHandle<()>>,
    /// Collects stdout.
    out: Option<thread::JoinHandle<Vec<u8>>>,
    /// Collects stderr.
    err: Option<thread::JoinHandle<Vec<u8>>>,
    /// The temp cwd when the caller gave none; removed on drop.
    _cwd: Option<tempfile::TempDir>,
}

impl FerryProcess {
    /// Spawns the binary with `RUST_LOG` and the password variables unset (then `env` set), in `cwd`
    /// or a fresh temp dir.
    pub fn spawn<I, S>(
        args: I,
        env: &[(&str, &str)],
        stdin: Option<&[u8]>,
        cwd: Option<&Path>,
    ) -> FerryProcess
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        FerryProcess::spawn_under(&[], args, env, stdin, cwd)
    }

    /// Like [`spawn`](FerryProcess::spawn), as the last argument of `wrapper` (e.g. `faketime +60s`).
    pub fn spawn_under<I, S>(
        wrapper: &[&str],
        args: I,
        env: &[(&str, &str)],
        stdin: Option<&[u8]>,
        cwd: Option<&Path>,
    ) -> FerryProcess
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let temp = match cwd {
            Some(_) => None,
            None => Some(tempfile::tempdir().expect("temp cwd")),
        };
        let dir = cwd.unwrap_or_else(|| temp.as_ref().unwrap().path());
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(BIN);
                cmd
            }
            None => Command::new(BIN),
        };
        cmd.args(args)
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .env_remove("REDIS_FERRY_SOURCE_PASSWORD")
            .env_remove("REDIS_FERRY_TARGET_PASSWORD")
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let display = format!("{cmd:?}");
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {display}: {e} (scripts/test.sh installs what the tests run)"));
        let feeder = stdin.map(|bytes| {
            let mut pipe = child.stdin.take().unwrap();
            let bytes = bytes.to_vec();
            thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            })
        });
        let out = Some(reader(child.stdout.take().unwrap()));
        let err = Some(reader(child.stderr.take().unwrap()));
        FerryProcess { child: Some(child), display, feeder, out, err, _cwd: temp }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("not yet waited for").id()
    }

    /// True while the process has not exited (it is not reaped here, so its pid stays ours).
    pub fn running(&mut self) -> bool {
        let child = self.child.as_mut().expect("not yet waited for");
        // `try_wait` reaps an exited child but keeps its status for the later `wait`.
        child.try_wait().expect("try_wait redis-ferry").is_none()
    }

    /// Sends a signal by name (`INT`, `TERM`) with `kill -SIG PID` (the crate has no libc dependency).
    /// Panics if the process already exited: the signal would not test anything then.
    #[track_caller]
    pub fn signal(&mut self, sig: &str) {
        assert!(self.running(), "redis-ferry exited before it could be sent SIG{sig}");
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {} failed: {status}", self.pid());
    }

    /// Waits for the exit (at most [`FERRY_TIMEOUT`], then kills it and panics) and returns everything
    /// it printed.
    pub fn wait(mut self) -> Output {
        let mut child = self.child.take().expect("not yet waited for");
        let deadline = Instant::now() + FERRY_TIMEOUT;
        let status: ExitStatus = loop {
            if let Some(status) = child.try_wait().expect("try_wait redis-ferry") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = String::from_utf8_lossy(&self.err.take().unwrap().join().unwrap()).into_owned();
                panic!("{} still running after {FERRY_TIMEOUT:?}; killed. stderr:\n{stderr}", self.display);
            }
            thread::sleep(Duration::from_millis(5));
        };
        if let Some(f) = self.feeder.take() {
            let _ = f.join();
        }
        Output {
            status,
            stdout: self.out.take().unwrap().join().unwrap(),
            stderr: self.err.take().unwrap().join().unwrap(),
        }
    }
}

impl Drop for FerryProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn reader<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// stdout and stderr of a run, for failure messages.
pub fn dump(out: &Output) -> String {
    format!(
        "exit: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Asserts the run's exit code (a signal death counts as a mismatch).
#[track_caller]
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "expected exit {code}\n{}", dump(out));
}

// ---------------------------------------------------------------------------------------------------
// Summary lines
// ---------------------------------------------------------------------------------------------------

/// The parsed last stdout line of `copy`.
#[derive(Debug, Clone)]
pub struct Summary {
    pub scanned: u64,
    pub copied: u64,
    pub skipped: u64,
    pub expired: u64,
    pub failed: u64,
    pub seconds: f64,
    pub keys_per_sec: f64,
    /// Every `key=value` pair in line order, including the ones after `keys_per_sec`.
    pub pairs: Vec<(String, String)>,
    /// The raw line.
    pub line: String,
}

impl Summary {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// The last non-empty stdout line split into `key=value` pairs (single spaces between pairs).
pub fn last_line_pairs(out: &Output) -> (String, Vec<(String, String)>) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| panic!("no output on stdout\n{}", dump(out)))
        .to_string();
    let pairs = line
        .split(' ')
        .map(|tok| {
            let (k, v) = tok
                .split_once('=')
                .unwrap_or_else(|| panic!("summary token {tok:?} is not key=value\n{}", dump(out)));
            (k.to_string(), v.to_string())
        })
        .collect();
    (line, pairs)
}

/// Parses the `copy` summary (last stdout line) and checks its contract: the first seven pairs in
/// order, and the promise `scanned = copied + skipped + expired + failed`.
#[track_caller]
pub fn summary(out: &Output) -> Summary {
    let (line, pairs) = last_line_pairs(out);
    const ORDER: [&str; 7] = ["scanned", "copied", "skipped", "expired", "failed", "seconds", "keys_per_sec"];
    let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        names.len() >= ORDER.len() && names[..ORDER.len()] == ORDER,
        "summary line {line:?} does not start with {ORDER:?}\n{}",
        dump(out)
    );
    let int = |i: usize| -> u64 {
        pairs[i].1.parse().unwrap_or_else(|_| panic!("{} is not an integer in {line:?}", pairs[i].0))
    };
    let float = |i: usize| -> f64 {
        pairs[i].1.parse().unwrap_or_else(|_| panic!("{} is not a number in {line:?}", pairs[i].0))
    };
    let s = Summary {
        scanned: int(0),
        copied: int(1),
        skipped: int(2),
        expired: int(3),
        failed: int(4),
        seconds: float(5),
        keys_per_sec: float(6),
        pairs: pairs.clone(),
        line: line.clone(),
    };
    assert_eq!(
        s.scanned,
        s.copied + s.skipped + s.expired + s.failed,
        "buckets do not add up to scanned in {line:?}\n{}",
        dump(out)
    );
    assert!(s.seconds >= 0.0 && s.keys_per_sec >= 0.0, "negative numbers in {line:?}");
    s
}

/// The parsed last stdout line of `verify`: `matched missing different ttl extra seconds`, then
/// `vanished` and `errors`.
#[derive(Debug, Clone)]
pub struct VerifySummary {
    pub matched: u64,
    pub missing: u64,
    pub different: u64,
    pub ttl: u64,
    pub extra: u64,
    /// Keys gone from the source during the check (not a difference).
    pub vanished: u64,
    /// Keys that could not be read.
    pub errors: u64,
    pub line: String,
}

#[track_caller]
pub fn verify_summary(out: &Output) -> VerifySummary {
    let (line, pairs) = last_line_pairs(out);
    const ORDER: [&str; 6] = ["matched", "missing", "different", "ttl", "extra", "seconds"];
    let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        names.len() >= ORDER.len() && names[..ORDER.len()] == ORDER,
        "verify line {line:?} does not start with {ORDER:?}\n{}",
        dump(out)
    );
    let int = |i: usize| -> u64 {
        pairs[i].1.parse().unwrap_or_else(|_| panic!("{} is not an integer in {line:?}", pairs[i].0))
    };
    let named = |name: &str| -> u64 {
        let (_, v) = pairs
            .iter()
            .find(|(k, _)| k == name)
            .unwrap_or_else(|| panic!("no {name}= in the verify line {line:?}"));
        v.parse().unwrap_or_else(|_| panic!("{name} is not an integer in {line:?}"))
    };
    VerifySummary {
        matched: int(0),
        missing: int(1),
        different: int(2),
        ttl: int(3),
        extra: int(4),
        vanished: named("vanished"),
        errors: named("errors"),
        line,
    }
}

/// One row of the diff CSV of `verify --diff`.
#[derive(Debug, Clone)]
pub struct DiffRow {
    pub time: String,
    /// The key column unescaped back to bytes.
    pub key: Vec<u8>,
    /// `missing`, `type`, `value`, `ttl` or `extra`.
    pub difference: String,
    pub message: String,
}

/// Reads a diff CSV and checks each row against the contract: the exact header (starting with
/// `time,key,` so `copy --keys-from` takes it), RFC 3339 UTC time, an escaped key, a known difference,
/// and a non-empty one-line message.
#[track_caller]
pub fn read_diff(path: &Path) -> Vec<DiffRow> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .unwrap_or_else(|e| panic!("open diff CSV {}: {e}", path.display()));
    let header = rdr.byte_headers().expect("CSV header").clone();
    assert_eq!(
        header.iter().collect::<Vec<_>>(),
        [&b"time"[..], b"key", b"difference", b"message"],
        "diff CSV header in {}",
        path.display()
    );
    let mut rows = Vec::new();
    for rec in rdr.records() {
        let rec = rec.unwrap_or_else(|e| panic!("bad CSV row in {}: {e}", path.display()));
        assert_eq!(rec.len(), 4, "diff CSV row {rec:?} has {} fields", rec.len());
        let row = DiffRow {
            time: rec[0].to_string(),
            key: unescape_key(&rec[1]),
            difference: rec[2].to_string(),
            message: rec[3].to_string(),
        };
        assert!(is_rfc3339_utc(&row.time), "time {:?} is not RFC 3339 UTC", row.time);
        assert!(
            ["missing", "type", "value", "ttl", "extra"].contains(&row.difference.as_str()),
            "unknown difference in {row:?}"
        );
        assert!(!row.message.is_empty() && !row.message.contains(['\n', '\r']), "bad message in {row:?}");
        rows.push(row);
    }
    rows
}

// ---------------------------------------------------------------------------------------------------
// Error CSV
// ---------------------------------------------------------------------------------------------------

/// One row of the error CSV.
#[derive(Debug, Clone)]
pub struct ErrorRow {
    pub time: String,
    /// The key column as written (escaped).
    pub raw_key: String,
    /// The key column unescaped back to bytes.
    pub key: Vec<u8>,
    pub stage: String,
    pub error: String,
    pub message: String,
}

/// Reads an error CSV with the `csv` crate and checks each row against the contract: the exact header,
/// RFC 3339 UTC time, a printable-ASCII escaped key, a known stage, a non-empty error code, and a
/// one-line message.
#[track_caller]
pub fn read_errors(path: &Path) -> Vec<ErrorRow> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .unwrap_or_else(|e| panic!("open error CSV {}: {e}", path.display()));
    let header = rdr.byte_headers().expect("CSV header").clone();
    assert_eq!(
        header.iter().collect::<Vec<_>>(),
        [&b"time"[..], b"key", b"stage", b"error", b"message"],
        "error CSV header in {}",
        path.display()
    );
    let mut rows = Vec::new();
    for rec in rdr.records() {
        let rec = rec.unwrap_or_else(|e| panic!("bad CSV row in {}: {e}", path.display()));
        assert_eq!(rec.len(), 5, "CSV row {rec:?} has {} fields", rec.len());
        let row = ErrorRow {
            time: rec[0].to_string(),
            raw_key: rec[1].to_string(),
            key: unescape_key(&rec[1]),
            stage: rec[2].to_string(),
            error: rec[3].to_string(),
            message: rec[4].to_string(),
        };
        assert!(is_rfc3339_utc(&row.time), "time {:?} is not RFC 3339 UTC", row.time);
        assert!(
            ["scan", "check", "fetch", "write"].contains(&row.stage.as_str()),
            "unknown stage in {row:?}"
        );
        assert!(
            !row.error.is_empty()
                && row.error.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
            "error code should be an upper-case code like NOPERM/IO: {row:?}"
        );
        assert!(
            !row.message.contains('\n') && !row.message.contains('\r'),
            "message is not one line: {row:?}"
        );
        rows.push(row);
    }
    rows
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|+00:00)`.
fn is_rfc3339_utc(t: &str) -> bool {
    let b = t.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r.clone()).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    let shape = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && (b[10] == b'T' || b[10] == b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    shape && (t.ends_with('Z') || t.ends_with('z') || t.ends_with("+00:00"))
}

/// Escapes a key the way the contract says (redis-cli style): printable ASCII stays, except the
/// backslash (`\\`); every other byte becomes `\xHH`.
pub fn escape_key(key: &[u8]) -> String {
    let mut s = String::new();
    for &b in key {
        match b {
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}

/// Inverse of [`escape_key`]; panics on anything the contract does not allow in the key column.
#[track_caller]
pub fn unescape_key(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        assert!((0x20..=0x7e).contains(&c), "key column {s:?} holds byte {c:#04x} outside printable ASCII");
        if c == b'\\' {
            match b.get(i + 1) {
                Some(b'\\') => {
                    out.push(b'\\');
                    i += 2;
                }
                Some(b'x') | Some(b'X') => {
                    let hex = s.get(i + 2..i + 4).unwrap_or_else(|| panic!("short \\x escape in {s:?}"));
                    out.push(
                        u8::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("bad \\x escape in {s:?}")),
                    );
                    i += 4;
                }
                _ => panic!("unknown escape in key column {s:?}"),
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------
// Talking to servers
// ---------------------------------------------------------------------------------------------------

/// Runs one command given as byte arguments and converts the reply.
#[track_caller]
pub fn q<T: redis::FromRedisValue>(con: &mut impl ConnectionLike, args: &[&[u8]]) -> T {
    let mut cmd = redis::cmd(std::str::from_utf8(args[0]).unwrap());
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(con).unwrap_or_else(|e| {
        panic!("{:?} failed: {e}", args.iter().map(|a| escape_key(a)).collect::<Vec<_>>())
    })
}

pub fn dbsize(con: &mut impl ConnectionLike) -> i64 {
    q(con, &[b"DBSIZE"])
}

/// Every key of the current db (KEYS * is fine on test-sized dbs; it skips logically expired keys).
pub fn all_keys(con: &mut impl ConnectionLike) -> BTreeSet<Vec<u8>> {
    q::<Vec<Vec<u8>>>(con, &[b"KEYS", b"*"]).into_iter().collect()
}

pub fn keys_matching(con: &mut impl ConnectionLike, pattern: &str) -> BTreeSet<Vec<u8>> {
    q::<Vec<Vec<u8>>>(con, &[b"KEYS", pattern.as_bytes()]).into_iter().collect()
}

pub fn pttl(con: &mut impl ConnectionLike, key: &[u8]) -> i64 {
    q(con, &[b"PTTL", key])
}

/// How many times `command` (lower case, e.g. `dump`, `restore`) ran on the server, from INFO
/// commandstats; 0 if it never ran.
pub fn command_calls(con: &mut impl ConnectionLike, command: &str) -> u64 {
    command_stat(con, command, "calls")
}

/// One field (`calls`, `failed_calls`, `rejected_calls`) of `command`'s line in INFO commandstats; 0 if
/// it never ran.
pub fn command_stat(con: &mut impl ConnectionLike, command: &str, field: &str) -> u64 {
    let stats: String = q(con, &[b"INFO", b"commandstats"]);
    let prefix = format!("cmdstat_{command}:");
    let Some(line) = stats.lines().find_map(|l| l.strip_prefix(prefix.as_str())) else { return 0 };
    line.split(',')
        .find_map(|kv| kv.strip_prefix(field).and_then(|v| v.strip_prefix('=')))
        .map(|v| v.parse().expect("a number in INFO commandstats"))
        .unwrap_or(0)
}

/// Keys a copy read whole from a source: its DUMPs, plus the GETRANGEs that found a string (`--mode
/// auto` reads short strings by value; a GETRANGE on another type fails with WRONGTYPE).
pub fn keys_read(con: &mut impl ConnectionLike) -> u64 {
    command_calls(con, "dump") + command_calls(con, "getrange")
        - command_stat(con, "getrange", "failed_calls")
}

/// Keys a copy wrote to a target: its RESTOREs plus its SETs (short strings go by value).
pub fn keys_written(con: &mut impl ConnectionLike) -> u64 {
    command_calls(con, "restore") + command_calls(con, "set")
}

pub fn digest(con: &mut impl ConnectionLike) -> String {
    q(con, &[b"DEBUG", b"DIGEST"])
}

/// Writes `n` string keys `{prefix}{i}` = `value-{i}` through pipelines; returns the keys.
pub fn fill_strings(con: &mut Connection, prefix: &str, n: usize) -> Vec<Vec<u8>> {
    let keys: Vec<Vec<u8>> = (0..n).map(|i| format!("{prefix}{i}").into_bytes()).collect();
    for chunk in keys.chunks(1000) {
        let mut p = redis::pipe();
        for k in chunk {
            p.cmd("SET").arg(k).arg(format!("value-{}", String::from_utf8_lossy(k))).ignore();
        }
        p.exec(con).expect("fill strings");
    }
    keys
}

/// Runs a pipeline of single-key commands on any connection: as one pipeline where the connection
/// pipelines (standalone), one command at a time where it does not (a `ClusterConnection`, which
/// routes each command to its key's node).
#[track_caller]
pub fn exec_pipe(con: &mut impl ConnectionLike, p: &redis::Pipeline) {
    if con.supports_pipelining() {
        p.exec(con).expect("pipeline");
        return;
    }
    for cmd in p.cmd_iter() {
        cmd.exec(con).unwrap_or_else(|e| panic!("{cmd:?} failed: {e}"));
    }
}

/// Deterministic bytes that do not compress (xorshift), so a big value really is big on the wire.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// The awkward key names the contract calls out: `,` `"` `\n`, byte 0xFF, `\r\n`, a backslash, a space,
/// and the empty key.
pub fn awkward_keys() -> Vec<Vec<u8>> {
    vec![
        b"comma,key".to_vec(),
        b"quote\"key".to_vec(),
        b"new\nline".to_vec(),
        b"\xff\xfe binary \x00 key".to_vec(),
        b"crlf\r\n".to_vec(),
        b"back\\slash".to_vec(),
        b"sp ace".to_vec(),
        b"".to_vec(),
        b"all,of\"them\n\xff".to_vec(),
    ]
}

/// Fills `con` with every core type in several encodings, with and without TTLs, under awkward names.
/// With `big`, adds a 10 MiB string. Returns every key written.
pub fn fill_every_type(con: &mut impl ConnectionLike, big: bool) -> Vec<Vec<u8>> {
    let mut keys: Vec<Vec<u8>> = Vec::new();
    fn run(con: &mut impl ConnectionLike, args: &[&[u8]]) {
        let _: Value = q(con, args);
    }

    // Strings: plain, empty, integer-encoded, all 256 byte values, with TTLs.
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    run(con, &[b"SET", b"str:plain", b"hello world"]);
    run(con, &[b"SET", b"str:empty", b""]);
    run(con, &[b"SET", b"str:int", b"1234567"]);
    run(con, &[b"SET", b"str:bin", &all_bytes]);
    run(con, &[b"SET", b"str:ttl-px", b"expires later", b"PX", b"600000"]);
    run(con, &[b"SET", b"str:ttl-ex", b"expires in an hour", b"EX", b"3600"]);
    keys.extend([
        b"str:plain".to_vec(),
        b"str:empty".to_vec(),
        b"str:int".to_vec(),
        b"str:bin".to_vec(),
        b"str:ttl-px".to_vec(),
        b"str:ttl-ex".to_vec(),
    ]);
    if big {
        let v = noise(10 * 1024 * 1024, 42);
        run(con, &[b"SET", b"str:big", &v]);
        keys.push(b"str:big".to_vec());
    }

    // Lists: small (listpack) with empty and binary elements, big (quicklist, several nodes), with TTL.
    run(con, &[b"RPUSH", b"list:small", b"a", b"", b"\xff\x00b", b"c,\"d\n"]);
    let mut p = redis::pipe();
    for i in 0..2000 {
        p.cmd("RPUSH").arg("list:big").arg(format!("element-{i}-{}", "x".repeat(i % 50))).ignore();
    }
    exec_pipe(con, &p);
    run(con, &[b"RPUSH", b"list:ttl", b"1", b"2", b"3"]);
    run(con, &[b"PEXPIRE", b"list:ttl", b"900000"]);
    keys.extend([b"list:small".to_vec(), b"list:big".to_vec(), b"list:ttl".to_vec()]);

    // Sets: intset, small strings, big hashtable.
    run(con, &[b"SADD", b"set:int", b"1", b"2", b"3", b"-5", b"9223372036854775807"]);
    run(con, &[b"SADD", b"set:str", b"a", b"b", b"\xff", b""]);
    let mut p = redis::pipe();
    for i in 0..1000 {
        p.cmd("SADD").arg("set:big").arg(format!("member-{i}")).ignore();
    }
    exec_pipe(con, &p);
    run(con, &[b"SADD", b"set:ttl", b"x"]);
    run(con, &[b"EXPIRE", b"set:ttl", b"7200"]);
    keys.extend([b"set:int".to_vec(), b"set:str".to_vec(), b"set:big".to_vec(), b"set:ttl".to_vec()]);

    // Sorted sets: non-integer, negative, tiny and infinite scores; a big skiplist one; with TTL.
    run(
        con,
        &[
            b"ZADD",
            b"zset:small",
            b"1.5",
            b"a",
            b"-2.25",
            b"b",
            b"0",
            b"c",
            b"inf",
            b"d",
            b"-inf",
            b"e",
            b"3.141592653589793",
            b"f",
            b"1e-10",
            b"g",
            b"0.1",
            b"\xffbin",
        ],
    );
    let mut p = redis::pipe();
    for i in 0..500 {
        p.cmd("ZADD").arg("zset:big").arg(i as f64 / 3.0).arg(format!("m{i}")).ignore();
    }
    exec_pipe(con, &p);
    run(con, &[b"ZADD", b"zset:ttl", b"1", b"one", b"2.5", b"two"]);
    run(con, &[b"PEXPIRE", b"zset:ttl", b"800000"]);
    keys.extend([b"zset:small".to_vec(), b"zset:big".to_vec(), b"zset:ttl".to_vec()]);

    // Hashes: small with empty and binary fields/values, big hashtable, with TTL.
    run(
        con,
        &[b"HSET", b"hash:small", b"f1", b"v1", b"empty", b"", b"\xff", b"bin\x00val", b"", b"empty-field"],
    );
    let mut p = redis::pipe();
    for i in 0..1000 {
        p.cmd("HSET").arg("hash:big").arg(format!("field-{i}")).arg(format!("value-{i}")).ignore();
    }
    exec_pipe(con, &p);
    run(con, &[b"HSET", b"hash:ttl", b"a", b"b"]);
    run(con, &[b"EXPIRE", b"hash:ttl", b"5000"]);
    keys.extend([b"hash:small".to_vec(), b"hash:big".to_vec(), b"hash:ttl".to_vec()]);

    // Streams: entries, two consumer groups, pending entries for two consumers, one ack; one with a
    // TTL; and an empty stream that only holds a group.
    fill_stream(con, b"stream:groups", 20);
    fill_stream(con, b"stream:ttl", 5);
    run(con, &[b"PEXPIRE", b"stream:ttl", b"700000"]);
    run(con, &[b"XGROUP", b"CREATE", b"stream:empty", b"g", b"$", b"MKSTREAM"]);
    keys.extend([b"stream:groups".to_vec(), b"stream:ttl".to_vec(), b"stream:empty".to_vec()]);

    // Awkward names, spread over types; one with a TTL.
    for (i, k) in awkward_keys().into_iter().enumerate() {
        match i % 4 {
            0 => run(con, &[b"SET", &k, b"awkward value"]),
            1 => run(con, &[b"RPUSH", &k, b"x", b"y"]),
            2 => run(con, &[b"HSET", &k, b"f", b"v"]),
            _ => run(con, &[b"SADD", &k, b"m1", b"m2"]),
        }
        if i == 2 {
            run(con, &[b"EXPIRE", &k, b"4000"]);
        }
        keys.push(k);
    }
    keys
}

/// A stream with `n` entries, group g1 (7 delivered to alice and bob, one acked) and group g2 at `$`.
pub fn fill_stream(con: &mut impl ConnectionLike, key: &[u8], n: usize) {
    let mut ids: Vec<Vec<u8>> = Vec::new();
    for i in 0..n {
        let id: Vec<u8> = q(con, &[b"XADD", key, b"*", b"n", i.to_string().as_bytes(), b"bin", b"\xff\x00"]);
        ids.push(id);
    }
    let _: Value = q(con, &[b"XGROUP", b"CREATE", key, b"g1", b"0"]);
    let _: Value = q(con, &[b"XGROUP", b"CREATE", key, b"g2", b"$"]);
    let _: Value = q(con, &[b"XREADGROUP", b"GROUP", b"g1", b"alice", b"COUNT", b"4", b"STREAMS", key, b">"]);
    let _: Value = q(con, &[b"XREADGROUP", b"GROUP", b"g1", b"bob", b"COUNT", b"3", b"STREAMS", key, b">"]);
    let _: Value = q(con, &[b"XACK", key, b"g1", &ids[0]]);
}

// ---------------------------------------------------------------------------------------------------
// Comparing keys
// ---------------------------------------------------------------------------------------------------

/// Compares one key between source and target: type, value (type-aware), and TTL (the target's deadline
/// may not be later than the source's by more than TTL_AHEAD_MS, nor earlier by more than
/// TTL_BEHIND_MS; no TTL on the source means none on the target). Returns a description of the first
/// difference found.
pub fn diff_key(src: &mut impl ConnectionLike, dst: &mut impl ConnectionLike, key: &[u8]) -> Option<String> {
    // Source first, target second: with equal deadlines the target's PTTL can only be smaller.
    let sp = pttl(src, key);
    let tp = pttl(dst, key);
    let name = escape_key(key);
    if sp == -2 {
        return Some(format!("{name}: missing on the source"));
    }
    if tp == -2 {
        return Some(format!("{name}: missing on the target"));
    }
    if sp == -1 && tp != -1 {
        return Some(format!("{name}: no TTL on source but PTTL {tp} on target"));
    }
    if sp >= 0 {
        if tp < 0 {
            return Some(format!("{name}: PTTL {sp} on source but none on target"));
        }
        if tp > sp + TTL_AHEAD_MS {
            return Some(format!(
                "{name}: target deadline later than source's (PTTL source {sp}, target {tp}): time in flight added?"
            ));
        }
        if tp < sp - TTL_BEHIND_MS {
            return Some(format!("{name}: PTTL source {sp}, target {tp}"));
        }
    }
    let st: String = q(src, &[b"TYPE", key]);
    let tt: String = q(dst, &[b"TYPE", key]);
    if st != tt {
        return Some(format!("{name}: type {st} on source, {tt} on target"));
    }
    let (a, b) = (value_of(src, key, &st), value_of(dst, key, &st));
    if let (Value::BulkString(x), Value::BulkString(y)) = (&a, &b) {
        if x != y {
            let at = x.iter().zip(y.iter()).position(|(p, q)| p != q).unwrap_or(x.len().min(y.len()));
            return Some(format!(
                "{name} ({st}): {} bytes on source, {} on target, first difference at byte {at}",
                x.len(),
                y.len()
            ));
        }
    }
    if a != b {
        let show = |v: &Value| {
            let s = format!("{v:?}");
            if s.len() > 300 {
                format!("{}...", &s[..300])
            } else {
                s
            }
        };
        return Some(format!("{name} ({st}): source {} != target {}", show(&a), show(&b)));
    }
    None
}

/// A canonical, comparable form of a key's value for its type.
pub fn value_of(con: &mut impl ConnectionLike, key: &[u8], ty: &str) -> Value {
    let sorted = |v: Vec<Vec<u8>>| {
        let mut v = v;
        v.sort();
        Value::Array(v.into_iter().map(Value::BulkString).collect())
    };
    match ty {
        "string" => q(con, &[b"GET", key]),
        "list" => q(con, &[b"LRANGE", key, b"0", b"-1"]),
        "set" => sorted(q(con, &[b"SMEMBERS", key])),
        // Scores compared as Redis prints them (e.g. "1.5", "inf", "-inf").
        "zset" => q(con, &[b"ZRANGE", key, b"0", b"-1", b"WITHSCORES"]),
        "hash" => {
            let flat: Vec<Vec<u8>> = q(con, &[b"HGETALL", key]);
            let mut pairs: Vec<(Vec<u8>, Vec<u8>)> =
                flat.chunks(2).map(|c| (c[0].clone(), c[1].clone())).collect();
            pairs.sort();
            Value::Array(
                pairs.into_iter().flat_map(|(f, v)| [Value::BulkString(f), Value::BulkString(v)]).collect(),
            )
        }
        "stream" => stream_value(con, key),
        other => panic!("unexpected type {other} for {}", escape_key(key)),
    }
}

/// XRANGE, then per group (sorted by name): name, pending, last-delivered-id and the XPENDING summary.
fn stream_value(con: &mut impl ConnectionLike, key: &[u8]) -> Value {
    let entries: Value = q(con, &[b"XRANGE", key, b"-", b"+"]);
    let groups: Vec<Value> = q(con, &[b"XINFO", b"GROUPS", key]);
    let mut per_group: Vec<(Vec<u8>, Value)> = Vec::new();
    for g in groups {
        let fields = flat_map(&g);
        let get = |name: &str| {
            fields.get(name).cloned().unwrap_or_else(|| panic!("XINFO GROUPS without {name}: {g:?}"))
        };
        let name = match get("name") {
            Value::BulkString(b) => b,
            Value::SimpleString(s) => s.into_bytes(),
            v => panic!("group name {v:?}"),
        };
        let pending_summary: Value = q(con, &[b"XPENDING", key, &name]);
        per_group.push((
            name.clone(),
            Value::Array(vec![
                Value::BulkString(name),
                get("pending"),
                get("last-delivered-id"),
                pending_summary,
            ]),
        ));
    }
    per_group.sort_by(|a, b| a.0.cmp(&b.0));
    Value::Array(vec![entries, Value::Array(per_group.into_iter().map(|(_, v)| v).collect())])
}

/// A RESP2 flat `[k, v, k, v]` array or a RESP3 map as a name -> value map.
fn flat_map(v: &Value) -> BTreeMap<String, Value> {
    let key = |k: &Value| match k {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        other => format!("{other:?}"),
    };
    match v {
        Value::Array(items) => items.chunks(2).map(|c| (key(&c[0]), c[1].clone())).collect(),
        Value::Map(items) => items.iter().map(|(k, v)| (key(k), v.clone())).collect(),
        other => panic!("expected an array or map, got {other:?}"),
    }
}

/// Asserts that every key in `keys` agrees between the two servers; lists every difference.
#[track_caller]
pub fn assert_same(src: &mut impl ConnectionLike, dst: &mut impl ConnectionLike, keys: &[Vec<u8>]) {
    let diffs: Vec<String> = keys.iter().filter_map(|k| diff_key(src, dst, k)).collect();
    assert!(diffs.is_empty(), "{} key(s) differ:\n{}", diffs.len(), diffs.join("\n"));
}

/// The set of keys as readable strings, for assertion messages.
pub fn show_keys<'a>(keys: impl IntoIterator<Item = &'a Vec<u8>>) -> Vec<String> {
    keys.into_iter().map(|k| escape_key(k)).collect()
}

/// Asserts a refused run: exit 2, one stderr line naming one of `needles`, nothing on stdout.
#[track_caller]
pub fn assert_refused_naming(out: &Output, needles: &[&str]) {
    assert_exit(out, 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected exactly one line on stderr\n{}", dump(out));
    assert!(!stderr.contains("panicked"), "a panic is not an error message\n{}", dump(out));
    assert!(
        needles.iter().any(|n| lines[0].contains(n)),
        "stderr should name one of {needles:?}\n{}",
        dump(out)
    );
    assert!(out.stdout.is_empty(), "a refused run printed a summary\n{}", dump(out));
}
