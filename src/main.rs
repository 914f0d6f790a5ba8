//! redis-ferry: copy keys from one Redis to another. `main` only sets up logging and the Ctrl-C
//! handler, parses the command line, runs the subcommand and maps its outcome to an exit code.

mod checkpoint;
mod cli;
mod clock;
mod cluster;
mod config;
mod conn;
mod cron;
mod evictions;
mod exit;
mod files;
mod glob;
mod key;
mod keyfile;
mod out;
mod pipeline;
mod preflight;
mod report;
mod stage;
mod throttle;
mod verify;

use std::process::ExitCode;
use std::time::SystemTime;

use argh::FromArgs;

use crate::cli::{Args, Command};
use crate::config::{CopyConfig, VerifyConfig};
use crate::exit::Exit;
use crate::report::{Stop, StopReason};

/// How long a second Ctrl-C waits for the temporary keys of the type-aware copy to be deleted.
const FAST_EXIT_CLEANUP: std::time::Duration = std::time::Duration::from_secs(3);

/// The process-wide stop flag: raised by Ctrl-C / SIGTERM, by `--max-errors` and by fatal errors.
static STOP: Stop = Stop::new();

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
    run().into()
}

fn run() -> Exit {
    let args = match parse_args() {
        Ok(args) => args,
        Err(exit) => return exit,
    };
    install_interrupt_handler();
    match args.command {
        Command::Copy(raw) => match CopyConfig::from_args(&raw) {
            Ok(cfg) => copy(&cfg),
            Err(e) => fail(Exit::BadInput, &e.to_string()),
        },
        Command::Verify(raw) => match VerifyConfig::from_args(&raw) {
            Ok(cfg) => match verify::run(&cfg, &STOP) {
                Ok((exit, summary)) => out::results(&summary, exit),
                Err(e) => fail(e.exit, &e.message),
            },
            Err(e) => fail(Exit::BadInput, &e.to_string()),
        },
    }
}

/// Runs a copy: checks the report path, takes the lock, runs the pipeline, prints the summary, then
/// writes the report while still holding the lock (so the next run cannot start before it is written).
fn copy(cfg: &CopyConfig) -> Exit {
    // Before the lock file is opened (and truncated for our PID), and before any file is read.
    let named: Vec<_> = cfg.files.iter().map(|f| f.named()).collect();
    if let Err(e) = files::refuse_shared(&named) {
        return fail(Exit::BadInput, &e);
    }
    if let Some(Err(e)) = cfg.report.as_deref().map(cron::check_report_writable) {
        return fail(Exit::BadInput, &e);
    }
    let _lock = match cfg.lock.as_deref().map(cron::RunLock::acquire).transpose() {
        Ok(lock) => lock,
        Err(e) => return fail(e.exit, &e.message),
    };
    let start = SystemTime::now();
    let (exit, summary, error) = match pipeline::copy(cfg, &STOP) {
        Err(e) => (fail(e.exit, &e.message), None, Some(e.message)),
        Ok(outcome) => {
            let exit = outcome.exit();
            if let Some(error) = &outcome.error {
                out::error(error);
            }
            match exit {
                Exit::Aborted if outcome.error.is_none() => {
                    log::error!(
                        "aborted after {} failed keys (see {})",
                        outcome.summary.counts.failed,
                        cfg.errors_path
                    )
                }
                Exit::KeysFailed if outcome.summary.counts.failed > 0 => {
                    log::warn!(
                        "{} keys failed; they are listed in {}",
                        outcome.summary.counts.failed,
                        cfg.errors_path
                    )
                }
                Exit::Interrupted => log::warn!("interrupted: batches in flight were finished"),
                _ => {}
            }
            let exit = out::results(&outcome.summary.to_string(), exit);
            (exit, Some(outcome.summary), outcome.error)
        }
    };
    if let Some(path) = &cfg.report {
        let report = cron::Report::new(cfg, start, summary.as_ref(), exit, error.as_deref());
        if let Err(e) = report.write(path) {
            // The copy's exit code stands: it says what happened to the keys.
            out::error(&e);
        }
    }
    exit
}

/// Prints one `error:` line and returns the exit code.
fn fail(exit: Exit, message: &str) -> Exit {
    out::error(message);
    exit
}

/// Parses the command line with argh; `--help` prints to stdout (exit 0), a parse error is one line
/// on stderr and exit 2.
fn parse_args() -> Result<Args, Exit> {
    let mut strings = Vec::new();
    for arg in std::env::args_os() {
        match arg.into_string() {
            Ok(s) => strings.push(s),
            Err(raw) => return Err(fail(Exit::BadInput, &format!("argument {raw:?} is not valid UTF-8"))),
        }
    }
    let name = strings.first().map(|s| s.rsplit('/').next().unwrap_or(s)).unwrap_or("redis-ferry");
    let rest: Vec<&str> = strings.iter().skip(1).map(String::as_str).collect();
    Args::from_args(&[name], &rest).map_err(|early| match early.status {
        Ok(()) => out::results(&early.output, Exit::Ok),
        Err(()) => {
            let line = early.output.split_whitespace().collect::<Vec<_>>().join(" ");
            fail(Exit::BadInput, &format!("{line} (see --help)"))
        }
    })
}

/// Ctrl-C (and SIGTERM): the first stops scanning and lets the batches in flight finish; a second
/// one quits at once.
fn install_interrupt_handler() {
    let result = ctrlc::set_handler(|| {
        if STOP.reason() >= StopReason::Interrupted {
            out::error("interrupted twice: quitting without finishing");
            // The type-aware copy's temporary keys go first, within a bounded time.
            match stage::typed::drop_in_flight(FAST_EXIT_CLEANUP) {
                (0, 0) => {}
                (deleted, 0) => {
                    out::line(&format!("deleted the {deleted} temporary keys of the type-aware copy"))
                }
                (deleted, left) => out::line(&format!(
                    "deleted {deleted} temporary keys of the type-aware copy; {left} are left on the target \
                     (redis-ferry:tmp:*, they expire within 10 minutes)"
                )),
            }
            std::process::exit(Exit::Interrupted.code().into());
        }
        log::warn!("interrupted: finishing the batches in flight (Ctrl-C again to quit at once)");
        STOP.request(StopReason::Interrupted);
    });
    if let Err(e) = result {
        log::warn!("cannot install the Ctrl-C handler: {e}");
    }
}
