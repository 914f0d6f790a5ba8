//! Running the `redis-ferry` binary: to its end with a hard time limit ([`ferry`] and its variants), or
//! in the background as a [`FerryProcess`] that a test can watch and signal while it runs; and the
//! checks every test makes on a finished run (its exit code, a refusal's one line on stderr).

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::dbsize;

/// The binary under test, built by cargo for this integration test.
pub const BIN: &str = env!("CARGO_BIN_EXE_redis-ferry");

/// Hard limit for one `redis-ferry` run, so a hung binary fails its test instead of hanging the suite.
const FERRY_TIMEOUT: Duration = Duration::from_secs(180);

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

pub(super) fn reader<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<Vec<u8>> {
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

/// A run's standard error as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the run's exit code (a signal death counts as a mismatch).
#[track_caller]
pub fn assert_exit(out: &Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "expected exit {code}\n{}", dump(out));
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

/// Waits until `cond` holds, polling every 10 ms (panics after `within`).
#[track_caller]
pub fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until the target holds at least one key (the copy is under way, so the Ctrl-C handler is
/// installed), then `settle` more, then sends SIGINT. Panics if the run ends first.
pub fn interrupt_mid_copy(run: &mut FerryProcess, target: &mut redis::Connection, settle: Duration) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while dbsize(target) == 0 {
        assert!(run.running(), "redis-ferry exited before writing anything");
        assert!(Instant::now() < deadline, "redis-ferry wrote nothing within 20 s");
        thread::sleep(Duration::from_millis(10));
    }
    thread::sleep(settle);
    run.signal("INT");
}
