//! The dirty set of a follow: the keys that keyspace events named and that still have to be read again
//! from the source and written (or deleted) on the target, deduplicated, bounded, and never in flight
//! twice.
//!
//! A key is *waiting* from its first event until the follow source takes it into a batch, then *in
//! flight* until that batch has been answered by the target; an event for an in-flight key makes it wait
//! again, and it is not taken again before its earlier write is answered, so two writes of one key never
//! race and the later read always lands last. Waiting and in-flight keys together are at most
//! `--follow-queue`: an event that finds the set full is not recorded, the set remembers that it
//! *overflowed*, and the follow answers with a re-scan (which reads every key again). The same flag is
//! raised for a *gap* (a subscriber lost its connection, a source restarted): events were lost, only a
//! re-scan brings the target back in step. No Redis I/O here.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::key::Key;

/// Why the follow must read everything again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rescan {
    /// The dirty set was full: events were not recorded.
    Overflow,
    /// Events were lost: the reason, for the log.
    Gap(String),
}

/// The dirty keys, shared by the subscribers (who record), the follow source (who takes and releases)
/// and the cutover (who waits for it to be empty).
#[derive(Debug)]
pub struct Dirty {
    /// Guarded state.
    state: Mutex<State>,
    /// Wakes the follow source when a key is recorded or a re-scan is due.
    ready: Condvar,
    /// `--follow-queue`: waiting + in-flight keys at most.
    limit: usize,
    /// Events received (every subscriber, matching or not).
    pub events: AtomicU64,
    /// Times the set overflowed.
    pub overflows: AtomicU64,
    /// Gaps in the event stream.
    pub gaps: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// Waiting keys, oldest first, with the time of their first event since they were last taken.
    order: VecDeque<(Key, Instant)>,
    /// The same keys, for deduplication.
    waiting: HashSet<Key>,
    /// Keys taken into a batch not yet answered, with the time of the event that made them dirty.
    in_flight: HashMap<Key, Instant>,
    /// A re-scan is due, and why (the first reason).
    rescan: Option<Rescan>,
    /// Keys whose last attempt failed: how many attempts failed in a row, and whether the attempt in
    /// flight now failed. A key leaves it when an attempt is answered without a failure.
    failing: HashMap<Key, Failing>,
    /// Failed keys to read again, each at its time.
    retry: BinaryHeap<Reverse<(Instant, Key)>>,
}

/// A key whose last attempt failed.
#[derive(Debug, Clone, Copy)]
struct Failing {
    /// Attempts that failed in a row.
    attempts: u32,
    /// The attempt in flight failed (or none is in flight since the last failure).
    failed_now: bool,
}

/// The longest wait before a failed key is read again.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

impl State {
    /// An attempt at `key` was answered: unless it failed, the key is no longer failing.
    fn repaired(&mut self, key: &Key) {
        if self.failing.get(key).is_some_and(|f| !f.failed_now) {
            self.failing.remove(key);
        }
    }
}

impl Dirty {
    /// An empty set holding at most `limit` keys.
    pub fn new(limit: usize) -> Dirty {
        Dirty {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            limit: limit.max(1),
            events: AtomicU64::new(0),
            overflows: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an event for `key`: it waits (once, however many events name it), unless the set is full
    /// or a re-scan is already due (the re-scan reads it anyway).
    pub fn record(&self, key: &[u8]) {
        let mut s = self.lock();
        if s.rescan.is_some() || s.waiting.contains(key) {
            return;
        }
        if s.waiting.len() + s.in_flight.len() >= self.limit {
            self.overflows.fetch_add(1, Ordering::Relaxed);
            s.rescan = Some(Rescan::Overflow);
            drop(s);
            self.ready.notify_all();
            log::warn!(
                "the dirty set is full (--follow-queue {}): events are no longer recorded one by one; a re-scan \
                 follows",
                self.limit
            );
            return;
        }
        let key = Key(key.to_vec());
        s.waiting.insert(key.clone());
        s.order.push_back((key, Instant::now()));
        drop(s);
        self.ready.notify_one();
    }

    /// Says events were lost (`why`, for the log): a re-scan follows.
    pub fn gap(&self, why: String) {
        self.gaps.fetch_add(1, Ordering::Relaxed);
        log::warn!("{why}: the events of the gap are lost; a re-scan follows");
        let mut s = self.lock();
        if s.rescan.is_none() {
            s.rescan = Some(Rescan::Gap(why));
        }
        drop(s);
        self.ready.notify_all();
    }

    /// A key failed (a CSV row): it is read again after 1 s, then 2, 4 … up to a minute, until an
    /// attempt goes through; meanwhile it counts as failing, which a cutover refuses.
    pub fn failed(&self, key: &Key) {
        let mut s = self.lock();
        let entry = s.failing.entry(key.clone()).or_insert(Failing { attempts: 0, failed_now: true });
        entry.attempts += 1;
        entry.failed_now = true;
        let delay = Duration::from_secs(1 << entry.attempts.min(6).saturating_sub(1)).min(MAX_RETRY_DELAY);
        s.retry.push(Reverse((Instant::now() + delay, key.clone())));
    }

    /// Keys whose last attempt failed and that no attempt has gone through for since.
    pub fn failing(&self) -> usize {
        self.lock().failing.len()
    }

    /// Keys taken but never sent on (the run stopped): they wait again, as new.
    pub fn give_back(&self, keys: Vec<Key>) {
        let mut s = self.lock();
        for key in keys {
            s.in_flight.remove(&key);
            if s.waiting.insert(key.clone()) {
                s.order.push_back((key, Instant::now()));
            }
        }
    }

    /// Every in-flight key is answered (a pass is over): all may be taken again.
    pub fn release_all(&self) {
        let mut s = self.lock();
        let answered: Vec<Key> = s.in_flight.drain().map(|(key, _)| key).collect();
        for key in &answered {
            s.repaired(key);
        }
        drop(s);
        self.ready.notify_all();
    }

    /// The re-scan due, if any.
    pub fn rescan_due(&self) -> Option<Rescan> {
        self.lock().rescan.clone()
    }

    /// A re-scan starts: it reads every key again, so the waiting keys are dropped and the set records
    /// single keys again (the events from now on are the ones that matter after the re-scan).
    pub fn start_rescan(&self) {
        let mut s = self.lock();
        s.rescan = None;
        s.order.clear();
        s.waiting.clear();
    }

    /// Takes up to `max` waiting keys that are not in flight, oldest first, and marks them in flight;
    /// waits up to `wait` for one when there is none. An in-flight key met on the way keeps its place.
    pub fn take(&self, max: usize, wait: Duration) -> Vec<Key> {
        let mut s = self.lock();
        // Nothing to take (nothing waits, or only keys still in flight: a hot key): wait for a new key or a
        // release instead of spinning.
        // (More waiting keys than in flight: one at least can be taken, so the scan is bounded.)
        let stuck =
            s.order.len() <= s.in_flight.len() && s.order.iter().all(|(k, _)| s.in_flight.contains_key(k));
        if s.rescan.is_none() && stuck {
            s = self.ready.wait_timeout(s, wait).unwrap_or_else(|e| e.into_inner()).0;
        }
        let now = Instant::now();
        while s.retry.peek().is_some_and(|Reverse((at, _))| *at <= now) {
            let Some(Reverse((_, key))) = s.retry.pop() else { break };
            if s.waiting.insert(key.clone()) {
                s.order.push_back((key, now));
            }
        }
        let mut taken = Vec::new();
        let mut kept = Vec::new();
        while taken.len() < max {
            let Some((key, since)) = s.order.pop_front() else { break };
            if s.in_flight.contains_key(&key) {
                kept.push((key, since));
                continue;
            }
            s.waiting.remove(&key);
            if let Some(f) = s.failing.get_mut(&key) {
                f.failed_now = false;
            }
            s.in_flight.insert(key.clone(), since);
            taken.push(key);
        }
        for entry in kept.into_iter().rev() {
            s.order.push_front(entry);
        }
        taken
    }

    /// Keys whose batch was answered: they may be taken again.
    pub fn release(&self, keys: &[Key]) {
        let mut s = self.lock();
        for key in keys {
            s.in_flight.remove(key);
            s.repaired(key);
        }
        drop(s);
        self.ready.notify_all();
    }

    /// Waiting keys, in-flight keys, and the lag: how long ago the oldest event was whose key is not
    /// written yet (waiting or in flight).
    pub fn depth(&self) -> (usize, usize, Duration) {
        let s = self.lock();
        let waiting = s.order.front().map(|(_, since)| *since);
        let oldest = s.in_flight.values().copied().chain(waiting).min();
        (s.waiting.len(), s.in_flight.len(), oldest.map_or(Duration::ZERO, |t| t.elapsed()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Duration = Duration::ZERO;

    #[test]
    fn events_for_one_key_make_one_entry() {
        let d = Dirty::new(10);
        d.record(b"a");
        d.record(b"a");
        d.record(b"b");
        assert_eq!(d.depth().0, 2);
        assert_eq!(d.take(10, NOW), vec![Key::from("a"), Key::from("b")]);
        assert_eq!(d.depth().0, 0);
        assert_eq!(d.depth().1, 2);
    }

    #[test]
    fn a_key_in_flight_is_not_taken_again_before_it_is_released() {
        let d = Dirty::new(10);
        d.record(b"a");
        assert_eq!(d.take(10, NOW), vec![Key::from("a")]);
        // Changed again while its first write is in flight.
        d.record(b"a");
        d.record(b"b");
        assert_eq!(d.take(10, NOW), vec![Key::from("b")]);
        assert_eq!(d.depth().0, 1, "a still waits");
        d.release(&[Key::from("a")]);
        assert_eq!(d.take(10, NOW), vec![Key::from("a")]);
    }

    #[test]
    fn a_full_set_overflows_into_a_rescan_and_a_rescan_clears_it() {
        let d = Dirty::new(2);
        d.record(b"a");
        d.record(b"b");
        assert_eq!(d.rescan_due(), None);
        d.record(b"c");
        assert_eq!(d.rescan_due(), Some(Rescan::Overflow));
        assert_eq!(d.overflows.load(Ordering::Relaxed), 1);
        // Once a re-scan is due, nothing more is recorded: the re-scan reads it.
        d.record(b"d");
        assert_eq!(d.depth().0, 2);
        d.start_rescan();
        assert_eq!((d.rescan_due(), d.depth().0), (None, 0));
        d.record(b"e");
        assert_eq!(d.depth().0, 1);
    }

    #[test]
    fn in_flight_keys_count_against_the_limit() {
        let d = Dirty::new(2);
        d.record(b"a");
        d.record(b"b");
        assert_eq!(d.take(2, NOW).len(), 2);
        d.record(b"c");
        assert_eq!(d.rescan_due(), Some(Rescan::Overflow));
    }

    #[test]
    fn the_lag_counts_keys_in_flight_until_they_are_released() {
        let d = Dirty::new(10);
        d.record(b"a");
        std::thread::sleep(Duration::from_millis(20));
        d.record(b"b");
        assert_eq!(d.take(1, NOW), vec![Key::from("a")]);
        // a is in flight, not written yet: it is still the oldest.
        assert!(d.depth().2 >= Duration::from_millis(20), "{:?}", d.depth());
        d.release(&[Key::from("a")]);
        assert!(d.depth().2 < Duration::from_millis(20), "{:?}", d.depth());
    }

    #[test]
    fn keys_given_back_wait_again() {
        let d = Dirty::new(10);
        d.record(b"a");
        let keys = d.take(10, NOW);
        d.give_back(keys);
        assert_eq!((d.depth().0, d.depth().1), (1, 0));
        assert_eq!(d.take(10, NOW), vec![Key::from("a")]);
    }

    #[test]
    fn a_failed_key_is_read_again_later_and_stops_failing_once_an_attempt_goes_through() {
        let d = Dirty::new(10);
        d.record(b"a");
        let a = d.take(1, NOW);
        d.failed(&a[0]);
        d.release(&a);
        assert_eq!(d.failing(), 1, "its attempt failed");
        assert!(d.take(1, NOW).is_empty(), "not before its retry time");
        std::thread::sleep(Duration::from_millis(1_050));
        let again = d.take(1, NOW);
        assert_eq!(again, vec![Key::from("a")]);
        // Failed again: still failing.
        d.failed(&again[0]);
        d.release(&again);
        assert_eq!(d.failing(), 1);
        // A key that failed outside the dirty set (the copy) is failing until read again.
        d.failed(&Key::from("b"));
        assert_eq!(d.failing(), 2);
    }

    #[test]
    fn a_failed_key_whose_next_attempt_is_answered_is_repaired() {
        let d = Dirty::new(10);
        d.failed(&Key::from("a"));
        std::thread::sleep(Duration::from_millis(1_050));
        let a = d.take(1, NOW);
        assert_eq!(a, vec![Key::from("a")]);
        d.release(&a);
        assert_eq!(d.failing(), 0);
    }

    #[test]
    fn a_gap_keeps_its_first_reason() {
        let d = Dirty::new(2);
        d.gap("first".into());
        d.gap("second".into());
        assert_eq!(d.rescan_due(), Some(Rescan::Gap("first".into())));
        assert_eq!(d.gaps.load(Ordering::Relaxed), 2);
    }
}
