//! Following a live source: what keeps the target in step after the copy, below the passes that
//! `copy/follow.rs` runs. The [`dirty`] set of keys that events named (bounded, deduplicated, never in
//! flight twice), the [`subscribe`]rs that fill it from keyspace notifications (one per primary, with
//! gaps reported and the cutover's fence), and the check of `notify-keyspace-events` ([`notify`]). The
//! keys of the dirty set reach the stages through `source/follow.rs`.

pub mod dirty;
pub mod notify;
pub mod subscribe;

/// What a follow is doing, for progress lines, the report and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// The first copy of every key (events are recorded meanwhile).
    Copying = 0,
    /// Copying the dirty keys as they come.
    Following = 1,
    /// Reading every key again after a gap or an overflow.
    Rescan = 2,
    /// The guarded cutover: writes paused, fence, drain.
    Cutover = 3,
}

impl Phase {
    /// Its name in the progress line, the report and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Copying => "copying",
            Phase::Following => "following",
            Phase::Rescan => "rescan",
            Phase::Cutover => "cutover",
        }
    }

    /// The phase stored as `n`.
    pub fn from_u8(n: u8) -> Phase {
        match n {
            1 => Phase::Following,
            2 => Phase::Rescan,
            3 => Phase::Cutover,
            _ => Phase::Copying,
        }
    }

    /// Every phase, for metrics.
    pub const ALL: [Phase; 4] = [Phase::Copying, Phase::Following, Phase::Rescan, Phase::Cutover];
}
