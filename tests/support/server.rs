//! Real `redis-server` processes on free 127.0.0.1 ports (modelled on redis-rs's
//! `redis-test/src/server.rs`): each in its own temp dir with its log, answering PING from our own
//! child (checked by process id) before a test gets it, restartable on the same port, and killed and
//! reaped by its own `Child` handle when its `RedisServer` is dropped.

use std::fs::File;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use redis::Connection;

/// How long a server may take to answer PING after spawning.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(15);
/// The server's stdout/stderr (its log) inside its own dir.
const LOG_FILE: &str = "redis.log";
/// How long [`RedisServer::terminate`] waits for the exit after SIGTERM before it kills: more than the
/// 10 s a primary may spend letting its replicas catch up.
const TERMINATE_TIMEOUT: Duration = Duration::from_secs(15);
/// How often to pick a new port when another process took ours between bind-and-drop and spawn.
const SPAWN_ATTEMPTS: usize = 8;

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
    /// Writes the server's data to its RDB file with SAVE and returns the file's path (the server's
    /// own `dir` and `dbfilename`: both are protected configs on Redis 7.0).
    pub fn save(&self) -> std::path::PathBuf {
        let mut con = self.conn();
        let _: () = redis::cmd("SAVE").query(&mut con).expect("SAVE");
        let name: Vec<String> =
            redis::cmd("CONFIG").arg("GET").arg("dbfilename").query(&mut con).expect("CONFIG GET");
        self.dir.path().join(&name[1])
    }

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
