//! One connection's bytes, owned end to end: the socket (TCP, or TLS by rustls) and a RESP2 reader over
//! one buffer that hands each reply over as a `redis::Value`. [`super::connect`] makes a [`Wire`] and logs
//! it in; every connection redis-ferry opens is one.
//!
//! Why not the redis crate's own connection: its reply parser (a general parser combinator, reading
//! through its own buffer) took a quarter of redis-ferry's CPU in a copy, and its allocations as much
//! again. Here a read takes up to 64 KiB at once, and a reply is parsed from the buffer in one pass
//! into the crate's `Value`: the rest of the house (commands, replies, errors, `ConnectionLike`) is
//! the crate's, unchanged.
//!
//! Nothing a server sends can make it allocate without bound: the buffer grows only as bytes arrive
//! (a declared length is never reserved ahead), arrays nest at most [`MAX_DEPTH`] deep, and a line
//! (a simple string, an error, a length) may be at most [`MAX_LINE`] bytes. A reply that is not all
//! there yet stays in the buffer: a read that times out loses nothing, and the next read goes on.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use redis::{ConnectionLike, ErrorKind, RedisError, RedisResult, Value};

/// Bytes asked of the socket at each read, at least.
const READ: usize = 64 << 10;

/// A buffer grown past this (by one big reply) is given back once it is read.
const KEPT: usize = 4 << 20;

/// How deep arrays may nest in a reply (Redis's own go 4 or 5 deep, at XINFO STREAM FULL).
const MAX_DEPTH: usize = 16;

/// The longest line a reply may hold: a simple string, an error message, a length.
const MAX_LINE: usize = 1 << 20;

/// The socket under a [`Wire`].
pub enum Stream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP, the handshake done.
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    /// The TCP socket, for its timeouts.
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Tcp(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// One connection to one server: commands go out as packed bytes, replies come back one at a time.
/// After an I/O error (other than a timeout between replies) or a reply that is not RESP, it is
/// closed for good ([`ConnectionLike::is_open`] says so) and must be made again.
pub struct Wire {
    stream: Stream,
    /// Bytes read; `buf[start..end]` are not yet handed over.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The db SELECTed at login.
    db: i64,
    open: bool,
    errors: Errors,
}

/// Error replies already read, by their bytes: the same error (WRONGTYPE, for each key of another type
/// in a batch) is made into a `redis::ServerError` once, by the crate's parser (the only way to make
/// one), and cloned after that.
#[derive(Default)]
struct Errors(Vec<(Vec<u8>, Value)>);

impl Errors {
    /// At most this many different errors are kept (errors that name a key or a slot differ each time).
    const KEPT: usize = 8;

    /// The error reply whose bytes are `line` (with its CRLF).
    fn get(&mut self, line: &[u8]) -> RedisResult<Value> {
        if let Some((_, error)) = self.0.iter().find(|(seen, _)| seen == line) {
            return Ok(error.clone());
        }
        let error = match redis::parse_redis_value(line) {
            Ok(error @ Value::ServerError(_)) => error,
            _ => return Err(protocol("an error reply that cannot be read")),
        };
        if self.0.len() < Self::KEPT {
            self.0.push((line.to_vec(), error.clone()));
        }
        Ok(error)
    }
}

impl Wire {
    /// A wire over a connected socket, with `db` selected (or to be).
    pub fn new(stream: Stream, db: i64) -> Wire {
        Wire { stream, buf: vec![0; READ], start: 0, end: 0, db, open: true, errors: Errors::default() }
    }

    /// Read and write timeouts of the socket (`None`: wait for ever).
    pub fn set_timeouts(&self, read: Option<Duration>, write: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(read)?;
        self.stream.tcp().set_write_timeout(write)
    }

    /// The read timeout alone.
    pub fn set_read_timeout(&self, read: Option<Duration>) -> io::Result<()> {
        self.stream.tcp().set_read_timeout(read)
    }

    /// Sends packed commands, whole.
    pub fn send(&mut self, packed: &[u8]) -> RedisResult<()> {
        if !self.open {
            return Err(closed());
        }
        let sent = self.stream.write_all(packed).and_then(|()| self.stream.flush());
        sent.map_err(|e| {
            self.open = false;
            RedisError::from(e)
        })
    }

    /// Reads the next reply; an error reply is a `Value::ServerError`. A timeout before the reply is
    /// all there leaves the connection usable (what came of it is kept); any other failure closes it.
    pub fn recv(&mut self) -> RedisResult<Value> {
        self.next_reply(false)
    }

    /// [`Wire::recv`], but a reply other than an error comes as its RESP bytes, whole, in a
    /// `Value::BulkString` ([`super::pipe::Pipe::raw`]).
    pub fn recv_raw(&mut self) -> RedisResult<Value> {
        self.next_reply(true)
    }

    fn next_reply(&mut self, raw: bool) -> RedisResult<Value> {
        if !self.open {
            return Err(closed());
        }
        loop {
            if self.start < self.end {
                let (buf, at) = (&self.buf[..self.end], self.start);
                let got = match raw && buf[at] != b'-' {
                    true => span(buf, at, 0)
                        .map(|end| end.map(|end| (Value::BulkString(buf[at..end].to_vec()), end))),
                    false => parse(buf, at, 0, &mut self.errors),
                };
                match got {
                    Ok(Some((value, next))) => {
                        self.consumed(next);
                        return Ok(value);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.open = false;
                        return Err(e);
                    }
                }
            }
            if let Err(e) = self.fill() {
                if !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
                    self.open = false;
                }
                return Err(e.into());
            }
        }
    }

    /// A reply ended at `next`.
    fn consumed(&mut self, next: usize) {
        self.start = next;
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
            if self.buf.len() > KEPT {
                self.buf = vec![0; READ];
            }
        }
    }

    /// Reads more bytes after `end`, making room first: the unread part moves to the front, and the
    /// buffer doubles only when that is not room enough (a reply longer than the buffer).
    fn fill(&mut self) -> io::Result<()> {
        if self.buf.len() - self.end < READ && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.buf.len() - self.end < READ {
            let grown = (self.buf.len() * 2).max(self.end + READ);
            self.buf.resize(grown, 0);
        }
        match self.stream.read(&mut self.buf[self.end..])? {
            0 => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection")),
            n => {
                self.end += n;
                Ok(())
            }
        }
    }
}

/// The error of a wire used after it closed.
fn closed() -> RedisError {
    RedisError::from(io::Error::new(io::ErrorKind::NotConnected, "the connection is closed"))
}

/// A reply that is not RESP.
fn protocol(what: &str) -> RedisError {
    RedisError::from((ErrorKind::Parse, "invalid reply from the server", what.to_string()))
}

/// Parses the reply starting at `at` in `buf`: the value and where the next reply starts, or `None`
/// when the reply is not all in `buf` yet.
fn parse(buf: &[u8], at: usize, depth: usize, errors: &mut Errors) -> RedisResult<Option<(Value, usize)>> {
    let Some(cr) = line_end(buf, at)? else { return Ok(None) };
    let line = &buf[at + 1..cr];
    let next = cr + 2;
    let value = match buf[at] {
        b'+' => match std::str::from_utf8(line) {
            Ok("OK") => Value::Okay,
            Ok(text) => Value::SimpleString(text.to_string()),
            Err(_) => return Err(protocol("a simple string that is not UTF-8")),
        },
        b'-' => errors.get(&buf[at..next])?,
        b':' => Value::Int(integer(line)?),
        b'$' => {
            let len = integer(line)?;
            if len < 0 {
                Value::Nil
            } else {
                let len = usize::try_from(len).map_err(|_| protocol("a bulk length out of range"))?;
                let Some(end) = bulk_end(buf, next, len)? else { return Ok(None) };
                return Ok(Some((Value::BulkString(buf[next..end].to_vec()), end + 2)));
            }
        }
        b'*' => {
            let n = integer(line)?;
            if n < 0 {
                Value::Nil
            } else {
                if depth >= MAX_DEPTH {
                    return Err(protocol("arrays nested too deep"));
                }
                let n = usize::try_from(n).map_err(|_| protocol("an array length out of range"))?;
                // Each element takes at least 3 bytes: no more are reserved than could have come.
                let mut items = Vec::with_capacity(n.min((buf.len() - next) / 3));
                let mut pos = next;
                for _ in 0..n {
                    let Some((item, after)) = parse(buf, pos, depth + 1, errors)? else { return Ok(None) };
                    items.push(item);
                    pos = after;
                }
                return Ok(Some((Value::Array(items), pos)));
            }
        }
        _ => return Err(protocol("a reply of an unknown type (is this a Redis server?)")),
    };
    Ok(Some((value, next)))
}

/// Where the reply starting at `at` in `buf` ends, `None` when it is not all in `buf` yet: what
/// [`parse`] checks, without making the value.
fn span(buf: &[u8], at: usize, depth: usize) -> RedisResult<Option<usize>> {
    let Some(cr) = line_end(buf, at)? else { return Ok(None) };
    let next = cr + 2;
    let n = match buf[at] {
        b'+' | b'-' => return Ok(Some(next)),
        b':' | b'$' | b'*' => integer(&buf[at + 1..cr])?,
        _ => return Err(protocol("a reply of an unknown type (is this a Redis server?)")),
    };
    if n < 0 || buf[at] == b':' {
        return Ok(Some(next));
    }
    let n = usize::try_from(n).map_err(|_| protocol("a length out of range"))?;
    if buf[at] == b'$' {
        return Ok(bulk_end(buf, next, n)?.map(|end| end + 2));
    }
    if depth >= MAX_DEPTH {
        return Err(protocol("arrays nested too deep"));
    }
    let mut pos = next;
    for _ in 0..n {
        let Some(after) = span(buf, pos, depth + 1)? else { return Ok(None) };
        pos = after;
    }
    Ok(Some(pos))
}

/// Where a bulk string of `len` bytes starting at `at` ends (before its CRLF), `None` when it is not
/// all in `buf` yet.
fn bulk_end(buf: &[u8], at: usize, len: usize) -> RedisResult<Option<usize>> {
    let Some(end) = at.checked_add(len).filter(|&end| end <= buf.len().saturating_sub(2)) else {
        return Ok(None);
    };
    if &buf[end..end + 2] != b"\r\n" {
        return Err(protocol("a bulk string not ended by CRLF"));
    }
    Ok(Some(end))
}

/// The elements of a raw reply ([`Wire::recv_raw`]) that is an array of bulk strings, in order, as
/// slices of it; `None` for a reply of any other shape.
pub fn bulks(raw: &[u8]) -> Option<Vec<&[u8]>> {
    let cr = line_end(raw, 0).ok()??;
    if raw[0] != b'*' {
        return None;
    }
    let n = usize::try_from(integer(&raw[1..cr]).ok()?).ok()?;
    let mut out = Vec::with_capacity(n.min(raw.len() / 4));
    let mut pos = cr + 2;
    for _ in 0..n {
        let cr = line_end(raw, pos).ok()??;
        if raw[pos] != b'$' {
            return None;
        }
        let len = usize::try_from(integer(&raw[pos + 1..cr]).ok()?).ok()?;
        let end = bulk_end(raw, cr + 2, len).ok()??;
        out.push(&raw[cr + 2..end]);
        pos = end + 2;
    }
    (pos == raw.len()).then_some(out)
}

/// Where the line starting at `at` ends (its CR), `None` when its end is not in `buf` yet.
fn line_end(buf: &[u8], at: usize) -> RedisResult<Option<usize>> {
    let window = &buf[at..buf.len().min(at + MAX_LINE)];
    match memchr::memchr(b'\n', window) {
        Some(0) => Err(protocol("an empty line")),
        Some(i) if window[i - 1] == b'\r' && i >= 2 => Ok(Some(at + i - 1)),
        Some(_) => Err(protocol("a line not ended by CRLF")),
        None if window.len() == MAX_LINE => Err(protocol("a line longer than 1 MiB")),
        None => Ok(None),
    }
}

/// A RESP integer (a length or an `:` reply).
fn integer(digits: &[u8]) -> RedisResult<i64> {
    let (negative, digits) = match digits {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() || digits.len() > 19 {
        return Err(protocol("an integer that cannot be read"));
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(protocol("an integer that cannot be read"));
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(i64::from(d - b'0')))
            .ok_or_else(|| protocol("an integer out of range"))?;
    }
    Ok(if negative { -n } else { n })
}

impl ConnectionLike for Wire {
    /// One command and its reply. Unlike [`Wire::recv`], a timeout closes the connection too: the
    /// reply that did not come in time would be taken for the next command's.
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        self.send(cmd)?;
        self.recv().inspect_err(|_| self.open = false)
    }

    /// Replies `offset..offset + count` of a pipeline; an error reply before `offset` (a command
    /// refused inside MULTI) is the error of the whole. Any failure closes the connection.
    fn req_packed_commands(&mut self, cmd: &[u8], offset: usize, count: usize) -> RedisResult<Vec<Value>> {
        self.send(cmd)?;
        let mut replies = Vec::with_capacity(count);
        let mut refused = None;
        for i in 0..offset + count {
            match self.recv().inspect_err(|_| self.open = false)? {
                Value::ServerError(e) if i < offset => refused = refused.or(Some(e)),
                _ if i < offset => {}
                reply => replies.push(reply),
            }
        }
        match refused {
            Some(e) => Err(e.into()),
            None => Ok(replies),
        }
    }

    fn get_db(&self) -> i64 {
        self.db
    }

    fn check_connection(&mut self) -> bool {
        redis::cmd("PING").query::<String>(self).is_ok()
    }

    fn is_open(&self) -> bool {
        self.open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses every reply of `bytes`, which must hold whole replies only.
    fn all(bytes: &[u8]) -> Vec<Value> {
        let (mut at, mut out, mut errors) = (0, Vec::new(), Errors::default());
        while at < bytes.len() {
            let (value, next) = parse(bytes, at, 0, &mut errors).unwrap().expect("whole");
            out.push(value);
            at = next;
        }
        out
    }

    #[test]
    fn reads_every_resp2_type_as_the_crate_does() {
        let replies: [&[u8]; 12] = [
            b"+OK\r\n",
            b"+PONG\r\n",
            b":-42\r\n",
            b"$5\r\nab\r\nc\r\n",
            b"$0\r\n\r\n",
            b"$-1\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*3\r\n:1\r\n*1\r\n$1\r\nx\r\n-WRONGTYPE Operation against a key\r\n",
            b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
            b"-ERR bad thing\r\n",
            b"-BUSYKEY Target key name already exists.\r\n",
        ];
        for reply in replies {
            assert_eq!(all(reply), vec![redis::parse_redis_value(reply).unwrap()]);
        }
        // Twice over, so that the second time the errors come from what was kept of the first.
        let together = all(&replies.concat().repeat(2));
        assert_eq!(together[..replies.len()], together[replies.len()..]);
        assert!(matches!(&together[9], Value::ServerError(e) if e.code() == "WRONGTYPE"));
        assert!(matches!(&together[11], Value::ServerError(e) if e.code() == "BUSYKEY"));
    }

    #[test]
    fn a_raw_reply_spans_what_parse_reads_and_its_bulks_are_its_elements() {
        let replies: [&[u8]; 6] = [
            b"+OK\r\n",
            b":12\r\n",
            b"$-1\r\n",
            b"*3\r\n$1\r\na\r\n$0\r\n\r\n$4\r\nb\r\nc\r\n",
            b"*2\r\n*1\r\n:1\r\n$1\r\nx\r\n",
            b"*0\r\n",
        ];
        for reply in replies {
            let (_, next) = parse(reply, 0, 0, &mut Errors::default()).unwrap().expect("whole");
            assert_eq!(span(reply, 0, 0).unwrap(), Some(next));
            assert_eq!(span(&reply[..reply.len() - 1], 0, 0).unwrap(), None);
        }
        assert_eq!(bulks(replies[3]), Some(vec![&b"a"[..], b"", b"b\r\nc"]));
        assert_eq!(bulks(replies[5]), Some(vec![]));
        for other in [replies[0], replies[1], replies[2], replies[4], b"*2\r\n$1\r\na\r\n"] {
            assert_eq!(bulks(other), None, "{:?}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn a_reply_cut_anywhere_waits_for_the_rest() {
        let bytes: &[u8] = b"*2\r\n$3\r\nabc\r\n:7\r\n";
        for cut in 0..bytes.len() {
            assert_eq!(parse(&bytes[..cut], 0, 0, &mut Errors::default()).unwrap(), None, "cut at {cut}");
        }
        assert!(parse(bytes, 0, 0, &mut Errors::default()).unwrap().is_some());
    }

    #[test]
    fn what_is_not_resp_is_refused_without_allocating() {
        for bad in [
            &b"HTTP/1.1 400 Bad Request\r\n"[..],
            b":12a\r\n",
            b":99999999999999999999\r\n",
            b"$3\r\nabcd\r\n",
            b"\r\n",
            b"+OK\n",
            b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n",
        ] {
            assert!(parse(bad, 0, 0, &mut Errors::default()).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        // A huge declared length or count is waited for, not reserved.
        assert_eq!(parse(b"$9223372036854775807\r\n", 0, 0, &mut Errors::default()).unwrap(), None);
        assert_eq!(parse(b"*9223372036854775807\r\n:1\r\n", 0, 0, &mut Errors::default()).unwrap(), None);
    }
}
