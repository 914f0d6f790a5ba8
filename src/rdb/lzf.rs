//! LZF decompression, for the strings an RDB file stores compressed. The output length is known in
//! advance (the file gives it) and is checked by the caller against a limit before anything is
//! allocated; every back reference and literal run is checked against both buffers, so no input can
//! read or write out of bounds.

/// Decompresses `input` into exactly `len` bytes; `Err` says what was wrong.
pub fn decompress(input: &[u8], len: usize) -> Result<Vec<u8>, &'static str> {
    let mut out: Vec<u8> = Vec::with_capacity(len);
    let mut i = 0;
    while i < input.len() {
        let ctrl = usize::from(input[i]);
        i += 1;
        if ctrl < 32 {
            // A literal run of ctrl + 1 bytes.
            let run = ctrl + 1;
            if i + run > input.len() {
                return Err("an LZF literal runs past the end of the compressed data");
            }
            if out.len() + run > len {
                return Err("LZF data decompresses to more bytes than the file says");
            }
            out.extend_from_slice(&input[i..i + run]);
            i += run;
        } else {
            // A back reference: length in the top 3 bits (7 means one more byte), offset in 13 bits.
            let mut run = ctrl >> 5;
            if run == 7 {
                let Some(&more) = input.get(i) else {
                    return Err("an LZF back reference is cut short");
                };
                run += usize::from(more);
                i += 1;
            }
            run += 2;
            let Some(&low) = input.get(i) else {
                return Err("an LZF back reference is cut short");
            };
            i += 1;
            let back = ((ctrl & 0x1f) << 8) + usize::from(low) + 1;
            if back > out.len() {
                return Err("an LZF back reference points before the start of the data");
            }
            if out.len() + run > len {
                return Err("LZF data decompresses to more bytes than the file says");
            }
            let from = out.len() - back;
            // Byte by byte: the reference may overlap what it writes.
            for k in 0..run {
                let b = out[from + k];
                out.push(b);
            }
        }
    }
    if out.len() != len {
        return Err("LZF data decompresses to fewer bytes than the file says");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::decompress;

    #[test]
    fn literals_and_overlapping_references() {
        // "abcabcabc": a literal "abc", then a reference 3 back of length 6.
        let data = [2, b'a', b'b', b'c', (4 << 5), 2];
        assert_eq!(decompress(&data, 9).unwrap(), b"abcabcabc");
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(decompress(&[5, b'a'], 6).is_err());
        assert!(decompress(&[0, b'a', (1 << 5), 10], 4).is_err());
        assert!(decompress(&[0, b'a'], 2).is_err());
        assert!(decompress(&[1, b'a', b'b'], 1).is_err());
    }
}
