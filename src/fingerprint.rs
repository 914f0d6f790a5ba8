//! A stable 64-bit hash (FNV-1a) for identities saved in files and compared by another process or
//! build: a cluster's slot map in a checkpoint, the copy a shard's report belongs to. Unlike the
//! standard library's hasher it gives the same value on every build and platform.

/// FNV-1a over each text followed by a newline, as 16 hex digits.
pub fn fnv1a<'a>(texts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for text in texts {
        for &b in text.iter().chain(b"\n") {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fnv1a_of_lines() {
        // FNV-1a 64 of "a\n" (offset basis 0xcbf29ce484222325, prime 0x100000001b3), computed apart.
        assert_eq!(fnv1a([b"a".as_slice()]), "089bdc07b544e7b2");
        assert_ne!(fnv1a([b"ab".as_slice()]), fnv1a([b"a".as_slice(), b"b".as_slice()]));
    }
}
