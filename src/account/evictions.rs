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

/// Runs until `done` is disconnected: every [`EVERY`], and once at the end, raises `counters.evicted` to
/// the target's `evicted_keys` minus `base` (what it was at preflight); the figure never goes down (a
/// `CONFIG RESETSTAT`, a new primary after a failover). A target that does not answer is asked again next
/// time, after its slot map is read again; that the watch is blind meanwhile is said once.
pub fn watch(mut conn: Conn, base: u64, counters: &Counters, done: Receiver<()>) {
    let mut blind = false;
    loop {
        let last = !matches!(done.recv_timeout(EVERY), Err(RecvTimeoutError::Timeout));
        let read = conn
            .ensure()
            .map_err(|e| e.to_string())
            .and_then(|()| Memory::of(&mut conn).map_err(|e| e.to_string()));
        match read {
            Ok(m) => {
                counters.evicted.fetch_max(m.evicted_keys.saturating_sub(base), Ordering::Relaxed);
                blind = false;
            }
            Err(e) if !blind => {
                log::warn!(
                    "cannot read the target's evicted_keys ({e}); evictions are not watched until it answers"
                );
                blind = true;
            }
            Err(_) => {}
        }
        if last {
            return;
        }
    }
}
