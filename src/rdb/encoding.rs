//! The RDB file's primitives: lengths (6, 14, 32 or 64 bits, or a special encoding), strings (raw,
//! integer-encoded, LZF-compressed), the two ways a score is stored, and millisecond times. Each read
//! checks its lengths before it allocates.

use std::io::Read;

use super::input::Input;
use super::{lzf, Error};

/// A length field: a plain length, or the number of a special string encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Len {
    /// A length or count.
    Plain(u64),
    /// A special encoding (0-2: an integer of 8, 16 or 32 bits; 3: LZF).
    Encoded(u8),
}

/// Reads a length field.
pub fn length<R: Read>(input: &mut Input<R>, what: &str) -> Result<Len, Error> {
    let first = input.u8(what)?;
    Ok(match first >> 6 {
        0 => Len::Plain(u64::from(first & 0x3f)),
        1 => Len::Plain((u64::from(first & 0x3f) << 8) | u64::from(input.u8(what)?)),
        2 => match first {
            0x80 => Len::Plain(u64::from(u32::from_be_bytes(input.array(what)?))),
            0x81 => Len::Plain(u64::from_be_bytes(input.array(what)?)),
            other => return Err(input.corrupt(format!("{what}: unknown length encoding 0x{other:02x}"))),
        },
        _ => Len::Encoded(first & 0x3f),
    })
}

/// Reads a plain length (a count); a special encoding here is corruption.
pub fn len<R: Read>(input: &mut Input<R>, what: &str) -> Result<u64, Error> {
    match length(input, what)? {
        Len::Plain(n) => Ok(n),
        Len::Encoded(_) => Err(input.corrupt(format!("{what}: a string encoding where a length belongs"))),
    }
}

/// A count of elements, each of which takes at least one byte of the file: a count larger than the
/// rest of the file is corruption, found before anything is allocated for it.
pub fn count<R: Read>(input: &mut Input<R>, what: &str) -> Result<u64, Error> {
    let n = len(input, what)?;
    input.room(n, what)?;
    Ok(n)
}

/// The header of a string: how it is stored.
#[derive(Debug, Clone, Copy)]
pub enum Str {
    /// `n` raw bytes follow.
    Raw(u64),
    /// An integer of this many bytes follows.
    Int(usize),
    /// LZF: `compressed` bytes follow, which give `len` bytes.
    Lzf { compressed: u64, len: u64 },
}

impl Str {
    /// The length of the string it gives (an integer's is at most 20).
    pub fn size(self) -> u64 {
        match self {
            Str::Raw(n) => n,
            Str::Int(_) => 20,
            Str::Lzf { len, .. } => len,
        }
    }
}

/// Reads the header of a string.
pub fn string_head<R: Read>(input: &mut Input<R>, what: &str) -> Result<Str, Error> {
    Ok(match length(input, what)? {
        Len::Plain(n) => Str::Raw(n),
        Len::Encoded(0) => Str::Int(1),
        Len::Encoded(1) => Str::Int(2),
        Len::Encoded(2) => Str::Int(4),
        Len::Encoded(3) => {
            let compressed = len(input, what)?;
            let len = len(input, what)?;
            // LZF gives at most about 90 bytes per byte (a 264-byte back reference in 3 bytes): a
            // length beyond that is not what the compressed bytes can make.
            if len > compressed.saturating_mul(100).saturating_add(64) {
                return Err(input
                    .corrupt(format!("{what}: {compressed} LZF bytes cannot make a string of {len} bytes")));
            }
            Str::Lzf { compressed, len }
        }
        Len::Encoded(other) => return Err(input.corrupt(format!("{what}: unknown string encoding {other}"))),
    })
}

/// Reads the rest of a string whose header is `head`.
pub fn string_body<R: Read>(input: &mut Input<R>, head: Str, what: &str) -> Result<Vec<u8>, Error> {
    match head {
        Str::Raw(n) => input.bytes(n, what),
        Str::Int(1) => Ok((input.u8(what)? as i8).to_string().into_bytes()),
        Str::Int(2) => Ok(i16::from_le_bytes(input.array(what)?).to_string().into_bytes()),
        Str::Int(_) => Ok(i32::from_le_bytes(input.array(what)?).to_string().into_bytes()),
        Str::Lzf { compressed, len } => {
            let at = input.offset();
            let data = input.bytes(compressed, what)?;
            let len = usize::try_from(len).map_err(|_| input.corrupt(format!("{what}: too long")))?;
            lzf::decompress(&data, len)
                .map_err(|e| Error::Corrupt { offset: at, what: format!("{what}: {e}") })
        }
    }
}

/// Consumes the rest of a string whose header is `head` without keeping it (the tee does).
pub fn skip_body<R: Read>(input: &mut Input<R>, head: Str, what: &str) -> Result<(), Error> {
    match head {
        Str::Raw(n) | Str::Lzf { compressed: n, .. } => input.skip(n, what),
        Str::Int(n) => input.skip(n as u64, what),
    }
}

/// Reads a whole string.
pub fn string<R: Read>(input: &mut Input<R>, what: &str) -> Result<Vec<u8>, Error> {
    let head = string_head(input, what)?;
    string_body(input, head, what)
}

/// Consumes a whole string.
pub fn skip_string<R: Read>(input: &mut Input<R>, what: &str) -> Result<(), Error> {
    let head = string_head(input, what)?;
    skip_body(input, head, what)
}

/// A score stored as text (sorted sets before RDB 8): a length byte (253 NaN, 254 +inf, 255 -inf)
/// and the digits.
pub fn text_double<R: Read>(input: &mut Input<R>, what: &str) -> Result<f64, Error> {
    let n = input.u8(what)?;
    Ok(match n {
        253 => f64::NAN,
        254 => f64::INFINITY,
        255 => f64::NEG_INFINITY,
        n => {
            let digits = input.bytes(u64::from(n), what)?;
            std::str::from_utf8(&digits).ok().and_then(|s| s.trim().parse::<f64>().ok()).ok_or_else(|| {
                input.corrupt(format!("{what}: {:?} is not a number", String::from_utf8_lossy(&digits)))
            })?
        }
    })
}

/// A score stored as an IEEE 754 double, little-endian (RDB 8 on).
pub fn binary_double<R: Read>(input: &mut Input<R>, what: &str) -> Result<f64, Error> {
    Ok(f64::from_le_bytes(input.array(what)?))
}

/// A millisecond time, 8 bytes little-endian.
pub fn millis<R: Read>(input: &mut Input<R>, what: &str) -> Result<i64, Error> {
    Ok(i64::from_le_bytes(input.array(what)?))
}
