//! A side's memory as INFO tells it on every node, summed over a cluster's primaries: how much data it
//! holds, how much room is left, whether it evicts, and how many keys it has evicted so far.

use super::conn::Conn;
use super::server::ServerInfo;

/// What INFO says of memory on every node of a side, summed.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    /// `used_memory_dataset`, summed.
    pub dataset: u64,
    /// `used_memory`, summed.
    pub used: u64,
    /// `maxmemory`, summed over the nodes that have one.
    pub max: u64,
    /// `evicted_keys`, summed.
    pub evicted_keys: u64,
    /// The eviction policy of a node that evicts, if one does.
    pub evicting: Option<String>,
}

impl Memory {
    /// Reads INFO on every node of `conn`.
    pub fn of(conn: &mut Conn) -> Result<Memory, redis::RedisError> {
        let texts: Vec<String> = conn.on_each(&redis::cmd("INFO"))?;
        let mut m = Memory::default();
        for info in texts.iter().map(|t| ServerInfo::parse(t)) {
            m.dataset += info.dataset;
            m.used += info.used_memory;
            m.max += info.maxmemory;
            m.evicted_keys += info.evicted_keys;
            if info.evicts() {
                m.evicting.get_or_insert(info.policy.clone());
            }
        }
        Ok(m)
    }
}
