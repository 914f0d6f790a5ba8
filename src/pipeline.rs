//! `copy` from start to end: preflight checks, then the stages wired by bounded channels in one
//! `thread::scope`, then the summary.
//!
//! ```text
//! scan ──Vec<Key>──> check (skip policy) ──Vec<Key>──> fetch ×readers ──Vec<Fetched>──> write ×writers
//!                          \__________________ failures ──> CSV thread ________________/
//!   keys DUMP/RESTORE cannot move (fetch, write) ──Vec<Key>──> typed ×typed-threads
//! ```
//! With `--mode typed` (or when auto decides so up front) the checked keys go straight to the typed
//! threads, and no fetch or write thread is started. A cluster source is scanned by one thread per
//! primary (inside the scan stage); every other connection to a cluster reaches all its primaries.
//! Preflight opens every connection the run will use (so a wrong password or an unreachable host is
//! exit 2 before anything is written), checks the CSV path and opens `--keys-from`. Stages end by
//! draining their input and returning, which drops their senders: shutdown is by disconnection.

use std::thread;
use std::time::Instant;

use crossbeam_channel::bounded;

use crate::checkpoint::{self, Ledger};
use crate::clock::{self, Deadlines};
use crate::config::{
    CopyConfig, Endpoint, KeySource, Mode, OnConflict, DEFAULT_TYPED_THREADS_AUTO,
    DEFAULT_TYPED_THREADS_TYPED,
};
use crate::conn::{Conn, ServerInfo};
use crate::evictions;
use crate::exit::{Exit, Fatal};
use crate::keyfile::{Format, KeysFile};
use crate::preflight::{self, Memory};
use crate::report::{self, Counters, Reporter, Stop, StopReason, Summary};
use crate::stage::scan::{KeyInput, Scan};
use crate::stage::typed::{self, Fallback, Router};
use crate::stage::write::{CopyBudget, WriteShared};
use crate::stage::{check, fetch, scan, write};
use crate::throttle::{self, Throttle};

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

/// Opens one more connection to a side whose kind preflight found: a standalone server, or every
/// primary of a cluster.
pub fn open_like(
    endpoint: &Endpoint,
    info: &ServerInfo,
    cfg_timeouts: crate::config::Timeouts,
) -> Result<Conn, Fatal> {
    let conn = match info.cluster {
        true => Conn::open_cluster(endpoint, cfg_timeouts),
        false => Conn::open(endpoint, cfg_timeouts),
    };
    conn.map_err(|e| Fatal::bad_input(e.to_string()))
}

/// Opens `--keys-from` (`-` is standard input) and checks every line of it; `None` when scanning.
pub fn keys_file(keys: &KeySource) -> Result<Option<KeysFile>, Fatal> {
    match keys {
        KeySource::File(path) => {
            let file = KeysFile::open("--keys-from", path).map_err(Fatal::bad_input)?;
            let what = match file.lines.format() {
                Format::Lines => "one per line",
                Format::Csv { .. } => "the key column of a redis-ferry CSV",
            };
            log::info!("--keys-from {path}: {} keys, {what}", file.keys);
            Ok(Some(file))
        }
        KeySource::Scan { .. } => Ok(None),
    }
}

/// Builds the scanning key input of the scan stage: a SCAN of the server; for a cluster, a SCAN of each primary on a connection of its own (in the order of their addresses, so
/// `--checkpoint` finds each primary's position again), plus `conn` itself to read the slots that move
/// during the scan again. Checks that every server scanned lets us SCAN.
pub fn key_input(
    keys: &KeySource,
    mut conn: Conn,
    timeouts: crate::config::Timeouts,
) -> Result<KeyInput, Fatal> {
    let (patterns, types, count) = match keys {
        KeySource::File(_) => unreachable!("a --keys-from input is opened by keys_file"),
        KeySource::Scan { patterns, types, count } => (patterns, types, *count),
    };
    let scan = |mut node: Conn| {
        let probe: Result<(u64, Vec<Vec<u8>>), _> =
            node.call(redis::cmd("SCAN").arg(0).arg("COUNT").arg(1), || true);
        if let Err(e) = probe {
            let (code, message) = crate::conn::classify(&e);
            let role = node.endpoint().role.name();
            return Err(Fatal::bad_input(format!(
                "the {role} {} refuses SCAN: {code} {message}",
                node.endpoint()
            )));
        }
        let run_id = node.server_info().map(|info| info.run_id).unwrap_or_default();
        Ok(Scan { conn: node, patterns: patterns.clone(), types: types.clone(), count, run_id })
    };
    if !conn.is_cluster() {
        return scan(conn).map(KeyInput::Server);
    }
    let (owners, _) = conn.slot_owners().map_err(|e| Fatal::bad_input(e.to_string()))?;
    let mut nodes = conn.primaries();
    nodes.sort_by_key(|node| node.to_string());
    let primaries = nodes
        .iter()
        .map(|node| {
            let node = Conn::open(node, timeouts).map_err(|e| Fatal::bad_input(e.to_string()))?;
            scan(node.with_retry(conn.retry()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(KeyInput::Cluster { primaries, conn, owners })
}

/// Runs a copy. `stop` is the process-wide flag the Ctrl-C handler raises.
pub fn copy(cfg: &CopyConfig, stop: &Stop) -> Result<Outcome, Fatal> {
    // Preflight: everything that can refuse the run does so before anything is written.
    let keys_file = keys_file(&cfg.keys)?;
    report::check_writable("--errors", &cfg.errors_path).map_err(Fatal::bad_input)?;
    let identity = checkpoint::Identity::of(cfg);
    let saved = match &cfg.checkpoint {
        Some(path) => {
            report::check_replaceable("--checkpoint", path).map_err(Fatal::bad_input)?;
            checkpoint::load(path, &identity).map_err(Fatal::bad_input)?
        }
        None => None,
    };
    let (mut scan_conn, source_info) = preflight::open_checked(&cfg.source, cfg.timeouts)?;
    let (mut check_conn, target_info) = preflight::open_checked(&cfg.target, cfg.timeouts)?;
    preflight::distinct((&scan_conn, &source_info), (&check_conn, &target_info))?;
    preflight::writable(&check_conn, &target_info)?;
    let sides =
        [preflight::describe(&scan_conn, &source_info), preflight::describe(&check_conn, &target_info)];
    let clock = clock::skew(&mut scan_conn, &mut check_conn);
    let deadlines = Deadlines { pexpiretime: source_info.has_pexpiretime(), clock };
    let memory = |conn: &mut Conn, role: &str| {
        Memory::of(conn).map_err(|e| Fatal::bad_input(format!("cannot read INFO from the {role}: {}", e)))
    };
    let target_memory = memory(&mut check_conn, "target")?;
    let everything = matches!(&cfg.keys, KeySource::Scan { patterns, types, .. }
        if types.is_empty() && patterns.iter().all(|p| p == b"*"));
    preflight::room(&memory(&mut scan_conn, "source")?, &target_memory, everything);
    let (scan_conn, check_conn) = (scan_conn.with_retry(cfg.retry), check_conn.with_retry(cfg.retry));
    let input = match keys_file {
        Some(file) => KeyInput::Lines(file),
        None => key_input(&cfg.keys, scan_conn, cfg.timeouts)?,
    };
    // A cluster source resumes each primary's scan, on the slot map the checkpoint was made with.
    let (slot_map, run_id) = (input.slot_map(), input.run_id().map(String::from));
    let origin = checkpoint::Origin { map: slot_map.as_ref(), run_id: run_id.as_deref() };
    let resume = match &cfg.checkpoint {
        Some(path) => checkpoint::start(saved, path, origin),
        None => checkpoint::Start::fresh(slot_map.as_ref()),
    };
    let open = |endpoint: &Endpoint| {
        let info = if endpoint.role == cfg.source.role { &source_info } else { &target_info };
        open_like(endpoint, info, cfg.timeouts).map(|c| c.with_retry(cfg.retry))
    };
    // The typed threads' connections, one to each side per thread; the first pair also probes what
    // the servers refuse, for the plan, which also sets the default number of typed threads.
    let mut typed_conns = Vec::new();
    if cfg.mode != Mode::Dump {
        typed_conns.push((open(&cfg.source)?, open(&cfg.target)?));
    }
    let plan = typed::plan(cfg, typed_conns.first_mut().map(|(s, d)| (s, d)), &source_info, &target_info);
    let typed_threads = match (cfg.mode, cfg.typed_threads) {
        (Mode::Dump, _) => 0,
        (_, Some(n)) => n,
        (_, None) if plan.all_typed => DEFAULT_TYPED_THREADS_TYPED,
        (_, None) => DEFAULT_TYPED_THREADS_AUTO,
    };
    while typed_conns.len() < typed_threads {
        typed_conns.push((open(&cfg.source)?, open(&cfg.target)?));
    }
    typed_conns.truncate(typed_threads);
    if typed_threads > 0 && !cfg.dry_run {
        typed::IN_FLIGHT.aim(&cfg.target, target_info.cluster);
    }
    // The fetch and write threads run unless every key goes type-aware, one by one.
    let batched = !plan.all_typed || plan.strings;
    let (n_readers, n_writers) = if batched { (cfg.readers, cfg.writers) } else { (0, 0) };
    let readers = (0..n_readers).map(|_| open(&cfg.source)).collect::<Result<Vec<_>, _>>()?;
    let writers = (0..n_writers).map(|_| open(&cfg.target)).collect::<Result<Vec<_>, _>>()?;
    // --max-latency's probe PINGs on a connection of its own, with a timeout scaled to the limit.
    let probe = match cfg.max_latency {
        Some(limit) => {
            let timeouts = crate::config::Timeouts { io: throttle::probe_timeout(limit), ..cfg.timeouts };
            Some(Conn::open(&cfg.source, timeouts).map_err(|e| Fatal::bad_input(e.to_string()))?)
        }
        None => None,
    };
    // Evictions on the target are watched on a connection of their own (nothing is written in a dry run).
    let watch = match cfg.dry_run {
        false => Some(open(&cfg.target)?),
        true => None,
    };
    let abs_ttl = target_info.version >= (5, 0, 0);
    log::info!(
        "copying from {} ({}) to {} ({}), mode {:?}: {}{}",
        cfg.source,
        sides[0],
        cfg.target,
        sides[1],
        cfg.mode,
        plan.why,
        if cfg.dry_run { ", dry run: nothing will be written" } else { "" }
    );

    let counters = Counters::default();
    let throttle = Throttle::new(cfg.rate, cfg.burst, cfg.sleep_after_batch);
    let budget = cfg.limit.map(CopyBudget::new);
    let ledger = Ledger::new(&resume.at);
    let fallback = Fallback::new(
        cfg.big_key_bytes.unwrap_or(u64::MAX),
        plan.size_check && cfg.big_key_bytes.is_some(),
        plan.strings,
        !plan.all_typed,
    );
    let shared = WriteShared {
        on_conflict: cfg.on_conflict,
        abs_ttl,
        pxat: target_info.version >= (6, 2, 0),
        deadlines,
        dry_run: cfg.dry_run,
        throttle: &throttle,
        budget: budget.as_ref(),
        ledger: &ledger,
    };
    let start = Instant::now();
    let (fail_tx, fail_rx) = bounded(1024);
    let reporter = Reporter::new(&counters, stop, fail_tx, cfg.max_errors);

    thread::scope(|s| {
        let csv = s.spawn(|| report::write_errors(fail_rx, &cfg.errors_path, cfg.errors_append, stop));
        let (done_tx, done_rx) = bounded::<()>(0);
        if let Some(interval) = cfg.progress {
            let counters = &counters;
            let done_rx = done_rx.clone();
            s.spawn(move || report::progress(counters, interval, done_rx, cfg.dry_run));
        }
        let evictions = watch.map(|conn| {
            let (counters, done_rx) = (&counters, done_rx.clone());
            let base = target_memory.evicted_keys;
            s.spawn(move || evictions::watch(conn, base, counters, done_rx))
        });
        if let (Some(conn), Some(limit)) = (probe, cfg.max_latency) {
            let (throttle, done_rx) = (&throttle, done_rx.clone());
            s.spawn(move || throttle::watch(conn, throttle, limit, done_rx));
        }
        if let Some(path) = &cfg.checkpoint {
            let (counters, ledger, identity) = (&counters, &ledger, &identity);
            s.spawn(move || {
                checkpoint::keep_saving(path, identity, origin, ledger, counters, resume.base, done_rx)
            });
        }

        let mut stages = Vec::new();
        let (scan_tx, scan_rx) = bounded(2 * cfg.readers);
        let rep = reporter.clone();
        let (ledger, throttle, starts) = (&ledger, &throttle, &resume.at);
        stages
            .push(s.spawn(move || scan::run(input, cfg.batch, starts, scan_tx, rep, ledger, Some(throttle))));
        let fetch_rx = if cfg.on_conflict == OnConflict::Skip {
            let (tx, rx) = bounded(2 * cfg.readers);
            let rep = reporter.clone();
            stages.push(s.spawn(move || check::run(check_conn, scan_rx, tx, rep, ledger, cfg.dry_run)));
            rx
        } else {
            drop(check_conn);
            scan_rx
        };
        let (write_tx, write_rx) = bounded(2 * cfg.writers);
        // The typed threads read the checked keys themselves when every key goes their way; else the
        // fetch and write threads send them the keys they do not move themselves (their senders,
        // dropped when they return, are the only ones: the typed threads end after the writers).
        let (typed_tx, typed_rx) = if !batched {
            (None, fetch_rx.clone())
        } else {
            let (tx, rx) = bounded(2 * typed_threads.max(1));
            (plan.typed_threads.then_some(tx), rx)
        };
        let router = || typed_tx.as_ref().map(|tx| Router { tx: tx.clone(), fallback: &fallback });
        for conn in readers {
            let (rx, tx, rep, route) = (fetch_rx.clone(), write_tx.clone(), reporter.clone(), router());
            stages.push(s.spawn(move || fetch::run(conn, deadlines, rx, tx, rep, ledger, route)));
        }
        drop((fetch_rx, write_tx));
        for conn in writers {
            let (rx, rep, shared, route) = (write_rx.clone(), reporter.clone(), &shared, router());
            stages.push(s.spawn(move || write::run(conn, rx, shared, rep, route)));
        }
        drop((write_rx, typed_tx));
        let servers = typed::Servers { deadlines, target: target_info.version, batch: cfg.batch };
        for (src, dst) in typed_conns {
            let (rx, rep, shared) = (typed_rx.clone(), reporter.clone(), &shared);
            stages.push(s.spawn(move || typed::run(src, dst, rx, shared, servers, rep)));
        }
        drop(typed_rx);
        // The CSV thread ends once every stage has dropped its reporter.
        drop(reporter);
        for stage in stages {
            if stage.join().is_err() {
                stop.fatal("a pipeline stage panicked".into());
            }
        }
        drop(done_tx);
        let _ = csv.join();
        if let Some(watcher) = evictions {
            let _ = watcher.join();
        }
    });
    let evicted = counters.evicted.load(std::sync::atomic::Ordering::Relaxed);
    if evicted > 0 {
        log::error!(
            "the target evicted {evicted} keys during the run (maxmemory-policy {}): some may be keys this run \
             copied; run verify, and give the target more memory",
            target_memory.evicting.as_deref().unwrap_or("changed during the run")
        );
    }

    let [moved, ask] =
        crate::conn::REDIRECTIONS.each_ref().map(|c| c.load(std::sync::atomic::Ordering::Relaxed));
    if moved + ask > 0 {
        log::info!("followed {moved} MOVED and {ask} ASK redirections: cluster slots moved during the copy");
    }
    let (big, dump_refused, restore_refused) = fallback.counts();
    if big + dump_refused + restore_refused > 0 {
        log::info!(
            "type-aware fallback: {big} big keys, {dump_refused} the source would not DUMP, {restore_refused} \
             the target would not RESTORE"
        );
    }
    Ok(Outcome {
        summary: Summary {
            counts: counters.snapshot(),
            elapsed: start.elapsed(),
            dry_run: cfg.dry_run,
            stop: stop.reason(),
        },
        error: stop.error(),
    })
}
