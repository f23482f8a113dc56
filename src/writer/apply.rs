//! Applying a durable group to the index, with what was decided when its
//! writes were appended (`super::decide`): no key is compared here, and
//! nothing waits for the disk.

use super::{Change, Group, Writer};
use crate::index::Entry;
use crate::record::key_hash;
use crate::space::SpaceDelta;
use crate::sync::Ordering;

impl Writer {
    /// Applies a finished group: index first, then acknowledgements, so an
    /// acknowledged write is always visible to its writer.
    pub(super) fn apply(&mut self, group: Group) {
        let shared = &*self.shared;
        let mut space = SpaceDelta::default();
        for u in &group.updates {
            self.unapplied.remove(u);
            let hash = key_hash(&u.key);
            let file = u.loc.file_id;
            let len = u64::from(u.len);
            let entry = Entry::put(u.loc, len);
            let live = match u.change {
                Change::Put | Change::Delete => {
                    let put = matches!(u.change, Change::Put);
                    // An entry the decision did not see was added since by
                    // a write of another key (writes of this key that were
                    // not applied were seen by their keys).
                    let held =
                        |e: Entry| u.seen.iter().find(|s| s.loc == e.loc).and_then(|s| s.len);
                    let removed = shared
                        .index
                        .apply(hash, put.then_some(entry), |e| held(e).is_some());
                    for old in removed {
                        space.died(old.loc.file_id, held(old).unwrap_or(0));
                    }
                    put
                }
                Change::Move { from, from_len } => {
                    let moved = shared.index.relocate(hash, from, entry);
                    if moved {
                        space.died(from.file_id, u64::from(from_len));
                    }
                    moved
                }
                Change::Tombstone => false,
            };
            space.written(file, len, live);
        }
        shared.space.apply(space);
        let n = group.waiters.len() as u64;
        crate::signals::record("silt_group_size", n as f64);
        let c = &shared.counters;
        c.groups.fetch_add(1, Ordering::Relaxed);
        c.grouped_writes.fetch_add(n, Ordering::Relaxed);
        c.max_group.fetch_max(n, Ordering::Relaxed);
        for w in group.waiters {
            let _ = w.send(Ok(()));
        }
    }
}
