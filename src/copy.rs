//! `copy` from start to end: the files and the lock, preflight, the stages wired by bounded channels in
//! one `thread::scope`, the summary and the report.
//!
//! ```text
//! source ──Batch<Key>──> check (skip policy) ──Batch<Key>──> fetch ×readers ──Batch<Fetched>──> write ×writers ──> sink
//!                          \__________________ failures ──> CSV thread ________________/
//!   keys DUMP/RESTORE cannot move (fetch, write) ──Batch<Key>──> typed ×typed-threads
//! ```
//! With `--mode typed` (or when auto decides so up front) the checked keys go straight to the typed
//! threads, and no fetch or write thread is started. A cluster source is scanned by one thread per
//! primary (inside the source); every other connection to a cluster reaches all its primaries.
//! Preflight opens every connection the run will use (so a wrong password or an unreachable host is
//! exit 2 before anything is written), checks the CSV path and reads `--keys-from` through. Stages end
//! by draining their input and returning, which drops their senders: shutdown is by disconnection.

use std::sync::atomic::Ordering;
use std::thread::{self, Scope, ScopedJoinHandle};
use std::time::{Instant, SystemTime};

use crossbeam_channel::{bounded, Receiver};

use crate::account::csv::write_errors;
use crate::account::progress::{self, Summary};
use crate::account::{evictions, Counters, Reporter, Stop, StopReason};
use crate::config::{
    CopyConfig, Keys, Mode, OnConflict, DEFAULT_TYPED_THREADS_AUTO, DEFAULT_TYPED_THREADS_TYPED,
};
use crate::cron::lock::RunLock;
use crate::cron::report::{self, Report};
use crate::exit::{Exit, Fatal};
use crate::preflight;
use crate::redis::clock::{self, Deadlines};
use crate::redis::conn::{Conn, REDIRECTIONS};
use crate::redis::endpoint::{Endpoint, Timeouts};
use crate::redis::memory::Memory;
use crate::redis::server::ServerInfo;
use crate::resume::checkpoint::{self, Identity, Origin, SlotMap, Start};
use crate::resume::Ledger;
use crate::sink::budget::Budget;
use crate::sink::dry_run::DryRun;
use crate::sink::target::Target;
use crate::sink::{Sink, WriteContext, WritePolicy};
use crate::source::{self, Batching, Source};
use crate::stage::route::{self, Fallback, Plan, Router};
use crate::stage::{check, fetch, typed, write};
use crate::throttle::{latency, Throttle};
use crate::{files, out};

/// How a copy that started ended.
pub struct Outcome {
    /// The counters and timing.
    pub summary: Summary,
    /// The first fatal error met after the start (exit 3), if any.
    pub error: Option<String>,
}

impl Outcome {
    /// The exit code for this outcome.
    pub fn exit(&self) -> Exit {
        match self.summary.stop {
            StopReason::Aborted => Exit::Aborted,
            _ if self.error.is_some() => Exit::Aborted,
            StopReason::Interrupted => Exit::Interrupted,
            _ if self.summary.counts.failed > 0 || self.summary.counts.evicted > 0 => Exit::KeysFailed,
            _ => Exit::Ok,
        }
    }
}

/// Runs `redis-ferry copy`: refuses two flags naming one file, checks the report path, takes the lock,
/// runs the copy, prints the summary, then writes the report while still holding the lock (so the next
/// run cannot start before it is written).
pub fn main(cfg: &CopyConfig, stop: &Stop) -> Exit {
    // Before the lock file is opened (and truncated for our PID), and before any file is read.
    let named: Vec<_> = cfg.files.iter().map(|f| f.named()).collect();
    if let Err(e) = files::refuse_shared(&named) {
        return fail(Exit::BadInput, &e);
    }
    if let Some(Err(e)) = cfg.report.as_deref().map(report::check_report_writable) {
        return fail(Exit::BadInput, &e);
    }
    let _lock = match cfg.lock.as_deref().map(RunLock::acquire).transpose() {
        Ok(lock) => lock,
        Err(e) => return fail(e.exit, &e.message),
    };
    let start = SystemTime::now();
    let (exit, summary, error) = match copy(cfg, stop) {
        Err(e) => (fail(e.exit, &e.message), None, Some(e.message)),
        Ok(outcome) => {
            let exit = outcome.exit();
            if let Some(error) = &outcome.error {
                out::error(error);
            }
            let failed = outcome.summary.counts.failed;
            match exit {
                Exit::Aborted if outcome.error.is_none() => {
                    log::error!("aborted after {failed} failed keys (see {})", cfg.errors_path)
                }
                Exit::KeysFailed if failed > 0 => {
                    log::warn!("{failed} keys failed; they are listed in {}", cfg.errors_path)
                }
                Exit::Interrupted => log::warn!("interrupted: batches in flight were finished"),
                _ => {}
            }
            let exit = out::results(&outcome.summary.to_string(), exit);
            (exit, Some(outcome.summary), outcome.error)
        }
    };
    if let Some(path) = &cfg.report {
        let report = Report::new(cfg, start, summary.as_ref(), exit, error.as_deref());
        if let Err(e) = report.write(path) {
            // The copy's exit code stands: it says what happened to the keys.
            out::error(&e);
        }
    }
    exit
}

/// Prints one `error:` line and returns the exit code.
fn fail(exit: Exit, message: &str) -> Exit {
    out::error(message);
    exit
}

/// Runs a copy. `stop` is the process-wide flag the Ctrl-C handler raises.
pub fn copy(cfg: &CopyConfig, stop: &Stop) -> Result<Outcome, Fatal> {
    let prepared = prepare(cfg)?;
    Ok(run(cfg, prepared, stop))
}

/// The two servers as preflight found them.
struct Servers {
    /// The connection the source is scanned on.
    scan: Conn,
    /// The connection the check stage uses on the target.
    check: Conn,
    /// INFO of the source.
    source: ServerInfo,
    /// INFO of the target.
    target: ServerInfo,
    /// How deadlines are read from the source, on its clock.
    deadlines: Deadlines,
    /// The target's memory at preflight (its `evicted_keys` is the base the run's evictions count from).
    target_memory: Memory,
    /// What each side is, for the first log line.
    sides: [String; 2],
}

impl Servers {
    /// Opens both sides, refuses a target that is the source or a read-only replica, reports the
    /// clocks and warns about a target that evicts.
    fn check(cfg: &CopyConfig) -> Result<Servers, Fatal> {
        let (mut scan, source) = preflight::open_checked(&cfg.source, cfg.timeouts)?;
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
struct Connections {
    /// How keys move, decided up front.
    plan: Plan,
    /// The fetch and write threads run (unless every key goes type-aware, one by one).
    batched: bool,
    /// One per fetch thread.
    readers: Vec<Conn>,
    /// One per write thread.
    writers: Vec<Conn>,
    /// A source and a target connection per typed thread.
    typed: Vec<(Conn, Conn)>,
    /// `--max-latency`'s probe: a connection to each server the run reads from.
    probe: Vec<Conn>,
    /// The evictions watch on the target (none in a dry run).
    watch: Option<Conn>,
}

impl Connections {
    /// Opens every connection the stages use; the first typed pair also probes what the servers refuse,
    /// for the plan, which also sets the default number of typed threads.
    /// `probed`: the servers the run reads from (a cluster's primaries serving its slots), for the
    /// `--max-latency` probe.
    fn open(
        cfg: &CopyConfig,
        source: &ServerInfo,
        target: &ServerInfo,
        probed: &[Endpoint],
    ) -> Result<Connections, Fatal> {
        let open = |endpoint: &Endpoint| {
            let info = if endpoint.role == cfg.source.role { source } else { target };
            preflight::open_like(endpoint, info, cfg.timeouts).map(|c| c.with_retry(cfg.retry))
        };
        let mut typed = Vec::new();
        if cfg.mode != Mode::Dump {
            typed.push((open(&cfg.source)?, open(&cfg.target)?));
        }
        let plan = route::plan(cfg, typed.first_mut().map(|(s, d)| (s, d)), source, target);
        let typed_threads = match (cfg.mode, cfg.typed_threads) {
            (Mode::Dump, _) => 0,
            (_, Some(n)) => n,
            (_, None) if plan.all_typed => DEFAULT_TYPED_THREADS_TYPED,
            (_, None) => DEFAULT_TYPED_THREADS_AUTO,
        };
        while typed.len() < typed_threads {
            typed.push((open(&cfg.source)?, open(&cfg.target)?));
        }
        typed.truncate(typed_threads);
        let batched = !plan.all_typed || plan.strings;
        let (n_readers, n_writers) = if batched { (cfg.readers, cfg.writers) } else { (0, 0) };
        let readers = (0..n_readers).map(|_| open(&cfg.source)).collect::<Result<Vec<_>, _>>()?;
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
        let watch = if cfg.dry_run { None } else { Some(open(&cfg.target)?) };
        Ok(Connections { plan, batched, readers, writers, typed, probe, watch })
    }
}

/// Everything preflight opened and decided.
struct Prepared {
    /// The check stage's connection to the target.
    check: Conn,
    /// INFO of the target.
    target: ServerInfo,
    /// How deadlines are read from the source, on its clock.
    deadlines: Deadlines,
    /// The target's memory at preflight.
    target_memory: Memory,
    /// Where the keys come from.
    keys: Box<dyn Source>,
    /// The stages' connections and the plan.
    conns: Connections,
    /// The copy, as a checkpoint knows it.
    identity: Identity,
    /// Where each lane starts, and the counters of earlier runs.
    resume: Start,
    /// A cluster source's slot map, for the checkpoint.
    slot_map: Option<SlotMap>,
    /// A standalone source's run id, for the checkpoint.
    run_id: Option<String>,
}

/// Preflight: everything that can refuse the run does so before anything is written.
fn prepare(cfg: &CopyConfig) -> Result<Prepared, Fatal> {
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
    let keys = source::open(&cfg.keys, keys_file, scan, cfg.timeouts, cfg.slots())?;
    // A cluster source resumes each primary's scan, on the slot map the checkpoint was made with.
    let (slot_map, run_id) = (keys.slot_map(), keys.run_id().map(String::from));
    let resume = match &cfg.checkpoint {
        Some(path) => {
            checkpoint::start(saved, path, Origin { map: slot_map.as_ref(), run_id: run_id.as_deref() })
        }
        None => Start::fresh(slot_map.as_ref()),
    };
    let conns = Connections::open(cfg, &source, &target, &probed)?;
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
    Ok(Prepared { check, target, deadlines, target_memory, keys, conns, identity, resume, slot_map, run_id })
}

/// What the threads of a run share, made once the run is prepared.
struct Shared<'a> {
    /// The buckets.
    counters: Counters,
    /// The `--rate` bucket and the pause after a batch.
    throttle: Throttle,
    /// `--limit`.
    budget: Option<Budget>,
    /// Batches in flight, for `--checkpoint`.
    ledger: Ledger,
    /// `--mode auto`'s routing state.
    fallback: Fallback,
    /// The run's configuration.
    cfg: &'a CopyConfig,
}

/// Runs the prepared copy to its end and says how it went.
fn run(cfg: &CopyConfig, p: Prepared, stop: &Stop) -> Outcome {
    let plan = &p.conns.plan;
    let shared = Shared {
        counters: Counters::default(),
        throttle: Throttle::new(cfg.rate, cfg.burst, cfg.sleep_after_batch),
        budget: cfg.limit.map(Budget::new),
        ledger: Ledger::new(&p.resume.at),
        fallback: Fallback::new(
            cfg.big_key_bytes.unwrap_or(u64::MAX),
            plan.size_check && cfg.big_key_bytes.is_some(),
            plan.strings,
            !plan.all_typed,
        ),
        cfg,
    };
    let policy = WritePolicy {
        on_conflict: cfg.on_conflict,
        abs_ttl: p.target.version >= (5, 0, 0),
        pxat: p.target.version >= (6, 2, 0),
        deadlines: p.deadlines,
        dry_run: cfg.dry_run,
    };
    let ctx = WriteContext {
        policy,
        throttle: &shared.throttle,
        budget: shared.budget.as_ref(),
        ledger: &shared.ledger,
    };
    let origin = Origin { map: p.slot_map.as_ref(), run_id: p.run_id.as_deref() };
    let start = Instant::now();
    let (fail_tx, fail_rx) = bounded(1024);
    let reporter = Reporter::new(&shared.counters, stop, fail_tx, cfg.max_errors);
    thread::scope(|s| {
        let csv = s.spawn(|| write_errors(fail_rx, &cfg.errors_path, cfg.errors_append, stop));
        let (done_tx, done_rx) = bounded::<()>(0);
        let watchers =
            Watchers { probe: p.conns.probe, watch: p.conns.watch, base: p.target_memory.evicted_keys };
        let evictions = watchers.spawn(s, &shared, done_rx.clone());
        if let Some(path) = &cfg.checkpoint {
            let (counters, ledger, identity, base) =
                (&shared.counters, &shared.ledger, &p.identity, p.resume.base);
            s.spawn(move || checkpoint::keep_saving(path, identity, origin, ledger, counters, base, done_rx));
        }
        let stages = Stages {
            keys: p.keys,
            check: p.check,
            readers: p.conns.readers,
            writers: p.conns.writers,
            typed: p.conns.typed,
            plan: &p.conns.plan,
            batched: p.conns.batched,
            starts: &p.resume.at,
            target: p.target.version,
        };
        for stage in stages.spawn(s, &shared, &ctx, reporter) {
            if stage.join().is_err() {
                stop.fatal("a pipeline stage panicked".into());
            }
        }
        // The watchers end when `done` disconnects; the CSV thread once every stage dropped its reporter.
        drop(done_tx);
        let _ = csv.join();
        if let Some(watcher) = evictions {
            let _ = watcher.join();
        }
    });
    log_the_end(&shared, &p.target_memory);
    Outcome {
        summary: Summary {
            counts: shared.counters.snapshot(),
            elapsed: start.elapsed(),
            dry_run: cfg.dry_run,
            stop: stop.reason(),
            earlier: cfg.checkpoint.as_ref().map(|_| p.resume.base),
        },
        error: stop.error(),
    }
}

/// The threads that watch the run rather than move keys: progress, the `--max-latency` probe, the
/// evictions watch. Each ends when `done` disconnects.
struct Watchers {
    /// `--max-latency`'s probe connections.
    probe: Vec<Conn>,
    /// The evictions watch's connection.
    watch: Option<Conn>,
    /// The target's `evicted_keys` at preflight.
    base: u64,
}

impl Watchers {
    /// Starts them; returns the evictions watch, which the run joins for its last reading.
    fn spawn<'s, 'e>(
        self,
        s: &'s Scope<'s, 'e>,
        shared: &'e Shared<'e>,
        done: Receiver<()>,
    ) -> Option<ScopedJoinHandle<'s, ()>> {
        let cfg = shared.cfg;
        if let Some(interval) = cfg.progress {
            let done = done.clone();
            s.spawn(move || progress::progress(&shared.counters, interval, done, cfg.dry_run));
        }
        if let (false, Some(limit)) = (self.probe.is_empty(), cfg.max_latency) {
            let done = done.clone();
            s.spawn(move || latency::watch(self.probe, &shared.throttle, limit, done));
        }
        let base = self.base;
        self.watch.map(|conn| s.spawn(move || evictions::watch(conn, base, &shared.counters, done)))
    }
}

/// The threads that move keys, and what they are started with.
struct Stages<'p> {
    /// Where the keys come from.
    keys: Box<dyn Source>,
    /// The check stage's connection.
    check: Conn,
    /// One per fetch thread.
    readers: Vec<Conn>,
    /// One per write thread.
    writers: Vec<Conn>,
    /// A pair per typed thread.
    typed: Vec<(Conn, Conn)>,
    /// The plan.
    plan: &'p Plan,
    /// The fetch and write threads run.
    batched: bool,
    /// Where each lane of the source starts.
    starts: &'p [Option<crate::resume::Position>],
    /// The target's version.
    target: (u32, u32, u32),
}

impl Stages<'_> {
    /// Starts every stage: source, check, fetch, write, typed, wired by bounded channels. Each stage
    /// gets its own clone of `reporter`, which is dropped here, so the CSV thread ends with the last
    /// stage.
    fn spawn<'s, 'e>(
        self,
        s: &'s Scope<'s, 'e>,
        shared: &'e Shared<'e>,
        ctx: &'e WriteContext<'e>,
        reporter: Reporter<'e>,
    ) -> Vec<ScopedJoinHandle<'s, ()>>
    where
        Self: 'e,
    {
        let cfg = shared.cfg;
        let Stages { keys, check, readers, writers, typed, plan, batched, starts, target } = self;
        let (ledger, deadlines, throttle) = (&shared.ledger, ctx.policy.deadlines, &shared.throttle);
        let mut stages = Vec::new();
        let (scan_tx, scan_rx) = bounded(2 * cfg.readers);
        let rep = reporter.clone();
        stages.push(s.spawn(move || {
            let rules = Batching { size: cfg.batch, throttle: Some(throttle), slots: cfg.slots() };
            source::run(keys, rules, starts, scan_tx, rep, ledger)
        }));
        let fetch_rx = match cfg.on_conflict {
            OnConflict::Skip => {
                let (tx, rx) = bounded(2 * cfg.readers);
                let rep = reporter.clone();
                stages.push(s.spawn(move || check::run(check, scan_rx, tx, rep, ledger, cfg.dry_run)));
                rx
            }
            OnConflict::Replace => scan_rx,
        };
        let (write_tx, write_rx) = bounded(2 * cfg.writers);
        // The typed threads read the checked keys themselves when every key goes their way; else the
        // fetch and write threads send them the keys they do not move themselves (their senders,
        // dropped when they return, are the only ones: the typed threads end after the writers).
        let (typed_tx, typed_rx) = if !batched {
            (None, fetch_rx.clone())
        } else {
            let (tx, rx) = bounded(2 * typed.len().max(1));
            (plan.typed_threads.then_some(tx), rx)
        };
        let router = || typed_tx.as_ref().map(|tx| Router { tx: tx.clone(), fallback: &shared.fallback });
        for conn in readers {
            let (rx, tx, rep, route) = (fetch_rx.clone(), write_tx.clone(), reporter.clone(), router());
            stages.push(s.spawn(move || fetch::run(conn, deadlines, rx, tx, rep, ledger, route)));
        }
        drop((fetch_rx, write_tx));
        for conn in writers {
            let sink: Box<dyn Sink> = match cfg.dry_run {
                true => Box::new(DryRun { policy: ctx.policy }),
                false => Box::new(Target { conn, policy: ctx.policy, hand_on: typed_tx.is_some() }),
            };
            let (rx, rep, route) = (write_rx.clone(), reporter.clone(), router());
            stages.push(s.spawn(move || write::run(sink, rx, ctx, rep, route)));
        }
        drop((write_rx, typed_tx));
        let servers = typed::Servers { deadlines, target, batch: cfg.batch };
        for (src, dst) in typed {
            let (rx, rep) = (typed_rx.clone(), reporter.clone());
            stages.push(s.spawn(move || typed::run(src, dst, rx, ctx, servers, rep)));
        }
        stages
    }
}

/// What the log says at the end: evictions, cluster redirections, keys that went type-aware.
fn log_the_end(shared: &Shared, target_memory: &Memory) {
    let evicted = shared.counters.evicted.load(Ordering::Relaxed);
    if evicted > 0 {
        log::error!(
            "the target evicted {evicted} keys during the run (maxmemory-policy {}): some may be keys this run \
             copied; run verify, and give the target more memory",
            target_memory.evicting.as_deref().unwrap_or("changed during the run")
        );
    }
    let [moved, ask] = REDIRECTIONS.each_ref().map(|c| c.load(Ordering::Relaxed));
    if moved + ask > 0 {
        log::info!("followed {moved} MOVED and {ask} ASK redirections: cluster slots moved during the copy");
    }
    let (big, dump_refused, restore_refused) = shared.fallback.counts();
    if big + dump_refused + restore_refused > 0 {
        log::info!(
            "type-aware fallback: {big} big keys, {dump_refused} the source would not DUMP, {restore_refused} \
             the target would not RESTORE"
        );
    }
}
