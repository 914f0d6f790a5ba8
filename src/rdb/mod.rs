//! The RDB file format, read as a stream: every version from 1 (Redis 1.x) to 13 (Redis 8.6), and
//! Valkey's 80 (Valkey 9, magic `VALKEY`). A [`Reader`] walks the file's opcodes and gives its keys one
//! at a time as a [`Head`] (database, key, type, deadline, idle time, frequency); the caller then says
//! what to do with the value: skip it, cut its bytes out as they are (the fast path: value bytes, the
//! file's RDB version and a CRC-64 are a RESTORE payload), or decode it into pages for the type-aware
//! writer. Nothing here talks to a server.
//!
//! The reader reads through a fixed buffer ([`input`]); what it holds at once is one key's raw value
//! (at most the caller's limit), or one page of a decoded value ([`value::MAX_PAGE`] elements, about
//! [`value::PAGE_BYTES`]), plus, for a stream, its consumer groups. Every length is checked before it
//! is allocated: against the rest of the file when its size is known, and by growing as bytes arrive
//! when it is not (a pipe). The input is untrusted: no byte sequence makes it panic.
//!
//! The forks part ways from RDB 12 on: value types 22 to 25 are Redis's hashes with field deadlines;
//! Valkey 9 gives some of those numbers (and opcodes 243 and 244) other meanings. A file's magic says
//! whose it is; what a fork defines that this reader does not know is refused by name.

pub mod crc64;
mod encoding;
pub mod input;
mod lzf;
pub mod packed;
pub mod payload;
mod stream;
pub mod value;

use std::fmt;
use std::io::Read;

use encoding::len;
use input::Input;
pub use value::{Mode, Pages, Walked};

/// Which server family wrote a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fork {
    /// Redis (magic `REDIS`); also Valkey up to 8.1, which writes Redis's RDB 11.
    Redis,
    /// Valkey 9 and later (magic `VALKEY`).
    Valkey,
}

impl fmt::Display for Fork {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Fork::Redis => "Redis RDB files",
            Fork::Valkey => "Valkey RDB files",
        })
    }
}

/// The newest Redis RDB version this reader knows.
pub const REDIS_MAX: u32 = 13;
/// Valkey's RDB version (Valkey 9).
pub const VALKEY_VERSION: u32 = 80;

/// What was wrong with a file, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The bytes are not a valid RDB file.
    Corrupt {
        /// Byte offset in the file.
        offset: u64,
        /// What was wrong.
        what: String,
    },
    /// The file ended before its end marker (or a length points past its end).
    Truncated {
        /// Byte offset in the file.
        offset: u64,
        /// What was being read.
        what: String,
    },
    /// Something a server writes that this reader does not read, named.
    Unsupported {
        /// Byte offset in the file.
        offset: u64,
        /// What it is.
        what: String,
    },
    /// A value that was read past but has no decoded form (a module's): the key cannot be written
    /// type-aware, and the file goes on with the next key.
    Opaque {
        /// Byte offset in the file.
        offset: u64,
        /// What it is.
        what: String,
        /// The module's type name, as TYPE answers for such a key.
        name: String,
    },
    /// Reading failed.
    Io {
        /// Byte offset in the file.
        offset: u64,
        /// The system's message.
        what: String,
    },
    /// The one reading the file asked it to stop (a page could not be written).
    Stopped,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Error::Corrupt { offset, what } => write!(f, "corrupt at byte {offset}: {what}"),
            Error::Truncated { offset, what } => {
                write!(f, "truncated at byte {offset}: the file ends in {what}")
            }
            Error::Unsupported { offset, what } => write!(f, "cannot read byte {offset}: {what}"),
            Error::Opaque { what, .. } => f.write_str(what),
            Error::Io { offset, what } => write!(f, "read error at byte {offset}: {what}"),
            Error::Stopped => f.write_str("stopped"),
        }
    }
}

/// A page of a decoded value.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// The next bytes of a string.
    Chunk(Vec<u8>),
    /// List elements, in order.
    Items(Vec<Vec<u8>>),
    /// Set members.
    Members(Vec<Vec<u8>>),
    /// Sorted set members with their scores.
    Scored(Vec<(f64, Vec<u8>)>),
    /// Hash fields and values, with each field's deadline (Unix ms) where it has one.
    Fields(Vec<(Vec<u8>, Vec<u8>, Option<i64>)>),
    /// Stream entries, in ID order.
    Entries(Vec<StreamEntry>),
    /// The end of a stream: its metadata and consumer groups.
    StreamEnd(StreamMeta),
}

impl Part {
    /// About how many bytes the page holds (what bounds a batch or a transaction of them).
    pub fn bytes(&self) -> usize {
        match self {
            Part::Chunk(c) => c.len(),
            Part::Items(v) | Part::Members(v) => v.iter().map(|e| e.len() + 8).sum(),
            Part::Scored(v) => v.iter().map(|(_, m)| m.len() + 16).sum(),
            Part::Fields(v) => v.iter().map(|(f, x, _)| f.len() + x.len() + 16).sum(),
            Part::Entries(v) => {
                v.iter().map(|e| 16 + e.fields.iter().map(|(f, x)| f.len() + x.len()).sum::<usize>()).sum()
            }
            Part::StreamEnd(m) => {
                m.groups.iter().map(|g| 64 + g.pending.len() * 40 + g.consumers.len() * 64).sum()
            }
        }
    }

    /// The elements of the page: members, fields, entries, a stream's pending entries and consumers (a
    /// string's chunk has none).
    pub fn elements(&self) -> usize {
        match self {
            Part::Items(v) | Part::Members(v) => v.len(),
            Part::Fields(v) => v.len(),
            Part::Scored(v) => v.len(),
            Part::Entries(v) => v.len(),
            Part::StreamEnd(m) => m.groups.iter().map(|g| g.pending.len() + g.consumers.len()).sum(),
            Part::Chunk(_) => 0,
        }
    }
}

/// A stream entry.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEntry {
    /// Its ID (milliseconds, sequence).
    pub id: (u64, u64),
    /// Its fields and values.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A stream's metadata and groups.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamMeta {
    /// Live entries.
    pub length: u64,
    /// The last ID ever given.
    pub last_id: (u64, u64),
    /// The first live entry's ID (RDB 10 on; else zero).
    pub first_id: (u64, u64),
    /// The largest deleted ID (RDB 10 on; else zero).
    pub max_deleted: (u64, u64),
    /// Entries ever added (RDB 10 on; else the length).
    pub added: u64,
    /// Consumer groups.
    pub groups: Vec<StreamGroup>,
}

/// A consumer group.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamGroup {
    /// Its name.
    pub name: Vec<u8>,
    /// Its last delivered ID.
    pub last_id: (u64, u64),
    /// Its entries-read counter (RDB 10 on; `None` also where the server did not know it).
    pub entries_read: Option<u64>,
    /// Its pending entries.
    pub pending: Vec<StreamPending>,
    /// Its consumers.
    pub consumers: Vec<StreamConsumer>,
}

/// A pending entry of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamPending {
    /// The entry's ID.
    pub id: (u64, u64),
    /// When it was last delivered (Unix ms).
    pub delivered: i64,
    /// How many times it was delivered.
    pub deliveries: u64,
}

/// A consumer of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamConsumer {
    /// Its name.
    pub name: Vec<u8>,
    /// When it was last seen (Unix ms).
    pub seen: i64,
    /// When it last read successfully (RDB 11 on).
    pub active: Option<i64>,
    /// The IDs of its pending entries.
    pub pending: Vec<(u64, u64)>,
}

/// A key about to be read: everything before its value.
#[derive(Debug, Clone)]
pub struct Head {
    /// Its database.
    pub db: u64,
    /// The key.
    pub key: Vec<u8>,
    /// Its RDB value type.
    pub rdb_type: u8,
    /// Its user-facing type (`string`, `list`, ..., `module`).
    pub kind: &'static str,
    /// Its deadline, Unix ms.
    pub expire_at_ms: Option<i64>,
    /// LRU idle seconds, where the file has them.
    pub idle: Option<u64>,
    /// LFU frequency, where the file has it.
    pub freq: Option<u8>,
}

/// What the file said about itself on the way.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The AUX fields, in order (`redis-ver`, `ctime`, `used-mem`, ...).
    pub aux: Vec<(String, String)>,
    /// RESIZEDB hints: (database, keys, keys with a deadline).
    pub sizes: Vec<(u64, u64, u64)>,
    /// Function libraries the file holds (FUNCTION2), which are not keys.
    pub functions: u64,
    /// Module aux records.
    pub module_aux: u64,
    /// The trailer's checksum was checked (it is absent before RDB 5, and zero when the writer
    /// had `rdbchecksum no`).
    pub checksum_checked: bool,
    /// Where each database's records start: (database, offset of its SELECTDB).
    pub dbs: Vec<(u64, u64)>,
}

/// An RDB file being read.
pub struct Reader<R> {
    input: Input<R>,
    /// The file's RDB version.
    pub version: u32,
    /// Its writer's family.
    pub fork: Fork,
    /// The database of the keys being read.
    db: u64,
    /// The pending deadline, idle time and frequency for the next key.
    expire: Option<i64>,
    idle: Option<u64>,
    freq: Option<u8>,
    /// What the file said about itself.
    pub facts: Facts,
    /// The end marker and trailer were read and checked.
    done: bool,
    /// Read from the middle of the file ([`Reader::resume`]): the trailer's CRC covers bytes this
    /// reader did not see, so it is not compared.
    resumed: bool,
}

impl<R: Read> Reader<R> {
    /// Reads the header of `inner` (whose length is `size`, when known).
    pub fn open(inner: R, size: Option<u64>) -> Result<Reader<R>, Error> {
        let mut input = Input::new(inner, size);
        let magic: [u8; 9] = input.array("the header").map_err(|e| match e {
            Error::Truncated { .. } => {
                Error::Corrupt { offset: 0, what: "not an RDB file: shorter than its 9-byte header".into() }
            }
            e => e,
        })?;
        let (fork, digits) = if &magic[..5] == b"REDIS" {
            (Fork::Redis, &magic[5..])
        } else if &magic[..6] == b"VALKEY" {
            (Fork::Valkey, &magic[6..])
        } else {
            return Err(Error::Corrupt {
                offset: 0,
                what: "not an RDB file: it does not start with REDIS or VALKEY".into(),
            });
        };
        let version = std::str::from_utf8(digits)
            .ok()
            .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<u32>().ok())
            .ok_or_else(|| Error::Corrupt {
                offset: 0,
                what: format!(
                    "not an RDB file: version {:?} is not a number",
                    String::from_utf8_lossy(digits)
                ),
            })?;
        match (fork, version) {
            (Fork::Redis, 1..=REDIS_MAX) | (Fork::Valkey, VALKEY_VERSION) => {}
            (Fork::Redis, v) => {
                return Err(Error::Unsupported {
                    offset: 5,
                    what: format!(
                        "RDB version {v}; this redis-ferry reads Redis's versions 1 to {REDIS_MAX}"
                    ),
                })
            }
            (Fork::Valkey, v) => {
                return Err(Error::Unsupported {
                    offset: 6,
                    what: format!(
                        "Valkey RDB version {v}; this redis-ferry reads Valkey's version {VALKEY_VERSION}"
                    ),
                })
            }
        }
        Ok(Reader::at(input, version, fork, false))
    }

    /// A reader of the records of `input`, of a file of RDB `version` by `fork`.
    fn at(input: Input<R>, version: u32, fork: Fork, resumed: bool) -> Reader<R> {
        Reader {
            input,
            version,
            fork,
            db: 0,
            expire: None,
            idle: None,
            freq: None,
            facts: Facts::default(),
            done: false,
            resumed,
        }
    }

    /// A reader of the records of a file already opened (and checked whole) once, from `inner`, which
    /// is positioned at byte `at` of it: one database's records, for a pass of its own.
    pub fn resume(inner: R, size: Option<u64>, version: u32, fork: Fork, at: u64) -> Reader<R> {
        Reader::at(Input::new(inner, size).starting_at(at), version, fork, true)
    }

    /// Reads up to the next key; `None` at the end of the file, once its trailer was checked.
    pub fn head(&mut self) -> Result<Option<Head>, Error> {
        if self.done {
            return Ok(None);
        }
        loop {
            let at = self.input.offset();
            let op = self.input.u8("the next record")?;
            let input = &mut self.input;
            match op {
                0xff => {
                    self.trailer()?;
                    return Ok(None);
                }
                0xfe => {
                    self.db = len(input, "SELECTDB")?;
                    self.facts.dbs.push((self.db, at));
                }
                0xfd => {
                    let secs = u32::from_le_bytes(input.array("EXPIRETIME")?);
                    self.expire = Some(i64::from(secs) * 1000);
                }
                0xfc => self.expire = Some(encoding::millis(input, "EXPIRETIME_MS")?),
                0xfb => {
                    let keys = len(input, "RESIZEDB")?;
                    let expires = len(input, "RESIZEDB")?;
                    self.facts.sizes.push((self.db, keys, expires));
                }
                0xfa => {
                    let name = encoding::string(input, "an AUX field")?;
                    let value = encoding::string(input, "an AUX field")?;
                    self.facts.aux.push((lossy(&name), lossy(&value)));
                }
                0xf9 => self.freq = Some(input.u8("FREQ")?),
                0xf8 => self.idle = Some(len(input, "IDLE")?),
                0xf7 => {
                    let _module = len(input, "MODULE_AUX")?;
                    let when_op = len(input, "MODULE_AUX")?;
                    if when_op != 2 {
                        return Err(input.corrupt("MODULE_AUX without its 'when' field"));
                    }
                    let _when = len(input, "MODULE_AUX")?;
                    value::module_fields(input)?;
                    self.facts.module_aux += 1;
                }
                0xf6 => {
                    return Err(Error::Unsupported {
                        offset: at,
                        what: "a function library of the Redis 7.0 release candidates (opcode 246)".into(),
                    })
                }
                0xf5 => {
                    encoding::skip_string(input, "a function library")?;
                    self.facts.functions += 1;
                }
                0xf4 => {
                    for _ in 0..3 {
                        len(input, "SLOT_INFO")?;
                    }
                }
                0xf3 => {
                    let what = match self.fork {
                        Fork::Redis => {
                            "key metadata of modules (opcode 243, Redis 8.6), which only the modules can read"
                        }
                        Fork::Valkey => "a slot import record (opcode 243, Valkey 9)",
                    };
                    return Err(Error::Unsupported { offset: at, what: what.into() });
                }
                t => {
                    let Some(kind) = value::kind_of(t, self.fork) else {
                        return Err(Error::Unsupported {
                            offset: at,
                            what: format!(
                                "value type {t}, which this redis-ferry does not know in {} of version {}",
                                self.fork, self.version
                            ),
                        });
                    };
                    let key = encoding::string(input, "a key")?;
                    return Ok(Some(Head {
                        db: self.db,
                        key,
                        rdb_type: t,
                        kind,
                        expire_at_ms: self.expire.take(),
                        idle: self.idle.take(),
                        freq: self.freq.take(),
                    }));
                }
            }
        }
    }

    /// The end marker was read: checks the CRC-64 trailer (RDB 5 on) and that nothing follows.
    fn trailer(&mut self) -> Result<(), Error> {
        if self.version >= 5 {
            let computed = self.input.crc();
            let at = self.input.offset();
            let stored = u64::from_le_bytes(self.input.array("the CRC-64 trailer")?);
            if stored != 0 && !self.resumed {
                if stored != computed {
                    return Err(Error::Corrupt {
                        offset: at,
                        what: format!(
                            "the CRC-64 trailer is {stored:016x}, but the file's bytes give {computed:016x}"
                        ),
                    });
                }
                self.facts.checksum_checked = true;
            }
        }
        if !self.input.at_end()? {
            return Err(self.input.corrupt("bytes after the end of the RDB file"));
        }
        self.done = true;
        Ok(())
    }

    /// Consumes the value of `head`.
    pub fn skip(&mut self, head: &Head) -> Result<(), Error> {
        value::walk(&mut self.input, head.rdb_type, self.fork, Mode::Skip).map(|_| ())
    }

    /// Consumes the value of `head`, reading the insides of every blob (ziplist, listpack, intset,
    /// zipmap, LZF) as a decode would.
    pub fn check(&mut self, head: &Head) -> Result<(), Error> {
        value::walk(&mut self.input, head.rdb_type, self.fork, Mode::Check).map(|_| ())
    }

    /// Cuts the value of `head` out of the file as a RESTORE payload (type byte, value bytes, RDB
    /// version, CRC-64), if it is at most `limit` bytes; `None` when it is bigger, and then the
    /// value must be read with [`Reader::decode`] next (its bytes so far are given again).
    pub fn payload(&mut self, head: &Head, limit: u64) -> Result<Option<Vec<u8>>, Error> {
        let start = self.input.offset();
        self.input.tee_start(vec![head.rdb_type]);
        let walked = value::walk(
            &mut self.input,
            head.rdb_type,
            self.fork,
            Mode::Raw { limit: limit.saturating_add(1) },
        );
        let mut bytes = self.input.tee_take();
        match walked? {
            Walked::Done => {
                // The DUMP trailer: the RDB version (two bytes, little-endian), then the CRC-64 of
                // everything before it.
                bytes.extend_from_slice(&(self.version as u16).to_le_bytes());
                let crc = crc64::update(0, &bytes);
                bytes.extend_from_slice(&crc.to_le_bytes());
                Ok(Some(bytes))
            }
            Walked::Big => {
                bytes.remove(0);
                self.input.replay(bytes, start);
                Ok(None)
            }
        }
    }

    /// Decodes the value of `head` into `pages`.
    pub fn decode(&mut self, head: &Head, pages: &mut dyn Pages) -> Result<(), Error> {
        value::walk(&mut self.input, head.rdb_type, self.fork, Mode::Decode(pages)).map(|_| ())
    }
}

/// A byte string as text, for the log.
fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects every page.
    struct Collect(Vec<Part>);

    impl Pages for Collect {
        fn page(&mut self, part: Part) -> Result<(), Error> {
            self.0.push(part);
            Ok(())
        }
    }

    fn fixtures() -> Vec<std::path::PathBuf> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rdb");
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "rdb"))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn every_fixture_reads_to_its_end_in_every_mode() {
        for path in fixtures() {
            let bytes = std::fs::read(&path).unwrap();
            for mode in 0..3 {
                let mut r = Reader::open(&bytes[..], Some(bytes.len() as u64)).unwrap();
                let mut n = 0;
                loop {
                    let head = match r.head() {
                        Ok(Some(h)) => h,
                        Ok(None) => break,
                        Err(e) => panic!("{}: {e}", path.display()),
                    };
                    n += 1;
                    let result = match mode {
                        0 => r.skip(&head),
                        1 => r.payload(&head, u64::MAX).map(|_| ()),
                        _ => {
                            let mut c = Collect(Vec::new());
                            let res = r.decode(&head, &mut c);
                            if mode == 2 && n < 4 {
                                eprintln!(
                                    "{} v{} {:?} {} {:?}",
                                    path.display(),
                                    r.version,
                                    String::from_utf8_lossy(&head.key),
                                    head.rdb_type,
                                    c.0.first()
                                        .map(|p| format!("{p:?}").chars().take(100).collect::<String>())
                                );
                            }
                            match res {
                                Err(Error::Opaque { .. }) if head.kind == "module" => Ok(()),
                                other => other,
                            }
                        }
                    };
                    if let Err(e) = result {
                        panic!(
                            "{} key {:?} type {}: {e}",
                            path.display(),
                            String::from_utf8_lossy(&head.key),
                            head.rdb_type
                        );
                    }
                }
            }
        }
    }

    /// Bytes as the fixtures' JSON writes them: UTF-8 where they are, else one character per byte.
    fn latin1(b: &[u8]) -> String {
        match std::str::from_utf8(b) {
            Ok(s) => s.to_string(),
            Err(_) => b.iter().map(|&c| char::from(c)).collect(),
        }
    }

    /// A whole key decoded, as the JSON of the fixtures writes it.
    fn as_json(kind: &str, parts: Vec<Part>) -> serde_json::Value {
        use serde_json::Value as J;
        let text = |b: Vec<u8>| J::String(latin1(&b));
        let mut string = Vec::new();
        let mut list = Vec::new();
        let mut map = serde_json::Map::new();
        for part in parts {
            match part {
                Part::Chunk(c) => string.extend(c),
                Part::Items(i) | Part::Members(i) => list.extend(i.into_iter().map(text)),
                Part::Scored(s) => {
                    for (score, m) in s {
                        map.insert(latin1(&m), J::from(score));
                    }
                }
                Part::Fields(f) => {
                    for (f, v, _) in f {
                        map.insert(latin1(&f), text(v));
                    }
                }
                Part::Entries(_) | Part::StreamEnd(_) => {}
            }
        }
        match kind {
            "string" => text(string),
            "list" | "set" => J::Array(list),
            _ => J::Object(map),
        }
    }

    #[test]
    fn decoded_values_match_the_fixtures_json() {
        use serde_json::Value as J;
        let mut checked = 0;
        for path in fixtures() {
            let json_path =
                path.parent().unwrap().join("json").join(path.file_stem().unwrap()).with_extension("json");
            let expected: J = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
            let mut want = serde_json::Map::new();
            for db in expected.as_array().unwrap() {
                for (k, v) in db.as_object().unwrap() {
                    want.insert(k.clone(), v.clone());
                }
            }
            let bytes = std::fs::read(&path).unwrap();
            let mut r = Reader::open(&bytes[..], None).unwrap();
            while let Some(head) = r.head().unwrap() {
                let mut c = Collect(Vec::new());
                if r.decode(&head, &mut c).is_err() {
                    continue;
                }
                let key = latin1(&head.key);
                let Some(expected) = want.get(&key) else { continue };
                let got = as_json(head.kind, c.0);
                let same = match (&got, expected) {
                    // Scores: the JSON writes them as text.
                    (J::Object(g), J::Object(e)) if head.kind == "zset" => {
                        g.len() == e.len()
                            && e.iter().all(|(m, s)| {
                                let want: f64 = s.as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
                                g.get(m)
                                    .and_then(J::as_f64)
                                    .is_some_and(|got| (got - want).abs() <= want.abs() * 1e-12)
                            })
                    }
                    (J::Array(g), J::Array(e)) if head.kind == "set" => {
                        let mut g = g.clone();
                        let mut e = e.clone();
                        g.sort_by_key(|v| v.to_string());
                        e.sort_by_key(|v| v.to_string());
                        g == e
                    }
                    (g, e) => g == e,
                };
                assert!(same, "{}: key {key} ({}): got {got}, want {expected}", path.display(), head.kind);
                checked += 1;
            }
        }
        assert!(checked > 60, "only {checked} keys compared");
    }

    /// Reads `bytes` to its end in every mode; returns whether it read clean. Must never panic.
    fn read_all(bytes: &[u8], size: Option<u64>) -> bool {
        let mut clean = true;
        for mode in 0..3 {
            let Ok(mut r) = Reader::open(bytes, size) else { return false };
            let mut keys = 0;
            loop {
                match r.head() {
                    Ok(Some(head)) => {
                        keys += 1;
                        assert!(keys <= bytes.len(), "more keys than bytes");
                        let result = match mode {
                            0 if keys % 2 == 0 => r.skip(&head),
                            0 => r.check(&head),
                            1 => r.payload(&head, 64).and_then(|p| match p {
                                Some(_) => Ok(()),
                                None => r.decode(&head, &mut Collect(Vec::new())),
                            }),
                            _ => r.decode(&head, &mut Collect(Vec::new())),
                        };
                        match result {
                            Ok(()) | Err(Error::Opaque { .. }) => {}
                            Err(_) => {
                                clean = false;
                                break;
                            }
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {
                        clean = false;
                        break;
                    }
                }
            }
        }
        clean
    }

    #[test]
    fn no_truncation_or_byte_change_makes_the_reader_panic_and_the_trailer_catches_them() {
        for path in fixtures() {
            let bytes = std::fs::read(&path).unwrap();
            if bytes.len() > 4096 {
                continue;
            }
            let version = Reader::open(&bytes[..], None).unwrap().version;
            let size = Some(bytes.len() as u64);
            for cut in 0..bytes.len() {
                assert!(
                    !read_all(&bytes[..cut], Some(cut as u64)),
                    "{}: cut at {cut} read clean",
                    path.display()
                );
                assert!(
                    !read_all(&bytes[..cut], None),
                    "{}: cut at {cut} read clean from a stream",
                    path.display()
                );
            }
            // Every value of every byte for the small files, three flips of every byte for the others.
            let values: Vec<u8> = (0..=255).collect();
            for at in 0..bytes.len() {
                let changes: Vec<u8> = if bytes.len() <= 256 {
                    values.iter().copied().filter(|&v| v != bytes[at]).collect()
                } else {
                    [0x01, 0x80, 0xff].iter().map(|m| bytes[at] ^ m).collect()
                };
                for v in changes {
                    let mut changed = bytes.clone();
                    changed[at] = v;
                    let clean = read_all(&changed, size);
                    // From RDB 5 on, the CRC-64 trailer catches any change (of a file that carries one).
                    if version >= 5 && bytes[bytes.len() - 8..] != [0; 8] {
                        assert!(!clean, "{}: byte {at} set to {v} read clean", path.display());
                    }
                }
            }
        }
    }

    #[test]
    fn a_huge_length_in_a_small_file_is_an_error_not_an_allocation() {
        // A string key whose length field says 4 GiB (0x80 + 32 bits), in a file of a few bytes.
        let mut file = b"REDIS0009".to_vec();
        file.extend_from_slice(&[0x00, 0x80, 0xff, 0xff, 0xff, 0xff, b'k']);
        let mut r = Reader::open(&file[..], Some(file.len() as u64)).unwrap();
        let err = r.head().unwrap_err();
        assert!(matches!(err, Error::Truncated { .. }), "{err}");
        // From a stream (size unknown) the string grows only as bytes arrive.
        let mut r = Reader::open(&file[..], None).unwrap();
        assert!(matches!(r.head().unwrap_err(), Error::Truncated { .. }));
        // A count of 2^62 elements of a set.
        let mut file = b"REDIS0009".to_vec();
        file.extend_from_slice(&[0x02, 0x01, b'k', 0x81, 0x40, 0, 0, 0, 0, 0, 0, 0]);
        let mut r = Reader::open(&file[..], None).unwrap();
        let head = r.head().unwrap().unwrap();
        assert!(r.decode(&head, &mut Collect(Vec::new())).is_err());
    }

    #[test]
    fn crafted_deadlines_and_counts_do_not_overflow() {
        // A Redis 7.4 hash with field deadlines (type 24) whose minimum deadline is i64::MAX and a field's
        // relative deadline is 2; then a stream listpack whose live and deleted counts add past i64::MAX.
        let mut file = b"REDIS0012".to_vec();
        file.extend_from_slice(&[24, 1, b'h']);
        file.extend_from_slice(&i64::MAX.to_le_bytes());
        file.extend_from_slice(&[1, 2, 1, b'f', 1, b'v', 0xff]);
        file.extend_from_slice(&[0; 8]);
        let mut r = Reader::open(&file[..], None).unwrap();
        let head = r.head().unwrap().unwrap();
        let mut pages = Collect(Vec::new());
        r.decode(&head, &mut pages).unwrap();
        assert_eq!(pages.0, vec![Part::Fields(vec![(b"f".to_vec(), b"v".to_vec(), Some(i64::MAX - 1))])]);
        // Deadlines in a file are compared and added to saturating, also in verify (abs_diff).
        assert!(read_all(&file, None));
    }
}
