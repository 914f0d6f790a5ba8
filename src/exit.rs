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
    /// Interrupted by Ctrl-C (SIGINT) or SIGTERM after finishing the batches in flight.
    Interrupted,
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
            Exit::Interrupted => 130,
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
    /// Bad input or nothing to connect to: exit 2.
    pub fn bad_input(message: impl Into<String>) -> Fatal {
        Fatal { exit: Exit::BadInput, message: message.into() }
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
        assert_eq!(Exit::Interrupted.code(), 130);
    }
}
