//! Reading the replies the type-aware copier gets: flat arrays of members, XINFO's name/value lists,
//! stream IDs. Errors come back as a [`Fault`] that fails the key.

use redis::Value;

use super::{failed, protocol, Fault};
use crate::account::Stage;
use crate::redis::reply::kind;

/// The items of a flat array of bulk strings (members, fields and values).
pub(super) fn bulk_items(reply: Value, what: &str) -> Result<Vec<Vec<u8>>, Fault> {
    match reply {
        Value::Array(items) | Value::Set(items) => items
            .into_iter()
            .map(|v| bytes_of(v).ok_or_else(|| protocol(format!("{what} returned a non-string item")).into()))
            .collect(),
        Value::Nil => Ok(Vec::new()),
        Value::ServerError(e) => Err(failed(Stage::Fetch, &e).into()),
        other => Err(protocol(format!("unexpected {what} reply: {}", kind(&other))).into()),
    }
}

pub(super) fn bytes_of(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

pub(super) fn int_of(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

/// An XINFO reply (a flat `[name, value, ...]` array, or a map) as name/value pairs.
pub(super) fn fields(v: Value, what: &str) -> Result<Vec<(String, Value)>, Fault> {
    let name = |k: Value| bytes_of(k).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    match v {
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((name(k), v));
            }
            Ok(out)
        }
        Value::Map(pairs) => Ok(pairs.into_iter().map(|(k, v)| (name(k), v)).collect()),
        Value::ServerError(e) => Err(failed(Stage::Fetch, &e).into()),
        other => Err(protocol(format!("unexpected {what} reply: {}", kind(&other))).into()),
    }
}

pub(super) fn get<'v>(fields: &'v [(String, Value)], name: &str) -> Option<&'v Value> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v).filter(|v| !matches!(v, Value::Nil))
}

/// The stream ID right after `id` (`ms-seq`), for an exclusive range start that works before Redis
/// 6.2; `None` after the last possible ID.
pub(super) fn next_stream_id(id: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(id).ok()?;
    let (ms, seq) = text.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    let (ms, seq) = match seq.checked_add(1) {
        Some(seq) => (ms, seq),
        None => (ms.checked_add(1)?, 0),
    };
    Some(format!("{ms}-{seq}").into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_step_to_the_next() {
        assert_eq!(next_stream_id(b"5-3").unwrap(), b"5-4");
        assert_eq!(next_stream_id(b"5-18446744073709551615").unwrap(), b"6-0");
        assert_eq!(next_stream_id(b"18446744073709551615-18446744073709551615"), None);
        assert_eq!(next_stream_id(b"junk"), None);
    }
}
