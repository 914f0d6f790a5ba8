//! `ferry-tools load`: a steady, mixed writer load on one server (or, with `--cluster`, on the cluster
//! the `--url` node belongs to), to copy from while it changes. Each thread has its own connection and
//! sends pipelines of `--pipeline` commands on a fixed schedule, so that all threads together send
//! `--rate` commands a second; a thread that falls behind catches up, but by at most one second's worth.
//!
//! Every command is drawn by a per-thread xorshift generator seeded from `--seed`: a write, a delete, a
//! TTL of 50-2000 ms (so keys really expire during a run) or its removal, on a random key of the key
//! space. Keys are `<prefix>{<group>}:a`, `:b` and `:c` for `--keys` groups: the hash tag keeps a group in
//! one slot, so RENAME and COPY between its keys work on a cluster too. Any command may hit a key of
//! another type (SET over a hash, a write after DEL of another type): WRONGTYPE, `no such key` and other
//! error replies are counted, never fatal; a lost connection is. The end prints one line,
//! `ops=N errors=E seconds=S ops_per_sec=R`, where `ops` counts commands answered and `errors` the
//! error replies among them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use argh::FromArgs;
use redis::cluster::{ClusterClient, ClusterConnection, ClusterPipeline};
use redis::{Cmd, ConnectionLike, ErrorKind, Pipeline, RedisResult, Value};

#[derive(FromArgs)]
#[argh(subcommand, name = "load")]
/// Run a mixed writer load until --seconds or interrupted; print one summary line.
pub struct Args {
    /// server to load: redis://host:port[/db] or host:port (with --cluster: any node of the cluster)
    #[argh(option)]
    url: String,
    /// treat --url as a cluster node and route every command to the node owning its key
    #[argh(switch)]
    cluster: bool,
    /// commands per second, all threads together (default 1000)
    #[argh(option, default = "1000")]
    rate: u64,
    /// commands per pipeline (default 10)
    #[argh(option, default = "10")]
    pipeline: usize,
    /// stop after this many seconds; 0 runs until SIGINT/SIGTERM (default 0)
    #[argh(option, default = "0.0")]
    seconds: f64,
    /// number of key groups, three keys each (default 1000)
    #[argh(option, default = "1000")]
    keys: u64,
    /// writer threads, each with its own connection (default 1)
    #[argh(option, default = "1")]
    threads: u64,
    /// seed of the generator; the same seed gives the same command sequence (default 1)
    #[argh(option, default = "1")]
    seed: u64,
    /// prefix of every key name (default load:); must not contain braces
    #[argh(option, default = "String::from(\"load:\")")]
    prefix: String,
}

/// How long one reply may take before the connection counts as lost.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// The most a late thread catches up: past that it forgets the missed slots rather than burst.
const MAX_LAG: Duration = Duration::from_secs(1);

/// Set by SIGINT/SIGTERM: every thread stops after its pipeline in flight.
static STOP: AtomicBool = AtomicBool::new(false);

/// The suffixes of a group's keys, after the hash tag.
const SUFFIXES: [&str; 3] = ["a", "b", "c"];

/// One writer's connection: to one server, or to a cluster through the redis crate's routing client.
enum Conn {
    Single(redis::Connection),
    Cluster(Box<ClusterConnection>),
}

/// Checks the flags, connects every thread, runs the load and prints the result line.
pub fn run(args: &Args) -> Result<(), String> {
    if args.rate == 0 || args.pipeline == 0 || args.keys == 0 || args.threads == 0 {
        return Err("--rate, --pipeline, --keys and --threads must all be at least 1".into());
    }
    if !(args.seconds.is_finite() && args.seconds >= 0.0) {
        return Err(format!("--seconds must be 0 or a positive number (got {})", args.seconds));
    }
    if args.prefix.contains(['{', '}']) {
        return Err(format!("--prefix must not contain braces, the keys' hash tags (got {:?})", args.prefix));
    }
    ctrlc::set_handler(|| STOP.store(true, Ordering::SeqCst))
        .map_err(|e| format!("cannot install the signal handler: {e}"))?;
    // Connect every thread first, so a bad --url fails before any write.
    let connections = (0..args.threads).map(|_| connect(args)).collect::<Result<Vec<_>, _>>()?;
    let start = Instant::now();
    let deadline = (args.seconds > 0.0).then(|| start + Duration::from_secs_f64(args.seconds));
    let results: Vec<Result<(u64, u64), String>> = thread::scope(|scope| {
        let spawn = |(n, con)| scope.spawn(move || drive(con, args, n, start, deadline));
        let handles: Vec<_> = (0..).zip(connections).map(spawn).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("a writer panicked".into()))).collect()
    });
    let (mut ops, mut errors) = (0, 0);
    for result in results {
        let (o, e) = result?;
        (ops, errors) = (ops + o, errors + e);
    }
    let seconds = start.elapsed().as_secs_f64();
    let rate = ops as f64 / seconds.max(1e-9);
    println!("ops={ops} errors={errors} seconds={seconds:.3} ops_per_sec={rate:.1}");
    Ok(())
}

/// Opens one writer connection, to the server or to the cluster `--url` belongs to.
fn connect(args: &Args) -> Result<Conn, String> {
    if !args.cluster {
        return Ok(Conn::Single(crate::connect(&args.url, "server", Some(REPLY_TIMEOUT))?));
    }
    let url = if args.url.contains("://") { args.url.clone() } else { format!("redis://{}", args.url) };
    let con = ClusterClient::builder(vec![url])
        .connection_timeout(Duration::from_secs(5))
        .response_timeout(REPLY_TIMEOUT)
        .build()
        .and_then(|client| client.get_connection())
        .map_err(|e| format!("cannot connect to cluster {}: {e}", args.url))?;
    Ok(Conn::Cluster(Box::new(con)))
}

/// Thread `n`'s loop: wait for the next slot of the schedule, send a pipeline, until the end; returns
/// the commands answered and the error replies among them.
fn drive(
    mut con: Conn,
    args: &Args,
    n: u64,
    start: Instant,
    deadline: Option<Instant>,
) -> Result<(u64, u64), String> {
    let mut rng = Rng::new(args.seed, n);
    // Each thread sends rate/threads commands a second; thread n starts n/threads of a slot later.
    let per_command = Duration::from_secs_f64(args.threads as f64 / args.rate as f64);
    let mut next = start + per_command.mul_f64(args.pipeline as f64 * n as f64 / args.threads as f64);
    let (mut ops, mut errors) = (0, 0);
    let mut batch: Vec<Cmd> = Vec::with_capacity(args.pipeline + 1);
    while !STOP.load(Ordering::SeqCst) && deadline.is_none_or(|d| next < d && Instant::now() < d) {
        let now = Instant::now();
        if next > now {
            // In steps, so that a signal stops even a slow schedule promptly.
            thread::sleep((next - now).min(Duration::from_millis(100)));
            continue;
        }
        if now - next > MAX_LAG {
            next = now;
        }
        while batch.len() < args.pipeline {
            add_op(&mut batch, &mut rng, args);
        }
        let sent = batch.len() as u32;
        match send(&mut con, &mut batch) {
            Ok(e) => (ops, errors) = (ops + u64::from(sent), errors + e),
            // The signal that stops us can interrupt the read in flight; that is not the server's fault.
            Err(_) if STOP.load(Ordering::SeqCst) => break,
            Err(e) => {
                let what = if args.cluster { "the cluster of" } else { "server" };
                return Err(format!("lost {what} {}: {e}", args.url));
            }
        }
        next += per_command * sent;
    }
    Ok((ops, errors))
}

/// Sends `batch` (emptying it) and returns how many error replies came back.
///
/// A cluster pipeline refuses RENAME, so on a cluster each RENAME goes alone, after the rest.
fn send(con: &mut Conn, batch: &mut Vec<Cmd>) -> RedisResult<u64> {
    let is_error = |v: &Value| matches!(v, Value::ServerError(_));
    match con {
        Conn::Single(c) => {
            let mut pipe = Pipeline::with_capacity(batch.len());
            batch.drain(..).for_each(|cmd| _ = pipe.add_command(cmd));
            let replies: Vec<Value> = pipe.ignore_errors().query(c)?;
            Ok(replies.iter().filter(|v| is_error(v)).count() as u64)
        }
        Conn::Cluster(c) => {
            let (renames, rest): (Vec<Cmd>, Vec<Cmd>) = batch
                .drain(..)
                .partition(|cmd| matches!(cmd.args_iter().next(), Some(redis::Arg::Simple(b"RENAME"))));
            let mut errors = 0;
            if !rest.is_empty() {
                let mut pipe = ClusterPipeline::with_capacity(rest.len());
                rest.into_iter().for_each(|cmd| _ = pipe.add_command(cmd));
                // A cluster pipeline cannot ignore errors: error replies come back as one pipeline error.
                if let Err(e) = pipe.query::<Vec<Value>>(c) {
                    errors += e.clone().into_server_errors().ok_or(e)?.len() as u64;
                }
            }
            for cmd in &renames {
                match c.req_command(cmd) {
                    Ok(value) => errors += u64::from(is_error(&value)),
                    // The server's answer, not a lost connection: counted.
                    Err(e) if matches!(e.kind(), ErrorKind::Server(_) | ErrorKind::Extension) => errors += 1,
                    Err(e) => return Err(e),
                }
            }
            Ok(errors)
        }
    }
}

/// Appends one operation (one or two commands) on a random key to `batch`.
fn add_op(batch: &mut Vec<Cmd>, rng: &mut Rng, args: &Args) {
    let group = rng.below(args.keys);
    let name = |suffix: usize| format!("{}{{{group}}}:{}", args.prefix, SUFFIXES[suffix]);
    let key = &name(rng.below(3) as usize);
    let b = batch;
    match rng.below(24) {
        0 => {
            let c = push(b, "SET", key).arg(rng.value());
            if rng.below(4) == 0 {
                c.arg("PX").arg(rng.between(50, 2000));
            }
            c
        }
        1 => push(b, "INCR", key),
        2 => push(b, "APPEND", key).arg(rng.value()),
        3 => push(b, "DEL", key),
        4 => push(b, "UNLINK", key),
        5 => push(b, "EXPIRE", key).arg(rng.between(1, 2)),
        6 => push(b, "PEXPIRE", key).arg(rng.between(50, 2000)),
        7 => push(b, "PERSIST", key),
        8 => push(b, "HSET", key).arg(rng.member()).arg(rng.value()),
        9 => push(b, "HDEL", key).arg(rng.member()),
        10 => push(b, "LPUSH", key).arg(rng.value()),
        11 => push(b, "RPUSH", key).arg(rng.value()),
        // Two pops for the two pushes, so lists stay short.
        12 | 13 => push(b, "LPOP", key),
        14 => push(b, "SADD", key).arg(rng.member()),
        15 => push(b, "SREM", key).arg(rng.member()),
        16 => push(b, "ZADD", key).arg(rng.between(0, 1000) as f64 / 8.0).arg(rng.member()),
        17 => push(b, "ZREM", key).arg(rng.member()),
        18 => push(b, "XADD", key).arg("MAXLEN").arg("~").arg(20).arg("*").arg("f").arg(rng.value()),
        19 => push(b, "XTRIM", key).arg("MAXLEN").arg("~").arg(5),
        // The source may well not exist: then the reply is `ERR no such key`, counted like any other.
        20 => push(b, "RENAME", key).arg(name(rng.below(3) as usize)),
        21 => push(b, "COPY", key).arg(name(rng.below(3) as usize)).arg("REPLACE"),
        // A change of type: the key is deleted, then written as a collection of a random type.
        _ => {
            push(b, "DEL", key);
            let (member, value) = (rng.member(), rng.value());
            match rng.below(5) {
                0 => push(b, "HSET", key).arg(member).arg(value),
                1 => push(b, "RPUSH", key).arg(value),
                2 => push(b, "SADD", key).arg(member),
                3 => push(b, "ZADD", key).arg(1).arg(member),
                _ => push(b, "XADD", key).arg("*").arg(member).arg(value),
            }
        }
    };
}

/// Appends command `name` on `key` to `batch` and returns it, for the other arguments.
fn push<'a>(batch: &'a mut Vec<Cmd>, name: &str, key: &str) -> &'a mut Cmd {
    batch.push(redis::cmd(name));
    let cmd = batch.last_mut().expect("just pushed");
    cmd.arg(key);
    cmd
}

/// Xorshift64*: small and fast; one per thread, so a thread's sequence depends only on seed and index.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, thread: u64) -> Self {
        // A SplitMix64 step spreads nearby seeds apart; `| 1` keeps the state off xorshift's zero.
        let mut z = (seed ^ thread.wrapping_mul(0xd1b5_4a32_d192_ed03)).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`; the modulo bias is irrelevant here.
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A number in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// A value: a third are decimal numbers (so INCR can succeed), the rest 0-40 random bytes.
    fn value(&mut self) -> Vec<u8> {
        if self.below(3) == 0 {
            return self.below(1_000_000).to_string().into_bytes();
        }
        let len = self.below(41) as usize;
        (0..len).map(|_| self.next_u64() as u8).collect()
    }

    /// A hash field or collection member out of 16, binary, so collections stay small.
    fn member(&mut self) -> Vec<u8> {
        vec![b'm', 0xff, self.below(16) as u8]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_commands_and_multi_key_commands_stay_in_their_group() {
        let args = Args::from_args(&["load"], &["--url", "x", "--keys", "5"]).unwrap();
        let packed = |seed: u64| {
            let (mut batch, mut rng) = (Vec::new(), Rng::new(seed, 0));
            (0..2000).for_each(|_| add_op(&mut batch, &mut rng, &args));
            batch.iter().map(Cmd::get_packed_command).collect::<Vec<_>>()
        };
        assert_eq!(packed(1), packed(1));
        assert_ne!(packed(1), packed(2));
        for cmd in packed(3).iter().map(|p| String::from_utf8_lossy(p).into_owned()) {
            if cmd.contains("RENAME") || cmd.contains("COPY") {
                let tags: Vec<_> = cmd.match_indices('{').map(|(i, _)| &cmd[i..i + 3]).collect();
                assert!(tags.len() == 2 && tags[0] == tags[1], "{cmd:?}");
            }
        }
    }
}
