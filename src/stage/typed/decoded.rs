//! The writes that make a decoded value (an RDB file's, page by page) under its temporary name: SET and
//! APPEND for a string's chunks, RPUSH, SADD, ZADD, HSET (and HPEXPIREAT for fields with a deadline, on
//! Redis 7.4+), XADD with each entry's own ID; at a stream's end its last ID and counters (XSETID), its
//! groups, consumers and pending entries, as the type-aware copy of a live stream writes them.

use redis::Cmd;

use crate::rdb::{Part, StreamMeta};

/// Turns the pages of one decoded value into writes on `tmp`.
pub struct Decoded {
    /// The temporary name.
    tmp: Vec<u8>,
    /// The target's version, for what it takes (hash field deadlines: 7.4; stream counters: 7.0;
    /// CREATECONSUMER: 6.2).
    target: (u32, u32, u32),
    /// Something was written to `tmp` already.
    started: bool,
}

impl Decoded {
    /// For a value built under `tmp` on a target of version `target`.
    pub fn new(tmp: Vec<u8>, target: (u32, u32, u32)) -> Decoded {
        Decoded { tmp, target, started: false }
    }

    /// The temporary name.
    pub fn tmp(&self) -> &[u8] {
        &self.tmp
    }

    /// The writes of one page; `Err` names what the target cannot take.
    pub fn writes(&mut self, part: &Part) -> Result<Vec<Cmd>, String> {
        let tmp = &self.tmp[..];
        let started = std::mem::replace(&mut self.started, true);
        let with = |name: &str, args: &mut dyn Iterator<Item = &[u8]>| {
            let mut c = redis::cmd(name);
            c.arg(tmp);
            for a in args {
                c.arg(a);
            }
            c
        };
        Ok(match part {
            Part::Chunk(bytes) => {
                vec![redis::cmd(if started { "APPEND" } else { "SET" }).arg(tmp).arg(&bytes[..]).clone()]
            }
            Part::Items(items) => vec![with("RPUSH", &mut items.iter().map(Vec::as_slice))],
            Part::Members(members) => vec![with("SADD", &mut members.iter().map(Vec::as_slice))],
            Part::Scored(pairs) => {
                let mut c = redis::cmd("ZADD");
                c.arg(tmp);
                for (score, member) in pairs {
                    c.arg(score_text(*score)).arg(&member[..]);
                }
                vec![c]
            }
            Part::Fields(fields) => {
                let mut set = redis::cmd("HSET");
                set.arg(tmp);
                for (f, v, _) in fields {
                    set.arg(&f[..]).arg(&v[..]);
                }
                let mut writes = vec![set];
                for (f, _, deadline) in fields {
                    let Some(at) = deadline else { continue };
                    if self.target < (7, 4, 0) {
                        return Err(format!(
                            "the hash has fields with a deadline, which need Redis 7.4 or later on the target \
                             (it is {}.{}.{})",
                            self.target.0, self.target.1, self.target.2
                        ));
                    }
                    writes.push(
                        redis::cmd("HPEXPIREAT").arg(tmp).arg(*at).arg("FIELDS").arg(1).arg(&f[..]).clone(),
                    );
                }
                writes
            }
            Part::Entries(entries) => entries
                .iter()
                .map(|e| {
                    let mut c = redis::cmd("XADD");
                    c.arg(tmp).arg(id(e.id));
                    for (f, v) in &e.fields {
                        c.arg(&f[..]).arg(&v[..]);
                    }
                    c
                })
                .collect(),
            Part::StreamEnd(meta) => self.stream_end(meta, started),
        })
    }

    /// A stream's metadata and groups; `started`: entries were written before.
    fn stream_end(&self, meta: &StreamMeta, started: bool) -> Vec<Cmd> {
        let tmp = &self.tmp[..];
        let mut writes = Vec::new();
        if !started {
            // No entries: make the (empty) stream by creating a group and removing it again.
            let placeholder = &b"redis-ferry:placeholder"[..];
            writes.push(
                redis::cmd("XGROUP").arg("CREATE").arg(tmp).arg(placeholder).arg("0").arg("MKSTREAM").clone(),
            );
            writes.push(redis::cmd("XGROUP").arg("DESTROY").arg(tmp).arg(placeholder).clone());
        }
        let v7 = self.target >= (7, 0, 0);
        let mut setid = redis::cmd("XSETID");
        setid.arg(tmp).arg(id(meta.last_id));
        if v7 {
            setid.arg("ENTRIESADDED").arg(meta.added).arg("MAXDELETEDID").arg(id(meta.max_deleted));
        }
        writes.push(setid);
        for g in &meta.groups {
            let mut create = redis::cmd("XGROUP");
            create.arg("CREATE").arg(tmp).arg(&g.name[..]).arg(id(g.last_id));
            if let (true, Some(read)) = (v7, g.entries_read) {
                create.arg("ENTRIESREAD").arg(read);
            }
            writes.push(create);
            if self.target >= (6, 2, 0) {
                for c in &g.consumers {
                    writes.push(
                        redis::cmd("XGROUP")
                            .arg("CREATECONSUMER")
                            .arg(tmp)
                            .arg(&g.name[..])
                            .arg(&c.name[..])
                            .clone(),
                    );
                }
            }
            // Each pending entry goes to the consumer whose own list holds it (entries of deleted messages
            // cannot be claimed: XCLAIM skips an ID the stream no longer has).
            let owners: std::collections::HashMap<(u64, u64), &[u8]> =
                g.consumers.iter().flat_map(|c| c.pending.iter().map(move |id| (*id, &c.name[..]))).collect();
            for p in &g.pending {
                let Some(owner) = owners.get(&p.id) else { continue };
                let mut claim = redis::cmd("XCLAIM");
                claim.arg(tmp).arg(&g.name[..]).arg(*owner).arg(0).arg(id(p.id));
                claim
                    .arg("TIME")
                    .arg(p.delivered)
                    .arg("RETRYCOUNT")
                    .arg(p.deliveries)
                    .arg("FORCE")
                    .arg("JUSTID");
                writes.push(claim);
            }
        }
        writes
    }
}

/// A stream ID as Redis writes it.
fn id((ms, seq): (u64, u64)) -> String {
    format!("{ms}-{seq}")
}

/// A score as ZADD takes it: the shortest text that reads back as the same double.
fn score_text(score: f64) -> String {
    if score == f64::INFINITY {
        "+inf".into()
    } else if score == f64::NEG_INFINITY {
        "-inf".into()
    } else {
        format!("{score:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_round_trip() {
        for s in [0.1, 1.0, -2.5, 1e300, std::f64::consts::PI, f64::INFINITY, f64::NEG_INFINITY] {
            let text = score_text(s);
            let back: f64 = match text.as_str() {
                "+inf" => f64::INFINITY,
                "-inf" => f64::NEG_INFINITY,
                t => t.parse().unwrap(),
            };
            assert_eq!(back, s, "{text}");
        }
    }

    #[test]
    fn field_deadlines_need_a_new_enough_target() {
        let part = Part::Fields(vec![(b"f".to_vec(), b"v".to_vec(), Some(1))]);
        assert!(Decoded::new(b"t".to_vec(), (7, 0, 15)).writes(&part).is_err());
        assert_eq!(Decoded::new(b"t".to_vec(), (7, 4, 0)).writes(&part).unwrap().len(), 2);
    }
}
