//! The pipeline's stages, one file each, in the order keys pass through them:
//! [`scan`] finds keys, [`check`] drops those the target already has (skip policy), [`fetch`] reads
//! DUMP payloads and deadlines from the source, [`write`] RESTOREs them on the target.
//!
//! This module holds what the stages share: the fetched item and [`exchange`], the single way a stage
//! sends a pipelined batch and learns what became of each key. Stages return nothing: a failed key is
//! a CSV row, and a fatal error is recorded in the shared stop flag, which also aborts the run.

pub mod check;
pub mod fetch;
pub mod scan;
pub mod write;

use crossbeam_channel::Sender;
use redis::{Pipeline, Value};

use crate::conn::{self, Conn};
use crate::key::Key;
use crate::report::{Reporter, Stage};

/// A key read from the source, ready to be written.
#[derive(Debug)]
pub struct Fetched {
    /// The key.
    pub key: Key,
    /// Its DUMP payload.
    pub payload: Vec<u8>,
    /// Absolute expiry in Unix milliseconds; `None` for a key without TTL.
    pub expire_at_ms: Option<i64>,
}

/// Sends `pipe` (built with [`new_pipe`]) for the batch of `keys` and returns one reply per command,
/// error replies included as `Value::ServerError`. When the connection breaks it reconnects, and an
/// `idempotent` batch (reads, REPLACE writes) is sent once more. When no reply can be had, every key of
/// the batch becomes a failure at `stage` and `None` is returned; when the connection cannot be
/// re-established, the run is also aborted (the stage then drains its input as unreached and ends).
pub fn exchange<'k>(
    conn: &mut Conn,
    pipe: &Pipeline,
    idempotent: bool,
    keys: impl IntoIterator<Item = &'k Key>,
    stage: Stage,
    rep: &Reporter,
) -> Option<Vec<Value>> {
    let mut attempts = if idempotent { 2 } else { 1 };
    let err = loop {
        attempts -= 1;
        match pipe.query::<Vec<Value>>(conn.raw()) {
            Ok(replies) => return Some(replies),
            Err(err) if conn::is_connection_error(&err) => {
                let role = conn.endpoint().role.name();
                log::warn!("{role} {}: {}; reconnecting", conn.endpoint(), conn::one_line(&err.to_string()));
                if let Err(lost) = conn.reconnect() {
                    rep.stop.fatal(format!("{} stage lost the connection: {lost}", stage.name()));
                    break err;
                }
                if attempts == 0 {
                    break err;
                }
            }
            // Not a connection problem (e.g. a reply the client could not parse): no retry helps.
            Err(err) => break err,
        }
    };
    let (code, message) = conn::classify(&err);
    for key in keys {
        rep.fail(key.clone(), stage, code.clone(), message.clone());
    }
    None
}

/// Passes a non-empty batch to the next stage. If that stage is gone (it only goes after an abort),
/// the keys are given back as unreached, and the caller keeps draining its own input.
pub fn forward<T>(out: &Sender<Vec<T>>, batch: Vec<T>, rep: &Reporter) {
    if batch.is_empty() {
        return;
    }
    if let Err(lost) = out.send(batch) {
        rep.unreached(lost.into_inner().len());
    }
}

/// Builds a pipeline that returns one result per command, errors included.
pub fn new_pipe() -> Pipeline {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    pipe
}
