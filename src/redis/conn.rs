//! The routed connection: each pipeline thread owns one [`Conn`]; no connection is ever shared between
//! threads. A `Conn` reaches one standalone server or every primary of a Redis Cluster, and sends
//! everything in rounds of per-key units ([`Conn::round`]): on a cluster each unit goes to the primary
//! of its key's slot, following MOVED and ASK. It knows how to come back after a fault: a connection
//! that failed is made again (logged in, db selected) before its next use, and a cluster's slot map is
//! read again, paced by its [`Retry`] policy. Making one connection is `connect.rs`'s; one server's link,
//! and which replica it reads with `--read-from replica`, `link.rs`'s; what replies and errors mean is
//! `reply.rs`'s. It knows nothing of stages.

use std::sync::atomic::Ordering;

use redis::{Cmd, FromRedisValue, RedisError, RedisResult, Value};

use super::cluster;
use super::connect::{connect, connect_error, ConnectError};
use super::endpoint::{Endpoint, Reads, Retry, Timeouts};
use super::link::{replica_link, warn_once, Link};
use super::pipe::Pipe;
use super::replies::Replies;
use super::reply::{describe, is_connection_error, is_transient, one_line};
use super::server::ServerInfo;
use super::slots::SlotSet;

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
    /// One packed pipeline per server of a round, kept for the next round (their memory is reused).
    pipes: Vec<Pipe>,
}

impl Conn {
    /// Connects to a standalone server: logs in, selects the db and sets the read and write timeouts.
    /// With `--read-from replica` ([`Reads::Replica`]) a primary's first online replica (by its INFO)
    /// is read instead, or the server itself when it is a replica or a cluster node (a cluster's
    /// replicas are picked per slot by [`Conn::open_cluster`]).
    pub fn open(endpoint: &Endpoint, timeouts: Timeouts) -> Result<Conn, ConnectError> {
        let inner = connect(endpoint, timeouts).map_err(|e| connect_error(endpoint, &e))?;
        let mut link = Link { inner: Some(inner), ..Link::to(endpoint.clone()) };
        if endpoint.reads == Reads::Replica {
            link = replica_link(link, timeouts).map_err(|e| connect_error(endpoint, &e))?;
        }
        Ok(Conn {
            endpoint: endpoint.clone(),
            timeouts,
            links: vec![link],
            slots: None,
            stale: false,
            failed: None,
            retry: Retry::DEFAULT,
            pipes: Vec::new(),
        })
    }

    /// Connects to every primary of the cluster `endpoint` belongs to (read from its CLUSTER NODES).
    /// With `--read-from replica`, each primary's link goes to a replica of it instead (see
    /// [`Topology::replicas`](cluster::Topology::replicas)), where it has one that can be read.
    pub fn open_cluster(endpoint: &Endpoint, timeouts: Timeouts) -> Result<Conn, ConnectError> {
        let seed = Endpoint { reads: Reads::Primary, ..endpoint.clone() };
        let mut conn = Conn::open(&seed, timeouts)?;
        conn.endpoint = endpoint.clone();
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
        let mut seed = Link::to(self.endpoint.clone());
        let (mut last, mut unreachable) = (None, true);
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
                Ok(Err(why)) => {
                    last = Some(why);
                    unreachable = false;
                }
                Err(e) => {
                    link.inner = None;
                    unreachable &= is_connection_error(&e);
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
                unreachable,
            });
        };
        let mut old = std::mem::take(&mut self.links);
        let reads = self.endpoint.reads;
        self.links = topology
            .primaries
            .iter()
            .zip(&topology.replicas)
            .map(|(node, replica)| {
                let at = |n: &cluster::Node| Endpoint { host: n.host.clone(), port: n.port, ..self.endpoint.clone() };
                let primary = at(node);
                let mut link = match (reads, replica) {
                    (Reads::Replica, Some(r)) => {
                        Link { replica_of: Some(primary), readonly: true, ..Link::to(at(r)) }
                    }
                    (Reads::Replica, None) => {
                        warn_once(format!(
                            "{} {primary}: this primary has no replica to read (CLUSTER NODES): reading from it",
                            primary.role.name()
                        ));
                        Link::to(primary)
                    }
                    (Reads::Primary, _) => Link::to(primary),
                };
                link.id = Some(node.id.clone());
                let kept = old.iter_mut().find(|l| {
                    l.endpoint.host == link.endpoint.host && l.endpoint.port == link.endpoint.port
                });
                link.inner = kept.and_then(|l| l.inner.take());
                link
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

    /// The servers a run taking `slots` reads from: a cluster's primaries that serve at least one of
    /// them (every primary for `None`), sorted by address, and the slot map they were read from (see
    /// [`Conn::slot_owners`], read afresh); a standalone server's own endpoint and no map.
    pub fn primaries_serving(
        &mut self,
        slots: Option<&SlotSet>,
    ) -> Result<(Vec<Endpoint>, Vec<Option<String>>), ConnectError> {
        if !self.is_cluster() {
            return Ok((vec![self.endpoint.clone()], Vec::new()));
        }
        let (owners, _) = self.slot_owners()?;
        let mut nodes = self.primaries();
        nodes.sort_by_key(|node| node.to_string());
        if let Some(set) = slots {
            let serving: std::collections::HashSet<&String> = owners
                .iter()
                .enumerate()
                .filter(|(s, _)| set.has(*s as u16))
                .filter_map(|(_, o)| o.as_ref())
                .collect();
            nodes.retain(|node| serving.contains(&node.to_string()));
        }
        Ok((nodes, owners))
    }

    /// The index of the link to `host:port`, added (unconnected) if it is new.
    fn link_to(&mut self, host: &str, port: u16) -> usize {
        if let Some(i) = self.links.iter().position(|l| l.endpoint.host == host && l.endpoint.port == port) {
            return i;
        }
        let endpoint = Endpoint { host: host.to_string(), port, ..self.endpoint.clone() };
        self.links.push(Link::to(endpoint));
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
        build: impl Fn(&mut Pipe, usize),
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
            if self.pipes.len() < groups.len() {
                self.pipes.resize_with(groups.len(), Pipe::new);
            }
            let mut expected = 0;
            for (link, group) in groups.into_iter().enumerate().filter(|(_, g)| !g.is_empty()) {
                let pipe = &mut self.pipes[link];
                pipe.clear();
                let mut layout = Vec::with_capacity(group.len());
                for (p, asking) in group {
                    let before = pipe.len();
                    let mask = if asking {
                        Some(with_asking(pipe, |scratch| build(scratch, units[p])))
                    } else {
                        build(pipe, units[p]);
                        None
                    };
                    layout.push((p, pipe.len() - before, mask));
                }
                expected += pipe.len();
                match self.links[link].send(self.pipes[link].packed(), self.timeouts) {
                    Ok(()) => sent.push((link, layout)),
                    Err(e) => {
                        self.stale = self.slots.is_some();
                        self.failed = Some(self.links[link].endpoint.to_string());
                        error.get_or_insert(e);
                    }
                }
            }
            replies.values.reserve(expected);
            for (link, layout) in sent {
                // The reply's place in the server's pipeline: some are wanted raw (`Pipe::raw`).
                let mut nth = 0;
                for (p, count, mask) in layout {
                    let start = replies.values.len();
                    let mut lost = None;
                    for _ in 0..count {
                        let raw = self.pipes[link].is_raw(nth);
                        nth += 1;
                        match self.links[link].recv(raw) {
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
                            pipe.add_command(cmd);
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
        build: impl Fn(&mut Pipe, usize),
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
    /// order of [`Conn::primaries`]; no retry. A node that fails takes its connection down and, on a
    /// cluster, has the slot map read again at the next [`Conn::ensure`] (it may have failed over).
    pub fn on_each<T: FromRedisValue>(&mut self, cmd: &Cmd) -> Result<Vec<T>, RedisError> {
        let timeouts = self.timeouts;
        let mut out = Vec::with_capacity(self.links.len());
        for link in &mut self.links {
            let reply = link.connection(timeouts).and_then(|c| cmd.query::<T>(c));
            if reply.as_ref().is_err_and(is_connection_error) {
                link.inner = None;
                self.stale = self.slots.is_some();
            }
            out.push(reply?);
        }
        Ok(out)
    }

    /// The replicas read instead of their primaries (`--read-from replica`), by address.
    pub fn replicas_read(&self) -> Vec<String> {
        self.links.iter().filter(|l| l.replica_of.is_some()).map(|l| l.endpoint.to_string()).collect()
    }

    /// The ids of a cluster's primaries (empty for a standalone server).
    pub fn node_ids(&self) -> Vec<String> {
        self.links.iter().filter_map(|l| l.id.clone()).collect()
    }
}

/// Appends the commands `build` makes to `pipe` with an ASKING before each one (before a MULTI, and
/// not inside the transaction: the ASKING flag lasts until EXEC). Returns, for each command appended,
/// whether its reply is one the caller asked for (false for the ASKINGs).
fn with_asking(pipe: &mut Pipe, build: impl FnOnce(&mut Pipe)) -> Vec<bool> {
    let mut scratch = Pipe::new();
    build(&mut scratch);
    let mut keep = Vec::with_capacity(2 * scratch.len());
    let mut in_transaction = false;
    for i in 0..scratch.len() {
        let name = scratch.name(i).to_ascii_uppercase();
        if !in_transaction {
            pipe.cmd("ASKING");
            keep.push(false);
        }
        pipe.append_from(&mut scratch, i);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asking_goes_before_each_command_and_once_before_a_transaction() {
        let mut pipe = Pipe::new();
        let keep = with_asking(&mut pipe, |p| {
            p.cmd("GET").arg("k").cmd("MULTI").cmd("SET").arg("k").arg("v").cmd("EXEC").cmd("PTTL").arg("k");
        });
        let names: Vec<String> =
            (0..pipe.len()).map(|i| String::from_utf8_lossy(pipe.name(i)).into_owned()).collect();
        assert_eq!(names, ["ASKING", "GET", "ASKING", "MULTI", "SET", "EXEC", "ASKING", "PTTL"]);
        assert_eq!(keep, [false, true, false, true, true, true, false, true]);
    }
}
