//! The dry run's sink: nothing is written; a key the source still had when it was read would have been
//! copied, bar one whose deadline has passed on the source's clock where the target would be given what
//! is left of it.

use super::{Sink, WritePolicy, Written};
use crate::account::Reporter;
use crate::flow::{Fetched, Payload};

/// Writes nothing, counts what would have happened.
pub struct DryRun {
    /// How the keys would have been written.
    pub policy: WritePolicy,
}

impl Sink for DryRun {
    fn write(&mut self, items: Vec<Fetched>, _rep: &Reporter) -> Written {
        let deleted = items.iter().filter(|f| matches!(f.payload, Payload::Gone)).count() as u64;
        let sent = items.iter().filter(|f| self.policy.ttl(f).is_some()).count() as u64 - deleted;
        Written { copied: sent, expired: items.len() as u64 - sent - deleted, deleted, ..Written::default() }
    }
}
