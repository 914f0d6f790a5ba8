//! The bytes of an RDB file as the parser takes them: through a fixed buffer (never the whole file),
//! counting the offset for error messages and the CRC-64 of everything read for the trailer check.
//! Two things on top, for the fast path and for big keys:
//! - a *tee*: while it is on, every byte consumed is also appended to it, which is how a key's value
//!   bytes are cut out of the file exactly as the file holds them;
//! - a *replay*: bytes already consumed (a tee that grew too big) are given again before the stream
//!   goes on, so a value can be walked a second time, decoded into pages, from a pipe that cannot seek.

use std::io::Read;

use super::crc64;
use super::Error;

/// The read buffer.
const BUFFER: usize = 256 << 10;

/// A buffered RDB stream.
pub struct Input<R> {
    inner: R,
    buf: Box<[u8]>,
    /// Next byte to consume in `buf`.
    pos: usize,
    /// End of the valid bytes in `buf`.
    end: usize,
    /// Start of the bytes of `buf` not yet in `crc`.
    crc_from: usize,
    /// Offset in the file of `buf[0]`.
    base: u64,
    /// CRC-64 of every byte of the stream before `buf[crc_from]`.
    crc: u64,
    /// The tee, while on.
    tee: Option<Vec<u8>>,
    /// Bytes to give again before the stream (a replayed value), from `replay_pos`.
    replay: Vec<u8>,
    replay_pos: usize,
    /// The file offset of `replay[0]`.
    replay_at: u64,
    /// The stream ended.
    eof: bool,
    /// The file's size, when it is a file: lengths beyond what is left are refused before allocating.
    size: Option<u64>,
}

impl<R: Read> Input<R> {
    /// Reads `inner`; `size` is its length when known (a file).
    pub fn new(inner: R, size: Option<u64>) -> Input<R> {
        Input {
            inner,
            buf: vec![0; BUFFER].into_boxed_slice(),
            pos: 0,
            end: 0,
            crc_from: 0,
            base: 0,
            crc: 0,
            tee: None,
            replay: Vec::new(),
            replay_pos: 0,
            replay_at: 0,
            eof: false,
            size,
        }
    }

    /// The same input, whose first byte is byte `at` of the file.
    pub fn starting_at(mut self, at: u64) -> Input<R> {
        self.base = at;
        self
    }

    /// The file offset of the next byte.
    pub fn offset(&self) -> u64 {
        if self.replay_pos < self.replay.len() {
            self.replay_at + self.replay_pos as u64
        } else {
            self.base + self.pos as u64
        }
    }

    /// An error at the current offset.
    pub fn corrupt(&self, what: impl Into<String>) -> Error {
        Error::Corrupt { offset: self.offset(), what: what.into() }
    }

    /// Refills the buffer; false at the end of the stream.
    fn fill(&mut self) -> Result<bool, Error> {
        if self.eof {
            return Ok(false);
        }
        self.crc = crc64::update(self.crc, &self.buf[self.crc_from..self.pos]);
        let keep = self.end - self.pos;
        self.buf.copy_within(self.pos..self.end, 0);
        self.base += self.pos as u64;
        self.pos = 0;
        self.crc_from = 0;
        self.end = keep;
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(self.end > 0);
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Io { offset: self.offset(), what: e.to_string() }),
            }
        }
    }

    /// Makes at least one byte available from the stream; `what` names what was being read.
    fn need(&mut self, what: &str) -> Result<(), Error> {
        while self.pos == self.end {
            if !self.fill()? {
                return Err(Error::Truncated { offset: self.offset(), what: what.to_string() });
            }
        }
        Ok(())
    }

    /// Hands up to `n` consumed bytes to `take` (from the replay, else from the buffer), teeing them.
    fn consume(&mut self, n: usize, what: &str, mut take: impl FnMut(&[u8])) -> Result<(), Error> {
        let mut left = n;
        while left > 0 {
            let chunk = if self.replay_pos < self.replay.len() {
                let k = left.min(self.replay.len() - self.replay_pos);
                let from = self.replay_pos;
                self.replay_pos += k;
                // Replayed bytes were teed when first read; a replay never tees.
                take(&self.replay[from..from + k]);
                if self.replay_pos == self.replay.len() {
                    self.replay = Vec::new();
                    self.replay_pos = 0;
                }
                k
            } else {
                self.need(what)?;
                let k = left.min(self.end - self.pos);
                let slice = &self.buf[self.pos..self.pos + k];
                if let Some(tee) = &mut self.tee {
                    tee.extend_from_slice(slice);
                }
                take(slice);
                self.pos += k;
                k
            };
            left -= chunk;
        }
        Ok(())
    }

    /// One byte.
    pub fn u8(&mut self, what: &str) -> Result<u8, Error> {
        let mut b = 0;
        self.consume(1, what, |s| b = s[0])?;
        Ok(b)
    }

    /// `N` bytes.
    pub fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], Error> {
        let mut out = [0u8; N];
        let mut at = 0;
        self.consume(N, what, |s| {
            out[at..at + s.len()].copy_from_slice(s);
            at += s.len();
        })?;
        Ok(out)
    }

    /// Checks that `n` more bytes can be in the file (when its size is known): a length field that
    /// points past the end is refused before anything is allocated.
    pub fn room(&self, n: u64, what: &str) -> Result<(), Error> {
        if let Some(size) = self.size {
            let left = size.saturating_sub(self.offset());
            if n > left {
                return Err(Error::Truncated {
                    offset: self.offset(),
                    what: format!("{what} of {n} bytes, but only {left} bytes are left in the file"),
                });
            }
        }
        Ok(())
    }

    /// `n` bytes into a new vector. The vector grows as the bytes arrive, so a length field larger than
    /// the input allocates no more than the input holds.
    pub fn bytes(&mut self, n: u64, what: &str) -> Result<Vec<u8>, Error> {
        self.room(n, what)?;
        let n = usize::try_from(n).map_err(|_| self.corrupt(format!("{what}: length {n} is too large")))?;
        let mut out = Vec::with_capacity(n.min(BUFFER));
        self.consume(n, what, |s| out.extend_from_slice(s))?;
        Ok(out)
    }

    /// Consumes `n` bytes without keeping them (but the tee does).
    pub fn skip(&mut self, n: u64, what: &str) -> Result<(), Error> {
        self.room(n, what)?;
        let n = usize::try_from(n).map_err(|_| self.corrupt(format!("{what}: length {n} is too large")))?;
        self.consume(n, what, |_| {})
    }

    /// Starts teeing, appending to `into`.
    pub fn tee_start(&mut self, into: Vec<u8>) {
        self.tee = Some(into);
    }

    /// Bytes teed so far.
    pub fn teed(&self) -> usize {
        self.tee.as_ref().map_or(0, Vec::len)
    }

    /// Stops teeing and returns what was teed.
    pub fn tee_take(&mut self) -> Vec<u8> {
        self.tee.take().unwrap_or_default()
    }

    /// Gives `bytes` (consumed from offset `at`) again before the stream goes on.
    pub fn replay(&mut self, bytes: Vec<u8>, at: u64) {
        debug_assert!(self.replay_pos >= self.replay.len(), "one replay at a time");
        self.replay = bytes;
        self.replay_pos = 0;
        self.replay_at = at;
    }

    /// The CRC-64 of every byte read from the stream so far.
    pub fn crc(&mut self) -> u64 {
        self.crc = crc64::update(self.crc, &self.buf[self.crc_from..self.pos]);
        self.crc_from = self.pos;
        self.crc
    }

    /// True when nothing is left after the current position.
    pub fn at_end(&mut self) -> Result<bool, Error> {
        if self.replay_pos < self.replay.len() {
            return Ok(false);
        }
        while self.pos == self.end {
            if !self.fill()? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::Input;

    /// A reader that gives one byte per read, to cross every buffer edge.
    struct Trickle<'a>(&'a [u8]);

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match self.0.split_first() {
                Some((&b, rest)) if !buf.is_empty() => {
                    buf[0] = b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    #[test]
    fn tee_replay_and_crc() {
        let data = b"0123456789abcdef";
        let mut input = Input::new(Trickle(data), None);
        assert_eq!(input.u8("x").unwrap(), b'0');
        input.tee_start(Vec::new());
        assert_eq!(input.bytes(4, "x").unwrap(), b"1234");
        let teed = input.tee_take();
        assert_eq!(teed, b"1234");
        input.replay(teed, 1);
        assert_eq!(input.offset(), 1);
        assert_eq!(input.bytes(6, "x").unwrap(), b"123456");
        assert_eq!(input.offset(), 7);
        input.skip(9, "x").unwrap();
        assert!(input.at_end().unwrap());
        assert_eq!(input.crc(), super::crc64::update(0, data));
        assert!(input.u8("the end").is_err());
    }

    #[test]
    fn a_length_past_the_end_of_a_file_is_refused_before_allocating() {
        let mut input = Input::new(&b"abc"[..], Some(3));
        let err = input.bytes(4 << 30, "a string").unwrap_err();
        assert!(err.to_string().contains("only 3 bytes are left"), "{err}");
    }
}
