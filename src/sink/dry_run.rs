//! The dry run's sink: nothing is written; a key the source still had when it was read would have been
//! copied, bar one whose deadline has passed on the source's clock where the target would be given what
//! is left of it. Keys read with their values (an RDB file) pass no check stage, so under `skip` the
//! dry run asks the target itself (`check`): a key the target has would have been skipped.

use redis::Value;

use super::{Sink, WritePolicy, Written};
use crate::account::{Reporter, Stage};
use crate::config::OnConflict;
use crate::flow::{exchange, Fetched, Payload};
use crate::redis::conn::Conn;

/// Writes nothing, counts what would have happened.
pub struct DryRun {
    /// How the keys would have been written.
    pub policy: WritePolicy,
    /// A connection to the target, to ask under `skip` which keys it has (when no check stage ran).
    pub check: Option<Conn>,
}

impl Sink for DryRun {
    fn write(&mut self, mut items: Vec<Fetched>, rep: &Reporter) -> Written {
        let mut skipped = 0;
        if let (OnConflict::Skip, Some(conn)) = (self.policy.on_conflict, self.check.as_mut()) {
            let answers = exchange::<1>(
                conn,
                items.len(),
                |i| &items[i].key,
                |pipe, i| {
                    pipe.cmd("EXISTS").arg(items[i].key.as_bytes());
                },
                Stage::Check,
                rep,
            );
            let mut keep = answers.into_iter().map(|a| match a {
                Some([Value::Int(0)]) => Some(true),
                Some(_) => Some(false),
                // Failed and reported.
                None => None,
            });
            let before = items.len();
            let mut gone = 0;
            items.retain(|_| match keep.next().flatten() {
                Some(true) => true,
                Some(false) => false,
                None => {
                    gone += 1;
                    false
                }
            });
            skipped = (before - items.len() - gone) as u64;
        }
        // Keys read with their values (`check`): the target's clock says whether a deadline has passed.
        let file = self.check.is_some();
        let passed =
            |f: &Fetched| file && f.expire_at_ms.is_some_and(|at| self.policy.deadlines.left(at).is_none());
        let deleted = items.iter().filter(|f| matches!(f.payload, Payload::Gone)).count() as u64;
        let sent =
            items.iter().filter(|f| self.policy.ttl(f).is_some() && !passed(f)).count() as u64 - deleted;
        Written {
            copied: sent,
            skipped,
            expired: items.len() as u64 - sent - deleted,
            deleted,
            ..Written::default()
        }
    }
}
