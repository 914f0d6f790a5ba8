//! Running from a scheduler: the `--lock` file that keeps two runs from overlapping ([`lock`]), the
//! `--report` JSON that tells a monitor how the last run went ([`report`]), and `report merge`, which adds
//! up the reports of a sharded run ([`merge`]).

pub mod lock;
pub mod merge;
pub mod report;
