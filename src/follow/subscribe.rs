//! The subscribers of a follow: one thread per primary of the source, each on a connection of its own,
//! subscribed to `__keyevent@<db>__:*` (the key is the message, bytes as they are), recording every key
//! the run takes in the [`Dirty`] set.
//!
//! Pub/sub is at most once: a subscriber whose connection breaks reconnects, subscribes again and only
//! then reports the gap (a re-scan follows, and it starts after the new subscription, so nothing falls
//! between the two); a server whose `run_id` changed (restarted, failed over) is a gap too, and has its
//! notifications checked again (a restart forgets a `CONFIG SET`). On a cluster, a watch reads the slot
//! map every [`TOPOLOGY_EVERY`]: a primary that appears has its notifications checked (set, with
//! `--enable-notifications`; else the run aborts), is subscribed to, and reports the gap once confirmed,
//! so its slots are trusted only once its events are heard.
//!
//! The [`Hub`] is how the rest of the follow talks to them: the first subscriptions confirmed (the copy
//! starts only then), the fence of the cutover (a PING on a subscribed connection comes back after every
//! event published before it: once each subscriber has read its PONG and the events before it, every
//! change made before the fence is in the dirty set), and the end.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::thread::Scope;
use std::time::{Duration, Instant};

use super::dirty::Dirty;
use super::notify::{self, Permission};
use crate::account::{Stop, StopReason};
use crate::redis::conn::Conn;
use crate::redis::connect::connect;
use crate::redis::endpoint::{Endpoint, Timeouts};
use crate::redis::glob;
use crate::redis::pubsub::Subscription;
use crate::redis::reply;
use crate::redis::slots::SlotSet;

/// How often a cluster's slot map is read, to find primaries that appeared.
pub const TOPOLOGY_EVERY: Duration = Duration::from_secs(2);

/// How long a subscriber waits on its socket before it looks at the hub again; also the silence after a
/// fence's PONG that says every event before it was read.
const POLL: Duration = Duration::from_millis(100);

/// After this long without a message, a subscriber PINGs its server: a connection the server closed
/// (`CLIENT KILL`, a restart) is found within about this long plus the I/O timeout.
const KEEPALIVE: Duration = Duration::from_secs(1);

/// Which keys of the events the run takes: `--match` and the run's slots.
#[derive(Debug, Clone)]
pub struct Filter {
    /// `--match` globs (any of them); `*` alone takes every key.
    pub patterns: Vec<Vec<u8>>,
    /// `--slots` / `--shard`.
    pub slots: Option<SlotSet>,
}

impl Filter {
    /// Whether the run takes `key`.
    pub fn takes(&self, key: &[u8]) -> bool {
        self.slots.as_ref().is_none_or(|s| s.has_key(key))
            && self.patterns.iter().any(|p| p == b"*" || glob::matches(p, key))
    }
}

/// What the subscribers share with the follow: confirmations, the fence, the end.
#[derive(Debug, Default)]
pub struct Hub {
    /// Subscriber threads started, and how many confirmed their first subscription (or failed).
    started: Mutex<Started>,
    /// Wakes the waiters of `started`, and the subscribers' and the watch's pauses when the follow ends.
    changed: Condvar,
    /// The fence wanted: subscribers PING when theirs is lower.
    fence_wanted: AtomicU64,
    /// The follow is over: subscribers return.
    done: AtomicBool,
    /// The first subscriptions were confirmed: a subscriber that cannot connect from now on keeps
    /// trying, instead of failing the start, and one that starts now reports a gap once it is confirmed.
    up: AtomicBool,
}

#[derive(Debug, Default)]
struct Started {
    /// Addresses subscribed to (a thread each).
    nodes: Vec<String>,
    /// Per thread: its first subscription is confirmed.
    confirmed: Vec<bool>,
    /// Per thread: the last fence it passed.
    fenced: Vec<u64>,
    /// Per thread: its server is no longer a primary serving the run's slots (failed over, removed):
    /// it returns, and fences do not wait for it.
    retired: Vec<bool>,
    /// A first subscription that failed: the message, and whether trying later may work (exit 5).
    failed: Option<(String, bool)>,
}

impl Started {
    /// Every subscriber still needed passed fence `wanted`.
    fn fenced_all(&self, wanted: u64) -> bool {
        self.fenced.iter().zip(&self.retired).all(|(&f, &retired)| retired || f >= wanted)
    }
}

/// Why a subscriber's connection ended: one line, and whether it was the connection (rather than a
/// refusal, such as an ACL without the right to subscribe).
#[derive(Debug)]
struct Broken {
    message: String,
    transient: bool,
}

impl From<redis::RedisError> for Broken {
    fn from(e: redis::RedisError) -> Broken {
        Broken { transient: reply::may_pass(&e), message: reply::one_line(&e.to_string()) }
    }
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Started> {
        self.started.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a subscriber for `node`; returns its index.
    fn add(&self, node: String) -> usize {
        let mut s = self.lock();
        s.nodes.push(node);
        s.confirmed.push(false);
        s.fenced.push(0);
        s.retired.push(false);
        s.nodes.len() - 1
    }

    fn confirm(&self, index: usize) {
        self.lock().confirmed[index] = true;
        self.changed.notify_all();
    }

    fn fail(&self, message: String, transient: bool) {
        self.lock().failed.get_or_insert((message, transient));
        self.changed.notify_all();
    }

    /// Waits until every subscriber started so far confirmed its subscription, up to `limit`. The error
    /// says whether trying later may work.
    pub fn wait_confirmed(&self, limit: Duration) -> Result<(), (String, bool)> {
        let s = self.lock();
        let (s, waited) = self
            .changed
            .wait_timeout_while(s, limit, |s| {
                s.failed.is_none() && !s.confirmed.iter().zip(&s.retired).all(|(&c, &r)| c || r)
            })
            .unwrap_or_else(|e| e.into_inner());
        match &s.failed {
            Some(failed) => Err(failed.clone()),
            None if waited.timed_out() => {
                Err((format!("no confirmation of the subscriptions within {limit:?}"), true))
            }
            None => {
                self.up.store(true, Ordering::SeqCst);
                Ok(())
            }
        }
    }

    /// The fence: asks every subscriber to PING and waits, up to `until` and unless `give_up()` says
    /// otherwise, until each has read its PONG and every event before it. Returns whether all did.
    pub fn fence(&self, until: Instant, give_up: impl Fn() -> bool) -> bool {
        let wanted = self.fence_wanted.fetch_add(1, Ordering::SeqCst) + 1;
        let mut s = self.lock();
        while !s.fenced_all(wanted) && !give_up() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // Woken by each subscriber that passes; looks at `give_up` at least every 10 ms.
            s = self
                .changed
                .wait_timeout(s, left.min(Duration::from_millis(10)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        s.fenced_all(wanted)
    }

    /// The servers of the subscribers that are confirmed and not retired: the primaries whose events are
    /// heard now.
    pub fn heard(&self) -> Vec<String> {
        let s = self.lock();
        let live = s.confirmed.iter().zip(&s.retired).map(|(&c, &r)| c && !r);
        s.nodes.iter().zip(live).filter(|(_, live)| *live).map(|(n, _)| n.clone()).collect()
    }

    /// Ends the subscribers and the watch, at once.
    pub fn finish(&self) {
        let _s = self.lock();
        self.done.store(true, Ordering::SeqCst);
        self.changed.notify_all();
    }

    fn over(&self, stop: &Stop) -> bool {
        self.done.load(Ordering::SeqCst) || stop.reason() >= StopReason::Interrupted
    }

    /// Sleeps for `pause`, or less when the follow ends.
    fn sleep(&self, pause: Duration, stop: &Stop) {
        let s = self.lock();
        let _ = self.changed.wait_timeout_while(s, pause, |_| !self.over(stop));
    }

    fn passed(&self, index: usize, fence: u64) {
        self.lock().fenced[index] = fence;
        self.changed.notify_all();
    }

    /// Whether a subscriber for `node` runs (not retired).
    fn knows(&self, node: &str) -> bool {
        let s = self.lock();
        s.nodes.iter().zip(&s.retired).any(|(n, &retired)| n == node && !retired)
    }

    /// Retires the subscribers of servers that are not in `serving` any more; returns them.
    fn retire_others(&self, serving: &[String]) -> Vec<String> {
        let mut s = self.lock();
        let Started { nodes, retired, .. } = &mut *s;
        let mut gone = Vec::new();
        for (node, retired) in nodes.iter().zip(retired.iter_mut()) {
            if !*retired && !serving.contains(node) {
                gone.push(node.clone());
                *retired = true;
            }
        }
        drop(s);
        self.changed.notify_all();
        gone
    }

    fn retired(&self, index: usize) -> bool {
        self.lock().retired[index]
    }
}

/// What every subscriber thread is given.
#[derive(Clone, Copy)]
pub struct Subscribers<'a> {
    /// Where keys are recorded.
    pub dirty: &'a Dirty,
    /// Which keys are recorded.
    pub filter: &'a Filter,
    /// Confirmations, fence, end.
    pub hub: &'a Hub,
    /// The run's stop flag.
    pub stop: &'a Stop,
    /// The db whose events are followed.
    pub db: i64,
    /// Connection timeouts.
    pub timeouts: Timeouts,
    /// What may be done about the notifications of a primary that appears or restarts.
    pub may: Permission,
}

impl<'a> Subscribers<'a> {
    /// Starts a subscriber for each of `nodes` in `s`; on a cluster (`cluster`: a connection to it),
    /// also the watch that subscribes to primaries that appear.
    pub fn spawn<'s>(
        self,
        s: &'s Scope<'s, 'a>,
        nodes: Vec<Endpoint>,
        cluster: Option<Conn>,
        slots: Option<SlotSet>,
    ) where
        'a: 's,
    {
        for node in nodes {
            let index = self.hub.add(node.to_string());
            s.spawn(move || self.subscriber(index, node));
        }
        if let Some(conn) = cluster {
            s.spawn(move || self.watch_topology(s, conn, slots));
        }
    }

    /// Every [`TOPOLOGY_EVERY`], the primaries serving the run's slots: a new one has its notifications
    /// checked and gets a subscriber (which reports the gap once it is confirmed); one that no longer
    /// serves them loses its subscriber.
    fn watch_topology<'s>(self, s: &'s Scope<'s, 'a>, mut conn: Conn, slots: Option<SlotSet>)
    where
        'a: 's,
    {
        while !self.hub.over(self.stop) {
            self.hub.sleep(TOPOLOGY_EVERY, self.stop);
            let Ok((nodes, _)) = conn.primaries_serving(slots.as_ref()) else { continue };
            for gone in self.hub.retire_others(&nodes.iter().map(|n| n.to_string()).collect::<Vec<_>>()) {
                log::info!("{gone} no longer serves the run's slots: its subscriber ends");
            }
            for node in nodes {
                if self.hub.over(self.stop) || self.hub.knows(&node.to_string()) {
                    continue;
                }
                log::info!("a new primary of the source serves the run's slots: {node}; subscribing");
                // Its notifications are checked (and set) like those of the first primaries: a primary that
                // sends no events cannot be followed.
                if let Err(e) = notify::prepare(std::slice::from_ref(&node), self.timeouts, self.may) {
                    self.stop.fatal(format!("the follow cannot go on: {}", e.message));
                    return;
                }
                let index = self.hub.add(node.to_string());
                s.spawn(move || self.subscriber(index, node));
            }
        }
    }

    /// One subscriber: subscribes, records, reconnects after a break (a gap), answers fences.
    fn subscriber(self, index: usize, node: Endpoint) {
        let pattern = format!("__keyevent@{}__:*", self.db);
        // Started after the first subscriptions (a primary that appeared): what it sent before is lost.
        let mut late = self.hub.up.load(Ordering::SeqCst);
        let mut run_id: Option<String> = None;
        let (mut breaks, mut confirmed) = (0u32, false);
        while !self.hub.over(self.stop) && !self.hub.retired(index) {
            let why = match self.listen(
                index,
                &node,
                &pattern,
                &mut run_id,
                (breaks > 0 || late, &mut confirmed),
            ) {
                Ok(()) => return,
                Err(why) => why,
            };
            breaks += 1;
            late = false;
            if !confirmed && !self.hub.up.load(Ordering::SeqCst) {
                let message =
                    format!("cannot subscribe to keyspace events on the source {node}: {}", why.message);
                self.hub.fail(message, why.transient);
                return;
            }
            log::warn!("the subscriber to {node} lost its connection ({}); subscribing again", why.message);
            self.hub.sleep(Duration::from_millis(200 * u64::from(breaks.min(10))), self.stop);
        }
    }

    /// One connection's life: INFO (the run id), notifications checked again after a break, PSUBSCRIBE,
    /// confirm (and the gap, after a break or for a late subscriber), then messages until the end (`Ok`)
    /// or a break (`Err`).
    fn listen(
        &self,
        index: usize,
        node: &Endpoint,
        pattern: &str,
        run_id: &mut Option<String>,
        (gap, confirmed): (bool, &mut bool),
    ) -> Result<(), Broken> {
        let mut con = connect(node, self.timeouts)?;
        let info: String = redis::cmd("INFO").arg("server").query(&mut con)?;
        let now = info.lines().find_map(|l| l.strip_prefix("run_id:")).map(|s| s.trim().to_string());
        let restarted = run_id.is_some() && now != *run_id;
        *run_id = now;
        if restarted {
            // A restart forgets a CONFIG SET: checked (and set) again, or the follow cannot go on.
            if let Err(e) = notify::prepare(std::slice::from_ref(node), self.timeouts, self.may) {
                self.stop.fatal(format!("the follow cannot go on: {}", e.message));
                return Ok(());
            }
        }
        let mut pubsub = Subscription::new(con, pattern)?;
        pubsub.set_read_timeout(POLL)?;
        if gap {
            let what = match (restarted, *confirmed) {
                (true, _) => "restarted (its run_id changed)",
                (false, true) => "reconnected",
                (false, false) => "appeared in the source cluster",
            };
            self.dirty.gap(format!("the subscriber to the source {node} {what}"));
        }
        *confirmed = true;
        self.hub.confirm(index);
        let (mut fenced, mut fencing) = (self.hub.lock().fenced[index], None::<u64>);
        let mut heard = Instant::now();
        loop {
            if self.hub.over(self.stop) || self.hub.retired(index) {
                return Ok(());
            }
            let wanted = self.hub.fence_wanted.load(Ordering::SeqCst);
            let fence = wanted > fenced && fencing.is_none();
            if fence || heard.elapsed() >= KEEPALIVE {
                // Reads up to the PONG, within the I/O timeout; the messages before it wait in the
                // client and are read below. No PONG: the connection is gone (a connection closed by the
                // server is not always seen otherwise).
                pubsub.set_read_timeout(self.timeouts.io)?;
                pubsub.ping()?;
                pubsub.set_read_timeout(POLL)?;
                heard = Instant::now();
                if fence {
                    fencing = Some(wanted);
                }
            }
            match pubsub.next() {
                Ok(key) => {
                    heard = Instant::now();
                    self.dirty.events.fetch_add(1, Ordering::Relaxed);
                    if self.filter.takes(&key) {
                        self.dirty.record(&key);
                    }
                }
                // Silence: every message before the PONG has been read.
                Err(e) if e.is_timeout() => {
                    if let Some(fence) = fencing.take() {
                        fenced = fence;
                        self.hub.passed(index, fence);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_takes_matching_keys_of_its_slots() {
        let every = Filter { patterns: vec![b"*".to_vec()], slots: None };
        assert!(every.takes(b"\xff binary"));
        let some = Filter { patterns: vec![b"user:*".to_vec(), b"s?".to_vec()], slots: None };
        assert!(some.takes(b"user:1") && some.takes(b"sa") && !some.takes(b"order:1"));
    }
}
