//! The compact encodings an RDB file stores as one string: ziplist, listpack, intset and zipmap. Each
//! is read from a byte slice into its elements, with every length checked against the slice, so a
//! corrupt blob is an error, never an out-of-bounds read or an allocation beyond the blob's size.

/// One element of a ziplist or listpack: bytes, or an integer (written back in decimal, as Redis does).
#[derive(Debug, Clone, PartialEq)]
pub enum Elem {
    /// A string element.
    Bytes(Vec<u8>),
    /// An integer element.
    Int(i64),
}

impl Elem {
    /// The element as Redis returns it.
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Elem::Bytes(b) => b,
            Elem::Int(i) => i.to_string().into_bytes(),
        }
    }

    /// The element as an integer (a stream's listpack holds its counters and IDs so).
    pub fn int(&self) -> Option<i64> {
        match self {
            Elem::Int(i) => Some(*i),
            Elem::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        }
    }
}

/// A bounds-checked cursor over a blob.
struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
    name: &'static str,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.data.len() - self.at {
            return Err(format!("{} entry runs past the end of the {}", self.name, self.name));
        }
        let s = &self.data[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn le(&mut self, n: usize) -> Result<u64, String> {
        let s = self.take(n)?;
        Ok(s.iter().rev().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }
}

/// Sign-extends the low `bits` bits of `v`.
fn signed(v: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((v << shift) as i64) >> shift
}

/// The elements of a ziplist.
pub fn ziplist(data: &[u8]) -> Result<Vec<Elem>, String> {
    let mut c = Cursor { data, at: 0, name: "ziplist" };
    let total = c.le(4)? as usize;
    if total != data.len() {
        return Err(format!("ziplist says it is {total} bytes long, but it is {}", data.len()));
    }
    let _tail = c.le(4)?;
    let count = c.le(2)? as usize;
    let mut out = Vec::with_capacity(count.min(data.len()));
    loop {
        let first = c.u8()?;
        if first == 0xff {
            break;
        }
        // prevlen: one byte, or 0xfe and four more.
        if first == 0xfe {
            c.take(4)?;
        }
        let enc = c.u8()?;
        let elem = match enc >> 6 {
            0 => Elem::Bytes(c.take(usize::from(enc & 0x3f))?.to_vec()),
            1 => {
                let n = (usize::from(enc & 0x3f) << 8) | usize::from(c.u8()?);
                Elem::Bytes(c.take(n)?.to_vec())
            }
            2 => {
                let s = c.take(4)?;
                let n = u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize;
                Elem::Bytes(c.take(n)?.to_vec())
            }
            _ => match enc {
                0xc0 => Elem::Int(signed(c.le(2)?, 16)),
                0xd0 => Elem::Int(signed(c.le(4)?, 32)),
                0xe0 => Elem::Int(c.le(8)? as i64),
                0xf0 => Elem::Int(signed(c.le(3)?, 24)),
                0xfe => Elem::Int(signed(c.le(1)?, 8)),
                0xf1..=0xfd => Elem::Int(i64::from(enc & 0x0f) - 1),
                other => return Err(format!("ziplist entry has an unknown encoding 0x{other:02x}")),
            },
        };
        out.push(elem);
    }
    if c.at != data.len() {
        return Err("ziplist has bytes after its end marker".into());
    }
    if count != 0xffff && count != out.len() {
        return Err(format!("ziplist says it holds {count} entries, but holds {}", out.len()));
    }
    Ok(out)
}

/// The elements of a listpack.
pub fn listpack(data: &[u8]) -> Result<Vec<Elem>, String> {
    let mut c = Cursor { data, at: 0, name: "listpack" };
    let total = c.le(4)? as usize;
    if total != data.len() {
        return Err(format!("listpack says it is {total} bytes long, but it is {}", data.len()));
    }
    let count = c.le(2)? as usize;
    let mut out = Vec::with_capacity(count.min(data.len()));
    loop {
        let start = c.at;
        let enc = c.u8()?;
        if enc == 0xff {
            break;
        }
        let elem = if enc & 0x80 == 0 {
            Elem::Int(i64::from(enc & 0x7f))
        } else if enc & 0xc0 == 0x80 {
            Elem::Bytes(c.take(usize::from(enc & 0x3f))?.to_vec())
        } else if enc & 0xe0 == 0xc0 {
            let v = (u64::from(enc & 0x1f) << 8) | u64::from(c.u8()?);
            Elem::Int(signed(v, 13))
        } else if enc & 0xf0 == 0xe0 {
            let n = (usize::from(enc & 0x0f) << 8) | usize::from(c.u8()?);
            Elem::Bytes(c.take(n)?.to_vec())
        } else {
            match enc {
                0xf0 => {
                    let n = c.le(4)? as usize;
                    Elem::Bytes(c.take(n)?.to_vec())
                }
                0xf1 => Elem::Int(signed(c.le(2)?, 16)),
                0xf2 => Elem::Int(signed(c.le(3)?, 24)),
                0xf3 => Elem::Int(signed(c.le(4)?, 32)),
                0xf4 => Elem::Int(c.le(8)? as i64),
                other => return Err(format!("listpack entry has an unknown encoding 0x{other:02x}")),
            }
        };
        // The back length: the entry's size, 7 bits per byte, 1 to 5 bytes.
        let size = c.at - start;
        // As Redis's lpEncodeBacklen: 7 bits per byte, with the bounds it uses (16383 takes 3 bytes).
        let back = match size {
            0..=127 => 1,
            128..16383 => 2,
            16383..2097151 => 3,
            2097151..268435455 => 4,
            _ => 5,
        };
        c.take(back)?;
        out.push(elem);
    }
    if c.at != data.len() {
        return Err("listpack has bytes after its end marker".into());
    }
    if count != 0xffff && count != out.len() {
        return Err(format!("listpack says it holds {count} entries, but holds {}", out.len()));
    }
    Ok(out)
}

/// The members of an intset, in decimal.
pub fn intset(data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut c = Cursor { data, at: 0, name: "intset" };
    let width = c.le(4)? as usize;
    if ![2, 4, 8].contains(&width) {
        return Err(format!("intset has an unknown width {width}"));
    }
    let n = c.le(4)? as usize;
    if n.checked_mul(width) != Some(data.len() - 8) {
        return Err(format!(
            "intset says it holds {n} members of {width} bytes, but is {} bytes",
            data.len()
        ));
    }
    (0..n).map(|_| Ok(signed(c.le(width)?, 8 * width as u32).to_string().into_bytes())).collect()
}

/// A field and its value.
pub type Pair = (Vec<u8>, Vec<u8>);

/// The field-value pairs of a zipmap (hashes before Redis 2.6).
pub fn zipmap(data: &[u8]) -> Result<Vec<Pair>, String> {
    let mut c = Cursor { data, at: 0, name: "zipmap" };
    let _count = c.u8()?;
    let mut out = Vec::new();
    let len = |c: &mut Cursor| -> Result<Option<usize>, String> {
        match c.u8()? {
            0xff => Ok(None),
            0xfe => Ok(Some(c.le(4)? as usize)),
            n => Ok(Some(usize::from(n))),
        }
    };
    while let Some(klen) = len(&mut c)? {
        let field = c.take(klen)?.to_vec();
        let Some(vlen) = len(&mut c)? else { return Err("zipmap field has no value".into()) };
        let free = usize::from(c.u8()?);
        let value = c.take(vlen)?.to_vec();
        c.take(free)?;
        out.push((field, value));
    }
    if c.at != data.len() {
        return Err("zipmap has bytes after its end marker".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listpack_integers_and_strings() {
        // A listpack of "a", 1 and -392 (the total length is set below).
        let lp = [20, 0, 0, 0, 3, 0, 0x81, b'a', 2, 0x01, 1, 0xc0 | 0x1e, 0x78, 2, 0xff];
        // 13 bits 0x1e78 = 7800, sign bit set: 7800 - 8192 = -392.
        let mut lp = lp.to_vec();
        lp[0] = lp.len() as u8;
        let e = listpack(&lp).unwrap();
        assert_eq!(e, vec![Elem::Bytes(b"a".to_vec()), Elem::Int(1), Elem::Int(-392)]);
    }

    #[test]
    fn back_lengths_at_their_bounds() {
        // One string entry whose encoding and data take exactly `size` bytes, then its back length.
        for (len, back) in [(16378usize, 3usize), (16377, 2), (60, 1), (126, 2)] {
            let mut lp = vec![0, 0, 0, 0, 1, 0];
            if len < 64 {
                lp.push(0x80 | len as u8);
            } else if len < 4096 {
                lp.extend_from_slice(&[0xe0 | (len >> 8) as u8, len as u8]);
            } else {
                lp.push(0xf0);
                lp.extend_from_slice(&(len as u32).to_le_bytes());
            }
            lp.extend(std::iter::repeat_n(b'a', len));
            lp.extend(std::iter::repeat_n(1, back));
            lp.push(0xff);
            let total = lp.len() as u32;
            lp[..4].copy_from_slice(&total.to_le_bytes());
            assert_eq!(listpack(&lp).unwrap().len(), 1, "a {len}-byte string with {back} back-length bytes");
        }
    }

    #[test]
    fn corrupt_blobs_are_errors() {
        assert!(listpack(&[7, 0, 0, 0, 1, 0, 0x85]).is_err());
        assert!(ziplist(&[11, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0xff]).is_err());
        assert!(intset(&[2, 0, 0, 0, 9, 0, 0, 0, 1, 0]).is_err());
        assert!(zipmap(&[1, 5, b'a']).is_err());
        assert!(listpack(&[]).is_err());
    }
}
