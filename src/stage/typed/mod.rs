//! The type-aware copier: keys that DUMP/RESTORE cannot move (`--mode typed`, a DUMP or RESTORE the
//! servers refuse, a key above `--big-key-bytes`) are read with each type's own commands and written
//! in pages, one key at a time, by a pool of `--typed-threads` threads, each with one source and one
//! target connection.
//!
//! One key: `TYPE` and its deadline (`PEXPIRETIME`, or `PTTL` on Redis < 7.0); then pages read from the
//! source (GETRANGE chunks, LRANGE pages, SSCAN / ZSCAN / HSCAN, XRANGE pages), each together with the
//! deadline again, and written under a temporary name in the key's hash slot, each page in its own
//! MULTI/EXEC; then one last MULTI/EXEC sets the deadline on the temporary key (`PEXPIREAT`, or `PERSIST`;
//! the target's clock decides whether the deadline has passed, and then PEXPIREAT deletes the key, which
//! the rename then does not find) and renames it (`RENAME` under `replace`, `RENAMENX` + `DEL` of the temporary key under `skip`). The
//! deadline goes on the temporary key before the rename, in the same transaction: a reader never sees
//! the key without its TTL, and no crash can leave it between the two. Streams also carry their last
//! ID, `entries-added` and `max-deleted-entry-id` (XSETID), their consumer groups (XGROUP CREATE at the
//! last-delivered ID with ENTRIESREAD), the consumers (XGROUP CREATECONSUMER) and the pending entries
//! (XCLAIM … IDLE … RETRYCOUNT … FORCE JUSTID), bar those whose entry was deleted from the stream.
//!
//! Memory and server time are bounded by the page (about [`PAGE_BYTES`], at most [`MAX_PAGE`] elements;
//! [`STRING_CHUNK`] for strings), whatever the key's size. The copy is not a snapshot: a key written to
//! on the source while it is copied may arrive as a mix of before and after (DUMP is atomic; pages
//! are not).
//!
//! Faults: source reads go through [`crate::flow::exchange`] (they are idempotent). A target write whose answer was
//! lost leaves the temporary key in an unknown state, so the key starts over under a new temporary
//! name after a pause (the old one is deleted), up to the retry policy; a transaction the target
//! refused with a transient error (OOM, LOADING, ...) was not applied and is sent again. Every page
//! after the first checks, inside its transaction, that the temporary key still exists (it carries a
//! safety TTL of [`temp::SAFETY_TTL_MS`] while it is built, so a killed run leaves nothing behind for
//! long), and the rename fails on a temporary key that is gone: a key is never published incomplete.
//! On every other way out the temporary key is deleted.
//! In a follow, a key gone from the source (or whose deadline passed) is deleted on the target.
//!
//! A second Ctrl-C quits at once; [`temp::drop_in_flight`] first closes the gate every typed write passes
//! and deletes the temporary keys registered in [`temp::IN_FLIGHT`].
//!
//! Here: the threads, one key's attempt and its transactions. Each type's pages are in [`types`], the
//! temporary names in [`temp`], reading the replies in [`values`]. What routes keys here in `--mode auto`
//! is `stage/route.rs`'s.

mod decoded;
pub mod temp;
mod types;
mod values;
mod writer;

pub use decoded::Decoded;
pub use writer::Writer;

use crossbeam_channel::Receiver;
use redis::{Cmd, Pipeline, Value};

use crate::redis::pipe::Pipe;

use crate::account::{Counters, Reporter, Stage, Stop, StopReason};
use crate::flow::{exchange, Batch, Vanished};
use crate::key::Key;
use crate::redis::clock::{Deadlines, Sent};
use crate::redis::conn::Conn;
use crate::redis::reply::{self, kind};
use crate::sink::WriteContext;
use temp::{temp_name, IN_FLIGHT, SAFETY_TTL_MS};

/// A page of an aggregate aims at about this many bytes.
pub const PAGE_BYTES: usize = 1 << 20;
/// Most elements (members, fields, entries) in one page.
pub const MAX_PAGE: usize = 1000;
/// Bytes of a string read and written at once.
pub const STRING_CHUNK: usize = 1 << 20;

/// What the typed threads need to know about the two servers.
#[derive(Debug, Clone, Copy)]
pub struct Servers {
    /// How the source tells deadlines (PEXPIRETIME, or PTTL on its clock).
    pub deadlines: Deadlines,
    /// The target's version, for the stream options it takes (7.0: ENTRIESADDED, ENTRIESREAD; 6.2:
    /// CREATECONSUMER).
    pub target: (u32, u32, u32),
    /// `--batch`: a typed thread pauses (`--sleep-after-batch`) after this many keys and pages.
    pub batch: usize,
}

/// What became of one key.
#[derive(Debug, PartialEq)]
pub enum Fate {
    /// Renamed into place.
    Copied,
    /// Under `skip`, the key appeared on the target before the rename.
    Skipped,
    /// Gone from the source, or its deadline passed, before the rename.
    Expired,
    /// Failed, not reported yet: (stage, code, message).
    Failed(Stage, String, String),
    /// Failed and already reported (by [`exchange`]).
    Reported,
    /// Dropped unfinished because the run is discarding its work (abort, limit).
    Dropped,
}

/// Detour an attempt at a key did not come to an end of its own.
#[derive(Debug)]
enum Fault {
    /// The key ends here (the temporary key, if any, is deleted).
    Fate(Fate),
    /// The temporary key's state is unknown (the connection broke mid-write), it vanished, or the
    /// source key changed under the copy: start the key over. What to report if it keeps happening:
    /// (stage, code, message).
    Again(Stage, String, String),
}

impl From<Fate> for Fault {
    fn from(end: Fate) -> Fault {
        Fault::Fate(end)
    }
}

/// The key's deadline as last read: `None` without TTL, else absolute Unix milliseconds.
type Deadline = Option<i64>;

/// Runs one typed thread until its input is drained.
pub fn run(
    src: Conn,
    dst: Conn,
    rx: Receiver<Batch<Key>>,
    ctx: &WriteContext,
    servers: Servers,
    rep: Reporter,
) {
    let w = Writer::new(dst, ctx, &rep, servers.batch);
    let mut copier = Copier { src, ctx, servers, rep: &rep, w };
    for Batch { id, items } in rx {
        let mut keys = items.into_iter();
        while let Some(key) = keys.next() {
            if rep.stop.discard() {
                rep.unreached(1 + keys.len());
                break;
            }
            let reserved = match ctx.budget {
                Some(budget) => budget.reserve(1),
                None => 1,
            };
            if reserved == 0 {
                rep.stop.request(StopReason::Limit);
                rep.unreached(1 + keys.len());
                break;
            }
            let end = copier.copy(&key);
            if let Some(budget) = ctx.budget {
                budget.settle(reserved, u64::from(end == Fate::Copied));
            }
            let counters = rep.counters;
            match end {
                Fate::Copied => Counters::add(&counters.copied, 1),
                Fate::Skipped => Counters::add(&counters.skipped, 1),
                Fate::Expired if ctx.policy.vanished == Vanished::Deleted => match copier.w.delete(&key) {
                    Ok(()) => Counters::add(&counters.deleted, 1),
                    Err((code, message)) => rep.fail(key, Stage::Write, code, message),
                },
                Fate::Expired => Counters::add(&counters.expired, 1),
                Fate::Failed(stage, code, message) => rep.fail(key, stage, code, message),
                Fate::Reported => {}
                Fate::Dropped => {
                    rep.unreached(1);
                    continue;
                }
            }
            ctx.ledger.done(id, 1);
        }
    }
    copier.w.drop_orphans();
}

/// One typed thread's connections and state.
struct Copier<'a> {
    /// Its own source connection.
    src: Conn,
    /// Policy, throttle, budget, ledger.
    ctx: &'a WriteContext<'a>,
    /// Facts about the servers.
    servers: Servers,
    /// Accounting.
    rep: &'a Reporter<'a>,
    /// The target half: its own target connection, the transactions.
    w: Writer<'a>,
}

/// A key being built under its temporary name.
pub struct Build<'k> {
    /// The key.
    key: &'k Key,
    /// Its temporary name.
    tmp: Vec<u8>,
    /// Pages written so far (0: the temporary key does not exist yet).
    pages: usize,
    /// A write was sent: the temporary key may exist (even when no answer came back).
    sent: bool,
    /// The deadline as last read.
    deadline: Deadline,
}

impl Build<'_> {
    /// A write is about to be sent: from now on the temporary key may exist (and is in [`IN_FLIGHT`]).
    fn mark_sent(&mut self) {
        if !self.sent {
            IN_FLIGHT.add(&self.tmp);
            self.sent = true;
        }
    }
}

impl<'a> Copier<'a> {
    /// Copies one key, starting it over when a target write was lost; the temporary key never
    /// outlives the attempt that made it.
    fn copy(&mut self, key: &Key) -> Fate {
        let retry = self.w.dst.retry();
        let mut attempt = 0;
        loop {
            let mut build =
                Build { key, tmp: temp_name(key.as_bytes()), pages: 0, sent: false, deadline: None };
            let (stage, code, why) = match self.attempt(&mut build) {
                Ok(end) | Err(Fault::Fate(end)) => {
                    // Copied or skipped: the rename (or the DEL after RENAMENX) took the temporary key.
                    if matches!(end, Fate::Copied | Fate::Skipped) {
                        IN_FLIGHT.remove(&build.tmp);
                    } else {
                        self.w.drop_temp(&build);
                    }
                    return end;
                }
                Err(Fault::Again(stage, code, why)) => {
                    self.w.drop_temp(&build);
                    (stage, code, why)
                }
            };
            attempt += 1;
            if attempt > retry.attempts || self.rep.stop.discard() {
                if self.w.dst.ensure().is_err() {
                    self.rep.stop.fatal(format!(
                        "typed copy lost the connection to target {}: {why}",
                        self.w.dst.endpoint()
                    ));
                }
                return Fate::Failed(stage, code, why);
            }
            let pause = retry.pause(attempt);
            log::warn!("{key}: type-aware copy starts over in {pause:?} (attempt {attempt}): {why}");
            self.rep.stop.sleep(pause, Stop::discard);
            self.w.drop_orphans();
        }
    }

    /// One attempt at a key.
    fn attempt(&mut self, b: &mut Build) -> Result<Fate, Fault> {
        let k = b.key.as_bytes().to_vec();
        let ttl_cmd = self.ttl_cmd();
        let ([ty, ttl], sent) = self.read::<2>(b.key, |p| {
            p.cmd("TYPE").arg(&k[..]).cmd(ttl_cmd).arg(&k[..]);
        })?;
        let ty = match ty {
            Value::SimpleString(s) => s,
            Value::BulkString(s) => String::from_utf8_lossy(&s).into_owned(),
            Value::ServerError(e) => return Err(failed(Stage::Fetch, &e).into()),
            other => return Err(protocol(format!("unexpected TYPE reply: {}", kind(&other))).into()),
        };
        b.deadline = self.deadline(ttl, &sent)?;
        if ty == "none" {
            return Ok(Fate::Expired);
        }
        if self.ctx.policy.dry_run {
            // The source still had it.
            return Ok(Fate::Copied);
        }
        match ty.as_str() {
            "string" => self.string(b),
            "list" => self.list(b),
            "set" => self.scanned(b, "SSCAN", "SADD", 1),
            "zset" => self.scanned(b, "ZSCAN", "ZADD", 2),
            "hash" => self.scanned(b, "HSCAN", "HSET", 2),
            "stream" => self.stream(b),
            other => Ok(Fate::Failed(
                Stage::Fetch,
                "WRONGTYPE".into(),
                format!("type {other} has no type-aware copy (only string, list, set, zset, hash, stream)"),
            )),
        }
    }

    /// PEXPIRETIME where the source has it (7.0+), else PTTL.
    fn ttl_cmd(&self) -> &'static str {
        self.servers.deadlines.command()
    }

    /// Sends one pipeline of `K` commands for this key to the source (retried through
    /// [`exchange`]); a key it reports as failed ends here. Also returns when the answered attempt was
    /// sent, on the source's clock, to anchor a PTTL.
    fn read<const K: usize>(
        &mut self,
        key: &Key,
        build: impl Fn(&mut Pipe),
    ) -> Result<([Value; K], Sent), Fault> {
        let sent = Sent::new(self.servers.deadlines, 1);
        let mut answers = exchange::<K>(
            &mut self.src,
            1,
            |_| key,
            |pipe, _| {
                sent.stamp(0);
                build(pipe)
            },
            Stage::Fetch,
            self.rep,
        );
        let replies = answers.pop().flatten().ok_or(Fault::Fate(Fate::Reported))?;
        Ok((replies, sent))
    }

    /// Reads a page, with the key's deadline in the same pipeline (it updates `b.deadline`; a key found
    /// gone ends as expired).
    fn page(&mut self, b: &mut Build, cmd: &Cmd) -> Result<Value, Fault> {
        let ttl_cmd = self.ttl_cmd();
        let k = b.key.as_bytes().to_vec();
        let ([reply, ttl], sent) = self.read::<2>(b.key, |p| {
            p.add_command(cmd).cmd(ttl_cmd).arg(&k[..]);
        })?;
        b.deadline = self.deadline(ttl, &sent)?;
        match reply {
            Value::ServerError(e) => Err(failed(Stage::Fetch, &e).into()),
            reply => Ok(reply),
        }
    }

    /// The deadline from a PEXPIRETIME / PTTL reply sent at `sent`; a key gone is expired.
    fn deadline(&self, ttl: Value, sent: &Sent) -> Result<Deadline, Fault> {
        match ttl {
            Value::Int(-2) => Err(Fate::Expired.into()),
            Value::Int(t) => Ok(sent.deadline(0, t)),
            Value::ServerError(e) => Err(failed(Stage::Fetch, &e).into()),
            other => Err(protocol(format!("unexpected {} reply: {}", self.ttl_cmd(), kind(&other))).into()),
        }
    }
}

/// A page's transaction: `EXISTS tmp` (when `check`), the writes, the safety TTL.
fn page_tx(tmp: &[u8], check: bool, writes: &[Cmd]) -> Pipeline {
    let mut tx = redis::pipe();
    tx.atomic();
    if check {
        tx.cmd("EXISTS").arg(tmp);
    }
    for w in writes {
        tx.add_command(w.clone());
    }
    tx.cmd("PEXPIRE").arg(tmp).arg(SAFETY_TTL_MS);
    tx
}

/// Checks a page transaction's results: the temporary key was still there, no write failed.
fn check_page(results: &[Value], check: bool, writes: usize) -> Result<(), Fault> {
    let expected = usize::from(check) + writes + 1;
    if results.len() != expected {
        return Err(protocol(format!(
            "a page transaction returned {} results, not {expected}",
            results.len()
        ))
        .into());
    }
    if check && results[0] != Value::Int(1) {
        return Err(Fault::Again(
            Stage::Write,
            "ERR".into(),
            "the temporary key vanished from the target while it was built (evicted?)".into(),
        ));
    }
    if let Some(Value::ServerError(e)) = results.iter().find(|v| matches!(v, Value::ServerError(_))) {
        return Err(failed(Stage::Write, e).into());
    }
    Ok(())
}

/// An error reply as a failure of the key at `stage`.
fn failed(stage: Stage, err: &redis::ServerError) -> Fate {
    let (code, message) = reply::classify_reply(err);
    Fate::Failed(stage, code, message)
}

fn protocol(message: String) -> Fate {
    Fate::Failed(Stage::Fetch, "PROTOCOL".into(), message)
}
