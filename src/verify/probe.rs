//! The probes of `verify FILE TARGET`: a read of the target and what the file says it must answer
//! ([`Probe`]), made from a key's pages as they come ([`State`]: the offset of the next chunk or list
//! element, the elements so far), sent ([`run_probes`]) and judged into a verdict ([`judge`]).

use redis::{Cmd, Value};

use super::compare::{Kind, Verdict};
use crate::account::{Reporter, Stage};
use crate::flow::{exchange_replies, Resend};
use crate::key::Key;
use crate::rdb::{self, Part, StreamEntry};
use crate::redis::clock::SourceClock;
use crate::redis::conn::Conn;

/// What the probes need to judge: the TTL tolerance, the target's clock, its version.
#[derive(Clone, Copy)]
pub(super) struct Rules {
    pub(super) tolerance: i64,
    pub(super) now: SourceClock,
    pub(super) target: (u32, u32, u32),
}

/// What a probe's reply must be.
pub(super) enum Expect {
    /// TYPE: this name (or the key is missing, or expired).
    Type(String, Option<i64>),
    /// The deadline (PEXPIRETIME, Unix ms; -1 for none).
    Deadline(Option<i64>),
    /// This bulk string.
    Bulk(Vec<u8>),
    /// This array of bulk strings, in order.
    List(Vec<Vec<u8>>),
    /// An array of this many ones (SMISMEMBER).
    Ones(usize),
    /// These scores (ZMSCORE).
    Scores(Vec<f64>),
    /// These field deadlines (HPEXPIRETIME; -1 for none).
    Deadlines(Vec<Option<i64>>),
    /// These stream entries (XRANGE).
    Entries(Vec<StreamEntry>),
    /// These groups (XINFO GROUPS): name, last delivered ID, pending count.
    Groups(Vec<(Vec<u8>, String, u64)>),
    /// An integer (a size) between these two.
    Int(u64, u64),
}

/// One read of the target and what it must answer.
pub(super) struct Probe {
    pub(super) cmd: Cmd,
    pub(super) expect: Expect,
}

/// TYPE and the deadline (PEXPIRETIME; PTTL before Redis 7.0), first of every key's probes.
pub(super) fn heads(
    key: &[u8],
    kind: &str,
    module: Option<&str>,
    deadline: Option<i64>,
    rules: Rules,
) -> Vec<Probe> {
    let name = module.map_or(kind.to_string(), str::to_string);
    let ttl = if rules.target >= (7, 0, 0) { "PEXPIRETIME" } else { "PTTL" };
    vec![
        Probe { cmd: redis::cmd("TYPE").arg(key).clone(), expect: Expect::Type(name, deadline) },
        Probe { cmd: redis::cmd(ttl).arg(key).clone(), expect: Expect::Deadline(deadline) },
    ]
}

/// Where a key's pages have got to: the offset of the next string chunk or list element, the elements
/// so far.
#[derive(Default)]
pub(super) struct State {
    offset: u64,
    elements: u64,
    /// Hash fields whose deadline is too near now to say whether the target still has them.
    unsure: u64,
}

impl State {
    /// The probes of one page.
    pub(super) fn probes(&mut self, key: &[u8], part: &Part, rules: Rules) -> Vec<Probe> {
        let mut probes = Vec::new();
        match part {
            Part::Chunk(c) => {
                let end = self.offset + c.len() as u64;
                if !c.is_empty() {
                    probes.push(Probe {
                        cmd: redis::cmd("GETRANGE").arg(key).arg(self.offset).arg(end - 1).clone(),
                        expect: Expect::Bulk(c.clone()),
                    });
                }
                self.offset = end;
            }
            Part::Items(items) => {
                let n = items.len() as u64;
                probes.push(Probe {
                    cmd: redis::cmd("LRANGE").arg(key).arg(self.elements).arg(self.elements + n - 1).clone(),
                    expect: Expect::List(items.clone()),
                });
                self.elements += n;
            }
            Part::Members(m) => {
                let mut c = redis::cmd("SMISMEMBER");
                c.arg(key);
                for m in m {
                    c.arg(&m[..]);
                }
                probes.push(Probe { cmd: c, expect: Expect::Ones(m.len()) });
                self.elements += m.len() as u64;
            }
            Part::Scored(pairs) => {
                let mut c = redis::cmd("ZMSCORE");
                c.arg(key);
                for (_, m) in pairs {
                    c.arg(&m[..]);
                }
                probes
                    .push(Probe { cmd: c, expect: Expect::Scores(pairs.iter().map(|(s, _)| *s).collect()) });
                self.elements += pairs.len() as u64;
            }
            Part::Fields(fields) => {
                // A field whose deadline has passed on the target's clock is not expected there; one near it
                // may or may not be (it only widens the size's range).
                let now = rules.now.now_ms();
                let live: Vec<_> = fields
                    .iter()
                    .filter(|(_, _, d)| d.is_none_or(|d| d > now.saturating_add(rules.tolerance)))
                    .collect();
                let near = fields
                    .iter()
                    .filter(|(_, _, d)| d.is_some_and(|d| d.abs_diff(now) <= rules.tolerance as u64))
                    .count() as u64;
                self.unsure += near;
                self.elements += live.len() as u64;
                if live.is_empty() {
                    return probes;
                }
                let mut c = redis::cmd("HMGET");
                c.arg(key);
                for (f, _, _) in &live {
                    c.arg(&f[..]);
                }
                probes.push(Probe {
                    cmd: c,
                    expect: Expect::List(live.iter().map(|(_, v, _)| v.clone()).collect()),
                });
                if live.iter().any(|(_, _, d)| d.is_some()) || rules.target >= (7, 4, 0) {
                    let mut c = redis::cmd("HPEXPIRETIME");
                    c.arg(key).arg("FIELDS").arg(live.len());
                    for (f, _, _) in &live {
                        c.arg(&f[..]);
                    }
                    probes.push(Probe {
                        cmd: c,
                        expect: Expect::Deadlines(live.iter().map(|(_, _, d)| *d).collect()),
                    });
                }
            }
            Part::Entries(entries) => {
                if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
                    let id = |(ms, seq): (u64, u64)| format!("{ms}-{seq}");
                    probes.push(Probe {
                        cmd: redis::cmd("XRANGE").arg(key).arg(id(first.id)).arg(id(last.id)).clone(),
                        expect: Expect::Entries(entries.clone()),
                    });
                }
                self.elements += entries.len() as u64;
            }
            Part::StreamEnd(meta) => {
                let groups = meta
                    .groups
                    .iter()
                    .map(|g| {
                        (g.name.clone(), format!("{}-{}", g.last_id.0, g.last_id.1), g.pending.len() as u64)
                    })
                    .collect();
                probes.push(Probe {
                    cmd: redis::cmd("XINFO").arg("GROUPS").arg(key).clone(),
                    expect: Expect::Groups(groups),
                });
            }
        }
        probes
    }

    /// The size probe, after the last page.
    pub(super) fn end(&self, key: &[u8], kind: &str) -> Vec<Probe> {
        let (cmd, n) = match kind {
            "string" => ("STRLEN", self.offset),
            "list" => ("LLEN", self.elements),
            "set" => ("SCARD", self.elements),
            "zset" => ("ZCARD", self.elements),
            "hash" => ("HLEN", self.elements),
            "stream" => ("XLEN", self.elements),
            _ => return Vec::new(),
        };
        vec![Probe { cmd: redis::cmd(cmd).arg(key).clone(), expect: Expect::Int(n, n + self.unsure) }]
    }
}

/// Runs the probes of one key on `conn`: `Ok` when every reply is what the file says.
pub(super) fn run_probes(
    conn: &mut Conn,
    key: &Key,
    probes: &[Probe],
    rules: Rules,
    rep: &Reporter,
) -> Result<(), Verdict> {
    let mut answers = exchange_replies(
        conn,
        1,
        |_| key,
        |pipe, _| {
            for p in probes {
                pipe.add_command(&p.cmd);
            }
        },
        Stage::Check,
        rep,
        Resend::OnAnyReply,
    );
    let replies = answers.take_unit(0).ok_or_else(|| Verdict::Error("IO".into(), "no reply".into()))?;
    judge(probes, replies, rules)
}

/// The verdict of one key from its probes' replies.
pub(super) fn judge(probes: &[Probe], replies: Vec<Value>, rules: Rules) -> Result<(), Verdict> {
    let differs = |kind, message: String| Err(Verdict::Differs(kind, message));
    for (p, reply) in probes.iter().zip(replies) {
        if let (Value::ServerError(e), false) = (&reply, matches!(p.expect, Expect::Type(..))) {
            let (code, message) = crate::redis::reply::classify_reply(e);
            return Err(Verdict::Error(code, message));
        }
        match &p.expect {
            Expect::Type(want, deadline) => {
                let got = match reply {
                    Value::SimpleString(s) => s,
                    Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                    other => {
                        return Err(Verdict::Error("PROTOCOL".into(), format!("TYPE answered {other:?}")))
                    }
                };
                if got == "none" {
                    // A deadline the target's clock says has passed: the key is not expected.
                    if deadline.is_some_and(|d| d <= rules.now.now_ms().saturating_add(rules.tolerance)) {
                        return Err(Verdict::Vanished);
                    }
                    return differs(Kind::Missing, "in the file, not on the target".into());
                }
                if want.is_empty() {
                    return Ok(());
                }
                if &got != want {
                    return differs(Kind::Type, format!("{want} in the file, {got} on the target"));
                }
            }
            Expect::Deadline(want) => {
                let got = int(&reply).filter(|&t| t >= 0);
                // PTTL (before 7.0) is what is left, on the target's clock.
                let got =
                    if rules.target >= (7, 0, 0) { got } else { got.map(|left| rules.now.now_ms() + left) };
                let far = match (want, got) {
                    (None, None) => false,
                    (Some(a), Some(b)) => a.abs_diff(b) > rules.tolerance as u64,
                    _ => true,
                };
                if far {
                    let show =
                        |d: Option<i64>| d.map_or("no deadline".to_string(), |d| format!("deadline {d}"));
                    return differs(
                        Kind::Ttl,
                        format!("{} in the file, {} on the target", show(*want), show(got)),
                    );
                }
            }
            Expect::Bulk(want) => {
                if bulk(&reply).as_deref() != Some(&want[..]) {
                    return differs(Kind::Value, "the string's bytes differ".into());
                }
            }
            Expect::List(want) => {
                let got = array(reply);
                if got.len() != want.len() || got.iter().zip(want).any(|(g, w)| g.as_deref() != Some(&w[..]))
                {
                    return differs(Kind::Value, "elements differ".into());
                }
            }
            Expect::Ones(n) => {
                let Value::Array(got) = reply else { return differs(Kind::Value, "members differ".into()) };
                if got.len() != *n || got.iter().any(|v| int(v) != Some(1)) {
                    return differs(Kind::Value, "a member of the file is not on the target".into());
                }
            }
            Expect::Scores(want) => {
                let got = array(reply);
                let same = got.len() == want.len()
                    && got.iter().zip(want).all(|(g, w)| {
                        g.as_deref()
                            .and_then(|b| std::str::from_utf8(b).ok())
                            .and_then(rdb::value::parse_score)
                            == Some(*w)
                    });
                if !same {
                    return differs(
                        Kind::Value,
                        "a member's score differs, or it is not on the target".into(),
                    );
                }
            }
            Expect::Deadlines(want) => {
                let Value::Array(got) = reply else {
                    return differs(Kind::Ttl, "field deadlines differ".into());
                };
                let same = got.len() == want.len()
                    && got.iter().zip(want).all(|(g, w)| match (int(g).filter(|&t| t >= 0), w) {
                        (None, None) => true,
                        (Some(a), Some(b)) => a.abs_diff(*b) <= rules.tolerance as u64,
                        _ => false,
                    });
                if !same {
                    return differs(Kind::Ttl, "a hash field's deadline differs".into());
                }
            }
            Expect::Entries(want) => {
                if !entries_equal(&reply, want) {
                    return differs(Kind::Value, "stream entries differ".into());
                }
            }
            Expect::Groups(want) => {
                if !groups_equal(&reply, want) {
                    return differs(Kind::Value, "consumer groups differ".into());
                }
            }
            Expect::Int(lo, hi) => {
                if !int(&reply).is_some_and(|got| got >= *lo as i64 && got <= *hi as i64) {
                    return differs(
                        Kind::Value,
                        format!("{lo} in the file, {} on the target", int(&reply).unwrap_or(-1)),
                    );
                }
            }
        }
    }
    Ok(())
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        _ => None,
    }
}

fn bulk(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.clone().into_bytes()),
        _ => None,
    }
}

fn array(v: Value) -> Vec<Option<Vec<u8>>> {
    match v {
        Value::Array(items) => items.iter().map(bulk).collect(),
        _ => Vec::new(),
    }
}

/// XRANGE's reply against the file's entries.
fn entries_equal(reply: &Value, want: &[StreamEntry]) -> bool {
    let Value::Array(got) = reply else { return false };
    got.len() == want.len()
        && got.iter().zip(want).all(|(g, w)| {
            let Value::Array(pair) = g else { return false };
            let [id, Value::Array(fields)] = &pair[..] else { return false };
            bulk(id) == Some(format!("{}-{}", w.id.0, w.id.1).into_bytes())
                && fields.len() == 2 * w.fields.len()
                && fields.chunks(2).zip(&w.fields).all(|(fv, (f, v))| {
                    bulk(&fv[0]).as_deref() == Some(&f[..]) && bulk(&fv[1]).as_deref() == Some(&v[..])
                })
        })
}

/// XINFO GROUPS' reply against the file's groups (name, last delivered ID, pending count).
fn groups_equal(reply: &Value, want: &[(Vec<u8>, String, u64)]) -> bool {
    let Value::Array(got) = reply else { return false };
    let mut seen: Vec<(Vec<u8>, String, u64)> = got
        .iter()
        .filter_map(|g| {
            let Value::Array(kv) = g else { return None };
            let field = |name: &str| {
                kv.chunks(2).find(|p| bulk(&p[0]).as_deref() == Some(name.as_bytes())).map(|p| p[1].clone())
            };
            let name = bulk(&field("name")?)?;
            let last = String::from_utf8(bulk(&field("last-delivered-id")?)?).ok()?;
            let pending = int(&field("pending")?)? as u64;
            Some((name, last, pending))
        })
        .collect();
    let mut want = want.to_vec();
    seen.sort();
    want.sort();
    seen == want
}
