//! What must be true of the two servers before anything is written, read from the servers themselves:
//! that they are two servers (or two clusters), not one under two names; that the target takes writes;
//! that a target which evicts has room for what is coming. And the one place a connection is opened
//! and its server found out ([`open_checked`]): a cluster by itself, a db that does not exist by the
//! flag that names it.
//!
//! Identity is the server's, not the text the user typed: `localhost`, `127.0.0.1` and `127.1` are one
//! server, and so are two nodes of one cluster. A standalone server is known by its `run_id` (with the
//! db), a cluster by the ids of its primaries. A refusal is exit 2 and names both sides.

use crate::exit::Fatal;
use crate::redis::conn::Conn;
use crate::redis::endpoint::{Endpoint, Timeouts};
use crate::redis::memory::Memory;
use crate::redis::reply;
use crate::redis::server::ServerInfo;

/// Opens a connection and reads the server's facts. A Redis Cluster (INFO `cluster_enabled:1`) is
/// found by itself: the connection then reaches every primary, and a db other than 0 is refused.
pub fn open_checked(endpoint: &Endpoint, timeouts: Timeouts) -> Result<(Conn, ServerInfo), Fatal> {
    let role = endpoint.role.name();
    // db 0 first: a cluster refuses SELECT, and the db is checked below with a clearer message.
    let first = Endpoint { db: 0, ..endpoint.clone() };
    let mut conn = Conn::open(&first, timeouts).map_err(Fatal::from)?;
    let info = conn.server_info().map_err(|e| {
        reply::at_start(&e, format!("cannot read INFO from {role} {first}: {}", reply::explain(&e, endpoint)))
    })?;
    let db_flag = |why: &str| {
        Fatal::bad_input(format!(
            "--{role}-db {db} (or the URL's /{db}): the {role} {first} {why}",
            db = endpoint.db
        ))
    };
    if info.cluster {
        if endpoint.db != 0 {
            return Err(db_flag("is a Redis Cluster, which has only db 0"));
        }
        conn = Conn::open_cluster(endpoint, timeouts).map_err(Fatal::from)?;
    }
    if endpoint.db != 0 {
        let count = conn
            .call::<Vec<String>>(redis::cmd("CONFIG").arg("GET").arg("databases"), || true)
            .ok()
            .and_then(|pair| pair.get(1).and_then(|n| n.parse::<i64>().ok()));
        if let Some(n) = count.filter(|n| endpoint.db >= *n) {
            return Err(db_flag(&format!("has {n} databases, 0 to {}", n - 1)));
        }
        conn = Conn::open(endpoint, timeouts).map_err(|e| {
            if e.reason.contains("DB index is out of range") {
                db_flag("has no such database")
            } else {
                Fatal::from(e)
            }
        })?;
    }
    Ok((conn, info))
}

/// Opens one more connection to a side whose kind [`open_checked`] found: a standalone server, or every
/// primary of a cluster.
pub fn open_like(endpoint: &Endpoint, info: &ServerInfo, timeouts: Timeouts) -> Result<Conn, Fatal> {
    let conn = match info.cluster {
        true => Conn::open_cluster(endpoint, timeouts),
        false => Conn::open(endpoint, timeouts),
    };
    conn.map_err(Fatal::from)
}

/// What a side is, for the run's first log line: `redis 7.0.15`, and for a cluster its primaries (or
/// the replicas read instead of them).
pub fn describe(conn: &Conn, info: &ServerInfo) -> String {
    let (a, b, c) = info.version;
    let replicas = conn.replicas_read();
    let read = match replicas.len() {
        0 => String::new(),
        1 => format!(", read from its replica {}", replicas[0]),
        n => format!(", read from {n} replicas: {}", replicas.join(", ")),
    };
    if !conn.is_cluster() {
        return format!("redis {a}.{b}.{c}{read}");
    }
    let primaries = conn.primaries();
    if !replicas.is_empty() {
        return format!("redis {a}.{b}.{c}, a Redis Cluster of {} primaries{read}", primaries.len());
    }
    format!(
        "redis {a}.{b}.{c}, a Redis Cluster of {} primaries: {}",
        primaries.len(),
        primaries.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
    )
}

/// Refuses a target that is the source itself: the same standalone server and db (by `run_id`), a
/// primary and its replica (by `master_replid`, which a replica shares with its primary), or a node of
/// the same cluster (by the ids of its primaries). Without an id to compare (a proxy that
/// does not report one), the addresses are compared.
pub fn distinct(
    (source, source_info): (&Conn, &ServerInfo),
    (target, target_info): (&Conn, &ServerInfo),
) -> Result<(), Fatal> {
    let (s, t) = (source.endpoint(), target.endpoint());
    let same = match (source.is_cluster(), target.is_cluster()) {
        (true, true) => {
            let theirs = target.node_ids();
            source.node_ids().into_iter().find(|id| theirs.contains(id)).map(|id| {
                format!("are nodes of one Redis Cluster (primary {id} is in both); nothing to copy")
            })
        }
        (false, false) if s.db != t.db => None,
        (false, false) if !source_info.run_id.is_empty() && !target_info.run_id.is_empty() => {
            if source_info.run_id == target_info.run_id {
                Some(format!(
                    "are the same server (run_id {}) and db {}; nothing to copy",
                    source_info.run_id, s.db
                ))
            } else if !source_info.replid.is_empty() && source_info.replid == target_info.replid {
                // A primary and its replica (or two replicas of one primary) hold the same data: writing
                // one from the other would write the primary with what it already has, or older.
                Some(format!(
                    "hold the same data: one replicates the other (master_replid {}); nothing to copy",
                    source_info.replid
                ))
            } else {
                None
            }
        }
        (false, false) => (s.host == t.host && s.port == t.port)
            .then(|| format!("are the same address and db {}; nothing to copy", s.db)),
        _ => None,
    };
    match same {
        Some(why) => Err(Fatal::bad_input(format!("SOURCE {s} and TARGET {t} {why}"))),
        None => Ok(()),
    }
}

/// Refuses a target that cannot take writes: a read-only replica (every write would fail with
/// READONLY). A replica that takes writes is warned about: what is written there goes when it next
/// syncs with its primary.
pub fn writable(target: &Conn, info: &ServerInfo) -> Result<(), Fatal> {
    // A cluster may be given by any node, a replica too: its primaries are written.
    if target.is_cluster() {
        return Ok(());
    }
    let Some(primary) = &info.replica_of else { return Ok(()) };
    let t = target.endpoint();
    if info.read_only {
        return Err(Fatal::bad_input(format!(
            "the target {t} is a read-only replica (of {primary}): it refuses every write; give its primary as \
             TARGET"
        )));
    }
    log::warn!(
        "the target {t} is a writable replica (of {primary}): what is copied there is lost when it next syncs \
         with its primary"
    );
    Ok(())
}

/// Warns when the target evicts keys (a memory limit and a policy other than `noeviction`): always
/// that the run watches evictions, and when the source's data (all of it, when `everything` is
/// copied) is more than the target has free, that it will not fit. A warning, not a refusal: the
/// figures are estimates (memory per key differs between versions and encodings), some targets are
/// caches where evicting is expected, and a run that sees evictions says so and exits 1.
pub fn room(source: &Memory, target: &Memory, everything: bool) {
    let Some(policy) = &target.evicting else { return };
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let free = target.max.saturating_sub(target.used);
    log::warn!(
        "the target evicts keys when it is full (maxmemory {:.1} MiB, maxmemory-policy {policy}, {:.1} MiB free): \
         redis-ferry watches its evicted_keys, and a run that sees evictions exits 1",
        mib(target.max),
        mib(free)
    );
    if everything && source.dataset > free {
        log::warn!(
            "the source's data ({:.1} MiB) is more than the target has free ({:.1} MiB): keys will be evicted \
             unless the target's maxmemory is raised",
            mib(source.dataset),
            mib(free)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_and_memory_facts_are_read_from_info() {
        let info = ServerInfo::parse(
            "role:slave\r\nmaster_host:10.0.0.1\r\nmaster_port:6379\r\nslave_read_only:1\r\nmaxmemory:0\r\n",
        );
        assert_eq!(info.replica_of.as_deref(), Some("10.0.0.1:6379"));
        assert!(info.read_only && !info.evicts());
        let info = ServerInfo::parse("role:master\r\nmaxmemory:100\r\nmaxmemory_policy:allkeys-lru\r\n");
        assert!(info.replica_of.is_none() && info.evicts());
        assert!(!ServerInfo::parse("maxmemory:100\r\nmaxmemory_policy:noeviction\r\n").evicts());
    }
}
