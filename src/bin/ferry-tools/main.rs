//! `ferry-tools`: the project's own test-bench helpers, kept apart from the `redis-ferry` binary so that
//! nothing here ships in the product's code paths. `fill` loads a server with a deterministic key mix,
//! `migrate` is the baseline the product must beat (SCAN + server-side MIGRATE), `probe` measures how
//! the source's PING latency suffers while a copy runs, `count` samples a server's DBSIZE (to check
//! a rate limit from outside), and `load` keeps a server (or cluster) busy with a steady mix of writes,
//! deletes and short TTLs, to copy from while it changes. This file only parses flags, dispatches, and
//! maps an error to one line on stderr and exit code 2; each subcommand lives in its own module.

mod count;
mod fill;
mod load;
mod migrate;
mod probe;

use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;

/// Benchmark and test-data helpers for redis-ferry.
#[derive(FromArgs)]
struct Top {
    /// the subcommand to run
    #[argh(subcommand)]
    command: Command,
}

/// The subcommands; each module owns its flags.
#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    /// fill a server with a deterministic key mix
    Fill(fill::Args),
    /// copy with SCAN + MIGRATE (the baseline)
    Migrate(migrate::Args),
    /// measure PING latency until interrupted
    Probe(probe::Args),
    /// sample DBSIZE until interrupted
    Count(count::Args),
    /// run a mixed writer load until --seconds or interrupted
    Load(load::Args),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let top: Top = argh::from_env();
    let result = match top.command {
        Command::Fill(args) => fill::run(&args),
        Command::Migrate(args) => migrate::run(&args),
        Command::Probe(args) => probe::run(&args),
        Command::Count(args) => count::run(&args),
        Command::Load(args) => load::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

/// Opens one connection to `addr` (`host:port` or a `redis://` URL); `what` names the server in errors.
///
/// The read timeout guards against a server that stops answering; `None` waits forever, which only
/// `migrate` wants (its MIGRATE calls run as long as the server needs).
fn connect(addr: &str, what: &str, read_timeout: Option<Duration>) -> Result<redis::Connection, String> {
    let url = if addr.contains("://") { addr.to_string() } else { format!("redis://{addr}") };
    let client =
        redis::Client::open(url.as_str()).map_err(|e| format!("bad {what} address {addr:?}: {e}"))?;
    let con = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .map_err(|e| format!("cannot connect to {what} {addr}: {e}"))?;
    con.set_read_timeout(read_timeout)
        .and_then(|()| con.set_write_timeout(read_timeout))
        .map_err(|e| format!("cannot set timeouts on {what} {addr}: {e}"))?;
    Ok(con)
}
