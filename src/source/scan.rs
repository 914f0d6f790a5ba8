//! The SCAN of one server: one pass per `--type`, each `--match` pattern with the server's own MATCH,
//! until the cursor returns to 0.
//!
//! Several patterns form a union: a key found by pattern *i* is dropped if it matches an earlier
//! pattern too, so each key comes once (bar SCAN's own rare repeats while the server resizes its
//! table). Several types are disjoint passes with SCAN TYPE. SCAN is stateless on the server: after a
//! reconnect the same cursor carries on.

use super::{refuses_scan, Batcher, Source, SourceError};
use crate::exit::Fatal;
use crate::key::{Key, KeyType};
use crate::redis::conn::Conn;
use crate::redis::{glob, reply};
use crate::resume::Position;

/// The SCAN of one server.
pub struct ServerScan {
    /// Its own connection to the server.
    pub conn: Conn,
    /// MATCH patterns (at least one).
    pub patterns: Vec<Vec<u8>>,
    /// TYPE filters; empty is every type.
    pub types: Vec<KeyType>,
    /// COUNT hint.
    pub count: u64,
    /// The server's `run_id` when the scan was set up: a SCAN cursor means nothing after a restart.
    pub run_id: String,
}

impl ServerScan {
    /// A scan of the server behind `conn`, after checking that it lets us SCAN.
    pub fn new(
        mut conn: Conn,
        patterns: Vec<Vec<u8>>,
        types: Vec<KeyType>,
        count: u64,
    ) -> Result<ServerScan, Fatal> {
        if let Some(refused) = refuses_scan(&mut conn) {
            return Err(refused);
        }
        let run_id = conn.server_info().map(|info| info.run_id).unwrap_or_default();
        Ok(ServerScan { conn, patterns, types, count, run_id })
    }
}

impl Source for ServerScan {
    fn run_id(&self) -> Option<&str> {
        Some(&self.run_id)
    }

    fn feed(self: Box<Self>, start: &[Option<Position>], batcher: &mut Batcher) -> Result<(), SourceError> {
        match start.first().copied().flatten() {
            Some(at) => scan_server(*self, at, batcher),
            None => Ok(()),
        }
    }
}

/// Scans one server: one pass per type and pattern, from `start`.
pub fn scan_server(scan: ServerScan, start: Position, batcher: &mut Batcher) -> Result<(), SourceError> {
    let ServerScan { mut conn, patterns, types, count, .. } = scan;
    let types: Vec<Option<KeyType>> =
        if types.is_empty() { vec![None] } else { types.into_iter().map(Some).collect() };
    let passes = types.iter().flat_map(|ty| (0..patterns.len()).map(move |i| (*ty, i)));
    for (pass, (ty, i)) in passes.enumerate().skip(start.pass) {
        let cursor = if pass == start.pass { start.cursor } else { 0 };
        let pass = Pass { pattern: &patterns[i], earlier: &patterns[..i], ty, count, index: pass };
        if !scan_pass(&mut conn, &pass, cursor, batcher)? {
            return Ok(());
        }
    }
    Ok(())
}

/// One SCAN pass: a pattern, maybe a type.
struct Pass<'a> {
    /// The MATCH pattern.
    pattern: &'a [u8],
    /// Patterns of earlier passes of the same type: a key matching one of them was found already.
    earlier: &'a [Vec<u8>],
    /// The TYPE filter.
    ty: Option<KeyType>,
    /// COUNT hint.
    count: u64,
    /// Its index among all passes (for the checkpoint).
    index: usize,
}

/// Runs one SCAN pass from `cursor` to its end; returns false when it was cut short.
fn scan_pass(
    conn: &mut Conn,
    pass: &Pass,
    mut cursor: u64,
    batcher: &mut Batcher,
) -> Result<bool, SourceError> {
    let rep = batcher.rep;
    loop {
        if rep.stop.stop_scanning() {
            return Ok(false);
        }
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor).arg("MATCH").arg(pass.pattern).arg("COUNT").arg(pass.count);
        if let Some(ty) = pass.ty {
            cmd.arg("TYPE").arg(ty.name());
        }
        // SCAN is stateless on the server: after a reconnect the same cursor carries on.
        let (next, keys): (u64, Vec<Vec<u8>>) = match conn.call(&cmd, || rep.stop.discard()) {
            Ok(page) => page,
            // The source refused to scan, or stayed unreachable: no more keys can be found.
            Err(err) => {
                let (code, message) = reply::classify(&err);
                let lost = reply::is_connection_error(&err);
                return Err(SourceError { message: format!("SCAN {cursor} failed: {code} {message}"), lost });
            }
        };
        batcher.page = Position { pass: pass.index, cursor };
        for key in keys {
            if pass.earlier.iter().any(|p| glob::matches(p, &key)) {
                continue;
            }
            if !batcher.push(Key(key)) {
                return Ok(false);
            }
        }
        let after = if next == 0 {
            Position { pass: pass.index + 1, cursor: 0 }
        } else {
            Position { pass: pass.index, cursor: next }
        };
        batcher.mark(after);
        if next == 0 {
            return Ok(true);
        }
        cursor = next;
    }
}
