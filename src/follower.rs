//! Read-only followers (DESIGN §8): `Db::open_read_only` loads what a
//! writer (in this process or another) has put in the directory, without
//! taking its lock, and `Db::refresh` picks up what it wrote since.
//!
//! A refresh lists the data directory and reads only what is new: a
//! segment it has not seen (its footer), and the bytes an unsealed `.log`
//! file grew by since the last refresh, copied into this follower's own
//! slab for that file and scanned from where the last scan stopped. A log
//! that became a segment is swapped for the segment's mmap (its records
//! are already indexed up to where the log was read). Files the writer
//! removed (GC, cache-mode eviction) are dropped once everything new is
//! indexed: GC writes a file's live records to a newer file before it
//! deletes it, so the follower indexes the copies first.

use crate::error::{Error, Result};
use crate::io::aligned::page_ceil;
use crate::recovery::{apply_entries, check_version, list, open_segment, wal_len, Kind};
use crate::registry::{segment_path, Source};
use crate::segment::{scan_records_from, FooterEntry};
use crate::shared::Shared;
use crate::slab::{decode_file_header, SlabWriter, FILE_HEADER_LEN};
use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Listings a refresh makes at most while files vanish under it.
const MAX_PASSES: usize = 8;

/// What a follower has of each file.
#[derive(Debug)]
enum Loaded {
    /// A segment: complete and immutable.
    Segment,
    /// An unsealed file the writer may still append to, copied up to the
    /// end of its last whole group (every record of the copy is indexed),
    /// and where the copy's last record starts.
    Log(SlabWriter, Option<u32>),
}

/// A follower's view of the directory; `refresh` moves it forward.
#[derive(Debug, Default)]
pub(crate) struct FollowerState {
    loaded: BTreeMap<u32, Loaded>,
}

/// What one refresh found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refreshed {
    pub records: u64,
    pub bytes_read: u64,
    pub files_dropped: u64,
}

fn vanished(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
}

impl FollowerState {
    /// Brings the follower up to what the directory holds now. Blocking.
    pub(crate) fn refresh(&mut self, shared: &Shared) -> Result<Refreshed> {
        let data_dir = shared.registry.data_dir().to_path_buf();
        let mut new: Vec<(u32, Vec<FooterEntry>)> = Vec::new();
        let mut done = Refreshed::default();
        // A file that vanished between the listing and its read was
        // compacted or evicted; what GC copied out of it went to a newer
        // file, maybe one created after the listing: list again.
        let mut passes = 0;
        let listing = loop {
            let pass = list(&data_dir, true).and_then(|listing| {
                let missed = self.load_listed(shared, &listing, &mut new, &mut done)?;
                Ok((listing, missed))
            });
            match pass {
                Ok((listing, missed)) => {
                    passes += 1;
                    if !missed || passes == MAX_PASSES {
                        break Ok(listing);
                    }
                }
                Err(e) => break Err(e),
            }
        };
        // What was loaded is indexed even if a later file failed: loaded
        // files are marked so and not read again. Pass order is file order
        // within each file id; the sort keeps it.
        new.sort_by_key(|(id, _)| *id);
        apply_entries(shared, &new);
        shared
            .counters
            .follower_bytes_read
            .fetch_add(done.bytes_read, Ordering::Relaxed);
        let listing = listing?;
        let gone: Vec<u32> = self
            .loaded
            .keys()
            .copied()
            .filter(|id| !listing.contains_key(id))
            .collect();
        for id in gone {
            self.loaded.remove(&id);
            // Entries still pointing into the file go first (as eviction
            // does), or a later write of their key could not match them
            // and the index would grow with every evicted file.
            if let Some(source) = shared.registry.get(id) {
                for e in source.entries().iter().filter(|e| !e.delete) {
                    let here = crate::index::Location {
                        file_id: id,
                        offset: e.offset,
                    };
                    shared.index.remove_at(e.hash, here);
                }
            }
            shared.registry.remove(id);
            done.files_dropped += 1;
        }
        tracing::debug!(
            records = done.records,
            bytes_read = done.bytes_read,
            files_dropped = done.files_dropped,
            "follower refreshed"
        );
        Ok(done)
    }

    /// Loads what is new in the files of `listing`; returns whether one
    /// of them vanished before it could be read.
    fn load_listed(
        &mut self,
        shared: &Shared,
        listing: &BTreeMap<u32, Vec<(Kind, std::path::PathBuf)>>,
        new: &mut Vec<(u32, Vec<FooterEntry>)>,
        done: &mut Refreshed,
    ) -> Result<bool> {
        let data_dir = shared.registry.data_dir();
        let mut missed = false;
        for (&id, kinds) in listing {
            let Some((kind, path)) = kinds.first() else {
                continue;
            };
            let mut read = match (kind, self.loaded.get_mut(&id)) {
                (_, Some(Loaded::Segment)) => continue,
                (Kind::Segment, _) => self.load_segment(shared, id, path),
                (Kind::Log, Some(Loaded::Log(w, last))) => grow_log(shared, w, last, path),
                (Kind::Log, None) => self.load_log(shared, id, path),
            };
            if matches!((kind, &read), (Kind::Log, Err(e)) if vanished(e)) {
                // Sealed since the listing: the rename is atomic, so the
                // segment is there (unless GC has removed it since too).
                read = self.load_segment(shared, id, &segment_path(data_dir, id));
            }
            match read {
                Ok(Some((entries, bytes))) => {
                    done.records += entries.len() as u64;
                    done.bytes_read += bytes;
                    if !entries.is_empty() {
                        new.push((id, entries));
                    }
                }
                Ok(None) => {}
                // Removed since the listing.
                Err(e) if vanished(&e) => missed = true,
                Err(e) => return Err(e),
            }
        }
        Ok(missed)
    }

    /// A new segment, or one a log it had became: its records past what
    /// the log gave (those are indexed already).
    fn load_segment(
        &mut self,
        shared: &Shared,
        id: u32,
        path: &Path,
    ) -> Result<Option<(Vec<FooterEntry>, u64)>> {
        let (seg, mut entries) = open_segment(path, id, shared.config.verify_checksums)?;
        let indexed_upto = match self.loaded.get(&id) {
            Some(Loaded::Log(w, _)) => {
                let upto = w.appended();
                // What this follower indexed from the log: the records of
                // its copy (a header scan of memory, once per sealed log).
                let indexed = Source::Slab(w.slab().clone()).entries();
                let sealed = entries.iter().take_while(|e| (e.offset as usize) < upto);
                // The writer rolls back a failed WAL write and writes other
                // records at the same offsets; if this follower had read
                // the refused ones, its index no longer matches the file.
                if !sealed.clone().eq(indexed.iter()) {
                    let at = sealed
                        .zip(&indexed)
                        .find(|(a, b)| a != b)
                        .map_or(upto, |(a, _)| a.offset as usize);
                    return Err(rewritten(path, at as u64));
                }
                upto
            }
            _ => 0,
        };
        entries.retain(|e| e.offset as usize >= indexed_upto);
        let bytes = if indexed_upto == 0 {
            seg.len() as u64
        } else {
            0
        };
        shared.registry.insert(id, Source::Segment(Arc::new(seg)));
        self.loaded.insert(id, Loaded::Segment);
        Ok(Some((entries, bytes)))
    }

    /// An unsealed file seen for the first time.
    fn load_log(
        &mut self,
        shared: &Shared,
        id: u32,
        path: &Path,
    ) -> Result<Option<(Vec<FooterEntry>, u64)>> {
        let file = std::fs::File::open(path).map_err(|e| Error::io("open WAL", path, e))?;
        let mut head = vec![0u8; FILE_HEADER_LEN];
        let n = read_upto(&file, &mut head, 0).map_err(|e| Error::io("read WAL", path, e))?;
        if n < FILE_HEADER_LEN {
            // Being created: its header page is not written yet.
            return Ok(None);
        }
        check_version(path, &head)?;
        if decode_file_header(&head) != Some(id) {
            if head.iter().all(|&b| b == 0) {
                // Being created: its header page is not written yet.
                return Ok(None);
            }
            tracing::warn!(path = %path.display(), "WAL file header damaged; reading its records by their own checks");
        }
        let len = wal_len(&file, path)?;
        let mut w = SlabWriter::new(id, page_ceil(len.max(1 << 20)));
        let found = stage(&mut w, &file, path, len)?;
        shared.registry.insert(id, Source::Slab(w.slab().clone()));
        let last = found.0.last().map(|e| e.offset);
        self.loaded.insert(id, Loaded::Log(w, last));
        Ok(Some(found))
    }
}

/// The bytes a log gained since the last refresh.
fn grow_log(
    shared: &Shared,
    w: &mut SlabWriter,
    last: &mut Option<u32>,
    path: &Path,
) -> Result<Option<(Vec<FooterEntry>, u64)>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io("open WAL", path, e))?;
    check_not_rewritten(w, *last, &file, path)?;
    let len = wal_len(&file, path)?;
    if len <= w.appended() {
        return Ok(None);
    }
    if len > w.slab().capacity() {
        // Reallocated rarely (capacity doubles); readers holding the old
        // slab keep it, later ones get the copy.
        let mut bigger = SlabWriter::new(
            w.slab().file_id(),
            page_ceil(len.max(2 * w.slab().capacity())),
        );
        let old = w
            .slab()
            .bytes(FILE_HEADER_LEN, w.appended() - FILE_HEADER_LEN)
            .unwrap_or_default();
        let staged_end = FILE_HEADER_LEN + old.len();
        if bigger.stage_raw(old).is_none() {
            return Err(Error::corruption(path, 0, "follower slab too small"));
        }
        bigger.commit_staged(staged_end, staged_end);
        *w = bigger;
        shared
            .registry
            .insert(w.slab().file_id(), Source::Slab(w.slab().clone()));
    }
    let found = stage(w, &file, path, len)?;
    if let Some(e) = found.0.last() {
        *last = Some(e.offset);
    }
    Ok(Some(found))
}

/// A log this follower read was rewritten from `at` on.
fn rewritten(path: &Path, at: u64) -> Error {
    Error::corruption(
        path,
        at,
        "the writer rewrote records this follower had read (a failed WAL write was rolled back); reopen the follower",
    )
}

/// The writer rolls back a failed WAL write and writes other records at
/// its offsets; a follower that read the failed records before would
/// index them for good and read the next ones from the middle of a record
/// (never finding them). So each refresh compares the head of the last
/// record it read (its CRC and header) with the file: if the writer wrote
/// over it, the follower says so. Rewritten records further back are seen
/// once the writer's appends pass the copy's end, or at the seal.
fn check_not_rewritten(
    w: &SlabWriter,
    last: Option<u32>,
    file: &std::fs::File,
    path: &Path,
) -> Result<()> {
    let Some(off) = last.map(|o| o as usize) else {
        return Ok(());
    };
    let Some(ours) = w.slab().bytes(off, crate::record::HEADER_LEN) else {
        return Ok(());
    };
    let mut now = [0u8; crate::record::HEADER_LEN];
    let n = read_upto(file, &mut now, off as u64).map_err(|e| Error::io("read WAL", path, e))?;
    if now[..n] != *ours {
        return Err(rewritten(path, off as u64));
    }
    Ok(())
}

/// Reads the file from the follower's copy's end up to `len` into its
/// slab, scans it, and publishes the whole groups found.
fn stage(
    w: &mut SlabWriter,
    file: &std::fs::File,
    path: &Path,
    len: usize,
) -> Result<(Vec<FooterEntry>, u64)> {
    let from = w.appended();
    let mut fresh = vec![0u8; len.saturating_sub(from)];
    let n = read_upto(file, &mut fresh, from as u64).map_err(|e| Error::io("read WAL", path, e))?;
    fresh.truncate(n);
    let image = w
        .stage_raw(&fresh)
        .ok_or_else(|| Error::corruption(path, from as u64, "WAL grew past the follower's slab"))?;
    // WAL records are always CRC-checked: a record the writer is still
    // writing fails its CRC and waits for the next refresh.
    let scan = scan_records_from(image, from, true);
    w.commit_staged(scan.valid_end, from + n);
    Ok((scan.entries, n as u64))
}

/// Reads up to `buf.len()` bytes at `offset`; fewer at the end of the file.
fn read_upto(file: &std::fs::File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{FLAG_BEGIN, FLAG_END, FLAG_PUT};
    use crate::registry::log_path;
    use crate::segment::{encode_footer, scan_records};
    use crate::Db;

    /// A slab image holding `pairs` as one-record groups.
    fn log_image(id: u32, pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut w = SlabWriter::new(id, 1 << 20);
        for (k, v) in pairs {
            w.append(FLAG_PUT | FLAG_BEGIN | FLAG_END, k.as_bytes(), v.as_bytes())
                .unwrap();
        }
        w.publish();
        w.slab().bytes(0, w.appended()).unwrap().to_vec()
    }

    /// The image sealed as the flush worker does: footer and trailer after
    /// the last page of records.
    fn sealed(image: &[u8]) -> Vec<u8> {
        let entries = scan_records(image, true).entries;
        let (footer_at, footer) = encode_footer(&entries, image.len());
        let mut file = image.to_vec();
        file.resize(footer_at, 0);
        file.extend_from_slice(&footer);
        file
    }

    async fn value(db: &Db, key: &str) -> Option<String> {
        db.get(key.as_bytes())
            .await
            .unwrap()
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
    }

    /// The file a follower read becomes a segment: followed when the
    /// segment holds what the follower read; an error, not a silently wrong
    /// index, when the writer had rolled those records back.
    #[test]
    fn a_log_sealed_as_read_is_followed_a_rewritten_one_is_reported() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            for rewritten in [false, true] {
                let dir = tempfile::tempdir().unwrap();
                let data = dir.path().join("data");
                std::fs::create_dir_all(&data).unwrap();
                let read = [("a", "1"), ("refused", "x")];
                std::fs::write(log_path(&data, 1), log_image(1, &read)).unwrap();
                let follower = Db::open_read_only(dir.path()).await.unwrap();
                assert_eq!(value(&follower, "refused").await.as_deref(), Some("x"));

                let later: &[(&str, &str)] = if rewritten {
                    // "refused" rolled back; "b" written at its offset.
                    &[("a", "1"), ("b", "2")]
                } else {
                    &[("a", "1"), ("refused", "x"), ("b", "2")]
                };
                let segment = sealed(&log_image(1, later));
                std::fs::write(segment_path(&data, 1), segment).unwrap();
                std::fs::remove_file(log_path(&data, 1)).unwrap();
                let res = follower.refresh().await;
                if rewritten {
                    assert!(matches!(res, Err(Error::Corruption { .. })), "{res:?}");
                    let fresh = Db::open_read_only(dir.path()).await.unwrap();
                    assert_eq!(value(&fresh, "b").await.as_deref(), Some("2"));
                    assert_eq!(value(&fresh, "refused").await, None);
                } else {
                    res.unwrap();
                    assert_eq!(value(&follower, "b").await.as_deref(), Some("2"));
                    assert_eq!(value(&follower, "refused").await.as_deref(), Some("x"));
                    assert_eq!(follower.stats().slabs_in_memory, 0);
                }
            }
        });
    }

    /// A file that fails to load (here: another format version) fails the
    /// refresh, but what the refresh loaded before it is indexed, not
    /// marked loaded and lost.
    #[test]
    fn a_failing_file_does_not_lose_what_the_refresh_loaded() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let data = dir.path().join("data");
            std::fs::create_dir_all(&data).unwrap();
            std::fs::write(log_path(&data, 1), log_image(1, &[("a", "1")])).unwrap();
            let follower = Db::open_read_only(dir.path()).await.unwrap();
            std::fs::write(log_path(&data, 3), log_image(3, &[("c", "3")])).unwrap();
            let mut bad = log_image(4, &[("d", "4")]);
            bad[8..12].copy_from_slice(&99u32.to_le_bytes());
            // An intact header of another version (damage would be read
            // past, by the records' own checks).
            let crc = crc32fast::hash(&bad[..16]);
            bad[16..20].copy_from_slice(&crc.to_le_bytes());
            std::fs::write(log_path(&data, 4), bad).unwrap();
            for _ in 0..2 {
                let res = follower.refresh().await;
                assert!(matches!(res, Err(Error::Corruption { .. })), "{res:?}");
                assert_eq!(value(&follower, "c").await.as_deref(), Some("3"));
                assert_eq!(value(&follower, "a").await.as_deref(), Some("1"));
            }
            std::fs::remove_file(log_path(&data, 4)).unwrap();
            follower.refresh().await.unwrap();
            assert_eq!(follower.stats().keys, 2);
        });
    }
}
