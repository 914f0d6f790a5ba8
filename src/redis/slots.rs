//! A set of hash slots: which keys a run takes when it is one shard of many (`--slots`, `--shard`).
//!
//! A key's slot is its cluster slot (CRC16 of the key or its `{hash tag}`, mod 16384) whether the source is
//! a cluster or not, so the same split works against both. [`shard`] cuts the 16384 slots into N
//! contiguous ranges exactly as `redis-cli --cluster create` assigns them to N primaries, so on a cluster
//! made with N primaries each shard is one primary's slots. Plain data and arithmetic: no I/O.

use super::cluster::{slot, SLOTS};

/// A set of hash slots, as a bitmap.
#[derive(Clone, PartialEq, Eq)]
pub struct SlotSet {
    /// One bit per slot.
    bits: Box<[u64; SLOTS / 64]>,
}

impl std::fmt::Debug for SlotSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SlotSet({})", self.ranges_text())
    }
}

impl SlotSet {
    /// The slots of the inclusive `ranges`.
    pub fn from_ranges(ranges: &[(u16, u16)]) -> SlotSet {
        let mut bits = Box::new([0u64; SLOTS / 64]);
        for &(from, to) in ranges {
            for s in from..=to.min(SLOTS as u16 - 1) {
                bits[usize::from(s) / 64] |= 1 << (s % 64);
            }
        }
        SlotSet { bits }
    }

    /// Whether slot `s` is in the set.
    pub fn has(&self, s: u16) -> bool {
        usize::from(s) < SLOTS && self.bits[usize::from(s) / 64] & (1 << (s % 64)) != 0
    }

    /// Whether `key` hashes to a slot in the set.
    pub fn has_key(&self, key: &[u8]) -> bool {
        self.has(slot(key))
    }

    /// How many slots the set holds.
    pub fn len(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The set as maximal inclusive ranges, in order.
    pub fn ranges(&self) -> Vec<(u16, u16)> {
        let mut out: Vec<(u16, u16)> = Vec::new();
        for s in (0..SLOTS as u16).filter(|&s| self.has(s)) {
            match out.last_mut() {
                Some((_, to)) if *to + 1 == s => *to = s,
                _ => out.push((s, s)),
            }
        }
        out
    }

    /// The ranges as `--slots` spells them: `0-5460,10923`.
    pub fn ranges_text(&self) -> String {
        let part = |(a, b): (u16, u16)| if a == b { a.to_string() } else { format!("{a}-{b}") };
        self.ranges().into_iter().map(part).collect::<Vec<_>>().join(",")
    }
}

/// The inclusive slot ranges of the `of` shards (0-based): the ranges `redis-cli --cluster create` gives
/// `of` primaries. Its arithmetic, in single-precision floats like redis-cli's own, is
/// `last = lround(cursor + per_node - 1)`, `cursor += per_node`, the last range ending at 16383. For
/// some `of` above 7541 the rounding runs out of slots before the last shards (redis-cli would give
/// them ranges starting past 16383): then the first shard left without a slot is the error.
pub fn shards(of: u32) -> Result<Vec<(u16, u16)>, u32> {
    let per_node = SLOTS as f32 / of as f32;
    let (mut first, mut cursor) = (0i64, 0.0f32);
    let mut ranges = Vec::with_capacity(of as usize);
    for i in 0..of {
        let mut last = (cursor + per_node - 1.0).round() as i64;
        if last > SLOTS as i64 || i == of - 1 {
            last = SLOTS as i64 - 1;
        }
        if first > last {
            return Err(i);
        }
        ranges.push((first as u16, last as u16));
        first = last + 1;
        cursor += per_node;
    }
    Ok(ranges)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_the_ranges_redis_cli_gives_primaries() {
        // redis-cli --cluster create with 3 primaries: 0-5460, 5461-10922, 10923-16383.
        assert_eq!(shards(3), Ok(vec![(0, 5460), (5461, 10922), (10923, 16383)]));
        assert_eq!(shards(1), Ok(vec![(0, 16383)]));
        // 78 shards (2 per primary of 39): redis-cli's floats, not the closed form round(i*16384/78).
        assert_eq!(shards(78).unwrap()[67], (14073, 14283));
        // Every N either splits the slots into N contiguous, disjoint, non-empty ranges covering all of
        // them, or is refused; every N up to 7541 and 16384 split.
        let mut refused = 0;
        for of in 1..=SLOTS as u32 {
            match shards(of) {
                Ok(ranges) => {
                    assert_eq!(
                        (ranges.len(), ranges[0].0, ranges.last().unwrap().1),
                        (of as usize, 0, 16383)
                    );
                    for w in ranges.windows(2) {
                        assert!(w[0].0 <= w[0].1 && w[0].1 + 1 == w[1].0, "{of} shards: {w:?}");
                    }
                }
                Err(empty) => {
                    assert!(of > 7541 && empty < of, "{of} refused at {empty}");
                    refused += 1;
                }
            }
        }
        assert!(shards(16384).is_ok() && refused > 0);
    }

    #[test]
    fn sets_hold_their_ranges() {
        let s = SlotSet::from_ranges(&[(10, 20), (15, 30), (16383, 16383), (0, 0)]);
        assert_eq!(s.ranges(), [(0, 0), (10, 30), (16383, 16383)]);
        assert_eq!(s.ranges_text(), "0,10-30,16383");
        assert_eq!(s.len(), 23);
        assert!(s.has(10) && !s.has(31) && s.has_key(b"foo") == s.has(12182));
    }
}
