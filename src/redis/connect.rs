//! Making one connection to one server: address, login, db, TLS, timeouts; and saying in one line why it
//! could not be made, TLS failures in words with what to do about them. [`crate::redis::conn::Conn`]
//! calls in here for every (re)connection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};

use redis::{
    ClientTlsConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo, RedisError,
    TlsCertificates,
};

use super::endpoint::{Endpoint, Role, Timeouts, Tls};
use super::reply::{explain, may_pass, one_line};
use crate::exit::Fatal;

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
    /// The server could not be reached (refused, timed out, not found, hung up): worth trying again
    /// later, unlike a refused login or certificate.
    pub unreachable: bool,
}

impl From<ConnectError> for Fatal {
    /// A server not reached at the start is exit 5 (try again later); any other refusal exit 2.
    fn from(e: ConnectError) -> Fatal {
        match e.unreachable {
            true => Fatal::unreachable(e.to_string()),
            false => Fatal::bad_input(e.to_string()),
        }
    }
}

/// A connection failure as the one-line "cannot connect" error.
pub fn connect_error(endpoint: &Endpoint, e: &RedisError) -> ConnectError {
    let (reason, unreachable) = connect_reason(e, endpoint);
    ConnectError {
        role: endpoint.role.name(),
        endpoint: endpoint.to_string(),
        reason: one_line(&reason),
        unreachable,
    }
}

pub fn connect(endpoint: &Endpoint, timeouts: Timeouts) -> Result<redis::Connection, RedisError> {
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
/// with what to do about them, the rest as [`describe`] puts them; and whether the server was simply not
/// reached (worth trying again later) rather than reached and refusing, or reached by the wrong scheme.
fn connect_reason(err: &RedisError, endpoint: &Endpoint) -> (String, bool) {
    let not_reached = || (explain(err, endpoint), may_pass(err));
    let Some(tls) = &endpoint.tls else {
        // A TLS-only port hangs up on a plain client.
        use std::io::ErrorKind as Io;
        if matches!(io_kind(err), Some(Io::ConnectionReset | Io::UnexpectedEof | Io::BrokenPipe)) {
            // Also a full server or a proxy without a backend: worth trying again (exit 5).
            return ("the server hung up at once (if it only accepts TLS, use rediss://)".to_string(), true);
        }
        return not_reached();
    };
    let Some(e) = rustls_error(err) else {
        // The connect timeout covers the TCP connect (TimedOut) and then the handshake (WouldBlock: a
        // read timed out): a plain Redis reading a ClientHello waits for the end of a command line forever.
        if io_kind(err) == Some(std::io::ErrorKind::WouldBlock) {
            let why = "TLS: no answer to the TLS handshake (if it is a plain Redis port, use redis://)";
            // Also a server too busy to answer in time: worth trying again (exit 5).
            return (why.to_string(), true);
        }
        return not_reached();
    };
    use rustls::{AlertDescription as Alert, CertificateError as Cert, Error as E};
    let role = endpoint.role.name();
    let why = match e {
        E::InvalidCertificate(Cert::UnknownIssuer) if tls.ca.is_some() => format!(
            "certificate verify failed (unknown issuer): the server's certificate is not signed by the CA \
             given (--{role}-tls-ca or --tls-ca)"
        ),
        E::InvalidCertificate(Cert::UnknownIssuer) => format!(
            "certificate verify failed (unknown issuer): the server's certificate is not signed by a CA this \
             system trusts; give its CA with --{role}-tls-ca FILE (or --tls-ca FILE for both sides)"
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
    (format!("TLS: {why}"), false)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_names_read_bare() {
        assert_eq!(bare_name("DnsName(\"redis.example\")"), "redis.example");
        assert_eq!(bare_name("IpAddress(10.0.0.1)"), "10.0.0.1");
        assert_eq!(bare_name("plain"), "plain");
    }
}
