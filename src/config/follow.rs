//! `--follow` and its flags, checked: the dirty set's bound, what may be done about notifications, the
//! cutover, and the flags a follow cannot be combined with. Also `--metrics`, which any copy may serve.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::{bad, ConfigError};
use crate::cli::CopyArgs;

/// `--follow-queue` by default: the dirty set holds the distinct keys written while a pass over the
/// source runs (a copy, a re-scan), since their events are kept until it is over. A million covers
/// 50 s of 20,000 distinct keys written per second, in about 1M x (2 x key length + 150) bytes (about
/// 230 MB for 40-byte keys, measured: docs/follow.md); beyond it a re-scan is the cheaper way back in
/// step anyway.
pub const DEFAULT_FOLLOW_QUEUE: usize = 1_000_000;

/// The cutover's default pause of writes on the source: long enough to drain what the fence finds
/// and to switch an application's connection string, short enough that waiting clients do not time
/// out (most clients' default is 30 s or more).
pub const DEFAULT_CUTOVER_PAUSE: Duration = Duration::from_secs(10);

/// The shortest pause `--cutover-pause` takes, bar 0: the fence alone takes a subscriber's poll.
pub const MIN_CUTOVER_PAUSE: Duration = Duration::from_millis(1000);

/// The longest pause `--cutover-pause` takes (writes blocked on a production source).
pub const MAX_CUTOVER_PAUSE: Duration = Duration::from_secs(600);

/// A follow's options.
#[derive(Debug, Clone)]
pub struct FollowConfig {
    /// `--follow-queue`: waiting + in-flight dirty keys at most.
    pub queue: usize,
    /// `--enable-notifications`.
    pub enable_notifications: bool,
    /// `--notifications-configured`.
    pub notifications_configured: bool,
    /// `--cutover-after`: caught up this long, the cutover runs; `None`: only on SIGUSR1.
    pub cutover_after: Option<Duration>,
    /// `--cutover-pause`: `CLIENT PAUSE` of this long; zero: no pause (writers stopped by hand).
    pub cutover_pause: Duration,
}

/// Checks the follow flags: `None` without `--follow` (and then none of its flags may be given).
pub fn follow(args: &CopyArgs) -> Result<Option<FollowConfig>, ConfigError> {
    let given = [
        ("--follow-queue", args.follow_queue.is_some()),
        ("--enable-notifications", args.enable_notifications),
        ("--notifications-configured", args.notifications_configured),
        ("--cutover-after", args.cutover_after.is_some()),
        ("--cutover-pause", args.cutover_pause.is_some()),
    ];
    if !args.follow {
        return match given.iter().find(|(_, on)| *on) {
            Some((flag, _)) => Err(bad(format!("{flag} is a --follow option; add --follow"))),
            None => Ok(None),
        };
    }
    let refused = [
        ("--keys-from", args.keys_from.is_some(), "a follow takes the keys the events name"),
        ("--type", !args.types.is_empty(), "events do not say a key's type; filter with --match"),
        ("--checkpoint", args.checkpoint.is_some(), "a follow cannot be resumed; start it again"),
        ("--limit", args.limit.is_some(), "a follow copies every change"),
        ("--dry-run", args.dry_run, "a follow must write to keep up"),
        ("--shard", args.shard.is_some(), "one cutover pauses the whole source; follow it in one process"),
        ("--slots", args.slots.is_some(), "one cutover pauses the whole source; follow it in one process"),
        (
            "--read-from replica",
            args.read_from.as_deref() == Some("replica"),
            "a replica's events lag its primary's, and the cutover pauses the primary",
        ),
    ];
    if let Some((flag, _, why)) = refused.iter().find(|(_, on, _)| *on) {
        return Err(bad(format!("{flag} cannot be combined with --follow ({why})")));
    }
    let queue = args.follow_queue.unwrap_or(DEFAULT_FOLLOW_QUEUE);
    if queue == 0 {
        return Err(bad("--follow-queue must be at least 1 (got 0)"));
    }
    if queue > 100_000_000 {
        return Err(bad(format!("--follow-queue {queue} is above 100000000 keys")));
    }
    let cutover_pause = args.cutover_pause.map_or(DEFAULT_CUTOVER_PAUSE, Duration::from_millis);
    if !cutover_pause.is_zero() && cutover_pause < MIN_CUTOVER_PAUSE {
        return Err(bad(format!(
            "--cutover-pause {} is below {} ms: too short to fence and drain (0 pauses nothing)",
            cutover_pause.as_millis(),
            MIN_CUTOVER_PAUSE.as_millis()
        )));
    }
    if cutover_pause > MAX_CUTOVER_PAUSE {
        return Err(bad(format!(
            "--cutover-pause {} is above {} ms: writes on the source would wait that long",
            cutover_pause.as_millis(),
            MAX_CUTOVER_PAUSE.as_millis()
        )));
    }
    if args.cutover_after.is_some_and(|s| s > 30 * 86_400) {
        return Err(bad("--cutover-after is above 30 days (2592000 s)"));
    }
    Ok(Some(FollowConfig {
        queue,
        enable_notifications: args.enable_notifications,
        notifications_configured: args.notifications_configured,
        cutover_after: args.cutover_after.map(Duration::from_secs),
        cutover_pause,
    }))
}

/// `--metrics ADDR:PORT`: one address to listen on.
pub fn metrics(value: &Option<String>) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(text) = value else { return Ok(None) };
    let mut addrs =
        text.to_socket_addrs().map_err(|e| bad(format!("--metrics `{text}`: {e} (give ADDR:PORT)")))?;
    addrs.next().map(Some).ok_or_else(|| bad(format!("--metrics `{text}` names no address")))
}
