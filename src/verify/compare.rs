//! Comparing one batch of source keys with the target: the verdict of each key.
//!
//! For a batch, a compare thread reads TYPE and the deadline on both sides in one pipeline per side: the
//! absolute deadline (PEXPIRETIME) where both servers have it (7.0+), so that two reads made moments
//! apart compare the same thing; else PTTL, with the time between the two reads (this machine's
//! monotonic clock, between the middles of the two round trips) taken off the source's. Then the
//! size of every key whose type agrees (STRLEN, LLEN, SCARD, ZCARD, HLEN, XLEN). Different sizes are a
//! different value at once. Keys up to [`paged::BIG_ELEMENTS`] elements (or [`paged::BIG_STRING`]
//! bytes) are read whole in one pipeline per side and compared normalised (sets and hashes sorted);
//! streams with their consumer groups (XINFO GROUPS), other types by their DUMP payload. Bigger keys
//! are compared one at a time in pages by [`paged`], so memory stays bounded by the page size.
//!
//! A suspected difference is checked again with EXISTS on both sides: a key gone from the source
//! expired or was deleted during the check and is `Vanished`, not a difference. This file does not
//! count, log or write anything; `mod.rs` does that with the verdicts.

use std::time::Instant;

use redis::{FromRedisValue, Value};

use crate::key::{Key, KeyType};
use crate::redis::conn::Conn;
use crate::redis::reply;

use super::paged;

/// The kind of a difference: the `difference` column of the diff CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// On the source, not on the target.
    Missing,
    /// On both sides with different types.
    Type,
    /// Same type, different value.
    Value,
    /// Same value, TTL off by more than the tolerance (or only one side has one).
    Ttl,
    /// On the target, not on the source (`--check-extra`).
    Extra,
}

impl Kind {
    /// The name in the diff CSV and the log.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Missing => "missing",
            Kind::Type => "type",
            Kind::Value => "value",
            Kind::Ttl => "ttl",
            Kind::Extra => "extra",
        }
    }
}

/// What the check of one key found.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Same type, value and TTL.
    Matched,
    /// Gone from the source during the check: not a difference.
    Vanished,
    /// A difference, with a one-line explanation.
    Differs(Kind, String),
    /// The key could not be read: error code and message.
    Error(String, String),
}

/// One side's view of a key.
struct Side {
    /// TYPE reply ("none" when the key does not exist).
    ty: String,
    /// PEXPIRETIME or PTTL reply (-1 no expiry, -2 missing).
    ttl: i64,
}

/// A key whose type is the same on both sides, on its way to a verdict.
struct Candidate {
    /// Its index in the batch.
    index: usize,
    /// The TYPE both sides agree on.
    ty: String,
    /// The TTL difference, found before the value was compared.
    ttl: Option<String>,
}

/// One compare thread's two connections (its own, never shared) and its TTL tolerance.
pub struct Comparer {
    /// Connection to the source.
    pub source: Conn,
    /// Connection to the target.
    pub target: Conn,
    /// Largest TTL difference in milliseconds still counted as equal.
    pub tolerance_ms: i64,
    /// Both servers have PEXPIRETIME: deadlines are compared, not what is left of them.
    pub pexpiretime: bool,
}

/// A reply read as `T`, or the error code and message of an error reply.
type Reply<T> = Result<T, (String, String)>;

/// A key's size on both sides, `(type, source, target)`; `None` for a type without a size command.
type Sizes = Option<(KeyType, i64, i64)>;

impl Comparer {
    /// The verdict of every key of `keys`, in order. `Err` only when a connection failed: the caller
    /// then counts the whole batch as errors.
    pub fn batch(&mut self, keys: &[Key]) -> redis::RedisResult<Vec<Verdict>> {
        let ttl_cmd = if self.pexpiretime { "PEXPIRETIME" } else { "PTTL" };
        let (src, src_at) = sides(&mut self.source, keys, ttl_cmd)?;
        let (dst, dst_at) = sides(&mut self.target, keys, ttl_cmd)?;
        // What is left of a TTL shrinks between the two reads; a deadline does not.
        let elapsed = if self.pexpiretime {
            0
        } else {
            i64::try_from(dst_at.saturating_duration_since(src_at).as_millis()).unwrap_or(i64::MAX)
        };
        let mut verdicts: Vec<Option<Verdict>> = keys.iter().map(|_| None).collect();
        let mut same = Vec::new();
        for (index, (s, d)) in src.into_iter().zip(dst).enumerate() {
            verdicts[index] = Some(match (s, d) {
                (Err((code, message)), _) | (_, Err((code, message))) => Verdict::Error(code, message),
                (Ok(s), _) if s.ty == "none" => Verdict::Vanished,
                (_, Ok(d)) if d.ty == "none" => Verdict::Differs(Kind::Missing, "not on the target".into()),
                (Ok(s), Ok(d)) if s.ty != d.ty => {
                    Verdict::Differs(Kind::Type, format!("{} on the source, {} on the target", s.ty, d.ty))
                }
                (Ok(s), Ok(d)) => {
                    let source_ttl = if s.ttl >= 0 { (s.ttl - elapsed).max(0) } else { s.ttl };
                    let ttl = ttl_difference(ttl_cmd, source_ttl, d.ttl, self.tolerance_ms);
                    same.push(Candidate { index, ty: s.ty, ttl });
                    continue;
                }
            });
        }

        // Sizes first: a different size is a different value, and a big key is not read whole.
        let sizes = self.sizes(keys, &same)?;
        let (mut small, mut big) = (Vec::new(), Vec::new());
        for (c, size) in same.into_iter().zip(sizes) {
            let verdict = match size {
                Err((code, message)) => Verdict::Error(code, message),
                Ok(Some((ty, a, b))) if a != b => Verdict::Differs(
                    Kind::Value,
                    format!("{} {a} on the source, {b} on the target", measure(ty)),
                ),
                Ok(Some((ty, n, _))) if paged::is_big(ty, n) => {
                    big.push((c, ty, n));
                    continue;
                }
                Ok(_) => {
                    small.push(c);
                    continue;
                }
            };
            verdicts[c.index] = Some(verdict);
        }

        let whole = self.whole_values(keys, &small)?;
        for (c, equal) in small.into_iter().zip(whole) {
            verdicts[c.index] = Some(match equal {
                Err((code, message)) => Verdict::Error(code, message),
                Ok(false) => Verdict::Differs(Kind::Value, "the values differ".into()),
                Ok(true) => ttl_verdict(c.ttl),
            });
        }
        for (c, ty, len) in big {
            let key = keys[c.index].as_bytes();
            verdicts[c.index] =
                Some(match paged::compare(&mut self.source, &mut self.target, key, ty, len) {
                    Ok(None) => ttl_verdict(c.ttl),
                    Ok(Some(why)) => Verdict::Differs(Kind::Value, why),
                    Err(e) if reply::is_connection_error(&e) => return Err(e),
                    Err(e) => {
                        let (code, message) = reply::classify(&e);
                        Verdict::Error(code, message)
                    }
                });
        }

        let mut verdicts: Vec<Verdict> = verdicts
            .into_iter()
            .map(|v| v.unwrap_or_else(|| Verdict::Error("PROTOCOL".into(), "no verdict".into())))
            .collect();
        self.recheck(keys, &mut verdicts)?;
        Ok(verdicts)
    }

    /// Reconnects both sides after a connection error.
    pub fn reconnect(&mut self) -> Result<(), crate::redis::connect::ConnectError> {
        self.source.reconnect()?;
        self.target.reconnect()
    }

    /// A suspected difference is only one if the key still exists on the source; and a key that is
    /// gone from the target by now is missing, whatever was suspected before.
    fn recheck(&mut self, keys: &[Key], verdicts: &mut [Verdict]) -> redis::RedisResult<()> {
        let suspects: Vec<usize> =
            (0..keys.len()).filter(|&i| matches!(verdicts[i], Verdict::Differs(..))).collect();
        if suspects.is_empty() {
            return Ok(());
        }
        let exists = |conn: &mut Conn| -> redis::RedisResult<Vec<Value>> {
            let key = |u: usize| keys[suspects[u]].as_bytes();
            let replies = conn.query(
                suspects.len(),
                |u| Some(key(u)),
                |pipe, u| {
                    pipe.cmd("EXISTS").arg(key(u));
                },
            )?;
            Ok(replies.into_values())
        };
        let on_source = exists(&mut self.source)?;
        let on_target = exists(&mut self.target)?;
        for ((&i, s), t) in suspects.iter().zip(on_source).zip(on_target) {
            match (parse::<i64>(s), parse::<i64>(t)) {
                (Err((code, message)), _) | (_, Err((code, message))) => {
                    verdicts[i] = Verdict::Error(code, message)
                }
                (Ok(0), _) => verdicts[i] = Verdict::Vanished,
                (Ok(_), Ok(0)) => verdicts[i] = Verdict::Differs(Kind::Missing, "not on the target".into()),
                _ => {}
            }
        }
        Ok(())
    }

    /// The size of each candidate of a core type on both sides: `(type, source, target)`; `None` for
    /// other types (module types), which are always compared whole.
    fn sizes(&mut self, keys: &[Key], candidates: &[Candidate]) -> redis::RedisResult<Vec<Reply<Sizes>>> {
        let types: Vec<Option<KeyType>> = candidates.iter().map(|c| core_type(&c.ty)).collect();
        let sized: Vec<(usize, KeyType)> =
            candidates.iter().zip(&types).filter_map(|(c, ty)| ty.map(|ty| (c.index, ty))).collect();
        let read = |conn: &mut Conn| -> redis::RedisResult<Vec<Value>> {
            if sized.is_empty() {
                return Ok(Vec::new());
            }
            let key = |u: usize| keys[sized[u].0].as_bytes();
            let replies = conn.query(
                sized.len(),
                |u| Some(key(u)),
                |pipe, u| {
                    pipe.cmd(size_command(sized[u].1)).arg(key(u));
                },
            )?;
            Ok(replies.into_values())
        };
        let mut src = read(&mut self.source)?.into_iter();
        let mut dst = read(&mut self.target)?.into_iter();
        Ok(types
            .into_iter()
            .map(|ty| {
                let Some(ty) = ty else { return Ok(None) };
                let a = parse::<i64>(src.next().unwrap_or_default())?;
                let b = parse::<i64>(dst.next().unwrap_or_default())?;
                Ok(Some((ty, a, b)))
            })
            .collect())
    }

    /// Reads the small candidates whole on both sides (one pipeline each) and says which are equal.
    fn whole_values(&mut self, keys: &[Key], small: &[Candidate]) -> redis::RedisResult<Vec<Reply<bool>>> {
        if small.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: Vec<(&Key, &str)> = small.iter().map(|c| (&keys[c.index], c.ty.as_str())).collect();
        let a = values(&mut self.source, &wanted)?;
        let b = values(&mut self.target, &wanted)?;
        Ok(a.into_iter()
            .zip(b)
            .map(|(a, b)| match (a, b) {
                (Err(e), _) | (_, Err(e)) => Err(e),
                (Ok(a), Ok(b)) => Ok(a == b),
            })
            .collect())
    }
}

/// A reply as `T`, or the error code and message of an error reply or an unexpected reply.
fn parse<T: FromRedisValue>(value: Value) -> Reply<T> {
    match value {
        Value::ServerError(e) => Err(reply::classify_reply(&e)),
        v => redis::from_redis_value(v).map_err(|e| ("PROTOCOL".into(), reply::one_line(&e.to_string()))),
    }
}

/// TYPE and the deadline (`ttl_cmd`: PEXPIRETIME or PTTL) of every key of the batch on one side, and
/// the middle of the round trip that read them.
fn sides(conn: &mut Conn, keys: &[Key], ttl_cmd: &str) -> redis::RedisResult<(Vec<Reply<Side>>, Instant)> {
    let sent = Instant::now();
    let replies = conn.query(
        keys.len(),
        |u| Some(keys[u].as_bytes()),
        |pipe, u| {
            pipe.cmd("TYPE").arg(keys[u].as_bytes()).cmd(ttl_cmd).arg(keys[u].as_bytes());
        },
    )?;
    let at = sent + sent.elapsed() / 2;
    let mut replies = replies.into_values().into_iter();
    let sides = keys
        .iter()
        .map(|_| {
            let ty = parse::<String>(replies.next().unwrap_or_default())?;
            let ttl = parse::<i64>(replies.next().unwrap_or_default())?;
            Ok(Side { ty, ttl })
        })
        .collect();
    Ok((sides, at))
}

/// Reads the whole values of `keys` (each of the type given with it) in one pipeline, normalised.
fn values(conn: &mut Conn, keys: &[(&Key, &str)]) -> redis::RedisResult<Vec<Reply<Value>>> {
    let replies = conn.query(
        keys.len(),
        |u| Some(keys[u].0.as_bytes()),
        |pipe, u| {
            let (key, ty) = keys[u];
            let k = key.as_bytes();
            match ty {
                "string" => pipe.cmd("GET").arg(k),
                "list" => pipe.cmd("LRANGE").arg(k).arg(0).arg(-1),
                "set" => pipe.cmd("SMEMBERS").arg(k),
                "zset" => pipe.cmd("ZRANGE").arg(k).arg(0).arg(-1).arg("WITHSCORES"),
                "hash" => pipe.cmd("HGETALL").arg(k),
                "stream" => pipe.cmd("XRANGE").arg(k).arg("-").arg("+").cmd("XINFO").arg("GROUPS").arg(k),
                // Module types and others: their DUMP payload is the only common form.
                _ => pipe.cmd("DUMP").arg(k),
            };
        },
    )?;
    let raw = replies.into_values();
    let mut raw = raw.into_iter();
    let mut out = Vec::with_capacity(keys.len());
    for (_, ty) in keys {
        let mut value = raw.next().unwrap_or_default();
        if *ty == "stream" {
            value = Value::Array(vec![value, raw.next().unwrap_or_default()]);
        }
        out.push(match error_in(&value) {
            Some(e) => Err(e),
            None => Ok(match *ty {
                "set" => sorted(value, 1),
                "hash" => sorted(value, 2),
                _ => value,
            }),
        });
    }
    Ok(out)
}

/// The first error reply in a value or one level down (a stream's two replies).
fn error_in(value: &Value) -> Option<(String, String)> {
    match value {
        Value::ServerError(e) => Some(reply::classify_reply(e)),
        Value::Array(items) => items.iter().find_map(|v| match v {
            Value::ServerError(e) => Some(reply::classify_reply(e)),
            _ => None,
        }),
        _ => None,
    }
}

/// Sorts a flat array in groups of `width` (members, or field/value pairs), so order does not matter.
fn sorted(value: Value, width: usize) -> Value {
    let items = match value {
        Value::Array(items) | Value::Set(items) => items,
        Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        other => return other,
    };
    let mut groups: Vec<Vec<Value>> = Vec::new();
    let mut it = items.into_iter();
    loop {
        let group: Vec<Value> = it.by_ref().take(width).collect();
        if group.is_empty() {
            break;
        }
        groups.push(group);
    }
    groups.sort_by_cached_key(|g| format!("{g:?}"));
    Value::Array(groups.into_iter().flatten().collect())
}

/// The core type a TYPE reply names, if it is one.
fn core_type(name: &str) -> Option<KeyType> {
    [KeyType::String, KeyType::List, KeyType::Set, KeyType::Zset, KeyType::Hash, KeyType::Stream]
        .into_iter()
        .find(|t| t.name() == name)
}

fn size_command(ty: KeyType) -> &'static str {
    match ty {
        KeyType::String => "STRLEN",
        KeyType::List => "LLEN",
        KeyType::Set => "SCARD",
        KeyType::Zset => "ZCARD",
        KeyType::Hash => "HLEN",
        KeyType::Stream => "XLEN",
    }
}

/// What the size of a type measures, for messages.
fn measure(ty: KeyType) -> &'static str {
    match ty {
        KeyType::String => "string length",
        KeyType::List => "list length",
        KeyType::Set | KeyType::Zset => "cardinality",
        KeyType::Hash => "field count",
        KeyType::Stream => "stream length",
    }
}

/// `None` when the two deadlines (`what`: PEXPIRETIME, or PTTL) agree within `tolerance` ms, else what
/// differs.
fn ttl_difference(what: &str, source: i64, target: i64, tolerance: i64) -> Option<String> {
    match (source, target) {
        (-1, -1) => None,
        (a, b) if a >= 0 && b >= 0 && (a - b).abs() <= tolerance => None,
        (a, b) if a >= 0 && b >= 0 => Some(format!(
            "{what} {a} ms on the source, {b} ms on the target: {} ms apart (tolerance {tolerance} ms)",
            (a - b).abs()
        )),
        (-1, b) => Some(format!("no TTL on the source, {what} {b} ms on the target")),
        (a, -1) => Some(format!("{what} {a} ms on the source, no TTL on the target")),
        (a, b) => Some(format!("{what} {a} on the source, {b} on the target")),
    }
}

fn ttl_verdict(ttl: Option<String>) -> Verdict {
    match ttl {
        Some(why) => Verdict::Differs(Kind::Ttl, why),
        None => Verdict::Matched,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_within_the_tolerance_agree() {
        let d = |a, b| ttl_difference("PTTL", a, b, 2000);
        assert_eq!(d(-1, -1), None);
        assert_eq!(d(10_000, 8_000), None);
        assert_eq!(d(8_000, 10_000), None);
        assert!(d(10_000, 7_999).unwrap().contains("tolerance 2000 ms"));
        assert!(d(-1, 5000).unwrap().starts_with("no TTL on the source"));
        assert!(d(5000, -1).unwrap().ends_with("no TTL on the target"));
        assert!(d(5000, -2).is_some());
        assert_eq!(ttl_difference("PEXPIRETIME", 1_700_000_000_000, 1_700_000_000_000, 0), None);
    }

    #[test]
    fn sets_and_hashes_compare_in_any_order() {
        let arr = |items: &[&str]| {
            Value::Array(items.iter().map(|s| Value::BulkString(s.as_bytes().to_vec())).collect())
        };
        assert_eq!(sorted(arr(&["b", "a", "c"]), 1), sorted(arr(&["c", "b", "a"]), 1));
        assert_eq!(sorted(arr(&["f2", "v2", "f1", "v1"]), 2), arr(&["f1", "v1", "f2", "v2"]));
        assert_ne!(sorted(arr(&["f1", "v2", "f2", "v1"]), 2), sorted(arr(&["f1", "v1", "f2", "v2"]), 2));
    }

    #[test]
    fn core_types_by_name() {
        assert_eq!(core_type("zset"), Some(KeyType::Zset));
        assert_eq!(core_type("ReJSON-RL"), None);
    }
}
