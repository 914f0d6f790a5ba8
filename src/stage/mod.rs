//! What happens to a batch on its way from the source to the sink, one file per stage, in the order keys
//! pass through them: [`check`] drops those the target already has (skip policy), [`fetch`] reads DUMP
//! payloads (or short strings and small aggregates by value, [`by_value`]) and deadlines from the source
//! ([`dump`]: where a batch's keys went, and a key sorted by its DUMP), [`write`] hands them to the sink;
//! [`typed`] copies, key by key and in pages, the keys DUMP/RESTORE cannot move (or every key, with
//! `--mode typed`), and [`route`] decides which keys go that way. What the stages share (batches,
//! `exchange`) is `flow.rs`'s.

pub mod by_value;
pub mod check;
pub mod dump;
pub mod fetch;
pub mod route;
pub mod typed;
pub mod write;
