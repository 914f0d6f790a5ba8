//! Watching the target for evictions: a target with a memory limit and an eviction policy drops keys
//! when it is full, silently, and some of them may be keys this run just copied. The watcher reads the
//! target's `evicted_keys` (summed over a cluster's primaries) every [`EVERY`] on a connection of its
//! own and keeps how much it grew since preflight in [`Counters::evicted`], which the progress line, the
//! summary (`evicted=N`) and the report show; a run that saw evictions exits 1 (see `copy.rs`).
//! It reads once more when the run is over, so the figure is the whole run's. This file only reads.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::Counters;
use crate::redis::conn::Conn;
use crate::redis::memory::Memory;

/// How often `evicted_keys` is read during the run.
pub const EVERY: Duration = Duration::from_secs(1);

/// Runs until `done` is disconnected: every [`EVERY`], and once at the end, sets `counters.evicted` to
/// the target's `evicted_keys` minus `base` (what it was at preflight). A target that does not answer
/// is asked again next time.
pub fn watch(mut conn: Conn, base: u64, counters: &Counters, done: Receiver<()>) {
    loop {
        let last = !matches!(done.recv_timeout(EVERY), Err(RecvTimeoutError::Timeout));
        match Memory::of(&mut conn) {
            Ok(m) => counters.evicted.store(m.evicted_keys.saturating_sub(base), Ordering::Relaxed),
            Err(e) => log::debug!("cannot read the target's evicted_keys: {e}"),
        }
        if last {
            return;
        }
    }
}
