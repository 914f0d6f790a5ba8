//! A real Redis Cluster for the integration tests: N primaries (no replicas), each a `redis-server
//! --cluster-enabled yes` started by [`RedisServer`] in its own temp dir, on a port whose cluster bus
//! port (+10000) is free too, joined with `redis-cli --cluster create`. Startup and every reshard end
//! with a poll until each node reports `cluster_state:ok`, all 16384 slots and all N nodes, and all
//! nodes agree on who owns which slot, so no test sleeps for a fixed time.
//!
//! Also here: a cluster client for the tests (`redis::cluster::ClusterConnection`, which follows
//! MOVED/ASK), per-node helpers (keys, DBSIZE, DEBUG DIGEST summed or collected over the primaries),
//! fast filling through a cluster pipeline, and resharding with `redis-cli --cluster reshard`, in the
//! foreground or in a background thread while a copy runs. It does not fail over, add or remove nodes.
//! Every server is killed by its own `RedisServer` on drop; a background reshard is cancelled (its
//! `redis-cli` killed by its own `Child`) and joined on drop.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use redis::cluster::{ClusterClient, ClusterConnection};
use redis::Connection;

use super::{reader, RedisServer};

/// The arguments that make a `redis-server` a cluster node; `nodes.conf` lands in its own `--dir`.
pub const CLUSTER_NODE_ARGS: [&str; 6] =
    ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"];
/// Slots in a Redis Cluster.
pub const CLUSTER_SLOTS: usize = 16384;
/// The cluster bus listens on the client port plus this.
const BUS_PORT_OFFSET: u16 = 10_000;
/// How long the nodes may take to agree after `--cluster create` or a reshard.
const CLUSTER_STABLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Hard limit for one `redis-cli --cluster` run (a reshard of a few thousand slots takes seconds).
const REDIS_CLI_TIMEOUT: Duration = Duration::from_secs(120);
/// Keys per cluster pipeline when filling.
const FILL_CHUNK: usize = 5000;

/// A port on 127.0.0.1 that was free a moment ago and whose cluster bus port (port + 10000, below
/// 65536) was free too.
pub fn free_cluster_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        if let Some(bus) = port.checked_add(BUS_PORT_OFFSET) {
            if TcpListener::bind(("127.0.0.1", bus)).is_ok() {
                return port;
            }
        }
    }
}

/// A Redis Cluster of N primaries on 127.0.0.1, no replicas; every node killed on drop.
pub struct RedisCluster {
    /// The primaries, in the order given to `redis-cli --cluster create` (which gives node 0 the
    /// first third of the slots, and so on).
    nodes: Vec<RedisServer>,
    /// Each node's id (CLUSTER MYID), in the same order.
    ids: Vec<String>,
}

impl RedisCluster {
    /// Three primaries.
    pub fn new() -> RedisCluster {
        RedisCluster::with_primaries(3)
    }

    /// Two clusters of three primaries, started side by side (most of a start is waiting for the
    /// nodes to agree, so two take about as long as one).
    pub fn pair() -> (RedisCluster, RedisCluster) {
        thread::scope(|scope| {
            let other = scope.spawn(RedisCluster::new);
            let first = RedisCluster::new();
            (first, other.join().expect("starting the second cluster panicked"))
        })
    }

    /// `n` primaries (at least 3, which `redis-cli --cluster create` requires), slots split evenly.
    pub fn with_primaries(n: usize) -> RedisCluster {
        assert!(n >= 3, "redis-cli --cluster create needs at least 3 primaries, got {n}");
        let nodes: Vec<RedisServer> =
            (0..n).map(|_| RedisServer::with_args_on(&CLUSTER_NODE_ARGS, free_cluster_port)).collect();
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(RedisServer::addr));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"].map(String::from));
        if let Err(e) = redis_cli(&args, None) {
            panic!("redis-cli --cluster create failed: {e}\n{}", node_logs(&nodes));
        }
        let ports: Vec<u16> = nodes.iter().map(RedisServer::port).collect();
        if let Err(e) = wait_stable(&ports, None) {
            panic!("cluster did not settle: {e}\n{}", node_logs(&nodes));
        }
        let ids = nodes
            .iter()
            .map(|node| {
                let id: String =
                    redis::cmd("CLUSTER").arg("MYID").query(&mut node.conn()).expect("CLUSTER MYID");
                id
            })
            .collect();
        RedisCluster { nodes, ids }
    }

    /// The first node's `127.0.0.1:PORT`: SOURCE / TARGET in host:port form.
    pub fn addr(&self) -> String {
        self.nodes[0].addr()
    }

    /// The first node's `redis://127.0.0.1:PORT`: SOURCE / TARGET as a URL.
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// Node `i`'s `127.0.0.1:PORT` (any node works as SOURCE / TARGET).
    pub fn addr_of(&self, i: usize) -> String {
        self.nodes[i].addr()
    }

    /// Node `i`'s `redis://127.0.0.1:PORT`.
    pub fn url_of(&self, i: usize) -> String {
        self.nodes[i].url()
    }

    /// Every node's client port, in creation order.
    pub fn nodes(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// Node `i` as a server (for a plain connection to that node only).
    pub fn node(&self, i: usize) -> &RedisServer {
        &self.nodes[i]
    }

    /// Node `i`'s cluster id.
    pub fn node_id(&self, i: usize) -> &str {
        &self.ids[i]
    }

    /// A cluster connection (routes each command to its key's node, follows MOVED and ASK, fans
    /// KEYS / DBSIZE out to all primaries), with timeouts.
    pub fn conn(&self) -> ClusterConnection {
        let urls: Vec<String> = self.nodes.iter().map(RedisServer::url).collect();
        let client = ClusterClient::builder(urls)
            .connection_timeout(Duration::from_secs(5))
            .response_timeout(Duration::from_secs(30))
            .build()
            .expect("cluster client");
        client.get_connection().unwrap_or_else(|e| panic!("connect to cluster at {}: {e}", self.addr()))
    }

    /// One plain connection per primary, in creation order.
    pub fn node_conns(&self) -> Vec<Connection> {
        self.nodes.iter().map(RedisServer::conn).collect()
    }

    /// The union of `KEYS *` over the primaries (logically expired keys left out).
    pub fn cluster_keys(&self) -> BTreeSet<Vec<u8>> {
        let mut keys = BTreeSet::new();
        for mut con in self.node_conns() {
            let page: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut con).expect("KEYS *");
            keys.extend(page);
        }
        keys
    }

    /// The sum of DBSIZE over the primaries.
    pub fn cluster_dbsize(&self) -> i64 {
        self.node_dbsizes().iter().sum()
    }

    /// DBSIZE of each primary, in creation order.
    pub fn node_dbsizes(&self) -> Vec<i64> {
        self.node_conns().iter_mut().map(|con| redis::cmd("DBSIZE").query(con).expect("DBSIZE")).collect()
    }

    /// DEBUG DIGEST of each primary: equal before and after means no node's data changed (as long as
    /// no slot moved in between).
    pub fn digests(&self) -> Vec<String> {
        self.node_conns()
            .iter_mut()
            .map(|con| redis::cmd("DEBUG").arg("DIGEST").query(con).expect("DEBUG DIGEST"))
            .collect()
    }

    /// Writes `n` string keys `{prefix}{i}` = `value-{prefix}{i}` (the values of
    /// [`fill_strings`](super::fill_strings)) through cluster pipelines; returns the keys.
    pub fn fill_strings(&self, prefix: &str, n: usize) -> Vec<Vec<u8>> {
        let mut con = self.conn();
        let keys: Vec<Vec<u8>> = (0..n).map(|i| format!("{prefix}{i}").into_bytes()).collect();
        for chunk in keys.chunks(FILL_CHUNK) {
            let mut p = redis::cluster::cluster_pipe();
            for k in chunk {
                p.cmd("SET").arg(k).arg(format!("value-{}", String::from_utf8_lossy(k))).ignore();
            }
            p.exec(&mut con).expect("fill strings on the cluster");
        }
        keys
    }

    /// How many slots node `i` owns (from its own CLUSTER NODES line).
    pub fn slots_of(&self, i: usize) -> usize {
        let view = slot_view(self.nodes[i].port()).unwrap_or_else(|e| panic!("{e}"));
        view.get(&self.ids[i]).map(|ranges| count_slots(ranges)).unwrap_or(0)
    }

    /// Moves `slots` slots (with their keys) from node `from` to node `to` with `redis-cli --cluster
    /// reshard`, then waits until every node agrees again.
    pub fn reshard(&self, from: usize, to: usize, slots: usize) {
        let plan = self.plan(&[(from, to, slots)]);
        if let Err(e) = plan.run(None) {
            panic!("{e}\n{}", node_logs(&self.nodes));
        }
    }

    /// Runs the reshards `moves` (`(from, to, slots)`, one after the other, each waited out as in
    /// [`reshard`](RedisCluster::reshard)) in a background thread and returns at once.
    pub fn reshard_in_background(&self, moves: &[(usize, usize, usize)]) -> Resharding {
        let plan = self.plan(moves);
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cancel);
        let started = Instant::now();
        let handle = thread::spawn(move || plan.run(Some(&flag)).map(|()| started.elapsed()));
        Resharding { handle: Some(handle), cancel }
    }

    /// Polls until the nodes agree again (see the module doc).
    pub fn wait_stable(&self) {
        if let Err(e) = wait_stable(&self.nodes(), None) {
            panic!("cluster did not settle: {e}\n{}", node_logs(&self.nodes));
        }
    }

    fn plan(&self, moves: &[(usize, usize, usize)]) -> ReshardPlan {
        for &(from, to, slots) in moves {
            assert!(from < self.nodes.len() && to < self.nodes.len() && from != to, "bad move {from}->{to}");
            assert!(slots > 0, "a reshard of 0 slots does nothing");
        }
        ReshardPlan {
            ports: self.nodes(),
            moves: moves.iter().map(|&(f, t, n)| (self.ids[f].clone(), self.ids[t].clone(), n)).collect(),
        }
    }
}

/// A reshard running in a background thread (see [`RedisCluster::reshard_in_background`]).
/// Dropping it without [`wait`](Resharding::wait) kills the running `redis-cli` and joins the thread.
pub struct Resharding {
    /// The thread; it returns how long all moves took, or what went wrong.
    handle: Option<thread::JoinHandle<Result<Duration, String>>>,
    /// Set on drop: the thread kills its `redis-cli` and stops.
    cancel: Arc<AtomicBool>,
}

impl Resharding {
    /// True once every move has finished (or failed).
    pub fn finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Waits for every move and the cluster to settle; panics with redis-cli's output if one failed.
    /// Returns how long the reshard took.
    #[track_caller]
    pub fn wait(mut self) -> Duration {
        let handle = self.handle.take().expect("not yet waited for");
        match handle.join() {
            Ok(Ok(took)) => took,
            Ok(Err(e)) => panic!("background reshard failed: {e}"),
            Err(_) => panic!("background reshard thread panicked"),
        }
    }
}

impl Drop for Resharding {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            self.cancel.store(true, Ordering::SeqCst);
            let _ = handle.join();
        }
    }
}

/// What a reshard needs, owned, so it can run on another thread.
struct ReshardPlan {
    /// Every node's port (the first is the one redis-cli talks to).
    ports: Vec<u16>,
    /// (from id, to id, slots), in order.
    moves: Vec<(String, String, usize)>,
}

impl ReshardPlan {
    fn run(&self, cancel: Option<&AtomicBool>) -> Result<(), String> {
        let entry = format!("127.0.0.1:{}", self.ports[0]);
        for (from, to, slots) in &self.moves {
            let args = [
                "--cluster",
                "reshard",
                &entry,
                "--cluster-from",
                from,
                "--cluster-to",
                to,
                "--cluster-slots",
                &slots.to_string(),
                "--cluster-yes",
            ]
            .map(String::from);
            redis_cli(&args, cancel).map_err(|e| format!("reshard of {slots} slots {from} -> {to}: {e}"))?;
            wait_stable(&self.ports, cancel)?;
        }
        Ok(())
    }
}

/// Runs `redis-cli ARGS` (stdout and stderr drained by threads: a reshard prints a line per slot) with
/// a hard time limit; killed when `cancel` is set. Err holds the reason and everything it printed.
/// Also used for clusters started elsewhere (tests/tls: `redis-cli --tls ... --cluster create`).
pub fn redis_cli(args: &[String], cancel: Option<&AtomicBool>) -> Result<String, String> {
    let mut child = Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn redis-cli (is it installed?)");
    let out = reader(child.stdout.take().unwrap());
    let err = reader(child.stderr.take().unwrap());
    let deadline = Instant::now() + REDIS_CLI_TIMEOUT;
    let mut stopped = None;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait redis-cli") {
            break Some(status);
        }
        if cancel.is_some_and(|c| c.load(Ordering::SeqCst)) {
            stopped = Some("cancelled");
        } else if Instant::now() > deadline {
            stopped = Some("timed out");
        }
        if stopped.is_some() {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let stdout = String::from_utf8_lossy(&out.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
    let show = || {
        format!("redis-cli {}\n--- stdout ---\n{}\n--- stderr ---\n{stderr}", args.join(" "), tail(&stdout))
    };
    match status {
        None => Err(format!("{} after {REDIS_CLI_TIMEOUT:?} or on request: {}", stopped.unwrap(), show())),
        Some(s) if !s.success() => Err(format!("exit {s}: {}", show())),
        // redis-cli --cluster prints [ERR] for some failures and still exits 0.
        Some(_) if stdout.contains("[ERR]") => Err(format!("[ERR] in the output: {}", show())),
        Some(_) => Ok(stdout),
    }
}

/// The last 4000 characters of a (long) redis-cli output.
fn tail(s: &str) -> &str {
    let mut start = s.len().saturating_sub(4000);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Polls every node until [`check_stable`] passes (at most [`CLUSTER_STABLE_TIMEOUT`]); Err with the
/// last reason otherwise, or when `cancel` is set.
fn wait_stable(ports: &[u16], cancel: Option<&AtomicBool>) -> Result<(), String> {
    let deadline = Instant::now() + CLUSTER_STABLE_TIMEOUT;
    loop {
        let reason = match check_stable(ports) {
            Ok(()) => return Ok(()),
            Err(reason) => reason,
        };
        if Instant::now() > deadline {
            return Err(format!("not stable after {CLUSTER_STABLE_TIMEOUT:?}: {reason}"));
        }
        if cancel.is_some_and(|c| c.load(Ordering::SeqCst)) {
            return Err(format!("cancelled while waiting for the cluster: {reason}"));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Every node says `cluster_state:ok`, `cluster_slots_ok:16384` and `cluster_known_nodes:N`, no slot
/// is open (migrating / importing), and all nodes agree on which node owns which slots.
fn check_stable(ports: &[u16]) -> Result<(), String> {
    let mut first: Option<(u16, BTreeMap<String, Vec<String>>)> = None;
    for &port in ports {
        let mut con = node_conn(port)?;
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query(&mut con)
            .map_err(|e| format!("CLUSTER INFO on {port}: {e}"))?;
        let field = |name: &str| {
            info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')).map(str::trim).unwrap_or("?")
        };
        let want = [
            ("cluster_state", "ok".to_string()),
            ("cluster_slots_ok", CLUSTER_SLOTS.to_string()),
            ("cluster_known_nodes", ports.len().to_string()),
        ];
        for (name, value) in want {
            if field(name) != value {
                return Err(format!("node {port}: {name}:{} (want {value})", field(name)));
            }
        }
        let view = slot_view(port)?;
        if view.values().flatten().any(|r| r.starts_with('[')) {
            return Err(format!("node {port} has an open slot: {view:?}"));
        }
        match &first {
            None => first = Some((port, view)),
            Some((p0, v0)) if *v0 != view => {
                return Err(format!("nodes {p0} and {port} disagree on slots: {v0:?} vs {view:?}"));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Node id -> its slot fields (`0-5460`, `[93->-id]`, ...) as one node sees the cluster.
fn slot_view(port: u16) -> Result<BTreeMap<String, Vec<String>>, String> {
    let mut con = node_conn(port)?;
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query(&mut con)
        .map_err(|e| format!("CLUSTER NODES on {port}: {e}"))?;
    Ok(nodes
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (fields[0].to_string(), fields.iter().skip(8).map(|s| s.to_string()).collect())
        })
        .collect())
}

/// Slots in fields like `0-5460` and `7000` (open-slot markers `[...]` not counted).
fn count_slots(ranges: &[String]) -> usize {
    ranges
        .iter()
        .filter(|r| !r.starts_with('['))
        .map(|r| match r.split_once('-') {
            Some((a, b)) => b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1,
            None => 1,
        })
        .sum()
}

fn node_conn(port: u16) -> Result<Connection, String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).map_err(|e| e.to_string())?;
    let con = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .map_err(|e| format!("connect to node {port}: {e}"))?;
    con.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    Ok(con)
}

/// The tail of each node's log, for failure messages.
fn node_logs(nodes: &[RedisServer]) -> String {
    nodes
        .iter()
        .map(|n| {
            let log = std::fs::read_to_string(n.log_path()).unwrap_or_default();
            format!("--- log of node {} ---\n{}", n.port(), tail(&log))
        })
        .collect::<Vec<_>>()
        .join("\n")
}
