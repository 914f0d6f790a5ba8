//! Time, as the servers keep it: redis-ferry's own clock never decides a key's fate.
//!
//! A key's deadline is an absolute time in milliseconds on the source's clock: PEXPIRETIME gives it
//! (Redis 7.0+); before 7.0, PTTL gives what is left, anchored at the moment the command was sent on
//! the [`SourceClock`], which is the source's `TIME` read at preflight and carried forward by this
//! machine's monotonic clock (so a wrong wall clock here changes nothing). The target is told the
//! deadline as it is (RESTORE ... ABSTTL, SET ... PXAT, PEXPIREAT) and decides with its own clock, as
//! Redis itself does between a primary and its replicas; whether the key was still alive then is read
//! from the target (EXISTS in the same pipeline), not guessed here. Only a target too old for absolute
//! deadlines is given what is left of it on the source's clock.
//!
//! At preflight [`skew`] measures how far the target's clock and this machine's are from the source's
//! and warns above [`SKEW_WARN_MS`]: a target clock ahead of the source's shortens every copied TTL by
//! as much. This file does nothing else.

use std::cell::Cell;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::conn::Conn;

/// Clock skew between two of source, target and this machine above which preflight warns.
pub const SKEW_WARN_MS: i64 = 1000;

/// The source's clock as this process knows it: `TIME` read once, carried forward by the monotonic
/// clock.
#[derive(Debug, Clone, Copy)]
pub struct SourceClock {
    /// The source's time, in Unix milliseconds, at `anchor`.
    at_ms: i64,
    /// When that was (the middle of the TIME round trip).
    anchor: Instant,
}

impl SourceClock {
    /// The source's time now, in Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        self.at_ms + i64::try_from(self.anchor.elapsed().as_millis()).unwrap_or(i64::MAX / 2)
    }

    /// A clock that reads this machine's wall clock (for a source that refuses TIME).
    pub fn local() -> SourceClock {
        SourceClock { at_ms: wall_ms(), anchor: Instant::now() }
    }
}

/// This machine's wall clock in Unix milliseconds: for messages and the skew report only.
fn wall_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// One reading of a server's clock: its time in Unix milliseconds, when (the middle of the round
/// trip, on the monotonic clock) and how long the round trip took.
#[derive(Debug, Clone, Copy)]
struct Reading {
    /// The server's time.
    ms: i64,
    /// The middle of the round trip.
    at: Instant,
    /// The round trip.
    rtt: Duration,
}

fn read(conn: &mut Conn) -> Result<Reading, redis::RedisError> {
    let before = Instant::now();
    let (secs, micros): (i64, i64) = conn.call(&redis::cmd("TIME"), || true)?;
    let rtt = before.elapsed();
    Ok(Reading { ms: secs * 1000 + micros / 1000, at: before + rtt / 2, rtt })
}

/// Reads the clocks of the source and the target, logs how far apart they and this machine's are
/// (warning above [`SKEW_WARN_MS`]) and returns the source's clock. A server that refuses TIME
/// (an ACL) is left out of the comparison, with a warning.
pub fn skew(source: &mut Conn, target: &mut Conn) -> SourceClock {
    let wall = wall_ms();
    let now = Instant::now();
    let (src, dst) = (read(source), read(target));
    let src = match src {
        Ok(src) => src,
        Err(e) => {
            log::warn!(
                "the source refuses TIME ({}): deadlines read with PTTL are anchored on this machine's clock",
                super::reply::classify(&e).1
            );
            return SourceClock::local();
        }
    };
    let since = |r: &Reading| r.at.saturating_duration_since(now).as_millis() as i64;
    let host_ahead = wall + since(&src) - src.ms;
    let mut parts = vec![format!("this machine's is {}", signed(host_ahead))];
    let mut worst = host_ahead.abs();
    match &dst {
        Ok(dst) => {
            let target_ahead = dst.ms - (src.ms + since(dst) - since(&src));
            parts.push(format!("the target's {}", signed(target_ahead)));
            if target_ahead.abs() > SKEW_WARN_MS {
                log::warn!(
                    "the target's clock is {} ms {} the source's: every copied TTL ends {} ms {} on the target \
                     (deadlines are absolute; each server keeps its own time)",
                    target_ahead.abs(),
                    if target_ahead > 0 { "ahead of" } else { "behind" },
                    target_ahead.abs(),
                    if target_ahead > 0 { "earlier" } else { "later" }
                );
            }
            worst = worst.max(target_ahead.abs());
        }
        Err(e) => {
            log::warn!("the target refuses TIME ({}): its clock is not compared", super::reply::classify(e).1)
        }
    }
    let uncertainty = src.rtt.max(dst.as_ref().map_or(Duration::ZERO, |d| d.rtt)).as_millis();
    let line = format!("clocks against the source's: {} (give or take {uncertainty} ms)", parts.join(", "));
    if host_ahead.abs() > SKEW_WARN_MS {
        log::warn!("{line}; this machine's clock decides nothing, it only stamps the CSV and the report");
    } else if worst > SKEW_WARN_MS {
        log::info!("{line}");
    } else {
        log::debug!("{line}");
    }
    SourceClock { at_ms: src.ms, anchor: src.at }
}

/// `1234 ms ahead` / `1234 ms behind` for a skew in milliseconds.
fn signed(ms: i64) -> String {
    match ms {
        0 => "in step".to_string(),
        ms if ms > 0 => format!("{ms} ms ahead"),
        ms => format!("{} ms behind", -ms),
    }
}

/// How a key's deadline is read from the source, and made absolute.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// The source has PEXPIRETIME (7.0+); else PTTL.
    pub pexpiretime: bool,
    /// The source's clock, for PTTL.
    pub clock: SourceClock,
}

impl Deadlines {
    /// The command that reads a key's deadline: PEXPIRETIME where the source has it, else PTTL.
    pub fn command(&self) -> &'static str {
        if self.pexpiretime {
            "PEXPIRETIME"
        } else {
            "PTTL"
        }
    }

    /// The absolute deadline from a PEXPIRETIME or PTTL reply (not -2) to a command sent at `sent` (see
    /// [`Sent`]); `None` for a key without TTL (-1).
    pub fn deadline(&self, ttl: i64, sent: i64) -> Option<i64> {
        match ttl {
            -1 => None,
            t if self.pexpiretime => Some(t),
            // PTTL is relative: anchored at the moment the command was sent, the deadline errs early,
            // never late.
            t => Some(sent + t),
        }
    }

    /// What is left of `deadline` on the source's clock, for a target that only takes a relative TTL;
    /// `None` once it has passed.
    pub fn left(&self, deadline: i64) -> Option<i64> {
        let left = deadline - self.clock.now_ms();
        (left > 0).then_some(left)
    }
}

/// When each key's commands of a pipeline were last sent, on the source's clock, for the deadlines read
/// with PTTL: stamped as the commands are built for an attempt, so a key sent again after a fault is
/// anchored at the attempt that was answered, not at the first. (PEXPIRETIME needs no anchor: nothing
/// is stamped then.)
pub struct Sent {
    /// How deadlines are read.
    deadlines: Deadlines,
    /// For each key, the source's time when its commands were last built.
    at: Vec<Cell<i64>>,
}

impl Sent {
    /// Stamps for `n` keys.
    pub fn new(deadlines: Deadlines, n: usize) -> Sent {
        let at = if deadlines.pexpiretime { Vec::new() } else { vec![Cell::new(0); n] };
        Sent { deadlines, at }
    }

    /// Key `i`'s commands are about to be sent.
    pub fn stamp(&self, i: usize) {
        if let Some(at) = self.at.get(i) {
            at.set(self.deadlines.clock.now_ms());
        }
    }

    /// Key `i`'s deadline from its PEXPIRETIME or PTTL reply (not -2); `None` without TTL.
    pub fn deadline(&self, i: usize, ttl: i64) -> Option<i64> {
        self.deadlines.deadline(ttl, self.at.get(i).map_or(0, Cell::get))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_absolute_on_the_source_clock() {
        let clock = SourceClock { at_ms: 1_000_000, anchor: Instant::now() };
        let pttl = Deadlines { pexpiretime: false, clock };
        assert_eq!(pttl.command(), "PTTL");
        assert_eq!(pttl.deadline(-1, 5), None);
        assert_eq!(pttl.deadline(30_000, 1_000_000), Some(1_030_000));
        let abs = Deadlines { pexpiretime: true, clock };
        assert_eq!(abs.deadline(1_700_000_000_000, 5), Some(1_700_000_000_000));
        assert!(abs.left(1_000_000 - 1).is_none());
        assert!(abs.left(1_000_000 + 60_000).is_some_and(|l| l > 59_000 && l <= 60_000));
        assert_eq!(signed(-5), "5 ms behind");
    }

    #[test]
    fn a_pttl_is_anchored_at_the_attempt_that_was_answered() {
        let clock = SourceClock { at_ms: 1_000_000, anchor: Instant::now() };
        let sent = Sent::new(Deadlines { pexpiretime: false, clock }, 2);
        sent.stamp(0);
        let first = sent.deadline(0, 1000).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        sent.stamp(0);
        assert!(sent.deadline(0, 1000).unwrap() >= first + 30, "the second attempt's anchor counts");
        assert_eq!(sent.deadline(1, -1), None);
        let absolute = Sent::new(Deadlines { pexpiretime: true, clock }, 2);
        absolute.stamp(1);
        assert_eq!(absolute.deadline(1, 1_700_000_000_000), Some(1_700_000_000_000));
    }
}
