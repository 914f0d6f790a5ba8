//! Resuming: the [`Ledger`] that knows how far a copy has safely got, and the `--checkpoint` file
//! ([`checkpoint`]) that keeps it across runs.

pub mod checkpoint;
pub mod ledger;

pub use ledger::{Ledger, Position, REREAD};
