//! The guarded cutover: the answer to "may I switch my application now without losing a write?".
//!
//! 1. Writes on the source stop: `CLIENT PAUSE <ms> WRITE` on every primary the run reads (Redis 6.2+; it
//!    also stops expiry and eviction, so the source stops changing, and nothing is written to it). With
//!    `--cutover-pause 0` the operator stopped the writers and nothing is paused.
//! 2. The fence: a PING on each subscriber's connection, whose PONG comes after every event published
//!    before it; once each subscriber has read its PONG, every change made before the pause is dirty.
//!    Every primary paused must be one whose events are heard (a primary that appeared less than a watch
//!    interval ago is not yet).
//! 3. The drain: the follow goes on until no dirty key waits or is in flight, and no event was lost.
//! 4. The verdict, before the pause ends: no key is failing (one that failed and was copied by a later
//!    attempt is not), the target evicted nothing (read from the target
//!    there and then), no gap: safe. The line says how long writes stay paused; the run then ends at once,
//!    so no late event of the old source reaches the new one. Anything else (the pause would end first, a
//!    failure, a gap, a stop) is not safe, and the pause is lifted (`CLIENT UNPAUSE`) so the application
//!    goes on with the source. The servers paused are registered, so that a second Ctrl-C lifts the pause
//!    too ([`unpause_registered`]).

use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::account::{Counters, Stop};
use crate::cron::report::CutoverReport;
use crate::follow::dirty::Dirty;
use crate::follow::subscribe::Hub;
use crate::redis::conn::Conn;
use crate::redis::connect::connect;
use crate::redis::endpoint::{Endpoint, Timeouts};
use crate::redis::memory::Memory;
use crate::redis::reply;
use crate::redis::wire::Wire;

/// With `--cutover-pause 0` (nothing paused), how long the drain may take.
const UNPAUSED_DRAIN: Duration = Duration::from_secs(60);

/// The servers a cutover under way has paused, for a second Ctrl-C to unpause.
static PAUSED: Mutex<Vec<(Endpoint, Timeouts)>> = Mutex::new(Vec::new());

/// Lifts the pause of a cutover that did not finish (a second Ctrl-C); returns how many servers could
/// not be unpaused.
pub fn unpause_registered() -> usize {
    let paused = std::mem::take(&mut *PAUSED.lock().unwrap_or_else(|e| e.into_inner()));
    let mut left = 0;
    for (node, timeouts) in paused {
        let lifted = connect(&node, timeouts)
            .and_then(|mut c| redis::cmd("CLIENT").arg("UNPAUSE").query::<()>(&mut c));
        if let Err(e) = lifted {
            left += 1;
            log::error!(
                "cannot lift the pause of the source {node} (CLIENT UNPAUSE): {e}; it ends by itself"
            );
        }
    }
    left
}

/// What the cutover needs.
pub struct Cutover<'a> {
    /// Connection timeouts.
    pub timeouts: Timeouts,
    /// How long writes are paused; zero: not at all.
    pub pause: Duration,
    /// The dirty set the drain empties.
    pub dirty: &'a Dirty,
    /// The subscribers, for the fence.
    pub hub: &'a Hub,
    /// The run's counters: failures, and what the drain wrote.
    pub counters: &'a Counters,
    /// A connection to the target and its `evicted_keys` at preflight, for the verdict.
    pub target: (Conn, u64),
    /// The run's stop flag: Ctrl-C during the cutover ends it, not safe.
    pub stop: &'a Stop,
}

impl Cutover<'_> {
    /// Runs the four steps on `nodes` (the primaries to pause, or why they could not be read) and says
    /// whether it is safe to switch.
    pub fn run(mut self, nodes: Result<Vec<Endpoint>, String>) -> CutoverReport {
        let nodes = match nodes {
            Ok(nodes) if !nodes.is_empty() => nodes,
            Ok(_) => return unsafe_report("no primary of the source serves the run's slots".into()),
            Err(e) => return unsafe_report(format!("cannot read the source's primaries: {e}")),
        };
        let written = || {
            let c = self.counters.snapshot();
            c.copied + c.deleted + c.failed + c.expired + c.skipped
        };
        let before = written();
        // The pause began after this instant on every server: it ends after `t0 + pause`.
        let t0 = Instant::now();
        let mut paused = Vec::new();
        if !self.pause.is_zero() {
            let ms = self.pause.as_millis().to_string();
            for node in &nodes {
                PAUSED.lock().unwrap_or_else(|e| e.into_inner()).push((node.clone(), self.timeouts));
                let result = connect(node, self.timeouts).and_then(|mut c| {
                    redis::cmd("CLIENT").arg("PAUSE").arg(&ms).arg("WRITE").query::<()>(&mut c).map(|()| c)
                });
                match result {
                    Ok(c) => paused.push(c),
                    Err(e) => {
                        unpause(&mut paused);
                        return unsafe_report(format!(
                            "CLIENT PAUSE {ms} WRITE failed on the source {node} ({}): on Redis before 6.2, or where \
                             CLIENT PAUSE is refused, stop the writers yourself and run the cutover with \
                             --cutover-pause 0",
                            reply::one_line(&e.to_string())
                        ));
                    }
                }
            }
        }
        let (end, margin) = match self.pause.is_zero() {
            true => (t0 + UNPAUSED_DRAIN, Duration::ZERO),
            // Time to print the line, the summary and the report before the pause ends.
            false => {
                (t0 + self.pause, (self.pause / 5).clamp(Duration::from_millis(300), Duration::from_secs(2)))
            }
        };
        let until = end - margin;
        let verdict = self.fence_and_drain(&nodes, until).and_then(|()| self.checks());
        let drained = written() - before;
        let now = Instant::now();
        let verdict = match verdict {
            Ok(()) if now >= until => Err("the pause would end before the verdict could be printed".into()),
            other => other,
        };
        if let Err(why) = verdict {
            unpause(&mut paused);
            return CutoverReport { drained, ..unsafe_report(why) };
        }
        // Safe: the pause stays on (it is the operator's time to switch); a second Ctrl-C leaves it alone.
        PAUSED.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let left = end.saturating_duration_since(now);
        let message = match self.pause.is_zero() {
            true => format!(
                "cutover ready: the target holds every change the source made before the fence ({drained} keys \
                 drained); writes were not paused (--cutover-pause 0): keep the writers stopped and switch them \
                 to the target"
            ),
            false => format!(
                "cutover ready: writes on the source stay paused for {} ms more; {drained} keys drained; the target \
                 holds every write made before the pause: switch the application to the target now",
                left.as_millis()
            ),
        };
        CutoverReport {
            safe: true,
            message,
            paused_ms_left: if self.pause.is_zero() { 0 } else { left.as_millis() as u64 },
            drained,
        }
    }

    /// Steps 2 and 3, by `until`.
    fn fence_and_drain(&self, nodes: &[Endpoint], until: Instant) -> Result<(), String> {
        let gaps = self.dirty.gaps.load(Ordering::Relaxed);
        let lost = || self.dirty.gaps.load(Ordering::Relaxed) != gaps || self.dirty.rescan_due().is_some();
        let fenced = self.hub.fence(until, || self.stop.stop_scanning() || lost());
        let heard = self.hub.heard();
        if let Some(node) = nodes.iter().map(|n| n.to_string()).find(|n| !heard.contains(n)) {
            return Err(format!(
                "the source's primary {node} has no confirmed subscriber yet (it just appeared)"
            ));
        }
        loop {
            if self.stop.stop_scanning() {
                return Err("the run was stopped during the cutover".into());
            }
            if let Some(rescan) = self.dirty.rescan_due() {
                return Err(format!("events were lost during the cutover ({rescan:?}): a re-scan is due"));
            }
            if self.dirty.gaps.load(Ordering::Relaxed) != gaps {
                return Err("a subscriber lost its connection during the cutover".into());
            }
            if !fenced {
                return Err(
                    "the fence did not come back from every subscriber before the pause would end".into()
                );
            }
            let (waiting, in_flight, _) = self.dirty.depth();
            if waiting + in_flight == 0 {
                return Ok(());
            }
            if Instant::now() >= until {
                return Err(format!(
                    "the pause would end before the drain: {waiting} dirty keys still wait and {in_flight} are being \
                     written (a longer --cutover-pause, or a cutover when the follow has less to do)"
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Step 4: no key is failing (a failed key read again and copied is not), and the target evicted
    /// nothing (read from it now).
    fn checks(&mut self) -> Result<(), String> {
        let failing = self.dirty.failing();
        if failing > 0 {
            return Err(format!(
                "{failing} keys are failing (see the error CSV; each is tried again, up to once a minute): the \
                 target lacks them"
            ));
        }
        let (conn, base) = &mut self.target;
        match Memory::of(conn) {
            Ok(m) if m.evicted_keys > *base => {
                Err(format!("the target evicted {} keys during the run", m.evicted_keys - *base))
            }
            Ok(_) => Ok(()),
            Err(e) => Err(format!("cannot read the target's evicted_keys: {e}")),
        }
    }
}

/// Lifts the pause on the servers paused so far.
fn unpause(paused: &mut Vec<Wire>) {
    for mut c in paused.drain(..) {
        if let Err(e) = redis::cmd("CLIENT").arg("UNPAUSE").query::<()>(&mut c) {
            log::warn!("cannot lift the pause (CLIENT UNPAUSE): {e}; it ends by itself");
        }
    }
    PAUSED.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

fn unsafe_report(why: String) -> CutoverReport {
    CutoverReport { safe: false, message: format!("cutover not safe: {why}"), paused_ms_left: 0, drained: 0 }
}
