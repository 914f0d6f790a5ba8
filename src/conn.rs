//! Connecting to a server: address, login, db, timeouts; what the server is; how its errors read.
//!
//! Each pipeline thread owns one [`Conn`], made here, and asks it to [`Conn::reconnect`] after an I/O
//! error; no connection is ever shared between threads. This file also turns a `RedisError` or an error
//! reply into the `error` / `message` pair of the error CSV. It knows nothing of keys or stages.

use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo, RedisError};

use crate::config::{Endpoint, Timeouts};

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

/// One thread's connection to one server, able to re-establish itself.
pub struct Conn {
    /// Where it goes, for reconnecting and messages.
    endpoint: Endpoint,
    /// Timeouts applied to every (re)connection.
    timeouts: Timeouts,
    /// The live connection.
    inner: redis::Connection,
}

impl Conn {
    /// Connects, logs in, selects the db and sets the read and write timeouts.
    pub fn open(endpoint: &Endpoint, timeouts: Timeouts) -> Result<Conn, ConnectError> {
        let inner = connect(endpoint, timeouts).map_err(|e| ConnectError {
            role: endpoint.role.name(),
            endpoint: endpoint.to_string(),
            reason: one_line(&describe(&e)),
        })?;
        Ok(Conn { endpoint: endpoint.clone(), timeouts, inner })
    }

    /// Replaces a broken connection with a new one, trying a few times with growing pauses.
    pub fn reconnect(&mut self) -> Result<(), ConnectError> {
        let mut last = None;
        for pause_ms in [0u64, 200, 1000, 3000] {
            std::thread::sleep(Duration::from_millis(pause_ms));
            match Conn::open(&self.endpoint, self.timeouts) {
                Ok(fresh) => {
                    log::info!("reconnected to {} {}", self.endpoint.role.name(), self.endpoint);
                    *self = fresh;
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one attempt was made"))
    }

    /// The endpoint this connection goes to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The underlying connection, for `query` and `Pipeline::query`.
    pub fn raw(&mut self) -> &mut redis::Connection {
        &mut self.inner
    }

    /// Reads what redis-ferry needs to know about the server (INFO server + cluster).
    pub fn server_info(&mut self) -> Result<ServerInfo, RedisError> {
        let text: String = redis::cmd("INFO").arg("server").arg("cluster").query(&mut self.inner)?;
        Ok(ServerInfo::parse(&text))
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
    let info: ConnectionInfo = ConnectionAddr::Tcp(endpoint.host.clone(), endpoint.port)
        .into_connection_info()?
        .set_redis_settings(redis_info);
    let client = redis::Client::open(info)?;
    let conn = client.get_connection_with_timeout(timeouts.connect)?;
    conn.set_read_timeout(Some(timeouts.io))?;
    conn.set_write_timeout(Some(timeouts.io))?;
    Ok(conn)
}

/// Facts about a server read from INFO.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerInfo {
    /// `redis_version` as (major, minor, patch); (0, 0, 0) when absent.
    pub version: (u32, u32, u32),
    /// `cluster_enabled:1`.
    pub cluster: bool,
}

impl ServerInfo {
    /// Parses the text of INFO.
    pub fn parse(text: &str) -> ServerInfo {
        let mut info = ServerInfo::default();
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("redis_version:") {
                let mut parts = v.trim().split('.').map(|p| p.parse::<u32>().unwrap_or(0));
                info.version =
                    (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0));
            } else if let Some(v) = line.strip_prefix("cluster_enabled:") {
                info.cluster = v.trim() == "1";
            }
        }
        info
    }

    /// PEXPIRETIME exists from Redis 7.0 on.
    pub fn has_pexpiretime(&self) -> bool {
        self.version >= (7, 0, 0)
    }
}

/// The CSV `error` column and `message` for a failure: the server's error code (`NOPERM`, `OOM`, ...)
/// or `IO`, `TIMEOUT`, `PROTOCOL` for failures that are not the server's answer.
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
    let message = match err.details() {
        Some(d) => format!("{code} {d}"),
        None => code.clone(),
    };
    (code, one_line(&message))
}

/// True when the error means the connection itself is unusable (reconnect), rather than one reply
/// being an error.
pub fn is_connection_error(err: &RedisError) -> bool {
    err.is_io_error() || err.is_timeout() || err.is_connection_dropped() || err.is_connection_refusal()
}

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
    err.to_string()
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
        let info =
            ServerInfo::parse("# Server\r\nredis_version:7.0.15\r\n# Cluster\r\ncluster_enabled:0\r\n");
        assert_eq!(info.version, (7, 0, 15));
        assert!(!info.cluster);
        assert!(info.has_pexpiretime());
        let info = ServerInfo::parse("redis_version:6.2.1\ncluster_enabled:1\n");
        assert!(info.cluster);
        assert!(!info.has_pexpiretime());
    }

    #[test]
    fn messages_are_one_line() {
        assert_eq!(one_line("a\nb\r\n  c"), "a b c");
    }
}
