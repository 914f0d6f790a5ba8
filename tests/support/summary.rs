//! The last stdout line of a run, parsed and checked against its contract: the `copy` summary
//! ([`summary`]: the first seven pairs in order, and `scanned = copied + skipped + expired + failed`,
//! `+ deleted` for a follow)
//! and the `verify` line ([`verify_summary`]).

use std::process::Output;

use super::dump;

/// The parsed last stdout line of `copy`.
#[derive(Debug, Clone)]
pub struct Summary {
    pub scanned: u64,
    pub copied: u64,
    pub skipped: u64,
    pub expired: u64,
    pub failed: u64,
    pub seconds: f64,
    pub keys_per_sec: f64,
    /// Every `key=value` pair in line order, including the ones after `keys_per_sec`.
    pub pairs: Vec<(String, String)>,
    /// The raw line.
    pub line: String,
}

impl Summary {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// The last non-empty stdout line split into `key=value` pairs (single spaces between pairs).
pub fn last_line_pairs(out: &Output) -> (String, Vec<(String, String)>) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| panic!("no output on stdout\n{}", dump(out)))
        .to_string();
    let pairs = line
        .split(' ')
        .map(|tok| {
            let (k, v) = tok
                .split_once('=')
                .unwrap_or_else(|| panic!("summary token {tok:?} is not key=value\n{}", dump(out)));
            (k.to_string(), v.to_string())
        })
        .collect();
    (line, pairs)
}

/// Parses the `copy` summary (last stdout line) and checks its contract: the first seven pairs in
/// order, and the promise `scanned = copied + skipped + expired + failed`.
#[track_caller]
pub fn summary(out: &Output) -> Summary {
    let (line, pairs) = last_line_pairs(out);
    const ORDER: [&str; 7] = ["scanned", "copied", "skipped", "expired", "failed", "seconds", "keys_per_sec"];
    let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        names.len() >= ORDER.len() && names[..ORDER.len()] == ORDER,
        "summary line {line:?} does not start with {ORDER:?}\n{}",
        dump(out)
    );
    let int = |i: usize| -> u64 {
        pairs[i].1.parse().unwrap_or_else(|_| panic!("{} is not an integer in {line:?}", pairs[i].0))
    };
    let float = |i: usize| -> f64 {
        pairs[i].1.parse().unwrap_or_else(|_| panic!("{} is not a number in {line:?}", pairs[i].0))
    };
    let s = Summary {
        scanned: int(0),
        copied: int(1),
        skipped: int(2),
        expired: int(3),
        failed: int(4),
        seconds: float(5),
        keys_per_sec: float(6),
        pairs: pairs.clone(),
        line: line.clone(),
    };
    // A follow adds the bucket of keys it deleted on the target (gone from the source).
    let deleted: u64 = s.get("deleted").map_or(0, |d| d.parse().expect("deleted is an integer"));
    assert_eq!(
        s.scanned,
        s.copied + s.skipped + s.expired + s.failed + deleted,
        "buckets do not add up to scanned in {line:?}\n{}",
        dump(out)
    );
    assert!(s.seconds >= 0.0 && s.keys_per_sec >= 0.0, "negative numbers in {line:?}");
    s
}

/// The parsed last stdout line of `verify`: `matched missing different ttl extra seconds`, then
/// `vanished` and `errors`.
#[derive(Debug, Clone)]
pub struct VerifySummary {
    pub matched: u64,
    pub missing: u64,
    pub different: u64,
    pub ttl: u64,
    pub extra: u64,
    /// Keys gone from the source during the check (not a difference).
    pub vanished: u64,
    /// Keys that could not be read.
    pub errors: u64,
    pub line: String,
}

#[track_caller]
pub fn verify_summary(out: &Output) -> VerifySummary {
    let (line, pairs) = last_line_pairs(out);
    const ORDER: [&str; 6] = ["matched", "missing", "different", "ttl", "extra", "seconds"];
    let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        names.len() >= ORDER.len() && names[..ORDER.len()] == ORDER,
        "verify line {line:?} does not start with {ORDER:?}\n{}",
        dump(out)
    );
    let int = |i: usize| -> u64 {
        pairs[i].1.parse().unwrap_or_else(|_| panic!("{} is not an integer in {line:?}", pairs[i].0))
    };
    let named = |name: &str| -> u64 {
        let (_, v) = pairs
            .iter()
            .find(|(k, _)| k == name)
            .unwrap_or_else(|| panic!("no {name}= in the verify line {line:?}"));
        v.parse().unwrap_or_else(|_| panic!("{name} is not an integer in {line:?}"))
    };
    VerifySummary {
        matched: int(0),
        missing: int(1),
        different: int(2),
        ttl: int(3),
        extra: int(4),
        vanished: named("vanished"),
        errors: named("errors"),
        line,
    }
}

/// (scanned, copied, skipped, expired, failed)
pub fn buckets(s: &Summary) -> (u64, u64, u64, u64, u64) {
    (s.scanned, s.copied, s.skipped, s.expired, s.failed)
}
