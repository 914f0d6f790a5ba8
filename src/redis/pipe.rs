//! A pipeline packed as it is built: every command's RESP goes straight into one buffer, with no
//! `redis::Cmd` (and its two vectors) per command and no second copy at send time. A [`Pipe`] is what
//! [`super::conn::Conn::round`] hands its callers to fill, one per server, and it is kept from round to
//! round, so a thread's buffer is allocated once and grows to its largest batch.
//!
//! Arguments are anything the redis crate can write ([`redis::ToRedisArgs`]: bytes, strings, numbers),
//! written through its [`RedisWrite`] trait, so they are encoded exactly as the crate would.

use std::io;

use redis::{Cmd, RedisWrite, ToRedisArgs};

/// Room left for a command's `*<argc>\r\n` header before its arguments are written: exact for fewer
/// than 10 arguments, the common case; a longer command has its bytes moved once when it is closed.
const HEADER_SLOT: &[u8] = b"*0\r\n";

/// The most buffer memory a pipe keeps between rounds: enough for a batch of short values; the rounds of
/// big values (DUMP payloads of up to `--big-key-bytes`) allocate theirs and give it back.
pub const KEPT_BYTES: usize = 4 << 20;

/// Commands packed in RESP, in order.
#[derive(Debug, Default)]
pub struct Pipe {
    /// The packed commands.
    buf: Vec<u8>,
    /// Where each closed command ends in `buf`.
    ends: Vec<usize>,
    /// The command being built: where it starts in `buf`, and its number of arguments so far.
    open: Option<(usize, usize)>,
    /// The commands whose replies are wanted as their RESP bytes ([`Pipe::raw`]), in order.
    raw: Vec<usize>,
}

impl Pipe {
    /// An empty pipe.
    pub fn new() -> Pipe {
        Pipe::default()
    }

    /// Starts a command named `name`; [`Pipe::arg`] adds its arguments.
    pub fn cmd(&mut self, name: &str) -> &mut Pipe {
        self.close();
        self.open = Some((self.buf.len(), 0));
        self.buf.extend_from_slice(HEADER_SLOT);
        self.push(name.as_bytes());
        self
    }

    /// Adds an argument (or, for a value that writes several, arguments) to the command being built.
    ///
    /// # Panics
    /// When no command was started.
    pub fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Pipe {
        arg.write_redis_args(self);
        self
    }

    /// Appends a command built elsewhere.
    pub fn add_command(&mut self, cmd: &Cmd) -> &mut Pipe {
        self.close();
        cmd.write_packed_command(&mut self.buf);
        self.ends.push(self.buf.len());
        self
    }

    /// The reply of the command just started is to be handed over as its RESP bytes, in a
    /// `Value::BulkString` (an error reply stays a `Value::ServerError`): for a reply whose elements
    /// are only copied on (see [`crate::redis::wire::bulks`]), one allocation instead of one per element.
    ///
    /// # Panics
    /// When no command was started.
    pub fn raw(&mut self) -> &mut Pipe {
        assert!(self.open.is_some(), "raw is said of a command: call cmd first");
        self.raw.push(self.len() - 1);
        self
    }

    /// Whether command `i`'s reply is wanted as its RESP bytes.
    pub fn is_raw(&self, i: usize) -> bool {
        self.raw.binary_search(&i).is_ok()
    }

    /// How many commands it holds.
    pub fn len(&self) -> usize {
        self.ends.len() + usize::from(self.open.is_some())
    }

    /// Every command, packed, ready to send.
    pub fn packed(&mut self) -> &[u8] {
        self.close();
        &self.buf
    }

    /// Empties it, keeping its memory up to [`KEPT_BYTES`] (a round of big values gives its memory back).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.buf.shrink_to(KEPT_BYTES);
        self.ends.clear();
        self.open = None;
        self.raw.clear();
    }

    /// Command `i`'s packed bytes.
    fn command(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.buf[start..self.ends[i]]
    }

    /// Command `i`'s name, as sent.
    pub fn name(&mut self, i: usize) -> &[u8] {
        self.close();
        name_of(self.command(i))
    }

    /// Appends command `i` of `other`, as it is (its reply raw if it was so there).
    pub fn append_from(&mut self, other: &mut Pipe, i: usize) {
        other.close();
        self.close();
        self.buf.extend_from_slice(other.command(i));
        if other.is_raw(i) {
            self.raw.push(self.ends.len());
        }
        self.ends.push(self.buf.len());
    }

    /// Adds one argument, as a RESP bulk string.
    fn push(&mut self, bytes: &[u8]) {
        let (_, argc) = self.open.as_mut().expect("an argument belongs to a command: call cmd first");
        *argc += 1;
        self.buf.reserve(bytes.len() + 16);
        self.buf.push(b'$');
        decimal(&mut self.buf, bytes.len());
        self.buf.extend_from_slice(b"\r\n");
        self.buf.extend_from_slice(bytes);
        self.buf.extend_from_slice(b"\r\n");
    }

    /// Writes the header of the command being built, if any, and closes it.
    fn close(&mut self) {
        let Some((start, argc)) = self.open.take() else { return };
        if argc < 10 {
            self.buf[start + 1] = b'0' + argc as u8;
        } else {
            let mut header = vec![b'*'];
            decimal(&mut header, argc);
            header.extend_from_slice(b"\r\n");
            self.buf.splice(start..start + HEADER_SLOT.len(), header);
        }
        self.ends.push(self.buf.len());
    }
}

impl RedisWrite for Pipe {
    fn write_arg(&mut self, arg: &[u8]) {
        self.push(arg);
    }

    fn writer_for_next_arg(&mut self) -> impl io::Write + '_ {
        NextArg { pipe: self, bytes: Vec::new() }
    }
}

/// An argument written through [`io::Write`], added to its pipe when dropped.
struct NextArg<'p> {
    pipe: &'p mut Pipe,
    bytes: Vec<u8>,
}

impl io::Write for NextArg<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for NextArg<'_> {
    fn drop(&mut self) {
        let bytes = std::mem::take(&mut self.bytes);
        self.pipe.push(&bytes);
    }
}

/// Appends `n` in decimal.
fn decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The name of a packed command: its first bulk string (empty if it cannot be read).
fn name_of(command: &[u8]) -> &[u8] {
    let bulk = |at: usize| -> Option<&[u8]> {
        let rest = command.get(at..)?;
        let line = rest.iter().position(|&b| b == b'\r')?;
        let len: usize = std::str::from_utf8(rest.get(1..line)?).ok()?.parse().ok()?;
        rest.get(line + 2..line + 2 + len)
    };
    let Some(header) = command.iter().position(|&b| b == b'\n') else { return &[] };
    bulk(header + 1).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_packed_as_the_redis_crate_packs_them() {
        let mut pipe = Pipe::new();
        pipe.cmd("SET").arg(&b"k\r\n"[..]).arg(&[0u8, 255][..]).arg("PX").arg(1500u64);
        pipe.cmd("PING");
        let mut long = redis::cmd("HSET");
        long.arg("h");
        pipe.cmd("HSET").arg("h");
        for i in 0..12 {
            long.arg(i).arg(-1.5f64);
            pipe.arg(i).arg(-1.5f64);
        }
        let mut added = redis::cmd("GETRANGE");
        added.arg("k").arg(0).arg(-1);
        pipe.add_command(&added);
        pipe.cmd("DEL").arg(vec!["a", "b"]);
        assert_eq!(pipe.len(), 5);

        let mut expected = redis::pipe();
        expected.cmd("SET").arg(&b"k\r\n"[..]).arg(&[0u8, 255][..]).arg("PX").arg(1500u64);
        expected.cmd("PING");
        expected.add_command(long);
        expected.add_command(added);
        expected.cmd("DEL").arg(vec!["a", "b"]);
        assert_eq!(pipe.packed(), &expected.get_packed_pipeline()[..]);
        let names: Vec<Vec<u8>> = (0..pipe.len()).map(|i| pipe.name(i).to_vec()).collect();
        assert_eq!(names, [&b"SET"[..], b"PING", b"HSET", b"GETRANGE", b"DEL"]);

        let mut other = Pipe::new();
        other.append_from(&mut pipe, 2);
        other.append_from(&mut pipe, 0);
        let mut both = redis::pipe();
        both.add_command(expected.cmd_iter().nth(2).expect("three").clone());
        both.add_command(expected.cmd_iter().next().expect("one").clone());
        assert_eq!(other.packed(), &both.get_packed_pipeline()[..]);

        pipe.clear();
        assert_eq!(pipe.len(), 0);
        assert!(pipe.packed().is_empty());
        pipe.cmd("SET").arg("k").arg(vec![0u8; 2 * KEPT_BYTES]);
        pipe.clear();
        assert!(pipe.buf.capacity() <= KEPT_BYTES, "a big round's memory is given back");
    }

    #[test]
    fn raw_replies_are_marked_by_command_and_kept_when_a_command_moves() {
        let mut pipe = Pipe::new();
        pipe.cmd("TYPE").arg("a").cmd("LRANGE").arg("a").arg(0).arg(-1).raw().cmd("PEXPIRETIME").arg("a");
        assert_eq!((0..3).map(|i| pipe.is_raw(i)).collect::<Vec<_>>(), [false, true, false]);
        let mut other = Pipe::new();
        other.cmd("ASKING");
        other.append_from(&mut pipe, 1);
        other.append_from(&mut pipe, 2);
        assert_eq!((0..3).map(|i| other.is_raw(i)).collect::<Vec<_>>(), [false, true, false]);
        other.clear();
        other.cmd("PING");
        assert!(!other.is_raw(0));
    }

    #[test]
    fn decimals_are_written_whole() {
        for n in [0usize, 7, 10, 99, 100, 65_535, usize::MAX] {
            let mut out = Vec::new();
            decimal(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }
}
