//! A prepared copy's threads: what lives for the whole run ([`Shared`], the CSV thread, the watchers:
//! progress, `--max-latency`, evictions, `--metrics`), and its passes. A pass is the stages wired by
//! bounded channels over one source of keys, in a `thread::scope` of its own: it is over when every
//! stage has drained and returned. A copy is one pass; a follow ([`Then`]) runs more after it, each with
//! its own source, policy and connections, one after the other, so that no write of a pass can land
//! after a write of the next.

use std::sync::atomic::Ordering;
use std::thread::{self, Scope, ScopedJoinHandle};
use std::time::Instant;

use crossbeam_channel::{bounded, Receiver};

use super::prepare::{Connections, FileStage, Input, Prepared};
use crate::account::csv::write_errors;
use crate::account::progress::{self, Show, Summary};
use crate::account::{evictions, metrics, Counters, Reporter, Stop};
use crate::config::{CopyConfig, OnConflict};
use crate::flow::Vanished;
use crate::key::Key;
use crate::rdb::payload;
use crate::redis::conn::{Conn, REDIRECTIONS};
use crate::redis::memory::Memory;
use crate::redis::server::rdb_version;
use crate::resume::checkpoint::{self, Origin};
use crate::resume::{Ledger, Position};
use crate::sink::budget::Budget;
use crate::sink::dry_run::DryRun;
use crate::sink::target::Target;
use crate::sink::{Sink, WriteContext, WritePolicy};
use crate::source::{self, backup, Batcher, Batching};
use crate::stage::route::{ByValue, Fallback, Router};
use crate::stage::{check, fetch, typed, write};
use crate::throttle::{latency, Throttle};

/// How a run goes on after its first pass: a follow's passes, and the figures it adds to progress
/// lines and metrics.
pub trait Then: Sync {
    /// Runs the passes after the first, until the follow is over or the run stops.
    fn passes(&self, run: &Run);
    /// What a progress line adds (` phase=following dirty=…`).
    fn progress(&self) -> String;
    /// Prometheus lines of its own.
    fn metrics(&self) -> String;
    /// Watches the run beside its passes (rates, reports on the way) until `done` disconnects.
    fn watch(&self, counters: &Counters, done: Receiver<()>);
    /// A key failed (a CSV row), in any pass: a follow reads it again later.
    fn failed(&self, key: &Key);
}

/// What the threads of a run share, for all its passes.
pub struct Shared<'a> {
    /// The buckets.
    pub counters: Counters,
    /// The `--rate` bucket and the pause after a batch.
    pub throttle: Throttle,
    /// `--limit`.
    pub budget: Option<Budget>,
    /// `--mode auto`'s routing state.
    pub fallback: Fallback,
    /// The run's configuration.
    pub cfg: &'a CopyConfig,
}

/// A run under way, as its passes see it.
pub struct Run<'e> {
    /// What every pass shares.
    pub shared: &'e Shared<'e>,
    /// The first pass's write policy (the run's flags), for the passes to vary.
    pub policy: WritePolicy,
    /// The target's version.
    pub target: (u32, u32, u32),
    /// The stop flag.
    pub stop: &'e Stop,
    /// Each pass's stages get a clone; dropped with the run, which ends the CSV thread.
    reporter: Reporter<'e>,
}

impl Run<'_> {
    /// Runs one pass of `stages` with `policy`, its batches opened in `ledger`, until every stage returned.
    pub fn pass(&self, stages: Stages, ledger: &Ledger, policy: WritePolicy) {
        let shared = self.shared;
        let ctx = WriteContext { policy, throttle: &shared.throttle, budget: shared.budget.as_ref(), ledger };
        thread::scope(|s| {
            for stage in stages.spawn(s, shared, &ctx, self.reporter.clone()) {
                if stage.join().is_err() {
                    self.stop.fatal("a pipeline stage panicked".into());
                }
            }
        });
    }
}

/// Runs the prepared copy (and what `then` adds) to its end and says how it went.
pub fn run(cfg: &CopyConfig, mut p: Prepared, stop: &Stop, then: Option<&dyn Then>) -> Summary {
    let plan = &p.conns.plan;
    let shared = Shared {
        counters: Counters::default(),
        throttle: Throttle::new(cfg.rate, cfg.burst, cfg.sleep_after_batch),
        budget: cfg.limit.map(Budget::new),
        fallback: Fallback::new(
            cfg.big_key_bytes.unwrap_or(u64::MAX),
            plan.size_check && cfg.big_key_bytes.is_some(),
            plan.strings,
            !plan.all_typed,
            // When every key goes type-aware (no DUMP/RESTORE), small aggregates go in batches too, rather than
            // one by one through the typed threads, each written as one MULTI/EXEC. With DUMP/RESTORE at hand
            // (auto), small lists, sets and hashes are read by value, which costs the source less than their
            // DUMP, and RESTOREd from payloads made of their elements; sorted sets and streams cost it less
            // by DUMP and keep it (docs/modes.md).
            (plan.strings && (plan.all_typed || plan.aggregates())).then_some(ByValue {
                target: p.target.version,
                hashes: p.source.version < (7, 4, 0),
                zsets: plan.all_typed,
                // XINFO STREAM FULL gives entries-added and max-deleted-entry-id from 7.0 on.
                streams: plan.all_typed && p.source.version >= (7, 0, 0),
                restore: (!plan.all_typed).then(|| {
                    rdb_version(p.target.version).map_or(payload::STAMP, |v| payload::STAMP.min(v as u16))
                }),
            }),
        ),
        cfg,
    };
    let policy = WritePolicy {
        on_conflict: cfg.on_conflict,
        abs_ttl: p.target.version >= (5, 0, 0),
        pxat: p.target.version >= (6, 2, 0),
        deadlines: p.deadlines,
        dry_run: cfg.dry_run,
        vanished: Vanished::Expired,
    };
    let ledger = Ledger::new(&p.resume.at);
    let origin = Origin { map: p.slot_map.as_ref(), run_id: p.run_id.as_deref() };
    let start = Instant::now();
    let (fail_tx, fail_rx) = bounded(1024);
    let retry = |key: &Key| then.iter().for_each(|t| t.failed(key));
    let reporter = Reporter::new(&shared.counters, stop, fail_tx, cfg.max_errors);
    let reporter = if then.is_some() { reporter.on_fail(&retry) } else { reporter };
    thread::scope(|s| {
        let csv = s.spawn(|| write_errors(fail_rx, &cfg.errors_path, cfg.errors_append, stop));
        let (done_tx, done_rx) = bounded::<()>(0);
        let watchers = Watchers {
            probe: std::mem::take(&mut p.conns.probe),
            watch: p.conns.watch.take(),
            base: p.target_memory.evicted_keys,
            metrics: p.metrics.take(),
            estimate: p.estimate,
        };
        let evictions = watchers.spawn(s, &shared, then, done_rx.clone());
        if let Some(path) = &cfg.checkpoint {
            let (counters, ledger, identity, base) = (&shared.counters, &ledger, &p.identity, p.resume.base);
            s.spawn(move || checkpoint::keep_saving(path, identity, origin, ledger, counters, base, done_rx));
        }
        let target = p.target.version;
        let first = Stages {
            keys: p.keys,
            check: Some(p.check),
            conns: p.conns,
            starts: p.resume.at.clone(),
            target,
        };
        let run = Run { shared: &shared, policy, target, stop, reporter };
        run.pass(first, &ledger, policy);
        if let Some(then) = then {
            if !stop.stop_scanning() {
                then.passes(&run);
            }
        }
        // The watchers end when `done` disconnects; the CSV thread once every reporter is dropped.
        drop((run, done_tx));
        let _ = csv.join();
        if let Some(watcher) = evictions {
            let _ = watcher.join();
        }
    });
    log_the_end(&shared, &p.target_memory);
    Summary {
        counts: shared.counters.snapshot(),
        elapsed: start.elapsed(),
        dry_run: cfg.dry_run,
        stop: stop.reason(),
        earlier: cfg.checkpoint.as_ref().map(|_| p.resume.base),
        extra: String::new(),
    }
}

/// The threads that watch the run rather than move keys: progress, the `--max-latency` probe, the
/// evictions watch, `--metrics`. Each ends when `done` disconnects.
struct Watchers {
    /// `--max-latency`'s probe connections.
    probe: Vec<Conn>,
    /// The evictions watch's connection.
    watch: Option<Conn>,
    /// The target's `evicted_keys` at preflight.
    base: u64,
    /// `--metrics`: the bound listener.
    metrics: Option<metrics::Listener>,
    /// The keys expected, for the progress bar.
    estimate: Option<u64>,
}

impl Watchers {
    /// Starts them; returns the evictions watch, which the run joins for its last reading.
    fn spawn<'s, 'e>(
        self,
        s: &'s Scope<'s, 'e>,
        shared: &'e Shared<'e>,
        then: Option<&'e dyn Then>,
        done: Receiver<()>,
    ) -> Option<ScopedJoinHandle<'s, ()>> {
        let cfg = shared.cfg;
        if let Some(interval) = cfg.progress {
            let (done, total) = (done.clone(), self.estimate);
            s.spawn(move || {
                let extra = move || then.map_or(String::new(), |t| t.progress());
                let show =
                    Show { interval, style: cfg.progress_style, total, dry_run: cfg.dry_run, extra: &extra };
                progress::progress(&shared.counters, show, done)
            });
        }
        if let (false, Some(limit)) = (self.probe.is_empty(), cfg.max_latency) {
            let done = done.clone();
            s.spawn(move || latency::watch(self.probe, &shared.throttle, limit, done));
        }
        if let Some(listener) = self.metrics {
            let done = done.clone();
            let body = move || {
                let own = then.map_or(String::new(), |t| t.metrics());
                metrics::copy_text(&shared.counters.snapshot(), &own)
            };
            s.spawn(move || listener.serve(&body, done));
        }
        if let Some(then) = then {
            let done = done.clone();
            s.spawn(move || then.watch(&shared.counters, done));
        }
        let base = self.base;
        self.watch.map(|conn| s.spawn(move || evictions::watch(conn, base, &shared.counters, done)))
    }
}

/// The threads that move keys in one pass, and what they are started with.
pub struct Stages<'k> {
    /// Where the keys come from.
    pub keys: Input<'k>,
    /// The check stage's connection (used under `skip`).
    pub check: Option<Conn>,
    /// The stages' connections and the plan.
    pub conns: Connections,
    /// Where each lane of the source starts.
    pub starts: Vec<Option<Position>>,
    /// The target's version.
    pub target: (u32, u32, u32),
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
        let Stages { keys, check, conns, starts, target } = self;
        let Connections { plan, batched, readers, writers, typed, .. } = conns;
        let (ledger, deadlines, throttle) = (ctx.ledger, ctx.policy.deadlines, &shared.throttle);
        let vanished = ctx.policy.vanished;
        let mut stages = Vec::new();
        let (write_tx, write_rx) = bounded(2 * cfg.writers);
        let rules = Batching { size: cfg.batch, throttle: Some(throttle), slots: cfg.slots() };
        let keys = match keys {
            Input::Keys(keys) => keys,
            Input::File(file) => {
                let rep = reporter.clone();
                let tx = write_tx.clone();
                stages.push(s.spawn(move || {
                    let FileStage { reader, filter, how, big, backup } = *file;
                    let writer = big.map(|conn| typed::Writer::new(conn, ctx, &rep, cfg.batch));
                    let keys =
                        backup::FileKeys { reader, filter, how, writer, ctx, backup: &backup, paged: 0 };
                    let mut batcher = Batcher::new(rules, 0, Position::default(), tx, &rep, ledger);
                    match keys.feed(&mut batcher, &rep) {
                        // The keys read whole before the error are written.
                        Err(e) => {
                            batcher.flush();
                            rep.stop.incomplete(e.message);
                        }
                        Ok(()) if !rep.stop.stop_scanning() => {
                            batcher.flush();
                            ledger.finish();
                        }
                        Ok(()) => {}
                    }
                }));
                drop(write_tx);
                for conn in writers {
                    let sink: Box<dyn Sink> = match cfg.dry_run {
                        true => Box::new(DryRun { policy: ctx.policy, check: Some(conn) }),
                        false => Box::new(Target { conn, policy: ctx.policy, hand_on: false }),
                    };
                    let (rx, rep) = (write_rx.clone(), reporter.clone());
                    stages.push(s.spawn(move || write::run(sink, rx, ctx, rep, None)));
                }
                return stages;
            }
        };
        let (scan_tx, scan_rx) = bounded(2 * cfg.readers);
        let rep = reporter.clone();
        stages.push(s.spawn(move || source::run(keys, rules, &starts, scan_tx, rep, ledger)));
        let fetch_rx = match (ctx.policy.on_conflict, check) {
            (OnConflict::Skip, Some(check)) => {
                let (tx, rx) = bounded(2 * cfg.readers);
                let rep = reporter.clone();
                stages.push(s.spawn(move || check::run(check, scan_rx, tx, rep, ledger, cfg.dry_run)));
                rx
            }
            _ => scan_rx,
        };
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
            stages.push(s.spawn(move || fetch::run(conn, deadlines, vanished, rx, tx, rep, ledger, route)));
        }
        drop((fetch_rx, write_tx));
        for conn in writers {
            let sink: Box<dyn Sink> = match cfg.dry_run {
                true => Box::new(DryRun { policy: ctx.policy, check: None }),
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
