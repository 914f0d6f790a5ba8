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

use super::compare::Verdict;
use super::probe::{heads, judge, run_probes, Probe, Rules, State};
use super::{diff_row, Difference, Recorder, Verdicts, COMPARERS, DIFF_HEADER};
use crate::account::csv::{self, CsvFile};
use crate::account::{Counters, Reporter, Stage, Stop};
use crate::config::backup::Backup;
use crate::config::VerifyConfig;
use crate::exit::Fatal;
use crate::flow::{exchange_replies, Resend};
use crate::key::Key;
use crate::rdb::{self, Head, Pages, Part, Reader};
use crate::redis::clock;
use crate::redis::conn::Conn;
use crate::source::backup::{self, Filter};
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
    let keys = backup::key_set(&cfg.keys)?;
    let bad = |e: rdb::Error| Fatal::bad_input(format!("SOURCE: {}: {e}", file.describe()));
    let (stream, size): (Box<dyn Read + Send>, _) = if file.is_stdin() {
        (Box::new(std::io::stdin()), None)
    } else {
        let (handle, size) = backup::open_file(file)?;
        (Box::new(handle), Some(size))
    };
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
    let filter = Filter::new(&cfg.keys, keys, file.db, false);
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
            self.bytes += part.bytes();
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
        let mut answers = exchange_replies(
            &mut conn,
            batch.len(),
            |i| &batch[i].key,
            |pipe, i| {
                for p in &probes[i] {
                    pipe.add_command(&p.cmd);
                }
            },
            Stage::Check,
            &rep,
            Resend::OnAnyReply,
        );
        let verdicts: Vec<(Key, Verdict)> = batch
            .into_iter()
            .enumerate()
            .zip(&probes)
            .filter_map(|((i, e), probes)| {
                let replies = answers.take_unit(i)?;
                Some((e.key, judge(probes, replies, rules).err().unwrap_or(Verdict::Matched)))
            })
            .collect();
        rec.record(verdicts);
    }
}
