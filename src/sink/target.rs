//! The target server as a sink: RESTORE the fetched keys (SET a string read by value), one pipeline per
//! batch, on the writer thread's own connection.
//!
//! Each key keeps its deadline: `RESTORE key <abs-ms> payload ABSTTL` (or ttl 0 for a key without
//! expiry), `SET key value PXAT <abs-ms>`, so time in flight is not added. The target's clock decides
//! whether that deadline has passed, as Redis does (it creates nothing for a past ABSTTL or PXAT): an
//! `EXISTS key` right after the write, in the same pipeline, tells whether the key is there, and a key
//! with a deadline that is not there is counted as expired. This machine's clock decides nothing (see
//! `redis/clock.rs`). Skip policy: no REPLACE (SET ... NX), and a BUSYKEY reply (a nil) counts as
//! skipped, which is atomic on the server. In a follow, a key gone from the source is deleted (DEL).

use redis::Value;

use super::{Sink, Ttl, WritePolicy, Written};
use crate::account::{Reporter, Stage};
use crate::config::OnConflict;
use crate::flow::{exchange_replies, Fetched, Payload, Resend};
use crate::redis::conn::Conn;
use crate::redis::pipe::Pipe;
use crate::redis::reply::{self, kind, restore_refused};

/// Writes to the target on a connection of its own.
pub struct Target {
    /// The writer thread's connection.
    pub conn: Conn,
    /// How keys are written.
    pub policy: WritePolicy,
    /// Keys whose RESTORE the target refuses for reasons of its own are handed back (`--mode auto`,
    /// for the type-aware copy) instead of failing.
    pub hand_on: bool,
}

impl Sink for Target {
    fn write(&mut self, items: Vec<Fetched>, rep: &Reporter) -> Written {
        let mut written = Written::default();
        let mut live: Vec<(Fetched, Ttl)> = Vec::with_capacity(items.len());
        for f in items {
            match self.policy.ttl(&f) {
                Some(ttl) => live.push((f, ttl)),
                None => written.expired += 1,
            }
        }
        if live.is_empty() {
            return written;
        }
        let replace = self.policy.on_conflict == OnConflict::Replace;
        let mut answers = exchange_replies(
            &mut self.conn,
            live.len(),
            |i| &live[i].0.key,
            |pipe, i| {
                let (f, ttl) = &live[i];
                write_command(pipe, f, *ttl, replace);
                // Whether the target kept it: its clock says whether the deadline had passed (a built
                // key's rename says it itself).
                if f.expire_at_ms.is_some() && matches!(f.payload, Payload::Dump(_) | Payload::String(_)) {
                    pipe.cmd("EXISTS").arg(f.key.as_bytes());
                }
            },
            Stage::Write,
            rep,
            Resend::OnFirstReply,
        );
        for (i, (f, _)) in live.into_iter().enumerate() {
            let Some(replies) = answers.unit(i) else { continue };
            if let Payload::Built { .. } = f.payload {
                match built(replies.iter_mut().map(std::mem::take).collect(), replace) {
                    Ok(Fate::Copied) => written.copied += 1,
                    Ok(Fate::Skipped) => written.skipped += 1,
                    Ok(Fate::Expired) => written.expired += 1,
                    Err((code, message)) => rep.fail(f.key, Stage::Write, code, message),
                }
                continue;
            }
            let reply = replies.first_mut().map(std::mem::take).unwrap_or_default();
            let exists = replies.get_mut(1).map(std::mem::take);
            match reply {
                Value::Int(_) if matches!(f.payload, Payload::Gone) => written.deleted += 1,
                // A key with a deadline that is not there: the target found the deadline passed (it
                // creates nothing for a past ABSTTL or PXAT), or it expired right after. (An EXISTS that
                // failed says nothing: the write took effect, the key counts as copied.)
                Value::Okay | Value::SimpleString(_) if exists == Some(Value::Int(0)) => written.expired += 1,
                Value::Okay | Value::SimpleString(_) => written.copied += 1,
                // RESTORE's BUSYKEY, SET NX's nil: the key exists on the target.
                Value::ServerError(err) if err.code() == "BUSYKEY" => written.skipped += 1,
                Value::Nil if matches!(f.payload, Payload::String(_)) => written.skipped += 1,
                Value::ServerError(err)
                    if self.hand_on && matches!(f.payload, Payload::Dump(_)) && restore_refused(&err) =>
                {
                    written.refused.push((f.key, reply::classify_reply(&err).1));
                }
                Value::ServerError(err) => {
                    let (code, message) = reply::classify_reply(&err);
                    rep.fail(f.key, Stage::Write, code, message);
                }
                other => rep.fail(
                    f.key,
                    Stage::Write,
                    "PROTOCOL".into(),
                    format!("unexpected RESTORE or SET reply: {}", kind(&other)),
                ),
            }
        }
        written
    }
}

/// Appends the write of one key: RESTORE for a DUMP payload, SET for a string read by value.
fn write_command(pipe: &mut Pipe, f: &Fetched, ttl: Ttl, replace: bool) {
    match &f.payload {
        Payload::Dump(payload) => {
            let cmd = pipe.cmd("RESTORE").arg(f.key.as_bytes());
            match ttl {
                Ttl::None => cmd.arg(0),
                Ttl::At(ms) | Ttl::Left(ms) => cmd.arg(ms),
            };
            cmd.arg(&payload[..]);
            if replace {
                cmd.arg("REPLACE");
            }
            if let Ttl::At(_) = ttl {
                cmd.arg("ABSTTL");
            }
            if let Some(idle) = f.lru.idle {
                cmd.arg("IDLETIME").arg(idle);
            } else if let Some(freq) = f.lru.freq {
                cmd.arg("FREQ").arg(freq);
            }
        }
        // SET replaces a key of any type, as RESTORE REPLACE does; NX is the skip policy's atomic "only if
        // absent", as RESTORE without REPLACE is.
        Payload::String(value) => {
            let cmd = pipe.cmd("SET").arg(f.key.as_bytes()).arg(&value[..]);
            match ttl {
                Ttl::None => {}
                Ttl::At(ms) => {
                    cmd.arg("PXAT").arg(ms);
                }
                Ttl::Left(ms) => {
                    cmd.arg("PX").arg(ms);
                }
            }
            if !replace {
                cmd.arg("NX");
            }
        }
        Payload::Gone => {
            pipe.cmd("DEL").arg(f.key.as_bytes());
        }
        // One transaction: the writes on the temporary name, its deadline, the rename.
        Payload::Built { tmp, writes } => {
            pipe.cmd("MULTI");
            for w in writes {
                pipe.add_command(w);
            }
            match ttl {
                Ttl::At(ms) | Ttl::Left(ms) => pipe.cmd("PEXPIREAT").arg(&tmp[..]).arg(ms),
                Ttl::None => pipe.cmd("PERSIST").arg(&tmp[..]),
            };
            if replace {
                pipe.cmd("RENAME").arg(&tmp[..]).arg(f.key.as_bytes());
            } else {
                pipe.cmd("RENAMENX").arg(&tmp[..]).arg(f.key.as_bytes()).cmd("DEL").arg(&tmp[..]);
            }
            pipe.cmd("EXEC");
        }
    }
}

/// What became of a built key.
enum Fate {
    Copied,
    Skipped,
    Expired,
}

/// Reads the replies of a built key's transaction (`MULTI`, a `QUEUED` per command, `EXEC`'s results):
/// every write must have succeeded; then the rename says what became of the key. A rename that finds
/// no temporary key met a deadline the target's clock says has passed (PEXPIREAT deleted it, in the same
/// transaction; a hash whose every field's deadline has passed is gone the same way).
fn built(replies: Vec<Value>, replace: bool) -> Result<Fate, (String, String)> {
    let results = reply::transaction(replies)?;
    let tail = if replace { 1 } else { 2 };
    if results.len() < tail + 1 {
        return Err(("PROTOCOL".into(), format!("a transaction returned {} results", results.len())));
    }
    let (writes, ends) = results.split_at(results.len() - tail - 1);
    if let Some(Value::ServerError(e)) = writes.iter().find(|v| matches!(v, Value::ServerError(_))) {
        return Err(reply::classify_reply(e));
    }
    match &ends[1] {
        Value::Okay | Value::SimpleString(_) | Value::Int(1) => Ok(Fate::Copied),
        Value::Int(0) => Ok(Fate::Skipped),
        Value::ServerError(e) if e.details().unwrap_or("").contains("no such key") => Ok(Fate::Expired),
        Value::ServerError(e) => Err(reply::classify_reply(e)),
        other => Err(("PROTOCOL".into(), format!("unexpected RENAME reply: {}", kind(other)))),
    }
}
