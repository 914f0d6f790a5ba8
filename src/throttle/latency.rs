//! `--max-latency`: a probe thread PINGs the source every 100 ms on connections of its own (each primary
//! the run reads from, on a cluster: the slowest answer counts), and every 500 ms the p90 of the last 10
//! PINGs steers the bucket's rate by AIMD ([`Aimd`]): ×0.7 when the p90 is above
//! the limit, +5% of the ceiling when it is not, never below a floor (1% of the ceiling, at least 10
//! keys/s) nor above the ceiling. The ceiling is `--rate`, or, without it, the highest throughput
//! measured while unlimited, where the limit is lifted again.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::{Throttle, MIN_RATE};
use crate::redis::conn::Conn;

/// How often the `--max-latency` probe PINGs the source.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// PINGs whose p90 is compared with the limit (the last second).
const WINDOW: usize = 10;
/// PINGs between two decisions (half a second).
const DECIDE_EVERY: usize = 5;
/// Multiplicative decrease when the source is too slow.
const DECREASE: f64 = 0.7;
/// Additive increase per decision when it is fast enough, as a share of the ceiling.
const INCREASE: f64 = 0.05;
/// The floor as a share of the ceiling.
const FLOOR_SHARE: f64 = 0.01;
/// Throughput (for an unlimited start) is measured over this span.
const THROUGHPUT_SPAN: Duration = Duration::from_secs(2);
/// At most one log line about rate changes per this interval; changes in between are summed up.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// A rate change decided by [`Aimd::step`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// The source was too slow: the rate went down to this.
    Lowered(f64),
    /// The source was fast enough: the rate went up to this.
    Raised(f64),
    /// Back at the measured ceiling of a run without `--rate`: no limit any more.
    Lifted,
}

/// The arithmetic of `--max-latency`, apart from clocks and connections: additive increase,
/// multiplicative decrease of the bucket's rate between a floor and a ceiling.
#[derive(Debug, Clone)]
pub struct Aimd {
    /// `--max-latency`.
    limit: Duration,
    /// `--rate`; `None` for an unlimited start.
    ceiling: Option<f64>,
    /// Without `--rate`: the highest throughput measured while unlimited, the ceiling then.
    peak: f64,
    /// The rate now; `None` is unlimited.
    rate: Option<f64>,
}

impl Aimd {
    /// A controller starting at the ceiling: `--rate`, or unlimited.
    pub fn new(limit: Duration, ceiling: Option<f64>) -> Aimd {
        Aimd { limit, ceiling, peak: 0.0, rate: ceiling }
    }

    /// The rate now; `None` is unlimited.
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// The highest rate: `--rate`, or the peak throughput measured while unlimited.
    fn top(&self) -> f64 {
        self.ceiling.unwrap_or(self.peak.max(MIN_RATE))
    }

    /// The lowest rate: 1% of the ceiling, at least 10 keys/s, at most the ceiling itself.
    pub fn floor(&self) -> f64 {
        (self.top() * FLOOR_SHARE).max(MIN_RATE).min(self.top())
    }

    /// One decision, from the p90 of the recent PINGs and the keys per second admitted lately
    /// (`measured`, which matters while unlimited). Returns the change, if the rate changed.
    pub fn step(&mut self, p90: Duration, measured: f64) -> Option<Change> {
        if self.rate.is_none() {
            self.peak = self.peak.max(measured);
        }
        if p90 > self.limit {
            // From unlimited, decrease from what was actually flowing.
            let from = self.rate.unwrap_or(measured);
            let to = (from * DECREASE).max(self.floor());
            if self.rate.is_some_and(|r| r <= to) {
                return None; // already at the floor
            }
            self.rate = Some(to);
            return Some(Change::Lowered(to));
        }
        let rate = self.rate?;
        let top = self.top();
        if rate >= top {
            return None;
        }
        let to = rate + INCREASE * top;
        if to < top {
            self.rate = Some(to);
            Some(Change::Raised(to))
        } else if self.ceiling.is_some() {
            self.rate = Some(top);
            Some(Change::Raised(top))
        } else {
            self.rate = None;
            Some(Change::Lifted)
        }
    }
}

/// The duration at rank `p` (0..=1, nearest rank) of `samples`; zero for none.
fn percentile(samples: &VecDeque<Duration>, p: f64) -> Duration {
    let mut sorted: Vec<Duration> = samples.iter().copied().collect();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// How long one probe PING may take: slower counts as failed, which counts as too slow anyway.
pub fn probe_timeout(limit: Duration) -> Duration {
    (limit * 4).max(Duration::from_secs(1))
}

/// The `--max-latency` probe thread: PINGs every server of `conns` (connections of its own, opened with
/// [`probe_timeout`]: the source, or each primary the run reads from) every 100 ms, takes the slowest
/// answer, and steers `throttle`'s rate until `done` is disconnected, when the stages have finished. A
/// PING that fails (timeout, connection lost) counts as too slow; the next one reconnects.
pub fn watch(mut conns: Vec<Conn>, throttle: &Throttle, limit: Duration, done: Receiver<()>) {
    let mut aimd = Aimd::new(limit, throttle.rate());
    let mut log = ChangeLog::new(limit);
    let mut pings: VecDeque<Duration> = VecDeque::with_capacity(WINDOW + 1);
    let mut flow: VecDeque<(Instant, u64)> = VecDeque::new();
    let mut since_decision = 0;
    let mut next = Instant::now();
    loop {
        let took = conns.iter_mut().map(|conn| ping(conn, limit)).max().unwrap_or_default();
        pings.push_back(took);
        if pings.len() > WINDOW {
            pings.pop_front();
        }
        let now = Instant::now();
        flow.push_back((now, throttle.admitted()));
        while flow.len() > 2 && now - flow[1].0 >= THROUGHPUT_SPAN {
            flow.pop_front();
        }
        since_decision += 1;
        if since_decision >= DECIDE_EVERY {
            since_decision = 0;
            let p90 = percentile(&pings, 0.9);
            if let Some(change) = aimd.step(p90, throughput(&flow)) {
                throttle.set_rate(aimd.rate());
                log.change(change, p90, now);
            }
        }
        log.tick(now);
        next += PROBE_EVERY;
        match done.recv_timeout(next.saturating_duration_since(Instant::now())) {
            // After a PING slower than the interval, the next one goes at once rather than in a burst.
            Err(RecvTimeoutError::Timeout) => next = next.max(Instant::now()),
            _ => break,
        }
    }
    log.finish(&aimd);
}

/// How long one PING on `conn` took; a failed one counts as [`probe_timeout`] at least.
fn ping(conn: &mut Conn, limit: Duration) -> Duration {
    let sent = Instant::now();
    let answered = conn.call::<String>(&redis::cmd("PING"), || true).is_ok();
    if answered {
        sent.elapsed()
    } else {
        sent.elapsed().max(probe_timeout(limit))
    }
}

/// Keys per second between the oldest and the newest (time, admitted) pair.
fn throughput(flow: &VecDeque<(Instant, u64)>) -> f64 {
    match (flow.front(), flow.back()) {
        (Some(&(t0, k0)), Some(&(t1, k1))) if t1 > t0 => (k1 - k0) as f64 / (t1 - t0).as_secs_f64(),
        _ => 0.0,
    }
}

/// Logs rate changes at info, at most one line per [`LOG_EVERY`]: the first change at once, later ones
/// summed up in the next line, and a summary when the run ends.
struct ChangeLog {
    /// `--max-latency`, for the messages.
    limit: Duration,
    /// When the last line was logged.
    last_line: Option<Instant>,
    /// The latest change not logged yet, and how many changes it stands for.
    pending: Option<(String, u32)>,
    /// Decreases and increases so far.
    counts: (u32, u32),
    /// The lowest rate so far.
    lowest: Option<f64>,
}

impl ChangeLog {
    fn new(limit: Duration) -> ChangeLog {
        ChangeLog { limit, last_line: None, pending: None, counts: (0, 0), lowest: None }
    }

    fn change(&mut self, change: Change, p90: Duration, now: Instant) {
        let ms = p90.as_secs_f64() * 1000.0;
        let limit = self.limit.as_millis();
        let message = match change {
            Change::Lowered(rate) => {
                self.counts.0 += 1;
                self.lowest = Some(self.lowest.map_or(rate, |l| l.min(rate)));
                format!("source p90 PING {ms:.1} ms > {limit} ms: rate lowered to {rate:.0} keys/s")
            }
            Change::Raised(rate) => {
                self.counts.1 += 1;
                format!("source p90 PING {ms:.1} ms <= {limit} ms: rate raised to {rate:.0} keys/s")
            }
            Change::Lifted => {
                self.counts.1 += 1;
                format!("source p90 PING {ms:.1} ms <= {limit} ms: rate limit lifted")
            }
        };
        let changes = self.pending.take().map_or(1, |(_, n)| n + 1);
        self.pending = Some((message, changes));
        self.tick(now);
    }

    fn tick(&mut self, now: Instant) {
        if self.last_line.is_some_and(|t| now - t < LOG_EVERY) {
            return;
        }
        if let Some((message, changes)) = self.pending.take() {
            let also =
                if changes > 1 { format!(" ({changes} changes since the last line)") } else { String::new() };
            log::info!("--max-latency: {message}{also}");
            self.last_line = Some(now);
        }
    }

    fn finish(&mut self, aimd: &Aimd) {
        let (down, up) = self.counts;
        if down + up == 0 {
            return;
        }
        self.last_line = None;
        self.tick(Instant::now());
        let end = aimd.rate().map_or("unlimited".to_string(), |r| format!("{r:.0} keys/s"));
        log::info!(
            "--max-latency: {down} decreases, {up} increases; lowest rate {:.0} keys/s, at the end {end}",
            self.lowest.unwrap_or(0.0)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn aimd_decreases_by_0_7_down_to_the_floor() {
        let mut a = Aimd::new(ms(10), Some(10_000.0));
        assert_eq!(a.floor(), 100.0);
        assert_eq!(a.step(ms(11), 10_000.0), Some(Change::Lowered(7000.0)));
        assert_eq!(a.step(ms(50), 7000.0), Some(Change::Lowered(4900.0)));
        for _ in 0..20 {
            a.step(ms(50), 0.0);
        }
        assert_eq!(a.rate(), Some(100.0));
        assert_eq!(a.step(ms(50), 0.0), None, "no change below the floor");
        // The floor is at least 10 keys/s, and never above --rate.
        assert_eq!(Aimd::new(ms(10), Some(200.0)).floor(), 10.0);
        let mut tiny = Aimd::new(ms(10), Some(5.0));
        assert_eq!((tiny.step(ms(50), 5.0), tiny.step(ms(1), 5.0)), (None, None));
    }

    #[test]
    fn aimd_increases_by_5_percent_of_the_ceiling_up_to_it() {
        let mut a = Aimd::new(ms(10), Some(1000.0));
        assert_eq!(a.step(ms(10), 1000.0), None, "at the limit is fast enough; at the ceiling already");
        assert_eq!(a.step(ms(20), 1000.0), Some(Change::Lowered(700.0)));
        assert_eq!(a.step(ms(3), 700.0), Some(Change::Raised(750.0)));
        for _ in 0..4 {
            a.step(ms(3), 0.0);
        }
        assert_eq!(a.rate(), Some(950.0));
        assert_eq!(a.step(ms(3), 0.0), Some(Change::Raised(1000.0)));
        assert_eq!(a.step(ms(3), 0.0), None);
    }

    #[test]
    fn aimd_from_an_unlimited_start_uses_the_measured_throughput() {
        let mut a = Aimd::new(ms(10), None);
        assert_eq!(a.step(ms(1), 20_000.0), None, "unlimited and fast enough");
        assert_eq!(a.step(ms(1), 30_000.0), None);
        // Too slow: 0.7 of what flowed lately; the ceiling is the peak seen while unlimited.
        assert_eq!(a.step(ms(40), 10_000.0), Some(Change::Lowered(7000.0)));
        assert_eq!(a.floor(), 300.0);
        // +5% of 30,000 per step; reaching the peak lifts the limit.
        assert_eq!(a.step(ms(1), 7000.0), Some(Change::Raised(8500.0)));
        for _ in 0..14 {
            a.step(ms(1), 0.0);
        }
        assert_eq!(a.rate(), Some(29_500.0));
        assert_eq!(a.step(ms(1), 0.0), Some(Change::Lifted));
        assert_eq!(a.rate(), None);
        // Nothing flowed at all: the floor of 10 keys/s.
        assert_eq!(Aimd::new(ms(10), None).step(ms(40), 0.0), Some(Change::Lowered(10.0)));
    }

    #[test]
    fn p90_is_nearest_rank_over_the_window() {
        let window: VecDeque<Duration> = (1..=10).map(ms).collect();
        assert_eq!(percentile(&window, 0.9), ms(9));
        assert_eq!(percentile(&VecDeque::new(), 0.9), Duration::ZERO);
        let flow: VecDeque<(Instant, u64)> = {
            let t0 = Instant::now();
            [(t0, 100), (t0 + ms(500), 600), (t0 + Duration::from_secs(2), 2100)].into()
        };
        assert!((throughput(&flow) - 1000.0).abs() < 1e-6);
    }
}
