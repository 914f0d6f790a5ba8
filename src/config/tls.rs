//! The `--<role>-tls-*` flags of one side: checked against its URL, and the PEM files they name read
//! and checked once (certificates parse, the key belongs to the certificate), so that every reconnection
//! uses the same bytes and every error names its flag.

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{bad, ConfigError};
use crate::redis::endpoint::{ClientCert, Role, Tls};

/// The `--<role>-tls-*` flags of one side, as given on the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct TlsFlags<'a> {
    /// `--<role>-tls-ca FILE`.
    pub ca: Option<&'a str>,
    /// `--<role>-tls-cert FILE`.
    pub cert: Option<&'a str>,
    /// `--<role>-tls-key FILE`.
    pub key: Option<&'a str>,
    /// `--<role>-tls-insecure`.
    pub insecure: bool,
    /// Which of them came from the `--tls-*` shorthands (for the flag names in messages).
    pub shared: Shared,
}

/// Which of a side's TLS flags came from the `--tls-*` shorthands: `ca`, `cert`, `key`, `insecure`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shared {
    /// `--tls-ca`.
    pub ca: bool,
    /// `--tls-cert`.
    pub cert: bool,
    /// `--tls-key`.
    pub key: bool,
    /// `--tls-insecure`.
    pub insecure: bool,
}

impl<'a> TlsFlags<'a> {
    /// Whether any flag is given.
    pub fn any(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some() || self.insecure
    }

    /// A side's own flags, with the shorthands `shared` for each kind the side does not give itself (its
    /// own flag wins; a client certificate and its key go together).
    pub fn or(self, shared: TlsFlags<'a>) -> TlsFlags<'a> {
        let own_client = self.cert.is_some() || self.key.is_some();
        let take_ca = self.ca.is_none() && shared.ca.is_some();
        let take_client = !own_client && (shared.cert.is_some() || shared.key.is_some());
        let take_insecure = !self.insecure && shared.insecure;
        TlsFlags {
            ca: if take_ca { shared.ca } else { self.ca },
            cert: if take_client { shared.cert } else { self.cert },
            key: if take_client { shared.key } else { self.key },
            insecure: self.insecure || shared.insecure,
            shared: Shared { ca: take_ca, cert: take_client, key: take_client, insecure: take_insecure },
        }
    }
}

impl Tls {
    /// Checks one side's TLS flags against its URL and reads the files they name. `url_tls` says whether
    /// the URL was `rediss://`: TLS flags on a plain endpoint are refused rather than silently ignored.
    pub fn from_flags(role: Role, flags: TlsFlags<'_>, url_tls: bool) -> Result<Option<Tls>, ConfigError> {
        let name = role.name();
        let shared = flags.shared;
        let flag = |what: &str| {
            let from_shorthand = match what {
                "ca" => shared.ca,
                "cert" => shared.cert,
                "key" => shared.key,
                _ => shared.insecure,
            };
            match from_shorthand {
                true => format!("--tls-{what}"),
                false => format!("--{name}-tls-{what}"),
            }
        };
        if !url_tls {
            // The shorthands are for the sides that speak TLS; a side's own flag on a plain URL is refused.
            let given = [
                ("ca", flags.ca.is_some() && !shared.ca),
                ("cert", flags.cert.is_some() && !shared.cert),
                ("key", flags.key.is_some() && !shared.key),
                ("insecure", flags.insecure && !shared.insecure),
            ];
            return match given.iter().find(|(_, on)| *on) {
                Some((what, _)) => Err(bad(format!(
                    "{} is for TLS, but {} is not a rediss:// URL; write it as rediss://host:port",
                    flag(what),
                    name.to_uppercase()
                ))),
                None => Ok(None),
            };
        }
        if flags.insecure && flags.ca.is_some() {
            return Err(bad(format!(
                "{} skips certificate verification, so {} would be ignored; give one or the other",
                flag("insecure"),
                flag("ca")
            )));
        }
        let ca = match flags.ca {
            None => None,
            Some(path) => {
                let bytes = read_pem_file(&flag("ca"), path)?;
                let mut roots = rustls::RootCertStore::empty();
                for (i, cert) in certificates(&flag("ca"), path, &bytes)?.into_iter().enumerate() {
                    roots.add(cert).map_err(|e| {
                        bad(format!(
                            "{} {path}: certificate {} cannot be a trust anchor: {e}",
                            flag("ca"),
                            i + 1
                        ))
                    })?;
                }
                Some(bytes)
            }
        };
        let client = match (flags.cert, flags.key) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(bad(format!(
                    "{} needs {} (the certificate's private key)",
                    flag("cert"),
                    flag("key")
                )))
            }
            (None, Some(_)) => {
                return Err(bad(format!(
                    "{} needs {} (the certificate it belongs to)",
                    flag("key"),
                    flag("cert")
                )))
            }
            (Some(cert_path), Some(key_path)) => {
                Some(client_cert(&flag("cert"), cert_path, &flag("key"), key_path)?)
            }
        };
        Ok(Some(Tls { ca, client, insecure: flags.insecure }))
    }
}

/// Reads and checks a client certificate and its key (`--<role>-tls-cert`, `--<role>-tls-key`): the
/// checks rustls makes when it connects, made now so that the error can name the flag.
fn client_cert(
    cert_flag: &str,
    cert_path: &str,
    key_flag: &str,
    key_path: &str,
) -> Result<ClientCert, ConfigError> {
    let cert = read_pem_file(cert_flag, cert_path)?;
    let chain = certificates(cert_flag, cert_path, &cert)?;
    let key = read_pem_file(key_flag, key_path)?;
    let parsed = PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
                    bad(format!(
                        "{} {key_path}: {}",
                        key_flag,
                        match e {
                            pem::Error::NoItemsFound => "no private key in it (expected an unencrypted PEM key: \
                                                         BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
                                .to_string(),
                            e => pem_problem(&e),
                        }
                    ))
                })?;
    // The checks rustls makes when it connects, made now so the error can name the flag.
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(chain, parsed, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            bad(format!("{} {key_path} is not the private key of {} {cert_path}", key_flag, cert_flag))
        }
        rustls::Error::InvalidCertificate(_) if e.to_string().contains("UnsupportedCertVersion") => {
            bad(format!(
                "{} {cert_path}: an X.509 version 1 certificate, which rustls refuses; issue a \
                             version 3 one (with extensions)",
                cert_flag
            ))
        }
        rustls::Error::InvalidCertificate(_) => {
            bad(format!("{} {cert_path}: rustls cannot use this certificate ({e})", cert_flag))
        }
        e => bad(format!("{} {key_path}: unusable private key ({e})", key_flag)),
    })?;
    Ok(ClientCert { cert, key })
}

/// Reads a PEM file named by `flag`.
fn read_pem_file(flag: &str, path: &str) -> Result<Vec<u8>, ConfigError> {
    if path.is_empty() {
        return Err(bad(format!("{flag} needs a file name")));
    }
    std::fs::read(path).map_err(|e| bad(format!("{flag} {path}: cannot read it: {e}")))
}

/// The certificates in a PEM file; at least one.
fn certificates(flag: &str, path: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("{flag} {path}: {}", pem_problem(&e))))?;
    if certs.is_empty() {
        return Err(bad(format!(
            "{flag} {path}: no certificate in it (expected PEM: -----BEGIN CERTIFICATE-----)"
        )));
    }
    Ok(certs)
}

/// A PEM parse error in words (its own Display prints raw bytes).
fn pem_problem(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { .. } => "not valid PEM: a section has no -----END line".into(),
        pem::Error::IllegalSectionStart { .. } => "not valid PEM: a malformed -----BEGIN line".into(),
        pem::Error::Base64Decode(_) => "not valid PEM: bad base64 inside a section".into(),
        pem::Error::NoItemsFound => "nothing usable in it".into(),
        other => format!("not valid PEM: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::endpoint::Endpoint;

    fn ep(text: &str) -> Result<Endpoint, ConfigError> {
        Endpoint::parse(Role::Source, text, None, None)
    }

    #[test]
    fn a_sides_own_flag_wins_over_the_shorthand_kind_by_kind() {
        let shared =
            TlsFlags { ca: Some("shared-ca"), cert: Some("c"), key: Some("k"), ..TlsFlags::default() };
        let own = TlsFlags { ca: Some("own-ca"), ..TlsFlags::default() };
        let merged = own.or(shared);
        assert_eq!((merged.ca, merged.cert, merged.key), (Some("own-ca"), Some("c"), Some("k")));
        assert_eq!(merged.shared, Shared { ca: false, cert: true, key: true, insecure: false });
        // A client certificate and its key go together: a side's own certificate takes no shared key.
        let own = TlsFlags { cert: Some("own-c"), ..TlsFlags::default() };
        let merged = own.or(shared);
        assert_eq!((merged.cert, merged.key, merged.shared.key), (Some("own-c"), None, false));
        // On a plain URL a shorthand is not an error; a side's own flag is.
        let plain = TlsFlags::default().or(shared);
        assert!(Tls::from_flags(Role::Source, plain, false).unwrap().is_none());
        let err = Tls::from_flags(Role::Source, own.or(shared), false).unwrap_err().0;
        assert!(err.contains("--source-tls-cert is for TLS"), "{err}");
        let err = Tls::from_flags(Role::Target, TlsFlags::default().or(shared), true).unwrap_err().0;
        assert!(err.contains("--tls-ca shared-ca"), "{err}");
    }

    #[test]
    fn rediss_urls_and_tls_flags() {
        let e = ep("rediss://u:pw@cache.example:6380/1").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.db), ("cache.example", 6380, 1));
        assert!(e.tls == Some(Tls::default()), "system roots, verified");
        assert!(ep("rediss://cache.example").unwrap().port == 6379);
        assert!(ep("redis://h:1").unwrap().tls.is_none());
        let insecure = TlsFlags { insecure: true, ..TlsFlags::default() };
        let t = Tls::from_flags(Role::Target, insecure, true).unwrap().unwrap();
        assert!(t.insecure && t.ca.is_none() && t.client.is_none());
        let refused =
            |flags: TlsFlags<'_>, tls: bool| Tls::from_flags(Role::Source, flags, tls).unwrap_err().0;
        let err = refused(insecure, false);
        assert!(
            err.starts_with("--source-tls-insecure is for TLS, but SOURCE is not a rediss:// URL"),
            "{err}"
        );
        let err = refused(TlsFlags { cert: Some("c.pem"), ..TlsFlags::default() }, true);
        assert_eq!(err, "--source-tls-cert needs --source-tls-key (the certificate's private key)");
        let err = refused(TlsFlags { ca: Some("ca.pem"), insecure: true, ..TlsFlags::default() }, true);
        assert!(err.contains("give one or the other"), "{err}");
        let err = refused(TlsFlags { ca: Some(""), ..TlsFlags::default() }, true);
        assert_eq!(err, "--source-tls-ca needs a file name");
    }
}
