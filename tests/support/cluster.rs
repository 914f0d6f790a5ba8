//! A real Redis Cluster for the integration tests: N primaries, optionally with replicas, each a
//! `redis-server --cluster-enabled yes` started by [`RedisServer`] in its own temp dir, on a port whose
//! cluster bus port (+10000) is free too, joined with `redis-cli --cluster create`. Startup, every
//! reshard and every failover end with a poll until each live node reports `cluster_state:ok`, all 16384
//! slots and all nodes known, every replica's link to its primary is up, no slot is open, and all live
//! nodes agree on who owns which slot, so no test sleeps for a fixed time.
//!
//! Also here: a cluster client for the tests (`redis::cluster::ClusterConnection`, which follows
//! MOVED/ASK), per-node helpers (keys, DBSIZE, DEBUG DIGEST summed or collected over the primaries),
//! fast filling through a cluster pipeline, resharding with `redis-cli --cluster reshard`, in the
//! foreground or in a background thread while a copy runs, and, for a cluster with replicas, which node
//! is a primary now and which are its replicas (INFO replication), waiting until the replicas hold all
//! the data, and stopping a primary (SIGTERM) and waiting for a replica to take over. It does not add,
//! remove or restart nodes. Every server is killed by its own `RedisServer` on drop (a stopped one is
//! already reaped); a background reshard is cancelled (its `redis-cli` killed by its own `Child`) and
//! joined on drop.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use redis::cluster::{ClusterClient, ClusterConnection};
use redis::Connection;

use super::ferry::reader;
use super::RedisServer;

/// The arguments that make a `redis-server` a cluster node; `nodes.conf` lands in its own `--dir`.
pub const CLUSTER_NODE_ARGS: [&str; 6] =
    ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"];
/// `--cluster-node-timeout` (ms) of a cluster with replicas: a primary that stops answering is flagged
/// failed after about this long and a replica takes over a second or two later. Clusters without
/// replicas keep the 5000 of [`CLUSTER_NODE_ARGS`] (they cannot fail over; a short timeout would only
/// risk a node flagged failed on a busy machine).
pub const FAILOVER_NODE_TIMEOUT_MS: &str = "1000";
/// Slots in a Redis Cluster.
pub const CLUSTER_SLOTS: usize = 16384;
/// The cluster bus listens on the client port plus this.
const BUS_PORT_OFFSET: u16 = 10_000;
/// How long the nodes may take to agree after `--cluster create`, a reshard or a failover, and the
/// replicas to catch up with their primaries.
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

/// A Redis Cluster on 127.0.0.1: N primaries, each with R replicas (R may be 0); every node killed on
/// drop. Node indices are creation order; which of them is a primary is asked
/// ([`primaries`](RedisCluster::primaries)), since a failover changes it.
pub struct RedisCluster {
    /// Every node, in the order given to `redis-cli --cluster create` (without replicas it gives node
    /// 0 the first third of the slots, and so on). A node stopped by
    /// [`kill_node`](RedisCluster::kill_node) stays here, stopped.
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
        RedisCluster::create(n, 0, &CLUSTER_NODE_ARGS)
    }

    /// `primaries` primaries (at least 3) with `replicas` replicas each (at least 1), every node with
    /// a `--cluster-node-timeout` of [`FAILOVER_NODE_TIMEOUT_MS`], so a failover takes a few seconds.
    /// Returns once every replica is linked to its primary (see [`primaries`](RedisCluster::primaries)
    /// and [`replicas_of`](RedisCluster::replicas_of) for who is who).
    pub fn with_replicas(primaries: usize, replicas: usize) -> RedisCluster {
        assert!(replicas >= 1, "a cluster with replicas needs at least 1 per primary, got {replicas}");
        let mut args = CLUSTER_NODE_ARGS;
        let timeout = args.iter().position(|a| *a == "--cluster-node-timeout").expect("node timeout arg");
        args[timeout + 1] = FAILOVER_NODE_TIMEOUT_MS;
        RedisCluster::create(primaries, replicas, &args)
    }

    /// Starts `primaries * (1 + replicas)` nodes with `node_args`, joins them with `redis-cli --cluster
    /// create --cluster-replicas REPLICAS` and waits until they agree and every replica is linked.
    fn create(primaries: usize, replicas: usize, node_args: &[&str]) -> RedisCluster {
        assert!(primaries >= 3, "redis-cli --cluster create needs at least 3 primaries, got {primaries}");
        let total = primaries * (1 + replicas);
        let nodes: Vec<RedisServer> =
            (0..total).map(|_| RedisServer::with_args_on(node_args, free_cluster_port)).collect();
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(nodes.iter().map(RedisServer::addr));
        args.extend(["--cluster-replicas".to_string(), replicas.to_string(), "--cluster-yes".to_string()]);
        if let Err(e) = redis_cli(&args, None) {
            panic!("redis-cli --cluster create failed: {e}\n{}", node_logs(&nodes));
        }
        let ports: Vec<u16> = nodes.iter().map(RedisServer::port).collect();
        let expect = Expect { known: total, replicas: Some(primaries * replicas), gone: &[] };
        if let Err(e) = wait_stable(&ports, &expect, None) {
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

    /// Every node's client port, in creation order (stopped nodes included).
    pub fn nodes(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// The indices of the nodes not stopped by [`kill_node`](RedisCluster::kill_node).
    fn live(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|&i| !self.nodes[i].is_stopped()).collect()
    }

    /// The client ports of the live nodes.
    fn live_ports(&self) -> Vec<u16> {
        self.live().into_iter().map(|i| self.nodes[i].port()).collect()
    }

    /// INFO replication of live node `i`.
    fn replication(&self, i: usize) -> String {
        replication_info(self.nodes[i].port()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The live nodes that are primaries now (INFO replication `role:master`), in creation order.
    /// Without replicas: every node.
    pub fn primaries(&self) -> Vec<usize> {
        self.live().into_iter().filter(|&i| info_field(&self.replication(i), "role") == "master").collect()
    }

    /// The live nodes that replicate node `i` now (`role:slave`, `master_port` = node `i`'s port).
    pub fn replicas_of(&self, i: usize) -> Vec<usize> {
        let port = self.nodes[i].port().to_string();
        self.live()
            .into_iter()
            .filter(|&r| {
                let info = self.replication(r);
                info_field(&info, "role") == "slave" && info_field(&info, "master_port") == port
            })
            .collect()
    }

    /// Polls until every replica has applied everything its primary had written when this was
    /// called (`slave_repl_offset` >= the primary's `master_repl_offset`, link up), so a failover
    /// afterwards loses no key: Redis replicates asynchronously, and a key a primary acknowledged but
    /// had not yet passed on would go down with it. Returns at once without replicas.
    pub fn wait_replicated(&self) {
        let deadline = Instant::now() + CLUSTER_STABLE_TIMEOUT;
        for p in self.primaries() {
            let offset: u64 = info_field(&self.replication(p), "master_repl_offset").parse().expect("offset");
            for r in self.replicas_of(p) {
                loop {
                    let info = self.replication(r);
                    let applied: u64 = info_field(&info, "slave_repl_offset").parse().unwrap_or(0);
                    if applied >= offset && info_field(&info, "master_link_status") == "up" {
                        break;
                    }
                    if Instant::now() > deadline {
                        panic!(
                            "replica {} of {} at offset {applied} (want {offset}) after {CLUSTER_STABLE_TIMEOUT:?}\n{info}",
                            self.nodes[r].port(),
                            self.nodes[p].port()
                        );
                    }
                    thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    /// Stops node `i` for good with SIGTERM ([`RedisServer::terminate`]: a primary first lets its
    /// replicas catch up, then exits) and returns once it has exited. The other nodes notice after the
    /// node timeout; see [`wait_failover`](RedisCluster::wait_failover). The stopped node is then
    /// left out of every helper that talks to the cluster, except [`slots_of`](RedisCluster::slots_of)
    /// and [`node`](RedisCluster::node)`(i).conn()`, which need it live.
    pub fn kill_node(&mut self, i: usize) {
        self.nodes[i].terminate();
    }

    /// Polls until the live nodes have replaced every stopped node: each stopped node owns no slot in
    /// any live node's view (a replica took over), and the cluster is stable again (`cluster_state:ok`,
    /// all slots served, every live replica linked, all agreeing). Returns how long that took.
    pub fn wait_failover(&self) -> Duration {
        let started = Instant::now();
        let gone: Vec<String> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_stopped())
            .map(|i| self.ids[i].clone())
            .collect();
        assert!(!gone.is_empty(), "wait_failover without a stopped node");
        let expect = Expect { known: self.nodes.len(), replicas: None, gone: &gone };
        if let Err(e) = wait_stable(&self.live_ports(), &expect, None) {
            panic!("no failover: {e}\n{}", node_logs(&self.nodes));
        }
        started.elapsed()
    }

    /// Node `i` as a server (for a plain connection to that node only).
    pub fn node(&self, i: usize) -> &RedisServer {
        &self.nodes[i]
    }

    /// Node `i`'s cluster id.
    #[allow(dead_code)] // harness API that no test calls at the moment
    pub fn node_id(&self, i: usize) -> &str {
        &self.ids[i]
    }

    /// A cluster connection (routes each command to its key's node, follows MOVED and ASK, fans
    /// KEYS / DBSIZE out to all primaries), with timeouts; seeded with the live nodes.
    pub fn conn(&self) -> ClusterConnection {
        let urls: Vec<String> = self.live().into_iter().map(|i| self.nodes[i].url()).collect();
        let client = ClusterClient::builder(urls)
            .connection_timeout(Duration::from_secs(5))
            .response_timeout(Duration::from_secs(30))
            .build()
            .expect("cluster client");
        client.get_connection().unwrap_or_else(|e| panic!("connect to cluster at {}: {e}", self.addr()))
    }

    /// One plain connection per primary now ([`primaries`](RedisCluster::primaries)), in creation
    /// order; without replicas, one per node.
    pub fn node_conns(&self) -> Vec<Connection> {
        self.primaries().into_iter().map(|i| self.nodes[i].conn()).collect()
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

    /// DBSIZE of each primary, in creation order (of [`primaries`](RedisCluster::primaries)).
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

    /// Polls until the live nodes agree again (see the module doc).
    #[allow(dead_code)] // harness API that no test calls at the moment
    pub fn wait_stable(&self) {
        let expect = Expect { known: self.nodes.len(), replicas: None, gone: &[] };
        if let Err(e) = wait_stable(&self.live_ports(), &expect, None) {
            panic!("cluster did not settle: {e}\n{}", node_logs(&self.nodes));
        }
    }

    fn plan(&self, moves: &[(usize, usize, usize)]) -> ReshardPlan {
        for &(from, to, slots) in moves {
            assert!(from < self.nodes.len() && to < self.nodes.len() && from != to, "bad move {from}->{to}");
            assert!(slots > 0, "a reshard of 0 slots does nothing");
        }
        ReshardPlan {
            ports: self.live_ports(),
            known: self.nodes.len(),
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
    /// Every live node's port (the first is the one redis-cli talks to).
    ports: Vec<u16>,
    /// `cluster_known_nodes` to wait for: every node, stopped ones included.
    known: usize,
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
            wait_stable(&self.ports, &Expect { known: self.known, replicas: None, gone: &[] }, cancel)?;
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

/// What the polled nodes must report, besides agreeing, for [`check_stable`] to pass.
struct Expect<'a> {
    /// `cluster_known_nodes` on each node: every node ever joined (a stopped node stays known, flagged
    /// `fail`).
    known: usize,
    /// How many of the polled nodes are replicas, when that is known; every replica's link to its
    /// primary must be up in any case.
    replicas: Option<usize>,
    /// Ids of stopped nodes: they must own no slot in any view (a replica took over).
    gone: &'a [String],
}

/// Polls every node in `ports` until [`check_stable`] passes (at most [`CLUSTER_STABLE_TIMEOUT`]); Err
/// with the last reason otherwise, or when `cancel` is set.
fn wait_stable(ports: &[u16], expect: &Expect, cancel: Option<&AtomicBool>) -> Result<(), String> {
    let deadline = Instant::now() + CLUSTER_STABLE_TIMEOUT;
    loop {
        let reason = match check_stable(ports, expect) {
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

/// Every node in `ports` says `cluster_state:ok`, `cluster_slots_ok:16384` and `cluster_known_nodes`
/// as expected, every replica among them has its link to its primary up (and there are as many
/// replicas as expected), no slot is open (migrating / importing), no stopped node owns a slot, and all
/// nodes agree on which node owns which slots.
fn check_stable(ports: &[u16], expect: &Expect) -> Result<(), String> {
    let mut first: Option<(u16, BTreeMap<String, Vec<String>>)> = None;
    let mut replicas = 0;
    for &port in ports {
        let mut con = node_conn(port)?;
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query(&mut con)
            .map_err(|e| format!("CLUSTER INFO on {port}: {e}"))?;
        let want = [
            ("cluster_state", "ok".to_string()),
            ("cluster_slots_ok", CLUSTER_SLOTS.to_string()),
            ("cluster_known_nodes", expect.known.to_string()),
        ];
        for (name, value) in want {
            if info_field(&info, name) != value {
                return Err(format!("node {port}: {name}:{} (want {value})", info_field(&info, name)));
            }
        }
        let replication = replication_info(port)?;
        if info_field(&replication, "role") == "slave" {
            if info_field(&replication, "master_link_status") != "up" {
                return Err(format!("replica {port}: link to its primary not up:\n{replication}"));
            }
            replicas += 1;
        }
        let view = slot_view(port)?;
        if view.values().flatten().any(|r| r.starts_with('[')) {
            return Err(format!("node {port} has an open slot: {view:?}"));
        }
        if let Some(id) = expect.gone.iter().find(|id| view.get(*id).is_some_and(|slots| !slots.is_empty())) {
            return Err(format!("node {port} still sees slots on the stopped node {id}: {view:?}"));
        }
        match &first {
            None => first = Some((port, view)),
            Some((p0, v0)) if *v0 != view => {
                return Err(format!("nodes {p0} and {port} disagree on slots: {v0:?} vs {view:?}"));
            }
            Some(_) => {}
        }
    }
    match expect.replicas {
        Some(want) if want != replicas => Err(format!("{replicas} linked replicas (want {want})")),
        _ => Ok(()),
    }
}

/// The value of `name` in an INFO-style `name:value` text, or `?`.
fn info_field<'a>(info: &'a str, name: &str) -> &'a str {
    info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')).map(str::trim).unwrap_or("?")
}

/// INFO replication of the node on `port`.
fn replication_info(port: u16) -> Result<String, String> {
    redis::cmd("INFO")
        .arg("replication")
        .query(&mut node_conn(port)?)
        .map_err(|e| format!("INFO replication on {port}: {e}"))
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
