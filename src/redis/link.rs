//! One connection to one server, made again after a fault: a [`Link`] of a routed connection
//! ([`super::conn::Conn`]), and, with `--read-from replica`, which replica it reads instead of its
//! primary and the check that the replica can be read, made at every connection. Warnings about a
//! missing replica are said once per run, not once per thread.

use redis::{ConnectionLike, RedisError, Value};

use super::connect::connect;
use super::endpoint::{Endpoint, Timeouts};
use super::reply::{describe, is_connection_error, one_line};
use super::server::ServerInfo;
use super::wire::Wire;

/// A connection to one server, `None` while it is down (after an I/O error or timeout, or before the
/// first use of a node found by a redirection): it is made again before its next use.
pub(super) struct Link {
    /// The server: the side's endpoint with this node's host and port.
    pub(super) endpoint: Endpoint,
    /// A cluster node's id (from CLUSTER NODES); `None` for a standalone server or a node found by a
    /// redirection before the slot map was read again.
    pub(super) id: Option<String>,
    /// The live connection.
    pub(super) inner: Option<Wire>,
    /// `--read-from replica`: `endpoint` is a replica of this primary, read instead of it as long as the
    /// replica answers and its link to the primary is up (checked at every connection), else the
    /// primary is read, with a warning.
    pub(super) replica_of: Option<Endpoint>,
    /// A cluster replica's connection says READONLY first, so that it serves the reads of its slots.
    pub(super) readonly: bool,
}

impl Link {
    /// A link to `endpoint` itself, not yet connected.
    pub(super) fn to(endpoint: Endpoint) -> Link {
        Link { endpoint, id: None, inner: None, replica_of: None, readonly: false }
    }

    /// The connection, made first if it is down. A replica that cannot be read is given up for its
    /// primary, for good.
    pub(super) fn connection(&mut self, timeouts: Timeouts) -> Result<&mut Wire, RedisError> {
        // A connection that failed a command (a timeout, a reply that was not RESP) is made again.
        if self.inner.as_ref().is_some_and(|wire| !wire.is_open()) {
            self.inner = None;
        }
        if self.inner.is_none() {
            let mut made = connect(&self.endpoint, timeouts);
            if let Some(primary) = self.replica_of.clone() {
                let why = match &mut made {
                    Ok(conn) => replica_ready(conn, self.readonly).err(),
                    Err(e) => Some(describe(e)),
                };
                if let Some(why) = why {
                    warn_once(format!(
                        "{} {primary}: its replica {} cannot be read ({}): reading from the primary",
                        primary.role.name(),
                        self.endpoint,
                        one_line(&why)
                    ));
                    *self = Link { id: self.id.take(), ..Link::to(primary) };
                    made = connect(&self.endpoint, timeouts);
                }
            }
            self.inner = Some(made?);
            log::debug!("connected to {} {}", self.endpoint.role.name(), self.endpoint);
        }
        Ok(self.inner.as_mut().expect("just made"))
    }

    /// Makes the connection if it is down.
    pub(super) fn connect_now(&mut self, timeouts: Timeouts) -> Result<(), RedisError> {
        self.connection(timeouts).map(|_| ())
    }

    /// Sends packed commands; a failure takes the connection down.
    pub(super) fn send(&mut self, packed: &[u8], timeouts: Timeouts) -> Result<(), RedisError> {
        let result = self.connection(timeouts).and_then(|c| c.send(packed));
        if result.is_err() {
            self.inner = None;
        }
        result
    }

    /// Reads one reply (an error reply as `Value::ServerError`; `raw`: any other as its RESP bytes,
    /// [`Wire::recv_raw`]); a failure takes the connection down.
    pub(super) fn recv(&mut self, raw: bool) -> Result<Value, RedisError> {
        let Some(conn) = self.inner.as_mut() else {
            return Err(RedisError::from(std::io::Error::from(std::io::ErrorKind::NotConnected)));
        };
        let reply = if raw { conn.recv_raw() } else { conn.recv() };
        if reply.is_err() {
            self.inner = None;
        }
        reply
    }
}

/// `--read-from replica` for a standalone server, on its `link`: a primary's first online replica (from
/// its INFO), whose connection is made when first used ([`Link::connection`] checks it and falls back on
/// the primary); the server itself when it is a replica or a cluster node, or, with a warning, a primary
/// that lists no replica online.
pub(super) fn replica_link(mut link: Link, timeouts: Timeouts) -> Result<Link, RedisError> {
    let conn = link.connection(timeouts)?;
    let info = match redis::cmd("INFO").query::<String>(conn) {
        Ok(text) => ServerInfo::parse(&text),
        Err(e) if is_connection_error(&e) => return Err(e),
        // INFO refused (an ACL): nothing says there is a replica.
        Err(_) => ServerInfo::default(),
    };
    if info.cluster || info.replica_of.is_some() {
        return Ok(link);
    }
    let primary = link.endpoint.clone();
    let Some((host, port)) = info.replicas.first().cloned() else {
        warn_once(format!(
            "{} {primary}: it lists no replica online (INFO replication): reading from it",
            primary.role.name()
        ));
        return Ok(link);
    };
    let replica = Endpoint { host, port, ..primary.clone() };
    once(log::Level::Info, format!("{} {primary}: reading from its replica {replica}", primary.role.name()));
    let mut link = Link { replica_of: Some(primary), ..Link::to(replica) };
    link.connect_now(timeouts)?;
    Ok(link)
}

/// Whether the replica behind `conn` can be read: READONLY first on a cluster replica (`readonly`),
/// then INFO must say it is a replica whose link to its primary is up (a replica still loading its
/// first copy, or cut off from its primary, holds stale or no data).
fn replica_ready(conn: &mut Wire, readonly: bool) -> Result<(), String> {
    if readonly {
        redis::cmd("READONLY").query::<()>(conn).map_err(|e| format!("READONLY: {}", describe(&e)))?;
    }
    let text: String = redis::cmd("INFO").arg("replication").query(conn).map_err(|e| describe(&e))?;
    let info = ServerInfo::parse(&text);
    match (info.replica_of.is_some(), info.linked) {
        (true, true) => Ok(()),
        (true, false) => Err("its link to the primary is down".into()),
        (false, _) => Err("it is not a replica now".into()),
    }
}

/// Logs `message` as a warning the first time it is met in the run: every thread's connection meets the
/// same missing replica.
pub(super) fn warn_once(message: String) {
    once(log::Level::Warn, message);
}

/// Logs `message` at `level` the first time it is met in the run.
fn once(level: log::Level, message: String) {
    static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    if !said.contains(&message) {
        log::log!(level, "{message}");
        said.push(message);
    }
}
