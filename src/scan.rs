//! Reading many records in file order: `Db::scan` and GC.
//!
//! [`OrderedReads`] takes records sorted by location and reads the ones
//! that are not in memory in windows of up to [`WINDOW`] bytes of one file
//! (records close together share a read), so a scan or a compaction reads
//! each file front to back in large requests instead of faulting it in page
//! by page. Records in memory come back without a copy, as in a get.
//!
//! `Db::scan` goes over the index a few shards at a time (at most
//! [`PASS_ENTRIES`] entries, so its memory is bounded), sorts each pass by
//! location and reads it in order. Each key has one entry and sits in
//! exactly one shard, so every pair that is live for the whole scan is
//! yielded exactly once, and a record that cannot be read fails alone.

use crate::error::{Error, Result};
use crate::index::Entry;
use crate::read::Record;
use crate::registry::{log_path, Source};
use crate::shared::Shared;
use bytes::Bytes;
use futures::Stream;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Most bytes one window read covers.
const WINDOW: usize = 2 << 20;
/// A gap between records larger than this ends a window (reading it
/// would cost more than a second request).
const MAX_GAP: usize = 256 << 10;
/// Most index entries one scan pass holds (about 24 bytes each).
const PASS_ENTRIES: usize = 2 << 20;

/// Records in location order, read as described in the module docs.
pub(crate) struct OrderedReads {
    shared: Arc<Shared>,
    verify: bool,
    todo: VecDeque<(Entry, Source)>,
    ready: VecDeque<(Entry, Result<Record>)>,
}

impl OrderedReads {
    /// `todo` must be sorted by location.
    pub fn new(shared: Arc<Shared>, todo: Vec<(Entry, Source)>, verify: bool) -> OrderedReads {
        OrderedReads {
            shared,
            verify,
            todo: todo.into(),
            ready: VecDeque::new(),
        }
    }

    /// The next record, or `None` when all were read.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped while a read is pending, the records it was
    /// reading are skipped. Its callers (the scan stream, GC) await it to
    /// the end or drop the whole reader.
    pub async fn next(&mut self) -> Option<(Entry, Result<Record>)> {
        loop {
            if let Some(done) = self.ready.pop_front() {
                return Some(done);
            }
            let (entry, source) = self.todo.pop_front()?;
            let seg = match &source {
                Source::Segment(seg) if !self.shared.in_memory(&source, entry) => seg.clone(),
                _ => {
                    let rec = self.shared.record(&source, entry, self.verify).await;
                    return Some((entry, rec));
                }
            };
            self.read_window(entry, source, &seg).await;
        }
    }

    /// Reads `first` and the records after it in the same file that fit in
    /// one window, into `ready`.
    async fn read_window(
        &mut self,
        first: Entry,
        source: Source,
        seg: &Arc<crate::segment::Segment>,
    ) {
        let start = first.loc.offset as usize;
        let data_end = seg.data_end();
        let bound = |e: &Entry| {
            let off = e.loc.offset as usize;
            e.class
                .bound()
                .map_or(data_end, |b| off.saturating_add(b as usize))
                .min(data_end)
        };
        let mut members = vec![first];
        let mut end = bound(&first);
        while let Some((next, s)) = self.todo.front() {
            let off = next.loc.offset as usize;
            let same_file =
                next.loc.file_id == first.loc.file_id && matches!(s, Source::Segment(_));
            if !same_file || off > end + MAX_GAP || bound(next) > start + WINDOW {
                break;
            }
            end = end.max(bound(next));
            members.push(*next);
            self.todo.pop_front();
        }
        if end <= start {
            let rec = self.shared.record(&source, first, self.verify).await;
            self.ready.push_back((first, rec));
            return;
        }
        let window = self.shared.read_window(seg, start, end - start).await;
        for e in members {
            let rec = match &window {
                Ok(bytes) => {
                    let at = e.loc.offset as usize - start;
                    match self
                        .shared
                        .record_in_window(&source, e, bytes, at, self.verify)
                    {
                        Some(r) => r,
                        // Longer than its bound said: on its own.
                        None => self.shared.record(&source, e, self.verify).await,
                    }
                }
                // One failed window read fails no record by itself: each
                // is tried alone, and fails with its own error if it must.
                Err(_) => self.shared.record(&source, e, self.verify).await,
            };
            self.ready.push_back((e, rec));
        }
    }
}

/// Every live pair (see the module docs and `Db::scan`).
pub(crate) fn scan(
    shared: Arc<Shared>,
) -> impl Stream<Item = Result<(Bytes, Bytes)>> + Send + 'static {
    let state = ScanState {
        opened: shared.check_open().err(),
        next_shard: 0,
        reads: None,
        missing: Vec::new(),
        shared,
    };
    futures::stream::unfold(state, |mut st| async move {
        let item = st.next().await?;
        tokio::task::coop::consume_budget().await;
        Some((item, st))
    })
}

struct ScanState {
    shared: Arc<Shared>,
    opened: Option<Error>,
    next_shard: usize,
    reads: Option<OrderedReads>,
    /// Entries of the current pass whose file is not loaded (and was not
    /// evicted): each is yielded as its own error.
    missing: Vec<Entry>,
}

impl ScanState {
    async fn next(&mut self) -> Option<Result<(Bytes, Bytes)>> {
        if let Some(e) = self.opened.take() {
            self.next_shard = usize::MAX;
            return Some(Err(e));
        }
        loop {
            if let Some(e) = self.missing.pop() {
                return Some(Err(Error::corruption(
                    log_path(self.shared.registry.data_dir(), e.loc.file_id),
                    u64::from(e.loc.offset),
                    "index points at a file that is not loaded",
                )));
            }
            if let Some(reads) = &mut self.reads {
                match reads.next().await {
                    Some((_, Ok(rec))) => return Some(Ok((rec.key_bytes(), rec.value_bytes()))),
                    Some((e, Err(err))) => {
                        if self.shared.evicted(e.loc) {
                            continue;
                        }
                        return Some(Err(err));
                    }
                    None => self.reads = None,
                }
            }
            if self.next_shard >= self.shared.index.shard_count() {
                return None;
            }
            self.reads = Some(self.pass());
        }
    }

    /// The next pass: entries of the next shards (at least one), each
    /// file pinned while its shard is locked, in location order. A key has
    /// one entry, so each is yielded as it is; one whose file is gone
    /// (not evicted) goes to `missing`.
    fn pass(&mut self) -> OrderedReads {
        let shared = &self.shared;
        let mut pinned: HashMap<u32, Option<Source>> = HashMap::new();
        let mut entries: Vec<Entry> = Vec::new();
        while self.next_shard < shared.index.shard_count() && entries.len() < PASS_ENTRIES {
            let more = shared.index.shard_entries(self.next_shard, |e| {
                pinned
                    .entry(e.loc.file_id)
                    .or_insert_with(|| shared.registry.get(e.loc.file_id));
            });
            entries.extend(more);
            self.next_shard += 1;
        }
        let mut todo = Vec::with_capacity(entries.len());
        for e in entries {
            match pinned.get(&e.loc.file_id).cloned().flatten() {
                Some(source) => todo.push((e, source)),
                None if shared.evicted(e.loc) => {}
                None => self.missing.push(e),
            }
        }
        todo.sort_unstable_by_key(|(e, _)| e.loc);
        OrderedReads::new(shared.clone(), todo, shared.config.verify_checksums)
    }
}
