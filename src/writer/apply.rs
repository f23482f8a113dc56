//! Applying a durable group to the index, without waiting for the disk.
//!
//! To replace a key's entry the writer must know whether an entry with the
//! same hash bits holds the key. It compares keys where the old record is
//! in memory (the slab, resident segment pages) and otherwise leaves the
//! old entry beside the new one for `crate::resolve` to sort out (see
//! `crate::index`). So an overwrite of a key whose record is on disk only
//! costs what a write of a new key costs.

use super::{Change, Group, Known, Op, Writer};
use crate::index::{Entry, Identity, Location, Relocated};
use crate::record::key_hash;
use crate::registry::Source;
use crate::resolve::Resolve;
use crate::shared::Shared;
use crate::space::SpaceDelta;
use crate::sync::Ordering;

/// What the writer found out about one entry of the key's hash, outside
/// the shard's write lock.
struct Decided {
    entry: Entry,
    source: Option<Source>,
    identity: Identity,
    /// The record's length, when it is the key's.
    len: u64,
}

/// Every entry that may hold `key`, each compared where that needs no disk
/// or told by `known` (what GC read).
fn decide(shared: &Shared, hash: u64, key: &[u8], known: &Known) -> Vec<Decided> {
    let mut found = Vec::new();
    shared.index.candidates(hash, |entry| {
        found.push((entry, shared.registry.get(entry.loc.file_id)));
    });
    found
        .into_iter()
        .map(|(entry, source)| {
            let (identity, len) = match known.iter().find(|(l, _)| *l == entry.loc) {
                // Only identities matter here: a GC move's superseded
                // entries are counted by the move's own length.
                Some((_, true)) => (Identity::Same, 0),
                Some((_, false)) => (Identity::Different, 0),
                None => shared.identity_now(source.as_ref(), entry, key),
            };
            Decided {
                entry,
                source,
                identity,
                len,
            }
        })
        .collect()
}

/// The identity `decided` found for `e` (an entry that appeared since is
/// one the writer did not add, hence not this key's: only the writer adds).
fn identity_of(decided: &[Decided], e: Entry) -> Identity {
    decided
        .iter()
        .find(|d| d.entry.loc == e.loc)
        .map_or(Identity::Different, |d| d.identity)
}

fn len_of(decided: &[Decided], loc: Location) -> u64 {
    decided
        .iter()
        .find(|d| d.entry.loc == loc)
        .map_or(0, |d| d.len)
}

impl Writer {
    /// Applies a finished group: index first, then acknowledgements, so an
    /// acknowledged write is always visible to its writer.
    pub(super) fn apply(&mut self, group: Group) {
        let shared = &*self.shared;
        let mut space = SpaceDelta::default();
        for u in &group.updates {
            let hash = key_hash(&u.key);
            let file = u.loc.file_id;
            let len = u64::from(u.len);
            let entry = Entry::put(u.loc, len);
            let live = match u.change {
                Change::Put | Change::Delete => {
                    let delete = matches!(u.change, Change::Delete);
                    let decided = decide(shared, hash, &u.key, &u.known);
                    let applied = shared
                        .index
                        .apply(hash, entry, delete, |e| identity_of(&decided, e));
                    for old in &applied.removed {
                        space.died(old.loc.file_id, len_of(&decided, old.loc));
                    }
                    if !applied.unknown.is_empty() {
                        let unknown = decided
                            .into_iter()
                            .filter(|d| applied.unknown.contains(&d.entry))
                            .map(|d| (d.entry, d.source))
                            .collect();
                        self.resolve_later(Resolve {
                            hash,
                            key: u.key.clone(),
                            newest: Entry {
                                tombstone: delete,
                                ..entry
                            },
                            unknown,
                        });
                    }
                    !delete
                }
                Change::Move { from, from_len } => {
                    let decided = decide(shared, hash, &u.key, &u.known);
                    let (moved, stale) = shared
                        .index
                        .relocate(hash, from, entry, |e| identity_of(&decided, e));
                    for old in stale {
                        let len = if old.loc == from {
                            u64::from(from_len)
                        } else {
                            len_of(&decided, old.loc)
                        };
                        space.died(old.loc.file_id, len);
                    }
                    if moved == Relocated::Moved {
                        space.died(from.file_id, u64::from(from_len));
                    }
                    moved == Relocated::Moved
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

    fn resolve_later(&self, job: Resolve) {
        crate::resolve::started(&self.shared);
        if let Err(lost) = self.resolve.send(job) {
            // The resolver is gone (shutting down): the entries stay until
            // the next open, which rebuilds the index.
            drop(lost);
            crate::resolve::finished(&self.shared);
        }
    }

    /// What to do with a GC copy. A moved record lands in a newer file
    /// than every record of its key, so it must be the key's newest: it is
    /// appended only while it is the key's one entry (another entry that
    /// holds the key makes it stale; one that may, with no way to tell
    /// without the disk, defers it). A tombstone is appended unless the
    /// key has a value again, and deferred if that cannot be told: copied
    /// past a newer value it would delete it at the next open; dropped
    /// while an older value remains, it would bring that back.
    pub(super) fn verdict(&self, op: &Op) -> Verdict {
        let shared = &self.shared;
        let hash = key_hash(op.key());
        match op {
            Op::Move {
                from, key, known, ..
            } => {
                if shared.index.entry_at(hash, *from).is_none() {
                    return Verdict::Drop;
                }
                let mut verdict = Verdict::Append;
                for d in decide(shared, hash, key, known) {
                    match d.identity {
                        _ if d.entry.loc == *from => {}
                        Identity::Same => return Verdict::Drop,
                        Identity::Unknown => verdict = Verdict::Defer,
                        Identity::Different => {}
                    }
                }
                verdict
            }
            Op::MoveTombstone { key, known } => {
                let mut verdict = Verdict::Append;
                for d in decide(shared, hash, key, known) {
                    match d.identity {
                        Identity::Same if !d.entry.tombstone => return Verdict::Drop,
                        Identity::Unknown => verdict = Verdict::Defer,
                        _ => {}
                    }
                }
                verdict
            }
            Op::Put(..) | Op::Delete(_) => Verdict::Append,
        }
    }
}

/// What the writer does with a GC copy.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    Append,
    /// Not needed (or stale): GC finds out when it checks the file again.
    Drop,
    /// Cannot be told now: back to GC, which reads and asks again.
    Defer,
}
