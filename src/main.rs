//! redis-ferry: copy keys from one Redis to another. `main` only sets up logging and the Ctrl-C
//! handler, parses the command line, runs the subcommand and maps its outcome to an exit code.
//!
//! The rooms, in the order data travels: `source/` (where keys come from) -> `stage/` (what happens to
//! a batch) -> `sink/` (where it goes), wired by `copy.rs`; `verify/` compares; `flow.rs` is what the
//! stages share; `redis/` is talking to Redis. Around them: `config/`, `preflight.rs`, `account/`,
//! `resume/`, `throttle/`, `cron/`, `files.rs`, `out.rs`.

mod account;
mod cli;
mod config;
mod copy;
mod cron;
mod exit;
mod files;
mod fingerprint;
mod flow;
mod follow;
mod key;
mod out;
mod preflight;
mod rdb;
mod redis;
mod resume;
mod sink;
mod source;
mod stage;
mod throttle;
mod verify;

use std::process::ExitCode;

use crate::account::{Stop, StopReason};
use crate::cli::{Command, ReportArgs, ReportCommand};
use crate::config::{CopyConfig, VerifyConfig};
use crate::exit::Exit;

/// The process-wide stop flag: raised by Ctrl-C / SIGTERM, by `--max-errors` and by fatal errors.
static STOP: Stop = Stop::new();

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .target(env_logger::Target::Pipe(Box::new(out::Stderr)))
        .init();
    run().into()
}

fn run() -> Exit {
    let args = match cli::parse() {
        Ok(args) => args,
        Err(exit) => return exit,
    };
    install_interrupt_handler();
    let outcome = match args.command {
        Command::Copy(raw) => CopyConfig::from_args(&raw).map(|cfg| copy::main(&cfg, &STOP)),
        Command::Verify(raw) => VerifyConfig::from_args(&raw).map(|cfg| match verify::run(&cfg, &STOP) {
            Ok((exit, summary)) => out::results(&summary, exit),
            Err(e) => fail(e.exit, &e.message),
        }),
        Command::Report(ReportArgs { command: ReportCommand::Merge(m) }) => Ok(cron::merge::main(&m.reports)),
    };
    outcome.unwrap_or_else(|e| fail(Exit::BadInput, &e.to_string()))
}

/// Prints one `error:` line and returns the exit code.
fn fail(exit: Exit, message: &str) -> Exit {
    out::error(message);
    exit
}

/// Ctrl-C (and SIGTERM): the first stops scanning and lets the batches in flight finish; a second one
/// undoes what must not outlive the run (see [`copy::undo_at_once`]) and quits.
fn install_interrupt_handler() {
    let result = ctrlc::set_handler(|| {
        if STOP.reason() >= StopReason::Interrupted {
            out::error("interrupted twice: quitting without finishing");
            copy::undo_at_once();
            std::process::exit(Exit::Interrupted.code().into());
        }
        log::warn!("interrupted: finishing the batches in flight (Ctrl-C again to quit at once)");
        STOP.request(StopReason::Interrupted);
    });
    if let Err(e) = result {
        log::warn!("cannot install the Ctrl-C handler: {e}");
    }
}
