//! The one stop flag of a run: why it is stopping (Ctrl-C, `--limit`, an abort), the first fatal error,
//! and the pauses that a stop cuts short. No I/O.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// Why a run is stopping early. Ordered: a later, stronger reason replaces a weaker one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum StopReason {
    /// Running normally.
    None = 0,
    /// `--limit` keys were copied: stop scanning, drop what is queued.
    Limit = 1,
    /// Ctrl-C / SIGTERM: stop scanning, finish the batches in flight.
    Interrupted = 2,
    /// `--max-errors` reached or a connection lost: stop scanning, drop what is queued.
    Aborted = 3,
}

/// The one stop flag shared by every stage, the Ctrl-C handler and the reporter, with the first
/// fatal error (a connection lost for good, a source that stopped answering SCAN) that caused an abort.
///
/// It also cuts pauses short: a stage that pauses (`--sleep-after-batch`, a retry's back-off) sleeps in
/// [`Stop::sleep`], which a stop request wakes at once.
#[derive(Debug, Default)]
pub struct Stop {
    /// A `StopReason` as u8.
    reason: AtomicU8,
    /// The first fatal error, for the final message and exit 3.
    error: Mutex<Option<String>>,
    /// Held while a sleeper checks the reason and while a request is announced.
    gate: Mutex<()>,
    /// Wakes the sleepers when the reason rises.
    wake: Condvar,
}

impl Stop {
    /// A flag with no stop requested (usable in a `static`).
    pub const fn new() -> Stop {
        Stop { reason: AtomicU8::new(0), error: Mutex::new(None), gate: Mutex::new(()), wake: Condvar::new() }
    }

    /// Raises the stop reason (never lowers it) and wakes every sleeper.
    pub fn request(&self, reason: StopReason) {
        let _gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        self.reason.fetch_max(reason as u8, Ordering::SeqCst);
        self.wake.notify_all();
    }

    /// Sleeps for `pause`, or less if `cut(self)` becomes true (checked at every stop request); returns
    /// false when it was cut short.
    pub fn sleep(&self, pause: Duration, cut: impl Fn(&Stop) -> bool) -> bool {
        let gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        let (_gate, waited) =
            self.wake.wait_timeout_while(gate, pause, |_| !cut(self)).unwrap_or_else(|e| e.into_inner());
        waited.timed_out()
    }

    /// Aborts the run because of a fatal error; the first one is kept for the final message.
    pub fn fatal(&self, message: String) {
        log::error!("{message}");
        self.error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(message);
        self.request(StopReason::Aborted);
    }

    /// The source ended early with an error (an RDB stream cut short): the run cannot complete and exits
    /// 3 with `message`, but unlike [`Stop::fatal`] nothing is dropped: the batches already sent are
    /// finished.
    pub fn incomplete(&self, message: String) {
        log::error!("{message}");
        self.error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(message);
    }

    /// The first fatal error, if there was one.
    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The current reason.
    pub fn reason(&self) -> StopReason {
        match self.reason.load(Ordering::SeqCst) {
            0 => StopReason::None,
            1 => StopReason::Limit,
            2 => StopReason::Interrupted,
            _ => StopReason::Aborted,
        }
    }

    /// True when the scanner must stop producing keys.
    pub fn stop_scanning(&self) -> bool {
        self.reason() != StopReason::None
    }

    /// True when queued batches must be dropped rather than finished.
    pub fn discard(&self) -> bool {
        matches!(self.reason(), StopReason::Limit | StopReason::Aborted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn stop_reasons_only_rise() {
        let stop = Stop::default();
        assert!(!stop.stop_scanning());
        stop.request(StopReason::Interrupted);
        assert!(stop.stop_scanning() && !stop.discard());
        stop.request(StopReason::Limit);
        assert_eq!(stop.reason(), StopReason::Interrupted);
        stop.request(StopReason::Aborted);
        assert!(stop.discard());
    }

    #[test]
    fn a_stop_cuts_a_pause_short() {
        let stop = Stop::default();
        assert!(stop.sleep(Duration::from_millis(10), Stop::stop_scanning), "slept the whole pause");
        let started = Instant::now();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(50));
                stop.request(StopReason::Interrupted);
            });
            assert!(!stop.sleep(Duration::from_secs(30), Stop::stop_scanning));
        });
        assert!(started.elapsed() < Duration::from_secs(5));
        // A pause that only an abort cuts goes on through an interrupt.
        assert!(stop.sleep(Duration::from_millis(20), Stop::discard));
    }
}
