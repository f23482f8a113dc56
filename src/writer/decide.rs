//! What a write replaces, decided before it is appended.
//!
//! The index keeps one entry per key (`crate::index`), so before a write is
//! appended the writer must know, for every entry with the key's hash
//! bits, whether its record holds the key. It compares keys where the
//! record is in memory (a slab, resident segment pages), takes what the
//! caller read (`Facts`) for the rest, and hands the write back
//! ([`Bounced`]) when neither tells: the caller's task reads those records
//! on the I/O threads and sends the write again. The writer task never
//! waits for the disk, and nothing it acknowledges leaves a second entry
//! behind. Writes appended but not yet applied are known by their keys
//! ([`Unapplied`]), so a decision stays complete until the write applies.

use super::{Op, Update, Writer};
use crate::index::{Entry, Identity, Location};
use crate::record::key_hash;
use crate::registry::Source;
use bytes::Bytes;
use std::collections::HashMap;

/// Whether the records at some locations hold some keys, as a caller (or
/// GC) read them. Locations never change content, so a fact stays true.
#[derive(Debug, Default, Clone)]
pub(crate) struct Facts(HashMap<Location, Vec<(Bytes, Option<u64>)>>);

impl Facts {
    /// The record at `loc` holds `key` (with `len` record bytes) or not
    /// (`None`).
    pub fn add(&mut self, loc: Location, key: Bytes, len: Option<u64>) {
        self.0.entry(loc).or_default().push((key, len));
    }

    /// What is known of `loc` and `key`: `Some(Some(len))` if the record
    /// holds the key, `Some(None)` if not.
    fn about(&self, loc: Location, key: &[u8]) -> Option<Option<u64>> {
        self.0
            .get(&loc)?
            .iter()
            .find(|(k, _)| k == key)
            .map(|&(_, len)| len)
    }
}

/// An entry the writer could not compare with a write's key without the
/// disk: the caller reads it.
#[derive(Debug)]
pub(crate) struct Unknown {
    pub entry: Entry,
    pub source: Source,
    pub key: Bytes,
}

/// A write handed back: read `unknown`, add to `facts`, send again.
#[derive(Debug)]
pub(crate) struct Bounced {
    pub ops: Vec<Op>,
    pub facts: Facts,
    pub unknown: Vec<Unknown>,
}

/// What an entry with the write's hash bits holds, decided before the
/// write was appended: `len` is `Some` (the record's length) if it holds
/// the write's key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen {
    pub loc: Location,
    pub len: Option<u64>,
}

/// An appended write not yet applied.
#[derive(Debug)]
struct Pending {
    loc: Location,
    key: Bytes,
    len: u64,
    /// It adds an index entry (a put or a GC move).
    adds: bool,
}

/// Appended writes not yet applied, by key hash.
#[derive(Debug, Default)]
pub(crate) struct Unapplied(HashMap<u64, Vec<Pending>>);

impl Unapplied {
    pub fn add(&mut self, u: &Update) {
        self.0.entry(key_hash(&u.key)).or_default().push(Pending {
            loc: u.loc,
            key: u.key.clone(),
            len: u64::from(u.len),
            adds: u.change.adds_entry(),
        });
    }

    pub fn remove(&mut self, u: &Update) {
        let hash = key_hash(&u.key);
        if let Some(v) = self.0.get_mut(&hash) {
            v.retain(|p| p.loc != u.loc);
            if v.is_empty() {
                self.0.remove(&hash);
            }
        }
    }

    pub fn contains(&self, hash: u64) -> bool {
        self.0.contains_key(&hash)
    }
}

/// What the entries of one key's hash hold, or the ones that cannot be
/// told without the disk.
fn seen_for(w: &Writer, key: &Bytes, facts: &Facts, unknown: &mut Vec<Unknown>) -> Vec<Seen> {
    let shared = &w.shared;
    let hash = key_hash(key);
    let mut found = Vec::new();
    shared.index.candidates(hash, |entry| {
        found.push((entry, shared.registry.get(entry.loc.file_id)));
    });
    let mut seen = Vec::with_capacity(found.len());
    for (entry, source) in found {
        let loc = entry.loc;
        if let Some(len) = facts.about(loc, key) {
            seen.push(Seen { loc, len });
            continue;
        }
        match shared.identity_now(source.as_ref(), entry, key) {
            (Identity::Same, len) => seen.push(Seen {
                loc,
                len: Some(len),
            }),
            (Identity::Different, _) => seen.push(Seen { loc, len: None }),
            (Identity::Unknown, _) => match source {
                Some(source) => unknown.push(Unknown {
                    entry,
                    source,
                    key: key.clone(),
                }),
                // `identity_now` says a missing file is another key's.
                None => seen.push(Seen { loc, len: None }),
            },
        }
    }
    if let Some(pending) = w.unapplied.0.get(&hash) {
        for p in pending.iter().filter(|p| p.adds) {
            let len = (p.key == *key).then_some(p.len);
            seen.push(Seen { loc: p.loc, len });
        }
    }
    seen
}

impl Writer {
    /// For each op of a client write, what its key's entries hold (see the
    /// module docs); or, if some cannot be told without the disk, those.
    pub(super) fn decide(&self, ops: &[Op], facts: &Facts) -> Result<Vec<Vec<Seen>>, Vec<Unknown>> {
        let mut unknown = Vec::new();
        let seen = ops
            .iter()
            .map(|op| seen_for(self, op.key(), facts, &mut unknown))
            .collect();
        if unknown.is_empty() {
            Ok(seen)
        } else {
            Err(unknown)
        }
    }

    /// What to do with a GC copy. A moved record lands in a newer file
    /// than every record of its key, so it must be the key's newest: it is
    /// appended only while the key's entry is at the record it copies. A
    /// tombstone is appended unless the key has a value again (then that
    /// value is newer and the tombstone is not needed; copied past it, it
    /// would delete it at the next open), and deferred if that cannot be
    /// told without the disk. Writes of the key not yet applied defer
    /// both (`relocate`).
    pub(super) fn verdict(&self, op: &Op) -> Verdict {
        let shared = &self.shared;
        let hash = key_hash(op.key());
        match op {
            Op::Move { from, .. } => {
                if shared.index.entry_at(hash, *from).is_some() {
                    Verdict::Append
                } else {
                    Verdict::Drop
                }
            }
            Op::MoveTombstone { key, facts } => {
                let mut unknown = Vec::new();
                let seen = seen_for(self, key, facts, &mut unknown);
                if seen.iter().any(|s| s.len.is_some()) {
                    Verdict::Drop
                } else if unknown.is_empty() {
                    Verdict::Append
                } else {
                    Verdict::Defer
                }
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
