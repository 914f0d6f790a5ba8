//! TLS: `rediss://` endpoints against real `redis-server --tls-port` processes, with a CA and certificates
//! this module makes itself with rcgen (nothing from the system's trust store, no openssl command).
//!
//! Each TLS server also keeps its plain port on 127.0.0.1, for the harness's own filling and comparing
//! (tests/support talks plain Redis); redis-ferry is only ever pointed at the TLS port. Covered: a TLS
//! source to a plain target and plain to TLS, checked with `verify` over TLS; mutual TLS; failed
//! verifications (wrong CA, no CA, a certificate for another name, a plain port behind `rediss://`, a TLS
//! port behind `redis://`) refused at preflight with exit 2, one readable line and nothing written;
//! `--*-tls-insecure`, which works against the untrusted server and warns once per side; and the TLS
//! flags' own checks.
//!
//! A TLS cluster (`tls_cluster_*`): three primaries with no plain port at all (`--port 0 --tls-port P
//! --tls-cluster yes`), joined with `redis-cli --tls --cluster create` (tests/support/cluster.rs runs
//! it) and checked over TLS by the redis crate, so every node redis-ferry finds in CLUSTER NODES can
//! only be reached with the TLS settings of the URL it was given. Covered: plain standalone into the
//! cluster and the cluster back into a plain server, each checked with `verify`; the wrong CA on either
//! side refused at preflight; and one node's certificate failing verification while the seed's passes.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::thread;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use redis::cluster::{ClusterClient, ClusterConnection};
use redis::{Connection, TlsCertificates};

use crate::support::*;

/// A certificate authority made for one test.
struct Ca {
    /// Its self-signed certificate, PEM.
    pem: String,
    /// What signs the certificates it issues.
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca { pem, issuer: Issuer::new(params, key) }
    }

    /// A certificate for `names` (IP addresses or DNS names; none for a client), with its key: both PEM.
    fn issue(&self, common_name: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// The files of one test's little PKI, in a temp dir: `ca.pem` (trusted by the servers), `other-ca.pem`
/// (unrelated), `server.pem` for 127.0.0.1 and localhost, `elsewhere.pem` for another name only,
/// `client.pem` (issued by ca.pem) and `stranger.pem` (a client certificate from the other CA); each
/// certificate `X.pem` has its key in `X-key.pem`.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::Builder::new().prefix("ferry-tls-").tempdir().unwrap();
        let ca = Ca::new("redis-ferry test CA");
        let other = Ca::new("some other CA");
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("ca.pem", &ca.pem);
        write("other-ca.pem", &other.pem);
        let server = ExtendedKeyUsagePurpose::ServerAuth;
        let client = ExtendedKeyUsagePurpose::ClientAuth;
        for (name, (cert, key)) in [
            ("server", ca.issue("test redis", &["127.0.0.1", "localhost"], server.clone())),
            ("elsewhere", ca.issue("redis elsewhere", &["redis.elsewhere.test"], server)),
            ("client", ca.issue("redis-ferry client", &[], client.clone())),
            ("stranger", other.issue("someone else", &[], client)),
        ] {
            write(&format!("{name}.pem"), &cert);
            write(&format!("{name}-key.pem"), &key);
        }
        Pki { dir }
    }

    /// The path of one of its files, as a string for the command line.
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }
}

/// A `redis-server` that listens for TLS on its own port, next to the plain one the harness uses.
struct TlsServer {
    server: RedisServer,
    tls_port: u16,
}

impl TlsServer {
    /// Serves `cert` (a name in the PKI: `server` or `elsewhere`); requires client certificates issued by
    /// ca.pem when `auth_clients`.
    fn start(pki: &Pki, cert: &str, auth_clients: bool) -> TlsServer {
        let tls_port = free_port();
        let args = [
            "--tls-port".to_string(),
            tls_port.to_string(),
            "--tls-cert-file".to_string(),
            pki.path(&format!("{cert}.pem")),
            "--tls-key-file".to_string(),
            pki.path(&format!("{cert}-key.pem")),
            "--tls-ca-cert-file".to_string(),
            pki.path("ca.pem"),
            "--tls-auth-clients".to_string(),
            if auth_clients { "yes" } else { "no" }.to_string(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        TlsServer { server: RedisServer::with_args(&args), tls_port }
    }

    /// `rediss://127.0.0.1:TLS_PORT`.
    fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.tls_port)
    }
}

/// The one `error:` line of a refused run; asserts there is exactly one and that it reads as words, not
/// as a Rust Debug dump.
#[track_caller]
fn error_line(out: &Output) -> String {
    let text = stderr(out);
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "expected one error line\n{}", dump(out));
    let line = errors[0].to_string();
    for debris in [
        "Error {",
        "Custom {",
        "kind:",
        "InvalidCertificate",
        "AlertReceived",
        "Some(",
        "os error",
        "DnsName(",
    ] {
        assert!(!line.contains(debris), "the error line shows {debris:?}: {line}");
    }
    line
}

fn csv(dir: &Path) -> String {
    dir.join("errors.csv").to_str().unwrap().to_string()
}

#[test]
fn tls_source_to_plain_target_and_plain_to_tls_target() {
    let pki = Pki::new();
    let tls_src = TlsServer::start(&pki, "server", false);
    let plain = RedisServer::new();
    let tls_dst = TlsServer::start(&pki, "server", false);
    let dir = tempfile::tempdir().unwrap();
    let ca = pki.path("ca.pem");
    let keys = fill_every_type(&mut tls_src.server.conn(), false);

    // TLS source to plain target, with two readers and two writers: every connection is TLS.
    let out =
        ferry(["copy", &tls_src.url(), &plain.addr(), "--source-tls-ca", &ca, "--errors", &csv(dir.path())]);
    assert_exit(&out, 0);
    let s = summary(&out);
    assert_eq!((s.copied, s.failed), (keys.len() as u64, 0), "{}", s.line);
    assert_same(&mut tls_src.server.conn(), &mut plain.conn(), &keys);

    // Plain source to TLS target.
    let out =
        ferry(["copy", &plain.addr(), &tls_dst.url(), "--target-tls-ca", &ca, "--errors", &csv(dir.path())]);
    assert_exit(&out, 0);
    assert_eq!(summary(&out).copied, keys.len() as u64);
    assert_same(&mut plain.conn(), &mut tls_dst.server.conn(), &keys);
    assert!(!dir.path().join("errors.csv").exists(), "no key failed, so no CSV");

    // verify over TLS on both sides agrees, and sees a difference made behind its back.
    let verify =
        || ferry(["verify", &tls_src.url(), &tls_dst.url(), "--source-tls-ca", &ca, "--target-tls-ca", &ca]);
    let out = verify();
    assert_exit(&out, 0);
    assert_eq!(verify_summary(&out).matched, keys.len() as u64);
    let _: () = redis::cmd("SET").arg("str:plain").arg("changed").query(&mut tls_dst.server.conn()).unwrap();
    let out = verify();
    assert_exit(&out, 1);
    assert_eq!(verify_summary(&out).different, 1, "{}", dump(&out));
}

#[test]
fn the_tls_shorthands_serve_every_tls_side_and_a_sides_own_flag_wins() {
    let pki = Pki::new();
    let tls_src = TlsServer::start(&pki, "server", false);
    let tls_dst = TlsServer::start(&pki, "server", false);
    let plain = RedisServer::new();
    let dir = tempfile::tempdir().unwrap();
    let ca = pki.path("ca.pem");
    let keys = fill_every_type(&mut tls_src.server.conn(), false);
    // One CA for both TLS sides.
    let out = ferry(["copy", &tls_src.url(), &tls_dst.url(), "--tls-ca", &ca, "--errors", &csv(dir.path())]);
    assert_exit(&out, 0);
    assert_same(&mut tls_src.server.conn(), &mut tls_dst.server.conn(), &keys);
    // A plain side is left alone by the shorthand; verify takes it too.
    let out = ferry(["verify", &tls_src.url(), &plain.addr(), "--tls-ca", &ca]);
    assert_exit(&out, 1);
    // A side's own flag wins: a wrong CA given as the shorthand does not reach the target, whose own is right;
    // the source, which takes the shorthand, fails to verify and the message names --tls-ca.
    let wrong = pki.path("server.pem");
    let out = ferry(["verify", &tls_src.url(), &tls_dst.url(), "--tls-ca", &wrong, "--target-tls-ca", &ca]);
    assert_exit(&out, 2);
    assert!(error_line(&out).contains("source"), "{}", dump(&out));
    let out = ferry(["verify", &tls_dst.url(), &tls_src.url(), "--source-tls-ca", &ca, "--tls-ca", &ca]);
    assert_exit(&out, 0);
    // With no TLS side the shorthand is refused, naming it.
    let out = ferry(["copy", &plain.addr(), &plain.addr(), "--tls-insecure"]);
    assert_refused_naming(&out, &["--tls-insecure is for TLS, but neither SOURCE nor TARGET"]);
    let out = ferry(["copy", &tls_src.url(), &plain.addr(), "--tls-cert", &pki.path("client.pem")]);
    assert_refused_naming(&out, &["--tls-cert needs --tls-key"]);
}

#[test]
fn mutual_tls_needs_a_client_certificate_the_server_trusts() {
    let pki = Pki::new();
    let src = RedisServer::new();
    let dst = TlsServer::start(&pki, "server", true);
    let dir = tempfile::tempdir().unwrap();
    let keys = fill_strings(&mut src.conn(), "mtls:", 300);
    let ca = pki.path("ca.pem");
    let copy = |extra: &[&str]| {
        let mut args = vec!["copy".to_string(), src.addr(), dst.url(), "--target-tls-ca".into(), ca.clone()];
        args.extend(["--errors".to_string(), csv(dir.path())]);
        args.extend(extra.iter().map(|a| a.to_string()));
        ferry(args)
    };

    // No client certificate: refused at preflight, with the flags to use.
    let out = copy(&[]);
    assert_exit(&out, 2);
    let line = error_line(&out);
    let port = dst.tls_port;
    assert!(line.starts_with(&format!("error: cannot connect to target 127.0.0.1:{port}: TLS:")), "{line}");
    assert!(line.contains("--target-tls-cert") && line.contains("--target-tls-key"), "{line}");
    assert_eq!(dbsize(&mut dst.server.conn()), 0);

    // A client certificate from a CA the server does not trust.
    let (cert, key) = (pki.path("stranger.pem"), pki.path("stranger-key.pem"));
    let out = copy(&["--target-tls-cert", &cert, "--target-tls-key", &key]);
    assert_exit(&out, 2);
    let line = error_line(&out);
    assert!(line.contains("refused our client certificate"), "{line}");
    assert_eq!(dbsize(&mut dst.server.conn()), 0);

    // The right one.
    let (cert, key) = (pki.path("client.pem"), pki.path("client-key.pem"));
    let out = copy(&["--target-tls-cert", &cert, "--target-tls-key", &key]);
    assert_exit(&out, 0);
    assert_eq!(summary(&out).copied, 300);
    assert_same(&mut src.conn(), &mut dst.server.conn(), &keys);
    let out = ferry([
        "verify",
        &dst.url(),
        &src.addr(),
        "--source-tls-ca",
        &ca,
        "--source-tls-cert",
        &cert,
        "--source-tls-key",
        &key,
    ]);
    assert_exit(&out, 0);
}

#[test]
fn failed_verification_is_refused_at_preflight_and_nothing_is_written() {
    let pki = Pki::new();
    let src = RedisServer::new();
    let dst = TlsServer::start(&pki, "server", false);
    let elsewhere = TlsServer::start(&pki, "elsewhere", false);
    let dir = tempfile::tempdir().unwrap();
    fill_strings(&mut src.conn(), "k:", 100);
    let copy = |target: &str, extra: &[&str]| {
        let mut args =
            vec!["copy".to_string(), src.addr(), target.to_string(), "--errors".into(), csv(dir.path())];
        args.extend(extra.iter().map(|a| a.to_string()));
        ferry(args)
    };
    let port = dst.tls_port;
    let refused = |out: &Output| {
        assert_exit(out, 2);
        let line = error_line(out);
        assert!(
            line.starts_with(&format!("error: cannot connect to target 127.0.0.1:{port}: TLS: ")),
            "{line}"
        );
        assert_eq!(dbsize(&mut dst.server.conn()), 0);
        assert!(!dir.path().join("errors.csv").exists());
        line
    };

    // The wrong CA.
    let line = refused(&copy(&dst.url(), &["--target-tls-ca", &pki.path("other-ca.pem")]));
    assert!(line.contains("certificate verify failed (unknown issuer)"), "{line}");
    assert!(line.contains("--target-tls-ca"), "{line}");

    // No CA: the system's roots do not know the test CA either; the message says how to give one.
    let line = refused(&copy(&dst.url(), &[]));
    assert!(line.contains("certificate verify failed (unknown issuer)"), "{line}");
    assert!(line.contains("--target-tls-ca FILE"), "{line}");

    // The right CA, but a certificate for another name.
    let out = copy(&elsewhere.url(), &["--target-tls-ca", &pki.path("ca.pem")]);
    assert_exit(&out, 2);
    let line = error_line(&out);
    assert!(line.contains("certificate verify failed") && line.contains("redis.elsewhere.test"), "{line}");
    assert_eq!(dbsize(&mut elsewhere.server.conn()), 0);

    // verify refuses the same way, on the source side.
    let out = ferry(["verify", &dst.url(), &src.addr(), "--source-tls-ca", &pki.path("other-ca.pem")]);
    assert_exit(&out, 2);
    let line = error_line(&out);
    assert!(line.starts_with(&format!("error: cannot connect to source 127.0.0.1:{port}: TLS: ")), "{line}");

    // A plain port behind rediss:// (the handshake gets no answer), and the TLS port behind redis://.
    // Both say which scheme to try, and exit 5: no answer and a hang-up are also what a server too busy
    // or full, or a proxy without a backend, gives, which trying again later can cure.
    let plain = RedisServer::new();
    let out = copy(&format!("rediss://127.0.0.1:{}", plain.port()), &["--connect-timeout", "1"]);
    assert_exit(&out, 5);
    let line = error_line(&out);
    assert!(line.contains("TLS") && line.contains("use redis://"), "{line}");
    assert_eq!(dbsize(&mut plain.conn()), 0);
    let out = copy(&format!("redis://127.0.0.1:{port}"), &[]);
    assert_exit(&out, 5);
    let line = stderr(&out);
    assert!(line.contains("use rediss://"), "{}", dump(&out));
    assert_eq!(dbsize(&mut dst.server.conn()), 0);
}

#[test]
fn insecure_skips_verification_and_warns_once_per_side() {
    let pki = Pki::new();
    let src = RedisServer::new();
    let dst = TlsServer::start(&pki, "server", false);
    let dir = tempfile::tempdir().unwrap();
    let keys = fill_strings(&mut src.conn(), "ins:", 2000);

    // Nothing here trusts the test CA, yet the copy goes through; several connections, one warning.
    let out = ferry([
        "copy",
        &src.addr(),
        &dst.url(),
        "--target-tls-insecure",
        "--writers",
        "3",
        "--batch",
        "100",
        "--errors",
        &csv(dir.path()),
    ]);
    assert_exit(&out, 0);
    assert_eq!(summary(&out).copied, 2000);
    assert_same(&mut src.conn(), &mut dst.server.conn(), &keys);
    let err = stderr(&out);
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("--target-tls-insecure")).collect();
    assert_eq!(warnings.len(), 1, "one warning for the target\n{err}");
    assert!(warnings[0].contains("WARN") && warnings[0].contains("not verified"), "{}", warnings[0]);
    assert!(!err.contains("--source-tls-insecure"), "{err}");

    // On the source side of verify too.
    let out = ferry(["verify", &dst.url(), &src.addr(), "--source-tls-insecure"]);
    assert_exit(&out, 0);
    let err = stderr(&out);
    assert_eq!(err.lines().filter(|l| l.contains("--source-tls-insecure")).count(), 1, "{err}");
}

#[test]
fn tls_flags_are_checked_before_connecting() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("notes.txt");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let not_pem = not_pem.to_str().unwrap().to_string();
    let missing = dir.path().join("missing.pem").to_str().unwrap().to_string();
    let (cert, key) = (pki.path("client.pem"), pki.path("client-key.pem"));
    let other_key = pki.path("stranger-key.pem");
    // Nothing listens on these ports: every refusal must come from the flags alone.
    let (tls, plain) = ("rediss://127.0.0.1:1", "127.0.0.1:2");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![plain, tls, "--source-tls-ca", &cert],
            "--source-tls-ca is for TLS, but SOURCE is not a rediss:// URL",
        ),
        (vec![tls, plain, "--target-tls-insecure"], "--target-tls-insecure is for TLS, but TARGET"),
        (vec![tls, plain, "--source-tls-ca", &missing], "--source-tls-ca"),
        (vec![tls, plain, "--source-tls-ca", &not_pem], "no certificate in it"),
        (vec![tls, plain, "--source-tls-cert", &cert], "--source-tls-cert needs --source-tls-key"),
        (vec![tls, plain, "--source-tls-key", &key], "--source-tls-key needs --source-tls-cert"),
        (vec![tls, plain, "--source-tls-cert", &cert, "--source-tls-key", &cert], "no private key in it"),
        (
            vec![tls, plain, "--source-tls-cert", &cert, "--source-tls-key", &other_key],
            "is not the private key of --source-tls-cert",
        ),
        (vec![tls, plain, "--source-tls-insecure", "--source-tls-ca", &cert], "give one or the other"),
    ];
    for (args, expected) in cases {
        for command in ["copy", "verify"] {
            let mut full = vec![command];
            full.extend(&args);
            let out = ferry(&full);
            assert_exit(&out, 2);
            let err = stderr(&out);
            assert_eq!(err.lines().count(), 1, "{full:?}\n{err}");
            assert!(
                err.starts_with("error: ") && err.contains(expected),
                "{full:?}: expected {expected:?}\n{err}"
            );
            assert!(!err.contains("cannot connect"), "{full:?} got as far as connecting\n{err}");
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// A Redis Cluster that speaks only TLS
// ---------------------------------------------------------------------------------------------------

/// How long a TLS node may take to answer after spawning, and a TLS cluster to settle after
/// `--cluster create`.
const TLS_NODE_TIMEOUT: Duration = Duration::from_secs(15);

/// The redis crate's rustls needs a crypto provider; ring, as in the binary (an error only means one
/// is installed already).
fn install_crypto_provider() {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Trust exactly the CA `ca` (PEM), no client certificate.
fn trusting(ca: &[u8]) -> TlsCertificates {
    TlsCertificates { client_tls: None, root_cert: Some(ca.to_vec()) }
}

/// A TLS connection to `rediss://127.0.0.1:PORT` that trusts the CA `ca` (PEM), with timeouts.
fn tls_conn(port: u16, ca: &[u8]) -> redis::RedisResult<Connection> {
    install_crypto_provider();
    let client = redis::Client::build_with_tls(format!("rediss://127.0.0.1:{port}"), trusting(ca))?;
    let con = client.get_connection_with_timeout(Duration::from_secs(2))?;
    con.set_read_timeout(Some(Duration::from_secs(30)))?;
    con.set_write_timeout(Some(Duration::from_secs(30)))?;
    Ok(con)
}

/// One cluster node with no plain port at all (`--port 0`): clients on its TLS port, and the cluster
/// bus over TLS too (`--tls-cluster yes`, on the TLS port + 10000). It serves server.pem (valid for
/// 127.0.0.1) and does not ask clients for certificates; the bus always does, so the bus connections it
/// opens present client.pem. Killed and reaped on drop.
struct TlsNode {
    /// The server process; `None` only while dropping.
    child: Option<Child>,
    /// Its TLS port, the only one it listens on for clients.
    port: u16,
    /// Its `--dir` (nodes.conf) and log file; removed on drop.
    dir: tempfile::TempDir,
}

impl TlsNode {
    /// Starts a node on a port whose bus port is free too, trying other ports when one was taken
    /// between picking and spawning.
    fn start(pki: &Pki, ca: &[u8]) -> TlsNode {
        let dir = tempfile::Builder::new().prefix("ferry-tls-node-").tempdir().unwrap();
        let mut node = TlsNode { child: None, port: 0, dir };
        let mut last_log = String::new();
        for _ in 0..8 {
            node.port = free_cluster_port();
            node.child = Some(node.spawn(pki));
            match node.wait_ready(ca) {
                Ok(()) => return node,
                Err(log) => {
                    node.kill();
                    last_log = log;
                }
            }
        }
        panic!("TLS cluster node did not start after 8 attempts; last log:\n{last_log}");
    }

    fn spawn(&self, pki: &Pki) -> Child {
        let log = File::create(self.log_path()).unwrap();
        let log2 = log.try_clone().unwrap();
        let tls = [
            ("--tls-cert-file", pki.path("server.pem")),
            ("--tls-key-file", pki.path("server-key.pem")),
            ("--tls-ca-cert-file", pki.path("ca.pem")),
            ("--tls-client-cert-file", pki.path("client.pem")),
            ("--tls-client-key-file", pki.path("client-key.pem")),
        ];
        Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir"])
            .arg(self.dir.path())
            .args(tls.iter().flat_map(|(flag, path)| [*flag, path.as_str()]))
            .args(["--tls-auth-clients", "no", "--tls-cluster", "yes", "--tls-replication", "yes"])
            .args(CLUSTER_NODE_ARGS)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .expect("spawn redis-server")
    }

    /// Polls over TLS until this node (checked by its process id) answers; Err with its log when the
    /// port was taken.
    fn wait_ready(&mut self, ca: &[u8]) -> Result<(), String> {
        let deadline = Instant::now() + TLS_NODE_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("child present");
            if let Some(status) = child.try_wait().unwrap() {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                if log.contains("Address already in use") {
                    return Err(log);
                }
                panic!("TLS cluster node exited at start ({status}); its log:\n{log}");
            }
            let pid = child.id();
            let answered = tls_conn(self.port, ca).and_then(|mut con| {
                let info: String = redis::cmd("INFO").arg("server").query(&mut con)?;
                Ok(info.lines().find_map(|l| l.strip_prefix("process_id:")?.trim().parse::<u32>().ok()))
            });
            match answered {
                Ok(Some(p)) if p == pid => return Ok(()),
                Ok(other) => {
                    return Err(format!("another server ({other:?}) answered on port {}", self.port))
                }
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                Err(e) => {
                    let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                    panic!("TLS node on port {} did not answer: {e}; its log:\n{log}", self.port);
                }
            }
        }
    }

    fn log_path(&self) -> std::path::PathBuf {
        self.dir.path().join("redis.log")
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for TlsNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three TLS-only primaries joined with `redis-cli --tls --cacert ca.pem --cluster create`; every node
/// killed on drop.
struct TlsCluster {
    /// The primaries in creation order (node 0 has the first third of the slots, and so on).
    nodes: Vec<TlsNode>,
    /// ca.pem's bytes, for the test's own TLS connections.
    ca: Vec<u8>,
}

impl TlsCluster {
    fn start(pki: &Pki) -> TlsCluster {
        let ca = std::fs::read(pki.path("ca.pem")).unwrap();
        let nodes: Vec<TlsNode> = (0..3).map(|_| TlsNode::start(pki, &ca)).collect();
        let cluster = TlsCluster { nodes, ca };
        let mut args: Vec<String> = vec!["--tls".into(), "--cacert".into(), pki.path("ca.pem")];
        args.extend(["--cluster", "create"].map(String::from));
        args.extend(cluster.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"].map(String::from));
        if let Err(e) = redis_cli(&args, None) {
            panic!("redis-cli --tls --cluster create failed: {e}\n{}", cluster.logs());
        }
        let deadline = Instant::now() + TLS_NODE_TIMEOUT;
        while let Err(reason) = cluster.check_ok() {
            if Instant::now() > deadline {
                panic!("TLS cluster did not settle: {reason}\n{}", cluster.logs());
            }
            thread::sleep(Duration::from_millis(20));
        }
        cluster
    }

    /// Every node, asked over TLS, says `cluster_state:ok` with all slots and all 3 nodes, and lists
    /// every node by its TLS port (the only port there is).
    fn check_ok(&self) -> Result<(), String> {
        for node in &self.nodes {
            let port = node.port;
            let mut con = tls_conn(port, &self.ca).map_err(|e| format!("connect to {port}: {e}"))?;
            let info: String =
                redis::cmd("CLUSTER").arg("INFO").query(&mut con).map_err(|e| e.to_string())?;
            let slots = format!("cluster_slots_ok:{CLUSTER_SLOTS}");
            for want in ["cluster_state:ok", &slots, "cluster_known_nodes:3"] {
                if !info.lines().any(|l| l.trim() == want) {
                    return Err(format!("node {port}: no {want} in CLUSTER INFO:\n{info}"));
                }
            }
            let view: String =
                redis::cmd("CLUSTER").arg("NODES").query(&mut con).map_err(|e| e.to_string())?;
            if let Some(other) =
                self.nodes.iter().find(|n| !view.contains(&format!(" 127.0.0.1:{}@", n.port)))
            {
                return Err(format!("node {port} does not list 127.0.0.1:{}:\n{view}", other.port));
            }
        }
        Ok(())
    }

    /// Node `i`'s TLS port.
    fn port(&self, i: usize) -> u16 {
        self.nodes[i].port
    }

    /// `rediss://127.0.0.1:PORT` of node `i`: SOURCE / TARGET.
    fn url_of(&self, i: usize) -> String {
        format!("rediss://127.0.0.1:{}", self.port(i))
    }

    /// A TLS connection to node `i` only.
    fn node_conn(&self, i: usize) -> Connection {
        tls_conn(self.port(i), &self.ca).unwrap_or_else(|e| panic!("connect to node {}: {e}", self.port(i)))
    }

    /// A TLS cluster connection (routes by key, follows MOVED / ASK), independent of redis-ferry.
    fn conn(&self) -> ClusterConnection {
        install_crypto_provider();
        let urls: Vec<String> = (0..self.nodes.len()).map(|i| self.url_of(i)).collect();
        ClusterClient::builder(urls)
            .certs(trusting(&self.ca))
            .connection_timeout(Duration::from_secs(5))
            .response_timeout(Duration::from_secs(30))
            .build()
            .and_then(|c| c.get_connection())
            .unwrap_or_else(|e| panic!("TLS cluster connection: {e}"))
    }

    /// DBSIZE of each primary, in creation order.
    fn dbsizes(&self) -> Vec<i64> {
        (0..self.nodes.len()).map(|i| dbsize(&mut self.node_conn(i))).collect()
    }

    /// The tail of each node's log, for failure messages.
    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let log = std::fs::read_to_string(n.log_path()).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(40)..].join("\n");
                format!("--- log of TLS node {} ---\n{tail}", n.port)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[test]
fn tls_cluster_nodes_are_reached_over_tls_in_both_directions() {
    let pki = Pki::new();
    let cluster = TlsCluster::start(&pki);
    let src = RedisServer::new();
    let back = RedisServer::new();
    let dir = tempfile::tempdir().unwrap();
    let errors = dir.path().join("errors.csv");
    let (ca, wrong_ca) = (pki.path("ca.pem"), pki.path("other-ca.pem"));
    let mut keys = fill_every_type(&mut src.conn(), false);
    keys.extend(fill_strings(&mut src.conn(), "tls-cluster:", 400));
    let n = keys.len() as u64;
    // SOURCE / TARGET name node 1 (of 0, 1, 2); the others are found through its CLUSTER NODES.
    let seed = cluster.url_of(1);
    let errors_arg = csv(dir.path());
    let copy = |from: &str, to: &str, tls: &[&str]| {
        let mut args = vec!["copy", from, to, "--errors", &errors_arg];
        args.extend(tls);
        ferry(args)
    };

    // A CA that did not sign the nodes' certificates: refused at preflight, nothing written.
    let out = copy(&src.addr(), &seed, &["--target-tls-ca", &wrong_ca]);
    assert_exit(&out, 2);
    let line = error_line(&out);
    let p1 = cluster.port(1);
    assert!(line.starts_with(&format!("error: cannot connect to target 127.0.0.1:{p1}: TLS: ")), "{line}");
    assert!(line.contains("unknown issuer") && line.contains("--target-tls-ca"), "{line}");
    assert_eq!(cluster.dbsizes(), [0, 0, 0], "a refused run wrote to the cluster");
    assert!(!errors.exists());

    // Plain standalone source into the TLS cluster: every primary (TLS only, no plain port) gets its
    // share, checked with the redis crate's own TLS cluster client, then with verify.
    let out = copy(&src.addr(), &seed, &["--target-tls-ca", &ca]);
    assert_exit(&out, 0);
    let s = summary(&out);
    assert_eq!(buckets(&s), (n, n, 0, 0, 0), "{}", s.line);
    let sizes = cluster.dbsizes();
    assert!(sizes.iter().all(|&k| k > 0), "some primary got no keys: {sizes:?}");
    assert_eq!(sizes.iter().sum::<i64>(), n as i64, "{sizes:?}");
    assert_same(&mut src.conn(), &mut cluster.conn(), &keys);
    let out = ferry(["verify", &src.addr(), &seed, "--target-tls-ca", &ca]);
    assert_exit(&out, 0);
    assert_eq!(verify_summary(&out).matched, n, "{}", dump(&out));
    assert!(!errors.exists(), "no key failed, so no CSV");

    // The TLS cluster as SOURCE: the wrong CA first (nothing written), then back into a fresh server.
    let seed = cluster.url_of(2);
    let out = copy(&seed, &back.addr(), &["--source-tls-ca", &wrong_ca]);
    assert_exit(&out, 2);
    let line = error_line(&out);
    let p2 = cluster.port(2);
    assert!(line.starts_with(&format!("error: cannot connect to source 127.0.0.1:{p2}: TLS: ")), "{line}");
    assert!(line.contains("unknown issuer") && line.contains("--source-tls-ca"), "{line}");
    assert_eq!(dbsize(&mut back.conn()), 0);
    let out = copy(&seed, &back.addr(), &["--source-tls-ca", &ca]);
    assert_exit(&out, 0);
    let s = summary(&out);
    assert_eq!(buckets(&s), (n, n, 0, 0, 0), "{}", s.line);
    assert_eq!(show_keys(&all_keys(&mut back.conn())), show_keys(&set_of(&keys)));
    assert_same(&mut src.conn(), &mut back.conn(), &keys);
    let out = ferry(["verify", &seed, &back.addr(), "--source-tls-ca", &ca]);
    assert_exit(&out, 0);
    assert_eq!(verify_summary(&out).matched, n, "{}", dump(&out));
    assert!(!errors.exists(), "no key failed, so no CSV");

    // Each node's certificate is verified, not only the seed's: node 2 now serves one for another
    // name (same CA, which the cluster bus accepts), so a copy seeded at node 0 stops at preflight.
    // The connection made before the change stays usable, to change it back.
    let mut node2 = cluster.node_conn(2);
    let serve = |con: &mut Connection, cert: &str| {
        let (cert, key) = (pki.path(&format!("{cert}.pem")), pki.path(&format!("{cert}-key.pem")));
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("tls-cert-file")
            .arg(cert)
            .arg("tls-key-file")
            .arg(key)
            .query(con)
            .unwrap();
    };
    serve(&mut node2, "elsewhere");
    let _: () = redis::cmd("SET").arg("tls-cluster:late").arg("v").query(&mut src.conn()).unwrap();
    let out = copy(&src.addr(), &cluster.url_of(0), &["--target-tls-ca", &ca]);
    serve(&mut node2, "server");
    assert_exit(&out, 2);
    let line = error_line(&out);
    assert!(line.starts_with(&format!("error: cannot connect to target 127.0.0.1:{p2}: TLS: ")), "{line}");
    assert!(line.contains("redis.elsewhere.test"), "{line}");
    assert_eq!(cluster.dbsizes().iter().sum::<i64>(), n as i64, "a refused run wrote to the cluster");
    assert!(!errors.exists());
}
