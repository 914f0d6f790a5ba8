//! `redis-ferry report merge`: the `--report` files of a sharded run (`--shard I/N`, one process per
//! shard, e.g. the pods of a Kubernetes Indexed Job) as one summary line.
//!
//! Every report must be redis-ferry's, of a `copy` with `--shard`, and all must agree on N and on the copy
//! (`copy_id`: SOURCE, TARGET and the options that say which keys go where; tuning flags and per-process
//! files may differ); a shard that ran twice (a retried pod) counts once, by its newest report (the
//! latest `end`), with the counters of every run of it when it ran on a checkpoint (`total`). The
//! counters are summed; `seconds` is the longest shard's, since shards run side by side, and
//! `keys_per_sec` the keys those last runs scanned over it. The exit code is the worst shard's, by what
//! a scheduler should do about it (see [`Exit::severity`]), and at least 1 when shards are missing,
//! which are named. Reports are read one at a time, each at most [`MAX_REPORT_TEXT`] bytes, and only
//! what the summary needs is kept of each: memory stays small whatever the input. No Redis I/O.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::{self, BufReader, Read};
use std::rc::Rc;

use serde_json::Value;

use super::report::COPY_ID_OPTIONS;
use crate::exit::{Exit, Fatal};
use crate::redis::cluster::SLOTS;

/// The most bytes one report may take in the input (a report is at most 4 KB; pretty-printed again by
/// another tool it may grow).
pub const MAX_REPORT_TEXT: u64 = 16 << 10;
/// The counters summed over the shards.
const COUNTERS: [&str; 6] = ["scanned", "copied", "skipped", "expired", "failed", "evicted"];

/// One shard's report, as read: what the summary needs.
#[derive(Debug, Clone)]
struct ShardReport {
    /// Where it came from, for messages.
    from: String,
    /// Its shard index.
    index: u32,
    /// How many shards the run has.
    of: u32,
    /// `copy_id`: the copy it is a part of.
    copy_id: String,
    /// `end`, RFC 3339 (they compare as text).
    end: String,
    /// `exit_code`.
    exit: u8,
    /// `seconds`.
    seconds: f64,
    /// The counters, in the order of [`COUNTERS`]: `total` when the report has it, else the run's own.
    counts: [u64; 6],
    /// This run's own `scanned`, for the rate.
    scanned: u64,
    /// The options of [`COPY_ID_OPTIONS`], to say what differs between two copies.
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
    let bad = |m: String| Fatal::bad_input(format!("report merge: {m}"));
    let mut run = Run::default();
    for path in paths {
        let stdin = path == "-";
        let name = if stdin { "standard input".to_string() } else { path.clone() };
        let input: Box<dyn Read> = if stdin {
            Box::new(io::stdin().lock())
        } else {
            Box::new(std::fs::File::open(path).map_err(|e| bad(format!("{name}: cannot read it ({e})")))?)
        };
        let (read, mark) = (Rc::new(Cell::new(0u64)), Rc::new(Cell::new(0u64)));
        let bounded =
            Bounded { inner: BufReader::new(input), read: Rc::clone(&read), mark: Rc::clone(&mark) };
        let mut found = 0;
        for value in serde_json::Deserializer::from_reader(bounded).into_iter::<Value>() {
            let value = value.map_err(|e| match e.is_io() {
                true => bad(format!("{name}: {e}")),
                false => bad(format!("{name}: not JSON ({e})")),
            })?;
            mark.set(read.get());
            found += 1;
            let from = if stdin { format!("{name} (report {found})") } else { name.clone() };
            run.add(shard_report(&from, &value).map_err(bad)?).map_err(bad)?;
        }
        if found == 0 {
            return Err(bad(format!("{name} holds no report")));
        }
    }
    run.summary().map_err(bad)
}

/// A reader that fails once more than [`MAX_REPORT_TEXT`] bytes were read since `mark` (set after each
/// report), so that one endless or huge value is refused before it is held.
struct Bounded<R> {
    inner: R,
    read: Rc<Cell<u64>>,
    mark: Rc<Cell<u64>>,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.read.get() - self.mark.get() > MAX_REPORT_TEXT {
            let kib = MAX_REPORT_TEXT >> 10;
            return Err(io::Error::other(format!(
                "a value of more than {kib} KiB: not a redis-ferry report"
            )));
        }
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
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
    if of == 0 || of > SLOTS as u64 || index >= of {
        return Err(format!("{from}: shard {index}/{of} is not one --shard accepts"));
    }
    let number = |field: &str| v[field].as_u64().ok_or_else(|| format!("{from}: no {field}"));
    // A shard started again on its checkpoint counts every run of it: `total`.
    let counted = if v["total"].is_object() { &v["total"] } else { v };
    let mut counts = [0u64; 6];
    for (c, field) in counts.iter_mut().zip(COUNTERS) {
        *c = counted[field].as_u64().ok_or_else(|| format!("{from}: no {field}"))?;
    }
    let Some(all) = v["options"].as_object() else { return Err(format!("{from}: no options")) };
    let options =
        COPY_ID_OPTIONS.iter().filter_map(|k| all.get(*k).map(|o| (k.to_string(), o.clone()))).collect();
    let text =
        |field: &str| v[field].as_str().map(str::to_string).ok_or_else(|| format!("{from}: no {field}"));
    Ok(ShardReport {
        from: from.to_string(),
        index: index as u32,
        of: of as u32,
        copy_id: text("copy_id")?,
        end: text("end")?,
        exit: u8::try_from(number("exit_code")?).map_err(|_| format!("{from}: exit_code"))?,
        seconds: v["seconds"]
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .ok_or_else(|| format!("{from}: no seconds"))?,
        counts,
        scanned: number("scanned")?,
        options,
    })
}

/// The reports read so far: the first (what every other must agree with) and the newest of each shard.
#[derive(Default)]
struct Run {
    first: Option<ShardReport>,
    shards: BTreeMap<u32, ShardReport>,
}

impl Run {
    /// Checks that `r` is of the same run as the first report, and keeps it if it is its shard's newest.
    fn add(&mut self, mut r: ShardReport) -> Result<(), String> {
        let Some(first) = &self.first else {
            self.first = Some(r.clone());
            self.shards.insert(r.index, ShardReport { options: Value::Null, ..r });
            return Ok(());
        };
        if r.of != first.of {
            return Err(format!(
                "{} is shard {}/{}, but {} is of {} shards: reports of different runs",
                r.from, r.index, r.of, first.from, first.of
            ));
        }
        if r.copy_id != first.copy_id {
            return Err(format!(
                "{} and {} are of different copies ({})",
                first.from,
                r.from,
                differ(first, &r)
            ));
        }
        r.options = Value::Null;
        let newer = self.shards.get(&r.index).is_none_or(|kept| r.end > kept.end);
        if let Some(kept) = self.shards.get(&r.index) {
            let (counts, not) = if newer { (&r, kept) } else { (kept, &r) };
            log::info!(
                "shard {} ran more than once: {} (end {}) counts, not {}",
                r.index,
                counts.from,
                counts.end,
                not.from
            );
        }
        if newer {
            self.shards.insert(r.index, r);
        }
        Ok(())
    }

    /// The summary line and the exit code; missing shards are named on standard error.
    fn summary(&self) -> Result<(String, Exit), String> {
        let of = self.first.as_ref().map_or(0, |f| f.of);
        let missing: Vec<u32> = (0..of).filter(|i| !self.shards.contains_key(i)).collect();
        let overflow =
            || "the counters add up to more than a 64-bit number: reports of no real run".to_string();
        let (mut sums, mut scanned) = ([0u64; 6], 0u64);
        let mut seconds = 0.0f64;
        let mut exit = Exit::Ok;
        for r in self.shards.values() {
            for (s, c) in sums.iter_mut().zip(r.counts) {
                *s = s.checked_add(c).ok_or_else(overflow)?;
            }
            scanned = scanned.checked_add(r.scanned).ok_or_else(overflow)?;
            seconds = seconds.max(r.seconds);
            let code = Exit::from_code(r.exit);
            if code.severity() > exit.severity() {
                exit = code;
            }
        }
        if !missing.is_empty() {
            let shown: Vec<String> = missing.iter().take(20).map(u32::to_string).collect();
            let more =
                if missing.len() > 20 { format!(" and {} more", missing.len() - 20) } else { String::new() };
            crate::out::error(&format!(
                "{} of {of} shards have no report: {}{more}",
                missing.len(),
                shown.join(", ")
            ));
            if exit.severity() < Exit::KeysFailed.severity() {
                exit = Exit::KeysFailed;
            }
        }
        let rate = if seconds > 0.0 { scanned as f64 / seconds } else { 0.0 };
        let line = format!(
            "scanned={} copied={} skipped={} expired={} failed={} seconds={seconds:.3} keys_per_sec={rate:.0} \
             evicted={} shards={} missing={}",
            sums[0],
            sums[1],
            sums[2],
            sums[3],
            sums[4],
            sums[5],
            self.shards.len(),
            missing.len()
        );
        Ok((line, exit))
    }
}

/// What differs between the copies of two reports, as far as their options show it.
fn differ(a: &ShardReport, b: &ShardReport) -> String {
    let (Some(x), Some(y)) = (a.options.as_object(), b.options.as_object()) else {
        return "SOURCE, TARGET or options differ".to_string();
    };
    let named: Vec<String> = COPY_ID_OPTIONS
        .iter()
        .filter(|k| x.get(**k) != y.get(**k))
        .map(|k| match *k {
            "source" => "SOURCE".to_string(),
            "target" => "TARGET".to_string(),
            other => format!("--{}", other.replace('_', "-")),
        })
        .collect();
    match named.is_empty() {
        true => "SOURCE, TARGET or options differ".to_string(),
        false => format!("{} differ", named.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(index: u32, of: u32, end: &str, exit: u8, copied: u64) -> Value {
        serde_json::json!({
            "tool": "redis-ferry", "command": "copy", "shard": {"index": index, "of": of}, "copy_id": "c1",
            "end": end, "exit_code": exit, "seconds": 1.5 + f64::from(index),
            "scanned": copied, "copied": copied, "skipped": 0, "expired": 0, "failed": 0, "evicted": 0,
            "options": {"source": "a:1/0", "target": "b:2/0", "errors": format!("e{index}.csv"), "mode": "auto"}
        })
    }

    fn merged(values: &[Value]) -> Result<(String, Exit), String> {
        let mut run = Run::default();
        for (i, v) in values.iter().enumerate() {
            run.add(shard_report(&format!("r{i}"), v)?)?;
        }
        run.summary()
    }

    #[test]
    fn shards_add_up_and_the_newest_report_of_a_shard_counts() {
        let (line, exit) = merged(&[
            report(0, 3, "2026-12-01T10:00:00.000Z", 0, 10),
            report(1, 3, "2026-12-01T10:00:00.000Z", 3, 4),
            report(1, 3, "2026-12-01T10:05:00.000Z", 0, 20),
            report(2, 3, "2026-12-01T10:00:00.000Z", 1, 30),
        ])
        .unwrap();
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
    fn a_resumed_shard_counts_its_total_and_its_last_run_sets_the_rate() {
        let mut resumed = report(0, 2, "t", 0, 10);
        resumed["total"] = serde_json::json!({"scanned": 30, "copied": 30, "skipped": 0, "expired": 0, "failed": 0, "evicted": 0});
        let (line, _) = merged(&[resumed, report(1, 2, "t", 0, 5)]).unwrap();
        // 35 keys in all; the last runs scanned 15 keys in at most 2.5 s.
        assert!(
            line.starts_with(
                "scanned=35 copied=35 skipped=0 expired=0 failed=0 seconds=2.500 keys_per_sec=6 "
            ),
            "{line}"
        );
    }

    #[test]
    fn missing_shards_and_other_runs_are_said() {
        let (line, exit) = merged(&[report(0, 3, "t", 0, 1), report(2, 3, "t", 0, 1)]).unwrap();
        assert_eq!((exit, line.ends_with("shards=2 missing=1")), (Exit::KeysFailed, true));
        let err = merged(&[report(0, 3, "t", 0, 1), report(1, 4, "t", 0, 1)]).unwrap_err();
        assert!(err.contains("of different runs"), "{err}");
        let mut other = report(1, 3, "t", 0, 1);
        other["copy_id"] = "c2".into();
        other["options"]["mode"] = "typed".into();
        let err = merged(&[report(0, 3, "t", 0, 1), other]).unwrap_err();
        assert!(err.contains("are of different copies (--mode differ)"), "{err}");
        // Options that are not part of the copy may differ: the same copy_id.
        let mut tuned = report(1, 3, "t", 0, 1);
        tuned["options"]["rate"] = 500.into();
        assert!(merged(&[report(0, 3, "t", 0, 1), tuned]).is_ok());
        let mut whole = report(0, 3, "t", 0, 1);
        whole["shard"] = Value::Null;
        assert!(shard_report("w", &whole).unwrap_err().contains("without --shard"));
        assert!(shard_report("x", &serde_json::json!({"tool": "other"})).is_err());
    }

    #[test]
    fn reports_no_run_could_write_are_refused() {
        for (index, of) in [(0, 0), (3, 3), (0, 16385), (0, 4_000_000_000u64)] {
            let mut r = report(0, 3, "t", 0, 1);
            r["shard"] = serde_json::json!({"index": index, "of": of});
            assert!(
                shard_report("r", &r).unwrap_err().contains("is not one --shard accepts"),
                "{index}/{of}"
            );
        }
        let mut huge = report(0, 2, "t", 0, u64::MAX);
        huge["scanned"] = u64::MAX.into();
        let err = merged(&[huge.clone(), {
            huge["shard"]["index"] = 1.into();
            huge
        }])
        .unwrap_err();
        assert!(err.contains("more than a 64-bit number"), "{err}");
        let mut r = report(0, 1, "t", 0, 1);
        r["seconds"] = (-1.0).into();
        assert!(shard_report("r", &r).is_err());
    }

    #[test]
    fn one_endless_value_is_refused_before_it_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.json");
        let mut text = String::from("{\"tool\": \"redis-ferry\", \"x\": [");
        text.push_str(&"0,".repeat(MAX_REPORT_TEXT as usize));
        text.push_str("0]}");
        std::fs::write(&path, text).unwrap();
        let err = merge(&[path.to_str().unwrap().to_string()]).unwrap_err();
        assert!(err.message.contains("more than 16 KiB"), "{}", err.message);
        assert_eq!(err.exit, Exit::BadInput);
    }
}
