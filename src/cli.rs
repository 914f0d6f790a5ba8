//! The command line as argh parses it: raw strings and numbers, nothing validated yet; and [`parse`],
//! which reads it from the process's arguments (`--help` is printed here).
//!
//! The `///` docs here are the `--help` text. Turning these raw flags into a checked, typed
//! [`crate::config::CopyConfig`] happens in `config/`; no stage ever sees these structs.

use argh::FromArgs;

use crate::exit::Exit;
use crate::out;

/// Parses the command line with argh; `--help` prints to stdout (exit 0), a parse error is one line on
/// stderr and exit 2.
pub fn parse() -> Result<Args, Exit> {
    let mut strings = Vec::new();
    for arg in std::env::args_os() {
        match arg.into_string() {
            Ok(s) => strings.push(s),
            Err(raw) => return Err(fail(&format!("argument {raw:?} is not valid UTF-8"))),
        }
    }
    let name = strings.first().map(|s| s.rsplit('/').next().unwrap_or(s)).unwrap_or("redis-ferry");
    // argh takes a lone `-` for an unknown flag: it goes through as a word no argument can be (one with
    // a NUL), and comes back as `-` in the fields that may name standard input.
    let rest: Vec<&str> = strings.iter().skip(1).map(|s| if s == "-" { STDIN } else { s.as_str() }).collect();
    let mut args = Args::from_args(&[name], &rest).map_err(|early| match early.status {
        Ok(()) => out::results(&early.output, Exit::Ok),
        Err(()) => {
            let line = early.output.split_whitespace().collect::<Vec<_>>().join(" ").replace(STDIN, "-");
            fail(&format!("{line} (see --help)"))
        }
    })?;
    let back = |s: &mut String| {
        if s == STDIN {
            *s = "-".to_string();
        }
    };
    match &mut args.command {
        Command::Copy(a) => {
            [&mut a.source, &mut a.target].into_iter().chain(a.keys_from.as_mut()).for_each(back)
        }
        Command::Verify(a) => {
            [&mut a.source, &mut a.target].into_iter().chain(a.keys_from.as_mut()).for_each(back)
        }
        Command::Report(ReportArgs { command: ReportCommand::Merge(m) }) => {
            m.reports.iter_mut().for_each(back)
        }
    }
    Ok(args)
}

/// A lone `-` (standard input) while argh parses; no argument can hold a NUL.
const STDIN: &str = "\0-";

/// A refused command line: one `error:` line, exit 2.
fn fail(message: &str) -> Exit {
    out::error(message);
    Exit::BadInput
}

/// Copy keys from one Redis server to another: fast, gentle on the source, and accounting for every
/// key (copied, skipped, expired or failed).
#[derive(FromArgs, Debug)]
pub struct Args {
    /// what to do
    #[argh(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
// Parsed once per process; argh needs the argument structs themselves, not boxes.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// `copy SOURCE TARGET`
    Copy(CopyArgs),
    /// `verify SOURCE TARGET`
    Verify(VerifyArgs),
    /// `report merge REPORT...`
    Report(ReportArgs),
}

/// Work with the `--report` files of runs.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "report")]
pub struct ReportArgs {
    /// what to do with them
    #[argh(subcommand)]
    pub command: ReportCommand,
}

/// What `report` does.
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum ReportCommand {
    /// `merge REPORT...`
    Merge(MergeArgs),
}

/// Merge the --report files of a sharded run (--shard I/N) into one summary line: the counters summed,
/// every shard 0..N-1 checked to be there once with the same N, source, target and options (the newest
/// report wins for a shard that ran twice); exits with the worst shard's code (1 when shards are missing).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "merge")]
pub struct MergeArgs {
    /// the report files; - reads reports from standard input, one JSON object per line (or several
    /// objects, as `kubectl` prints termination messages)
    #[argh(positional)]
    pub reports: Vec<String>,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "copy")]
/// Copy the matched keys from SOURCE to TARGET (host:port or redis[s]://[user[:password]@]host[:port][/db];
/// rediss:// is TLS). SOURCE may also be an RDB file: a path with a `/` or ending in .rdb, or - for an RDB
/// stream on standard input.
/// Passwords may also come from REDIS_FERRY_SOURCE_PASSWORD and REDIS_FERRY_TARGET_PASSWORD.
pub struct CopyArgs {
    /// the server to read from, or an RDB file (- is standard input)
    #[argh(positional)]
    pub source: String,
    /// the server to write to
    #[argh(positional)]
    pub target: String,
    /// SCAN MATCH glob; repeatable (union, each key once); default *
    #[argh(option, long = "match")]
    pub patterns: Vec<String>,
    /// only keys of this type (string, list, set, zset, hash, stream); repeatable
    #[argh(option, long = "type")]
    pub types: Vec<String>,
    /// SCAN COUNT hint (default 1000)
    #[argh(option, default = "1000")]
    pub scan_count: u64,
    /// only keys whose hash slot (CRC16 of the key or its {hash tag}, mod 16384) is in these ranges:
    /// A-B[,C-D...], or single slots
    #[argh(option)]
    pub slots: Option<String>,
    /// only the keys of shard I of N (0-based, as JOB_COMPLETION_INDEX): the slot range redis-cli gives the
    /// I-th of N primaries; N processes with I = 0..N-1 take every key once
    #[argh(option)]
    pub shard: Option<String>,
    /// copy the keys listed in FILE instead of scanning: one key per line, or a CSV written by redis-ferry
    /// (error or diff CSV, also as a spreadsheet saves it); - reads standard input
    #[argh(option)]
    pub keys_from: Option<String>,
    /// skip (leave an existing target key alone) or replace (overwrite it); default skip (replace
    /// with --follow, whose target must end equal to the source)
    #[argh(option)]
    pub on_conflict: Option<String>,
    /// auto (DUMP/RESTORE, falling back to a type-aware copy, key by key, for big keys and keys a server
    /// refuses to DUMP or RESTORE), dump (DUMP/RESTORE only) or typed (type-aware for every key);
    /// default auto
    #[argh(option, default = "String::from(\"auto\")")]
    pub mode: String,
    /// with --mode auto, keys whose MEMORY USAGE is above N bytes are copied type-aware, in pages, instead
    /// of in one DUMP/RESTORE; 0 asks no sizes (faster when there are no big keys) (default 8388608, 8 MiB)
    #[argh(option)]
    pub big_key_bytes: Option<u64>,
    /// threads of the type-aware copier, each with one source and one target connection (default 4 when
    /// every key goes type-aware: --mode typed, or auto deciding so up front; else 1)
    #[argh(option)]
    pub typed_threads: Option<u64>,
    /// keys per pipelined batch (default 500; with a --rate below 500, one second of it)
    #[argh(option)]
    pub batch: Option<u64>,
    /// fetch threads reading from the source (default 2)
    #[argh(option)]
    pub readers: Option<u64>,
    /// write threads writing to the target (default 2)
    #[argh(option)]
    pub writers: Option<u64>,
    /// at most N keys per second enter the pipeline, whatever becomes of them (copied, skipped,
    /// expired or failed): a token bucket taken from before the keys are checked or read; default
    /// unlimited
    #[argh(option)]
    pub rate: Option<u64>,
    /// the most keys the --rate bucket lets through at once above the rate; at least --batch (default
    /// --batch)
    #[argh(option)]
    pub burst: Option<u64>,
    /// PING the source (on a cluster, each primary the run reads from; the slowest counts) every 100
    /// ms on its own connections and lower the rate (x0.7) while the p90 of the last 10 PINGs is above
    /// MS milliseconds, raising it again (+5% of the ceiling every 0.5 s)
    /// when it is not; the ceiling is --rate, or the throughput measured while unlimited
    #[argh(option)]
    pub max_latency: Option<u64>,
    /// pause each writer this many milliseconds after each batch (default 0)
    #[argh(option, default = "0")]
    pub sleep_after_batch: u64,
    /// the error CSV, created only when a key fails (default redis-ferry-errors.csv)
    #[argh(option, default = "String::from(\"redis-ferry-errors.csv\")")]
    pub errors: String,
    /// append to the error CSV instead of overwriting it
    #[argh(switch)]
    pub errors_append: bool,
    /// hold an exclusive lock (flock) on FILE for the whole run; if another run holds it, say which
    /// process and exit 4 at once. The file is created if missing and never deleted
    #[argh(option)]
    pub lock: Option<String>,
    /// at the end of the run (also on abort and Ctrl-C) write a JSON report of at most 4 KB to FILE:
    /// counters, options without passwords, start and end time, exit code, error, the slots taken;
    /// replaced atomically, or written in place where it cannot be (/dev/termination-log)
    #[argh(option)]
    pub report: Option<String>,
    /// save the scan position and counters to FILE every few seconds and at exit; run again with the
    /// same FILE to resume where it stopped (SCAN only, not with --keys-from or --dry-run)
    #[argh(option)]
    pub checkpoint: Option<String>,
    /// abort (exit 3) once N keys have failed; 0 = never abort (default 1000)
    #[argh(option, default = "1000")]
    pub max_errors: u64,
    /// stop after N keys have been copied
    #[argh(option)]
    pub limit: Option<u64>,
    /// scan, check and read, but write nothing; report what would happen
    #[argh(switch)]
    pub dry_run: bool,
    /// after the copy, keep the target in step with the source's changes (keyspace notifications,
    /// subscribed to before the copy starts) until Ctrl-C or a cutover
    #[argh(switch)]
    pub follow: bool,
    /// with --follow: at most N dirty keys wait to be copied again; beyond, the follow re-scans everything
    /// instead (default 1000000)
    #[argh(option)]
    pub follow_queue: Option<usize>,
    /// with --follow: set notify-keyspace-events on the source (CONFIG SET) if it lacks classes the follow
    /// needs, and restore the old value at exit
    #[argh(switch)]
    pub enable_notifications: bool,
    /// with --follow: where the source refuses CONFIG GET (managed services), trust that
    /// notify-keyspace-events holds the classes the follow needs (Eg$lshztxe)
    #[argh(switch)]
    pub notifications_configured: bool,
    /// with --follow: run the guarded cutover once the follow has been caught up (no dirty key older than
    /// 1 s) for SECS seconds; SIGUSR1 asks for it at any time
    #[argh(option)]
    pub cutover_after: Option<u64>,
    /// with --follow: how long the cutover pauses writes on the source (CLIENT PAUSE ms WRITE); 0 = do not
    /// pause: the writers were stopped by hand (default 10000)
    #[argh(option)]
    pub cutover_pause: Option<u64>,
    /// serve progress figures as Prometheus text on http://ADDR:PORT/metrics while the run lasts
    #[argh(option)]
    pub metrics: Option<String>,
    /// a progress line on standard error every SECS seconds; 0 = none (default 1)
    #[argh(option, default = "1")]
    pub progress: u64,
    /// auto (a bar when standard error is a terminal, else lines) or plain (lines; default auto)
    #[argh(option, default = "String::from(\"auto\")")]
    pub progress_style: String,
    /// database number on the source (overrides the URL's); of an RDB file: the one database read
    /// (default 0)
    #[argh(option)]
    pub source_db: Option<i64>,
    /// an RDB file SOURCE: read every database of the file, each into the target's database of the
    /// same number
    #[argh(switch)]
    pub all_dbs: bool,
    /// database number on the target (overrides the URL's)
    #[argh(option)]
    pub target_db: Option<i64>,
    /// for every rediss:// side: trust the CA certificate(s) in this PEM file (a --source-tls-ca or
    /// --target-tls-ca wins for its side)
    #[argh(option)]
    pub tls_ca: Option<String>,
    /// for every rediss:// side that requires client certificates: this PEM certificate (with
    /// --tls-key; a side's own -tls-cert wins)
    #[argh(option)]
    pub tls_cert: Option<String>,
    /// the PEM private key of --tls-cert
    #[argh(option)]
    pub tls_key: Option<String>,
    /// for every rediss:// side: do not verify its certificate or host name (insecure; warned about)
    #[argh(switch)]
    pub tls_insecure: bool,
    /// for a rediss:// SOURCE: trust the CA certificate(s) in this PEM file instead of the system's
    #[argh(option)]
    pub source_tls_ca: Option<String>,
    /// for a rediss:// SOURCE that requires client certificates: this PEM certificate (with
    /// --source-tls-key)
    #[argh(option)]
    pub source_tls_cert: Option<String>,
    /// the PEM private key of --source-tls-cert
    #[argh(option)]
    pub source_tls_key: Option<String>,
    /// for a rediss:// SOURCE: do not verify its certificate or host name (insecure; warned about)
    #[argh(switch)]
    pub source_tls_insecure: bool,
    /// read the source from replicas: primary (default) or replica (a replica of a standalone SOURCE, by its
    /// INFO; on a cluster one per primary, with READONLY; a primary without one is read, with a warning)
    #[argh(option)]
    pub read_from: Option<String>,
    /// for a rediss:// TARGET: trust the CA certificate(s) in this PEM file instead of the system's
    #[argh(option)]
    pub target_tls_ca: Option<String>,
    /// for a rediss:// TARGET that requires client certificates: this PEM certificate (with
    /// --target-tls-key)
    #[argh(option)]
    pub target_tls_cert: Option<String>,
    /// the PEM private key of --target-tls-cert
    #[argh(option)]
    pub target_tls_key: Option<String>,
    /// for a rediss:// TARGET: do not verify its certificate or host name (insecure; warned about)
    #[argh(switch)]
    pub target_tls_insecure: bool,
    /// seconds to wait for a reply before giving up on a connection (default 10)
    #[argh(option, default = "10")]
    pub timeout: u64,
    /// seconds to wait for a connection to be established (default 5)
    #[argh(option, default = "5")]
    pub connect_timeout: u64,
    /// retries of a key after a transient failure (connection lost, timeout, OOM, LOADING, BUSY,
    /// TRYAGAIN), with pauses doubling from 100 ms to 5 s; then it is a failed row (default 8)
    #[argh(option, default = "8")]
    pub retries: u32,
}

/// Compare the matched keys of SOURCE and TARGET: type, value and TTL.
// The flags `copy` and `verify` share (filters, db, TLS, timeouts) are spelled out in both structs: argh
// has no flatten, and each `///` line is that flag's --help text. `config/` reads them in one place each
// (`tls_flags!`, `endpoints`, `key_source`, `timeouts`).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "verify")]
pub struct VerifyArgs {
    /// the reference server, or an RDB file (- is standard input)
    #[argh(positional)]
    pub source: String,
    /// the server that should hold the same keys
    #[argh(positional)]
    pub target: String,
    /// SCAN MATCH glob; repeatable (union); default *
    #[argh(option, long = "match")]
    pub patterns: Vec<String>,
    /// only keys of this type; repeatable
    #[argh(option, long = "type")]
    pub types: Vec<String>,
    /// SCAN COUNT hint (default 1000)
    #[argh(option, default = "1000")]
    pub scan_count: u64,
    /// only keys whose hash slot (CRC16 of the key or its {hash tag}, mod 16384) is in these ranges:
    /// A-B[,C-D...], or single slots
    #[argh(option)]
    pub slots: Option<String>,
    /// only the keys of shard I of N (0-based, as JOB_COMPLETION_INDEX): the slot range redis-cli gives the
    /// I-th of N primaries; N processes with I = 0..N-1 take every key once
    #[argh(option)]
    pub shard: Option<String>,
    /// check the keys listed in FILE instead of scanning (one per line, or a redis-ferry CSV); - is stdin
    #[argh(option)]
    pub keys_from: Option<String>,
    /// keys per pipelined batch (default 500)
    #[argh(option, default = "500")]
    pub batch: u64,
    /// TTL difference in milliseconds still counted as equal (default 2000)
    #[argh(option, default = "2000")]
    pub ttl_tolerance: u64,
    /// also scan the target (same --match / --type) for keys the source does not have; they count as
    /// extra
    #[argh(switch)]
    pub check_extra: bool,
    /// write every difference to this CSV (time,key,difference,message), created only when there is
    /// one; copy --keys-from FILE --on-conflict replace repairs those keys
    #[argh(option)]
    pub diff: Option<String>,
    /// database number on the source (overrides the URL's); of an RDB file: the one database read
    /// (default 0)
    #[argh(option)]
    pub source_db: Option<i64>,

    /// database number on the target (overrides the URL's)
    #[argh(option)]
    pub target_db: Option<i64>,
    /// for every rediss:// side: trust the CA certificate(s) in this PEM file (a --source-tls-ca or
    /// --target-tls-ca wins for its side)
    #[argh(option)]
    pub tls_ca: Option<String>,
    /// for every rediss:// side that requires client certificates: this PEM certificate (with
    /// --tls-key; a side's own -tls-cert wins)
    #[argh(option)]
    pub tls_cert: Option<String>,
    /// the PEM private key of --tls-cert
    #[argh(option)]
    pub tls_key: Option<String>,
    /// for every rediss:// side: do not verify its certificate or host name (insecure; warned about)
    #[argh(switch)]
    pub tls_insecure: bool,
    /// for a rediss:// SOURCE: trust the CA certificate(s) in this PEM file instead of the system's
    #[argh(option)]
    pub source_tls_ca: Option<String>,
    /// for a rediss:// SOURCE that requires client certificates: this PEM certificate (with
    /// --source-tls-key)
    #[argh(option)]
    pub source_tls_cert: Option<String>,
    /// the PEM private key of --source-tls-cert
    #[argh(option)]
    pub source_tls_key: Option<String>,
    /// for a rediss:// SOURCE: do not verify its certificate or host name (insecure; warned about)
    #[argh(switch)]
    pub source_tls_insecure: bool,
    /// read the source from replicas: primary (default) or replica (a replica of a standalone SOURCE, by its
    /// INFO; on a cluster one per primary, with READONLY; a primary without one is read, with a warning)
    #[argh(option)]
    pub read_from: Option<String>,
    /// for a rediss:// TARGET: trust the CA certificate(s) in this PEM file instead of the system's
    #[argh(option)]
    pub target_tls_ca: Option<String>,
    /// for a rediss:// TARGET that requires client certificates: this PEM certificate (with
    /// --target-tls-key)
    #[argh(option)]
    pub target_tls_cert: Option<String>,
    /// the PEM private key of --target-tls-cert
    #[argh(option)]
    pub target_tls_key: Option<String>,
    /// for a rediss:// TARGET: do not verify its certificate or host name (insecure; warned about)
    #[argh(switch)]
    pub target_tls_insecure: bool,
    /// seconds to wait for a reply before giving up on a connection (default 10)
    #[argh(option, default = "10")]
    pub timeout: u64,
    /// seconds to wait for a connection to be established (default 5)
    #[argh(option, default = "5")]
    pub connect_timeout: u64,
}
