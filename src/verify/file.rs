//! `verify FILE TARGET`: does the target hold the keys of an RDB file, with the same type, value and
//! deadline? The file is read once; each key it takes is decoded, and its pages become *probes*: reads
//! of the target, each with what the file says it must answer. A string's chunks are compared with
//! GETRANGE at their offsets, a list's pages with LRANGE at theirs; a set's members are looked up with
//! SMISMEMBER, a sorted set's scores with ZMSCORE, a hash's values with HMGET (and its fields' deadlines
//! with HPEXPIRETIME); a stream's entries with XRANGE over each page's IDs, its groups with XINFO GROUPS;
//! then the key's size (STRLEN, LLEN, SCARD, ZCARD, HLEN, XLEN), so that an element the target has and
//! the file does not is a difference too. A module value is compared by its type only.
//!
//! Keys up to [`WHOLE`] bytes are sent to the compare threads, a batch in one pipeline; a bigger one is
//! compared page by page on the reader's own connection, so memory stays bounded. A key whose deadline
//! in the file has passed (on the target's clock) is not expected on the target: it counts as vanished.

use std::io::Read;
use std::thread;

use crossbeam_channel::{bounded, Receiver};
use redis::{Cmd, Value};

use super::compare::{Kind, Verdict};
use super::{diff_row, Difference, Recorder, Verdicts, COMPARERS, DIFF_HEADER};
use crate::account::csv::{self, CsvFile};
use crate::account::{Counters, Reporter, Stage, Stop};
use crate::config::backup::Backup;
use crate::config::{Keys, VerifyConfig};
use crate::exit::Fatal;
use crate::flow::{exchange_units, Resend};
use crate::key::Key;
use crate::rdb::{self, Head, Pages, Part, Reader, StreamEntry};
use crate::redis::clock::{self, SourceClock};
use crate::redis::conn::Conn;
use crate::source::backup::Filter;
use crate::{files, preflight};

/// Keys of up to this many bytes are compared whole, in batches.
pub const WHOLE: usize = 1 << 20;

/// Verifies the target against an RDB file; the verdicts are counted in `verdicts`.
pub fn check(cfg: &VerifyConfig, file: &Backup, verdicts: &Verdicts, stop: &Stop) -> Result<(), Fatal> {
    let named: Vec<_> = cfg.files.iter().map(|f| f.named()).collect();
    files::refuse_shared(&named).map_err(Fatal::bad_input)?;
    if let Some(path) = &cfg.diff_path {
        files::check_writable("--diff", path).map_err(Fatal::bad_input)?;
    }
    let keys = match crate::source::keys_file(&cfg.keys)? {
        Some(mut f) => {
            let mut set = std::collections::HashSet::new();
            while let Some(k) =
                f.lines.next_key().map_err(|e| Fatal::bad_input(format!("--keys-from: {e}")))?
            {
                set.insert(k.0);
            }
            Some(set)
        }
        None => None,
    };
    let bad = |e: rdb::Error| Fatal::bad_input(format!("SOURCE: {}: {e}", file.describe()));
    let stream: Box<dyn Read + Send> = if file.is_stdin() {
        Box::new(std::io::stdin())
    } else {
        let handle = std::fs::File::open(&file.path)
            .map_err(|e| Fatal::bad_input(format!("SOURCE {}: cannot open it: {e}", file.path)))?;
        Box::new(handle)
    };
    let size = (!file.is_stdin()).then(|| std::fs::metadata(&file.path).map(|m| m.len()).ok()).flatten();
    let reader = Reader::open(stream, size).map_err(bad)?;
    let (mut first, info) = preflight::open_checked(&cfg.target, cfg.timeouts)?;
    let mut second = preflight::open_like(&cfg.target, &info, cfg.timeouts)?;
    let now = clock::skew(&mut second, &mut first);
    log::info!(
        "verifying {} ({}) against {}",
        cfg.target,
        preflight::describe(&first, &info),
        file.describe()
    );
    let (patterns, types) = match &cfg.keys {
        Keys::Scan { patterns, types, .. } => {
            (patterns.iter().filter(|p| p.as_slice() != b"*").cloned().collect(), types.clone())
        }
        Keys::File(_) => (Vec::new(), Vec::new()),
    };
    let filter = Filter { db: file.db, patterns, types, keys, segment: false };
    let rules = Rules { tolerance: cfg.ttl_tolerance.as_millis() as i64, now, target: info.version };
    let mut comparers = vec![first, second];
    while comparers.len() < COMPARERS {
        comparers.push(preflight::open_like(&cfg.target, &info, cfg.timeouts)?);
    }
    let own = preflight::open_like(&cfg.target, &info, cfg.timeouts)?;
    let counters = Counters::default();
    let (fail_tx, fail_rx) = bounded(64);
    let (diff_tx, diff_rx) = bounded::<Difference>(1024);
    let recorder = Recorder { verdicts, diffs: cfg.diff_path.is_some().then_some(diff_tx) };
    let mut result = Ok(());
    thread::scope(|s| {
        if let Some(path) = cfg.diff_path.as_deref() {
            let file = CsvFile { path, append: false, header: &DIFF_HEADER, what: "diff CSV" };
            s.spawn(move || csv::write_csv(diff_rx, file, stop, diff_row));
        }
        let (tx, rx) = bounded::<Vec<Expected>>(2 * COMPARERS);
        for conn in comparers {
            let (rx, rec) = (rx.clone(), recorder.clone());
            let rep = Reporter::new(&counters, stop, fail_tx.clone(), None);
            s.spawn(move || compare_thread(conn, rx, rec, rep, rules, stop));
        }
        let rep = Reporter::new(&counters, stop, fail_tx.clone(), None);
        drop(fail_tx);
        s.spawn(move || {
            for f in fail_rx {
                log::warn!("cannot check {}: {} {}", f.key, f.code, f.message);
                Counters::add(&verdicts.errors, 1);
            }
        });
        let slots = cfg.slots();
        let mut walk =
            Walk { reader, filter, slots, batch: cfg.batch, own, rules, rec: recorder.clone(), rep };
        result = walk.run(&tx, stop).map_err(|e| format!("{}: {e}", file.describe()));
        drop((tx, recorder));
    });
    result.map_err(|message| {
        stop.fatal(message.clone());
        Fatal { exit: crate::exit::Exit::Aborted, message }
    })
}

/// What the probes need to judge: the TTL tolerance, the target's clock, its version.
#[derive(Clone, Copy)]
struct Rules {
    tolerance: i64,
    now: SourceClock,
    target: (u32, u32, u32),
}

/// A key of the file, decoded whole, to be compared by a compare thread.
struct Expected {
    key: Key,
    kind: &'static str,
    module: Option<String>,
    deadline: Option<i64>,
    parts: Vec<Part>,
}

/// The reader: filters, decodes, sends small keys on, compares big ones itself.
struct Walk<'a, R> {
    reader: Reader<R>,
    filter: Filter,
    /// `--slots` / `--shard`.
    slots: Option<&'a crate::redis::slots::SlotSet>,
    batch: usize,
    own: Conn,
    rules: Rules,
    rec: Recorder<'a>,
    rep: Reporter<'a>,
}

impl<R: Read> Walk<'_, R> {
    fn run(&mut self, tx: &crossbeam_channel::Sender<Vec<Expected>>, stop: &Stop) -> Result<(), rdb::Error> {
        let mut batch = Vec::with_capacity(self.batch);
        let mut bytes = 0;
        while let Some(head) = self.reader.head()? {
            if stop.stop_scanning() {
                return Ok(());
            }
            if !self.filter.takes(&head) || self.slots.is_some_and(|s| !s.has_key(&head.key)) {
                self.reader.skip(&head)?;
                continue;
            }
            let mut module = None;
            let mut pages = Collect { parts: Vec::new(), bytes: 0, big: None, walk_conn: None };
            pages.walk_conn = Some((&mut self.own, self.rules, &self.rep, &head));
            match self.reader.decode(&head, &mut pages) {
                Ok(()) => {}
                // A module value is compared by its type.
                Err(rdb::Error::Opaque { name, .. }) => module = Some(name),
                Err(rdb::Error::Stopped) => return Ok(()),
                Err(e) => return Err(e),
            }
            let key = Key(head.key.clone());
            if let Some(big) = pages.big.take() {
                let verdict = big.end(&mut self.own, &head, self.rules, &self.rep);
                self.rec.record([(key, verdict)]);
                continue;
            }
            bytes += pages.bytes;
            batch.push(Expected {
                key,
                kind: head.kind,
                module,
                deadline: head.expire_at_ms,
                parts: pages.parts,
            });
            if batch.len() >= self.batch || bytes >= WHOLE {
                bytes = 0;
                if tx.send(std::mem::replace(&mut batch, Vec::with_capacity(self.batch))).is_err() {
                    return Ok(());
                }
            }
        }
        if !batch.is_empty() {
            let _ = tx.send(batch);
        }
        Ok(())
    }
}

/// Pages of a key: kept until the key passes [`WHOLE`] bytes, then compared page by page.
struct Collect<'c, 'r> {
    parts: Vec<Part>,
    bytes: usize,
    big: Option<Big>,
    walk_conn: Option<(&'c mut Conn, Rules, &'c Reporter<'r>, &'c Head)>,
}

impl Pages for Collect<'_, '_> {
    fn page(&mut self, part: Part) -> Result<(), rdb::Error> {
        let Some((conn, rules, rep, head)) = self.walk_conn.as_mut() else { return Ok(()) };
        if rep.stop.discard() {
            return Err(rdb::Error::Stopped);
        }
        if self.big.is_none() {
            self.bytes += part_size(&part);
            self.parts.push(part);
            if self.bytes > WHOLE {
                let mut big = Big { state: State::default(), verdict: None };
                let key = Key(head.key.clone());
                for part in std::mem::take(&mut self.parts) {
                    big.page(conn, &key, &part, *rules, rep);
                }
                self.big = Some(big);
            }
            return Ok(());
        }
        let key = Key(head.key.clone());
        if let Some(big) = &mut self.big {
            big.page(conn, &key, &part, *rules, rep);
        }
        Ok(())
    }
}

/// A big key being compared page by page.
struct Big {
    state: State,
    /// The first difference (or error) found: the rest of the value is then only read past.
    verdict: Option<Verdict>,
}

impl Big {
    fn page(&mut self, conn: &mut Conn, key: &Key, part: &Part, rules: Rules, rep: &Reporter) {
        if self.verdict.is_some() {
            return;
        }
        let probes = self.state.probes(key.as_bytes(), part, rules);
        self.verdict = run_probes(conn, key, &probes, rules, rep).err();
    }

    fn end(mut self, conn: &mut Conn, head: &Head, rules: Rules, rep: &Reporter) -> Verdict {
        let key = Key(head.key.clone());
        let mut probes = heads(head.key.as_slice(), head.kind, None, head.expire_at_ms, rules);
        probes.extend(self.state.end(head.key.as_slice(), head.kind));
        let first = run_probes(conn, &key, &probes, rules, rep);
        match (first, self.verdict.take()) {
            (Err(v), _) => v,
            (Ok(()), Some(v)) => v,
            (Ok(()), None) => Verdict::Matched,
        }
    }
}

/// What a probe's reply must be.
enum Expect {
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
struct Probe {
    cmd: Cmd,
    expect: Expect,
}

/// TYPE and the deadline (PEXPIRETIME; PTTL before Redis 7.0), first of every key's probes.
fn heads(key: &[u8], kind: &str, module: Option<&str>, deadline: Option<i64>, rules: Rules) -> Vec<Probe> {
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
struct State {
    offset: u64,
    elements: u64,
    /// Hash fields whose deadline is too near now to say whether the target still has them.
    unsure: u64,
}

impl State {
    /// The probes of one page.
    fn probes(&mut self, key: &[u8], part: &Part, rules: Rules) -> Vec<Probe> {
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
    fn end(&self, key: &[u8], kind: &str) -> Vec<Probe> {
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

/// Every probe of a whole key.
fn probes_of(e: &Expected, rules: Rules) -> Vec<Probe> {
    let mut probes = heads(e.key.as_bytes(), e.kind, e.module.as_deref(), e.deadline, rules);
    if e.module.is_some() {
        return probes;
    }
    let mut state = State::default();
    for part in &e.parts {
        probes.extend(state.probes(e.key.as_bytes(), part, rules));
    }
    probes.extend(state.end(e.key.as_bytes(), e.kind));
    probes
}

/// Runs the probes of one key on `conn`: `Ok` when every reply is what the file says.
fn run_probes(
    conn: &mut Conn,
    key: &Key,
    probes: &[Probe],
    rules: Rules,
    rep: &Reporter,
) -> Result<(), Verdict> {
    let mut answers = exchange_units(
        conn,
        1,
        |_| key,
        |pipe, _| {
            for p in probes {
                pipe.add_command(p.cmd.clone());
            }
        },
        Stage::Check,
        rep,
        Resend::OnAnyReply,
    );
    let replies = answers.pop().flatten().ok_or_else(|| Verdict::Error("IO".into(), "no reply".into()))?;
    judge(probes, replies, rules)
}

/// The verdict of one key from its probes' replies.
fn judge(probes: &[Probe], replies: Vec<Value>, rules: Rules) -> Result<(), Verdict> {
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

/// About how many bytes a page holds.
fn part_size(part: &Part) -> usize {
    match part {
        Part::Chunk(c) => c.len(),
        Part::Items(v) | Part::Members(v) => v.iter().map(|e| e.len() + 8).sum(),
        Part::Scored(v) => v.iter().map(|(_, m)| m.len() + 16).sum(),
        Part::Fields(v) => v.iter().map(|(f, x, _)| f.len() + x.len() + 16).sum(),
        Part::Entries(v) => {
            v.iter().map(|e| 16 + e.fields.iter().map(|(f, x)| f.len() + x.len()).sum::<usize>()).sum()
        }
        Part::StreamEnd(m) => m.groups.iter().map(|g| 64 + g.pending.len() * 40).sum(),
    }
}

/// A compare thread: each batch of whole keys in one pipeline, a group of probes per key.
fn compare_thread(
    mut conn: Conn,
    rx: Receiver<Vec<Expected>>,
    rec: Recorder,
    rep: Reporter,
    rules: Rules,
    stop: &Stop,
) {
    for batch in rx {
        if stop.discard() {
            continue;
        }
        let probes: Vec<Vec<Probe>> = batch.iter().map(|e| probes_of(e, rules)).collect();
        let answers = exchange_units(
            &mut conn,
            batch.len(),
            |i| &batch[i].key,
            |pipe, i| {
                for p in &probes[i] {
                    pipe.add_command(p.cmd.clone());
                }
            },
            Stage::Check,
            &rep,
            Resend::OnAnyReply,
        );
        let verdicts: Vec<(Key, Verdict)> = batch
            .into_iter()
            .zip(answers)
            .zip(&probes)
            .filter_map(|((e, answer), probes)| {
                let replies = answer?;
                Some((e.key, judge(probes, replies, rules).err().unwrap_or(Verdict::Matched)))
            })
            .collect();
        rec.record(verdicts);
    }
}
