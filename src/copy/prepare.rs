//! Preflight of a copy: everything that can refuse the run does so here, before anything is written.
//! The two servers as they are ([`Servers`]), every connection the stages will use ([`Connections`],
//! with the plan that says which threads run), the keys' source, and the checkpoint's start.

use crate::account::metrics::Listener;
use crate::config::{CopyConfig, Keys, Mode, DEFAULT_TYPED_THREADS_AUTO, DEFAULT_TYPED_THREADS_TYPED};
use crate::exit::Fatal;
use crate::files;
use crate::preflight;
use crate::redis::clock::{self, Deadlines};
use crate::redis::conn::Conn;
use crate::redis::endpoint::{Endpoint, Timeouts};
use crate::redis::memory::Memory;
use crate::redis::server::ServerInfo;
use crate::resume::checkpoint::{self, Identity, Origin, SlotMap, Start};
use crate::source::{self, Source};
use crate::stage::route::{self, Plan};
use crate::stage::typed;
use crate::throttle::latency;

/// The two servers as preflight found them.
pub struct Servers {
    /// The connection the source is scanned on.
    pub scan: Conn,
    /// The connection the check stage uses on the target.
    pub check: Conn,
    /// INFO of the source.
    pub source: ServerInfo,
    /// INFO of the target.
    pub target: ServerInfo,
    /// How deadlines are read from the source, on its clock.
    pub deadlines: Deadlines,
    /// The target's memory at preflight (its `evicted_keys` is the base the run's evictions count from).
    pub target_memory: Memory,
    /// What each side is, for the first log line.
    pub sides: [String; 2],
}

impl Servers {
    /// Opens both sides, refuses a target that is the source or a read-only replica, reports the
    /// clocks and warns about a target that evicts.
    pub fn check(cfg: &CopyConfig) -> Result<Servers, Fatal> {
        let (mut scan, source) = preflight::open_checked(cfg.source.server(), cfg.timeouts)?;
        let (mut check, target) = preflight::open_checked(&cfg.target, cfg.timeouts)?;
        preflight::distinct((&scan, &source), (&check, &target))?;
        preflight::writable(&check, &target)?;
        let sides = [preflight::describe(&scan, &source), preflight::describe(&check, &target)];
        let clock = clock::skew(&mut scan, &mut check);
        let deadlines = Deadlines { pexpiretime: source.has_pexpiretime(), clock };
        let memory = |conn: &mut Conn, role: &str| {
            Memory::of(conn).map_err(|e| {
                crate::redis::reply::at_start(&e, format!("cannot read INFO from the {role}: {e}"))
            })
        };
        let target_memory = memory(&mut check, "target")?;
        let everything = matches!(&cfg.keys, Keys::Scan { patterns, types, .. }
            if types.is_empty() && patterns.iter().all(|p| p == b"*"));
        preflight::room(&memory(&mut scan, "source")?, &target_memory, everything);
        let (scan, check) = (scan.with_retry(cfg.retry), check.with_retry(cfg.retry));
        Ok(Servers { scan, check, source, target, deadlines, target_memory, sides })
    }
}

/// The connections of the stage threads (each thread owns its own), and the plan that says which
/// threads run.
pub struct Connections {
    /// How keys move, decided up front.
    pub plan: Plan,
    /// The fetch and write threads run (unless every key goes type-aware, one by one).
    pub batched: bool,
    /// One per fetch thread.
    pub readers: Vec<Conn>,
    /// One per write thread.
    pub writers: Vec<Conn>,
    /// A source and a target connection per typed thread.
    pub typed: Vec<(Conn, Conn)>,
    /// `--max-latency`'s probe: a connection to each server the run reads from.
    pub probe: Vec<Conn>,
    /// The evictions watch on the target (none in a dry run).
    pub watch: Option<Conn>,
}

impl Connections {
    /// Opens every connection the stages use; the first typed pair also probes what the servers refuse,
    /// for the plan, which also sets the default number of typed threads.
    /// `probed`: the servers the run reads from (a cluster's primaries serving its slots), for the
    /// `--max-latency` probe. `first`: the plan of a follow's first pass, which a later pass follows (no
    /// probes then, and no evictions watch: the first pass's goes on).
    pub fn open(
        cfg: &CopyConfig,
        source: &ServerInfo,
        target: &ServerInfo,
        probed: &[Endpoint],
        first: Option<&Plan>,
    ) -> Result<Connections, Fatal> {
        let open = |endpoint: &Endpoint| {
            let info = if endpoint.role == cfg.source.server().role { source } else { target };
            preflight::open_like(endpoint, info, cfg.timeouts).map(|c| c.with_retry(cfg.retry))
        };
        let mut typed = Vec::new();
        if cfg.mode != Mode::Dump {
            typed.push((open(cfg.source.server())?, open(&cfg.target)?));
        }
        let plan = match first {
            Some(plan) => plan.clone(),
            None => route::plan(cfg, typed.first_mut().map(|(s, d)| (s, d)), source, target),
        };
        let typed_threads = match (cfg.mode, cfg.typed_threads) {
            (Mode::Dump, _) => 0,
            (_, Some(n)) => n,
            (_, None) if plan.all_typed => DEFAULT_TYPED_THREADS_TYPED,
            (_, None) => DEFAULT_TYPED_THREADS_AUTO,
        };
        while typed.len() < typed_threads {
            typed.push((open(cfg.source.server())?, open(&cfg.target)?));
        }
        typed.truncate(typed_threads);
        let batched = !plan.all_typed || plan.strings;
        let (n_readers, n_writers) = if batched { (cfg.readers, cfg.writers) } else { (0, 0) };
        let readers = (0..n_readers).map(|_| open(cfg.source.server())).collect::<Result<Vec<_>, _>>()?;
        let writers = (0..n_writers).map(|_| open(&cfg.target)).collect::<Result<Vec<_>, _>>()?;
        // --max-latency's probe PINGs each server of `probed` on connections of its own, with a timeout
        // scaled to the limit.
        let probe = match cfg.max_latency {
            Some(limit) => {
                let timeouts = Timeouts { io: latency::probe_timeout(limit), ..cfg.timeouts };
                probed.iter().map(|node| Conn::open(node, timeouts)).collect::<Result<Vec<_>, _>>()?
            }
            None => Vec::new(),
        };
        let watch = if cfg.dry_run || first.is_some() { None } else { Some(open(&cfg.target)?) };
        Ok(Connections { plan, batched, readers, writers, typed, probe, watch })
    }
}

/// Where a pass's keys come from.
pub enum Input<'k> {
    /// Keys found (a scan, a file of keys, a follow's events), whose values the fetch stage reads.
    Keys(Box<dyn Source + 'k>),
    /// Keys read with their values (an RDB file): they go straight to the write stage.
    File(Box<FileStage>),
}

/// The first stage of a pass over an RDB file: the file, what is taken, how it is written, and a target
/// connection for the big keys the stage builds itself (none in a dry run).
pub struct FileStage {
    /// The file, positioned at its first record to read.
    pub reader: crate::rdb::Reader<Box<dyn std::io::Read + Send>>,
    /// What is taken.
    pub filter: crate::source::backup::Filter,
    /// How it is written.
    pub how: crate::source::backup::How,
    /// Builds the big keys.
    pub big: Option<Conn>,
    /// Where the file comes from.
    pub backup: crate::config::backup::Backup,
}

/// Everything preflight opened and decided.
pub struct Prepared {
    /// The check stage's connection to the target.
    pub check: Conn,
    /// INFO of the source.
    pub source: ServerInfo,
    /// INFO of the target.
    pub target: ServerInfo,
    /// How deadlines are read from the source, on its clock.
    pub deadlines: Deadlines,
    /// The target's memory at preflight.
    pub target_memory: Memory,
    /// Where the keys come from.
    pub keys: Input<'static>,
    /// The stages' connections and the plan.
    pub conns: Connections,
    /// The copy, as a checkpoint knows it.
    pub identity: Identity,
    /// Where each lane starts, and the counters of earlier runs.
    pub resume: Start,
    /// A cluster source's slot map, for the checkpoint.
    pub slot_map: Option<SlotMap>,
    /// A standalone source's run id, for the checkpoint.
    pub run_id: Option<String>,
    /// `--metrics`: the listener, bound.
    pub metrics: Option<Listener>,
    /// How many keys the run should see, for the progress bar: the lines of `--keys-from`, or the DBSIZE
    /// of the servers scanned (an upper bound with `--match`, `--type` or `--shard`).
    pub estimate: Option<u64>,
}

/// Preflight: everything that can refuse the run does so before anything is written.
pub fn prepare(cfg: &CopyConfig) -> Result<Prepared, Fatal> {
    let metrics = cfg.metrics.map(Listener::bind).transpose().map_err(Fatal::bad_input)?;
    let keys_file = source::keys_file(&cfg.keys)?;
    files::check_writable("--errors", &cfg.errors_path).map_err(Fatal::bad_input)?;
    let identity = Identity::of(cfg);
    let saved = match &cfg.checkpoint {
        Some(path) => {
            files::check_replaceable("--checkpoint", path).map_err(Fatal::bad_input)?;
            checkpoint::load(path, &identity).map_err(Fatal::bad_input)?
        }
        None => None,
    };
    let Servers { mut scan, check, source, target, deadlines, target_memory, sides } = Servers::check(cfg)?;
    // The servers the run reads from, for --max-latency's probe, from the connection already open.
    let probed = match cfg.max_latency {
        Some(_) => scan.primaries_serving(cfg.slots()).map_err(Fatal::from)?.0,
        None => Vec::new(),
    };
    let estimate = match &keys_file {
        Some(file) => Some(file.keys),
        None => scan.on_each::<u64>(&redis::cmd("DBSIZE")).ok().map(|sizes| sizes.iter().sum()),
    };
    let keys = source::open(&cfg.keys, keys_file, scan, cfg.timeouts, cfg.slots())?;
    // A cluster source resumes each primary's scan, on the slot map the checkpoint was made with.
    let (slot_map, run_id) = (keys.slot_map(), keys.run_id().map(String::from));
    let resume = match &cfg.checkpoint {
        Some(path) => {
            checkpoint::start(saved, path, Origin { map: slot_map.as_ref(), run_id: run_id.as_deref() })
        }
        None => Start::fresh(slot_map.as_ref()),
    };
    let conns = Connections::open(cfg, &source, &target, &probed, None)?;
    if !conns.typed.is_empty() && !cfg.dry_run {
        typed::temp::IN_FLIGHT.aim(&cfg.target, target.cluster);
    }
    log::info!(
        "copying from {} ({}) to {} ({}), mode {:?}: {}{}{}",
        cfg.source,
        sides[0],
        cfg.target,
        sides[1],
        cfg.mode,
        conns.plan.why,
        cfg.split.as_ref().map_or(String::new(), |s| format!(
            "; only {}, {} of 16384",
            s.describe(),
            s.slots.len()
        )),
        if cfg.dry_run { ", dry run: nothing will be written" } else { "" }
    );
    Ok(Prepared {
        check,
        source,
        target,
        deadlines,
        target_memory,
        keys: Input::Keys(keys),
        conns,
        identity,
        resume,
        slot_map,
        run_id,
        metrics,
        estimate,
    })
}
