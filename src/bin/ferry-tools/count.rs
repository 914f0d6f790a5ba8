//! `ferry-tools count`: watches a server's key count grow, for checking a rate limit from the outside.
//! It sends DBSIZE every `--interval-ms` on its own connection and prints one line per sample,
//! `SECONDS KEYS` (seconds since the first sample, three decimals), until SIGINT/SIGTERM or `--seconds`.
//! The time printed is the middle of the round trip, so a slow reply does not shift the sample. It
//! does no analysis: `scripts/bench.sh throttle` reads the lines with awk.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use argh::FromArgs;

#[derive(FromArgs)]
#[argh(subcommand, name = "count")]
/// Print a server's DBSIZE on a schedule until interrupted.
pub struct Args {
    /// server to watch: redis://host:port[/db] or host:port
    #[argh(option)]
    url: String,
    /// milliseconds between samples (default 100)
    #[argh(option, default = "100")]
    interval_ms: u64,
    /// stop after this many seconds (default: run until SIGINT/SIGTERM)
    #[argh(option)]
    seconds: Option<f64>,
}

pub fn run(args: &Args) -> Result<(), String> {
    if args.interval_ms == 0 {
        return Err("--interval-ms must be at least 1 (got 0)".into());
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .map_err(|e| format!("cannot install the signal handler: {e}"))?;
    let mut con = crate::connect(&args.url, "server", Some(Duration::from_secs(5)))?;
    let interval = Duration::from_millis(args.interval_ms);
    let start = Instant::now();
    let deadline = args.seconds.map(|s| start + Duration::from_secs_f64(s.max(0.0)));
    let mut next = start;
    let mut out = std::io::stdout().lock();
    while !stop.load(Ordering::SeqCst) && deadline.is_none_or(|d| Instant::now() < d) {
        let sent = Instant::now();
        match redis::cmd("DBSIZE").query::<u64>(&mut con) {
            Ok(keys) => {
                let at = (sent - start) + sent.elapsed() / 2;
                writeln!(out, "{:.3} {keys}", at.as_secs_f64()).map_err(|e| format!("stdout: {e}"))?;
            }
            // The signal that stops us can interrupt the read in flight (EINTR).
            Err(_) if stop.load(Ordering::SeqCst) => break,
            Err(e) => return Err(format!("DBSIZE failed: {e}")),
        }
        next += interval;
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    out.flush().map_err(|e| format!("stdout: {e}"))
}
