//! The target half of the type-aware copy: a key built under its temporary name, page after page, each
//! page in a MULTI/EXEC of its own that checks the temporary key is still there and renews its safety
//! TTL, then the deadline and the rename in one last transaction. The copier of a live source
//! (`mod.rs`, `types.rs`) and the decoder of an RDB file (`source/backup.rs`) both build keys with it.

use redis::{Cmd, Pipeline, Value};

use super::temp::IN_FLIGHT;
use super::{check_page, failed, page_tx, protocol, Build, Fate, Fault};
use crate::account::{Reporter, Stage, Stop};
use crate::config::OnConflict;
use crate::key::Key;
use crate::redis::conn::Conn;
use crate::redis::reply::{self, kind};
use crate::sink::WriteContext;

/// Builds keys on the target on a connection of its own.
pub struct Writer<'a> {
    /// Its own target connection.
    pub(super) dst: Conn,
    /// Policy, throttle, budget, ledger.
    ctx: &'a WriteContext<'a>,
    /// Accounting.
    rep: &'a Reporter<'a>,
    /// `--batch`: a pause (`--sleep-after-batch`) after this many keys and pages.
    batch: usize,
    /// Keys and pages since the last `--sleep-after-batch` pause.
    units: usize,
    /// Temporary keys of failed attempts that could not be deleted yet (the target was unreachable);
    /// deleted as soon as it answers again.
    orphans: Vec<Vec<u8>>,
}

impl<'a> Writer<'a> {
    /// A writer on `dst`.
    pub fn new(dst: Conn, ctx: &'a WriteContext<'a>, rep: &'a Reporter<'a>, batch: usize) -> Writer<'a> {
        Writer { dst, ctx, rep, batch, units: 0, orphans: Vec::new() }
    }

    /// A follow's key gone from the source (or whose deadline passed): deleted on the target too.
    pub(super) fn delete(&mut self, key: &Key) -> Result<(), (String, String)> {
        let stop = self.rep.stop;
        self.dst
            .call::<i64>(redis::cmd("DEL").arg(key.as_bytes()), || stop.discard())
            .map(|_| ())
            .map_err(|e| reply::classify(&e))
    }

    /// Deletes the temporary key of a failed attempt, and those of earlier attempts that could not be
    /// deleted then; what cannot be deleted now is tried again later (and its safety TTL covers a target
    /// that never comes back).
    pub(super) fn drop_temp(&mut self, build: &Build) {
        if build.sent {
            self.orphans.push(build.tmp.clone());
        }
        self.drop_orphans();
    }

    /// One try at deleting the orphaned temporary keys.
    pub(super) fn drop_orphans(&mut self) {
        if self.orphans.is_empty() || self.dst.ensure().is_err() {
            return;
        }
        // One DEL each: on a cluster they live in different slots.
        let dst = &mut self.dst;
        self.orphans.retain(|tmp| {
            let kept = dst.call::<i64>(redis::cmd("DEL").arg(&tmp[..]), || true).is_err();
            if !kept {
                IN_FLIGHT.remove(tmp);
            }
            kept
        });
    }

    /// Writes one page that is not the last: in one transaction, the check that the temporary key
    /// still exists (from the second page on), the writes, and the safety TTL.
    pub(super) fn put(&mut self, b: &mut Build, writes: Vec<Cmd>) -> Result<(), Fault> {
        self.pace(b)?;
        let check = b.pages > 0;
        let tx = page_tx(&b.tmp, check, &writes);
        b.mark_sent();
        let mut results = self.transact(&b.tmp, &[tx])?;
        let results = results.pop().unwrap_or_default();
        check_page(&results, check, writes.len())?;
        b.pages += 1;
        Ok(())
    }

    /// Takes a token per page after the first (so a big key is paced like as many keys as it has
    /// pages) and pauses after every `--batch` keys and pages.
    pub(super) fn pace(&mut self, b: &Build) -> Result<(), Fault> {
        if b.pages > 0 && !self.ctx.throttle.admit(1, self.rep.stop) && self.rep.stop.discard() {
            return Err(Fate::Dropped.into());
        }
        if self.rep.stop.discard() {
            return Err(Fate::Dropped.into());
        }
        self.units += 1;
        if self.units >= self.batch {
            self.units = 0;
            self.ctx.throttle.after_batch(self.rep.stop);
        }
        Ok(())
    }

    /// Writes the last page (if any), sets the deadline and renames, all of which a reader sees at
    /// once. A one-page key goes in a single round trip: its page and the rename are two transactions
    /// sent together (if the first is refused, the temporary key does not exist and the rename does
    /// nothing).
    pub(super) fn finish(&mut self, b: &mut Build, last: Option<Cmd>) -> Result<Fate, Fault> {
        let together = b.pages == 0 && last.is_some();
        if !together {
            if let Some(write) = last.clone() {
                self.put(b, vec![write])?;
            }
        } else {
            self.pace(b)?;
        }
        let final_tx = self.final_tx(b);
        b.mark_sent();
        let results = if together {
            let page = page_tx(&b.tmp, false, &[last.expect("together has a page")]);
            let mut results = self.transact(&b.tmp, &[page, final_tx])?;
            let last = results.pop().unwrap_or_default();
            check_page(&results.pop().unwrap_or_default(), false, 1)?;
            b.pages += 1;
            last
        } else {
            self.transact(&b.tmp, &[final_tx])?.pop().unwrap_or_default()
        };
        // [PEXPIREAT | PERSIST, RENAME | RENAMENX, (DEL)]. PEXPIREAT and PERSIST answer 1 for a temporary
        // key that was there (it always has a TTL while it is built), 0 for one that vanished (evicted). A
        // rename that then finds no such key met a deadline the target's clock says has passed: the
        // PEXPIREAT deleted the key, in the same transaction.
        let vanished = || {
            Err(Fault::Again(
                Stage::Write,
                "ERR".into(),
                "no such key: the temporary key vanished from the target before the rename (evicted?)".into(),
            ))
        };
        let no_such_key = |e: &redis::ServerError| e.details().unwrap_or("").contains("no such key");
        match (results.first(), results.get(1)) {
            (Some(Value::Int(0)), _) => vanished(),
            (_, Some(Value::Okay) | Some(Value::SimpleString(_)) | Some(Value::Int(1))) => Ok(Fate::Copied),
            (_, Some(Value::Int(0))) => Ok(Fate::Skipped),
            (_, Some(Value::ServerError(e))) if no_such_key(e) && b.deadline.is_some() => Ok(Fate::Expired),
            (_, Some(Value::ServerError(e))) if no_such_key(e) => vanished(),
            (_, Some(Value::ServerError(e))) => Ok(failed(Stage::Write, e)),
            (_, other) => Ok(protocol(format!("unexpected RENAME reply: {}", other.map_or("none", kind)))),
        }
    }

    /// The last transaction: deadline on the temporary key (the target's clock decides whether it has
    /// passed: then the key is gone at once), then the rename.
    pub(super) fn final_tx(&self, b: &Build) -> Pipeline {
        let mut tx = redis::pipe();
        tx.atomic();
        match b.deadline {
            Some(at) => tx.cmd("PEXPIREAT").arg(&b.tmp[..]).arg(at),
            None => tx.cmd("PERSIST").arg(&b.tmp[..]),
        };
        match self.ctx.policy.on_conflict {
            OnConflict::Replace => {
                tx.cmd("RENAME").arg(&b.tmp[..]).arg(b.key.as_bytes());
            }
            OnConflict::Skip => {
                tx.cmd("RENAMENX").arg(&b.tmp[..]).arg(b.key.as_bytes()).cmd("DEL").arg(&b.tmp[..]);
            }
        }
        tx
    }

    /// Sends transactions (MULTI/EXEC pipelines) on the temporary key `tmp` to the target in one round
    /// trip (to the node of its slot) and returns each
    /// one's results. A transaction the server refused (an error while queueing, or from EXEC) was
    /// not applied: if the error is transient it is sent again, with those after it, after a pause;
    /// otherwise the key fails. A broken connection means the temporary key's state is unknown.
    pub(super) fn transact(&mut self, tmp: &[u8], txs: &[Pipeline]) -> Result<Vec<Vec<Value>>, Fault> {
        let retry = self.dst.retry();
        let mut done: Vec<Vec<Value>> = Vec::with_capacity(txs.len());
        let mut attempt = 0;
        loop {
            if let Err(e) = self.dst.ensure() {
                return Err(Fault::Again(Stage::Write, "IO".into(), e.to_string()));
            }
            let pending = &txs[done.len()..];
            // Every transaction of one key works on its temporary key, in the key's slot.
            let dst = &mut self.dst;
            let sent = IN_FLIGHT.write(|| {
                dst.round(
                    &[0],
                    |_| Some(tmp),
                    |pipe, _| {
                        for tx in pending {
                            pipe.cmd("MULTI");
                            for cmd in tx.cmd_iter() {
                                pipe.add_command(cmd);
                            }
                            pipe.cmd("EXEC");
                        }
                    },
                )
            });
            // The process is quitting (a second Ctrl-C): nothing more is written.
            let Some((mut replies, broken)) = sent else { return Err(Fate::Dropped.into()) };
            let Some(unit) = replies.unit(0) else {
                let (code, message) =
                    broken.as_ref().map_or_else(|| ("IO".into(), "no reply".into()), reply::classify);
                return Err(Fault::Again(Stage::Write, code, message));
            };
            let mut replies = unit.iter_mut().map(std::mem::take);
            let mut refused = None;
            for tx in pending {
                let group: Vec<Value> = replies.by_ref().take(tx.len() + 2).collect();
                if refused.is_some() {
                    continue;
                }
                match reply::transaction(group) {
                    Ok(results) => done.push(results),
                    Err(why) => refused = Some(why),
                }
            }
            let Some((code, message)) = refused else { return Ok(done) };
            attempt += 1;
            if !reply::is_transient(&code) || attempt > retry.attempts || self.rep.stop.discard() {
                return Err(Fate::Failed(Stage::Write, code, message).into());
            }
            let pause = retry.pause(attempt);
            log::debug!("target refused a typed write ({code}); again in {pause:?} (attempt {attempt})");
            self.rep.stop.sleep(pause, Stop::discard);
        }
    }

    /// Starts building `key` (whose deadline is `deadline`) under the temporary name `tmp` (from
    /// [`temp_name`]) from pages given one by one ([`Writer::add`]), for a caller that cannot read the key
    /// again (an RDB stream): a page that fails ends the key.
    pub fn begin<'k>(&self, key: &'k Key, tmp: Vec<u8>, deadline: Option<i64>) -> Build<'k> {
        Build { key, tmp, pages: 0, sent: false, deadline }
    }

    /// Writes one page of `b` (not the last: [`Writer::end`] follows). On failure the temporary key is
    /// deleted and the key's end is returned.
    pub fn add(&mut self, b: &mut Build, writes: Vec<Cmd>) -> Result<(), Fate> {
        match self.put(b, writes) {
            Ok(()) => Ok(()),
            Err(fault) => {
                self.drop_temp(b);
                Err(ending(fault))
            }
        }
    }

    /// Gives up on `b` (the value could not be read to its end, or the run stops): its temporary key is
    /// deleted.
    pub fn abandon(&mut self, b: &Build) {
        self.drop_temp(b);
    }

    /// Sets the deadline and renames `b` into place.
    pub fn end(&mut self, b: &mut Build) -> Fate {
        match self.finish(b, None) {
            Ok(end) | Err(Fault::Fate(end)) if matches!(end, Fate::Copied | Fate::Skipped) => {
                IN_FLIGHT.remove(&b.tmp);
                end
            }
            Ok(end) => {
                self.drop_temp(b);
                end
            }
            Err(fault) => {
                self.drop_temp(b);
                ending(fault)
            }
        }
    }
}

/// A fault of a key that cannot be started over, as its end.
fn ending(fault: Fault) -> Fate {
    match fault {
        Fault::Fate(end) => end,
        Fault::Again(stage, code, message) => Fate::Failed(stage, code, message),
    }
}
