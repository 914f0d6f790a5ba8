//! Making one connection to one server: address, login, db, TLS, timeouts; and saying in one line why it
//! could not be made, TLS failures in words with what to do about them. [`crate::redis::conn::Conn`]
//! calls in here for every (re)connection.

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::{ConnectionLike, ErrorKind, RedisError, Value};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::endpoint::{Endpoint, Role, Timeouts, Tls};
use super::reply::{explain, kind, may_pass, one_line};
use super::wire::{Stream, Wire};
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

/// Makes one connection to `endpoint` and logs it in: TCP (each address the host name resolves to,
/// within the connect timeout), the TLS handshake for a `rediss://` server, `AUTH`, `SELECT`; then
/// the I/O timeout holds for every read and write.
pub fn connect(endpoint: &Endpoint, timeouts: Timeouts) -> Result<Wire, RedisError> {
    let tcp = tcp(&endpoint.host, endpoint.port, timeouts.connect)?;
    tcp.set_nodelay(true)?;
    // The handshake and the login are bounded by the connect timeout too.
    tcp.set_read_timeout(Some(timeouts.connect))?;
    tcp.set_write_timeout(Some(timeouts.connect))?;
    let stream = match &endpoint.tls {
        None => Stream::Tcp(tcp),
        Some(tls) => Stream::Tls(Box::new(handshake(endpoint, tls, tcp)?)),
    };
    let mut wire = Wire::new(stream, endpoint.db);
    login(&mut wire, endpoint)?;
    wire.set_timeouts(Some(timeouts.io), Some(timeouts.io))?;
    Ok(wire)
}

/// A TCP connection to the first address of `host` that answers within `timeout`.
fn tcp(host: &str, port: u16, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"));
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// `AUTH [user] password` when there is a password (again without the user name for a server before
/// ACLs, which knows only `AUTH password`), `SELECT db` for a db other than 0, and a PING.
fn login(wire: &mut Wire, endpoint: &Endpoint) -> Result<(), RedisError> {
    if let Some(password) = &endpoint.password {
        let mut auth = redis::cmd("AUTH");
        auth.arg(endpoint.username.as_deref()).arg(password);
        let mut reply = wire.req_command(&auth)?;
        let before_acls = match &reply {
            Value::ServerError(e) => e.details().is_some_and(|d| d.contains("wrong number of arguments")),
            _ => false,
        };
        if endpoint.username.is_some() && before_acls {
            reply = wire.req_command(redis::cmd("AUTH").arg(password))?;
        }
        let failed = |detail: String| {
            RedisError::from((ErrorKind::AuthenticationFailed, "authentication failed", detail))
        };
        match reply {
            Value::Okay => {}
            // WRONGPASS keeps its code; any other refusal is an authentication failure all the same.
            Value::ServerError(e) if e.code() == "WRONGPASS" => return Err(e.into()),
            Value::ServerError(e) => return Err(failed(e.to_string())),
            other => return Err(failed(format!("AUTH replied {}", kind(&other)))),
        }
    }
    if endpoint.db != 0 {
        if let Value::ServerError(e) = wire.req_command(redis::cmd("SELECT").arg(endpoint.db))? {
            return Err(e.into());
        }
    }
    // One answer before the connection is handed over: a TLS-only port hangs up on it, a server that
    // wants a password says NOAUTH (an ACL that refuses PING is no reason to fail).
    match wire.req_command(&redis::cmd("PING"))? {
        Value::ServerError(e) if e.code() == "NOAUTH" => Err(e.into()),
        _ => Ok(()),
    }
}

/// The TLS handshake on `tcp`, done before the first command: rustls with ring, the roots of
/// `--<role>-tls-ca` (or the system's), the client certificate if one is given.
fn handshake(
    endpoint: &Endpoint,
    tls: &Tls,
    mut tcp: TcpStream,
) -> Result<rustls::StreamOwned<ClientConnection, TcpStream>, RedisError> {
    let config = client_config(endpoint, tls)?;
    let name = ServerName::try_from(endpoint.host.clone()).map_err(|e| {
        RedisError::from((ErrorKind::InvalidClientConfig, "not a TLS server name", e.to_string()))
    })?;
    let mut conn = ClientConnection::new(config, name)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    Ok(rustls::StreamOwned::new(conn, tcp))
}

/// The rustls client configuration of one side, made once per process: building it reads the CA
/// file's certificates (or the system's roots) and the client key. Once per side, warns that
/// `--<role>-tls-insecure` turns verification off.
fn client_config(endpoint: &Endpoint, tls: &Tls) -> Result<Arc<ClientConfig>, RedisError> {
    static MADE: Mutex<Vec<(Role, Tls, Arc<ClientConfig>)>> = Mutex::new(Vec::new());
    let mut made = MADE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, _, config)) = made.iter().find(|(r, t, _)| *r == endpoint.role && t == tls) {
        return Ok(config.clone());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = if tls.insecure {
        let role = endpoint.role.name();
        log::warn!(
            "--{role}-tls-insecure: the certificate of {role} {endpoint} is not verified; anyone on the network \
             path could read or change what is sent"
        );
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
    } else {
        builder.with_root_certificates(roots(tls)?)
    };
    let mut config = match &tls.client {
        Some(client) => {
            let chain = CertificateDer::pem_slice_iter(&client.cert).collect::<Result<Vec<_>, _>>();
            let key = PrivateKeyDer::from_pem_slice(&client.key);
            let (chain, key) = chain.and_then(|c| key.map(|k| (c, k))).map_err(|e| {
                RedisError::from((ErrorKind::InvalidClientConfig, "client certificate", e.to_string()))
            })?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    // No name to send when the name is not checked.
    config.enable_sni = !tls.insecure;
    let config = Arc::new(config);
    made.push((endpoint.role, tls.clone(), config.clone()));
    Ok(config)
}

/// The CA certificates trusted: `--<role>-tls-ca`'s, or the system's.
fn roots(tls: &Tls) -> Result<RootCertStore, RedisError> {
    let mut roots = RootCertStore::empty();
    match &tls.ca {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| {
                    RedisError::from((ErrorKind::InvalidClientConfig, "CA certificates", e.to_string()))
                })?;
                roots.add(cert)?;
            }
        }
        None => {
            // Unreadable system certificates leave fewer roots; a server signed by none of them is
            // then refused (unknown issuer), which says what to do.
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    Ok(roots)
}

/// `--<role>-tls-insecure`: every certificate is taken, for any name; signatures are still checked
/// to be well formed by the provider's algorithms.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
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
