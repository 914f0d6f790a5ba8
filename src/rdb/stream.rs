//! A stream value: its listpacks of entries (each a master entry and deltas), its length, last ID and
//! counters, then its consumer groups with their pending entries and consumers, and, in Redis 8.6's type
//! 26, its idempotent-producer state. Walked like any value (`value.rs`): cut, checked or decoded.

use std::io::Read;

use super::encoding::{self, count, len};
use super::input::Input;
use super::packed;
use super::value::{Mode, Step, Stop, Walk};
use super::{Error, Part, StreamConsumer, StreamEntry, StreamGroup, StreamMeta, StreamPending};

impl<R: Read> Walk<'_, '_, R> {
    /// A stream: its listpacks of entries, its metadata, its consumer groups.
    pub(super) fn stream(&mut self, t: u8) -> Step {
        for _ in 0..self.count("stream listpacks")? {
            let at = self.input.offset();
            let node = self.string("stream node id")?;
            let lp = self.blob("stream listpack")?;
            if let (Some(node), Some(lp)) = (node, lp) {
                let master = raw_id(&node).ok_or_else(|| Error::Corrupt {
                    offset: at,
                    what: "a stream node id that is not 16 bytes".into(),
                })?;
                for e in stream_entries(master, &lp).map_err(|what| Error::Corrupt { offset: at, what })? {
                    self.entry(e)?;
                }
            }
            self.check()?;
        }
        // Only a decode keeps the groups (until the stream's end); a raw walk is held to its limit here too.
        let decoding = matches!(self.mode, Mode::Decode(_));
        let limit = match self.mode {
            Mode::Raw { limit } => Some(limit),
            _ => None,
        };
        let input = &mut *self.input;
        let over = |input: &Input<R>| limit.is_some_and(|l| input.teed() as u64 > l);
        let id = |input: &mut Input<R>, what: &str| -> Result<(u64, u64), Error> {
            Ok((len(input, what)?, len(input, what)?))
        };
        let length = len(input, "stream length")?;
        let last_id = id(input, "stream last id")?;
        let (mut first_id, mut max_deleted, mut added) = ((0, 0), (0, 0), length);
        if t >= 19 {
            first_id = id(input, "stream first id")?;
            max_deleted = id(input, "stream max deleted id")?;
            added = len(input, "stream entries added")?;
        }
        let mut groups = Vec::new();
        for _ in 0..count(input, "stream groups")? {
            let name = encoding::string(input, "group name")?;
            let last = id(input, "group last id")?;
            // -1 (not known) is saved as a length, so it reads as 2^64 - 1.
            let entries_read = if t >= 19 { Some(len(input, "group entries read")?) } else { None };
            let entries_read = entries_read.filter(|&n| n != u64::MAX);
            let mut pending = Vec::new();
            for i in 0..count(input, "group pending entries")? {
                if i % 1024 == 0 && over(input) {
                    return Err(Stop::Big);
                }
                let raw = input.array::<16>("pending entry id")?;
                let delivered = encoding::millis(input, "pending entry delivery time")?;
                let deliveries = len(input, "pending entry delivery count")?;
                pending.push(StreamPending { id: raw_id(&raw).unwrap_or_default(), delivered, deliveries });
            }
            let mut consumers = Vec::new();
            for _ in 0..count(input, "group consumers")? {
                if over(input) {
                    return Err(Stop::Big);
                }
                let name = encoding::string(input, "consumer name")?;
                let seen = encoding::millis(input, "consumer seen time")?;
                let active =
                    if t >= 21 { Some(encoding::millis(input, "consumer active time")?) } else { None };
                let mut ids = Vec::new();
                for _ in 0..count(input, "consumer pending entries")? {
                    ids.push(raw_id(&input.array::<16>("consumer pending id")?).unwrap_or_default());
                }
                consumers.push(StreamConsumer { name, seen, active, pending: ids });
            }
            // Group data is held until the end of the stream when decoding; a raw walk only cuts it.
            if decoding {
                groups.push(StreamGroup { name, last_id: last, entries_read, pending, consumers });
            }
        }
        if t >= 26 {
            // Redis 8.6's idempotent-producer state: its settings, the producer IDs it remembers (each
            // with the entry ID it gave), and two counters. It is cut with the value (RESTORE keeps it);
            // the type-aware copy has no command to set it, and leaves it out.
            len(input, "stream IDMP duration")?;
            len(input, "stream IDMP max entries")?;
            for _ in 0..count(input, "stream IDMP entries")? {
                encoding::skip_string(input, "stream IDMP producer id")?;
                input.skip(16, "stream IDMP entry id")?;
            }
            len(input, "stream IDMP ids added")?;
            len(input, "stream IDMP duplicates")?;
        }
        self.check()?;
        if decoding {
            self.flush()?;
            let meta = StreamMeta { length, last_id, first_id, max_deleted, added, groups };
            if let Mode::Decode(pages) = &mut self.mode {
                pages.page(Part::StreamEnd(meta))?;
            }
        }
        Ok(())
    }
}

/// A stream ID stored as 16 bytes, big-endian milliseconds and sequence.
fn raw_id(b: &[u8]) -> Option<(u64, u64)> {
    let b: &[u8; 16] = b.try_into().ok()?;
    let ms = u64::from_be_bytes(b[..8].try_into().ok()?);
    let seq = u64::from_be_bytes(b[8..].try_into().ok()?);
    Some((ms, seq))
}

/// The live entries of one stream listpack whose master ID is `master`.
fn stream_entries(master: (u64, u64), lp: &[u8]) -> Result<Vec<StreamEntry>, String> {
    let elems = packed::listpack(lp)?;
    let mut it = elems.into_iter();
    let mut int = |what: &str| -> Result<i64, String> {
        it.next().and_then(|e| e.int()).ok_or_else(|| format!("a stream listpack without its {what}"))
    };
    let live = int("entry count")?;
    let deleted = int("deleted count")?;
    let nfields = int("master field count")?;
    if nfields < 0 || live < 0 || deleted < 0 {
        return Err("a stream listpack with a negative count".into());
    }
    let mut master_fields = Vec::new();
    for _ in 0..nfields {
        master_fields.push(it.next().ok_or("a stream listpack cut short in its master fields")?.into_bytes());
    }
    if it.next().and_then(|e| e.int()) != Some(0) {
        return Err("a stream listpack without the end of its master entry".into());
    }
    let mut out = Vec::new();
    let total = live.saturating_add(deleted);
    for _ in 0..total {
        let mut next_int = |what: &str| -> Result<i64, String> {
            it.next().and_then(|e| e.int()).ok_or_else(|| format!("a stream entry without its {what}"))
        };
        let flags = next_int("flags")?;
        let ms = next_int("id")?;
        let seq = next_int("id")?;
        let fields = if flags & 2 != 0 {
            let mut f = Vec::with_capacity(master_fields.len());
            for name in &master_fields {
                let v = it.next().ok_or("a stream entry cut short")?.into_bytes();
                f.push((name.clone(), v));
            }
            f
        } else {
            let n = it.next().and_then(|e| e.int()).ok_or("a stream entry without its field count")?;
            if n < 0 {
                return Err("a stream entry with a negative field count".into());
            }
            let mut f = Vec::new();
            for _ in 0..n {
                let name = it.next().ok_or("a stream entry cut short")?.into_bytes();
                let v = it.next().ok_or("a stream entry cut short")?.into_bytes();
                f.push((name, v));
            }
            f
        };
        it.next().ok_or("a stream entry without its back count")?;
        if flags & 1 == 0 {
            let id = (master.0.wrapping_add(ms as u64), master.1.wrapping_add(seq as u64));
            out.push(StreamEntry { id, fields });
        }
    }
    if it.next().is_some() {
        return Err("a stream listpack with entries beyond its counts".into());
    }
    Ok(out)
}
