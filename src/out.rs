//! The two output streams: standard output carries the results only (the summary line of `copy` and
//! `verify`, the `--help` text), standard error everything else (progress, warnings, logs, errors).
//! While a progress bar is drawn on standard error ([`show_bar`]), every other line written there goes
//! through [`Stderr`], which lifts the bar, writes the line and draws the bar again below it.
//!
//! Writing never panics. A closed pipe on standard output (`copy ... | head -0`) ends the run's output
//! quietly, as Unix tools do, and the exit code stays the run's own; any other failure to write the
//! results (a full disk) is an `error:` line and a non-zero exit, since the results are lost. What
//! cannot be written to standard error is dropped.

use std::io::Write;
use std::sync::Mutex;

use crate::exit::Exit;

/// The progress bar being drawn on standard error, if any.
static BAR: Mutex<Option<indicatif::ProgressBar>> = Mutex::new(None);

/// Draws standard error's other lines around `bar` from now on (`None`: no bar any more).
pub fn show_bar(bar: Option<indicatif::ProgressBar>) {
    *BAR.lock().unwrap_or_else(|e| e.into_inner()) = bar;
}

/// Standard error, writing around the progress bar when one is drawn; the log's target.
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = BAR.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().lock().write_all(buf)).map(|()| buf.len()),
            None => std::io::stderr().lock().write_all(buf).map(|()| buf.len()),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

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
    let _ = Stderr.write_all(format!("{text}\n").as_bytes());
}
