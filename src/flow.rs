//! What every stage shares: the [`Batch`] that travels on the channels, the [`Fetched`] key on its way
//! to a sink, what becomes of a key found gone ([`Vanished`]), [`exchange`] (the one way a stage sends a pipelined batch and learns what became of each
//! key, surviving faults) and [`forward`] (passing what is left of a batch on). Stages return nothing: a
//! failed key is a CSV row, and a fatal error is recorded in the shared stop flag, which also aborts the
//! run.

use crossbeam_channel::Sender;
use redis::Value;

use crate::account::{Reporter, Stage, Stop};
use crate::key::Key;
use crate::redis::conn::Conn;
use crate::redis::pipe::Pipe;
use crate::redis::replies::Replies;
use crate::redis::reply;
use crate::resume::Ledger;

/// A batch of keys (or fetched items) with the id the [`Ledger`] knows it by.
/// It dereferences to its items, so a stage reads it like the `Vec` it carries.
#[derive(Debug)]
pub struct Batch<T> {
    /// The ledger's id of the scan batch these items came from.
    pub id: u64,
    /// The keys or items.
    pub items: Vec<T>,
}

impl<T> std::ops::Deref for Batch<T> {
    type Target = Vec<T>;
    fn deref(&self) -> &Vec<T> {
        &self.items
    }
}

impl<T> IntoIterator for Batch<T> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

/// What a batch carries, named by its key: the [`Batcher`](crate::source::Batcher) drops the keys of
/// slots a run does not take by it.
pub trait Keyed {
    /// The key.
    fn key(&self) -> &Key;
}

impl Keyed for Key {
    fn key(&self) -> &Key {
        self
    }
}

impl Keyed for Fetched {
    fn key(&self) -> &Key {
        &self.key
    }
}

/// What was read of a key, and so how the write stage makes it again.
#[derive(Debug)]
pub enum Payload {
    /// Its DUMP payload, for RESTORE.
    Dump(Vec<u8>),
    /// The whole value of a string, for SET (`--mode auto`: no DUMP serialization on the source, no
    /// checksum, no compression attempt, for what is most keys of most databases).
    String(Vec<u8>),
    /// Nothing: the key is gone from the source, and a follow deletes it on the target (DEL).
    Gone,
    /// A decoded value, as the writes that make it under the temporary name `tmp` (in the key's hash
    /// slot); the sink sends them with the deadline and the rename in one MULTI/EXEC, so that no reader
    /// sees the key half-built or without its deadline.
    Built {
        /// The temporary name.
        tmp: Vec<u8>,
        /// The writes on `tmp`.
        writes: Vec<redis::Cmd>,
    },
}

/// How recently and how often a key was used, as an RDB file records it (one or the other, by the
/// writer's `maxmemory-policy`), for RESTORE's IDLETIME and FREQ.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lru {
    /// Seconds since the last access (LRU policies).
    pub idle: Option<u64>,
    /// The access frequency counter (LFU policies).
    pub freq: Option<u8>,
}

/// A key read from the source, ready to be written.
#[derive(Debug)]
pub struct Fetched {
    /// The key.
    pub key: Key,
    /// What the write stage sends.
    pub payload: Payload,
    /// Absolute expiry in Unix milliseconds; `None` for a key without TTL.
    pub expire_at_ms: Option<i64>,
    /// Idle time or frequency to restore (from an RDB file; a live source gives none).
    pub lru: Lru,
}

/// What becomes of a key that the scan (or an event) named and that is gone from the source when it is
/// read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vanished {
    /// A copy: it expired (or was deleted) before it could be copied; the target is left alone.
    Expired,
    /// A follow: the target must lose it too, so it is deleted there.
    Deleted,
}

/// Which replies of a key may have it sent again, when they are a transient error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// Any of them: the commands are reads, safe to repeat.
    OnAnyReply,
    /// Only the first: it is a write, and the commands after it only observe its effect (the write's
    /// `EXISTS`); sending the write again after it took effect would read as "already there".
    OnFirstReply,
}

/// Sends one pipelined batch and returns, for each of its `n` keys, the key's `K` replies (error
/// replies included, as `Value::ServerError`), or `None` for a key that failed and was reported.
/// `build(pipe, i)` appends key `i`'s `K` commands; `key(i)` names it. [`exchange_replies`] is the same
/// for keys that take different numbers of commands.
pub fn exchange<'k, const K: usize>(
    conn: &mut Conn,
    n: usize,
    key: impl Fn(usize) -> &'k Key,
    build: impl Fn(&mut Pipe, usize),
    stage: Stage,
    rep: &Reporter,
) -> Vec<Option<[Value; K]>> {
    let mut replies = exchange_replies(conn, n, key, build, stage, rep, Resend::OnAnyReply);
    (0..n).map(|i| replies.take::<K>(i)).collect()
}

/// Sends one pipelined batch and returns, for each of its `n` keys (as the units of [`Replies`]), the
/// replies to the commands `build(pipe, i)` appended for it, or none for a key that failed and was
/// reported.
///
/// This is the one place where faults are survived. A key whose replies include a transient error
/// (OOM, LOADING, BUSY, TRYAGAIN, ...; in its first reply only, with [`Resend::OnFirstReply`]) and the
/// keys left unanswered when the connection broke are sent
/// again, and only they, after a growing pause and a reconnect, up to the connection's retry policy;
/// keys already answered are never sent twice. After the last attempt they become failures with the
/// last error; if the connection could not even be re-established, the run is aborted too. A resent
/// RESTORE whose first attempt reached the server but whose answer was lost comes back as BUSYKEY
/// (skip policy; the write stage counts it as skipped) or overwrites with the same payload (replace).
pub fn exchange_replies<'k>(
    conn: &mut Conn,
    n: usize,
    key: impl Fn(usize) -> &'k Key,
    build: impl Fn(&mut Pipe, usize),
    stage: Stage,
    rep: &Reporter,
    resend: Resend,
) -> Replies {
    let mut answers = Replies::unanswered(n);
    let mut pending: Vec<usize> = (0..n).collect();
    let retry = conn.retry();
    let mut attempt = 0;
    let mut last_error: Option<(String, String)> = None;
    while !pending.is_empty() {
        let mut again = Vec::new();
        match conn.ensure() {
            Err(e) => {
                last_error = Some(("IO".into(), e.to_string()));
                again = pending;
            }
            Ok(()) => {
                let (mut replies, broken) = conn.round(&pending, |i| Some(key(i).as_bytes()), &build);
                if let Some(err) = &broken {
                    log::warn!("{}: {}", conn.failed_at(), reply::one_line(&err.to_string()));
                    last_error = Some(reply::classify(err));
                }
                for (p, &i) in pending.iter().enumerate() {
                    // Unanswered: the connection broke before its replies came.
                    let Some(group) = replies.unit(p) else {
                        again.push(i);
                        continue;
                    };
                    let deciding = if resend == Resend::OnFirstReply {
                        &group[..group.len().min(1)]
                    } else {
                        &group[..]
                    };
                    let busy = deciding.iter().find_map(|v| match v {
                        Value::ServerError(e) if reply::is_transient(e.code()) => {
                            Some(reply::classify_reply(e))
                        }
                        _ => None,
                    });
                    if let Some(why) = busy {
                        last_error = Some(why);
                        replies.forget(p);
                        again.push(i);
                    }
                }
                if pending.len() == n && answers.none_answered() {
                    // The first answered round: its units are the keys themselves.
                    answers = replies;
                } else {
                    for (p, &i) in pending.iter().enumerate() {
                        answers.adopt(i, &mut replies, p);
                    }
                }
            }
        }
        if again.is_empty() {
            break;
        }
        attempt += 1;
        if attempt > retry.attempts || rep.stop.discard() {
            let (code, message) = last_error.take().unwrap_or_else(|| ("IO".into(), "no reply".into()));
            for &i in &again {
                rep.fail(key(i).clone(), stage, code.clone(), message.clone());
            }
            if conn.ensure().is_err() {
                rep.stop.fatal(format!(
                    "{} stage lost the connection to {} {}: {message}",
                    stage.name(),
                    conn.endpoint().role.name(),
                    conn.endpoint()
                ));
            }
            break;
        }
        let pause = retry.pause(attempt);
        log::debug!("{} keys to retry at {} in {pause:?} (attempt {attempt})", again.len(), stage.name());
        rep.stop.sleep(pause, Stop::discard);
        pending = again;
    }
    answers
}

/// Passes on what is left of a batch and closes, in the ledger, the keys of it that reached a bucket
/// here (`taken` came in, `items` go on). If the next stage is gone (it only goes after an abort),
/// the items are given back as unreached and stay open in the ledger; the caller keeps draining.
pub fn forward<T>(
    out: &Sender<Batch<T>>,
    id: u64,
    taken: usize,
    items: Vec<T>,
    rep: &Reporter,
    ledger: &Ledger,
) {
    ledger.done(id, taken - items.len());
    if items.is_empty() {
        return;
    }
    if let Err(lost) = out.send(Batch { id, items }) {
        rep.unreached(lost.into_inner().items.len());
    }
}
