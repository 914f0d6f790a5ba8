//! Stage 1: find the keys, in batches. Either SCAN the source (one pass per `--type`, each `--match`
//! pattern with the server's own MATCH, until the cursor returns to 0), or read `--keys-from`.
//!
//! Several patterns form a union: a key found by pattern *i* is dropped if it matches an earlier
//! pattern too, so each key comes once (bar SCAN's own rare repeats while the server resizes its
//! table). Several types are disjoint passes with SCAN TYPE. Keys are counted as scanned when their
//! batch is sent on. The stage stops early when the stop flag is raised, and ends by returning, which
//! drops its sender and lets the next stage drain.

use std::io::{BufRead, Read};

use crossbeam_channel::Sender;

use crate::config::KeyType;
use crate::conn::{self, Conn};
use crate::glob;
use crate::key::Key;
use crate::report::{Counters, Reporter, Stage, CSV_HEADER};

/// Where the scan stage gets its keys.
pub enum KeyInput {
    /// SCAN a server.
    Server {
        /// Its own connection to the source.
        conn: Conn,
        /// MATCH patterns (at least one).
        patterns: Vec<Vec<u8>>,
        /// TYPE filters; empty is every type.
        types: Vec<KeyType>,
        /// COUNT hint.
        count: u64,
    },
    /// Lines of a file or standard input, opened during preflight.
    Lines(Box<dyn BufRead + Send>),
}

/// Batches keys and sends them on, counting them as scanned.
struct Batcher<'a> {
    /// The batch being filled.
    keys: Vec<Key>,
    /// Keys per batch.
    size: usize,
    /// The next stage.
    out: Sender<Vec<Key>>,
    /// For the scanned counter.
    rep: &'a Reporter<'a>,
}

impl Batcher<'_> {
    /// Adds a key; returns false when the run is stopping or the next stage has gone away. A stop
    /// cuts the current SCAN page short: the keys not yet sent were never scanned.
    fn push(&mut self, key: Key) -> bool {
        if self.rep.stop.stop_scanning() {
            return false;
        }
        self.keys.push(key);
        self.keys.len() < self.size || self.flush()
    }

    /// Sends the batch on; a batch the next stage no longer takes (after an abort) is not counted.
    fn flush(&mut self) -> bool {
        if self.keys.is_empty() {
            return true;
        }
        let batch = std::mem::replace(&mut self.keys, Vec::with_capacity(self.size));
        let n = batch.len() as u64;
        // Counted before sending, so that a downstream stage never accounts for a key not yet scanned.
        Counters::add(&self.rep.counters.scanned, n);
        match self.out.send(batch) {
            Ok(()) => true,
            Err(_) => {
                self.rep.unreached(n as usize);
                false
            }
        }
    }
}

/// Runs the scan stage until every key was found, the stop flag is raised, or the connection is lost.
pub fn run(input: KeyInput, batch: usize, out: Sender<Vec<Key>>, rep: Reporter) {
    if let Err(StageError(message)) = produce(input, batch, out, &rep) {
        rep.stop.fatal(format!("scan stage: {message}"));
    }
}

/// Why the scan could not go on.
struct StageError(String);

fn produce(input: KeyInput, batch: usize, out: Sender<Vec<Key>>, rep: &Reporter) -> Result<(), StageError> {
    let mut batcher = Batcher { keys: Vec::with_capacity(batch), size: batch, out, rep };
    match input {
        KeyInput::Server { mut conn, patterns, types, count } => {
            let passes: Vec<Option<KeyType>> =
                if types.is_empty() { vec![None] } else { types.into_iter().map(Some).collect() };
            for ty in passes {
                for (i, pattern) in patterns.iter().enumerate() {
                    let earlier = &patterns[..i];
                    let go_on = scan_pass(&mut conn, pattern, ty, count, rep, |key| {
                        if earlier.iter().any(|p| glob::matches(p, &key)) {
                            true
                        } else {
                            batcher.push(Key(key))
                        }
                    })?;
                    if !go_on {
                        return Ok(());
                    }
                }
            }
        }
        KeyInput::Lines(reader) => read_lines(reader, &mut batcher, rep)?,
    }
    if !rep.stop.stop_scanning() {
        batcher.flush();
    }
    Ok(())
}

/// One SCAN pass with one pattern (and type); `emit` is called for every key and returns false to
/// stop. Returns false when the pass was cut short.
fn scan_pass(
    conn: &mut Conn,
    pattern: &[u8],
    ty: Option<KeyType>,
    count: u64,
    rep: &Reporter,
    mut emit: impl FnMut(Vec<u8>) -> bool,
) -> Result<bool, StageError> {
    let mut cursor: u64 = 0;
    loop {
        if rep.stop.stop_scanning() {
            return Ok(false);
        }
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(count);
        if let Some(ty) = ty {
            cmd.arg("TYPE").arg(ty.name());
        }
        // SCAN is stateless on the server: after a reconnect the same cursor carries on.
        let (next, keys): (u64, Vec<Vec<u8>>) = match conn.call(&cmd, || rep.stop.discard()) {
            Ok(page) => page,
            // The source refused to scan, or stayed unreachable: no more keys can be found.
            Err(err) => {
                let (code, message) = conn::classify(&err);
                return Err(StageError(format!("SCAN {cursor} failed: {code} {message}")));
            }
        };
        for key in keys {
            if !emit(key) {
                return Ok(false);
            }
        }
        if next == 0 {
            return Ok(true);
        }
        cursor = next;
    }
}

/// Reads `--keys-from`: an error (or diff) CSV written by redis-ferry when the first line is its
/// header, else one key per line taken literally.
fn read_lines(
    mut reader: Box<dyn BufRead + Send>,
    batcher: &mut Batcher,
    rep: &Reporter,
) -> Result<(), StageError> {
    let unreadable = |e: &dyn std::fmt::Display| StageError(format!("cannot read --keys-from: {e}"));
    let mut first = Vec::new();
    if reader.read_until(b'\n', &mut first).map_err(|e| unreadable(&e))? == 0 {
        return Ok(());
    }
    let header = trim_eol(&first);
    let csv_prefix = format!("{},{},", CSV_HEADER[0], CSV_HEADER[1]);
    if header.starts_with(csv_prefix.as_bytes()) {
        let input = std::io::Cursor::new(first).chain(reader);
        let mut csv = csv::ReaderBuilder::new().has_headers(true).from_reader(input);
        for record in csv.byte_records() {
            if rep.stop.stop_scanning() {
                return Ok(());
            }
            let record = record.map_err(|e| unreadable(&e))?;
            let raw = record.get(1).unwrap_or_default();
            let key = match std::str::from_utf8(raw).map_err(|e| e.to_string()).and_then(Key::parse_escaped) {
                Ok(key) => key,
                Err(why) => {
                    Counters::add(&rep.counters.scanned, 1);
                    rep.fail(
                        Key(raw.to_vec()),
                        Stage::Scan,
                        "PROTOCOL".into(),
                        format!("bad key in --keys-from: {why}"),
                    );
                    continue;
                }
            };
            if !batcher.push(key) {
                return Ok(());
            }
        }
        Ok(())
    } else {
        let mut line = first;
        loop {
            if rep.stop.stop_scanning() {
                return Ok(());
            }
            let key = trim_eol(&line);
            if !key.is_empty() && !batcher.push(Key(key.to_vec())) {
                return Ok(());
            }
            line.clear();
            if reader.read_until(b'\n', &mut line).map_err(|e| unreadable(&e))? == 0 {
                return Ok(());
            }
        }
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}
