//! The two output streams: standard output carries the results only (the summary line of `copy` and
//! `verify`, the `--help` text), standard error everything else (progress, warnings, logs, errors).
//!
//! Writing never panics. A closed pipe on standard output (`copy ... | head -0`) ends the run's output
//! quietly, as Unix tools do, and the exit code stays the run's own; any other failure to write the
//! results (a full disk) is an `error:` line and a non-zero exit, since the results are lost. What
//! cannot be written to standard error is dropped.

use std::io::Write;

use crate::exit::Exit;

/// Writes `line` and a newline to standard output and flushes it; returns `exit`, or exit 3 when the
/// results could not be written (bar a closed pipe) and the run would otherwise have exited 0.
pub fn results(line: &str, exit: Exit) -> Exit {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => exit,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit,
        Err(e) => {
            error(&format!("cannot write the results to standard output: {e}"));
            if exit == Exit::Ok {
                Exit::Aborted
            } else {
                exit
            }
        }
    }
}

/// Writes `error: MESSAGE` to standard error.
pub fn error(message: &str) {
    line(&format!("error: {message}"));
}

/// Writes a line to standard error; a failure is ignored (there is nowhere left to say it).
pub fn line(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}
