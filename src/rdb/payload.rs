//! RESTORE payloads made from a value's elements: a list's items, a set's members, a hash's fields and
//! values, in the plain RDB encodings every version since 1 reads (types 1, 2 and 4: a length, then each
//! element as a length and its bytes), framed as DUMP frames its own: the RDB version, two bytes little
//! endian, then the CRC-64 of all before it, eight bytes little endian. The target builds its compact
//! encoding (listpack, intset) from them as it does when it loads an old file.
//!
//! This is how `--mode auto` copies small lists, sets and hashes read by value (LRANGE, SMEMBERS,
//! HGETALL cost the source less than DUMP): the target still gets one atomic RESTORE, with its deadline,
//! its skip (BUSYKEY) and its REPLACE, as for a DUMP payload.

use super::crc64;

/// The RDB version a payload made here is stamped with, at most: what Redis 5.0 to 6.2 write. Every
/// server that takes RESTORE with ABSTTL reads it (Valkey reads Redis's up to 11).
pub const STAMP: u16 = 9;

/// A plain RDB value type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plain {
    /// `RDB_TYPE_LIST` (1): the items, in order.
    List = 1,
    /// `RDB_TYPE_SET` (2): the members.
    Set = 2,
    /// `RDB_TYPE_HASH` (4): field, value, field, value…
    Hash = 4,
}

/// The RESTORE payload of a value of type `kind` made of `elements` (for a hash, fields and values in
/// turn: `count` is then the number of fields), stamped with RDB `version`.
pub fn payload<'a>(
    kind: Plain,
    count: usize,
    elements: impl Iterator<Item = &'a [u8]> + Clone,
    version: u16,
) -> Vec<u8> {
    let size: usize = elements.clone().map(|e| e.len() + 9).sum();
    let mut out = Vec::with_capacity(1 + 9 + size + 10);
    out.push(kind as u8);
    length(&mut out, count as u64);
    for e in elements {
        length(&mut out, e.len() as u64);
        out.extend_from_slice(e);
    }
    out.extend_from_slice(&version.to_le_bytes());
    let crc = crc64::update(0, &out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// An RDB length: 6 bits in one byte, 14 bits in two, else a marker and 4 or 8 bytes big endian.
fn length(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=0x3f => out.push(n as u8),
        0x40..=0x3fff => out.extend_from_slice(&[0x40 | (n >> 8) as u8, n as u8]),
        0x4000..=0xffff_ffff => {
            out.push(0x80);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(0x81);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_take_the_shortest_form() {
        let enc = |n| {
            let mut out = Vec::new();
            length(&mut out, n);
            out
        };
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(63), [0x3f]);
        assert_eq!(enc(64), [0x40, 0x40]);
        assert_eq!(enc(16383), [0x7f, 0xff]);
        assert_eq!(enc(16384), [0x80, 0, 0, 0x40, 0]);
        assert_eq!(enc(1 << 32), [0x81, 0, 0, 0, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn a_payload_is_framed_as_dump_frames_it() {
        let items: [&[u8]; 2] = [b"a", b"\x00bc"];
        let p = payload(Plain::List, 2, items.iter().copied(), 9);
        assert_eq!(&p[..8], &[1, 2, 1, b'a', 3, 0, b'b', b'c']);
        assert_eq!((&p[8..10], p.len()), (&[9, 0][..], 18));
        let crc = u64::from_le_bytes(p[p.len() - 8..].try_into().unwrap());
        assert_eq!(crc, crc64::update(0, &p[..p.len() - 8]));
        // A hash: the count is of fields, the elements go field, value.
        let fv: [&[u8]; 4] = [b"f", b"1", b"g", b""];
        let h = payload(Plain::Hash, 2, fv.iter().copied(), 9);
        assert_eq!(&h[..9], &[4, 2, 1, b'f', 1, b'1', 1, b'g', 0]);
    }
}
