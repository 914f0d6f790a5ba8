//! The CSV files a run writes, read with the `csv` crate and checked row by row against the contract:
//! the error CSV of `copy --errors` ([`read_errors`]) and the diff CSV of `verify --diff`
//! ([`read_diff`]); and the key column's escaping ([`escape_key`], [`unescape_key`]).

use std::path::Path;

/// One row of the error CSV.
#[derive(Debug, Clone)]
pub struct ErrorRow {
    pub time: String,
    /// The key column as written (escaped).
    pub raw_key: String,
    /// The key column unescaped back to bytes.
    pub key: Vec<u8>,
    pub stage: String,
    pub error: String,
    pub message: String,
}

/// Reads an error CSV with the `csv` crate and checks each row against the contract: the exact header,
/// RFC 3339 UTC time, a printable-ASCII escaped key, a known stage, a non-empty error code, and a
/// one-line message.
#[track_caller]
pub fn read_errors(path: &Path) -> Vec<ErrorRow> {
    let mut rdr = ::csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .unwrap_or_else(|e| panic!("open error CSV {}: {e}", path.display()));
    let header = rdr.byte_headers().expect("CSV header").clone();
    assert_eq!(
        header.iter().collect::<Vec<_>>(),
        [&b"time"[..], b"key", b"stage", b"error", b"message"],
        "error CSV header in {}",
        path.display()
    );
    let mut rows = Vec::new();
    for rec in rdr.records() {
        let rec = rec.unwrap_or_else(|e| panic!("bad CSV row in {}: {e}", path.display()));
        assert_eq!(rec.len(), 5, "CSV row {rec:?} has {} fields", rec.len());
        let row = ErrorRow {
            time: rec[0].to_string(),
            raw_key: rec[1].to_string(),
            key: unescape_key(&rec[1]),
            stage: rec[2].to_string(),
            error: rec[3].to_string(),
            message: rec[4].to_string(),
        };
        assert!(is_rfc3339_utc(&row.time), "time {:?} is not RFC 3339 UTC", row.time);
        assert!(
            ["scan", "check", "fetch", "write"].contains(&row.stage.as_str()),
            "unknown stage in {row:?}"
        );
        assert!(
            !row.error.is_empty()
                && row.error.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
            "error code should be an upper-case code like NOPERM/IO: {row:?}"
        );
        assert!(
            !row.message.contains('\n') && !row.message.contains('\r'),
            "message is not one line: {row:?}"
        );
        rows.push(row);
    }
    rows
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|+00:00)`.
fn is_rfc3339_utc(t: &str) -> bool {
    let b = t.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r.clone()).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    let shape = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && (b[10] == b'T' || b[10] == b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    shape && (t.ends_with('Z') || t.ends_with('z') || t.ends_with("+00:00"))
}

/// Escapes a key the way the contract says (redis-cli style): printable ASCII stays, except the
/// backslash (`\\`); every other byte becomes `\xHH`.
pub fn escape_key(key: &[u8]) -> String {
    let mut s = String::new();
    for &b in key {
        match b {
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}

/// Inverse of [`escape_key`]; panics on anything the contract does not allow in the key column.
#[track_caller]
pub fn unescape_key(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        assert!((0x20..=0x7e).contains(&c), "key column {s:?} holds byte {c:#04x} outside printable ASCII");
        if c == b'\\' {
            match b.get(i + 1) {
                Some(b'\\') => {
                    out.push(b'\\');
                    i += 2;
                }
                Some(b'x') | Some(b'X') => {
                    let hex = s.get(i + 2..i + 4).unwrap_or_else(|| panic!("short \\x escape in {s:?}"));
                    out.push(
                        u8::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("bad \\x escape in {s:?}")),
                    );
                    i += 4;
                }
                _ => panic!("unknown escape in key column {s:?}"),
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// One row of the diff CSV of `verify --diff`.
#[derive(Debug, Clone)]
pub struct DiffRow {
    pub time: String,
    /// The key column unescaped back to bytes.
    pub key: Vec<u8>,
    /// `missing`, `type`, `value`, `ttl` or `extra`.
    pub difference: String,
    pub message: String,
}

/// Reads a diff CSV and checks each row against the contract: the exact header (starting with
/// `time,key,` so `copy --keys-from` takes it), RFC 3339 UTC time, an escaped key, a known difference,
/// and a non-empty one-line message.
#[track_caller]
pub fn read_diff(path: &Path) -> Vec<DiffRow> {
    let mut rdr = ::csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .unwrap_or_else(|e| panic!("open diff CSV {}: {e}", path.display()));
    let header = rdr.byte_headers().expect("CSV header").clone();
    assert_eq!(
        header.iter().collect::<Vec<_>>(),
        [&b"time"[..], b"key", b"difference", b"message"],
        "diff CSV header in {}",
        path.display()
    );
    let mut rows = Vec::new();
    for rec in rdr.records() {
        let rec = rec.unwrap_or_else(|e| panic!("bad CSV row in {}: {e}", path.display()));
        assert_eq!(rec.len(), 4, "diff CSV row {rec:?} has {} fields", rec.len());
        let row = DiffRow {
            time: rec[0].to_string(),
            key: unescape_key(&rec[1]),
            difference: rec[2].to_string(),
            message: rec[3].to_string(),
        };
        assert!(is_rfc3339_utc(&row.time), "time {:?} is not RFC 3339 UTC", row.time);
        assert!(
            ["missing", "type", "value", "ttl", "extra"].contains(&row.difference.as_str()),
            "unknown difference in {row:?}"
        );
        assert!(!row.message.is_empty() && !row.message.contains(['\n', '\r']), "bad message in {row:?}");
        rows.push(row);
    }
    rows
}
