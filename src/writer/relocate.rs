//! The writer's side of GC: appending the moves a compaction sends, only
//! where no newer write makes them wrong.

use super::apply::Verdict;
use super::{Op, Writer};
use crate::error::Result;
use crate::record::key_hash;
use std::collections::HashSet;
use tokio::sync::oneshot;

impl Writer {
    /// Appends GC's moves that are still needed, each as its own atomic
    /// write. A move whose key has a write not yet applied is deferred (that
    /// write may still fail); one whose key no longer points at the moved
    /// record, or (a tombstone) has a value again, is dropped. GC checks
    /// afterwards that nothing live is left in the file before deleting it.
    pub(super) async fn relocate(
        &mut self,
        moves: Vec<Op>,
        deferred: oneshot::Sender<Vec<Op>>,
        reply: oneshot::Sender<Result<()>>,
    ) {
        if let Err(e) = self.shared.check_poisoned() {
            let _ = reply.send(Err(e));
            return;
        }
        let inflight = self.inflight.iter().flat_map(|i| &i.group.updates);
        let busy: HashSet<u64> = self
            .pending
            .updates
            .iter()
            .chain(inflight)
            .map(|u| key_hash(&u.key))
            .chain(self.unapplied_hashes())
            .collect();
        let mut later = Vec::new();
        let mut appended = 0;
        for op in moves {
            if busy.contains(&key_hash(op.key())) {
                later.push(op);
                continue;
            }
            match self.verdict(&op) {
                Verdict::Append => {}
                Verdict::Drop => continue,
                Verdict::Defer => {
                    later.push(op);
                    continue;
                }
            }
            match self.append(std::slice::from_ref(&op)).await {
                Ok(updates) => {
                    self.pending.updates.extend(updates);
                    appended += 1;
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            }
        }
        let _ = deferred.send(later);
        if appended == 0 && self.pending.is_empty() && self.inflight.is_empty() {
            let _ = reply.send(Ok(()));
        } else {
            // Acknowledged with the pending group: after it, and every
            // write before it, is applied.
            self.pending.waiters.push(reply);
        }
    }
}
