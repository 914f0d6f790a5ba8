//! One value of an RDB file, walked by its encoding. The same walk serves three ends:
//! - [`Mode::Skip`] consumes it (a key the filters leave out, the check of a whole file);
//! - [`Mode::Raw`] consumes it while the input tees its bytes, which become a RESTORE payload; a value
//!   that grows past the limit stops the walk ([`Walked::Big`]) so that it can be walked again, decoded;
//! - [`Mode::Decode`] gives its elements, in pages of at most [`MAX_PAGE`] elements or about
//!   [`PAGE_BYTES`] bytes, to a [`Pages`] (the type-aware writer), so that a big value is never held whole;
//! - [`Mode::Check`] decodes it as Decode does and drops the pages: every blob's insides are read (the
//!   check of a file that has no CRC-64 to vouch for them).

use std::io::Read;

use super::encoding::{self, count, len, Str};
use super::input::Input;
use super::packed::{self, Elem};
use super::{Error, Fork, Part, StreamEntry};

/// Most elements in one page.
pub const MAX_PAGE: usize = 1000;
/// A page aims at about this many bytes; a string is given in chunks of this size.
pub const PAGE_BYTES: usize = 1 << 20;

/// Where a decoded value's pages go.
pub trait Pages {
    /// Takes the next page; an error stops the walk (the run stopping, the target gone).
    fn page(&mut self, part: Part) -> Result<(), Error>;
}

/// What a walk does with the value.
pub enum Mode<'p> {
    /// Consume it.
    Skip,
    /// Consume it (the caller tees it); stop once more than `limit` bytes were teed.
    Raw {
        /// The most bytes a raw value may have.
        limit: u64,
    },
    /// Give its elements, page by page.
    Decode(&'p mut dyn Pages),
    /// Decode it, and drop the pages.
    Check,
}

/// How a walk ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Walked {
    /// The value was walked to its end.
    Done,
    /// A raw walk met more than its limit: the value is big.
    Big,
}

/// The user-facing type of an RDB value type; `None` for a type this fork and version do not define.
pub fn kind_of(t: u8, fork: Fork) -> Option<&'static str> {
    Some(match t {
        0 => "string",
        1 | 10 | 14 | 18 => "list",
        2 | 11 | 20 => "set",
        3 | 5 | 12 | 17 => "zset",
        4 | 9 | 13 | 16 => "hash",
        15 | 19 | 21 => "stream",
        26 if fork == Fork::Redis => "stream",
        6 | 7 => "module",
        22..=25 if fork == Fork::Redis => "hash",
        _ => return None,
    })
}

/// Walks the value of RDB type `t`.
pub fn walk<R: Read>(input: &mut Input<R>, t: u8, fork: Fork, mode: Mode) -> Result<Walked, Error> {
    let mut w = Walk { input, mode, pending: None, bytes: 0, elems: 0 };
    match w.value(t, fork) {
        Ok(()) => {
            w.flush()?;
            Ok(Walked::Done)
        }
        Err(Stop::Big) => Ok(Walked::Big),
        Err(Stop::Error(e)) => Err(e),
    }
}

/// Why a walk stopped early.
pub(super) enum Stop {
    Big,
    Error(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Stop {
        Stop::Error(e)
    }
}

pub(super) type Step<T = ()> = Result<T, Stop>;

/// A walk under way: the input, what to do, the page being filled.
pub(super) struct Walk<'a, 'p, R> {
    pub(super) input: &'a mut Input<R>,
    pub(super) mode: Mode<'p>,
    pending: Option<Part>,
    bytes: usize,
    elems: usize,
}

impl<R: Read> Walk<'_, '_, R> {
    /// Elements are read (to give them, or to check them).
    pub(super) fn decoding(&self) -> bool {
        matches!(self.mode, Mode::Decode(_) | Mode::Check)
    }

    /// After consuming in raw mode: stop when the value is over its limit.
    pub(super) fn check(&self) -> Step {
        match self.mode {
            Mode::Raw { limit } if self.input.teed() as u64 > limit => Err(Stop::Big),
            _ => Ok(()),
        }
    }

    /// A string element: its bytes when decoding, else consumed (and `None`).
    pub(super) fn string(&mut self, what: &str) -> Step<Option<Vec<u8>>> {
        let head = encoding::string_head(self.input, what)?;
        if let Mode::Raw { limit } = self.mode {
            if (self.input.teed() as u64).saturating_add(head.size()) > limit {
                return Err(Stop::Big);
            }
        }
        if self.decoding() {
            return Ok(Some(encoding::string_body(self.input, head, what)?));
        }
        encoding::skip_body(self.input, head, what)?;
        Ok(None)
    }

    /// A compact blob (ziplist, listpack, intset, zipmap): its bytes when decoding.
    pub(super) fn blob(&mut self, what: &str) -> Step<Option<Vec<u8>>> {
        self.string(what)
    }

    /// A count of elements.
    pub(super) fn count(&mut self, what: &str) -> Step<u64> {
        Ok(count(self.input, what)?)
    }

    /// A blob's elements; `at` is where the blob started, for the error.
    fn elems(&self, blob: &[u8], at: u64, how: fn(&[u8]) -> Result<Vec<Elem>, String>) -> Step<Vec<Elem>> {
        how(blob).map_err(|what| Stop::Error(Error::Corrupt { offset: at, what }))
    }

    /// Adds an element to the page, starting a new page of the right kind if needed.
    fn push(&mut self, size: usize, add: impl FnOnce(&mut Part), new: impl FnOnce() -> Part) -> Step {
        if let Some(part) = &mut self.pending {
            add(part);
        } else {
            let mut part = new();
            add(&mut part);
            self.pending = Some(part);
        }
        self.bytes += size;
        self.elems += 1;
        if self.elems >= MAX_PAGE || self.bytes >= PAGE_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Gives the page being filled to the [`Pages`].
    pub(super) fn flush(&mut self) -> Result<(), Error> {
        self.bytes = 0;
        self.elems = 0;
        if let (Some(part), Mode::Decode(pages)) = (self.pending.take(), &mut self.mode) {
            pages.page(part)?;
        }
        Ok(())
    }

    fn item(&mut self, v: Vec<u8>) -> Step {
        self.push(
            v.len(),
            |p| {
                if let Part::Items(i) = p {
                    i.push(v)
                }
            },
            || Part::Items(Vec::new()),
        )
    }

    fn member(&mut self, v: Vec<u8>) -> Step {
        self.push(
            v.len(),
            |p| {
                if let Part::Members(i) = p {
                    i.push(v)
                }
            },
            || Part::Members(Vec::new()),
        )
    }

    fn scored(&mut self, member: Vec<u8>, score: f64) -> Step {
        let size = member.len() + 8;
        self.push(
            size,
            |p| {
                if let Part::Scored(i) = p {
                    i.push((score, member))
                }
            },
            || Part::Scored(Vec::new()),
        )
    }

    fn field(&mut self, f: Vec<u8>, v: Vec<u8>, deadline: Option<i64>) -> Step {
        let size = f.len() + v.len();
        self.push(
            size,
            |p| {
                if let Part::Fields(i) = p {
                    i.push((f, v, deadline))
                }
            },
            || Part::Fields(Vec::new()),
        )
    }

    pub(super) fn entry(&mut self, e: StreamEntry) -> Step {
        let size = e.fields.iter().map(|(f, v)| f.len() + v.len()).sum::<usize>() + 16;
        self.push(
            size,
            |p| {
                if let Part::Entries(i) = p {
                    i.push(e)
                }
            },
            || Part::Entries(Vec::new()),
        )
    }

    /// The value of type `t`.
    fn value(&mut self, t: u8, fork: Fork) -> Step {
        match t {
            0 => self.whole_string(),
            1 => {
                for _ in 0..self.count("list length")? {
                    if let Some(v) = self.string("list element")? {
                        self.item(v)?;
                    }
                    self.check()?;
                }
                Ok(())
            }
            2 => {
                for _ in 0..self.count("set size")? {
                    if let Some(v) = self.string("set member")? {
                        self.member(v)?;
                    }
                    self.check()?;
                }
                Ok(())
            }
            3 | 5 => {
                for _ in 0..self.count("sorted set size")? {
                    let member = self.string("sorted set member")?;
                    let score = if t == 3 {
                        encoding::text_double(self.input, "score")?
                    } else {
                        encoding::binary_double(self.input, "score")?
                    };
                    if let Some(m) = member {
                        self.scored(m, score)?;
                    }
                    self.check()?;
                }
                Ok(())
            }
            4 => {
                for _ in 0..self.count("hash size")? {
                    let f = self.string("hash field")?;
                    let v = self.string("hash value")?;
                    if let (Some(f), Some(v)) = (f, v) {
                        self.field(f, v, None)?;
                    }
                    self.check()?;
                }
                Ok(())
            }
            6 => Err(Error::Unsupported {
                offset: self.input.offset(),
                what: "a module value of the Redis 4.0 release candidates (RDB type 6), which only the \
                       module itself can read"
                    .into(),
            }
            .into()),
            7 => self.module(),
            9 => {
                let at = self.input.offset();
                if let Some(blob) = self.blob("zipmap")? {
                    let pairs = packed::zipmap(&blob).map_err(|what| Error::Corrupt { offset: at, what })?;
                    for (f, v) in pairs {
                        self.field(f, v, None)?;
                    }
                }
                self.check()
            }
            10 | 12 | 13 | 16 | 17 | 20 => {
                let at = self.input.offset();
                let how = if t <= 13 { packed::ziplist } else { packed::listpack };
                if let Some(blob) = self.blob(if t <= 13 { "ziplist" } else { "listpack" })? {
                    let elems = self.elems(&blob, at, how)?;
                    self.compact(t, elems, at)?;
                }
                self.check()
            }
            11 => {
                let at = self.input.offset();
                if let Some(blob) = self.blob("intset")? {
                    let members =
                        packed::intset(&blob).map_err(|what| Error::Corrupt { offset: at, what })?;
                    for m in members {
                        self.member(m)?;
                    }
                }
                self.check()
            }
            14 | 18 => {
                for _ in 0..self.count("quicklist nodes")? {
                    let container = if t == 18 { len(self.input, "quicklist container")? } else { 2 };
                    let at = self.input.offset();
                    let blob = self.blob("quicklist node")?;
                    match (container, blob) {
                        // A plain node is one big element.
                        (1, Some(v)) => self.item(v)?,
                        (2, Some(blob)) => {
                            let how = if t == 14 { packed::ziplist } else { packed::listpack };
                            for e in self.elems(&blob, at, how)? {
                                self.item(e.into_bytes())?;
                            }
                        }
                        (1 | 2, None) => {}
                        (other, _) => {
                            return Err(Error::Corrupt {
                                offset: at,
                                what: format!("unknown quicklist container {other}"),
                            }
                            .into())
                        }
                    }
                    self.check()?;
                }
                Ok(())
            }
            15 | 19 | 21 => self.stream(t),
            26 if fork == Fork::Redis => self.stream(t),
            22 | 24 if fork == Fork::Redis => {
                let min = if t == 24 {
                    Some(encoding::millis(self.input, "hash minimum field deadline")?)
                } else {
                    None
                };
                for _ in 0..self.count("hash size")? {
                    let ttl = len(self.input, "hash field deadline")?;
                    let f = self.string("hash field")?;
                    let v = self.string("hash value")?;
                    let deadline = match (ttl, min) {
                        (0, _) => None,
                        (ttl, Some(min)) => Some(min.saturating_add(ttl as i64).saturating_sub(1)),
                        (ttl, None) => Some(ttl as i64),
                    };
                    if let (Some(f), Some(v)) = (f, v) {
                        self.field(f, v, deadline)?;
                    }
                    self.check()?;
                }
                Ok(())
            }
            23 | 25 if fork == Fork::Redis => {
                if t == 25 {
                    encoding::millis(self.input, "hash minimum field deadline")?;
                }
                let at = self.input.offset();
                if let Some(blob) = self.blob("listpack")? {
                    let elems = self.elems(&blob, at, packed::listpack)?;
                    if !elems.len().is_multiple_of(3) {
                        return Err(Error::Corrupt {
                            offset: at,
                            what: "a hash listpack with field deadlines whose length is not a multiple of 3"
                                .into(),
                        }
                        .into());
                    }
                    let mut it = elems.into_iter();
                    while let (Some(f), Some(v), Some(ttl)) = (it.next(), it.next(), it.next()) {
                        let deadline = ttl.int().filter(|&t| t > 0);
                        self.field(f.into_bytes(), v.into_bytes(), deadline)?;
                    }
                }
                self.check()
            }
            other => Err(Error::Unsupported {
                offset: self.input.offset(),
                what: format!(
                    "value type {other}, which this version of redis-ferry does not know for {fork}"
                ),
            }
            .into()),
        }
    }

    /// A string value: in chunks when decoding one longer than a page.
    fn whole_string(&mut self) -> Step {
        let head = encoding::string_head(self.input, "string value")?;
        match self.mode {
            Mode::Raw { limit } if (self.input.teed() as u64).saturating_add(head.size()) > limit => {
                return Err(Stop::Big)
            }
            Mode::Raw { .. } | Mode::Skip => {
                encoding::skip_body(self.input, head, "string value")?;
                return Ok(());
            }
            Mode::Decode(_) | Mode::Check => {}
        }
        let Str::Raw(mut left) = head else {
            // An LZF string is decompressed whole (its size), then given in chunks like the others.
            let v = encoding::string_body(self.input, head, "string value")?;
            if v.len() <= PAGE_BYTES {
                return self.chunk(v);
            }
            return v.chunks(PAGE_BYTES).try_for_each(|c| self.chunk(c.to_vec()));
        };
        loop {
            let n = left.min(PAGE_BYTES as u64);
            let chunk = self.input.bytes(n, "string value")?;
            left -= n;
            self.chunk(chunk)?;
            if left == 0 {
                return Ok(());
            }
        }
    }

    fn chunk(&mut self, v: Vec<u8>) -> Step {
        if let Mode::Decode(pages) = &mut self.mode {
            pages.page(Part::Chunk(v))?;
        }
        Ok(())
    }

    /// The elements of a ziplist or listpack of type `t`, as the type's elements.
    fn compact(&mut self, t: u8, elems: Vec<Elem>, at: u64) -> Step {
        match t {
            10 => elems.into_iter().try_for_each(|e| self.item(e.into_bytes())),
            20 => elems.into_iter().try_for_each(|e| self.member(e.into_bytes())),
            12 | 13 | 16 | 17 => {
                if !elems.len().is_multiple_of(2) {
                    return Err(Error::Corrupt {
                        offset: at,
                        what: "a ziplist or listpack of pairs with an odd number of entries".into(),
                    }
                    .into());
                }
                let mut it = elems.into_iter();
                while let (Some(a), Some(b)) = (it.next(), it.next()) {
                    if t == 12 || t == 17 {
                        let score = match &b {
                            Elem::Int(i) => *i as f64,
                            Elem::Bytes(s) => {
                                std::str::from_utf8(s).ok().and_then(parse_score).ok_or_else(|| {
                                    Error::Corrupt {
                                        offset: at,
                                        what: "a sorted set score that is not a number".into(),
                                    }
                                })?
                            }
                        };
                        self.scored(a.into_bytes(), score)?;
                    } else {
                        self.field(a.into_bytes(), b.into_bytes(), None)?;
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// A module value (type 7): its module's id, then typed fields up to an end marker. It is walked (to
    /// cut its bytes) but cannot be decoded.
    /// A module value is not held to the raw limit: it cannot be written in pages, only RESTOREd whole.
    fn module(&mut self) -> Step {
        let at = self.input.offset();
        let id = len(self.input, "module id")?;
        module_fields(self.input)?;
        if matches!(self.mode, Mode::Decode(_)) {
            // Consumed, so the file goes on with the next key.
            return Err(Error::Opaque {
                offset: at,
                name: module_type(id),
                what: format!(
                    "a value of the module type {}, which only the module can make: copy it with RESTORE to \
                     a server that has the module (--mode dump)",
                    module_name(id)
                ),
            }
            .into());
        }
        Ok(())
    }
}

/// A score written as text in a ziplist or listpack ("inf", "-inf", digits).
pub fn parse_score(s: &str) -> Option<f64> {
    match s {
        "inf" | "+inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        s => s.parse().ok(),
    }
}

/// The typed fields of a module value (or module aux data) up to their end marker.
pub fn module_fields<R: Read>(input: &mut Input<R>) -> Result<(), Error> {
    loop {
        match len(input, "module field")? {
            0 => return Ok(()),
            1 | 2 => {
                len(input, "module integer")?;
            }
            3 => input.skip(4, "module float")?,
            4 => input.skip(8, "module double")?,
            5 => encoding::skip_string(input, "module string")?,
            other => return Err(input.corrupt(format!("unknown module field opcode {other}"))),
        }
    }
}

/// The nine-character type name of a module type id (what TYPE answers for its keys).
pub fn module_type(id: u64) -> String {
    const CHARSET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut name = [0u8; 9];
    let mut rest = id >> 10;
    for c in name.iter_mut().rev() {
        *c = CHARSET[(rest & 63) as usize];
        rest >>= 6;
    }
    String::from_utf8_lossy(&name).into_owned()
}

/// The type name and encoding version of a module type id.
pub fn module_name(id: u64) -> String {
    format!("{} (version {})", module_type(id), id & 1023)
}
