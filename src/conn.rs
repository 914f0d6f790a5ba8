//! Connecting to a server: address, login, db, TLS, timeouts; what the server is; how its errors read.
//!
//! Each pipeline thread owns one [`Conn`], made here; no connection is ever shared between threads.
//! A `Conn` knows how to come back after a fault: it marks itself broken on an I/O error or timeout
//! and is replaced (logged in, db selected) before its next use, paced by its [`Retry`] policy. This file also turns a `RedisError` or an error
//! reply into the `error` / `message` pair of the error CSV. It knows nothing of keys or stages.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use redis::{
    ClientTlsConfig, Cmd, ConnectionAddr, ConnectionInfo, FromRedisValue, IntoConnectionInfo,
    RedisConnectionInfo, RedisError, RedisResult, TlsCertificates, Value,
};

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

/// Error replies that mean "not now" rather than "never": worth retrying after a pause.
pub fn is_transient(code: &str) -> bool {
    matches!(code, "OOM" | "LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN" | "CLUSTERDOWN")
}

/// One thread's connection to one server, able to re-establish itself.
pub struct Conn {
    /// Where it goes, for reconnecting and messages.
    endpoint: Endpoint,
    /// Timeouts applied to every (re)connection.
    timeouts: Timeouts,
    /// The live connection (or the dead one, while `broken`).
    inner: redis::Connection,
    /// Set after an I/O error or timeout: the connection must be replaced before its next use.
    broken: bool,
    /// How transient failures are retried.
    retry: Retry,
}

impl Conn {
    /// Connects, logs in, selects the db and sets the read and write timeouts.
    pub fn open(endpoint: &Endpoint, timeouts: Timeouts) -> Result<Conn, ConnectError> {
        let inner = connect(endpoint, timeouts).map_err(|e| ConnectError {
            role: endpoint.role.name(),
            endpoint: endpoint.to_string(),
            reason: one_line(&connect_reason(&e, endpoint)),
        })?;
        Ok(Conn { endpoint: endpoint.clone(), timeouts, inner, broken: false, retry: Retry::DEFAULT })
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

    /// Replaces the connection if it is marked broken: one attempt (logging in and selecting the db
    /// again). Callers pace their attempts with [`Retry::pause`].
    pub fn ensure(&mut self) -> Result<(), ConnectError> {
        if !self.broken {
            return Ok(());
        }
        let fresh = Conn::open(&self.endpoint, self.timeouts)?;
        log::info!("reconnected to {} {}", self.endpoint.role.name(), self.endpoint);
        self.inner = fresh.inner;
        self.broken = false;
        Ok(())
    }

    /// Replaces the connection, trying with the retry policy's pauses until it works or the attempts
    /// are used up.
    pub fn reconnect(&mut self) -> Result<(), ConnectError> {
        self.broken = true;
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

    /// Sends an encoded pipeline of `count` commands and reads the replies in order into `replies`
    /// (error replies as `Value::ServerError`). When the connection fails part way, the replies read
    /// so far are kept, the connection is marked broken and the error is returned: the commands after
    /// them were not answered (they may or may not have run).
    pub fn send_batch(
        &mut self,
        packed: &[u8],
        count: usize,
        replies: &mut Vec<Value>,
    ) -> Option<RedisError> {
        if let Err(e) = self.inner.send_packed_command(packed) {
            self.broken = true;
            return Some(e);
        }
        for _ in 0..count {
            match self.inner.recv_response() {
                Ok(value) => replies.push(value),
                Err(e) => {
                    self.broken = true;
                    return Some(e);
                }
            }
        }
        None
    }

    /// Runs one command, retrying connection errors and transient error replies with the retry
    /// policy. Stops retrying when `give_up` says so (the run is aborting).
    pub fn call<T: FromRedisValue>(&mut self, cmd: &Cmd, give_up: impl Fn() -> bool) -> RedisResult<T> {
        let mut attempt = 0;
        loop {
            let result = match self.ensure() {
                Ok(()) => cmd.query::<T>(&mut self.inner),
                Err(e) => Err(RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    e.to_string(),
                ))),
            };
            let err = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let connection = is_connection_error(&err);
            if connection {
                self.broken = true;
            }
            let transient = connection || err.code().is_some_and(is_transient);
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
        return describe(err);
    };
    let Some(e) = rustls_error(err) else {
        // The connect timeout covers the TCP connect (TimedOut) and then the handshake (WouldBlock: a
        // read timed out): a plain Redis reading a ClientHello waits for the end of a command line forever.
        if io_kind(err) == Some(std::io::ErrorKind::WouldBlock) {
            return "TLS: no answer to the TLS handshake (if it is a plain Redis port, use redis://)"
                .to_string();
        }
        return describe(err);
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
    fn messages_are_one_line() {
        assert_eq!(one_line("a\nb\r\n  c"), "a b c");
    }
}
