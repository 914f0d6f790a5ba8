//! Big keys compared in pages, so that memory stays bounded by the page size whatever a key's size.
//!
//! - Strings: GETRANGE chunks of [`STRING_PAGE`] bytes on both sides.
//! - Lists: LRANGE pages on both sides.
//! - Streams: XRANGE pages by ID on both sides (each page starts after the last ID of the one before),
//!   then the consumer groups (XINFO GROUPS).
//! - Sets, hashes, sorted sets: the source is walked with SSCAN / HSCAN / ZSCAN and each page is looked
//!   up on the target with SMISMEMBER / HMGET / ZMSCORE. The caller has already found the sizes equal,
//!   so "every source member is on the target with the same value" means equal.
//!
//! Each read goes through [`Conn::call`], which retries transient failures. The first difference ends
//! the comparison with a one-line explanation naming the element, field, member or byte offset.

use redis::{Cmd, FromRedisValue, Value};

use crate::key::{Key, KeyType};
use crate::redis::conn::Conn;

/// Keys with more elements than this are compared in pages.
pub const BIG_ELEMENTS: i64 = 1000;
/// Strings longer than this many bytes are compared in GETRANGE chunks.
pub const BIG_STRING: i64 = 1 << 20;
/// Elements per page: LRANGE and XRANGE COUNT, SSCAN / HSCAN / ZSCAN COUNT (a hint).
const PAGE: i64 = 500;
/// Bytes per GETRANGE chunk.
const STRING_PAGE: i64 = 256 << 10;

/// True when a key of type `ty` and `size` (STRLEN, or its element count) is compared in pages.
pub fn is_big(ty: KeyType, size: i64) -> bool {
    match ty {
        KeyType::String => size > BIG_STRING,
        _ => size > BIG_ELEMENTS,
    }
}

/// Compares one big key of type `ty` and size `len` on both sides, in pages; `Some(explanation)` when
/// it differs. A server error reply comes back as `Err`, like a connection error.
pub fn compare(
    source: &mut Conn,
    target: &mut Conn,
    key: &[u8],
    ty: KeyType,
    len: i64,
) -> redis::RedisResult<Option<String>> {
    let mut both = Sides { source, target };
    match ty {
        KeyType::String => both.string(key, len),
        KeyType::List => both.list(key, len),
        KeyType::Stream => both.stream(key),
        KeyType::Set => both.set(key),
        KeyType::Hash => both.hash(key),
        KeyType::Zset => both.zset(key),
    }
}

/// The two connections of one compare thread, for the time of one key.
struct Sides<'a> {
    /// Connection to the source.
    source: &'a mut Conn,
    /// Connection to the target.
    target: &'a mut Conn,
}

impl Sides<'_> {
    fn string(&mut self, key: &[u8], len: i64) -> redis::RedisResult<Option<String>> {
        let mut start = 0;
        while start < len {
            let mut cmd = redis::cmd("GETRANGE");
            cmd.arg(key).arg(start).arg(start + STRING_PAGE - 1);
            let (a, b): (Vec<u8>, Vec<u8>) = self.both(&cmd)?;
            if let Some(at) = first_difference(&a, &b) {
                return Ok(Some(format!("byte {} differs", start + at as i64)));
            }
            if a.is_empty() {
                break;
            }
            start += STRING_PAGE;
        }
        Ok(None)
    }

    fn list(&mut self, key: &[u8], len: i64) -> redis::RedisResult<Option<String>> {
        let mut start = 0;
        while start < len {
            let mut cmd = redis::cmd("LRANGE");
            cmd.arg(key).arg(start).arg(start + PAGE - 1);
            let (a, b): (Vec<Vec<u8>>, Vec<Vec<u8>>) = self.both(&cmd)?;
            if let Some(at) = first_difference(&a, &b) {
                return Ok(Some(format!("element {} differs", start + at as i64)));
            }
            if (a.len() as i64) < PAGE {
                break;
            }
            start += PAGE;
        }
        Ok(None)
    }

    /// XRANGE pages by ID: the next page starts after the last ID of this one (exclusive `(ID`).
    fn stream(&mut self, key: &[u8]) -> redis::RedisResult<Option<String>> {
        let mut from = b"-".to_vec();
        loop {
            let mut cmd = redis::cmd("XRANGE");
            cmd.arg(key).arg(&from).arg("+").arg("COUNT").arg(PAGE);
            let (a, b): (Vec<Value>, Vec<Value>) = self.both(&cmd)?;
            if let Some(at) = first_difference(&a, &b) {
                let id = a.get(at).or(b.get(at)).and_then(entry_id).unwrap_or_default();
                return Ok(Some(format!("entry {} differs", Key(id))));
            }
            match a.last().and_then(entry_id) {
                Some(last) if a.len() as i64 == PAGE => from = [&b"("[..], &last].concat(),
                _ => break,
            }
        }
        let mut groups = redis::cmd("XINFO");
        groups.arg("GROUPS").arg(key);
        let (a, b): (Value, Value) = self.both(&groups)?;
        Ok((a != b).then(|| "consumer groups differ".to_string()))
    }

    /// SSCAN the source; every member of a page must be on the target (SMISMEMBER).
    fn set(&mut self, key: &[u8]) -> redis::RedisResult<Option<String>> {
        self.walk("SSCAN", key, 1, |target, members| {
            let mut cmd = redis::cmd("SMISMEMBER");
            cmd.arg(key);
            for m in members {
                cmd.arg(m[0].as_slice());
            }
            let present: Vec<i64> = target.call(&cmd, || false)?;
            Ok(members
                .iter()
                .zip(present)
                .find(|(_, p)| *p == 0)
                .map(|(m, _)| format!("member {} is not on the target", Key(m[0].clone()))))
        })
    }

    /// HSCAN the source; every field of a page must have the same value on the target (HMGET).
    fn hash(&mut self, key: &[u8]) -> redis::RedisResult<Option<String>> {
        self.walk("HSCAN", key, 2, |target, pairs| {
            let mut cmd = redis::cmd("HMGET");
            cmd.arg(key);
            for p in pairs {
                cmd.arg(p[0].as_slice());
            }
            let theirs: Vec<Option<Vec<u8>>> = target.call(&cmd, || false)?;
            Ok(pairs.iter().zip(theirs).find_map(|(p, v)| match v {
                None => Some(format!("field {} is not on the target", Key(p[0].clone()))),
                Some(v) if v != p[1] => Some(format!("field {} differs", Key(p[0].clone()))),
                Some(_) => None,
            }))
        })
    }

    /// ZSCAN the source; every member of a page must have the same score on the target (ZMSCORE).
    /// Scores are compared as numbers: the two commands may print the same double differently.
    fn zset(&mut self, key: &[u8]) -> redis::RedisResult<Option<String>> {
        self.walk("ZSCAN", key, 2, |target, pairs| {
            let mut cmd = redis::cmd("ZMSCORE");
            cmd.arg(key);
            for p in pairs {
                cmd.arg(p[0].as_slice());
            }
            let theirs: Vec<Value> = target.call(&cmd, || false)?;
            Ok(pairs.iter().zip(theirs).find_map(|(p, v)| {
                let member = Key(p[0].clone());
                match (parse_score(&p[1]), score(&v)) {
                    (_, None) => Some(format!("member {member} is not on the target")),
                    (a, b) if a != b => Some(format!("score of member {member} differs")),
                    _ => None,
                }
            }))
        })
    }

    /// Walks the source key with `scan` (SSCAN / HSCAN / ZSCAN), page by page, grouping each page's
    /// flat reply in groups of `width`, and hands each page to `check` with the target connection.
    fn walk(
        &mut self,
        scan: &str,
        key: &[u8],
        width: usize,
        mut check: impl FnMut(&mut Conn, &[&[Vec<u8>]]) -> redis::RedisResult<Option<String>>,
    ) -> redis::RedisResult<Option<String>> {
        let mut cursor: u64 = 0;
        loop {
            let mut cmd = redis::cmd(scan);
            cmd.arg(key).arg(cursor).arg("COUNT").arg(PAGE);
            let (next, flat): (u64, Vec<Vec<u8>>) = self.source.call(&cmd, || false)?;
            let page: Vec<&[Vec<u8>]> = flat.chunks_exact(width).collect();
            if !page.is_empty() {
                if let Some(why) = check(self.target, &page)? {
                    return Ok(Some(why));
                }
            }
            if next == 0 {
                return Ok(None);
            }
            cursor = next;
        }
    }

    /// Runs the same read on the source, then on the target.
    fn both<T: FromRedisValue>(&mut self, cmd: &Cmd) -> redis::RedisResult<(T, T)> {
        let a = self.source.call(cmd, || false)?;
        let b = self.target.call(cmd, || false)?;
        Ok((a, b))
    }
}

/// Index of the first element that differs (or the shorter length), `None` when equal.
fn first_difference<T: PartialEq>(a: &[T], b: &[T]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y).or((a.len() != b.len()).then(|| a.len().min(b.len())))
}

/// The ID of an XRANGE entry (`[id, [field, value, ...]]`).
fn entry_id(entry: &Value) -> Option<Vec<u8>> {
    match entry {
        Value::Array(parts) => match parts.first()? {
            Value::BulkString(id) => Some(id.clone()),
            Value::SimpleString(id) => Some(id.clone().into_bytes()),
            _ => None,
        },
        _ => None,
    }
}

/// A sorted-set score as a number (`inf` and `-inf` included); `None` for nil or not a number.
fn score(value: &Value) -> Option<f64> {
    match value {
        Value::Double(d) => Some(*d),
        Value::BulkString(b) => parse_score(b),
        Value::SimpleString(s) => parse_score(s.as_bytes()),
        Value::Int(i) => Some(*i as f64),
        _ => None,
    }
}

/// A score as Redis prints it (`1.5`, `inf`, `-inf`) as a number.
fn parse_score(text: &[u8]) -> Option<f64> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_difference_finds_changes_and_length() {
        assert_eq!(first_difference(b"abc", b"abc"), None);
        assert_eq!(first_difference(b"abc", b"abd"), Some(2));
        assert_eq!(first_difference(b"ab", b"abc"), Some(2));
        assert_eq!(first_difference::<u8>(b"", b""), None);
    }

    #[test]
    fn scores_compare_as_numbers() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        assert_eq!(score(&bulk("0.10000000000000001")), score(&bulk("0.1")));
        assert_eq!(score(&bulk("inf")), Some(f64::INFINITY));
        assert_eq!(score(&bulk("-inf")), Some(f64::NEG_INFINITY));
        assert_eq!(score(&Value::Nil), None);
    }

    #[test]
    fn entry_ids_and_thresholds() {
        let entry = Value::Array(vec![Value::BulkString(b"1-0".to_vec()), Value::Array(vec![])]);
        assert_eq!(entry_id(&entry), Some(b"1-0".to_vec()));
        assert!(!is_big(KeyType::List, BIG_ELEMENTS) && is_big(KeyType::List, BIG_ELEMENTS + 1));
        assert!(!is_big(KeyType::String, BIG_ELEMENTS + 1) && is_big(KeyType::String, BIG_STRING + 1));
    }
}
