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

use std::path::Path;
use std::process::Output;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

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

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
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
    let plain = RedisServer::new();
    let out = copy(&format!("rediss://127.0.0.1:{}", plain.port()), &["--connect-timeout", "1"]);
    assert_exit(&out, 2);
    let line = error_line(&out);
    assert!(line.contains("TLS") && line.contains("use redis://"), "{line}");
    assert_eq!(dbsize(&mut plain.conn()), 0);
    let out = copy(&format!("redis://127.0.0.1:{port}"), &[]);
    assert_exit(&out, 2);
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
