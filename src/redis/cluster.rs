//! Redis Cluster facts: which slot a key hashes to, and which node serves which slot, as CLUSTER NODES
//! tells it. [`super::conn::Conn`] uses this map to send each key's commands to its node; the cluster source
//! uses the list of primaries to start one scanner per primary. Pure parsing: no I/O here.

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: usize = 16384;

/// CRC16-CCITT (XMODEM), the checksum Redis Cluster hashes keys with.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

/// The hash tag of a key: what lies between the first `{` and the next `}`, when that is not empty.
pub fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    let open = key.iter().position(|&b| b == b'{')?;
    let close = key[open + 1..].iter().position(|&b| b == b'}')?;
    (close > 0).then(|| &key[open + 1..open + 1 + close])
}

/// The cluster slot of a key (its hash tag's, when it has one).
pub fn slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key).unwrap_or(key)) % SLOTS as u16
}

/// The smallest decimal number whose slot is `slot`: a key, or a hash tag, that lands in that slot.
/// The numbers of all slots are found once per process (every slot has one below 10^6).
pub fn key_in_slot(slot: u16) -> Vec<u8> {
    static TABLE: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = vec![u32::MAX; SLOTS];
        let mut missing = SLOTS;
        for n in 0u32.. {
            let s = usize::from(crc16(n.to_string().as_bytes()) % SLOTS as u16);
            if table[s] == u32::MAX {
                table[s] = n;
                missing -= 1;
                if missing == 0 {
                    break;
                }
            }
        }
        table
    });
    table[usize::from(slot) % SLOTS].to_string().into_bytes()
}

/// A node as CLUSTER NODES lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The node's id (40 hex characters).
    pub id: String,
    /// Where to connect: its announced host name when it has one, else its IP address (the seed's host
    /// when the node does not know its own address yet).
    pub host: String,
    /// Its client port (the TLS port on a TLS cluster).
    pub port: u16,
}

/// The primaries of a cluster and the slots each serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The primaries that serve at least one slot, in the order CLUSTER NODES lists them.
    pub primaries: Vec<Node>,
    /// For each primary, the first replica CLUSTER NODES lists for it as connected and not failed.
    pub replicas: Vec<Option<Node>>,
    /// For each slot, the index in `primaries` of the node serving it; `None` for a slot no one serves.
    pub slots: Vec<Option<u16>>,
    /// How many slots are being migrated from one node to another right now.
    pub migrating: usize,
}

impl Topology {
    /// Parses the reply of CLUSTER NODES. `seed_host` stands in for a node that lists no address.
    /// Failed, address-less and handshaking nodes are left out. A replica is kept, as its primary's
    /// (see [`Topology::replicas`]), when its link to the cluster is up: `--read-from replica` reads it.
    /// Slots being migrated (`[slot->-id]`, `[slot-<-id]`) belong to the node
    /// that lists them as a plain slot or range: the one that still owns them.
    pub fn parse(text: &str, seed_host: &str) -> Result<Topology, String> {
        let mut primaries = Vec::new();
        let mut slots = vec![None; SLOTS];
        let mut migrating = 0;
        // (its primary's id, the replica)
        let mut standby: Vec<(&str, Node)> = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.len() < 8 {
                return Err(format!("unexpected CLUSTER NODES line: {line}"));
            }
            let flags: Vec<&str> = fields[2].split(',').collect();
            let healthy = !flags.iter().any(|f| matches!(*f, "fail" | "fail?" | "noaddr" | "handshake"));
            if healthy && flags.iter().any(|f| matches!(*f, "slave" | "replica")) && fields[7] == "connected"
            {
                let (host, port) = address(fields[1], seed_host)?;
                standby.push((fields[3], Node { id: fields[0].to_string(), host, port }));
                continue;
            }
            let usable = flags.contains(&"master")
                && !flags.iter().any(|f| matches!(*f, "fail" | "noaddr" | "handshake"));
            let ranges = &fields[8..];
            migrating += ranges.iter().filter(|r| r.contains("->-")).count();
            if !usable || ranges.iter().all(|r| r.starts_with('[')) {
                continue;
            }
            let (host, port) = address(fields[1], seed_host)?;
            let index = u16::try_from(primaries.len()).map_err(|_| "too many nodes".to_string())?;
            for range in ranges.iter().filter(|r| !r.starts_with('[')) {
                let (from, to) = match range.split_once('-') {
                    Some((a, b)) => (slot_number(a)?, slot_number(b)?),
                    None => (slot_number(range)?, slot_number(range)?),
                };
                for entry in &mut slots[from..=to] {
                    *entry = Some(index);
                }
            }
            primaries.push(Node { id: fields[0].to_string(), host, port });
        }
        if primaries.is_empty() {
            return Err("CLUSTER NODES lists no primary serving any slot".into());
        }
        let replicas = primaries
            .iter()
            .map(|p| standby.iter().find(|(of, _)| *of == p.id).map(|(_, r)| r.clone()))
            .collect();
        Ok(Topology { primaries, replicas, slots, migrating })
    }

    /// How many slots no primary serves.
    pub fn uncovered(&self) -> usize {
        self.slots.iter().filter(|s| s.is_none()).count()
    }
}

/// `ip:port@cport[,hostname]` as the host to connect to and the client port.
fn address(field: &str, seed_host: &str) -> Result<(String, u16), String> {
    let (addr, hostname) = match field.split_once(',') {
        Some((addr, name)) => (addr, Some(name).filter(|n| !n.is_empty())),
        None => (field, None),
    };
    let addr = addr.split('@').next().unwrap_or(addr);
    let (ip, port) = addr.rsplit_once(':').ok_or_else(|| format!("unexpected node address {field}"))?;
    let port = port.parse::<u16>().map_err(|_| format!("unexpected node address {field}"))?;
    let host = match hostname {
        Some(name) => name.to_string(),
        None if ip.is_empty() => seed_host.to_string(),
        None => ip.trim_start_matches('[').trim_end_matches(']').to_string(),
    };
    Ok((host, port))
}

fn slot_number(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n < SLOTS => Ok(n),
        _ => Err(format!("unexpected slot {text} in CLUSTER NODES")),
    }
}

/// A MOVED or ASK error's details (`3999 127.0.0.1:6381`): the slot and the address to go to.
pub fn redirect_target(details: &str, seed_host: &str) -> Option<(u16, String, u16)> {
    let mut parts = details.split_whitespace();
    let slot = parts.next()?.parse::<u16>().ok()?;
    let (host, port) = parts.next()?.rsplit_once(':')?;
    let host = if host.is_empty() { seed_host } else { host.trim_start_matches('[').trim_end_matches(']') };
    Some((slot, host.to_string(), port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_hash_tags() {
        // Values from the Redis Cluster specification and redis-cli CLUSTER KEYSLOT.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
        assert_eq!(slot(b"foo{{bar}}zap"), crc16(b"{bar") % 16384);
        assert_eq!(slot(b"foo{bar}{zap}"), crc16(b"bar") % 16384);
    }

    #[test]
    fn parses_cluster_nodes() {
        let text = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected
07c4 127.0.0.1:30006@40006 slave,fail 67ed 0 1426238317239 4 connected
07c5 127.0.0.1:30007@40007 slave 67ed 0 1426238317239 4 disconnected
67ed 127.0.0.1:30002@40002 master - 0 1426238316232 2 connected 5461-10922 [10923->-292f]
292f 127.0.0.1:30003@40003,node-c master - 0 1426238318243 3 connected 10923-16383 [10923-<-67ed]
e7d1 :30001@40001 myself,master - 0 0 1 connected 0-5460
dead 127.0.0.1:30005@40005 master,fail - 0 0 5 disconnected
";
        let t = Topology::parse(text, "seed.example").unwrap();
        let hosts: Vec<(&str, u16)> = t.primaries.iter().map(|n| (n.host.as_str(), n.port)).collect();
        assert_eq!(hosts, [("127.0.0.1", 30002), ("node-c", 30003), ("seed.example", 30001)]);
        assert_eq!(t.slots[0], Some(2));
        assert_eq!(t.slots[5461], Some(0));
        assert_eq!(t.slots[10923], Some(1));
        assert_eq!(t.slots[16383], Some(1));
        assert_eq!(t.uncovered(), 0);
        assert_eq!(t.migrating, 1);
        let replicas: Vec<Option<(&str, u16)>> =
            t.replicas.iter().map(|r| r.as_ref().map(|n| (n.host.as_str(), n.port))).collect();
        assert_eq!(
            replicas,
            [None, None, Some(("127.0.0.1", 30004))],
            "a failed or unlinked replica is none"
        );
        assert!(Topology::parse("", "x").is_err());
    }

    #[test]
    fn every_slot_has_a_key() {
        for s in [0, 1, 12182, 16383] {
            assert_eq!(slot(&key_in_slot(s)), s);
        }
        assert!((0..SLOTS as u16).all(|s| slot(&key_in_slot(s)) == s));
    }

    #[test]
    fn reads_redirections() {
        assert_eq!(redirect_target("3999 127.0.0.1:6381", "s"), Some((3999, "127.0.0.1".into(), 6381)));
        assert_eq!(redirect_target("12 :7000", "seed"), Some((12, "seed".into(), 7000)));
        assert_eq!(redirect_target("garbage", "s"), None);
    }
}
