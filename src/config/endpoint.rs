//! Parsing SOURCE and TARGET: `host:port` or `redis[s]://[user[:password]@]host[:port][/db]` into an
//! [`Endpoint`], with the db flag and the password variable applied; and the URL with its password
//! masked, for messages. No I/O but reading the password variable.

use super::{bad, ConfigError};
use crate::redis::endpoint::{Endpoint, Reads, Role, Tls};

impl Endpoint {
    /// Parses `host:port` or `redis://[user[:password]@]host[:port][/db]`; `db_flag` overrides the URL's
    /// db and `env_password` (the role's variable) fills in a password the URL lacks.
    pub fn parse(
        role: Role,
        text: &str,
        db_flag: Option<i64>,
        env_password: Option<String>,
    ) -> Result<Endpoint, ConfigError> {
        let what = role.name().to_uppercase();
        let (rest, is_url, tls) = if let Some(rest) = text.strip_prefix("redis://") {
            (rest, true, false)
        } else if let Some(rest) = text.strip_prefix("rediss://") {
            (rest, true, true)
        } else if text.contains("://") {
            return Err(bad(format!(
                "{what} `{}`: unknown scheme; use host:port, redis://host:port or rediss://host:port (TLS)",
                redact(text)
            )));
        } else {
            (text, false, false)
        };
        let (userinfo, hostpart) = match rest.rsplit_once('@') {
            Some((u, h)) if is_url => (Some(u), h),
            _ => (None, rest),
        };
        let (authority, path) = match hostpart.split_once('/') {
            Some((a, p)) if is_url => (a, Some(p)),
            _ => (hostpart, None),
        };
        let (host, port) = split_host_port(authority, is_url)
            .map_err(|why| bad(format!("{what} `{}`: {why}", redact(text))))?;
        let (mut username, mut password) = (None, None);
        if let Some(info) = userinfo {
            let (u, p) = match info.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (info, None),
            };
            if !u.is_empty() {
                username = Some(percent_decode(u).map_err(|why| bad(format!("{what}: user name {why}")))?);
            }
            if let Some(p) = p {
                password = Some(
                    percent_decode(p)
                        .map_err(|_| bad(format!("{what}: the password is not valid percent-encoding")))?,
                );
            }
        }
        if password.is_none() {
            password = env_password.filter(|p| !p.is_empty());
        }
        // A user name is always used: without a password it logs in with an empty one, which the server
        // accepts for a `nopass` user and refuses otherwise (never the default user instead).
        if username.is_some() && password.is_none() {
            password = Some(String::new());
        }
        let url_db =
            match path.map(|p| p.split('?').next().unwrap_or("")) {
                None | Some("") => 0,
                Some(db) => db.parse::<i64>().ok().filter(|db| *db >= 0).ok_or_else(|| {
                    bad(format!("{what} `{}`: `{db}` is not a database number", redact(text)))
                })?,
            };
        let db = match db_flag {
            Some(db) if db < 0 => {
                return Err(bad(format!("--{}-db must be 0 or more (got {db})", role.name())))
            }
            Some(db) => db,
            None => url_db,
        };
        Ok(Endpoint {
            role,
            host,
            port,
            username,
            password,
            db,
            tls: tls.then(Tls::default),
            reads: Reads::Primary,
        })
    }

    /// Reads the role's password variable from the environment.
    pub fn env_password(role: Role) -> Option<String> {
        std::env::var(role.password_var()).ok()
    }
}

/// Splits `host[:port]` (IPv6 in brackets); the port is required without a URL scheme.
fn split_host_port(authority: &str, is_url: bool) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unclosed [ in the IPv6 address")?;
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(format!("unexpected `{after}` after the address")),
        }
    } else {
        match authority.split_once(':') {
            Some((_, rest)) if rest.contains(':') => {
                return Err("more than one `:` (an IPv6 address goes in brackets: [::1]:6379)".into())
            }
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("the host is missing".into());
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("`{p}` is not a port number (1-65535)"))?,
        None if is_url => 6379,
        None => return Err("the port is missing (expected host:port)".into()),
    };
    Ok((host.to_string(), port))
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("has a bad %-escape")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "is not UTF-8".to_string())
}

/// The URL with any password replaced by `***`, for messages.
pub fn redact(text: &str) -> String {
    if let Some((scheme, rest)) = text.split_once("://") {
        if let Some((info, host)) = rest.rsplit_once('@') {
            if let Some((user, _)) = info.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    text.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(text: &str) -> Result<Endpoint, ConfigError> {
        Endpoint::parse(Role::Source, text, None, None)
    }

    #[test]
    fn host_port_and_urls() {
        let e = ep("10.0.0.5:6380").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.db), ("10.0.0.5", 6380, 0));
        let e = ep("redis://alice:s%40cret@cache.local:7000/3").unwrap();
        assert_eq!(e.host, "cache.local");
        assert_eq!(e.port, 7000);
        assert_eq!(e.db, 3);
        assert_eq!(e.username.as_deref(), Some("alice"));
        assert_eq!(e.password.as_deref(), Some("s@cret"));
        let e = ep("redis://:pw@localhost").unwrap();
        assert_eq!((e.port, e.username, e.password.as_deref()), (6379, None, Some("pw")));
        let e = ep("redis://[::1]:7001").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 7001));
    }

    #[test]
    fn a_user_name_without_a_password_logs_in_with_an_empty_one() {
        let e = ep("redis://limited@h:1").unwrap();
        assert_eq!((e.username.as_deref(), e.password.as_deref()), (Some("limited"), Some("")));
        let e = Endpoint::parse(Role::Source, "redis://limited@h:1", None, Some("env".into())).unwrap();
        assert_eq!(e.password.as_deref(), Some("env"));
        assert_eq!(ep("redis://h:1").unwrap().password, None);
    }

    #[test]
    fn password_from_environment_and_db_override() {
        let e = Endpoint::parse(Role::Target, "redis://h:1/2", Some(5), Some("env".into())).unwrap();
        assert_eq!((e.db, e.password.as_deref()), (5, Some("env")));
        let e = Endpoint::parse(Role::Target, "redis://:url@h:1", None, Some("env".into())).unwrap();
        assert_eq!(e.password.as_deref(), Some("url"));
    }

    #[test]
    fn display_never_shows_the_password() {
        let e = ep("redis://u:topsecret@h:1/2").unwrap();
        assert_eq!(e.to_string(), "h:1/2");
        assert!(!format!("{e:?}").contains("topsecret"));
        assert_eq!(redact("redis://u:topsecret@h:1"), "redis://u:***@h:1");
    }

    #[test]
    fn malformed_endpoints_are_refused_by_name() {
        for text in [
            "redis://127.0.0.1:notaport",
            "localhost",
            ":6379",
            "redis://h:0",
            "redis://h:1/x",
            "http://h:1",
            "127.0.0.1:6379:99",
            "redis://h:6379:1",
            "h:",
        ] {
            let err = ep(text).unwrap_err().to_string();
            assert!(err.starts_with("SOURCE"), "{text}: {err}");
        }
        let err = ep("redis://u:pw@h:notaport").unwrap_err().to_string();
        assert!(!err.contains("pw@"), "{err}");
    }
}
