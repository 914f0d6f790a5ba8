//! `verify`: placeholder while the lead writes it.
use crate::config::VerifyConfig;
use crate::exit::Exit;
use crate::pipeline::Fatal;
use crate::report::Stop;

/// Runs verify.
pub fn run(_cfg: &VerifyConfig, _stop: &Stop) -> Result<Exit, Fatal> {
    Err(Fatal::bad_input("verify is not written yet"))
}
