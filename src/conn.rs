//! Connecting to a side: address, login, db, TLS, timeouts; what the server is; how its errors read.
//!
//! Each pipeline thread owns one [`Conn`], made here; no connection is ever shared between threads. A
//! `Conn` reaches one standalone server or every primary of a Redis Cluster, and sends everything in
//! rounds of per-key units ([`Conn::round`]): on a cluster each unit goes to the primary of its key's
//! slot, following MOVED and ASK. It knows how to come back after a fault: a connection that failed is
//! made again (logged in, db selected) before its next use, and a cluster's slot map is read again,
//! paced by its [`Retry`] policy. This file also turns a `RedisError` or an error reply into the
//! `error` / `message` pair of the error CSV. It knows nothing of stages.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use redis::{
    ClientTlsConfig, Cmd, ConnectionAddr, ConnectionInfo, FromRedisValue, IntoConnectionInfo, Pipeline,
    RedisConnectionInfo, RedisError, RedisResult, TlsCertificates, Value,
};

use crate::cluster;
use crate::config::{Endpoint, Role, Timeouts, Tls};

/// A failure to connect or log in, with the endpoint in its message (never the password).
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to {role} {endpoint}: {reason}")]
pub struct ConnectError {
    /// "source" or "target".
    pub role: &'static str,
    /// `host:port[/db]`.
    pub endpoint: String,
    /// What went wrong, one line.
    pub reason: String,
}

/// How hard a connection tries again after a transient failure: a connection error, a timeout, or a
/// reply saying the server is busy for now (see [`is_transient`]). The pause doubles from `base` up to
/// `cap`, with random jitter so that many threads do not hammer a recovering server in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts after the first one; 0 never retries.
    pub attempts: u32,
    /// Pause before the first retry.
    pub base: Duration,
    /// Longest pause.
    pub cap: Duration,
}

impl Retry {
    /// The default policy: 8 retries, 100 ms doubling up to 5 s (about 8 to 16 s in all).
    pub const DEFAULT: Retry =
        Retry { attempts: 8, base: Duration::from_millis(100), cap: Duration::from_secs(5) };

    /// The pause before retry number `attempt` (1-based): between half and all of `base * 2^(attempt-1)`,
    /// capped.
    pub fn pause(&self, attempt: u32) -> Duration {
        let full = self.base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(self.cap);
        full.mul_f64(0.5 + 0.5 * jitter())
    }
}

/// A number in [0, 1) that differs between threads and calls (xorshift seeded by the clock).
fn jitter() -> f64 {
    use std::cell::Cell;
    thread_local!(static STATE: Cell<u64> = Cell::new(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1
    ));
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}

/// Error replies that mean "not now" rather than "never": worth retrying after a pause. MOVED and ASK
/// are here for a cluster whose slots kept moving for longer than [`MAX_HOPS`] redirections: after the
/// pause the slot map has been reloaded.
pub fn is_transient(code: &str) -> bool {
    matches!(code, "OOM" | "LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN" | "CLUSTERDOWN" | "MOVED" | "ASK")
}

/// How many MOVED / ASK redirections one round follows for a unit before it hands the redirection back
/// to its caller as a transient error.
pub const MAX_HOPS: usize = 5;

/// How many MOVED and ASK redirections the run's connections followed, for the log at the end.
pub static REDIRECTIONS: [std::sync::atomic::AtomicU64; 2] =
    [std::sync::atomic::AtomicU64::new(0), std::sync::atomic::AtomicU64::new(0)];

/// One thread's connection to one side: a standalone server, or every primary of a Redis Cluster. It
/// is able to re-establish itself.
///
/// Everything a stage sends goes through [`Conn::round`]: units of commands about one key each, in one
/// pipeline per server. On a cluster each unit goes to the primary serving its key's slot, and MOVED
/// and ASK replies are followed there and then (up to [`MAX_HOPS`]), so that a reshard while a copy
/// runs costs a few extra round trips and nothing else; a MOVED, or a node whose connection failed,
/// also makes the whole slot map be read again (CLUSTER NODES) before the next round.
pub struct Conn {
    /// Where it goes, as the user gave it (any node, for a cluster), for reconnecting and messages.
    endpoint: Endpoint,
    /// Timeouts applied to every (re)connection.
    timeouts: Timeouts,
    /// Standalone: one link, to `endpoint`. Cluster: one per primary, the slot map's node indexes.
    links: Vec<Link>,
    /// Cluster only: for each slot, the index in `links` of the primary serving it.
    slots: Option<Vec<Option<u16>>>,
    /// Cluster only: read the slot map again before the next round (a slot moved, a node failed).
    stale: bool,
    /// The node whose connection failed last, for messages.
    failed: Option<String>,
    /// How transient failures are retried.
    retry: Retry,
}

/// A connection to one server, `None` while it is down (after an I/O error or timeout, or before the
/// first use of a node found by a redirection): it is made again before its next use.
struct Link {
    /// The server: the side's endpoint with this node's host and port.
    endpoint: Endpoint,
    /// A cluster node's id (from CLUSTER NODES); `None` for a standalone server or a node found by a
    /// redirection before the slot map was read again.
    id: Option<String>,
    /// The live connection.
    inner: Option<redis::Connection>,
}

impl Link {
    /// The connection, made first if it is down.
    fn connection(&mut self, timeouts: Timeouts) -> Result<&mut redis::Connection, RedisError> {
        if self.inner.is_none() {
            self.inner = Some(connect(&self.endpoint, timeouts)?);
            log::debug!("connected to {} {}", self.endpoint.role.name(), self.endpoint);
        }
        Ok(self.inner.as_mut().expect("just made"))
    }

    /// Makes the connection if it is down.
    fn connect_now(&mut self, timeouts: Timeouts) -> Result<(), RedisError> {
        self.connection(timeouts).map(|_| ())
    }

    /// Sends packed commands; a failure takes the connection down.
    fn send(&mut self, packed: &[u8], timeouts: Timeouts) -> Result<(), RedisError> {
        let result = self.connection(timeouts).and_then(|c| c.send_packed_command(packed));
        if result.is_err() {
            self.inner = None;
        }
        result
    }

    /// Reads one reply (an error reply as `Value::ServerError`); a failure takes the connection down.
    fn recv(&mut self) -> Result<Value, RedisError> {
        let Some(conn) = self.inner.as_mut() else {
            return Err(RedisError::from(std::io::Error::from(std::io::ErrorKind::NotConnected)));
        };
        let reply = conn.recv_response();
        if reply.is_err() {
            self.inner = None;
        }
        reply
    }
}

/// The replies of one [`Conn::round`]: for each unit, its replies in order, or nothing for a unit left
/// unanswered.
#[derive(Debug, Default)]
pub struct Replies {
    /// Every reply, unit after unit.
    values: Vec<Value>,
    /// For each unit: where its replies start in `values` and how many there are.
    spans: Vec<Option<(usize, usize)>>,
}

impl Replies {
    /// The replies of unit `i` (its position in the round's `units`), `None` when its server never
    /// answered: the connection failed first (the commands may or may not have run).
    pub fn unit(&mut self, i: usize) -> Option<&mut [Value]> {
        let (start, len) = self.spans.get(i).copied().flatten()?;
        Some(&mut self.values[start..start + len])
    }

    /// Unit `i`'s replies taken out; `None` when it was unanswered.
    pub fn take_unit(&mut self, i: usize) -> Option<Vec<Value>> {
        Some(self.unit(i)?.iter_mut().map(std::mem::take).collect())
    }

    /// Unit `i`'s replies taken out as exactly `K` values; `None` when it was unanswered or had
    /// another number of replies.
    pub fn take<const K: usize>(&mut self, i: usize) -> Option<[Value; K]> {
        let unit = self.unit(i).filter(|u| u.len() == K)?;
        Some(std::array::from_fn(|j| std::mem::take(&mut unit[j])))
    }
}

impl Replies {
    /// Every reply, unit after unit (for a round where every unit was answered).
    pub fn into_values(mut self) -> Vec<Value> {
        let mut out = Vec::with_capacity(self.values.len());
        for i in 0..self.spans.len() {
            if let Some(unit) = self.unit(i) {
                out.extend(unit.iter_mut().map(std::mem::take));
            }
        }
        out
    }
}

impl Conn {
    /// Connects to a standalone server: logs in, selects the db and sets the read and write timeouts.
    pub fn open(endpoint: &Endpoint, timeouts: Timeouts) -> Result<Conn, ConnectError> {
        let inner = connect(endpoint, timeouts).map_err(|e| connect_error(endpoint, &e))?;
        Ok(Conn {
            endpoint: endpoint.clone(),
            timeouts,
            links: vec![Link { endpoint: endpoint.clone(), id: None, inner: Some(inner) }],
            slots: None,
            stale: false,
            failed: None,
            retry: Retry::DEFAULT,
        })
    }

    /// Connects to every primary of the cluster `endpoint` belongs to (read from its CLUSTER NODES).
    pub fn open_cluster(endpoint: &Endpoint, timeouts: Timeouts) -> Result<Conn, ConnectError> {
        let mut conn = Conn::open(endpoint, timeouts)?;
        conn.slots = Some(Vec::new());
        conn.refresh()?;
        for link in &mut conn.links {
            link.connect_now(timeouts).map_err(|e| connect_error(&link.endpoint, &e))?;
        }
        Ok(conn)
    }

    /// The same connection with another retry policy.
    pub fn with_retry(mut self, retry: Retry) -> Conn {
        self.retry = retry;
        self
    }

    /// This connection's retry policy.
    pub fn retry(&self) -> Retry {
        self.retry
    }

    /// Whether this is a connection to a cluster.
    pub fn is_cluster(&self) -> bool {
        self.slots.is_some()
    }

    /// The primaries of a cluster, as endpoints (with this side's login and TLS); a standalone server's
    /// list is its own endpoint.
    pub fn primaries(&self) -> Vec<Endpoint> {
        self.links.iter().map(|l| l.endpoint.clone()).collect()
    }

    /// Makes the connection usable, one attempt: a standalone server's connection is made again if it
    /// is down (logging in and selecting the db again); a cluster's slot map is read again if a slot
    /// moved or a node failed. Callers pace their attempts with [`Retry::pause`].
    pub fn ensure(&mut self) -> Result<(), ConnectError> {
        if self.slots.is_some() {
            return if self.stale { self.refresh().map(|_| ()) } else { Ok(()) };
        }
        let timeouts = self.timeouts;
        let link = &mut self.links[0];
        if link.inner.is_none() {
            link.connect_now(timeouts).map_err(|e| connect_error(&link.endpoint, &e))?;
            log::info!("reconnected to {} {}", link.endpoint.role.name(), link.endpoint);
        }
        Ok(())
    }

    /// Takes the connection down and makes it again, trying with the retry policy's pauses until it
    /// works or the attempts are used up.
    pub fn reconnect(&mut self) -> Result<(), ConnectError> {
        for link in &mut self.links {
            link.inner = None;
        }
        self.stale = self.slots.is_some();
        let mut attempt = 0;
        loop {
            match self.ensure() {
                Ok(()) => return Ok(()),
                Err(e) if attempt >= self.retry.attempts => return Err(e),
                Err(_) => {
                    attempt += 1;
                    std::thread::sleep(self.retry.pause(attempt));
                }
            }
        }
    }

    /// Reads the cluster's slot map again, from the first node that answers (the seed last), and
    /// keeps the connections to the primaries that are still primaries. Returns how many slots are
    /// being migrated.
    fn refresh(&mut self) -> Result<usize, ConnectError> {
        let mut seed = Link { endpoint: self.endpoint.clone(), id: None, inner: None };
        let mut last = None;
        let mut topology = None;
        for link in self.links.iter_mut().chain(std::iter::once(&mut seed)) {
            let nodes = link
                .connection(self.timeouts)
                .and_then(|c| redis::cmd("CLUSTER").arg("NODES").query::<String>(c));
            match nodes.map(|text| cluster::Topology::parse(&text, &self.endpoint.host)) {
                Ok(Ok(t)) => {
                    topology = Some(t);
                    break;
                }
                Ok(Err(why)) => last = Some(why),
                Err(e) => {
                    link.inner = None;
                    last = Some(describe(&e));
                }
            }
        }
        if let Some(t) = topology.as_ref().filter(|t| t.uncovered() > 0) {
            log::warn!(
                "{} {}: {} slots are served by no primary",
                self.endpoint.role.name(),
                self.endpoint,
                t.uncovered()
            );
        }
        let Some(topology) = topology else {
            return Err(ConnectError {
                role: self.endpoint.role.name(),
                endpoint: self.endpoint.to_string(),
                reason: format!("cannot read the cluster's slot map: {}", last.unwrap_or_default()),
            });
        };
        let mut old = std::mem::take(&mut self.links);
        self.links = topology
            .primaries
            .iter()
            .map(|node| {
                let kept =
                    old.iter_mut().find(|l| l.endpoint.host == node.host && l.endpoint.port == node.port);
                Link {
                    endpoint: Endpoint { host: node.host.clone(), port: node.port, ..self.endpoint.clone() },
                    id: Some(node.id.clone()),
                    inner: kept.and_then(|l| l.inner.take()),
                }
            })
            .collect();
        self.slots = Some(topology.slots);
        self.stale = false;
        Ok(topology.migrating)
    }

    /// A cluster's slot map read afresh: for each slot, the address of the primary serving it; and
    /// how many slots are being migrated.
    pub fn slot_owners(&mut self) -> Result<(Vec<Option<String>>, usize), ConnectError> {
        let migrating = self.refresh()?;
        let slots = self.slots.as_deref().unwrap_or_default();
        let owners =
            slots.iter().map(|s| s.map(|i| self.links[usize::from(i)].endpoint.to_string())).collect();
        Ok((owners, migrating))
    }

    /// The index of the link to `host:port`, added (unconnected) if it is new.
    fn link_to(&mut self, host: &str, port: u16) -> usize {
        if let Some(i) = self.links.iter().position(|l| l.endpoint.host == host && l.endpoint.port == port) {
            return i;
        }
        let endpoint = Endpoint { host: host.to_string(), port, ..self.endpoint.clone() };
        self.links.push(Link { endpoint, id: None, inner: None });
        self.links.len() - 1
    }

    /// The link a unit about `key` goes to: the slot's primary on a cluster (the first node for a
    /// unit without a key, or a slot no one serves: it answers CLUSTERDOWN or MOVED).
    fn link_for(&self, key: Option<&[u8]>) -> usize {
        match (&self.slots, key) {
            (Some(slots), Some(key)) => {
                slots.get(usize::from(cluster::slot(key))).copied().flatten().map_or(0, usize::from)
            }
            _ => 0,
        }
    }

    /// Sends one round of `units`: unit `u` is the commands `build(pipe, u)` appends, all about the key
    /// `key(u)` (`None`: about no key). Each server gets its units in one pipeline; a cluster's units
    /// go to the primaries serving their keys, and MOVED / ASK replies are followed (ASKING before each
    /// command of the unit, or before its MULTI). Returns each unit's replies (by its position in
    /// `units`; error replies as `Value::ServerError`), and the first connection error met: the units
    /// of a server whose connection failed are left unanswered.
    pub fn round<'k>(
        &mut self,
        units: &[usize],
        key: impl Fn(usize) -> Option<&'k [u8]>,
        build: impl Fn(&mut Pipeline, usize),
    ) -> (Replies, Option<RedisError>) {
        let mut replies = Replies { values: Vec::new(), spans: vec![None; units.len()] };
        let mut error = None;
        // (position in `units`, the node an ASK sent it to)
        let mut todo: Vec<(usize, Option<usize>)> = (0..units.len()).map(|p| (p, None)).collect();
        for hop in 0..=MAX_HOPS {
            if todo.is_empty() {
                break;
            }
            let mut groups: Vec<Vec<(usize, bool)>> = Vec::new();
            for (p, ask) in todo.drain(..) {
                let link = ask.unwrap_or_else(|| self.link_for(key(units[p])));
                if groups.len() <= link {
                    groups.resize_with(link + 1, Vec::new);
                }
                groups[link].push((p, ask.is_some()));
            }
            // Every server gets its pipeline before any reply is read: the servers work side by side.
            let mut sent = Vec::with_capacity(groups.len());
            for (link, group) in groups.into_iter().enumerate().filter(|(_, g)| !g.is_empty()) {
                let mut pipe = redis::pipe();
                let mut layout = Vec::with_capacity(group.len());
                for (p, asking) in group {
                    let before = pipe.len();
                    let mask = if asking {
                        Some(with_asking(&mut pipe, |scratch| build(scratch, units[p])))
                    } else {
                        build(&mut pipe, units[p]);
                        None
                    };
                    layout.push((p, pipe.len() - before, mask));
                }
                match self.links[link].send(&pipe.get_packed_pipeline(), self.timeouts) {
                    Ok(()) => sent.push((link, layout)),
                    Err(e) => {
                        self.stale = self.slots.is_some();
                        self.failed = Some(self.links[link].endpoint.to_string());
                        error.get_or_insert(e);
                    }
                }
            }
            for (link, layout) in sent {
                for (p, count, mask) in layout {
                    let start = replies.values.len();
                    let mut lost = None;
                    for _ in 0..count {
                        match self.links[link].recv() {
                            Ok(value) => replies.values.push(value),
                            Err(e) => {
                                lost = Some(e);
                                break;
                            }
                        }
                    }
                    if let Some(e) = lost {
                        // This unit and the rest of this server's units stay unanswered.
                        replies.values.truncate(start);
                        self.stale = self.slots.is_some();
                        self.failed = Some(self.links[link].endpoint.to_string());
                        error.get_or_insert(e);
                        break;
                    }
                    if let Some(mask) = mask {
                        let asked: Vec<Value> = replies
                            .values
                            .drain(start..)
                            .zip(mask)
                            .filter_map(|(v, k)| k.then_some(v))
                            .collect();
                        replies.values.extend(asked);
                    }
                    if hop < MAX_HOPS {
                        if let Some(to) = self.redirection(&replies.values[start..]) {
                            replies.values.truncate(start);
                            todo.push((p, to));
                            continue;
                        }
                    }
                    replies.spans[p] = Some((start, replies.values.len() - start));
                }
            }
        }
        (replies, error)
    }

    /// The first MOVED or ASK among a unit's replies, on a cluster: a MOVED updates the slot map (and
    /// asks for a full reload before the next round) and sends the unit to the slot's new primary
    /// (`Some(None)`); an ASK sends it, once, to the node named (`Some(Some(link))`).
    fn redirection(&mut self, unit: &[Value]) -> Option<Option<usize>> {
        self.slots.as_ref()?;
        let (moved, details) = unit.iter().find_map(|v| match v {
            Value::ServerError(e) if matches!(e.code(), "MOVED" | "ASK") => {
                Some((e.code() == "MOVED", e.details().unwrap_or("").to_string()))
            }
            _ => None,
        })?;
        let (slot, host, port) = cluster::redirect_target(&details, &self.endpoint.host)?;
        REDIRECTIONS[usize::from(!moved)].fetch_add(1, Ordering::Relaxed);
        let link = self.link_to(&host, port);
        if !moved {
            return Some(Some(link));
        }
        let slots = self.slots.as_mut().expect("checked");
        if let Some(entry) = slots.get_mut(usize::from(slot)) {
            *entry = u16::try_from(link).ok();
        }
        self.stale = true;
        Some(None)
    }

    /// Runs one command, retrying connection errors and transient error replies with the retry
    /// policy. Stops retrying when `give_up` says so (the run is aborting). On a cluster the command
    /// goes to the node serving its first argument (the key, for every keyed command redis-ferry sends
    /// this way), or to any node when it has none.
    pub fn call<T: FromRedisValue>(&mut self, cmd: &Cmd, give_up: impl Fn() -> bool) -> RedisResult<T> {
        self.call_routed(first_arg(cmd).as_deref(), cmd, give_up)
    }

    /// [`Conn::call`] sent, on a cluster, to the node serving `key` (any node for `None`).
    pub fn call_routed<T: FromRedisValue>(
        &mut self,
        key: Option<&[u8]>,
        cmd: &Cmd,
        give_up: impl Fn() -> bool,
    ) -> RedisResult<T> {
        let mut attempt = 0;
        loop {
            let result = match self.ensure() {
                Ok(()) => {
                    let (mut replies, error) = self.round(
                        &[0],
                        |_| key,
                        |pipe, _| {
                            pipe.add_command(cmd.clone());
                        },
                    );
                    match replies.take::<1>(0) {
                        Some([value]) => value
                            .extract_error()
                            .and_then(|v| T::from_redis_value(v).map_err(RedisError::from)),
                        None => Err(error.unwrap_or_else(|| {
                            RedisError::from(std::io::Error::from(std::io::ErrorKind::UnexpectedEof))
                        })),
                    }
                }
                Err(e) => Err(RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    e.to_string(),
                ))),
            };
            let err = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let transient = is_connection_error(&err) || err.code().is_some_and(is_transient);
            if !transient || attempt >= self.retry.attempts || give_up() {
                return Err(err);
            }
            attempt += 1;
            log::warn!(
                "{} {}: {}; retry {attempt} of {}",
                self.endpoint.role.name(),
                self.endpoint,
                one_line(&describe(&err)),
                self.retry.attempts
            );
            std::thread::sleep(self.retry.pause(attempt));
        }
    }

    /// Sends one round of units (see [`Conn::round`]) and returns every unit's replies, or the error
    /// of a connection that failed on the way: for callers that try a whole batch again themselves.
    pub fn query<'k>(
        &mut self,
        n: usize,
        key: impl Fn(usize) -> Option<&'k [u8]>,
        build: impl Fn(&mut Pipeline, usize),
    ) -> RedisResult<Replies> {
        self.ensure().map_err(|e| {
            RedisError::from(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, e.to_string()))
        })?;
        let units: Vec<usize> = (0..n).collect();
        match self.round(&units, key, build) {
            (_, Some(e)) => Err(e),
            (replies, None) => Ok(replies),
        }
    }

    /// The endpoint this connection goes to (the one the user gave, for a cluster).
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Where the last connection failure happened, for messages: `source 10.0.0.5:6379`, or for a
    /// cluster `target node 10.1.0.12:7001`.
    pub fn failed_at(&self) -> String {
        let role = self.endpoint.role.name();
        match (&self.slots, &self.failed) {
            (Some(_), Some(node)) => format!("{role} node {node}"),
            _ => format!("{role} {}", self.endpoint),
        }
    }

    /// Reads what redis-ferry needs to know about the server (INFO, its default sections: one section
    /// name per call is all a server before 7.0 takes, and this reads several); on a cluster, the first
    /// primary's.
    pub fn server_info(&mut self) -> Result<ServerInfo, RedisError> {
        let text: String = self.call(&redis::cmd("INFO"), || true)?;
        Ok(ServerInfo::parse(&text))
    }

    /// Runs `cmd` once on every server this connection reaches (every primary of a cluster), in the
    /// order of [`Conn::primaries`]; no retry.
    pub fn on_each<T: FromRedisValue>(&mut self, cmd: &Cmd) -> Result<Vec<T>, RedisError> {
        let timeouts = self.timeouts;
        let mut out = Vec::with_capacity(self.links.len());
        for link in &mut self.links {
            let reply = link.connection(timeouts).and_then(|c| cmd.query::<T>(c));
            if reply.as_ref().is_err_and(is_connection_error) {
                link.inner = None;
            }
            out.push(reply?);
        }
        Ok(out)
    }

    /// The ids of a cluster's primaries (empty for a standalone server).
    pub fn node_ids(&self) -> Vec<String> {
        self.links.iter().filter_map(|l| l.id.clone()).collect()
    }
}

/// Appends the commands `build` makes to `pipe` with an ASKING before each one (before a MULTI, and
/// not inside the transaction: the ASKING flag lasts until EXEC). Returns, for each command appended,
/// whether its reply is one the caller asked for (false for the ASKINGs).
fn with_asking(pipe: &mut Pipeline, build: impl FnOnce(&mut Pipeline)) -> Vec<bool> {
    let mut scratch = redis::pipe();
    build(&mut scratch);
    let mut keep = Vec::with_capacity(2 * scratch.len());
    let mut in_transaction = false;
    for cmd in scratch.cmd_iter() {
        let name = match cmd.args_iter().next() {
            Some(redis::Arg::Simple(name)) => name.to_ascii_uppercase(),
            _ => Vec::new(),
        };
        if !in_transaction {
            pipe.cmd("ASKING");
            keep.push(false);
        }
        pipe.add_command(cmd.clone());
        keep.push(true);
        match &name[..] {
            b"MULTI" => in_transaction = true,
            b"EXEC" | b"DISCARD" => in_transaction = false,
            _ => {}
        }
    }
    keep
}

/// A command's first argument: the key, for the keyed commands redis-ferry sends without naming the key
/// apart (see [`Conn::call`]).
pub fn first_arg(cmd: &Cmd) -> Option<Vec<u8>> {
    match cmd.args_iter().nth(1)? {
        redis::Arg::Simple(bytes) => Some(bytes.to_vec()),
        _ => None,
    }
}

/// A connection failure as the one-line "cannot connect" error.
fn connect_error(endpoint: &Endpoint, e: &RedisError) -> ConnectError {
    ConnectError {
        role: endpoint.role.name(),
        endpoint: endpoint.to_string(),
        reason: one_line(&connect_reason(e, endpoint)),
    }
}

fn connect(endpoint: &Endpoint, timeouts: Timeouts) -> Result<redis::Connection, RedisError> {
    let mut redis_info = RedisConnectionInfo::default().set_db(endpoint.db);
    if let Some(user) = &endpoint.username {
        redis_info = redis_info.set_username(user);
    }
    if let Some(password) = &endpoint.password {
        redis_info = redis_info.set_password(password);
    }
    let addr = match &endpoint.tls {
        None => ConnectionAddr::Tcp(endpoint.host.clone(), endpoint.port),
        Some(tls) => {
            tls_setup(endpoint, tls);
            ConnectionAddr::TcpTls {
                host: endpoint.host.clone(),
                port: endpoint.port,
                insecure: tls.insecure,
                tls_params: None,
            }
        }
    };
    let info: ConnectionInfo = addr.into_connection_info()?.set_redis_settings(redis_info);
    let client = match &endpoint.tls {
        Some(tls) if tls.ca.is_some() || tls.client.is_some() => redis::Client::build_with_tls(
            info,
            TlsCertificates {
                client_tls: tls
                    .client
                    .as_ref()
                    .map(|c| ClientTlsConfig { client_cert: c.cert.clone(), client_key: c.key.clone() }),
                root_cert: tls.ca.clone(),
            },
        )?,
        // System roots (or no verification at all with `insecure`).
        _ => redis::Client::open(info)?,
    };
    let conn = client.get_connection_with_timeout(timeouts.connect)?;
    conn.set_read_timeout(Some(timeouts.io))?;
    conn.set_write_timeout(Some(timeouts.io))?;
    Ok(conn)
}

/// Before a TLS connection: once per process, makes ring rustls' crypto provider (chosen explicitly, so
/// that another provider compiled in by some dependency can never leave rustls unable to pick one); once
/// per side, warns that `--<role>-tls-insecure` turns verification off.
fn tls_setup(endpoint: &Endpoint, tls: &Tls) {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        // An error only means a provider is installed already, which is as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    static WARNED: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];
    let side = match endpoint.role {
        Role::Source => 0,
        Role::Target => 1,
    };
    if tls.insecure && !WARNED[side].swap(true, Ordering::Relaxed) {
        let role = endpoint.role.name();
        log::warn!(
            "--{role}-tls-insecure: the certificate of {role} {endpoint} is not verified; anyone on the network \
             path could read or change what is sent"
        );
    }
}

/// Why a connection could not be made, for the one-line "cannot connect" message: TLS failures in words
/// with what to do about them, the rest as [`describe`] puts them.
fn connect_reason(err: &RedisError, endpoint: &Endpoint) -> String {
    let Some(tls) = &endpoint.tls else {
        // A TLS-only port hangs up on a plain client.
        use std::io::ErrorKind as Io;
        if matches!(io_kind(err), Some(Io::ConnectionReset | Io::UnexpectedEof | Io::BrokenPipe)) {
            return "the server hung up at once (if it only accepts TLS, use rediss://)".to_string();
        }
        return explain(err, endpoint);
    };
    let Some(e) = rustls_error(err) else {
        // The connect timeout covers the TCP connect (TimedOut) and then the handshake (WouldBlock: a
        // read timed out): a plain Redis reading a ClientHello waits for the end of a command line forever.
        if io_kind(err) == Some(std::io::ErrorKind::WouldBlock) {
            return "TLS: no answer to the TLS handshake (if it is a plain Redis port, use redis://)"
                .to_string();
        }
        return explain(err, endpoint);
    };
    use rustls::{AlertDescription as Alert, CertificateError as Cert, Error as E};
    let role = endpoint.role.name();
    let why = match e {
        E::InvalidCertificate(Cert::UnknownIssuer) if tls.ca.is_some() => format!(
            "certificate verify failed (unknown issuer): the server's certificate is not signed by the CA in \
             --{role}-tls-ca"
        ),
        E::InvalidCertificate(Cert::UnknownIssuer) => format!(
            "certificate verify failed (unknown issuer): the server's certificate is not signed by a CA this \
             system trusts; give its CA with --{role}-tls-ca FILE"
        ),
        E::InvalidCertificate(Cert::NotValidForNameContext { presented, .. }) => format!(
            "certificate verify failed: it is for {}, not {}; connect by a name it lists",
            presented.iter().map(|name| bare_name(name)).collect::<Vec<_>>().join(", "),
            endpoint.host
        ),
        E::InvalidCertificate(Cert::NotValidForName) => {
            format!("certificate verify failed: it is not valid for {}", endpoint.host)
        }
        E::InvalidCertificate(Cert::Expired | Cert::ExpiredContext { .. }) => {
            "certificate verify failed (certificate expired)".to_string()
        }
        E::InvalidCertificate(Cert::NotValidYet | Cert::NotValidYetContext { .. }) => {
            "certificate verify failed (not valid yet: check this machine's clock)".to_string()
        }
        E::InvalidCertificate(_) => format!("certificate verify failed ({e})"),
        E::AlertReceived(Alert::CertificateRequired) => format!(
            "the server requires a client certificate; give one with --{role}-tls-cert and --{role}-tls-key"
        ),
        E::AlertReceived(Alert::UnknownCA) if tls.client.is_some() => format!(
            "the server refused our client certificate (--{role}-tls-cert): it does not trust the CA that signed it"
        ),
        E::AlertReceived(Alert::CertificateExpired) if tls.client.is_some() => {
            format!("the server refused our client certificate (--{role}-tls-cert): it has expired")
        }
        E::AlertReceived(
            Alert::BadCertificate
            | Alert::CertificateUnknown
            | Alert::UnsupportedCertificate
            | Alert::CertificateRevoked
            | Alert::AccessDenied,
        ) if tls.client.is_some() => format!("the server refused our client certificate (--{role}-tls-cert)"),
        E::AlertReceived(Alert::HandshakeFailure) if tls.client.is_none() => format!(
            "the server refused the handshake; if it requires a client certificate, give one with \
             --{role}-tls-cert and --{role}-tls-key"
        ),
        E::InvalidMessage(_) | E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
            "the server does not speak TLS on this port (if it is a plain Redis port, use redis://)".to_string()
        }
        other => other.to_string(),
    };
    format!("TLS: {why}")
}

/// `DnsName("redis.example")` (how webpki lists the names a certificate is for) as `redis.example`.
fn bare_name(presented: &str) -> &str {
    match presented.split_once('(') {
        Some((_, rest)) => rest.strip_suffix(')').unwrap_or(rest).trim_matches('"'),
        None => presented,
    }
}

/// The kind of the `io::Error` inside a connection error, if there is one.
fn io_kind(err: &RedisError) -> Option<std::io::ErrorKind> {
    let e: &(dyn std::error::Error + 'static) = std::error::Error::source(err)?;
    let e = match e.downcast_ref::<Arc<dyn std::error::Error + Send + Sync>>() {
        Some(arc) => &**arc,
        None => e,
    };
    e.downcast_ref::<std::io::Error>().map(|io| io.kind())
}

/// The rustls error somewhere inside a connection error (redis wraps it in an `io::Error` inside an `Arc`).
fn rustls_error(err: &RedisError) -> Option<&rustls::Error> {
    type Dyn = dyn std::error::Error + 'static;
    let mut next: Option<&Dyn> = Some(err);
    while let Some(mut e) = next {
        if let Some(arc) = e.downcast_ref::<Arc<dyn std::error::Error + Send + Sync>>() {
            e = &**arc;
        }
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(found) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(found);
        }
        next = e.source();
    }
    None
}

/// Facts about a server read from INFO.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerInfo {
    /// `redis_version` as (major, minor, patch); (0, 0, 0) when absent.
    pub version: (u32, u32, u32),
    /// `cluster_enabled:1`.
    pub cluster: bool,
    /// `run_id`: changes with every start of the server (and with it the order SCAN cursors follow).
    pub run_id: String,
    /// `role:slave`: a replica, of `master_host:master_port`.
    pub replica_of: Option<String>,
    /// `slave_read_only:1`: a replica that refuses writes.
    pub read_only: bool,
    /// `maxmemory` in bytes; 0 is no limit.
    pub maxmemory: u64,
    /// `maxmemory_policy` (`noeviction`, `allkeys-lru`, ...).
    pub policy: String,
    /// `used_memory` in bytes.
    pub used_memory: u64,
    /// `used_memory_dataset`: the memory of the keys and values, in bytes.
    pub dataset: u64,
    /// `evicted_keys`: keys evicted since the server started (or its stats were reset).
    pub evicted_keys: u64,
}

impl ServerInfo {
    /// Parses the text of INFO.
    pub fn parse(text: &str) -> ServerInfo {
        let mut info = ServerInfo::default();
        let (mut master_host, mut master_port) = (None, None);
        let number = |v: &str| v.trim().parse::<u64>().unwrap_or(0);
        for line in text.lines() {
            let Some((name, v)) = line.split_once(':') else { continue };
            let v = v.trim();
            match name {
                "redis_version" => {
                    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
                    info.version =
                        (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0));
                }
                "cluster_enabled" => info.cluster = v == "1",
                "run_id" => info.run_id = v.to_string(),
                "role" if v == "slave" => info.replica_of = Some(String::new()),
                "master_host" => master_host = Some(v.to_string()),
                "master_port" => master_port = Some(v.to_string()),
                "slave_read_only" | "replica_read_only" => info.read_only = v == "1",
                "maxmemory" => info.maxmemory = number(v),
                "maxmemory_policy" => info.policy = v.to_string(),
                "used_memory" => info.used_memory = number(v),
                "used_memory_dataset" => info.dataset = number(v),
                "evicted_keys" => info.evicted_keys = number(v),
                _ => {}
            }
        }
        if let (Some(primary), Some(host), Some(port)) = (info.replica_of.as_mut(), master_host, master_port)
        {
            *primary = format!("{host}:{port}");
        }
        info
    }

    /// PEXPIRETIME exists from Redis 7.0 on.
    pub fn has_pexpiretime(&self) -> bool {
        self.version >= (7, 0, 0)
    }

    /// The server evicts keys when it is full: a memory limit and a policy other than `noeviction`.
    pub fn evicts(&self) -> bool {
        self.maxmemory > 0 && !self.policy.is_empty() && self.policy != "noeviction"
    }
}

/// The CSV `error` column and `message` for a failure: the server's error code (`NOPERM`, `OOM`, ...)
/// or `IO`, `TIMEOUT`, `PROTOCOL` for failures that are not the server's answer. The message never
/// repeats the code: messages show as `CODE message`.
pub fn classify(err: &RedisError) -> (String, String) {
    let code = if err.is_timeout() {
        "TIMEOUT".to_string()
    } else if err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() {
        "IO".to_string()
    } else if let Some(code) = err.code() {
        code.to_string()
    } else {
        "PROTOCOL".to_string()
    };
    (code, one_line(&describe(err)))
}

/// The `error` / `message` pair for an error reply inside a pipeline's results.
pub fn classify_reply(err: &redis::ServerError) -> (String, String) {
    let code = err.code().to_string();
    let message = err.details().unwrap_or(&code).to_string();
    (code, one_line(&message))
}

/// True when the error means the connection itself is unusable (reconnect), rather than one reply
/// being an error.
pub fn is_connection_error(err: &RedisError) -> bool {
    err.is_io_error() || err.is_timeout() || err.is_connection_dropped() || err.is_connection_refusal()
}

/// What went wrong, in words, without the error code (see [`classify`]).
fn describe(err: &RedisError) -> String {
    if err.is_connection_refusal() {
        return "connection refused (is the server running and the port right?)".into();
    }
    if err.is_timeout() {
        return "timed out".into();
    }
    if err.kind() == redis::ErrorKind::AuthenticationFailed || err.code() == Some("WRONGPASS") {
        return "authentication failed (check the user name and password)".into();
    }
    if matches!(err.kind(), redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType)
        && err.code().is_none()
    {
        return "it does not speak the Redis protocol (is this the port of a Redis server?)".into();
    }
    match (err.code(), err.detail()) {
        (Some(_), Some(detail)) => detail.to_string(),
        _ => err.to_string(),
    }
}

/// [`describe`] for a failure at connecting or at the first command, where the side is known: a
/// server that wants a password says how to give one.
pub fn explain(err: &RedisError, endpoint: &Endpoint) -> String {
    if err.code() == Some("NOAUTH") {
        return format!(
            "it requires a password: give it in the URL (redis://USER:PASSWORD@host:port, or \
             redis://:PASSWORD@host:port for the default user) or in {}",
            endpoint.role.password_var()
        );
    }
    describe(err)
}

/// Collapses any line breaks so a message is one CSV cell / log line.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_info() {
        let info = ServerInfo::parse(
            "# Server\r\nredis_version:7.0.15\r\nrun_id:ab12\r\n# Cluster\r\ncluster_enabled:0\r\n",
        );
        assert_eq!(info.run_id, "ab12");
        assert_eq!(info.version, (7, 0, 15));
        assert!(!info.cluster);
        assert!(info.has_pexpiretime());
        let info = ServerInfo::parse("redis_version:6.2.1\ncluster_enabled:1\n");
        assert!(info.cluster);
        assert!(!info.has_pexpiretime());
    }

    #[test]
    fn retry_pauses_grow_with_jitter_and_a_cap() {
        let r = Retry { attempts: 10, base: Duration::from_millis(100), cap: Duration::from_secs(1) };
        for _ in 0..50 {
            let p1 = r.pause(1);
            assert!(p1 >= Duration::from_millis(50) && p1 <= Duration::from_millis(100), "{p1:?}");
            let p3 = r.pause(3);
            assert!(p3 >= Duration::from_millis(200) && p3 <= Duration::from_millis(400), "{p3:?}");
            assert!(r.pause(30) <= Duration::from_secs(1));
        }
        assert!(is_transient("OOM") && is_transient("LOADING") && !is_transient("NOPERM"));
    }

    #[test]
    fn certificate_names_read_bare() {
        assert_eq!(bare_name("DnsName(\"redis.example\")"), "redis.example");
        assert_eq!(bare_name("IpAddress(10.0.0.1)"), "10.0.0.1");
        assert_eq!(bare_name("plain"), "plain");
    }

    #[test]
    fn asking_goes_before_each_command_and_once_before_a_transaction() {
        let mut pipe = redis::pipe();
        let keep = with_asking(&mut pipe, |p| {
            p.cmd("GET").arg("k").cmd("MULTI").cmd("SET").arg("k").arg("v").cmd("EXEC").cmd("PTTL").arg("k");
        });
        let names: Vec<String> = pipe
            .cmd_iter()
            .map(|c| match c.args_iter().next() {
                Some(redis::Arg::Simple(name)) => String::from_utf8_lossy(name).into_owned(),
                _ => String::new(),
            })
            .collect();
        assert_eq!(names, ["ASKING", "GET", "ASKING", "MULTI", "SET", "EXEC", "ASKING", "PTTL"]);
        assert_eq!(keep, [false, true, false, true, true, true, false, true]);
    }

    #[test]
    fn replies_are_taken_unit_by_unit() {
        let mut r = Replies {
            values: vec![Value::Int(1), Value::Int(2), Value::Okay, Value::Int(3)],
            spans: vec![Some((3, 1)), None, Some((0, 2))],
        };
        assert_eq!(r.take::<2>(2), Some([Value::Int(1), Value::Int(2)]));
        assert!(r.take::<2>(0).is_none(), "unit 0 has one reply");
        assert!(r.unit(1).is_none());
        let r = Replies { values: vec![Value::Int(1), Value::Okay], spans: vec![Some((1, 1)), Some((0, 1))] };
        assert_eq!(r.into_values(), [Value::Okay, Value::Int(1)]);
    }

    #[test]
    fn messages_are_one_line() {
        assert_eq!(one_line("a\nb\r\n  c"), "a b c");
    }
}
