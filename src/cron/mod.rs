//! Running from a scheduler: the `--lock` file that keeps two runs from overlapping ([`lock`]), and the
//! `--report` JSON that tells a monitor how the last run went ([`report`]).

pub mod lock;
pub mod report;
