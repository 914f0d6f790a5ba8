//! `ferry-tools fill`: loads a server with N keys, fast and reproducibly. Every key's type, size, content
//! and TTL come from a random generator seeded by (`--seed`, key index), so the same flags give the same
//! data whatever the thread count or pipeline boundaries. Writes go out in pipelines of about 1000
//! commands, one connection per thread. It does not flush the server first: keys it writes replace the
//! same-named keys (collections are deleted before they are rebuilt), everything else is left alone.
//!
//! Profile `mixed` (the benchmark mix): 70% strings of 50-500 random bytes, 6% each hashes, lists, sets,
//! sorted sets and streams with 5-20 members, a third of the streams with a consumer group holding a few
//! pending entries; 30% of all keys get a TTL of 1-24 hours so nothing expires during a run; the first
//! few keys are awkward ones (binary, `,` `"` newline, backslash, the empty key). Profile `big` is not
//! implemented yet.

use std::thread;
use std::time::{Duration, Instant};

use argh::FromArgs;
use redis::{Connection, Pipeline};

#[derive(FromArgs)]
#[argh(subcommand, name = "fill")]
/// Fill a server with a deterministic key mix.
pub struct Args {
    /// server to fill: redis://host:port[/db] or host:port
    #[argh(option)]
    url: String,
    /// number of keys to write
    #[argh(option)]
    keys: u64,
    /// seed of the generator; the same seed gives the same data (default 1)
    #[argh(option, default = "1")]
    seed: u64,
    /// key mix: mixed (default); big is not implemented yet
    #[argh(option, default = "String::from(\"mixed\")")]
    profile: String,
    /// writer threads, each with its own connection (default 2)
    #[argh(option, default = "2")]
    threads: usize,
}

/// Commands per pipeline: big enough to hide the round trip, small enough to keep replies short.
const PIPELINE_COMMANDS: usize = 1000;

/// Keys written first, whatever the seed: each one has broken a naive tool somewhere. Kept without a TTL.
const AWKWARD: &[&[u8]] = &[
    b"",
    b"\xff",
    b"comma,quote\"new\nline",
    b"back\\slash and space",
    b"\x00nul\r\ncrlf\t",
    "unicode-\u{2603}".as_bytes(),
];

pub fn run(args: &Args) -> Result<(), String> {
    match args.profile.as_str() {
        "mixed" => {}
        "big" => return Err("--profile big is not implemented yet (use --profile mixed)".into()),
        other => return Err(format!("--profile must be mixed or big (got {other:?})")),
    }
    if args.threads == 0 {
        return Err("--threads must be at least 1 (got 0)".into());
    }
    let start = Instant::now();
    // Connect every thread before writing anything, so a bad --url fails with nothing half-filled.
    let connections = (0..args.threads)
        .map(|_| crate::connect(&args.url, "server", Some(Duration::from_secs(60))))
        .collect::<Result<Vec<_>, _>>()?;
    let threads = connections.len() as u64;
    let results: Vec<Result<(), String>> = thread::scope(|scope| {
        let handles: Vec<_> = connections
            .into_iter()
            .enumerate()
            .map(|(n, mut con)| {
                let n = n as u64;
                let range = (args.keys * n / threads)..(args.keys * (n + 1) / threads);
                scope.spawn(move || fill_range(&mut con, args.seed, range))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a writer thread panicked".into())))
            .collect()
    });
    results.into_iter().collect::<Result<(), String>>()?;
    println!("filled {} keys in {:.2} s", args.keys, start.elapsed().as_secs_f64());
    Ok(())
}

/// Writes keys `range` (indices into the key space) through one connection.
fn fill_range(con: &mut Connection, seed: u64, range: std::ops::Range<u64>) -> Result<(), String> {
    let mut pipe = Pipeline::with_capacity(PIPELINE_COMMANDS + 64);
    for index in range {
        add_key(&mut pipe, seed, index);
        if pipe.len() >= PIPELINE_COMMANDS {
            flush(&mut pipe, con)?;
        }
    }
    flush(&mut pipe, con)
}

fn flush(pipe: &mut Pipeline, con: &mut Connection) -> Result<(), String> {
    if pipe.is_empty() {
        return Ok(());
    }
    pipe.exec(con).map_err(|e| format!("write failed: {e}"))?;
    pipe.clear();
    Ok(())
}

/// Appends the commands that create key `index` (and its TTL) to `pipe`.
fn add_key(pipe: &mut Pipeline, seed: u64, index: u64) {
    if let Some(key) = AWKWARD.get(index as usize) {
        add_awkward(pipe, index, key);
        return;
    }
    let mut rng = Rng::new(seed, index);
    let kind = rng.below(100);
    // Decided for every key, so the TTL share is 30% of all keys whatever their type.
    let ttl_ms = (rng.below(100) < 30).then(|| rng.between(3_600_000, 86_400_000));
    if kind < 70 {
        let key = format!("str:{index}");
        let len = rng.between(50, 500) as usize;
        let value = rng.bytes(len);
        pipe.cmd("SET").arg(&key).arg(value);
        if let Some(ms) = ttl_ms {
            pipe.arg("PX").arg(ms);
        }
        pipe.ignore();
        return;
    }
    let members = rng.between(5, 20);
    let key = match kind {
        70..=75 => {
            let key = format!("hash:{index}");
            pipe.cmd("DEL").arg(&key).ignore();
            pipe.cmd("HSET").arg(&key);
            for m in 0..members {
                let len = rng.between(5, 60) as usize;
                pipe.arg(format!("field{m}")).arg(rng.bytes(len));
            }
            pipe.ignore();
            key
        }
        76..=81 => {
            let key = format!("list:{index}");
            pipe.cmd("DEL").arg(&key).ignore();
            pipe.cmd("RPUSH").arg(&key);
            for _ in 0..members {
                let len = rng.between(5, 60) as usize;
                pipe.arg(rng.bytes(len));
            }
            pipe.ignore();
            key
        }
        82..=87 => {
            let key = format!("set:{index}");
            pipe.cmd("DEL").arg(&key).ignore();
            pipe.cmd("SADD").arg(&key);
            for m in 0..members {
                // The index prefix keeps members distinct, so the set really has `members` of them.
                let mut member = format!("m{m}:").into_bytes();
                let len = rng.between(4, 40) as usize;
                member.extend(rng.bytes(len));
                pipe.arg(member);
            }
            pipe.ignore();
            key
        }
        88..=93 => {
            let key = format!("zset:{index}");
            pipe.cmd("DEL").arg(&key).ignore();
            pipe.cmd("ZADD").arg(&key);
            for m in 0..members {
                let score = (rng.below(2_000_000) as f64 - 1_000_000.0) / 8.0;
                pipe.arg(score).arg(format!("member{m}"));
            }
            pipe.ignore();
            key
        }
        _ => {
            let key = format!("stream:{index}");
            pipe.cmd("DEL").arg(&key).ignore();
            // Explicit IDs: `*` would stamp the wall clock and break reproducibility.
            for m in 0..members {
                let len = rng.between(5, 60) as usize;
                pipe.cmd("XADD").arg(&key).arg(format!("{}-1", 1_000 + m));
                pipe.arg("field").arg(rng.bytes(len)).arg("n").arg(m).ignore();
            }
            if rng.below(3) == 0 {
                let pending = rng.between(1, 4);
                pipe.cmd("XGROUP").arg("CREATE").arg(&key).arg("group").arg("0").ignore();
                pipe.cmd("XREADGROUP").arg("GROUP").arg("group").arg("consumer-1");
                pipe.arg("COUNT").arg(pending).arg("STREAMS").arg(&key).arg(">").ignore();
            }
            key
        }
    };
    if let Some(ms) = ttl_ms {
        pipe.cmd("PEXPIRE").arg(&key).arg(ms).ignore();
    }
}

/// The awkward keys are strings except two, so a copy tool must also handle such names on a collection.
fn add_awkward(pipe: &mut Pipeline, index: u64, key: &[u8]) {
    match index {
        1 => {
            pipe.cmd("DEL").arg(key).ignore();
            pipe.cmd("HSET").arg(key).arg(b"\xff\x00field".as_slice()).arg(b"v,\"\n".as_slice()).ignore();
        }
        3 => {
            pipe.cmd("DEL").arg(key).ignore();
            pipe.cmd("RPUSH").arg(key).arg("a").arg(b"\xff".as_slice()).arg("").ignore();
        }
        _ => {
            pipe.cmd("SET").arg(key).arg(format!("awkward key #{index}")).ignore();
        }
    }
}

/// SplitMix64: tiny, fast, and good enough for test data; seeded per key so keys are independent.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, index: u64) -> Self {
        let mut mixer = Rng(seed ^ 0x5eed_f0e1_7a11_0000);
        let base = mixer.next_u64();
        let mut rng = Rng(base ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        rng.next_u64();
        rng
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`; the modulo bias is irrelevant at these sizes.
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A number in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_and_index_give_same_bytes() {
        assert_eq!(Rng::new(7, 42).bytes(33), Rng::new(7, 42).bytes(33));
        assert_ne!(Rng::new(7, 42).bytes(33), Rng::new(7, 43).bytes(33));
        assert_ne!(Rng::new(7, 42).bytes(33), Rng::new(8, 42).bytes(33));
    }

    #[test]
    fn between_stays_in_bounds() {
        let mut rng = Rng::new(1, 1);
        for _ in 0..10_000 {
            let n = rng.between(50, 500);
            assert!((50..=500).contains(&n));
        }
    }
}
