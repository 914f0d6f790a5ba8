//! What a server is, read from INFO: version, cluster or not, run id, replication, memory; and the RDB
//! format version a Redis version writes. Pure parsing: the INFO itself is read by the caller.

/// Facts about a server read from INFO.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerInfo {
    /// `redis_version` as (major, minor, patch); (0, 0, 0) when absent.
    pub version: (u32, u32, u32),
    /// `cluster_enabled:1`.
    pub cluster: bool,
    /// `run_id`: changes with every start of the server (and with it the order SCAN cursors follow).
    pub run_id: String,
    /// `role:slave`: a replica, of `master_host:master_port`.
    pub replica_of: Option<String>,
    /// `slave_read_only:1`: a replica that refuses writes.
    pub read_only: bool,
    /// `master_replid`: the replication id, which a replica shares with its primary.
    pub replid: String,
    /// `maxmemory` in bytes; 0 is no limit.
    pub maxmemory: u64,
    /// `maxmemory_policy` (`noeviction`, `allkeys-lru`, ...).
    pub policy: String,
    /// `used_memory` in bytes.
    pub used_memory: u64,
    /// `used_memory_dataset`: the memory of the keys and values, in bytes.
    pub dataset: u64,
    /// `evicted_keys`: keys evicted since the server started (or its stats were reset).
    pub evicted_keys: u64,
    /// `valkey_version`, on a Valkey server (whose `redis_version` stays 7.2.4).
    pub valkey: Option<(u32, u32, u32)>,
    /// `master_link_status:up`: a replica in step with its primary.
    pub linked: bool,
    /// A primary's replicas whose state is `online` (`slave0:ip=…,port=…,state=online,…`), as host and
    /// port.
    pub replicas: Vec<(String, u16)>,
}

/// The address of a replica from its line of a primary's INFO (`ip=10.0.0.7,port=6380,state=online,…`),
/// if it is online.
fn online_replica(line: &str) -> Option<(String, u16)> {
    let field = |name: &str| line.split(',').find_map(|f| f.strip_prefix(name)?.strip_prefix('='));
    if field("state")? != "online" {
        return None;
    }
    Some((field("ip")?.to_string(), field("port")?.parse().ok()?))
}

impl ServerInfo {
    /// Parses the text of INFO.
    pub fn parse(text: &str) -> ServerInfo {
        let mut info = ServerInfo::default();
        let (mut master_host, mut master_port) = (None, None);
        let number = |v: &str| v.trim().parse::<u64>().unwrap_or(0);
        for line in text.lines() {
            let Some((name, v)) = line.split_once(':') else { continue };
            let v = v.trim();
            let triple = |v: &str| {
                let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
                (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0))
            };
            match name {
                "redis_version" => info.version = triple(v),
                "valkey_version" => info.valkey = Some(triple(v)),
                "cluster_enabled" => info.cluster = v == "1",
                "run_id" => info.run_id = v.to_string(),
                "role" if v == "slave" => info.replica_of = Some(String::new()),
                "master_host" => master_host = Some(v.to_string()),
                "master_port" => master_port = Some(v.to_string()),
                "slave_read_only" | "replica_read_only" => info.read_only = v == "1",
                "master_replid" => info.replid = v.to_string(),
                "maxmemory" => info.maxmemory = number(v),
                "maxmemory_policy" => info.policy = v.to_string(),
                "used_memory" => info.used_memory = number(v),
                "used_memory_dataset" => info.dataset = number(v),
                "evicted_keys" => info.evicted_keys = number(v),
                "master_link_status" => info.linked = v == "up",
                _ if name.strip_prefix("slave").is_some_and(|n| n.parse::<u32>().is_ok()) => {
                    info.replicas.extend(online_replica(v));
                }
                _ => {}
            }
        }
        if let (Some(primary), Some(host), Some(port)) = (info.replica_of.as_mut(), master_host, master_port)
        {
            *primary = format!("{host}:{port}");
        }
        info
    }

    /// PEXPIRETIME exists from Redis 7.0 on.
    pub fn has_pexpiretime(&self) -> bool {
        self.version >= (7, 0, 0)
    }

    /// Whether RESTORE here takes a payload of RDB `version` written by `fork`: Redis reads its own
    /// versions up to the one it writes; Valkey reads Redis's up to 11 (where the forks part ways), and
    /// Valkey 9 its own 80.
    pub fn restores(&self, version: u32, fork: crate::rdb::Fork) -> bool {
        use crate::rdb::{Fork, VALKEY_VERSION};
        match (self.valkey, fork) {
            (Some(v), Fork::Valkey) => v >= (9, 0, 0) && version == VALKEY_VERSION,
            (Some(_), Fork::Redis) => version <= 11,
            (None, Fork::Valkey) => false,
            (None, Fork::Redis) => rdb_version(self.version).is_some_and(|own| version <= own),
        }
    }

    /// The server evicts keys when it is full: a memory limit and a policy other than `noeviction`.
    pub fn evicts(&self) -> bool {
        self.maxmemory > 0 && !self.policy.is_empty() && self.policy != "noeviction"
    }
}

/// The RDB format version a Redis version writes in its DUMP payloads (`None` when unknown).
pub fn rdb_version(version: (u32, u32, u32)) -> Option<u32> {
    Some(match (version.0, version.1) {
        (0, _) | (1, _) | (2, 0..=5) => return None,
        (2, _) => 6,
        (3, _) => 7,
        (4, _) => 8,
        (5, _) | (6, _) => 9,
        (7, 0 | 1) => 10,
        (7, 2 | 3) => 11,
        (7, _) | (8, 0..=5) => 12,
        _ => 13,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdb_versions_by_redis_version() {
        assert_eq!(rdb_version((7, 0, 15)), Some(10));
        assert_eq!(rdb_version((7, 2, 4)), Some(11));
        assert_eq!(rdb_version((6, 2, 0)), Some(9));
        assert_eq!(rdb_version((8, 0, 0)), Some(12));
        assert_eq!(rdb_version((2, 4, 0)), None);
    }

    #[test]
    fn parses_info() {
        let info = ServerInfo::parse(
            "# Server\r\nredis_version:7.0.15\r\nrun_id:ab12\r\n# Cluster\r\ncluster_enabled:0\r\n",
        );
        assert_eq!(info.run_id, "ab12");
        assert_eq!(info.version, (7, 0, 15));
        assert!(!info.cluster);
        assert!(info.has_pexpiretime());
        let info = ServerInfo::parse("redis_version:6.2.1\ncluster_enabled:1\n");
        assert!(info.cluster);
        assert!(!info.has_pexpiretime());
    }

    #[test]
    fn parses_replication() {
        let primary = ServerInfo::parse(
            "role:master\r\nconnected_slaves:3\r\n\
             slave0:ip=10.0.0.7,port=6380,state=online,offset=98,lag=0\r\n\
             slave1:ip=10.0.0.8,port=6381,state=wait_bgsave,offset=0,lag=0\r\n\
             slave2:ip=::1,port=6382,state=online,offset=98,lag=1\r\nslave_read_only:1\r\n",
        );
        assert_eq!(primary.replicas, [("10.0.0.7".to_string(), 6380), ("::1".to_string(), 6382)]);
        assert!(primary.replica_of.is_none());
        let replica =
            ServerInfo::parse("role:slave\nmaster_host:10.0.0.6\nmaster_port:6379\nmaster_link_status:up\n");
        assert!(replica.linked);
        assert_eq!(replica.replica_of.as_deref(), Some("10.0.0.6:6379"));
        let syncing = ServerInfo::parse("role:slave\nmaster_link_status:down\n");
        assert!(syncing.replica_of.is_some() && !syncing.linked);
    }
}
