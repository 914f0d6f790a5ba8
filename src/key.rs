//! `Key`: a Redis key as the bytes it is, and its escaped text form.
//!
//! Keys travel through the pipeline as raw bytes; text exists only for display (logs, the error CSV).
//! The escaped form writes bytes outside printable ASCII and the backslash as `\xHH` and `\\`, the way
//! redis-cli shows them, so that any binary key survives a round trip through the CSV and `--keys-from`.
//! Parsing also accepts the short escapes redis-cli prints (`\n`, `\r`, `\t`, `\a`, `\b`, `\"`), so a key
//! pasted from redis-cli output reads back as the same bytes.
//!
//! Two text forms: [`Key::escaped`] is the whole key, for the CSV files; `Display` (logs, messages) cuts
//! a long key after [`SHOWN`] bytes and says how long it is, so that a 100 KB key name never floods a log.

use std::fmt;

/// Bytes of a key shown in logs and messages; the rest is cut (never in a CSV).
pub const SHOWN: usize = 200;

/// One Redis key, bytes exactly as the server holds them.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Key(pub Vec<u8>);

impl Key {
    /// The raw bytes of the key.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Decodes the escaped form written by `Display` (and by redis-cli) back into the exact bytes.
    /// Bytes outside the escapes are taken as they are.
    pub fn parse_escaped(bytes: &[u8]) -> Result<Key, String> {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(SHOWN)]);
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b != b'\\' {
                out.push(b);
                i += 1;
                continue;
            }
            let next = *bytes.get(i + 1).ok_or_else(|| format!("key `{text}` ends with a lone backslash"))?;
            let (byte, used) = match next {
                b'\\' => (b'\\', 2),
                b'"' => (b'"', 2),
                b'n' => (b'\n', 2),
                b'r' => (b'\r', 2),
                b't' => (b'\t', 2),
                b'a' => (0x07, 2),
                b'b' => (0x08, 2),
                b'x' => {
                    let hex = bytes
                        .get(i + 2..i + 4)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .ok_or_else(|| format!("key `{text}` has a bad \\x escape at byte {i}"))?;
                    (hex, 4)
                }
                other => {
                    return Err(format!(
                        "key `{text}` has an unknown escape \\{} at byte {i}",
                        char::from(other).escape_default()
                    ))
                }
            };
            out.push(byte);
            i += used;
        }
        Ok(Key(out))
    }
}

impl Key {
    /// The whole key in its escaped form: the CSV's `key` column.
    pub fn escaped(&self) -> String {
        let mut out = String::with_capacity(self.0.len());
        escape_into(&self.0, &mut out).expect("writing to a String");
        out
    }
}

/// Writes `bytes` escaped: printable ASCII as it is, the backslash as `\\`, the rest as `\xHH`.
fn escape_into(bytes: &[u8], f: &mut impl fmt::Write) -> fmt::Result {
    for &b in bytes {
        match b {
            b'\\' => f.write_str("\\\\")?,
            0x20..=0x7e => f.write_char(b as char)?,
            _ => write!(f, "\\x{b:02x}")?,
        }
    }
    Ok(())
}

/// A set of keys can be asked about bytes (`Vec<u8>` hashes as its slice).
impl std::borrow::Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl From<&[u8]> for Key {
    fn from(bytes: &[u8]) -> Key {
        Key(bytes.to_vec())
    }
}

impl From<&str> for Key {
    fn from(text: &str) -> Key {
        Key(text.as_bytes().to_vec())
    }
}

impl fmt::Display for Key {
    /// The escaped form, cut after [`SHOWN`] bytes of the key for logs and messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.len() <= SHOWN {
            return escape_into(&self.0, f);
        }
        escape_into(&self.0[..SHOWN], f)?;
        write!(f, "...({} bytes)", self.0.len())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key(\"{self}\")")
    }
}

/// A Redis data type that `--type` can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    String,
    List,
    Set,
    Zset,
    Hash,
    Stream,
}

impl KeyType {
    /// The name SCAN TYPE and TYPE use.
    pub fn name(self) -> &'static str {
        match self {
            KeyType::String => "string",
            KeyType::List => "list",
            KeyType::Set => "set",
            KeyType::Zset => "zset",
            KeyType::Hash => "hash",
            KeyType::Stream => "stream",
        }
    }

    /// Parses a `--type` value (case-insensitive); the error names the flag.
    pub fn parse(text: &str) -> Result<KeyType, String> {
        Ok(match text.to_ascii_lowercase().as_str() {
            "string" => KeyType::String,
            "list" => KeyType::List,
            "set" => KeyType::Set,
            "zset" => KeyType::Zset,
            "hash" => KeyType::Hash,
            "stream" => KeyType::Stream,
            _ => return Err(format!("--type `{text}` is not one of string, list, set, zset, hash, stream")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_binary_and_backslash_only() {
        let key = Key(b"a,\"b\n\xff\\ z".to_vec());
        assert_eq!(key.to_string(), "a,\"b\\x0a\\xff\\\\ z");
        assert_eq!(key.escaped(), key.to_string());
    }

    #[test]
    fn every_byte_round_trips() {
        let key = Key((0..=255u8).collect());
        assert_eq!(Key::parse_escaped(key.escaped().as_bytes()).unwrap(), key);
        let empty = Key::default();
        assert_eq!(Key::parse_escaped(empty.escaped().as_bytes()).unwrap(), empty);
        assert_eq!(Key::parse_escaped(b"caf\xc3\xa9 \xff").unwrap(), Key(b"caf\xc3\xa9 \xff".to_vec()));
    }

    #[test]
    fn reads_redis_cli_short_escapes() {
        assert_eq!(Key::parse_escaped(br#"a\n\t\"\x41"#).unwrap(), Key(b"a\n\t\"A".to_vec()));
    }

    #[test]
    fn long_keys_are_cut_in_messages_never_in_the_csv_form() {
        let key = Key(vec![b'k'; 100_000]);
        let shown = key.to_string();
        assert!(shown.len() < SHOWN + 30 && shown.ends_with("...(100000 bytes)"), "{shown}");
        assert_eq!(key.escaped().len(), 100_000);
    }

    #[test]
    fn refuses_broken_escapes() {
        assert!(Key::parse_escaped(b"abc\\").is_err());
        assert!(Key::parse_escaped(b"\\xZZ").is_err());
        assert!(Key::parse_escaped(b"\\x4").is_err());
        assert!(Key::parse_escaped(b"\\q").is_err());
    }
}
