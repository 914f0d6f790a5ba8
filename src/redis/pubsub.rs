//! A RESP2 pattern subscription on one [`Wire`]: `PSUBSCRIBE`, then the messages' payloads one by
//! one, and a PING that doubles as a fence (its PONG comes after every message published before it;
//! the messages read on the way to it wait here, in order, for [`Subscription::next`]).

use std::collections::VecDeque;
use std::time::Duration;

use redis::{ErrorKind, RedisError, RedisResult, Value};

use super::reply::kind;
use super::wire::Wire;

/// A connection subscribed to one pattern.
pub struct Subscription {
    wire: Wire,
    /// Payloads read while waiting for a PONG, oldest first.
    waiting: VecDeque<Vec<u8>>,
}

/// What one reply on a subscribed connection is.
enum Heard {
    /// A `pmessage`: its payload.
    Message(Vec<u8>),
    /// The confirmation of the subscription.
    Subscribed,
    /// The reply to a PING.
    Pong,
}

impl Subscription {
    /// Subscribes `wire` to `pattern` and waits for the server to confirm it.
    pub fn new(mut wire: Wire, pattern: &str) -> RedisResult<Subscription> {
        wire.send(&redis::cmd("PSUBSCRIBE").arg(pattern).get_packed_command())?;
        let mut sub = Subscription { wire, waiting: VecDeque::new() };
        loop {
            match sub.heard()? {
                Heard::Subscribed => return Ok(sub),
                Heard::Message(payload) => sub.waiting.push_back(payload),
                Heard::Pong => {}
            }
        }
    }

    /// The read timeout: how long [`Subscription::next`] waits for a message.
    pub fn set_read_timeout(&self, timeout: Duration) -> RedisResult<()> {
        Ok(self.wire.set_read_timeout(Some(timeout))?)
    }

    /// PING, and the messages before its PONG read into the queue.
    pub fn ping(&mut self) -> RedisResult<()> {
        self.wire.send(&redis::cmd("PING").get_packed_command())?;
        loop {
            match self.heard()? {
                Heard::Pong => return Ok(()),
                Heard::Message(payload) => self.waiting.push_back(payload),
                Heard::Subscribed => {}
            }
        }
    }

    /// The next message's payload; a timeout error when none came within the read timeout.
    pub fn next(&mut self) -> RedisResult<Vec<u8>> {
        if let Some(payload) = self.waiting.pop_front() {
            return Ok(payload);
        }
        loop {
            if let Heard::Message(payload) = self.heard()? {
                return Ok(payload);
            }
        }
    }

    /// Reads one reply and says what it is.
    fn heard(&mut self) -> RedisResult<Heard> {
        let mut items = match self.wire.recv()? {
            Value::Array(items) => items,
            Value::ServerError(e) => return Err(e.into()),
            other => return Err(unexpected(&format!("{} reply on a subscribed connection", kind(&other)))),
        };
        let head = match items.first() {
            Some(Value::BulkString(head)) => head.clone(),
            _ => Vec::new(),
        };
        match (&head[..], items.len()) {
            (b"pmessage", 4) => match items.pop() {
                Some(Value::BulkString(payload)) => Ok(Heard::Message(payload)),
                _ => Err(unexpected("a pmessage without a payload")),
            },
            (b"psubscribe", 3) => Ok(Heard::Subscribed),
            (b"pong", 2) => Ok(Heard::Pong),
            _ => Err(unexpected("an array that is no pub/sub message")),
        }
    }
}

/// A reply a subscribed connection should not get.
fn unexpected(what: &str) -> RedisError {
    RedisError::from((ErrorKind::Parse, "unexpected reply", what.to_string()))
}
