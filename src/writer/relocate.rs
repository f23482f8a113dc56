//! The writer's side of GC: appending the moves a compaction sends, only
//! where no newer write makes them wrong.

use super::decide::Verdict;
use super::{Op, Writer};
use crate::error::Result;
use crate::record::key_hash;
use std::collections::HashSet;
use tokio::sync::oneshot;

/// What the writer did with one `Request::Relocate`.
#[derive(Debug, Default)]
pub(crate) struct Relocated {
    /// Records appended.
    pub moves: u64,
    /// Tombstones appended.
    pub tombstones: u64,
    /// Tombstones dropped: their key has a value again.
    pub tombstones_dropped: u64,
    /// Bytes appended.
    pub appended_bytes: u64,
    /// Handed back: a write of their key is not yet applied, or (a
    /// tombstone) whether its key has a value cannot be told now.
    pub deferred: Vec<Op>,
}

impl Relocated {
    /// Adds up the outcomes of several requests.
    pub fn add(&mut self, other: Relocated) {
        self.moves += other.moves;
        self.tombstones += other.tombstones;
        self.tombstones_dropped += other.tombstones_dropped;
        self.appended_bytes += other.appended_bytes;
        self.deferred.extend(other.deferred);
    }
}

impl Writer {
    /// Appends GC's moves that are still needed, each as its own atomic
    /// write. A move whose key has a write not yet applied is deferred (that
    /// write may still fail); one whose key no longer points at the moved
    /// record, or (a tombstone) has a value again, is dropped. GC checks
    /// afterwards that nothing live is left in the file before deleting it.
    pub(super) async fn relocate(
        &mut self,
        moves: Vec<Op>,
        outcome: oneshot::Sender<Relocated>,
        reply: oneshot::Sender<Result<()>>,
    ) {
        if let Err(e) = self.shared.check_poisoned() {
            let _ = reply.send(Err(e));
            return;
        }
        let own_files: HashSet<u64> = self.unapplied_hashes().collect();
        let mut done = Relocated::default();
        let mut appended = 0;
        for op in moves {
            let hash = key_hash(op.key());
            if self.unapplied.contains(hash) || own_files.contains(&hash) {
                done.deferred.push(op);
                continue;
            }
            match self.verdict(&op) {
                Verdict::Append => {}
                Verdict::Drop => {
                    done.tombstones_dropped += u64::from(op.is_delete());
                    continue;
                }
                Verdict::Defer => {
                    done.deferred.push(op);
                    continue;
                }
            }
            match self.append(std::slice::from_ref(&op), Vec::new()).await {
                Ok(updates) => {
                    self.pending.updates.extend(updates);
                    appended += 1;
                    done.appended_bytes += op.encoded_len() as u64;
                    if op.is_delete() {
                        done.tombstones += 1;
                    } else {
                        done.moves += 1;
                    }
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            }
        }
        let _ = outcome.send(done);
        if appended == 0 && self.pending.is_empty() && self.inflight.is_empty() {
            let _ = reply.send(Ok(()));
        } else {
            // Acknowledged with the pending group: after it, and every
            // write before it, is applied.
            self.pending.waiters.push(reply);
        }
    }
}
