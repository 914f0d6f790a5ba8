//! `redis-ferry report merge`: the `--report` files of a sharded run (`--shard I/N`, one process per
//! shard, e.g. the pods of a Kubernetes Indexed Job) as one summary line.
//!
//! Every report must be redis-ferry's, of a `copy` with `--shard`, and all must agree on N, SOURCE, TARGET
//! and the options that shape the copy (the per-process paths, `--errors`, `--lock`, `--report`,
//! `--checkpoint`, may differ); a shard that ran twice (a retried pod) counts once, by its newest report
//! (the latest `end`), with the counters of every run of it when it ran on a checkpoint (`total`). The
//! counters are summed; `seconds` is the longest shard's, since shards run side by
//! side, and `keys_per_sec` the total over it. The exit code is the worst shard's, by what a scheduler
//! should do about it (see [`Exit::severity`]), and at least 1 when shards are missing, which are named.
//! Input is bounded: at most [`MAX_INPUT`] bytes are read in all. No Redis I/O.

use std::collections::BTreeMap;
use std::io::Read;

use serde_json::Value;

use crate::exit::{Exit, Fatal};

/// The most bytes read from all the reports together (a report is at most 4 KB).
pub const MAX_INPUT: u64 = 64 << 20;
/// Options that name a process's own files: they may differ between shards.
const PER_PROCESS: [&str; 4] = ["errors", "lock", "report", "checkpoint"];
/// The counters summed over the shards.
const COUNTERS: [&str; 6] = ["scanned", "copied", "skipped", "expired", "failed", "evicted"];

/// One shard's report, as read.
#[derive(Debug, Clone)]
struct ShardReport {
    /// Where it came from, for messages.
    from: String,
    /// Its shard index.
    index: u32,
    /// How many shards the run has.
    of: u32,
    /// `end`, RFC 3339 (they compare as text).
    end: String,
    /// `exit_code`.
    exit: u8,
    /// `seconds`.
    seconds: f64,
    /// The counters, in the order of [`COUNTERS`].
    counts: [u64; 6],
    /// `options` without the per-process paths, with SOURCE and TARGET.
    options: Value,
}

/// Runs `report merge`: the summary line on standard output, the exit code.
pub fn main(paths: &[String]) -> Exit {
    match merge(paths) {
        Ok((summary, exit)) => crate::out::results(&summary, exit),
        Err(e) => {
            crate::out::error(&e.message);
            e.exit
        }
    }
}

/// Reads `paths` (`-` is standard input) and merges them: the summary line for standard output and the
/// exit code; a report that cannot be read, or reports of different runs, are exit 2.
pub fn merge(paths: &[String]) -> Result<(String, Exit), Fatal> {
    if paths.is_empty() {
        return Err(Fatal::bad_input("report merge needs the report files (or - for standard input)"));
    }
    let mut left = MAX_INPUT;
    let mut reports = Vec::new();
    for path in paths {
        let mut text = Vec::new();
        let read = if path == "-" {
            std::io::stdin().take(left + 1).read_to_end(&mut text)
        } else {
            std::fs::File::open(path).and_then(|f| f.take(left + 1).read_to_end(&mut text))
        };
        let name = if path == "-" { "standard input".to_string() } else { path.clone() };
        let n = read.map_err(|e| Fatal::bad_input(format!("report merge: {name}: cannot read it ({e})")))?;
        if n as u64 > left {
            return Err(Fatal::bad_input(format!(
                "report merge: more than {} MiB of reports",
                MAX_INPUT >> 20
            )));
        }
        left -= n as u64;
        let values = serde_json::Deserializer::from_slice(&text).into_iter::<Value>();
        let mut found = 0;
        for (i, value) in values.enumerate() {
            let value =
                value.map_err(|e| Fatal::bad_input(format!("report merge: {name}: not JSON ({e})")))?;
            let from = if path == "-" { format!("{name} (report {})", i + 1) } else { name.clone() };
            reports.push(
                shard_report(&from, &value).map_err(|e| Fatal::bad_input(format!("report merge: {e}")))?,
            );
            found += 1;
        }
        if found == 0 {
            return Err(Fatal::bad_input(format!("report merge: {name} holds no report")));
        }
    }
    combine(reports)
}

/// The fields merge needs from one report.
fn shard_report(from: &str, v: &Value) -> Result<ShardReport, String> {
    if v["tool"] != "redis-ferry" || v["command"] != "copy" {
        return Err(format!("{from} is not the --report of a redis-ferry copy"));
    }
    let shard = &v["shard"];
    let (Some(index), Some(of)) = (shard["index"].as_u64(), shard["of"].as_u64()) else {
        return Err(format!("{from} is the report of a run without --shard I/N"));
    };
    let number = |field: &str| v[field].as_u64().ok_or_else(|| format!("{from}: no {field}"));
    // A shard started again on its checkpoint counts every run of it: `total`.
    let counted = if v["total"].is_object() { &v["total"] } else { v };
    let mut counts = [0u64; 6];
    for (c, field) in counts.iter_mut().zip(COUNTERS) {
        // `evicted` is absent from reports of earlier versions.
        let n = counted[field].as_u64();
        *c =
            if field == "evicted" { n.unwrap_or(0) } else { n.ok_or_else(|| format!("{from}: no {field}"))? };
    }
    let mut options = v["options"].clone();
    let Some(map) = options.as_object_mut() else { return Err(format!("{from}: no options")) };
    for key in PER_PROCESS {
        map.remove(key);
    }
    Ok(ShardReport {
        from: from.to_string(),
        index: u32::try_from(index).map_err(|_| format!("{from}: shard index {index}"))?,
        of: u32::try_from(of).map_err(|_| format!("{from}: shard count {of}"))?,
        end: v["end"].as_str().ok_or_else(|| format!("{from}: no end"))?.to_string(),
        exit: u8::try_from(number("exit_code")?).map_err(|_| format!("{from}: exit_code"))?,
        seconds: v["seconds"].as_f64().ok_or_else(|| format!("{from}: no seconds"))?,
        counts,
        options,
    })
}

/// Checks that the reports are of one run, keeps the newest of each shard, and sums them up.
fn combine(reports: Vec<ShardReport>) -> Result<(String, Exit), Fatal> {
    let first = reports.first().expect("at least one report").clone();
    let mut shards: BTreeMap<u32, ShardReport> = BTreeMap::new();
    for r in reports {
        if r.of != first.of {
            return Err(Fatal::bad_input(format!(
                "report merge: {} is shard {}/{}, but {} is of {} shards: reports of different runs",
                r.from, r.index, r.of, first.from, first.of
            )));
        }
        if r.options != first.options {
            return Err(Fatal::bad_input(format!(
                "report merge: {} and {} are of different copies (source, target or options differ)",
                first.from, r.from
            )));
        }
        if r.index >= r.of {
            return Err(Fatal::bad_input(format!("report merge: {}: shard {}/{}", r.from, r.index, r.of)));
        }
        match shards.get(&r.index) {
            Some(kept) if kept.end >= r.end => {
                log::info!(
                    "shard {} ran more than once: {} (end {}) counts, not {}",
                    r.index,
                    kept.from,
                    kept.end,
                    r.from
                )
            }
            Some(kept) => {
                log::info!(
                    "shard {} ran more than once: {} (end {}) counts, not {}",
                    r.index,
                    r.from,
                    r.end,
                    kept.from
                );
                shards.insert(r.index, r);
            }
            None => {
                shards.insert(r.index, r);
            }
        }
    }
    let missing: Vec<u32> = (0..first.of).filter(|i| !shards.contains_key(i)).collect();
    let mut sums = [0u64; 6];
    let mut seconds = 0.0f64;
    let mut exit = Exit::Ok;
    for r in shards.values() {
        for (s, c) in sums.iter_mut().zip(r.counts) {
            *s += c;
        }
        seconds = seconds.max(r.seconds);
        let code = Exit::from_code(r.exit);
        if code.severity() > exit.severity() {
            exit = code;
        }
    }
    if !missing.is_empty() {
        let list = missing.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
        crate::out::error(&format!("{} of {} shards have no report: {list}", missing.len(), first.of));
        if exit.severity() < Exit::KeysFailed.severity() {
            exit = Exit::KeysFailed;
        }
    }
    let rate = if seconds > 0.0 { sums[0] as f64 / seconds } else { 0.0 };
    let line = format!(
        "scanned={} copied={} skipped={} expired={} failed={} seconds={seconds:.3} keys_per_sec={rate:.0} evicted={} \
         shards={} missing={}",
        sums[0],
        sums[1],
        sums[2],
        sums[3],
        sums[4],
        sums[5],
        shards.len(),
        missing.len()
    );
    Ok((line, exit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(index: u32, of: u32, end: &str, exit: u8, copied: u64) -> Value {
        serde_json::json!({
            "tool": "redis-ferry", "command": "copy", "shard": {"index": index, "of": of},
            "end": end, "exit_code": exit, "seconds": 1.5 + f64::from(index),
            "scanned": copied, "copied": copied, "skipped": 0, "expired": 0, "failed": 0, "evicted": 0,
            "options": {"source": "a:1/0", "target": "b:2/0", "errors": format!("e{index}.csv"), "mode": "auto"}
        })
    }

    fn reports(values: &[Value]) -> Vec<ShardReport> {
        values.iter().enumerate().map(|(i, v)| shard_report(&format!("r{i}"), v).unwrap()).collect()
    }

    #[test]
    fn shards_add_up_and_the_newest_report_of_a_shard_counts() {
        let rs = reports(&[
            report(0, 3, "2026-12-01T10:00:00.000Z", 0, 10),
            report(1, 3, "2026-12-01T10:00:00.000Z", 3, 4),
            report(1, 3, "2026-12-01T10:05:00.000Z", 0, 20),
            report(2, 3, "2026-12-01T10:00:00.000Z", 1, 30),
        ]);
        let (line, exit) = combine(rs).unwrap();
        assert_eq!(exit, Exit::KeysFailed);
        assert!(
            line.starts_with(
                "scanned=60 copied=60 skipped=0 expired=0 failed=0 seconds=3.500 keys_per_sec=17"
            ),
            "{line}"
        );
        assert!(line.ends_with("evicted=0 shards=3 missing=0"), "{line}");
    }

    #[test]
    fn missing_shards_and_other_runs_are_said() {
        let (line, exit) = combine(reports(&[report(0, 3, "t", 0, 1), report(2, 3, "t", 0, 1)])).unwrap();
        assert_eq!((exit, line.ends_with("shards=2 missing=1")), (Exit::KeysFailed, true));
        let err = combine(reports(&[report(0, 3, "t", 0, 1), report(1, 4, "t", 0, 1)])).unwrap_err();
        assert!(err.message.contains("of different runs"), "{}", err.message);
        let mut other = report(1, 3, "t", 0, 1);
        other["options"]["mode"] = "typed".into();
        let err = combine(reports(&[report(0, 3, "t", 0, 1), other])).unwrap_err();
        assert!(err.message.contains("different copies"), "{}", err.message);
        let mut whole = report(0, 3, "t", 0, 1);
        whole["shard"] = Value::Null;
        assert!(shard_report("w", &whole).unwrap_err().contains("without --shard"));
        assert!(shard_report("x", &serde_json::json!({"tool": "other"})).is_err());
    }
}
