//! What the store must hold: the last state known durable (`durable`),
//! and the writes since, each acknowledged or failed and each durable or
//! not. Live, the store must hold `durable` with every acknowledged write
//! applied. After a crash it must hold `durable` with some prefix of the
//! writes applied that keeps every durable one (and, when the process died
//! but the machine did not, every acknowledged one under a WAL), where a
//! failed write may or may not be in the prefix (a failed sync leaves its
//! bytes anywhere between the page cache and the disk). A process crash
//! does not make what it recovered durable: the writes stay, resolved, so
//! a power cut after it is checked against them.

use bytes::Bytes;
use std::collections::BTreeMap;

pub type State = BTreeMap<Bytes, Bytes>;

#[derive(Debug, Clone)]
struct Commit {
    changes: Vec<(Bytes, Option<Bytes>)>,
    acked: bool,
    durable: bool,
}

#[derive(Debug, Default)]
pub struct History {
    durable: State,
    commits: Vec<Commit>,
    /// Every value each key ever had, for a follower of an unlogged store
    /// (which sees flushed states only).
    ever: BTreeMap<Bytes, Vec<Bytes>>,
    /// What failed writes did: a follower may have read them before the
    /// writer wrote over them.
    failed: Vec<(Bytes, Option<Bytes>)>,
}

fn apply(state: &mut State, changes: &[(Bytes, Option<Bytes>)]) {
    for (k, v) in changes {
        match v {
            Some(v) => state.insert(k.clone(), v.clone()),
            None => state.remove(k),
        };
    }
}

/// Most failed writes whose subsets a crash check tries.
const MAX_FAILED: usize = 10;

/// How the store went down before a reopen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Down {
    /// `close` succeeded: everything acknowledged is durable.
    Closed,
    /// The process died; its page cache did not. Under a WAL every
    /// acknowledged write survives.
    Process { wal: bool },
    /// The machine lost power.
    Power,
}

/// A state a recovery may give: the first `len` writes, with the failed
/// ones among them taken as `mask` says.
struct Candidate {
    len: usize,
    failed: Vec<usize>,
    mask: u32,
    state: State,
}

impl History {
    /// The state the live store must hold.
    pub fn live(&self) -> State {
        let mut s = self.durable.clone();
        for c in self.commits.iter().filter(|c| c.acked) {
            apply(&mut s, &c.changes);
        }
        s
    }

    /// A write was acknowledged (`acked`) or failed; `durable` if its
    /// acknowledgement means durable.
    pub fn record(&mut self, changes: Vec<(Bytes, Option<Bytes>)>, acked: bool, durable: bool) {
        for (k, v) in &changes {
            if let Some(v) = v {
                self.ever.entry(k.clone()).or_default().push(v.clone());
            }
        }
        if !acked {
            self.failed.extend(changes.iter().cloned());
        }
        self.commits.push(Commit {
            changes,
            acked,
            durable: durable && acked,
        });
    }

    /// Every acknowledged write so far is durable (a sync, flush or close
    /// succeeded); the failed ones are gone for good (rolled back, or
    /// never written: after a failed fdatasync nothing succeeds until a
    /// reopen, which settles them).
    pub fn all_durable(&mut self) {
        self.durable = self.live();
        self.commits.clear();
    }

    /// Whether a failed write set `k` to `v` (`None`: deleted it).
    pub fn failed_write(&self, k: &Bytes, v: Option<&Bytes>) -> bool {
        self.failed
            .iter()
            .any(|(fk, fv)| fk == k && fv.as_ref() == v)
    }

    /// Whether `v` is a value `k` ever had.
    pub fn ever_had(&self, k: &Bytes, v: &Bytes) -> bool {
        self.ever.get(k).is_some_and(|vs| vs.contains(v))
    }

    fn candidates(&self, keep_acked: bool) -> Vec<Candidate> {
        let must = self
            .commits
            .iter()
            .rposition(|c| c.durable || (keep_acked && c.acked))
            .map_or(0, |i| i + 1);
        let failed: Vec<usize> = (0..self.commits.len())
            .filter(|&i| !self.commits[i].acked)
            .collect();
        let failed = &failed[failed.len().saturating_sub(MAX_FAILED)..];
        let mut out = Vec::new();
        for len in must..=self.commits.len() {
            let in_prefix: Vec<usize> = failed.iter().copied().filter(|&i| i < len).collect();
            for mask in 0u32..(1 << in_prefix.len()) {
                let mut s = self.durable.clone();
                for (i, c) in self.commits[..len].iter().enumerate() {
                    let take = match in_prefix.iter().position(|&f| f == i) {
                        Some(bit) => mask & (1 << bit) != 0,
                        None => c.acked,
                    };
                    if take {
                        apply(&mut s, &c.changes);
                    }
                }
                out.push(Candidate {
                    len,
                    failed: in_prefix.clone(),
                    mask,
                    state: s,
                });
            }
        }
        out
    }

    /// After a reopen: checks `found` against the states a recovery may
    /// give after going `down` (in cache mode, `found` may miss evicted
    /// keys) and settles on it. `Err` says what no candidate explains.
    pub fn settle(&mut self, found: State, down: Down, cache: bool) -> Result<(), String> {
        let keep_acked = match down {
            Down::Closed => true,
            Down::Process { wal } => wal,
            Down::Power => false,
        };
        if down == (Down::Process { wal: false }) {
            return self.settle_unordered(found, cache);
        }
        let cands = self.candidates(keep_acked);
        let fits = |c: &State| {
            if cache {
                found.iter().all(|(k, v)| c.get(k) == Some(v))
            } else {
                *c == found
            }
        };
        let Some(pick) = cands.iter().find(|c| fits(&c.state)) else {
            let live = self.live();
            let diff: Vec<String> = live
                .keys()
                .chain(found.keys())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .filter(|k| live.get(*k) != found.get(*k))
                .map(|k| {
                    format!(
                        "{}: acknowledged {:?}, recovered {:?}",
                        String::from_utf8_lossy(k),
                        live.get(k).map(short),
                        found.get(k).map(short)
                    )
                })
                .collect();
            return Err(format!(
                "the recovered state is none of the {} a recovery may give after {down:?}; against every acknowledged write: {}",
                cands.len(),
                diff.join(", ")
            ));
        };
        if matches!(down, Down::Process { .. }) {
            // Not durable yet: keep the writes, as the recovery took them.
            let mut kept = Vec::with_capacity(pick.len);
            for (i, mut c) in self.commits.drain(..).enumerate().take(pick.len) {
                if let Some(bit) = pick.failed.iter().position(|&f| f == i) {
                    if pick.mask & (1 << bit) == 0 {
                        continue;
                    }
                    c.acked = true;
                }
                kept.push(c);
            }
            self.commits = kept;
            if cache {
                // Evicted keys (the candidate has them, the store not) are
                // gone for good.
                let evicted: Vec<&Bytes> = pick
                    .state
                    .keys()
                    .filter(|k| !found.contains_key(*k))
                    .collect();
                for k in evicted {
                    self.durable.remove(k);
                    for c in &mut self.commits {
                        c.changes.retain(|(ck, _)| ck != k);
                    }
                }
            }
        } else {
            self.durable = found;
            self.commits.clear();
        }
        Ok(())
    }
}

impl History {
    /// Without a WAL nothing orders unflushed writes (two flush workers
    /// may publish a newer slab before an older one): after a crash each
    /// key holds its durable value or one a later write gave it.
    fn settle_unordered(&mut self, found: State, cache: bool) -> Result<(), String> {
        let must = self
            .commits
            .iter()
            .rposition(|c| c.durable)
            .map_or(0, |i| i + 1);
        let mut state = self.durable.clone();
        for c in self.commits[..must].iter().filter(|c| c.acked) {
            apply(&mut state, &c.changes);
        }
        let keys: std::collections::BTreeSet<Bytes> = state
            .keys()
            .chain(found.keys())
            .chain(
                self.commits
                    .iter()
                    .flat_map(|c| c.changes.iter().map(|(k, _)| k)),
            )
            .cloned()
            .collect();
        for k in keys {
            let mut allowed = vec![state.get(&k).cloned()];
            for c in &self.commits[must..] {
                for (ck, v) in &c.changes {
                    if *ck == k {
                        allowed.push(v.clone());
                    }
                }
            }
            let got = found.get(&k).cloned();
            if !(allowed.contains(&got) || (cache && got.is_none())) {
                return Err(format!(
                    "after a crash without a WAL, {} = {:?}; it may be one of {:?}",
                    String::from_utf8_lossy(&k),
                    got.as_ref().map(short),
                    allowed
                        .iter()
                        .map(|v| v.as_ref().map(short))
                        .collect::<Vec<_>>()
                ));
            }
        }
        self.durable = found;
        self.commits.clear();
        Ok(())
    }
}

/// A value as the messages show it: its stamp and length.
pub fn short(v: &Bytes) -> String {
    let end = v.iter().position(|&b| b == b'>').map_or(0, |p| p + 1);
    format!("{}({} B)", String::from_utf8_lossy(&v[..end]), v.len())
}
