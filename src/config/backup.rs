//! SOURCE as an RDB file: the rule that tells a path from a server, and the flags a file source takes.
//!
//! SOURCE is an RDB file when it is `-` (standard input), contains a `/` (`./dump.rdb`,
//! `/backups/prod.rdb`), or ends in `.rdb`; otherwise it is a server (`host`, `host:port`, a
//! `redis://` or `rediss://` URL). A path whose part before its first `/` reads as `host:port`
//! (`cache:6379/2`) is refused as ambiguous: write `redis://cache:6379/2` for the server, or
//! `./cache:6379/2` for the file. TARGET is always a server.

use super::{bad, ConfigError};
use crate::cli::CopyArgs;
use crate::redis::endpoint::{Endpoint, Reads};

/// An RDB file (or stream) to read keys from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// The path; `-` is standard input.
    pub path: String,
    /// The database of the file to read; `None` reads every one, each into the target's database of the
    /// same number (`--all-dbs`).
    pub db: Option<u64>,
}

impl Backup {
    /// Standard input: a stream that cannot be checked before it is written.
    pub fn is_stdin(&self) -> bool {
        self.path == "-"
    }

    /// How the file is named in messages.
    pub fn describe(&self) -> String {
        if self.is_stdin() {
            "the RDB stream on standard input".into()
        } else {
            format!("the RDB file {}", self.path)
        }
    }
}

/// Whether `text`, as SOURCE, names an RDB file; `Err` when it could be either.
pub fn is_file(text: &str) -> Result<bool, ConfigError> {
    if text == "-" {
        return Ok(true);
    }
    if text.starts_with("redis://") || text.starts_with("rediss://") || text.contains("://") {
        return Ok(false);
    }
    if let Some((head, _)) = text.split_once('/') {
        if let Some((host, port)) = head.rsplit_once(':') {
            if !host.is_empty() && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(format!(
                    "SOURCE `{text}` is ambiguous: write redis://{text} for a server, or ./{text} for an RDB file"
                )));
            }
        }
        return Ok(true);
    }
    Ok(text.to_ascii_lowercase().ends_with(".rdb"))
}

/// The file source of `copy` or `verify`: `--source-db N` picks one database of the file (default 0),
/// `--all-dbs` takes every one.
pub fn backup(path: &str, source_db: Option<i64>, all_dbs: bool) -> Result<Backup, ConfigError> {
    let db = match (source_db, all_dbs) {
        (Some(_), true) => {
            return Err(bad(
                "--source-db picks one database of the file; --all-dbs takes every one: give one of them",
            ))
        }
        (_, true) => None,
        (None, false) => Some(0),
        (Some(n), false) if n < 0 => return Err(bad(format!("--source-db must be 0 or more (got {n})"))),
        (Some(n), false) => Some(n as u64),
    };
    Ok(Backup { path: path.to_string(), db })
}

/// What keys are read from: a server, or an RDB file.
#[derive(Debug, Clone)]
pub enum Source {
    /// A server (standalone or cluster).
    Server(Endpoint),
    /// An RDB file or stream.
    File(Backup),
}

impl Source {
    /// Sets `--read-from` on a server source; a file has no replica, and `--read-from replica` is refused
    /// for it.
    pub fn read_from(&mut self, reads: Reads) -> Result<(), ConfigError> {
        match self {
            Source::Server(endpoint) => endpoint.reads = reads,
            Source::File(b) if reads == Reads::Replica => {
                return Err(bad(format!(
                    "--read-from replica cannot be used with {}: a file has no replica",
                    b.describe()
                )));
            }
            Source::File(_) => {}
        }
        Ok(())
    }

    /// The source server. Only the server paths call this: `copy` and `verify` send a file source down
    /// its own path before any of them.
    pub fn server(&self) -> &Endpoint {
        match self {
            Source::Server(endpoint) => endpoint,
            Source::File(b) => unreachable!("{} reached a server path", b.describe()),
        }
    }

    /// The RDB file, when the source is one.
    pub fn file(&self) -> Option<&Backup> {
        match self {
            Source::File(b) => Some(b),
            Source::Server(_) => None,
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Source::Server(endpoint) => endpoint.fmt(f),
            Source::File(b) => f.write_str(&b.path),
        }
    }
}

/// What `copy` cannot do with an RDB file SOURCE, each with why.
pub fn refusals(args: &CopyArgs, b: &Backup) -> Result<(), ConfigError> {
    let what = b.describe();
    let refuse = |flag: &str, why: &str| Err(bad(format!("{flag} cannot be used with {what}: {why}")));
    if args.follow {
        return refuse("--follow", "a file does not change; copy it, then follow the live server");
    }
    if args.checkpoint.is_some() {
        return refuse("--checkpoint", "a file is read in one pass (run it again with --on-conflict skip)");
    }
    if args.max_latency.is_some() {
        return refuse("--max-latency", "there is no source server to watch; use --rate");
    }
    if args.readers.is_some() {
        return refuse("--readers", "one thread reads the file; --writers sets the write threads");
    }
    if b.is_stdin() && args.keys_from.as_deref() == Some("-") {
        return Err(bad("SOURCE and --keys-from cannot both be standard input"));
    }
    if b.is_stdin() && b.db.is_none() {
        return refuse(
            "--all-dbs",
            "each database is copied in a pass of its own, and standard input can be read once; give the \
             file by path, or copy one database with --source-db N",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_file;

    #[test]
    fn paths_and_servers() {
        for file in ["-", "dump.rdb", "./dump", "/backups/prod-2026-11-30.rdb", "DUMP.RDB", "a/b"] {
            assert!(is_file(file).unwrap(), "{file}");
        }
        for server in
            ["localhost", "cache:6379", "redis://h:1/2", "rediss://h", "10.0.0.1:7000", "[::1]:6379"]
        {
            assert!(!is_file(server).unwrap(), "{server}");
        }
        for ambiguous in ["cache:6379/2", "10.0.0.1:7000/dump.rdb"] {
            assert!(is_file(ambiguous).is_err(), "{ambiguous}");
        }
    }
}
