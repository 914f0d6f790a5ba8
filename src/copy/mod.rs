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

mod backup;
mod cutover;
mod follow;
mod prepare;
mod run;

pub use cutover::unpause_registered;

use std::time::SystemTime;

use crate::account::progress::Summary;
use crate::account::{Stop, StopReason};
use crate::config::CopyConfig;
use crate::cron::lock::RunLock;
use crate::cron::report::{self, FollowReport, Report};
use crate::exit::{Exit, Fatal};
use crate::{files, out};

/// How a copy that started ended.
pub struct Outcome {
    /// The counters and timing.
    pub summary: Summary,
    /// The first fatal error met after the start (exit 3), if any.
    pub error: Option<String>,
    /// A follow's figures, with its cutover.
    pub follow: Option<FollowReport>,
}

impl Outcome {
    /// The exit code for this outcome.
    pub fn exit(&self) -> Exit {
        match self.summary.stop {
            StopReason::Aborted => Exit::Aborted,
            _ if self.error.is_some() => Exit::Aborted,
            StopReason::Interrupted => Exit::Interrupted,
            _ if self.follow.as_ref().and_then(|f| f.cutover.as_ref()).is_some_and(|c| !c.safe) => {
                Exit::CutoverUnsafe
            }
            // A safe cutover found every failed key copied again since, and nothing evicted.
            _ if self.follow.as_ref().and_then(|f| f.cutover.as_ref()).is_some() => Exit::Ok,
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
    // `--enable-notifications`' settings are put back last (after the summary, within a cutover's pause),
    // also when the run panics.
    let _restore = RestoreNotifications;
    let (exit, summary, error, follow) = match copy(cfg, stop) {
        Err(e) => (fail(e.exit, &e.message), None, Some(e.message), None),
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
            (exit, Some(outcome.summary), outcome.error, outcome.follow)
        }
    };
    if let Some(path) = &cfg.report {
        let mut report = Report::new(cfg, start, summary.as_ref(), exit, error.as_deref());
        report.follow = follow;
        if let Err(e) = report.write(path) {
            // The copy's exit code stands: it says what happened to the keys.
            out::error(&e);
        }
    }
    exit
}

/// How long a second Ctrl-C waits for the temporary keys of the type-aware copy to be deleted.
const FAST_EXIT_CLEANUP: std::time::Duration = std::time::Duration::from_secs(3);

/// What a second Ctrl-C undoes before the process quits, each within a bounded time: the type-aware
/// copy's temporary keys, a cutover's pause of the source, the notification settings a follow changed.
pub fn undo_at_once() {
    match crate::stage::typed::temp::drop_in_flight(FAST_EXIT_CLEANUP) {
        (0, 0) => {}
        (deleted, 0) => out::line(&format!("deleted the {deleted} temporary keys of the type-aware copy")),
        (deleted, left) => out::line(&format!(
            "deleted {deleted} temporary keys of the type-aware copy; {left} are left on the target \
             (redis-ferry:tmp:*, they expire within 10 minutes)"
        )),
    }
    unpause_registered();
    crate::follow::notify::restore();
}

/// Puts back the notification settings a follow changed, when dropped.
struct RestoreNotifications;

impl Drop for RestoreNotifications {
    fn drop(&mut self) {
        crate::follow::notify::restore();
    }
}

/// Prints one `error:` line and returns the exit code.
fn fail(exit: Exit, message: &str) -> Exit {
    out::error(message);
    exit
}

/// Runs a copy (with `--follow`, the copy and the follow after it). `stop` is the process-wide flag the
/// Ctrl-C handler raises.
pub fn copy(cfg: &CopyConfig, stop: &Stop) -> Result<Outcome, Fatal> {
    if let Some(file) = cfg.source.file() {
        return backup::copy(cfg, file, stop);
    }
    if let Some(options) = &cfg.follow {
        return follow::copy(cfg, options, stop);
    }
    let prepared = prepare::prepare(cfg)?;
    let summary = run::run(cfg, prepared, stop, None);
    Ok(Outcome { summary, error: stop.error(), follow: None })
}
