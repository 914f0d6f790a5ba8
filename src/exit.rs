//! The process exit codes of redis-ferry, as the product contract fixes them.
//!
//! Every way a run can end maps to exactly one of these; `main` turns the outcome of a run into one of
//! them and nothing else in the crate calls `std::process::exit` (except a second Ctrl-C, which must
//! leave at once).

use std::process::ExitCode;

/// How a run ended, from the point of view of a script or scheduler that started it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every matched key was copied, skipped by policy, or had expired (`verify`: all agree).
    Ok,
    /// Finished, but some keys failed (`verify`: some keys differ).
    KeysFailed,
    /// Bad input or nothing to connect to at the start; nothing was written.
    BadInput,
    /// Aborted: `--max-errors` reached, or a connection was lost beyond retrying.
    Aborted,
    /// Another run holds the `--lock` file.
    Locked,
    /// A server could not be reached at the start (refused, timed out, not found); nothing was written,
    /// and trying again later may work (unlike bad input, exit 2).
    Unreachable,
    /// Interrupted by Ctrl-C (SIGINT) or SIGTERM after finishing the batches in flight.
    Interrupted,
    /// A follow's cutover found it was not safe to switch (the drain did not finish within the pause, a
    /// key failed, events were lost): the application must stay on the source.
    CutoverUnsafe,
}

impl Exit {
    /// The numeric code the process exits with.
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::KeysFailed => 1,
            Exit::BadInput => 2,
            Exit::Aborted => 3,
            Exit::Locked => 4,
            Exit::Unreachable => 5,
            Exit::CutoverUnsafe => 6,
            Exit::Interrupted => 130,
        }
    }
}

impl Exit {
    /// The exit of a code read back (from a report); an unknown code counts as an abort.
    pub fn from_code(code: u8) -> Exit {
        match code {
            0 => Exit::Ok,
            1 => Exit::KeysFailed,
            2 => Exit::BadInput,
            4 => Exit::Locked,
            5 => Exit::Unreachable,
            6 => Exit::CutoverUnsafe,
            130 => Exit::Interrupted,
            _ => Exit::Aborted,
        }
    }

    /// How bad an exit is for a scheduler that merges several (`report merge` keeps the worst): a clean
    /// run, then keys that failed (retry those), an interrupted run, an abort, a server not reached (retry
    /// later), a lock held, and bad input (never retry) last.
    pub fn severity(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::KeysFailed => 1,
            Exit::Interrupted | Exit::CutoverUnsafe => 2,
            Exit::Aborted => 3,
            Exit::Unreachable => 4,
            Exit::Locked => 5,
            Exit::BadInput => 6,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

/// A run that could not start (exit 2) or that ended on a fatal error after it started (exit 3).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Fatal {
    /// The exit code it maps to.
    pub exit: Exit,
    /// One line for the user.
    pub message: String,
}

impl Fatal {
    /// Bad input: exit 2.
    pub fn bad_input(message: impl Into<String>) -> Fatal {
        Fatal { exit: Exit::BadInput, message: message.into() }
    }

    /// A server that could not be reached at the start: exit 5.
    pub fn unreachable(message: impl Into<String>) -> Fatal {
        Fatal { exit: Exit::Unreachable, message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_product_contract() {
        assert_eq!(Exit::Ok.code(), 0);
        assert_eq!(Exit::KeysFailed.code(), 1);
        assert_eq!(Exit::BadInput.code(), 2);
        assert_eq!(Exit::Aborted.code(), 3);
        assert_eq!(Exit::Locked.code(), 4);
        assert_eq!(Exit::Unreachable.code(), 5);
        for exit in [
            Exit::Ok,
            Exit::KeysFailed,
            Exit::BadInput,
            Exit::Aborted,
            Exit::Locked,
            Exit::Unreachable,
            Exit::Interrupted,
        ] {
            assert_eq!(Exit::from_code(exit.code()), exit);
        }
        assert_eq!(Exit::Interrupted.code(), 130);
    }
}
