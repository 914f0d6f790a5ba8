//! `ferry-tools probe`: measures what a copy costs the source's clients. It sends one PING every
//! `--interval-ms` on its own connection, times each round trip, and stops on SIGINT/SIGTERM or after
//! `--seconds`; then it prints one line of percentiles. Pings follow a fixed schedule; a ping slower than
//! the interval delays the next one rather than queueing a burst, so a stall shows up as one long ping.
//! A failed ping (timeout, lost connection) is counted, not timed, and the probe reconnects.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use argh::FromArgs;

#[derive(FromArgs)]
#[argh(subcommand, name = "probe")]
/// PING a server on a schedule until interrupted; print latency percentiles.
pub struct Args {
    /// server to probe: redis://host:port or host:port
    #[argh(option)]
    url: String,
    /// milliseconds between pings (default 10)
    #[argh(option, default = "10")]
    interval_ms: u64,
    /// stop after this many seconds (default: run until SIGINT/SIGTERM)
    #[argh(option)]
    seconds: Option<f64>,
}

/// How long one PING may take before it counts as failed.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

pub fn run(args: &Args) -> Result<(), String> {
    if args.interval_ms == 0 {
        return Err("--interval-ms must be at least 1 (got 0)".into());
    }
    if let Some(s) = args.seconds {
        if !(s.is_finite() && s > 0.0) {
            return Err(format!("--seconds must be a positive number (got {s})"));
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .map_err(|e| format!("cannot install the signal handler: {e}"))?;

    let mut con = Some(crate::connect(&args.url, "server", Some(PING_TIMEOUT))?);
    let interval = Duration::from_millis(args.interval_ms);
    let start = Instant::now();
    let deadline = args.seconds.map(|s| start + Duration::from_secs_f64(s));
    let mut next = start;
    let mut samples_ms: Vec<f64> = Vec::new();
    let mut errors: u64 = 0;
    while !stop.load(Ordering::SeqCst) && deadline.is_none_or(|d| Instant::now() < d) {
        let sent = Instant::now();
        let ok = match con.as_mut() {
            Some(c) => redis::cmd("PING").query::<String>(c).is_ok(),
            None => false,
        };
        if ok {
            samples_ms.push(sent.elapsed().as_secs_f64() * 1000.0);
        } else if stop.load(Ordering::SeqCst) {
            // The signal that stops us can interrupt the read in flight (EINTR); that is not the server's fault.
            break;
        } else {
            errors += 1;
            con = crate::connect(&args.url, "server", Some(PING_TIMEOUT)).ok();
        }
        next += interval;
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    println!("{}", summary(&mut samples_ms, errors));
    Ok(())
}

/// The result line: `pings=N p50_ms=.. p99_ms=.. max_ms=.. errors=N` (nearest-rank percentiles).
fn summary(samples_ms: &mut [f64], errors: u64) -> String {
    samples_ms.sort_by(|a, b| a.total_cmp(b));
    let rank = |p: f64| -> f64 {
        if samples_ms.is_empty() {
            return 0.0;
        }
        let i = ((p * samples_ms.len() as f64).ceil() as usize).clamp(1, samples_ms.len());
        samples_ms[i - 1]
    };
    format!(
        "pings={} p50_ms={:.3} p99_ms={:.3} max_ms={:.3} errors={errors}",
        samples_ms.len(),
        rank(0.50),
        rank(0.99),
        samples_ms.last().copied().unwrap_or(0.0),
    )
}

#[cfg(test)]
mod tests {
    use super::summary;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(summary(&mut samples, 2), "pings=100 p50_ms=50.000 p99_ms=99.000 max_ms=100.000 errors=2");
        assert_eq!(summary(&mut [], 0), "pings=0 p50_ms=0.000 p99_ms=0.000 max_ms=0.000 errors=0");
    }
}
