//! `copy FILE TARGET` (and `copy - TARGET`): an RDB file as the source. Preflight here: a file given by
//! path is read whole first (every record, the CRC-64 trailer), so that a corrupt or truncated file is
//! exit 2 with nothing written; then the target's connections, and which way the keys go (the file's
//! bytes by RESTORE when the target reads its RDB version, else decoded and written type-aware). The
//! run itself is the copy's ([`run::run`]), whose first stage reads the file (`source/backup.rs`).
//!
//! `--all-dbs` copies each database of the file into the target's database of the same number: one
//! pass per database, each reading only that database's records (the check found where each starts).

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};

use crossbeam_channel::Receiver;

use super::prepare::{Connections, FileStage, Input, Prepared};
use super::run::{self, Run, Stages, Then};
use super::Outcome;
use crate::account::metrics::Listener;
use crate::account::{Counters, Stop};
use crate::config::backup::Backup;
use crate::config::{CopyConfig, Mode};
use crate::exit::Fatal;
use crate::key::Key;
use crate::rdb::{Fork, Reader};
use crate::redis::clock::{self, Deadlines};
use crate::redis::conn::Conn;
use crate::redis::endpoint::Endpoint;
use crate::redis::memory::Memory;
use crate::redis::server::ServerInfo;
use crate::resume::checkpoint::{Identity, Start};
use crate::resume::{Ledger, Position};
use crate::source::backup::{self, Contents, Filter, How};
use crate::stage::route::Plan;
use crate::{files, preflight};

/// The file, as the stages read it.
type Stream = Box<dyn Read + Send>;

/// The file opened at its first record, what the check found in it (a file given by path), its size.
type Opened = (Reader<Stream>, Option<Contents>, Option<u64>);

/// Runs a copy from an RDB file.
pub fn copy(cfg: &CopyConfig, file: &Backup, stop: &Stop) -> Result<Outcome, Fatal> {
    let metrics = cfg.metrics.map(Listener::bind).transpose().map_err(Fatal::bad_input)?;
    let keys = backup::key_set(&cfg.keys)?;
    files::check_writable("--errors", &cfg.errors_path).map_err(Fatal::bad_input)?;
    let (reader, contents, size) = open(file)?;
    let (mut check, target) = preflight::open_checked(&cfg.target, cfg.timeouts)?;
    preflight::writable(&check, &target)?;
    let dbs: Vec<(u64, u64)> = match (file.db, &contents) {
        (Some(_), _) => Vec::new(),
        (None, Some(c)) => c.facts.dbs.iter().copied().filter(|(db, _)| c.keys.contains_key(db)).collect(),
        (None, None) => unreachable!("--all-dbs with standard input is refused at preflight"),
    };
    if check.is_cluster() && dbs.iter().any(|&(db, _)| db != 0) {
        return Err(Fatal::bad_input(format!(
            "--all-dbs: {} has keys in databases {}, but the target is a cluster (database 0 only); copy one \
             database with --source-db N",
            file.describe(),
            dbs.iter().map(|(db, _)| db.to_string()).collect::<Vec<_>>().join(", ")
        )));
    }
    let how = how(cfg, &mut check, &target, reader.version, reader.fork);
    let first_db = file.db.or(dbs.first().map(|&(db, _)| db)).unwrap_or(0);
    let target_at = |db: u64| match file.db {
        Some(_) => cfg.target.clone(),
        None => Endpoint { db: db as i64, ..cfg.target.clone() },
    };
    let conns = open_pass(cfg, &target_at(first_db), &target, how)?;
    let memory = Memory::of(&mut check)
        .map_err(|e| crate::redis::reply::at_start(&e, format!("cannot read INFO from the target: {e}")))?;
    preflight::room(&Memory::default(), &memory, false);
    let mut second = preflight::open_like(&cfg.target, &target, cfg.timeouts)?;
    let deadlines = Deadlines { pexpiretime: true, clock: clock::skew(&mut second, &mut check) };
    let filter = Filter::new(&cfg.keys, keys.clone(), Some(first_db), file.db.is_none());
    let estimate = contents.as_ref().map(|c| match file.db {
        Some(db) => c.keys.get(&db).copied().unwrap_or(0),
        None => c.keys.values().sum(),
    });
    log::info!(
        "copying from {} to {} ({}), {}: {}{}",
        file.describe(),
        cfg.target,
        preflight::describe(&check, &target),
        match file.db {
            Some(db) => format!("database {db} of the file"),
            None => format!("every database of the file, each into its own ({} of them)", dbs.len()),
        },
        why(&how, reader.version),
        if cfg.dry_run { ", dry run: nothing will be written" } else { "" }
    );
    let (big, mut connections) = conns;
    let stage = FileStage { reader, filter, how, big, backup: file.clone() };
    if !cfg.dry_run {
        connections.watch = Some(preflight::open_like(&cfg.target, &target, cfg.timeouts)?);
    }
    let prepared = Prepared {
        check,
        source: ServerInfo::default(),
        target: target.clone(),
        deadlines,
        target_memory: memory,
        keys: Input::File(Box::new(stage)),
        conns: connections,
        identity: Identity::of(cfg),
        resume: Start::fresh(None),
        slot_map: None,
        run_id: None,
        metrics,
        estimate,
    };
    let rest = Databases {
        cfg,
        file,
        target,
        keys,
        how,
        size,
        version: contents.as_ref().map_or(0, |c| c.version),
        fork: contents.as_ref().and_then(|c| c.fork).unwrap_or(Fork::Redis),
        dbs: dbs.into_iter().skip(1).collect(),
    };
    let then: Option<&dyn Then> = if rest.dbs.is_empty() { None } else { Some(&rest) };
    let summary = run::run(cfg, prepared, stop, then);
    Ok(Outcome { summary, error: stop.error(), follow: None })
}

/// Opens the file (checked whole first when it is a file) or standard input, at its first record.
fn open(file: &Backup) -> Result<Opened, Fatal> {
    let bad = |e: crate::rdb::Error| {
        Fatal::bad_input(format!("SOURCE: {}: {e}; nothing was written", file.describe()))
    };
    if file.is_stdin() {
        let reader = Reader::open(Box::new(std::io::stdin()) as Stream, None).map_err(bad)?;
        return Ok((reader, None, None));
    }
    let (handle, size) = backup::open_file(file)?;
    let reader = Reader::open(Box::new(handle) as Stream, Some(size)).map_err(bad)?;
    let mut contents = backup::check(reader, false).map_err(bad)?;
    if !contents.facts.checksum_checked {
        // No CRC-64 vouches for the bytes: every value's insides are read too, before anything is written.
        let (handle, size) = backup::open_file(file)?;
        let reader = Reader::open(Box::new(handle) as Stream, Some(size)).map_err(bad)?;
        contents = backup::check(reader, true).map_err(bad)?;
    }
    let per_db: Vec<String> = contents.keys.iter().map(|(db, n)| format!("{n} in db {db}")).collect();
    log::info!(
        "{}: {} bytes, {}; checked whole{}: {} keys ({}){}",
        file.describe(),
        size,
        backup::writer_of(contents.version, contents.fork.unwrap_or(Fork::Redis), &contents.facts),
        if contents.facts.checksum_checked {
            " (CRC-64 matches)"
        } else {
            " (the file carries no CRC-64: every value's insides were read too)"
        },
        contents.keys.values().sum::<u64>(),
        if per_db.is_empty() { "none".into() } else { per_db.join(", ") },
        if contents.facts.functions > 0 {
            format!(
                "; it also holds {} function libraries, which are not keys and are not copied",
                contents.facts.functions
            )
        } else {
            String::new()
        }
    );
    let (handle, size) = backup::open_file(file)?;
    let reader = Reader::open(Box::new(handle) as Stream, Some(size)).map_err(bad)?;
    Ok((reader, Some(contents), Some(size)))
}

/// Which way the keys go: the file's own bytes (RESTORE) when the target reads the file's RDB version
/// and fork and does not refuse RESTORE (`--mode auto`); always with `--mode dump`; never with `--mode
/// typed`.
fn how(cfg: &CopyConfig, check: &mut Conn, target: &ServerInfo, version: u32, fork: Fork) -> How {
    let fast = match cfg.mode {
        Mode::Dump => true,
        Mode::Typed => false,
        Mode::Auto => target.restores(version, fork) && !crate::stage::route::refuses_restore(check),
    };
    How {
        fast,
        limit: match cfg.mode {
            Mode::Dump => None,
            _ => Some(cfg.big_key_bytes.unwrap_or(u64::MAX)),
        },
        target: target.version,
        dry_run: cfg.dry_run,
    }
}

/// The log's words for `how`.
fn why(how: &How, version: u32) -> String {
    let big = match how.limit {
        Some(n) if n < u64::MAX => {
            format!("; values above --big-key-bytes {n} are decoded and written page by page")
        }
        _ => String::new(),
    };
    if how.fast {
        format!("RESTORE of the file's own bytes (RDB version {version}){big}")
    } else {
        format!("decoded and written type-aware (the target cannot RESTORE RDB version {version}, or --mode typed){big}")
    }
}

/// A pass's connections to `endpoint` (the target, at the pass's database): the big keys' builder (not
/// in a dry run), and the write threads' (no evictions watch: the first pass adds one).
fn open_pass(
    cfg: &CopyConfig,
    endpoint: &Endpoint,
    info: &ServerInfo,
    how: How,
) -> Result<(Option<Conn>, Connections), Fatal> {
    let open = || preflight::open_like(endpoint, info, cfg.timeouts).map(|c| c.with_retry(cfg.retry));
    let big = if cfg.dry_run { None } else { Some(open()?) };
    let writers = (0..cfg.writers).map(|_| open()).collect::<Result<Vec<_>, _>>()?;
    let plan = Plan {
        all_typed: !how.fast,
        typed_threads: false,
        size_check: false,
        strings: false,
        why: String::new(),
    };
    let conns = Connections {
        plan,
        batched: true,
        readers: Vec::new(),
        writers,
        typed: Vec::new(),
        probe: Vec::new(),
        watch: None,
    };
    Ok((big, conns))
}

/// `--all-dbs`: the passes over the file's other databases, one after the other.
struct Databases<'c> {
    cfg: &'c CopyConfig,
    file: &'c Backup,
    target: ServerInfo,
    keys: Option<HashSet<Vec<u8>>>,
    how: How,
    size: Option<u64>,
    version: u32,
    fork: Fork,
    /// The databases left, with the offset of each one's SELECTDB.
    dbs: Vec<(u64, u64)>,
}

impl Databases<'_> {
    /// The stages of the pass over database `db`, whose records start at byte `at`.
    fn stages(&self, db: u64, at: u64) -> Result<Stages<'static>, Fatal> {
        let (mut handle, _) = backup::open_file(self.file)?;
        handle
            .seek(SeekFrom::Start(at))
            .map_err(|e| Fatal::bad_input(format!("SOURCE {}: {e}", self.file.path)))?;
        let reader = Reader::resume(Box::new(handle) as Stream, self.size, self.version, self.fork, at);
        let endpoint = Endpoint { db: db as i64, ..self.cfg.target.clone() };
        let (big, conns) = open_pass(self.cfg, &endpoint, &self.target, self.how)?;
        let filter = Filter::new(&self.cfg.keys, self.keys.clone(), Some(db), true);
        let stage = FileStage { reader, filter, how: self.how, big, backup: self.file.clone() };
        Ok(Stages {
            keys: Input::File(Box::new(stage)),
            check: None,
            conns,
            starts: vec![Some(Position::default())],
            target: self.target.version,
        })
    }
}

impl Then for Databases<'_> {
    fn passes(&self, run: &Run) {
        for &(db, at) in &self.dbs {
            if run.stop.stop_scanning() {
                return;
            }
            log::info!("{}: database {db}, into the target's database {db}", self.file.describe());
            match self.stages(db, at) {
                Ok(stages) => run.pass(stages, &Ledger::new(&[Some(Position::default())]), run.policy),
                Err(e) => {
                    run.stop.fatal(format!("database {db}: {}", e.message));
                    return;
                }
            }
        }
    }

    fn progress(&self) -> String {
        String::new()
    }

    fn metrics(&self) -> String {
        String::new()
    }

    fn watch(&self, _counters: &Counters, done: Receiver<()>) {
        let _ = done.recv();
    }

    fn failed(&self, _key: &Key) {}
}
