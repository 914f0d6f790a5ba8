//! Where a server is and how to reach it, as plain data: the leaf every other room uses. [`Endpoint`]
//! (host, port, login, db, TLS, [`Reads`]), [`Role`] (source or target), [`Timeouts`] and the [`Retry`] policy.
//! Parsing a URL into an `Endpoint` is the config's (`config/endpoint.rs`); connecting is
//! `connect.rs`'s. Nothing here does I/O.

use std::time::Duration;

/// Which side of the copy an endpoint is; used in messages and to pick the password variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The server keys are read from.
    Source,
    /// The server keys are written to.
    Target,
}

impl Role {
    /// Lower-case name for messages ("source", "target").
    pub fn name(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Target => "target",
        }
    }

    /// The environment variable a password for this side may come from.
    pub fn password_var(self) -> &'static str {
        match self {
            Role::Source => "REDIS_FERRY_SOURCE_PASSWORD",
            Role::Target => "REDIS_FERRY_TARGET_PASSWORD",
        }
    }
}

/// Where a server is and how to log in. Its `Display` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Source or target, for messages.
    pub role: Role,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// ACL user name, if any (`AUTH user password`).
    pub username: Option<String>,
    /// Password, from the URL or the role's environment variable.
    pub password: Option<String>,
    /// Logical database to SELECT.
    pub db: i64,
    /// `Some` for a `rediss://` URL: how to speak TLS to it.
    pub tls: Option<Tls>,
    /// Which server of its shard is read (`--read-from`; a target is always the server named).
    pub reads: Reads,
}

/// Which server of a source's shard keys are read from (`--read-from`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Reads {
    /// The server named; on a cluster, each slot's primary.
    #[default]
    Primary,
    /// A replica of it whose link to it is up (on a cluster, one per primary, with READONLY); the
    /// primary itself, with a warning, where there is none.
    Replica,
}

/// How to speak TLS to one `rediss://` server. Holds PEM bytes, never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// CA certificates trusted instead of the system roots (`--<role>-tls-ca`); `None` trusts the system's.
    pub ca: Option<Vec<u8>>,
    /// Certificate and key presented to a server that requires client certificates (mutual TLS).
    pub client: Option<ClientCert>,
    /// `--<role>-tls-insecure`: accept any certificate for any name.
    pub insecure: bool,
}

impl std::fmt::Debug for Tls {
    /// Which options are set; never the certificates or the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("ca", &if self.ca.is_some() { "from file" } else { "system roots" })
            .field("client_cert", &self.client.is_some())
            .field("insecure", &self.insecure)
            .finish()
    }
}

/// A client certificate for mutual TLS, as PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The certificate chain, leaf first (`--<role>-tls-cert`).
    pub cert: Vec<u8>,
    /// Its private key (`--<role>-tls-key`).
    pub key: Vec<u8>,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "{}:{}", self.host, self.port)?;
        }
        if self.db != 0 {
            write!(f, "/{}", self.db)?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Endpoint({} {})", self.role.name(), self)
    }
}

/// Connection timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Time allowed to establish a connection (and log in).
    pub connect: Duration,
    /// Time allowed for each read or write on an established connection.
    pub io: Duration,
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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
