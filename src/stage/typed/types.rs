//! Each type's pages: what the type-aware copier reads from the source and writes under the temporary
//! name, page after page, for strings, lists, sets, sorted sets, hashes and streams (with their groups,
//! consumers and pending entries). The transactions themselves are `mod.rs`'s.

use redis::{Cmd, Value};

use super::values::{bulk_items, bytes_of, fields, get, int_of, next_stream_id};
use super::{protocol, Build, Copier, Fate, Fault, MAX_PAGE, PAGE_BYTES, STRING_CHUNK};
use crate::account::Stage;
use crate::redis::reply::kind;

/// Elements asked for in the first page of a key.
const FIRST_PAGE: usize = 250;

/// An adaptive page size: grows to [`MAX_PAGE`] elements while pages stay under [`PAGE_BYTES`],
/// shrinks when one is bigger.
struct Pager {
    /// Elements to ask for in the next page.
    count: usize,
}

impl Pager {
    fn new() -> Pager {
        Pager { count: FIRST_PAGE }
    }

    fn saw(&mut self, elements: usize, bytes: usize) {
        if bytes > PAGE_BYTES && elements > 0 {
            self.count = (PAGE_BYTES * elements / bytes).clamp(1, MAX_PAGE);
        } else if bytes < PAGE_BYTES / 2 {
            self.count = (self.count * 2).min(MAX_PAGE);
        }
    }
}

impl Copier<'_> {
    /// Strings: GETRANGE chunks; the first is SET (which also makes an empty string), the rest
    /// SETRANGE at their offset (idempotent). A string longer than one chunk is given its full length
    /// with the first chunk (one allocation on the target, zero-filled), so that the later chunks are
    /// written in place: grown chunk by chunk, Redis would reallocate and copy it again and again
    /// (measured: 135 ms for one SETRANGE near 100 MB, against 64 ms for the one zero-fill). If the
    /// source string then turns out shorter, the copy starts over.
    pub(super) fn string(&mut self, b: &mut Build) -> Result<Fate, Fault> {
        let mut offset = 0usize;
        let mut presized = 0usize;
        loop {
            let k = b.key.as_bytes();
            let end = offset + STRING_CHUNK - 1;
            let chunk = match self.page(b, redis::cmd("GETRANGE").arg(k).arg(offset).arg(end))? {
                Value::BulkString(bytes) => bytes,
                Value::Nil => Vec::new(),
                other => return Err(protocol(format!("unexpected GETRANGE reply: {}", kind(&other))).into()),
            };
            let last = chunk.len() < STRING_CHUNK;
            let mut write = if offset == 0 { redis::cmd("SET") } else { redis::cmd("SETRANGE") };
            write.arg(&b.tmp[..]);
            if offset > 0 {
                write.arg(offset);
            }
            write.arg(&chunk[..]);
            let mut writes = vec![write];
            if offset == 0 && !last {
                let k = b.key.as_bytes().to_vec();
                let ([len], _) = self.read::<1>(b.key, |p| {
                    p.cmd("STRLEN").arg(&k[..]);
                })?;
                if let Value::Int(len) = len {
                    let len = len as usize;
                    if len > chunk.len() {
                        writes.push(
                            redis::cmd("SETRANGE").arg(&b.tmp[..]).arg(len - 1).arg(&b"\0"[..]).clone(),
                        );
                        presized = len;
                    }
                }
            }
            offset += chunk.len();
            if last {
                if offset < presized {
                    return Err(Fault::Again(
                        Stage::Fetch,
                        "PROTOCOL".into(),
                        format!("the string shrank from {presized} to {offset} bytes on the source during the copy"),
                    ));
                }
                return self.w.finish(b, writes.pop());
            }
            self.w.put(b, writes)?;
        }
    }

    /// Lists: LRANGE pages, RPUSH (whose reply, the new length, is checked).
    pub(super) fn list(&mut self, b: &mut Build) -> Result<Fate, Fault> {
        let mut pager = Pager::new();
        let mut start = 0usize;
        loop {
            let k = b.key.as_bytes();
            let want = pager.count;
            let reply = self.page(b, redis::cmd("LRANGE").arg(k).arg(start).arg(start + want - 1))?;
            let items = bulk_items(reply, "LRANGE")?;
            pager.saw(items.len(), items.iter().map(Vec::len).sum());
            let last = items.len() < want;
            let write = (!items.is_empty()).then(|| {
                let mut c = redis::cmd("RPUSH");
                c.arg(&b.tmp[..]);
                for item in &items {
                    c.arg(&item[..]);
                }
                c
            });
            start += items.len();
            if last {
                return self.w.finish(b, write);
            }
            if let Some(write) = write {
                self.w.put(b, vec![write])?;
            }
        }
    }

    /// Sets, sorted sets and hashes: SSCAN / ZSCAN / HSCAN pages (`width` 1 or 2 items per element),
    /// SADD / ZADD / HSET (idempotent, so SCAN's repeats do no harm). ZSCAN's scores are passed on as
    /// the bytes the server wrote, so they round-trip exactly.
    pub(super) fn scanned(
        &mut self,
        b: &mut Build,
        scan: &str,
        add: &str,
        width: usize,
    ) -> Result<Fate, Fault> {
        let mut pager = Pager::new();
        let mut cursor: Vec<u8> = b"0".to_vec();
        loop {
            let k = b.key.as_bytes();
            let reply =
                self.page(b, redis::cmd(scan).arg(k).arg(&cursor[..]).arg("COUNT").arg(pager.count))?;
            let (next, items) = match reply {
                Value::Array(mut parts) if parts.len() == 2 => {
                    let items = bulk_items(parts.pop().unwrap_or_default(), scan)?;
                    let next = match parts.pop() {
                        Some(Value::BulkString(c)) => c,
                        Some(Value::SimpleString(c)) => c.into_bytes(),
                        _ => return Err(protocol(format!("unexpected {scan} cursor")).into()),
                    };
                    (next, items)
                }
                other => return Err(protocol(format!("unexpected {scan} reply: {}", kind(&other))).into()),
            };
            if items.len() % width != 0 {
                return Err(protocol(format!("{scan} returned an odd number of items")).into());
            }
            pager.saw(items.len() / width, items.iter().map(Vec::len).sum());
            let last = next == b"0";
            let write = (!items.is_empty()).then(|| {
                let mut c = redis::cmd(add);
                c.arg(&b.tmp[..]);
                if width == 2 && add == "ZADD" {
                    // ZSCAN gives member, score; ZADD takes score, member.
                    for pair in items.chunks(2) {
                        c.arg(&pair[1][..]).arg(&pair[0][..]);
                    }
                } else {
                    for item in &items {
                        c.arg(&item[..]);
                    }
                }
                c
            });
            cursor = next;
            if last {
                return self.w.finish(b, write);
            }
            if let Some(write) = write {
                self.w.put(b, vec![write])?;
            }
        }
    }

    /// Streams: XRANGE pages written with XADD at the same IDs; then the stream's last ID and counters
    /// (XSETID), its groups (XGROUP CREATE), consumers (XGROUP CREATECONSUMER) and pending entries
    /// (XCLAIM ... FORCE). An empty stream is made with XGROUP CREATE ... MKSTREAM.
    pub(super) fn stream(&mut self, b: &mut Build) -> Result<Fate, Fault> {
        let mut pager = Pager::new();
        let mut start: Vec<u8> = b"-".to_vec();
        loop {
            let k = b.key.as_bytes();
            let want = pager.count;
            let reply =
                self.page(b, redis::cmd("XRANGE").arg(k).arg(&start[..]).arg("+").arg("COUNT").arg(want))?;
            let entries = match reply {
                Value::Array(entries) => entries,
                other => return Err(protocol(format!("unexpected XRANGE reply: {}", kind(&other))).into()),
            };
            let n = entries.len();
            let mut bytes = 0;
            let mut writes = Vec::with_capacity(n);
            let mut last_id = None;
            for entry in entries {
                let (id, fields) = match entry {
                    Value::Array(mut pair) if pair.len() == 2 => {
                        let fields = bulk_items(pair.pop().unwrap_or_default(), "XRANGE")?;
                        let id = bytes_of(pair.pop().unwrap_or_default())
                            .ok_or_else(|| protocol("XRANGE entry without an ID".into()))?;
                        (id, fields)
                    }
                    _ => return Err(protocol("unexpected XRANGE entry".into()).into()),
                };
                bytes += fields.iter().map(Vec::len).sum::<usize>();
                let mut c = redis::cmd("XADD");
                c.arg(&b.tmp[..]).arg(&id[..]);
                for f in &fields {
                    c.arg(&f[..]);
                }
                writes.push(c);
                last_id = Some(id);
            }
            pager.saw(n, bytes);
            if !writes.is_empty() {
                self.w.put(b, writes)?;
            }
            match last_id.as_deref().and_then(next_stream_id) {
                Some(next) if n == want => start = next,
                _ => break,
            }
        }
        self.stream_meta(b)?;
        self.w.finish(b, None)
    }

    /// The stream's counters and groups, then each group's consumers and pending entries.
    fn stream_meta(&mut self, b: &mut Build) -> Result<(), Fault> {
        let k = b.key.as_bytes().to_vec();
        let ttl_cmd = self.ttl_cmd();
        let ([info, groups, ttl], sent) = self.read::<3>(b.key, |p| {
            p.cmd("XINFO")
                .arg("STREAM")
                .arg(&k[..])
                .cmd("XINFO")
                .arg("GROUPS")
                .arg(&k[..])
                .cmd(ttl_cmd)
                .arg(&k[..]);
        })?;
        b.deadline = self.deadline(ttl, &sent)?;
        let info = fields(info, "XINFO STREAM")?;
        let groups = match groups {
            Value::Array(groups) => {
                groups.into_iter().map(|g| fields(g, "XINFO GROUPS")).collect::<Result<Vec<_>, _>>()?
            }
            Value::ServerError(e) => return Err(super::failed(Stage::Fetch, &e).into()),
            other => return Err(protocol(format!("unexpected XINFO GROUPS reply: {}", kind(&other))).into()),
        };
        let (meta, names) =
            stream_setup(&b.tmp, b.pages == 0, &info, &groups, self.servers.target >= (7, 0, 0))?;
        self.w.put(b, meta)?;
        for (group, pending, consumers) in names {
            if consumers > 0 {
                self.consumers(b, &group)?;
            }
            if pending > 0 {
                self.pending(b, &group)?;
            }
        }
        Ok(())
    }

    /// Creates a group's consumers (Redis 6.2+ targets; older ones get them through XCLAIM only).
    fn consumers(&mut self, b: &mut Build, group: &[u8]) -> Result<(), Fault> {
        if self.servers.target < (6, 2, 0) {
            return Ok(());
        }
        let k = b.key.as_bytes().to_vec();
        let reply = self.page(b, redis::cmd("XINFO").arg("CONSUMERS").arg(&k[..]).arg(group))?;
        let consumers = match reply {
            Value::Array(list) => list,
            other => {
                return Err(protocol(format!("unexpected XINFO CONSUMERS reply: {}", kind(&other))).into())
            }
        };
        let mut writes = Vec::new();
        for c in consumers {
            let c = fields(c, "XINFO CONSUMERS")?;
            if let Some(name) = get(&c, "name").and_then(|v| bytes_of(v.clone())) {
                writes.push(
                    redis::cmd("XGROUP")
                        .arg("CREATECONSUMER")
                        .arg(&b.tmp[..])
                        .arg(group)
                        .arg(&name[..])
                        .clone(),
                );
            }
        }
        for chunk in writes.chunks(MAX_PAGE) {
            self.w.put(b, chunk.to_vec())?;
        }
        Ok(())
    }

    /// Copies a group's pending entries: XPENDING pages, XCLAIM each to its consumer with its idle
    /// time and delivery count.
    fn pending(&mut self, b: &mut Build, group: &[u8]) -> Result<(), Fault> {
        let k = b.key.as_bytes().to_vec();
        let mut start = b"-".to_vec();
        loop {
            let want = MAX_PAGE;
            let reply = self
                .page(b, redis::cmd("XPENDING").arg(&k[..]).arg(group).arg(&start[..]).arg("+").arg(want))?;
            let rows = match reply {
                Value::Array(rows) => rows,
                other => return Err(protocol(format!("unexpected XPENDING reply: {}", kind(&other))).into()),
            };
            let n = rows.len();
            let mut writes = Vec::with_capacity(n);
            let mut last = None;
            for row in rows {
                let Value::Array(cols) = row else {
                    return Err(protocol("unexpected XPENDING row".into()).into());
                };
                let mut cols = cols.into_iter();
                let (Some(id), Some(consumer), Some(idle), Some(count)) = (
                    cols.next().and_then(bytes_of),
                    cols.next().and_then(bytes_of),
                    cols.next().as_ref().and_then(int_of),
                    cols.next().as_ref().and_then(int_of),
                ) else {
                    return Err(protocol("unexpected XPENDING row".into()).into());
                };
                let mut c = redis::cmd("XCLAIM");
                c.arg(&b.tmp[..]).arg(group).arg(&consumer[..]).arg(0).arg(&id[..]);
                c.arg("IDLE").arg(idle).arg("RETRYCOUNT").arg(count).arg("FORCE").arg("JUSTID");
                writes.push(c);
                last = Some(id);
            }
            if !writes.is_empty() {
                self.w.put(b, writes)?;
            }
            match last.as_deref().and_then(next_stream_id) {
                Some(next) if n == want => start = next,
                _ => return Ok(()),
            }
        }
    }
}

/// What a stream carries besides its entries, as writes on its temporary name `tmp`: the stream itself
/// when it has no entry (`empty`), its last ID and counters (XSETID; ENTRIESADDED and MAXDELETEDID on a
/// 7.0+ target, `v7`), and a XGROUP CREATE per group; also each group's name, pending count and
/// consumer count, for the pages that follow.
type GroupCounts = Vec<(Vec<u8>, i64, i64)>;

fn stream_setup(
    tmp: &[u8],
    empty: bool,
    info: &[(String, Value)],
    groups: &[Vec<(String, Value)>],
    v7: bool,
) -> Result<(Vec<Cmd>, GroupCounts), Fault> {
    let mut meta = Vec::new();
    if empty {
        // No entries: make the (empty) stream by creating a group and removing it again.
        let placeholder = b"redis-ferry:placeholder";
        meta.push(
            redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(tmp)
                .arg(&placeholder[..])
                .arg("0")
                .arg("MKSTREAM")
                .clone(),
        );
        meta.push(redis::cmd("XGROUP").arg("DESTROY").arg(tmp).arg(&placeholder[..]).clone());
    }
    let last_id = get(info, "last-generated-id").and_then(|v| bytes_of(v.clone()));
    if let Some(last_id) = last_id {
        let mut setid = redis::cmd("XSETID");
        setid.arg(tmp).arg(&last_id[..]);
        if v7 {
            if let Some(added) = get(info, "entries-added").and_then(int_of) {
                setid.arg("ENTRIESADDED").arg(added);
            }
            if let Some(max) = get(info, "max-deleted-entry-id").and_then(|v| bytes_of(v.clone())) {
                setid.arg("MAXDELETEDID").arg(&max[..]);
            }
        }
        meta.push(setid);
    }
    let mut names = Vec::new();
    for g in groups {
        let name = get(g, "name")
            .and_then(|v| bytes_of(v.clone()))
            .ok_or_else(|| protocol("group without a name".into()))?;
        let last = get(g, "last-delivered-id")
            .and_then(|v| bytes_of(v.clone()))
            .ok_or_else(|| protocol("group without last-delivered-id".into()))?;
        let mut create = redis::cmd("XGROUP");
        create.arg("CREATE").arg(tmp).arg(&name[..]).arg(&last[..]);
        if v7 {
            if let Some(read) = get(g, "entries-read").and_then(int_of) {
                create.arg("ENTRIESREAD").arg(read);
            }
        }
        meta.push(create);
        let pending = get(g, "pending").and_then(int_of).unwrap_or(0);
        let consumers = get(g, "consumers").and_then(int_of).unwrap_or(0);
        names.push((name, pending, consumers));
    }
    Ok((meta, names))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_adapt_to_element_size() {
        let mut p = Pager::new();
        p.saw(FIRST_PAGE, FIRST_PAGE * 10);
        assert_eq!(p.count, (FIRST_PAGE * 2).min(MAX_PAGE));
        for _ in 0..10 {
            p.saw(p.count, p.count * 10);
        }
        assert_eq!(p.count, MAX_PAGE);
        p.saw(MAX_PAGE, MAX_PAGE * 100_000);
        assert_eq!(p.count, (PAGE_BYTES / 100_000).max(1));
        p.saw(1, 10 << 20);
        assert_eq!(p.count, 1);
    }
}
