//! Reading located records, for `get`, `contains_key`, `get_many`,
//! `get_range`, `scan`, GC and the writer's key comparisons.
//!
//! A record in a slab, or in segment pages that are in memory
//! (`crate::resident`), is read through the mapping and comes back without
//! a copy. One that is not is read by the store's I/O threads
//! (`crate::io::read`) while the caller's future is pending: no runtime
//! worker waits for the disk, and no lock is held meanwhile (a reader pins
//! the file's `Source` under the index shard's lock, then lets go). The
//! read is one I/O of the record's length bound (`LenClass`), through the
//! page cache or `O_DIRECT` as `ColdReads` says.

use crate::error::{Error, Result};
use crate::index::{Entry, Identity, Location};
use crate::io::read::ReadMode;
use crate::options::ColdReads;
use crate::record::{self, Header, HEADER_LEN};
use crate::registry::{log_path, Registry, Source};
use crate::segment::{decode_footer, scan_records, FooterEntry, Segment};
use crate::shared::Shared;
use crate::writer::{Facts, Unknown};
use bytes::Bytes;
use futures::StreamExt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

/// Records longer than this whose length class is unknown are read in two
/// steps (header first) rather than up to the end of their file.
const HEADER_FIRST_ABOVE: usize = 8 << 20;

/// Records a handed-back write reads at once (see `Shared::read_facts`).
const FACT_READS: usize = 64;

impl Source {
    /// The file's records (hash, offset, length, tombstone): a segment's
    /// footer (or, if that is damaged, a header scan), a slab's published
    /// records. Reads through the mapping: for threads that may block.
    pub fn entries(&self) -> Vec<FooterEntry> {
        if let Source::Segment(s) = self {
            s.prefetch_footer();
        }
        let image = match self {
            Source::Slab(s) => s.bytes(0, s.published()),
            Source::Segment(s) => s.bytes(0, s.len()),
        }
        .unwrap_or_default();
        if let Source::Segment(_) = self {
            if let Ok(f) = decode_footer(image) {
                return f.entries;
            }
        }
        scan_records(image, false).entries
    }

    pub(crate) fn bytes(&self, off: usize, len: usize) -> Option<&[u8]> {
        match self {
            Source::Slab(s) => s.bytes(off, len),
            Source::Segment(s) => s.bytes(off, len),
        }
    }

    /// Whether `[off, off + len)` can be read now without waiting for the
    /// disk (always for a slab; resident pages for a segment).
    fn in_memory(&self, off: usize, len: usize) -> bool {
        match self {
            Source::Slab(_) => true,
            Source::Segment(s) => s.resident(off, len),
        }
    }

    fn path(&self, data_dir: &std::path::Path, file_id: u32) -> PathBuf {
        match self {
            Source::Slab(_) => log_path(data_dir, file_id),
            Source::Segment(s) => s.path().to_path_buf(),
        }
    }
}

impl Registry {
    /// The key of the record at `loc`, read through the file's mapping:
    /// for threads that may block (recovery, a follower's refresh).
    fn key_blocking(&self, loc: Location) -> Option<Vec<u8>> {
        let source = self.get(loc.file_id)?;
        let off = loc.offset as usize;
        let header = record::decode_fixed(source.bytes(off, HEADER_LEN)?).ok()?;
        source
            .bytes(off + HEADER_LEN, header.key_len as usize)
            .map(<[u8]>::to_vec)
    }

    /// Whether the records at `a` and `b` hold the same key (blocking, as
    /// [`Registry::key_blocking`]).
    pub fn same_key_blocking(&self, a: Location, b: Location) -> bool {
        match (self.key_blocking(a), self.key_blocking(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        }
    }
}

/// Where a record's bytes are.
#[derive(Debug)]
enum Body {
    /// In a slab or a segment's mapping, from this offset.
    Mapped { source: Source, offset: usize },
    /// In a buffer an I/O thread read into (exactly the record).
    Read(Bytes),
}

/// A record found at a location: header decoded, bounds (and, when asked,
/// CRC) checked.
#[derive(Debug)]
pub(crate) struct Record {
    pub header: Header,
    body: Body,
}

impl Record {
    fn slice(&self) -> &[u8] {
        match &self.body {
            Body::Mapped { source, offset } => source
                .bytes(*offset, self.header.record_len())
                .unwrap_or_default(),
            Body::Read(b) => b,
        }
    }

    pub fn key(&self) -> &[u8] {
        record::key_of(&self.header, self.slice())
    }

    fn part(&self, start: usize, len: usize) -> Bytes {
        match &self.body {
            Body::Mapped { source, offset } => Bytes::from_owner(RecordPart {
                source: source.clone(),
                start: offset + start,
                len,
            }),
            Body::Read(b) => b.slice(start..start + len),
        }
    }

    /// The key, without a copy.
    pub fn key_bytes(&self) -> Bytes {
        self.part(HEADER_LEN, self.header.key_len as usize)
    }

    /// The value, without a copy (slab memory, segment mapping or the
    /// buffer it was read into).
    pub fn value_bytes(&self) -> Bytes {
        self.part(
            HEADER_LEN + self.header.key_len as usize,
            self.header.val_len as usize,
        )
    }
}

/// Owner of a zero-copy `Bytes`: keeps the slab or segment alive.
struct RecordPart {
    source: Source,
    start: usize,
    len: usize,
}

impl AsRef<[u8]> for RecordPart {
    fn as_ref(&self) -> &[u8] {
        // In bounds: the whole record was checked, and the bytes below a
        // slab's watermark or in a segment never change.
        self.source.bytes(self.start, self.len).unwrap_or_default()
    }
}

/// What can be said about a record without waiting for the disk.
enum Now<T> {
    Ready(Result<T>),
    /// Its bytes are not in memory.
    Cold,
}

impl Shared {
    fn corruption(&self, source: &Source, loc: Location, what: &str) -> Error {
        Error::corruption(
            source.path(self.registry.data_dir(), loc.file_id),
            u64::from(loc.offset),
            what,
        )
    }

    /// How a cold read of `len` bytes goes to the file now. Under `Auto`
    /// a read of less than a page goes through the page cache even when
    /// the store has outgrown memory: the device reads about as much
    /// either way, and the page may serve the next get of it (small, hot
    /// keys among large cold values stay in memory).
    fn cold_mode(&self, len: usize) -> ReadMode {
        let direct = match self.config.cold_reads {
            ColdReads::PageCache => false,
            ColdReads::Direct => true,
            ColdReads::Auto => {
                len >= crate::io::aligned::PAGE
                    && self
                        .memory_limit
                        .is_some_and(|m| self.registry.segment_bytes() > m / 2)
            }
        };
        if direct {
            ReadMode::Direct
        } else {
            ReadMode::Cached
        }
    }

    /// Whether the record at `entry` of `source` looks readable without the
    /// disk (its length bound is resident, or it is in a slab).
    pub(crate) fn in_memory(&self, source: &Source, entry: Entry) -> bool {
        let len = entry.class.bound().map_or(HEADER_LEN, |b| b as usize);
        match source {
            Source::Slab(_) => true,
            Source::Segment(seg) => {
                let off = entry.loc.offset as usize;
                seg.resident(off, len.min(seg.data_end().saturating_sub(off)))
            }
        }
    }

    /// `[off, off + len)` of `seg` in one read, for records read in order.
    pub(crate) async fn read_window(
        &self,
        seg: &Arc<Segment>,
        off: usize,
        len: usize,
    ) -> Result<Bytes> {
        self.read_cold(seg, off, len).await
    }

    /// The record at `entry`, found at `at` in `window` (bytes read from
    /// its file); `None` if it does not end inside the window.
    pub(crate) fn record_in_window(
        &self,
        source: &Source,
        entry: Entry,
        window: &Bytes,
        at: usize,
        verify: bool,
    ) -> Option<Result<Record>> {
        let fail = |what: &str| Some(Err(self.corruption(source, entry.loc, what)));
        let header = match record::decode_fixed(window.get(at..)?) {
            Ok(h) => h,
            Err(record::DecodeError::Truncated) => return None,
            Err(e) => return fail(e.describe()),
        };
        let end = at.checked_add(header.record_len())?;
        let bytes = window.get(at..end).map(|_| window.slice(at..end))?;
        if verify {
            if let Err(e) = record::check_crc(&header, &bytes) {
                return fail(e.describe());
            }
        }
        Some(Ok(Record {
            header,
            body: Body::Read(bytes),
        }))
    }

    /// `[off, off + len)` of `seg`, read by the I/O threads (the fault
    /// layer's read faults apply here).
    async fn read_cold(&self, seg: &Arc<Segment>, off: usize, len: usize) -> Result<Bytes> {
        let mode = self.cold_mode(len);
        let fail = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::corruption(
                    seg.path(),
                    off as u64,
                    "record extends beyond the end of the file",
                )
            } else {
                Error::io("read record", seg.path(), e)
            }
        };
        if let Some(e) = self.vfs.read_fault() {
            return Err(fail(e));
        }
        let buf = self
            .reader
            .read(seg.read_file(), off as u64, len, mode)
            .await
            .map_err(fail)?;
        if mode == ReadMode::Cached {
            seg.mark_resident(off, len);
        }
        Ok(Bytes::from_owner(buf))
    }

    /// The record at `entry` of `source` if its bytes are in memory.
    fn record_now(&self, source: &Source, entry: Entry, verify: bool) -> Now<Record> {
        let off = entry.loc.offset as usize;
        // The hot path asks once, over the record's length bound; where
        // that range is not all resident, the header and then the exact
        // record are asked about.
        let whole = match (source, entry.class.bound()) {
            (Source::Slab(_), _) => true,
            (Source::Segment(seg), Some(b)) => {
                seg.resident(off, (b as usize).min(seg.data_end().saturating_sub(off)))
            }
            (Source::Segment(_), None) => false,
        };
        if !whole && !source.in_memory(off, HEADER_LEN) {
            return Now::Cold;
        }
        let fail = |what: &str| Now::Ready(Err(self.corruption(source, entry.loc, what)));
        let Some(head) = source.bytes(off, HEADER_LEN) else {
            return fail("record header beyond the end of the file");
        };
        let header = match record::decode_fixed(head) {
            Ok(h) => h,
            Err(e) => return fail(e.describe()),
        };
        if !whole && !source.in_memory(off, header.record_len()) {
            return Now::Cold;
        }
        let Some(rec) = source.bytes(off, header.record_len()) else {
            return fail("record extends beyond the end of the file");
        };
        if verify {
            if let Err(e) = record::check_crc(&header, rec) {
                return fail(e.describe());
            }
        }
        Now::Ready(Ok(Record {
            header,
            body: Body::Mapped {
                source: source.clone(),
                offset: off,
            },
        }))
    }

    /// The record at `entry` of `source`: from memory, or read by the I/O
    /// threads in one read of its length bound.
    pub(crate) async fn record(
        &self,
        source: &Source,
        entry: Entry,
        verify: bool,
    ) -> Result<Record> {
        let seg = match (self.record_now(source, entry, verify), source) {
            (Now::Ready(r), _) => return r,
            (Now::Cold, Source::Segment(seg)) => seg,
            // A slab is always in memory; this cannot happen.
            (Now::Cold, Source::Slab(_)) => {
                return Err(self.corruption(source, entry.loc, "slab record not in memory"))
            }
        };
        let off = entry.loc.offset as usize;
        let avail = seg.data_end().saturating_sub(off);
        let fail = |what: &str| self.corruption(source, entry.loc, what);
        if avail < HEADER_LEN {
            return Err(fail("record header beyond the end of the file"));
        }
        let want = match entry.class.bound() {
            Some(b) => (b as usize).min(avail),
            None if avail > HEADER_FIRST_ABOVE => 4096.min(avail),
            None => avail,
        };
        let mut bytes = self.read_cold(seg, off, want).await?;
        let header = record::decode_fixed(&bytes).map_err(|e| fail(e.describe()))?;
        let len = header.record_len();
        if len > avail {
            return Err(fail("record extends beyond the end of the file"));
        }
        if len > bytes.len() {
            bytes = self.read_cold(seg, off, len).await?;
        }
        bytes.truncate(len);
        if verify {
            record::check_crc(&header, &bytes).map_err(|e| fail(e.describe()))?;
        }
        Ok(Record {
            header,
            body: Body::Read(bytes),
        })
    }

    /// The header of the record at `entry` if it holds `key` (`None` if it
    /// holds another key). Reads only the header and key.
    pub(crate) async fn header_if_key(
        &self,
        source: &Source,
        entry: Entry,
        key: &[u8],
    ) -> Result<Option<Header>> {
        let off = entry.loc.offset as usize;
        let want = HEADER_LEN + key.len();
        let fail = |what: &str| self.corruption(source, entry.loc, what);
        let read;
        let head: &[u8] = match source {
            Source::Segment(seg) if !source.in_memory(off, want) => {
                let avail = seg.data_end().saturating_sub(off);
                if avail < HEADER_LEN {
                    return Err(fail("record header beyond the end of the file"));
                }
                read = self.read_cold(seg, off, want.min(avail)).await?;
                &read
            }
            _ => source
                .bytes(off, HEADER_LEN)
                .and_then(|_| source.bytes(off, want).or(source.bytes(off, HEADER_LEN)))
                .ok_or_else(|| fail("record header beyond the end of the file"))?,
        };
        let header = record::decode_fixed(head).map_err(|e| fail(e.describe()))?;
        let same = header.key_len as usize == key.len() && head.get(HEADER_LEN..want) == Some(key);
        Ok(same.then_some(header))
    }

    /// Whether the record at `entry` holds `key`, if that can be told
    /// without waiting for the disk (the writer's question), with the
    /// record's length when it does.
    pub(crate) fn identity_now(
        &self,
        source: Option<&Source>,
        entry: Entry,
        key: &[u8],
    ) -> (Identity, u64) {
        // A file that is gone (evicted): its entries are being removed.
        let Some(source) = source else {
            return (Identity::Different, 0);
        };
        let off = entry.loc.offset as usize;
        let want = HEADER_LEN + key.len();
        if !source.in_memory(off, want) {
            return (Identity::Unknown, 0);
        }
        let Some(header) = source
            .bytes(off, HEADER_LEN)
            .and_then(|h| record::decode_fixed(h).ok())
        else {
            return (Identity::Different, 0);
        };
        let same = header.key_len as usize == key.len()
            && source.bytes(off + HEADER_LEN, key.len()) == Some(key);
        if same {
            (Identity::Same, header.record_len() as u64)
        } else {
            (Identity::Different, 0)
        }
    }

    /// What a write handed back by the writer needs (see
    /// `writer::decide`): whether each `unknown` record holds its key,
    /// read on the I/O threads, into `facts`. A record that cannot be read
    /// fails the write (nothing of it was done).
    pub(crate) async fn read_facts(&self, unknown: Vec<Unknown>, facts: &mut Facts) -> Result<()> {
        let reads = unknown.into_iter().map(|u| async move {
            let found = self.header_if_key(&u.source, u.entry, &u.key).await?;
            Ok::<_, Error>((u, found))
        });
        let mut reads = futures::stream::iter(reads).buffer_unordered(FACT_READS);
        while let Some(read) = reads.next().await {
            let (u, found) = read?;
            facts.add(u.entry.loc, u.key, found.map(|h| h.record_len() as u64));
        }
        Ok(())
    }

    /// For a GC copy of a tombstone of `key`: whether each entry of its
    /// hash holds `key`, read from the disk where not in memory. Entries
    /// that cannot be read are left out (the writer then defers the copy).
    pub(crate) async fn facts_for(&self, key: &Bytes) -> Facts {
        let mut facts = Facts::default();
        for (entry, source) in self.pinned(record::key_hash(key)) {
            let Some(source) = source else { continue };
            let len = match self.identity_now(Some(&source), entry, key) {
                (Identity::Same, len) => Some(len),
                (Identity::Different, _) => None,
                (Identity::Unknown, _) => match self.header_if_key(&source, entry, key).await {
                    Ok(found) => found.map(|h| h.record_len() as u64),
                    Err(_) => continue,
                },
            };
            facts.add(entry.loc, key.clone(), len);
        }
        facts
    }

    /// The entries that may be `key`'s, newest first, each with its file
    /// pinned (taken under the shard's lock, so a file GC or eviction drops
    /// afterwards stays readable).
    fn pinned(&self, hash: u64) -> Pinned {
        let mut pinned = Pinned::default();
        self.index.candidates(hash, |e| {
            let source = self.registry.get(e.loc.file_id);
            match &pinned.first {
                None => pinned.first = Some((e, source)),
                Some(_) => pinned.more.push((e, source)),
            }
        });
        pinned
    }

    /// What `want` asks of the record at `entry`, if it holds `key`.
    async fn read_as(
        &self,
        source: &Source,
        entry: Entry,
        key: &[u8],
        want: &Want,
    ) -> Result<Option<Bytes>> {
        match want {
            Want::Value => {
                let rec = self
                    .record(source, entry, self.config.verify_checksums)
                    .await?;
                Ok((rec.key() == key).then(|| rec.value_bytes()))
            }
            Want::Exists => Ok(self
                .header_if_key(source, entry, key)
                .await?
                .map(|_| Bytes::new())),
            Want::Range(range) => {
                let Some(header) = self.header_if_key(source, entry, key).await? else {
                    return Ok(None);
                };
                let val_len = u64::from(header.val_len);
                let (start, end) = (range.start.min(val_len), range.end.min(val_len));
                let off = entry.loc.offset as usize + HEADER_LEN + key.len() + start as usize;
                let len = (end - start) as usize;
                if len == 0 {
                    return Ok(Some(Bytes::new()));
                }
                let value = match source {
                    Source::Segment(seg) if !source.in_memory(off, len) => {
                        self.read_cold(seg, off, len).await?
                    }
                    _ => {
                        source.bytes(off, len).ok_or_else(|| {
                            self.corruption(
                                source,
                                entry.loc,
                                "record extends beyond the end of the file",
                            )
                        })?;
                        Bytes::from_owner(RecordPart {
                            source: source.clone(),
                            start: off,
                            len,
                        })
                    }
                };
                Ok(Some(value))
            }
        }
    }

    /// What `want` asks of `key`'s record (`None` if the key has no
    /// entry). A key has at most one entry, so a candidate that holds it
    /// is the answer whatever another could not tell; a candidate that
    /// cannot be read, with none holding the key, is an error (it may
    /// have been the key's).
    async fn find(&self, key: &[u8], pinned: Pinned, want: Want) -> Result<Option<Bytes>> {
        let mut first_err = None;
        for (entry, source) in pinned {
            let Some(source) = source else {
                if self.evicted(entry.loc) {
                    continue;
                }
                first_err.get_or_insert_with(|| {
                    Error::corruption(
                        log_path(self.registry.data_dir(), entry.loc.file_id),
                        u64::from(entry.loc.offset),
                        "index points at a file that is not loaded",
                    )
                });
                continue;
            };
            match self.read_as(&source, entry, key, &want).await {
                Ok(Some(found)) => return Ok(Some(found)),
                Ok(None) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(None), Err)
    }

    /// `key`'s value.
    pub(crate) async fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        let pinned = self.pinned(record::key_hash(key));
        // The common cases, without the general path's futures: no entry,
        // or one whose record is in memory.
        if pinned.first.is_none() {
            return Ok(None);
        }
        if let (Some((entry, Some(source))), true) = (&pinned.first, pinned.more.is_empty()) {
            if let Now::Ready(res) = self.record_now(source, *entry, self.config.verify_checksums) {
                let rec = res?;
                let hit = rec.key() == key;
                return Ok(hit.then(|| rec.value_bytes()));
            }
        }
        self.find(key, pinned, Want::Value).await
    }

    /// Whether `key` has a value (reads headers and keys only).
    pub(crate) async fn contains(&self, key: &[u8]) -> Result<bool> {
        let pinned = self.pinned(record::key_hash(key));
        Ok(self.find(key, pinned, Want::Exists).await?.is_some())
    }

    /// Bytes `range` of `key`'s value (clamped to its length), reading only
    /// those and the record's header and key.
    pub(crate) async fn get_range(&self, key: &[u8], range: Range<u64>) -> Result<Option<Bytes>> {
        let pinned = self.pinned(record::key_hash(key));
        self.find(key, pinned, Want::Range(range)).await
    }
}

/// What a lookup reads of the record it finds.
enum Want {
    Value,
    /// Header and key only.
    Exists,
    /// Part of the value (and the header and key).
    Range(Range<u64>),
}

/// The candidates of a lookup with their pinned files: one inline (the
/// common case), the rest in a vector, newest first when iterated.
#[derive(Default)]
struct Pinned {
    first: Option<(Entry, Option<Source>)>,
    more: Vec<(Entry, Option<Source>)>,
}

impl IntoIterator for Pinned {
    type Item = (Entry, Option<Source>);
    type IntoIter =
        std::iter::Chain<std::option::IntoIter<Self::Item>, std::vec::IntoIter<Self::Item>>;

    fn into_iter(self) -> Self::IntoIter {
        if self.more.is_empty() {
            return self.first.into_iter().chain(self.more);
        }
        let mut all = self.more;
        all.extend(self.first);
        all.sort_unstable_by_key(|(e, _)| std::cmp::Reverse(e.loc));
        None.into_iter().chain(all)
    }
}
