//! `ferry-tools migrate`: the baseline redis-ferry must beat. It walks the source with SCAN and, for
//! each SCAN page, asks the source itself to push those keys with `MIGRATE host port "" 0 timeout COPY
//! REPLACE KEYS k1 k2 ...`, until the cursor returns to 0. All data moves server to server; this process
//! only drives it. It keeps no per-key account: a key that vanished between SCAN and MIGRATE is skipped
//! silently by the server and still counted here, and SCAN may return a key twice.

use std::time::{Duration, Instant};

use argh::FromArgs;
use redis::Value;

#[derive(FromArgs)]
#[argh(subcommand, name = "migrate")]
/// Copy every key with SCAN + MIGRATE ... COPY REPLACE KEYS (the baseline).
pub struct Args {
    /// source server, host:port
    #[argh(option)]
    source: String,
    /// target server, host:port (as the source server reaches it)
    #[argh(option)]
    target: String,
    /// SCAN COUNT, and so keys per MIGRATE (default 1000)
    #[argh(option, default = "1000")]
    batch: u64,
    /// MIGRATE's I/O timeout in milliseconds (default 5000)
    #[argh(option, default = "5000")]
    timeout_ms: u64,
}

pub fn run(args: &Args) -> Result<(), String> {
    if args.batch == 0 {
        return Err("--batch must be at least 1 (got 0)".into());
    }
    let (host, port) = split_host_port(&args.target)?;
    // MIGRATE holds the reply until the whole page has moved; give it far longer than its own
    // per-I/O timeout, but not forever, so a wedged server cannot hang a benchmark.
    let wait = Duration::from_millis(args.timeout_ms.saturating_mul(10).max(60_000));
    let mut con = crate::connect(&args.source, "source", Some(wait))?;
    // Fail before the first page if the target is unreachable from here (it usually is from the source).
    crate::connect(&args.target, "target", Some(Duration::from_secs(5)))?;

    let start = Instant::now();
    let mut cursor: u64 = 0;
    let mut migrated: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(args.batch)
            .query(&mut con)
            .map_err(|e| format!("SCAN failed on source {}: {e}", args.source))?;
        if !keys.is_empty() {
            let mut migrate = redis::cmd("MIGRATE");
            migrate.arg(host).arg(port).arg("").arg(0).arg(args.timeout_ms);
            migrate.arg("COPY").arg("REPLACE").arg("KEYS");
            for key in &keys {
                migrate.arg(key.as_slice());
            }
            let reply: Value =
                migrate.query(&mut con).map_err(|e| format!("MIGRATE to {} failed: {e}", args.target))?;
            match reply {
                Value::Okay => migrated += keys.len() as u64,
                // NOKEY: every key of the page vanished before MIGRATE ran.
                Value::SimpleString(s) if s == "NOKEY" => {}
                other => return Err(format!("unexpected MIGRATE reply: {other:?}")),
            }
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let rate = if seconds > 0.0 { migrated as f64 / seconds } else { 0.0 };
    println!("migrated={migrated} seconds={seconds:.3} keys_per_sec={rate:.0}");
    Ok(())
}

/// Splits `host:port` (an optional `redis://` in front is tolerated) into MIGRATE's two arguments.
fn split_host_port(addr: &str) -> Result<(&str, u16), String> {
    let bare = addr.strip_prefix("redis://").unwrap_or(addr).trim_end_matches('/');
    let (host, port) =
        bare.rsplit_once(':').ok_or_else(|| format!("--target must be host:port (got {addr:?})"))?;
    let port = port.parse().map_err(|_| format!("--target has a bad port (got {addr:?})"))?;
    if host.is_empty() {
        return Err(format!("--target must be host:port (got {addr:?})"));
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::split_host_port;

    #[test]
    fn splits_host_and_port() {
        assert_eq!(split_host_port("127.0.0.1:6380"), Ok(("127.0.0.1", 6380)));
        assert_eq!(split_host_port("redis://localhost:7000/"), Ok(("localhost", 7000)));
        assert!(split_host_port("localhost").is_err());
        assert!(split_host_port(":6379").is_err());
        assert!(split_host_port("h:port").is_err());
    }
}
