//! `--slots A-B[,C-D…]` and `--shard I/N`: which hash slots a run takes, checked by value. The shard
//! arithmetic itself is `redis::slots::shards`, the one redis-cli uses to give slots to primaries.

use super::{bad, ConfigError};
use crate::redis::cluster::SLOTS;
use crate::redis::slots::{shards, SlotSet};

/// Which part of the keyspace a run takes: the keys of some hash slots, given as `--slots` ranges or as
/// `--shard I/N`.
#[derive(Debug, Clone)]
pub struct Split {
    /// The slots taken.
    pub slots: SlotSet,
    /// `--shard I/N` (index, count), when that is how the slots were given.
    pub shard: Option<(u32, u32)>,
}

impl Split {
    /// The slots a run with `split` takes: `None` for every slot.
    pub fn slots_of(split: &Option<Split>) -> Option<&SlotSet> {
        split.as_ref().map(|s| &s.slots)
    }

    /// How the split reads in messages and the checkpoint: `shard 2/8 (slots 4096-6143)`.
    pub fn describe(&self) -> String {
        match self.shard {
            Some((i, n)) => format!("shard {i}/{n} (slots {})", self.slots.ranges_text()),
            None => format!("slots {}", self.slots.ranges_text()),
        }
    }
}

/// Parses `--slots A-B[,C-D...]` or `--shard I/N` (not both).
pub(super) fn split(slots: &Option<String>, shard: &Option<String>) -> Result<Option<Split>, ConfigError> {
    match (slots, shard) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(bad("--slots and --shard both say which slots to take; give one of them")),
        (Some(text), None) => {
            let mut ranges = Vec::new();
            for part in text.split(',') {
                let slot = |t: &str| {
                    t.trim().parse::<u16>().ok().filter(|s| usize::from(*s) < SLOTS).ok_or_else(|| {
                        bad(format!("--slots `{text}`: `{}` is not a slot (0 to 16383)", t.trim()))
                    })
                };
                let (from, to) = match part.split_once('-') {
                    Some((a, b)) => (slot(a)?, slot(b)?),
                    None => (slot(part)?, slot(part)?),
                };
                if from > to {
                    return Err(bad(format!("--slots `{text}`: the range {from}-{to} runs backwards")));
                }
                ranges.push((from, to));
            }
            Ok(Some(Split { slots: SlotSet::from_ranges(&ranges), shard: None }))
        }
        (None, Some(text)) => {
            let parsed = text
                .split_once('/')
                .and_then(|(i, n)| Some((i.trim().parse::<u32>().ok()?, n.trim().parse::<u32>().ok()?)));
            let Some((index, of)) = parsed else {
                return Err(bad(format!("--shard `{text}`: expected I/N, e.g. 0/8 (I from 0 to N-1)")));
            };
            if of == 0 || of as usize > SLOTS {
                return Err(bad(format!(
                    "--shard {text}: N must be 1 to 16384 (one shard per slot at most)"
                )));
            }
            if index >= of {
                return Err(bad(format!(
                    "--shard {text}: shards are numbered from 0 to {} (like JOB_COMPLETION_INDEX); the last of {of} \
                     is {}/{of}",
                    of - 1,
                    of - 1
                )));
            }
            let ranges = shards(of).map_err(|empty| {
                bad(format!(
                    "--shard {text}: {of} shards cannot each have slots: the split redis-cli makes gives shard \
                     {empty} of {of} none (it does for some N above 7541); choose another N"
                ))
            })?;
            Ok(Some(Split {
                slots: SlotSet::from_ranges(&[ranges[index as usize]]),
                shard: Some((index, of)),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(slots: Option<&str>, shard: Option<&str>) -> String {
        split(&slots.map(String::from), &shard.map(String::from)).unwrap_err().0
    }

    #[test]
    fn shards_are_numbered_from_0_and_slips_get_a_hint() {
        let s = split(&None, &Some("2/3".into())).unwrap().unwrap();
        assert_eq!((s.shard, s.slots.ranges()), (Some((2, 3)), vec![(10923, 16383)]));
        assert_eq!(s.describe(), "shard 2/3 (slots 10923-16383)");
        let err = refused(None, Some("3/3"));
        assert!(err.contains("numbered from 0 to 2") && err.contains("the last of 3 is 2/3"), "{err}");
        assert!(refused(None, Some("0/0")).contains("N must be 1 to 16384"));
        assert!(refused(None, Some("1/16385")).contains("N must be 1 to 16384"));
        assert!(refused(None, Some("x")).contains("expected I/N"));
        assert!(refused(None, Some("-1/4")).contains("expected I/N"));
    }

    #[test]
    fn a_shard_count_that_leaves_shards_without_slots_is_refused() {
        // 7542 is the first such N: redis-cli would give its shard 7541 slots from 16384 on.
        let err = refused(None, Some("0/7542"));
        let expected =
            "7542 shards cannot each have slots: the split redis-cli makes gives shard 7541 of 7542 none";
        assert!(err.contains(expected) && err.contains("choose another N"), "{err}");
        assert!(split(&None, &Some("7540/7541".into())).is_ok());
    }

    #[test]
    fn slot_ranges_are_checked_by_value() {
        let s = split(&Some("0-99, 200 ,16383".into()), &None).unwrap().unwrap();
        assert_eq!(s.slots.ranges_text(), "0-99,200,16383");
        assert!(refused(Some("5-3"), None).contains("runs backwards"));
        assert!(refused(Some("16384"), None).contains("`16384` is not a slot"));
        assert!(refused(Some("1,,2"), None).contains("`` is not a slot"));
        assert!(refused(Some("1"), Some("0/2")).contains("give one of them"));
    }
}
