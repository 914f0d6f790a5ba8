//! `copy --follow`: the copy, then the target kept in step with the source until Ctrl-C or a cutover.
//!
//! Before anything is copied: `notify-keyspace-events` is checked on every primary (`follow/notify.rs`),
//! a subscriber per primary is started and every subscription confirmed, so that every change made
//! from the first key copied on is an event. Then passes, one after the other (a pass drains before
//! the next starts, so no write of one lands after a write of the next):
//! - **copy**: the ordinary copy of every key, with the run's flags; events are recorded meanwhile;
//! - **follow**: the dirty keys, read again and written with REPLACE, or deleted on the target when the
//!   source no longer has them; a key is never in flight twice (`source/follow.rs`);
//! - **re-scan**, after a gap or an overflow (events were lost): the target's keys first (rewritten, or
//!   deleted where the source has none: keys deleted or renamed during the gap), then the source's keys
//!   the target lacks (skip policy), then the follow again with what was recorded meanwhile.
//!
//! The cutover (`cutover.rs`) runs beside a follow pass once asked (SIGUSR1) or once the follow has been
//! caught up for `--cutover-after`. The settings changed by `--enable-notifications` are put back at the
//! end, however the run ends.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::cutover::Cutover;
use super::prepare::{self, Connections, Input};
use super::run::{self, Run, Stages, Then};
use super::Outcome;
use crate::account::progress::Summary;
use crate::account::{Counters, Stop};
use crate::config::follow::FollowConfig;
use crate::config::{CopyConfig, Keys, OnConflict};
use crate::cron::report::{CutoverReport, FollowReport, Report};
use crate::exit::{Exit, Fatal};
use crate::flow::Vanished;
use crate::follow::dirty::{Dirty, Rescan};
use crate::follow::notify::{self, Permission};
use crate::follow::subscribe::{Filter, Hub, Subscribers};
use crate::follow::Phase;
use crate::key::Key;
use crate::redis::conn::Conn;
use crate::redis::endpoint::Endpoint;
use crate::redis::server::ServerInfo;
use crate::resume::checkpoint::Start;
use crate::resume::{Ledger, Position};
use crate::sink::WritePolicy;
use crate::source::follow::FollowKeys;
use crate::source::{self, Source};
use crate::stage::route::Plan;
use crate::{out, preflight};

/// A follow that has been caught up: no dirty key has waited longer than this.
const CAUGHT_UP: Duration = Duration::from_secs(1);

/// How often a follow writes its `--report` while it runs.
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// Runs `copy --follow`: notifications, subscriptions, the passes. The notification settings it changed
/// are put back by `copy::main`, after the summary (so that the run ends within a cutover's pause).
pub fn copy(cfg: &CopyConfig, options: &FollowConfig, stop: &Stop) -> Result<Outcome, Fatal> {
    // First, so that a SIGUSR1 from now on asks for the cutover instead of ending the process.
    let wanted = Arc::new(AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&wanted)) {
        log::warn!("cannot install the SIGUSR1 handler (the cutover then needs --cutover-after): {e}");
    }
    let (mut conn, info) = preflight::open_checked(cfg.source.server(), cfg.timeouts)?;
    if let (false, Some(primary)) = (info.cluster, &info.replica_of) {
        return Err(Fatal::bad_input(format!(
            "--follow needs the server the application writes to: the source {} is a replica (of {primary}); its \
             events lag the primary's, and the cutover would pause the replica, not the writes. Give the primary \
             as SOURCE",
            cfg.source
        )));
    }
    let (nodes, _) = conn.primaries_serving(cfg.slots()).map_err(Fatal::from)?;
    let may = Permission { enable: options.enable_notifications, vouched: options.notifications_configured };
    notify::prepare(&nodes, cfg.timeouts, may)?;
    follow(cfg, options, stop, (conn, info), nodes, wanted)
}

/// The follow proper, once notifications are on.
fn follow(
    cfg: &CopyConfig,
    options: &FollowConfig,
    stop: &Stop,
    (conn, info): (Conn, ServerInfo),
    nodes: Vec<Endpoint>,
    wanted: Arc<AtomicBool>,
) -> Result<Outcome, Fatal> {
    let p = prepare::prepare(cfg)?;
    let dirty = Dirty::new(options.queue);
    let patterns = match &cfg.keys {
        Keys::Scan { patterns, .. } => patterns.clone(),
        Keys::File(_) => unreachable!("--keys-from is refused with --follow"),
    };
    let filter = Filter { patterns, slots: cfg.slots().cloned() };
    let hub = Hub::default();
    let db = if info.cluster { 0 } else { cfg.source.server().db };
    thread::scope(|s| {
        let may =
            Permission { enable: options.enable_notifications, vouched: options.notifications_configured };
        let subscribers =
            Subscribers { dirty: &dirty, filter: &filter, hub: &hub, stop, db, timeouts: cfg.timeouts, may };
        let count = nodes.len();
        subscribers.spawn(s, nodes, info.cluster.then_some(conn), cfg.slots().cloned());
        if let Err((message, transient)) =
            hub.wait_confirmed(cfg.timeouts.connect * 2 + Duration::from_secs(5))
        {
            hub.finish();
            return Err(if transient { Fatal::unreachable(message) } else { Fatal::bad_input(message) });
        }
        log::info!(
            "subscribed to keyspace events (__keyevent@{db}__:*) on {count} primaries: every change from now on \
             is followed"
        );
        let f = Follow {
            cfg,
            options,
            dirty: &dirty,
            hub: &hub,
            source: p.source.clone(),
            target: p.target.clone(),
            evicted_base: p.target_memory.evicted_keys,
            plan: p.conns.plan.clone(),
            phase: AtomicU8::new(Phase::Copying as u8),
            rescans: AtomicU64::new(0),
            over: AtomicBool::new(false),
            wanted,
            cutover: Mutex::new(None),
            rates: Mutex::new((0.0, 0.0)),
            start: SystemTime::now(),
            started: Instant::now(),
        };
        let mut summary = run::run(cfg, p, stop, Some(&f));
        hub.finish();
        let report = f.report(false);
        if let Some(why) = dirty.rescan_due() {
            log::warn!(
                "the follow stopped with a re-scan due ({why:?}): events were lost, so the target is not in step \
                 with the source; start the follow again"
            );
        } else if report.dirty + report.in_flight > 0 {
            log::warn!(
                "the follow stopped with dirty keys not yet copied again: the target is behind the source"
            );
        }
        summary.extra = pairs(summary.counts.deleted, &report);
        Ok(Outcome { summary, error: stop.error(), follow: Some(report) })
    })
}

/// A follow under way: what its passes, its watch and the cutover share.
struct Follow<'a> {
    /// The run's configuration.
    cfg: &'a CopyConfig,
    /// The follow's own.
    options: &'a FollowConfig,
    /// The dirty keys.
    dirty: &'a Dirty,
    /// The subscribers.
    hub: &'a Hub,
    /// INFO of the source, for the connections of later passes.
    source: ServerInfo,
    /// INFO of the target.
    target: ServerInfo,
    /// The target's `evicted_keys` at preflight, for the cutover's verdict.
    evicted_base: u64,
    /// The first pass's plan, which every later pass follows.
    plan: Plan,
    /// A [`Phase`] as u8.
    phase: AtomicU8,
    /// Re-scans run.
    rescans: AtomicU64,
    /// The follow is over (after the cutover): sources return, no pass starts.
    over: AtomicBool,
    /// SIGUSR1 asked for the cutover.
    wanted: Arc<AtomicBool>,
    /// The cutover's report, once it ran.
    cutover: Mutex<Option<CutoverReport>>,
    /// Events and keys per second, over the last second.
    rates: Mutex<(f64, f64)>,
    /// When the follow started, for the report.
    start: SystemTime,
    /// The same, for the report's seconds.
    started: Instant,
}

impl Then for Follow<'_> {
    fn passes(&self, run: &Run) {
        while !run.stop.stop_scanning() && !self.over.load(Ordering::SeqCst) {
            match self.dirty.rescan_due() {
                Some(why) => self.rescan(run, why),
                None => self.follow_pass(run),
            }
        }
    }

    fn progress(&self) -> String {
        let r = self.report(true);
        format!(
            " phase={} dirty={} in_flight={} oldest_ms={} events={} events_per_sec={:.0} gaps={} overflows={} rescans={}",
            r.phase, r.dirty, r.in_flight, r.oldest_dirty_ms, r.events, r.events_per_sec, r.gaps, r.overflows, r.rescans
        )
    }

    fn metrics(&self) -> String {
        let r = self.report(true);
        let mut out = String::from(
            "# HELP redis_ferry_follow_phase The phase the follow is in (1 for the current one).\n",
        );
        out.push_str("# TYPE redis_ferry_follow_phase gauge\n");
        for phase in Phase::ALL {
            let on = u8::from(phase.name() == r.phase);
            out.push_str(&format!("redis_ferry_follow_phase{{phase=\"{}\"}} {on}\n", phase.name()));
        }
        let figures: [(&str, &str, &str, String); 8] = [
            ("dirty_keys", "gauge", "Dirty keys waiting to be copied again.", r.dirty.to_string()),
            ("dirty_in_flight", "gauge", "Dirty keys being copied now.", r.in_flight.to_string()),
            (
                "dirty_oldest_seconds",
                "gauge",
                "Age of the oldest waiting dirty key (the lag).",
                format!("{:.3}", r.oldest_dirty_ms as f64 / 1000.0),
            ),
            ("events_total", "counter", "Keyspace events received.", r.events.to_string()),
            ("events_per_second", "gauge", "Keyspace events per second.", format!("{:.1}", r.events_per_sec)),
            ("follow_gaps_total", "counter", "Gaps in the event stream.", r.gaps.to_string()),
            ("follow_overflows_total", "counter", "Times the dirty set was full.", r.overflows.to_string()),
            ("follow_rescans_total", "counter", "Re-scans run.", r.rescans.to_string()),
        ];
        for (name, kind, help, value) in figures {
            out.push_str(&format!("# HELP redis_ferry_{name} {help}\n# TYPE redis_ferry_{name} {kind}\nredis_ferry_{name} {value}\n"));
        }
        out
    }

    fn failed(&self, key: &Key) {
        self.dirty.failed(key);
    }

    fn watch(&self, counters: &Counters, done: Receiver<()>) {
        let done_keys = |c: crate::account::Snapshot| c.copied + c.skipped + c.expired + c.failed + c.deleted;
        let mut last =
            (Instant::now(), self.dirty.events.load(Ordering::Relaxed), done_keys(counters.snapshot()));
        let mut reported = Instant::now();
        let mut target = TargetWatch::default();
        target.look(self);
        loop {
            match done.recv_timeout(Duration::from_secs(1)) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            target.look(self);
            let (now, events, keys) =
                (Instant::now(), self.dirty.events.load(Ordering::Relaxed), done_keys(counters.snapshot()));
            let secs = now.duration_since(last.0).as_secs_f64().max(1e-3);
            *self.rates.lock().unwrap_or_else(|e| e.into_inner()) =
                ((events - last.1) as f64 / secs, (keys.saturating_sub(last.2)) as f64 / secs);
            last = (now, events, keys);
            if let (Some(path), true) = (&self.cfg.report, reported.elapsed() >= REPORT_EVERY) {
                reported = now;
                let figures = self.report(true);
                let summary = self.summary_so_far(counters, &figures);
                let mut report = Report::new(self.cfg, self.start, Some(&summary), Exit::Ok, None);
                report.follow = Some(figures);
                if let Err(e) = report.write(path) {
                    log::warn!("{e}");
                }
            }
        }
    }
}

/// The target's run ids, read every second: a target that restarted (and may have lost what it held)
/// or failed over is a gap, and a re-scan writes again what it lacks.
#[derive(Default)]
struct TargetWatch {
    /// Its own connection, made again after a break.
    conn: Option<Conn>,
    /// The run id of each primary, as last read.
    ids: Option<Vec<String>>,
}

impl TargetWatch {
    fn look(&mut self, f: &Follow) {
        if self.conn.is_none() {
            self.conn = preflight::open_like(&f.cfg.target, &f.target, f.cfg.timeouts).ok();
        }
        let Some(conn) = self.conn.as_mut() else { return };
        let infos = match conn.on_each::<String>(redis::cmd("INFO").arg("server")) {
            Ok(infos) => infos,
            Err(_) => {
                self.conn = None;
                return;
            }
        };
        let mut ids: Vec<String> = infos
            .iter()
            .filter_map(|i| i.lines().find_map(|l| l.strip_prefix("run_id:")).map(|s| s.trim().to_string()))
            .collect();
        ids.sort();
        match &self.ids {
            Some(old) if *old != ids => {
                f.dirty.gap(format!("the target {} restarted or failed over (run_id changed)", f.cfg.target))
            }
            _ => {}
        }
        self.ids = Some(ids);
    }
}

impl Follow<'_> {
    fn set(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::SeqCst);
    }

    /// A follow pass: the dirty keys until a re-scan is due, the run stops, or the cutover ends it.
    fn follow_pass(&self, run: &Run) {
        self.set(Phase::Following);
        let starts = vec![Some(Position::default())];
        let ledger = Ledger::new(&starts);
        let keys = FollowKeys { dirty: self.dirty, ledger: &ledger, batch: self.cfg.batch, over: &self.over };
        let Some(stages) = self.stages(run, Box::new(keys), None, starts) else { return };
        let policy =
            WritePolicy { on_conflict: OnConflict::Replace, vanished: Vanished::Deleted, ..run.policy };
        let pass_over = AtomicBool::new(false);
        thread::scope(|s| {
            s.spawn(|| self.await_cutover(run, &pass_over));
            run.pass(stages, &ledger, policy);
            pass_over.store(true, Ordering::SeqCst);
        });
        // Every batch of the pass was answered: its keys may be taken again.
        self.dirty.release_all();
    }

    /// Beside a follow pass: runs the cutover once it is asked for and the follow is caught up, prints its
    /// line and ends the follow.
    fn await_cutover(&self, run: &Run, pass_over: &AtomicBool) {
        let mut caught_up: Option<Instant> = None;
        while !pass_over.load(Ordering::SeqCst)
            && !run.stop.stop_scanning()
            && !self.over.load(Ordering::SeqCst)
        {
            let (_, _, oldest) = self.dirty.depth();
            caught_up = if oldest < CAUGHT_UP { caught_up.or(Some(Instant::now())) } else { None };
            let due = match (caught_up, self.options.cutover_after) {
                (None, _) => false,
                (Some(_), _) if self.wanted.load(Ordering::SeqCst) => true,
                (Some(since), Some(after)) => since.elapsed() >= after,
                (Some(_), None) => false,
            };
            if due {
                self.wanted.store(false, Ordering::SeqCst);
                self.set(Phase::Cutover);
                log::info!(
                    "cutover: pausing writes on the source, fencing the events, draining the dirty keys"
                );
                let Some(mut conn) = self.open(self.cfg.source.server(), &self.source, run) else { return };
                let Some(target) = self.open(&self.cfg.target, &self.target, run) else { return };
                let nodes =
                    conn.primaries_serving(self.cfg.slots()).map(|(n, _)| n).map_err(|e| e.to_string());
                let cutover = Cutover {
                    timeouts: self.cfg.timeouts,
                    pause: self.options.cutover_pause,
                    dirty: self.dirty,
                    hub: self.hub,
                    counters: &run.shared.counters,
                    target: (target, self.evicted_base),
                    stop: run.stop,
                };
                let report = cutover.run(nodes);
                match report.safe {
                    true => log::info!("{}", report.message),
                    false => log::error!("{}", report.message),
                }
                let _ = out::results(&report.message, Exit::Ok);
                *self.cutover.lock().unwrap_or_else(|e| e.into_inner()) = Some(report);
                self.over.store(true, Ordering::SeqCst);
                return;
            }
            run.stop.sleep(Duration::from_millis(50), |_| pass_over.load(Ordering::SeqCst));
        }
    }

    /// A re-scan: the target's keys read again (rewritten, or deleted where the source has none), then the
    /// source's keys the target lacks.
    fn rescan(&self, run: &Run, why: Rescan) {
        self.set(Phase::Rescan);
        let n = self.rescans.fetch_add(1, Ordering::SeqCst) + 1;
        let why = match why {
            Rescan::Overflow => "the dirty set overflowed".to_string(),
            Rescan::Gap(why) => why,
        };
        log::warn!(
            "re-scan {n} ({why}): the target's keys are read again from the source (rewritten, or deleted where it \
             has none), then the source's keys the target lacks are copied"
        );
        self.dirty.start_rescan();
        let cfg = self.cfg;
        let Some(scan) = self.open(&cfg.target, &self.target, run) else { return };
        let replace =
            WritePolicy { on_conflict: OnConflict::Replace, vanished: Vanished::Deleted, ..run.policy };
        self.scan_pass(run, scan, None, replace);
        if run.stop.stop_scanning() {
            return;
        }
        let (Some(scan), Some(check)) =
            (self.open(cfg.source.server(), &self.source, run), self.open(&cfg.target, &self.target, run))
        else {
            return;
        };
        let skip = WritePolicy { on_conflict: OnConflict::Skip, vanished: Vanished::Expired, ..run.policy };
        self.scan_pass(run, scan, Some(check), skip);
    }

    /// One pass over the keys a SCAN of `scan`'s server finds (the run's `--match` and slots).
    fn scan_pass(&self, run: &Run, scan: Conn, check: Option<Conn>, policy: WritePolicy) {
        let keys = match source::open(&self.cfg.keys, None, scan, self.cfg.timeouts, self.cfg.slots()) {
            Ok(keys) => keys,
            Err(e) => return run.stop.fatal(format!("re-scan: {}", e.message)),
        };
        let starts = Start::fresh(keys.slot_map().as_ref()).at;
        let ledger = Ledger::new(&starts);
        if let Some(stages) = self.stages(run, keys, check, starts) {
            run.pass(stages, &ledger, policy);
        }
    }

    /// The stages of a later pass, on connections of their own.
    fn stages<'k>(
        &self,
        run: &Run,
        keys: Box<dyn Source + 'k>,
        check: Option<Conn>,
        starts: Vec<Option<Position>>,
    ) -> Option<Stages<'k>> {
        match Connections::open(self.cfg, &self.source, &self.target, &[], Some(&self.plan)) {
            Ok(conns) => Some(Stages { keys: Input::Keys(keys), check, conns, starts, target: run.target }),
            Err(e) => {
                run.stop.fatal(format!("cannot open the connections of the next pass: {}", e.message));
                None
            }
        }
    }

    /// A connection to one side, like preflight's; a failure aborts the run.
    fn open(&self, endpoint: &Endpoint, info: &ServerInfo, run: &Run) -> Option<Conn> {
        match preflight::open_like(endpoint, info, self.cfg.timeouts) {
            Ok(conn) => Some(conn.with_retry(self.cfg.retry)),
            Err(e) => {
                run.stop.fatal(e.message);
                None
            }
        }
    }

    /// The follow's figures.
    fn report(&self, running: bool) -> FollowReport {
        let (dirty, in_flight, oldest) = self.dirty.depth();
        let (events_per_sec, keys_per_sec) = *self.rates.lock().unwrap_or_else(|e| e.into_inner());
        FollowReport {
            running,
            phase: Phase::from_u8(self.phase.load(Ordering::SeqCst)).name(),
            dirty: dirty as u64,
            in_flight: in_flight as u64,
            oldest_dirty_ms: oldest.as_millis() as u64,
            events: self.dirty.events.load(Ordering::Relaxed),
            events_per_sec: events_per_sec.round(),
            keys_per_sec: keys_per_sec.round(),
            gaps: self.dirty.gaps.load(Ordering::Relaxed),
            overflows: self.dirty.overflows.load(Ordering::Relaxed),
            rescans: self.rescans.load(Ordering::SeqCst),
            rescan_due: self.dirty.rescan_due().is_some(),
            failing: self.dirty.failing() as u64,
            cutover: self.cutover.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }

    /// The summary as it stands, for a report written on the way.
    fn summary_so_far(&self, counters: &Counters, report: &FollowReport) -> Summary {
        let counts = counters.snapshot();
        Summary {
            counts,
            elapsed: self.started.elapsed(),
            dry_run: false,
            stop: crate::account::StopReason::None,
            earlier: None,
            extra: pairs(counts.deleted, report),
        }
    }
}

/// The pairs the summary line adds for a follow: `deleted` (of the counters) and the follow's figures.
fn pairs(deleted: u64, r: &FollowReport) -> String {
    let cutover = match &r.cutover {
        None => "none",
        Some(c) if c.safe => "ready",
        Some(_) => "unsafe",
    };
    format!(
        " deleted={deleted} events={} dirty={} failing={} gaps={} overflows={} rescans={} rescan_due={} cutover={cutover}",
        r.events,
        r.dirty + r.in_flight,
        r.failing,
        r.gaps,
        r.overflows,
        r.rescans,
        u8::from(r.rescan_due),
    )
}
