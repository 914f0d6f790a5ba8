//! An RDB file, or an RDB stream on standard input, as the source of a copy: the keys come with their
//! values, so this stage hands the write stage [`Fetched`] keys and no fetch stage runs.
//!
//! Each key of the file passes the filters (`--source-db` / `--all-dbs`, `--match`, `--type`,
//! `--keys-from`, `--slots`); a key left out is walked past. A kept key takes one of two ways:
//! - the fast path (the target reads the file's RDB version, same fork, and `--mode` is not typed): its
//!   value bytes are cut out of the file as they are, and become a RESTORE payload with the file's
//!   version and a CRC-64;
//! - the decode path: its value is decoded and written type-aware, in the batch's pipeline (one
//!   MULTI/EXEC per key, [`Payload::Built`]; a string by SET) when it is small, or, above
//!   `--big-key-bytes`, by this stage itself, page by page under a temporary name, with the target
//!   half of the type-aware copy ([`Writer`]), so that neither side ever holds it whole.
//!
//! [`check`] reads a whole file first (every record, the CRC-64 trailer) so that a corrupt or truncated
//! file is refused before anything is written; a stream cannot be read twice, so its errors are found
//! as it is copied, and end the run.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;

use redis::Cmd;

use super::{Batcher, SourceError};
use crate::account::{Counters, Reporter, Stage, StopReason};
use crate::config::backup::Backup;
use crate::config::Keys;
use crate::exit::Fatal;
use crate::flow::{Fetched, Lru, Payload};
use crate::key::{Key, KeyType};
use crate::rdb::value::MAX_PAGE;
use crate::rdb::{self, Head, Pages, Part, Reader};
use crate::redis::glob;
use crate::sink::WriteContext;
use crate::stage::typed::temp::temp_name;
use crate::stage::typed::{Decoded, Fate, Writer};

/// A batch of raw payloads is sent on once it holds this many bytes, whatever its number of keys: with
/// the bounded channels, this bounds what is in flight (see the README).
pub const BATCH_BYTES: usize = 4 << 20;

/// Opens an RDB file by path, with its size; a directory or a file that cannot be opened is bad input.
pub fn open_file(file: &Backup) -> Result<(std::fs::File, u64), Fatal> {
    let handle = std::fs::File::open(&file.path)
        .map_err(|e| Fatal::bad_input(format!("SOURCE {}: cannot open it: {e}", file.path)))?;
    let meta = handle.metadata().map_err(|e| Fatal::bad_input(format!("SOURCE {}: {e}", file.path)))?;
    if meta.is_dir() {
        return Err(Fatal::bad_input(format!("SOURCE {} is a directory, not an RDB file", file.path)));
    }
    Ok((handle, meta.len()))
}

/// `--keys-from`, as the set of keys the run takes (`None` without it).
pub fn key_set(keys: &Keys) -> Result<Option<HashSet<Vec<u8>>>, Fatal> {
    let Some(mut file) = super::keys_file(keys)? else { return Ok(None) };
    let mut set = HashSet::new();
    while let Some(key) = file.lines.next_key().map_err(|e| Fatal::bad_input(format!("--keys-from: {e}")))? {
        set.insert(key.0);
    }
    Ok(Some(set))
}

/// Which keys of the file the run takes.
#[derive(Debug, Default)]
pub struct Filter {
    /// The database read; `None` for every one.
    pub db: Option<u64>,
    /// `--match` globs; empty takes every key.
    pub patterns: Vec<Vec<u8>>,
    /// `--type`; empty takes every type.
    pub types: Vec<KeyType>,
    /// `--keys-from`: only these keys.
    pub keys: Option<HashSet<Vec<u8>>>,
    /// Stop at the first key of another database than `db`: a pass over one database's records.
    pub segment: bool,
}

impl Filter {
    /// The filter of `--match` / `--type` (from `keys`) and `--keys-from` (`set`), for database `db`
    /// (`None`: every one); `segment`: stop at the first key of another database.
    pub fn new(keys: &Keys, set: Option<HashSet<Vec<u8>>>, db: Option<u64>, segment: bool) -> Filter {
        let (patterns, types) = match keys {
            Keys::Scan { patterns, types, .. } => {
                (patterns.iter().filter(|p| p.as_slice() != b"*").cloned().collect(), types.clone())
            }
            Keys::File(_) => (Vec::new(), Vec::new()),
        };
        Filter { db, patterns, types, keys: set, segment }
    }

    /// Whether the run takes the key of `head`.
    pub fn takes(&self, head: &Head) -> bool {
        self.db.is_none_or(|db| db == head.db)
            && (self.patterns.is_empty() || self.patterns.iter().any(|p| glob::matches(p, &head.key)))
            && (self.types.is_empty() || self.types.iter().any(|t| t.name() == head.kind))
            && self.keys.as_ref().is_none_or(|keys| keys.contains(&head.key))
    }
}

/// How the kept keys are written.
#[derive(Debug, Clone, Copy)]
pub struct How {
    /// RESTORE the file's own bytes (else decode every key).
    pub fast: bool,
    /// `--big-key-bytes`: a value above it is built page by page; `None`: never.
    pub limit: Option<u64>,
    /// The target's version, for the type-aware writes.
    pub target: (u32, u32, u32),
    /// Write nothing (and build no big key: each goes to the dry run's sink).
    pub dry_run: bool,
}

/// What a whole-file check found.
#[derive(Debug, Clone, Default)]
pub struct Contents {
    /// Keys per database.
    pub keys: BTreeMap<u64, u64>,
    /// What the file said about itself.
    pub facts: rdb::Facts,
    /// Its RDB version.
    pub version: u32,
    /// Its fork.
    pub fork: Option<rdb::Fork>,
}

/// Reads the whole file behind `reader`: every record, every value's structure, the CRC-64 trailer;
/// with `deep`, the insides of every blob too (for a file whose trailer vouches for nothing).
pub fn check<R: Read>(mut reader: Reader<R>, deep: bool) -> Result<Contents, rdb::Error> {
    let mut keys = BTreeMap::new();
    while let Some(head) = reader.head()? {
        *keys.entry(head.db).or_insert(0) += 1;
        if deep {
            reader.check(&head)?;
        } else {
            reader.skip(&head)?;
        }
    }
    Ok(Contents { keys, facts: reader.facts.clone(), version: reader.version, fork: Some(reader.fork) })
}

/// The writer's version and what else its AUX fields say, for the log.
pub fn writer_of(version: u32, fork: rdb::Fork, facts: &rdb::Facts) -> String {
    let aux = |name: &str| facts.aux.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let by = match (aux("valkey-ver"), aux("redis-ver")) {
        (Some(v), _) => format!("Valkey {v}"),
        (None, Some(v)) => format!("Redis {v}"),
        (None, None) => "a server that did not say its version".into(),
    };
    let when = aux("ctime")
        .and_then(|t| t.parse::<i64>().ok())
        .map_or(String::new(), |t| format!(", saved at Unix time {t}"));
    let fork = if fork == rdb::Fork::Valkey { " (Valkey format)" } else { "" };
    format!("RDB version {version}{fork}, written by {by}{when}")
}

/// The file source under way: the reader, the filters, the way keys are written, and (when it is not a
/// dry run) the writer that builds big keys.
pub struct FileKeys<'w, 'a, R> {
    /// The file.
    pub reader: Reader<R>,
    /// What is taken.
    pub filter: Filter,
    /// How it is written.
    pub how: How,
    /// Builds big keys (none in a dry run).
    pub writer: Option<Writer<'w>>,
    /// Policy, budget, ledger.
    pub ctx: &'a WriteContext<'a>,
    /// Where the file comes from, for messages.
    pub backup: &'a Backup,
    /// Big values built page by page so far.
    pub paged: u64,
}

impl<R: Read> FileKeys<'_, '_, R> {
    /// Feeds every key the run takes into `batcher`, until the end of the file or a stop.
    pub fn feed(mut self, batcher: &mut Batcher<Fetched>, rep: &Reporter) -> Result<(), SourceError> {
        let mut bytes = 0;
        let mut left_out: BTreeMap<u64, u64> = BTreeMap::new();
        let result = loop {
            let head = match self.reader.head() {
                Ok(Some(head)) if self.filter.segment && self.filter.db != Some(head.db) => break Ok(()),
                Ok(Some(head)) => head,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            };
            if !self.filter.takes(&head) || !batcher.takes(&head.key) {
                *left_out.entry(head.db).or_insert(0) += 1;
                if let Err(e) = self.reader.skip(&head) {
                    break Err(e);
                }
                continue;
            }
            match self.key(head, batcher, rep, &mut bytes) {
                Ok(true) => {}
                Ok(false) | Err(rdb::Error::Stopped) => return Ok(()),
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = result {
            return Err(SourceError::new(format!("{}: {e}", self.backup.describe())));
        }
        if self.paged > 0 {
            log::info!("{} values above --big-key-bytes were written page by page", self.paged);
        }
        let other: Vec<String> = left_out.iter().map(|(db, n)| format!("{n} in db {db}")).collect();
        if !other.is_empty() {
            log::info!(
                "{}: left out {} keys the filters do not take ({})",
                self.backup.describe(),
                left_out.values().sum::<u64>(),
                other.join(", ")
            );
        }
        if !self.filter.segment && !self.reader.facts.checksum_checked && self.reader.version >= 5 {
            log::warn!(
                "{}: the file has no CRC-64 (written with rdbchecksum no): its bytes were not checked",
                self.backup.describe()
            );
        }
        Ok(())
    }

    /// One key the run takes; false when the run is stopping.
    fn key(
        &mut self,
        mut head: Head,
        batcher: &mut Batcher<Fetched>,
        rep: &Reporter,
        bytes: &mut usize,
    ) -> Result<bool, rdb::Error> {
        let lru = Lru { idle: head.idle, freq: head.freq };
        // The reader needs the value's type, not the key's bytes: they move into the key.
        let key = Key(std::mem::take(&mut head.key));
        let expire_at_ms = head.expire_at_ms;
        let mut limit = self.how.limit.unwrap_or(u64::MAX);
        if self.how.fast {
            match self.reader.payload(&head, limit)? {
                Some(payload) => {
                    *bytes += payload.len();
                    let sent =
                        batcher.push(Fetched { key, payload: Payload::Dump(payload), expire_at_ms, lru });
                    if sent && *bytes >= BATCH_BYTES {
                        *bytes = 0;
                        return Ok(batcher.flush());
                    }
                    return Ok(sent);
                }
                // Too big: decoded now, and built page by page from the first page.
                None => limit = 0,
            }
        }
        let tmp = temp_name(key.as_bytes());
        let mut collect = Collect {
            decoded: Decoded::new(tmp, self.how.target),
            string: head.kind == "string",
            small: Some(Small::default()),
            limit,
            big: None,
            key: &key,
            expire_at_ms,
            writer: self.writer.as_mut(),
            batcher,
            ctx: self.ctx,
            rep,
            dry_run: self.how.dry_run,
        };
        let read = self.reader.decode(&head, &mut collect);
        let Collect { small, big, decoded, .. } = collect;
        match (read, big) {
            (Err(rdb::Error::Opaque { what, .. }), big) => {
                let id = match big {
                    Some(big) => Some(big.id),
                    None => batcher.alone(),
                };
                let Some(id) = id else { return Ok(false) };
                rep.fail(key, Stage::Fetch, "UNSUPPORTED".into(), what);
                self.ctx.ledger.done(id, 1);
                Ok(true)
            }
            (Err(e), Some(big)) => {
                self.abandon_big(big, &key, rep, &e);
                Err(e)
            }
            (Err(e), None) => Err(e),
            (Ok(()), Some(big)) => {
                self.paged += 1;
                self.end_big(big, &key, rep);
                Ok(!rep.stop.stop_scanning())
            }
            (Ok(()), None) => {
                let small = small.unwrap_or_default();
                let payload = match (small.failed, small.string) {
                    (Some(why), _) => {
                        let Some(id) = batcher.alone() else { return Ok(false) };
                        rep.fail(key, Stage::Write, "UNSUPPORTED".into(), why);
                        self.ctx.ledger.done(id, 1);
                        return Ok(true);
                    }
                    (None, Some(value)) => Payload::String(value),
                    (None, None) => Payload::Built { tmp: decoded.tmp().to_vec(), writes: small.writes },
                };
                *bytes += small.bytes;
                let sent = batcher.push(Fetched { key, payload, expire_at_ms, lru });
                if sent && *bytes >= BATCH_BYTES {
                    *bytes = 0;
                    return Ok(batcher.flush());
                }
                Ok(sent)
            }
        }
    }

    /// A big key whose value could not be read to its end: its temporary key is deleted and its slot of
    /// `--limit` given back; it failed (a corrupt or cut stream), or was not reached (the run stops).
    fn abandon_big(&mut self, big: Big, key: &Key, rep: &Reporter, why: &rdb::Error) {
        if let (Some(build), Some(writer)) = (big.build.as_ref(), self.writer.as_mut()) {
            writer.abandon(build);
        }
        if let (true, Some(budget)) = (big.reserved, self.ctx.budget) {
            budget.settle(1, 0);
        }
        match why {
            rdb::Error::Stopped => rep.unreached(1),
            e => {
                rep.fail(
                    key.clone(),
                    Stage::Fetch,
                    "CORRUPT".into(),
                    format!("{}: {e}", self.backup.describe()),
                );
                self.ctx.ledger.done(big.id, 1);
            }
        }
    }

    /// Ends a big key: its rename (or the failure met on the way), counted as the write stage counts.
    fn end_big(&mut self, mut big: Big, key: &Key, rep: &Reporter) {
        let fate = match (big.failed.take(), big.build.as_mut(), self.writer.as_mut()) {
            (Some(fate), _, _) => fate,
            (None, Some(build), Some(writer)) => writer.end(build),
            (None, _, _) => {
                Fate::Failed(Stage::Write, "IO".into(), "no connection to build the key on".into())
            }
        };
        if let (true, Some(budget)) = (big.reserved, self.ctx.budget) {
            budget.settle(1, u64::from(fate == Fate::Copied));
        }
        let counters = rep.counters;
        match fate {
            Fate::Copied => Counters::add(&counters.copied, 1),
            Fate::Skipped => Counters::add(&counters.skipped, 1),
            Fate::Expired => Counters::add(&counters.expired, 1),
            Fate::Failed(stage, code, message) => rep.fail(key.clone(), stage, code, message),
            Fate::Reported => {}
            Fate::Dropped => {
                rep.unreached(1);
                return;
            }
        }
        self.ctx.ledger.done(big.id, 1);
    }
}

/// A small decoded value, kept whole until it goes in a batch.
#[derive(Default)]
struct Small {
    /// The writes on the temporary name.
    writes: Vec<Cmd>,
    /// A string's bytes (it goes by SET).
    string: Option<Vec<u8>>,
    /// Bytes so far.
    bytes: usize,
    /// What the target cannot take (the key fails once it is read past).
    failed: Option<String>,
    /// A dry run's value past the limit: it is counted as the others, its writes no longer kept.
    over: bool,
}

/// A big value being built: its ledger id, its build, and a failure met on the way (the rest of the
/// value is then read past).
struct Big<'k> {
    id: u64,
    build: Option<crate::stage::typed::Build<'k>>,
    failed: Option<Fate>,
    /// A slot of `--limit` is held for it.
    reserved: bool,
}

/// Where a decoded value's pages go: into a [`Small`] until it passes the limit, then straight to the
/// target, page by page.
struct Collect<'k, 'c, 'w, 'a, 'b> {
    decoded: Decoded,
    /// The value is a string.
    string: bool,
    small: Option<Small>,
    limit: u64,
    big: Option<Big<'k>>,
    key: &'k Key,
    expire_at_ms: Option<i64>,
    writer: Option<&'c mut Writer<'w>>,
    batcher: &'c mut Batcher<'b, Fetched>,
    ctx: &'a WriteContext<'a>,
    rep: &'a Reporter<'a>,
    dry_run: bool,
}

impl Collect<'_, '_, '_, '_, '_> {
    /// The value passed its limit: it is counted and reserved now, and what was kept goes as its first
    /// pages.
    fn go_big(&mut self) -> Result<(), rdb::Error> {
        let small = self.small.take().unwrap_or_default();
        // `--limit` first: a key past it is never counted, and the run stops.
        let reserved = match self.ctx.budget {
            Some(budget) if budget.reserve(1) == 0 => {
                self.rep.stop.request(StopReason::Limit);
                return Err(rdb::Error::Stopped);
            }
            Some(_) => true,
            None => false,
        };
        let Some(id) = self.batcher.alone() else {
            if let (true, Some(budget)) = (reserved, self.ctx.budget) {
                budget.settle(1, 0);
            }
            return Err(rdb::Error::Stopped);
        };
        let mut big = Big { id, build: None, failed: None, reserved };
        if let Some(why) = small.failed {
            big.failed = Some(Fate::Failed(Stage::Write, "UNSUPPORTED".into(), why));
        }
        if let (Some(writer), None) = (self.writer.as_deref_mut(), &big.failed) {
            let mut build = writer.begin(self.key, self.decoded.tmp().to_vec(), self.expire_at_ms);
            let mut writes = small.writes;
            if let Some(s) = small.string {
                writes = self.decoded.writes(&Part::Chunk(s)).unwrap_or_default();
            }
            if let Err(fate) = add_pages(writer, &mut build, writes) {
                big.failed = Some(fate);
            }
            big.build = Some(build);
        }
        self.big = Some(big);
        Ok(())
    }
}

/// Writes `writes` as pages of at most [`MAX_PAGE`] commands each (a stream's groups can be many).
fn add_pages(
    writer: &mut Writer,
    build: &mut crate::stage::typed::Build,
    writes: Vec<Cmd>,
) -> Result<(), Fate> {
    let mut writes = writes.into_iter().peekable();
    while writes.peek().is_some() {
        let page: Vec<Cmd> = writes.by_ref().take(MAX_PAGE).collect();
        writer.add(build, page)?;
    }
    Ok(())
}

impl Pages for Collect<'_, '_, '_, '_, '_> {
    fn page(&mut self, part: Part) -> Result<(), rdb::Error> {
        if self.rep.stop.discard() {
            return Err(rdb::Error::Stopped);
        }
        if let Some(small) = &mut self.small {
            small.bytes += part.bytes();
            if small.failed.is_none() && !small.over {
                match (&part, self.string) {
                    (Part::Chunk(c), true) => small.string.get_or_insert_with(Vec::new).extend_from_slice(c),
                    (part, _) => match self.decoded.writes(part) {
                        Ok(w) => small.writes.extend(w),
                        Err(why) => small.failed = Some(why),
                    },
                }
            }
            // Past the limit, or too many commands for one transaction (a stream's groups).
            if small.bytes as u64 > self.limit || small.writes.len() > MAX_PAGE {
                if self.dry_run {
                    // Nothing is built in a dry run: the key goes to the dry run's sink like the others.
                    small.over = true;
                    small.writes = Vec::new();
                    small.string = None;
                } else {
                    self.go_big()?;
                }
            }
            return Ok(());
        }
        let Some(big) = &mut self.big else { return Ok(()) };
        if big.failed.is_some() {
            return Ok(());
        }
        let (Some(build), Some(writer)) = (big.build.as_mut(), self.writer.as_deref_mut()) else {
            return Ok(());
        };
        match self.decoded.writes(&part) {
            Ok(writes) => {
                if let Err(fate) = add_pages(writer, build, writes) {
                    big.failed = Some(fate);
                }
            }
            Err(why) => big.failed = Some(Fate::Failed(Stage::Write, "UNSUPPORTED".into(), why)),
        }
        Ok(())
    }
}
