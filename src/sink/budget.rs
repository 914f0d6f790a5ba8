//! The `--limit` budget: how many keys may still be copied, shared by every writer (the write stage's
//! threads and the type-aware copier), so that exactly N keys are copied.

use std::sync::{Condvar, Mutex};

/// The number of keys still allowed to be copied under `--limit`, shared by the writers. A writer
/// reserves slots before a write and gives back those that did not end up copied; a writer that
/// finds nothing left waits while others hold reservations, since those may come back.
pub struct Budget {
    /// (slots left, slots reserved by writers in flight).
    state: Mutex<(u64, u64)>,
    /// Signalled when reservations are settled.
    settled: Condvar,
}

impl Budget {
    /// A budget of `limit` copies.
    pub fn new(limit: u64) -> Budget {
        Budget { state: Mutex::new((limit, 0)), settled: Condvar::new() }
    }

    /// Reserves up to `want` slots; 0 means the limit is reached for good.
    pub fn reserve(&self, want: usize) -> usize {
        let mut state = self.state.lock().expect("budget lock");
        loop {
            let (left, held) = *state;
            if left > 0 {
                let n = left.min(want as u64);
                *state = (left - n, held + n);
                return n as usize;
            }
            if held == 0 {
                return 0;
            }
            state = self.settled.wait(state).expect("budget lock");
        }
    }

    /// Settles a reservation of `reserved` slots of which `used` were copied.
    pub fn settle(&self, reserved: usize, used: u64) {
        let mut state = self.state.lock().expect("budget lock");
        state.0 += reserved as u64 - used;
        state.1 -= reserved as u64;
        self.settled.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::Budget;

    #[test]
    fn budget_gives_back_unused_slots() {
        let b = Budget::new(5);
        assert_eq!(b.reserve(3), 3);
        assert_eq!(b.reserve(10), 2);
        b.settle(3, 1); // two of the three were skipped: their slots come back
        assert_eq!(b.reserve(10), 2);
        b.settle(2, 2);
        b.settle(2, 2);
        assert_eq!(b.reserve(1), 0);
    }
}
