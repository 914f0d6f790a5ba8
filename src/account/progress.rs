//! What a run tells while it goes and when it ends: a progress line on standard error every few seconds
//! (a bar on a terminal), and the summary line, the last line of standard output.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::{Counters, Snapshot, StopReason};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A bar (indicatif) when standard error is a terminal, else lines.
    Auto,
    /// A log line every interval, on a terminal too.
    Plain,
}

impl Style {
    /// Whether a bar is drawn.
    fn bar(self) -> bool {
        use std::io::IsTerminal;
        self == Style::Auto && std::io::stderr().is_terminal()
    }
}

/// What the progress thread shows.
pub struct Show<'a> {
    /// Every interval, or how often the bar is redrawn.
    pub interval: Duration,
    /// Bar or lines.
    pub style: Style,
    /// The keys the run is expected to see (the source's DBSIZE, the lines of `--keys-from`), for the bar's
    /// length and ETA; `None` when unknown.
    pub total: Option<u64>,
    /// A dry run.
    pub dry_run: bool,
    /// What a line (or the bar's message) adds: a follow's phase and lag.
    pub extra: &'a dyn Fn() -> String,
}

/// The progress thread, until `done` is disconnected: a line on standard error every interval, or on a
/// terminal a bar (keys done of the estimated total, keys/s, ETA, failed keys) redrawn 4 times a second.
pub fn progress(counters: &Counters, show: Show, done: Receiver<()>) {
    if show.style.bar() {
        return bar(counters, show, done);
    }
    let start = Instant::now();
    let mut last = (start, 0u64);
    loop {
        match done.recv_timeout(show.interval) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        let now = Instant::now();
        let s = counters.snapshot();
        let done_keys = s.copied + s.skipped + s.expired + s.failed + s.deleted;
        let rate = (done_keys - last.1.min(done_keys)) as f64 / now.duration_since(last.0).as_secs_f64();
        last = (now, done_keys);
        log::info!(
            "progress{}: scanned={} copied={} skipped={} expired={} failed={} keys_per_sec={:.0} elapsed={:.0}s{}{}",
            if show.dry_run { " (dry run)" } else { "" },
            s.scanned,
            s.copied,
            s.skipped,
            s.expired,
            s.failed,
            rate,
            now.duration_since(start).as_secs_f64(),
            if s.evicted > 0 { format!(" evicted={}", s.evicted) } else { String::new() },
            (show.extra)()
        );
    }
}

/// The bar: its length is the estimate (raised when more keys are seen), log lines are written above it,
/// and it is cleared at the end, before the summary.
fn bar(counters: &Counters, show: Show, done: Receiver<()>) {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let bar = ProgressBar::with_draw_target(show.total, ProgressDrawTarget::stderr_with_hz(4));
    let template = match show.total {
        Some(_) => "{bar:24} {human_pos}/{human_len} keys, {msg}, ETA {eta}",
        None => "{spinner} {human_pos} keys, {msg}, {elapsed}",
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    crate::out::show_bar(Some(bar.clone()));
    let mut last = (Instant::now(), 0u64, 0.0f64);
    loop {
        let s = counters.snapshot();
        let done_keys = s.copied + s.skipped + s.expired + s.failed + s.deleted;
        if bar.length().is_some_and(|len| s.scanned > len) {
            bar.set_length(s.scanned);
        }
        bar.set_position(done_keys);
        // keys/s over the last interval, as the lines give it.
        let now = Instant::now();
        if now.duration_since(last.0) >= show.interval {
            let rate = (done_keys - last.1.min(done_keys)) as f64 / now.duration_since(last.0).as_secs_f64();
            last = (now, done_keys, rate);
        }
        let dry = if show.dry_run { " (dry run)" } else { "" };
        let evicted = if s.evicted > 0 { format!(" evicted={}", s.evicted) } else { String::new() };
        bar.set_message(format!("{:.0} keys/s, failed={}{evicted}{dry}{}", last.2, s.failed, (show.extra)()));
        match done.recv_timeout(Duration::from_millis(250)) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => break,
        }
    }
    crate::out::show_bar(None);
    bar.finish_and_clear();
}

/// The result of a copy, printed as the last line of standard output.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Final counters.
    pub counts: Snapshot,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Whether it was a dry run (the buckets say what would have happened).
    pub dry_run: bool,
    /// Why it stopped early, if it did.
    pub stop: StopReason,
    /// With `--checkpoint`: the counters of the earlier runs of this copy (not in the summary line, which
    /// counts this run; in the report's `total`).
    pub earlier: Option<Snapshot>,
    /// Pairs a follow adds at the end of the line (` deleted=N events=N …`), or nothing.
    pub extra: String,
}

impl Summary {
    /// Keys scanned per second of the run (0 for a run that took no time).
    pub fn keys_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.counts.scanned as f64 / secs
        } else {
            0.0
        }
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.counts;
        let (secs, rate) = (self.elapsed.as_secs_f64(), self.keys_per_sec());
        write!(
            f,
            "scanned={} copied={} skipped={} expired={} failed={} seconds={:.3} keys_per_sec={:.0} evicted={}",
            c.scanned, c.copied, c.skipped, c.expired, c.failed, secs, rate, c.evicted
        )?;
        if self.dry_run {
            write!(f, " dry_run=1")?;
        }
        write!(f, "{}", self.extra)?;
        Ok(())
    }
}
