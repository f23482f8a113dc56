//! Opening a directory: segments by their footers only, unsealed `.log` files
//! by a record-by-record scan with CRCs (the torn tail is cut and counted),
//! then the index is rebuilt by applying every file's records in file order.

use crate::error::{Error, Result};
use crate::index::{Entry, Location};
use crate::io::aligned::{page_ceil, AlignedBuf};
use crate::registry::Source;
use crate::segment::{scan_records, FooterEntry, Segment, SegmentIndex};
use crate::shared::Shared;
use crate::slab::{
    decode_file_header, decode_predecessor, file_format_version, Predecessor, Slab,
    FILE_HEADER_LEN, FORMAT_VERSION,
};
use crate::sync::Ordering;
use crate::writer::WriterInit;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
pub(crate) enum Kind {
    Segment,
    Log,
}

/// Parses `<digits>.silt` / `<digits>.log`.
fn parse_name(name: &str) -> Option<(u32, Kind)> {
    let (stem, kind) = if let Some(s) = name.strip_suffix(".silt") {
        (s, Kind::Segment)
    } else {
        (name.strip_suffix(".log")?, Kind::Log)
    };
    if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, kind))
}

/// Lists the data directory: file id → kinds present, each id's kinds
/// sorted (a segment before the unsealed file it came from). Unknown files
/// are reported and left alone; unpublished XL value files are removed
/// unless `read_only`.
pub(crate) fn list(
    data_dir: &Path,
    read_only: bool,
) -> Result<BTreeMap<u32, Vec<(Kind, PathBuf)>>> {
    let mut files: BTreeMap<u32, Vec<(Kind, PathBuf)>> = BTreeMap::new();
    let rd =
        std::fs::read_dir(data_dir).map_err(|e| Error::io("list data directory", data_dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("list data directory", data_dir, e))?;
        let path = entry.path();
        let name = entry.file_name();
        match name.to_str().and_then(parse_name) {
            Some((id, kind)) => files.entry(id).or_default().push((kind, path)),
            // The file-id floor, and one a crash left half written.
            None if name.to_str().is_some_and(crate::id_floor::is_its_file) => {}
            // An XL value file that was never published: its put was never
            // acknowledged.
            None if read_only => {}
            None if path.extension().is_some_and(|e| e == "tmp") => {
                tracing::warn!(path = %path.display(), "removing an unpublished XL value file");
                std::fs::remove_file(&path)
                    .map_err(|e| Error::io("remove unpublished XL value file", &path, e))?;
            }
            None => {
                tracing::warn!(path = %path.display(), "ignoring unknown file in the data directory")
            }
        }
    }
    files.values_mut().for_each(|kinds| kinds.sort());
    Ok(files)
}

/// Reads an unsealed file into a page-aligned buffer of at least `slab_size`.
fn read_log(path: &Path, slab_size: usize) -> Result<AlignedBuf> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io("open WAL", path, e))?;
    let len = wal_len(&f, path)?;
    let mut buf = AlignedBuf::zeroed(page_ceil(len).max(slab_size));
    f.read_exact(&mut buf.as_mut_slice()[..len])
        .map_err(|e| Error::io("read WAL", path, e))?;
    Ok(buf)
}

/// The length of an open WAL file, which must fit in memory.
pub(crate) fn wal_len(file: &std::fs::File, path: &Path) -> Result<usize> {
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat WAL", path, e))?
        .len();
    usize::try_from(len).map_err(|_| Error::corruption(path, 0, "WAL file larger than memory"))
}

/// Refuses a file another format version of silt wrote (its records would
/// be misread), rather than skipping it as damaged.
pub(crate) fn check_version(path: &Path, head: &[u8]) -> Result<()> {
    match file_format_version(head) {
        Some(v) if v != FORMAT_VERSION => Err(Error::corruption(
            path,
            8,
            format!("written by an incompatible silt (format version {v}; this build reads {FORMAT_VERSION})"),
        )),
        _ => Ok(()),
    }
}

/// Loads every file into the registry, rebuilds the index and returns what
/// the writer needs to continue.
pub(crate) fn recover(shared: &Shared) -> Result<WriterInit> {
    let _span = tracing::info_span!("recovery").entered();
    let data_dir = shared.registry.data_dir().to_path_buf();
    let verify = shared.config.verify_checksums;
    // Ids handed out before, whose files GC may have removed since.
    let floor = shared.id_floor.load(&data_dir);
    let mut max_id = floor.saturating_sub(1);
    let mut torn = 0u64;
    let mut recovered = Vec::new();
    let mut per_file: Vec<(u32, Vec<FooterEntry>)> = Vec::new();

    let mut links: Vec<Link> = Vec::new();
    let mut empties: Vec<(u32, PathBuf)> = Vec::new();
    let started = std::time::Instant::now();
    for (id, mut kinds) in list(&data_dir, false)? {
        max_id = max_id.max(id);
        let (kind, path) = kinds.remove(0);
        for (_, extra) in &kinds {
            tracing::warn!(path = %extra.display(), "a segment with this id exists; ignoring the unsealed file");
        }
        match kind {
            Kind::Segment => {
                let (seg, entries) = open_segment(&path, id, verify)?;
                links.push(Link {
                    id,
                    path: path.clone(),
                    log: false,
                    end: records_end(&entries),
                    predecessor: seg.bytes(0, FILE_HEADER_LEN).and_then(decode_predecessor),
                    // A segment is complete: what it followed no longer
                    // matters once it was published.
                    header_lost: false,
                });
                shared.registry.insert(id, Source::Segment(Arc::new(seg)));
                per_file.push((id, entries));
            }
            Kind::Log => {
                let mut buf = read_log(&path, shared.config.slab_size)?;
                check_version(&path, buf.as_slice())?;
                let header_lost = decode_file_header(buf.as_slice()) != Some(id);
                if header_lost {
                    let nonzero = buf.as_slice().iter().any(|&b| b != 0);
                    if nonzero {
                        // Its records carry their own CRCs: read them as
                        // usual (a header page lost in a power cut with
                        // later pages kept, or damage).
                        tracing::warn!(path = %path.display(), "WAL file header damaged; reading its records by their own checks");
                    } else {
                        // It lost everything, so what follows it cannot stay.
                        links.push(Link {
                            id,
                            path: path.clone(),
                            log: true,
                            end: 0,
                            predecessor: None,
                            // Removed as empty; its end of 0 already cuts
                            // whatever names it.
                            header_lost: false,
                        });
                        empties.push((id, path));
                        continue;
                    }
                }
                // WAL records are always CRC-checked: this is where torn
                // writes show up.
                let scan = scan_records(buf.as_slice(), true);
                if scan.torn_bytes > 0 {
                    tracing::warn!(path = %path.display(), valid_end = scan.valid_end,
                        torn_bytes = scan.torn_bytes, "cut a torn tail off the WAL");
                }
                torn += scan.torn_bytes;
                links.push(Link {
                    id,
                    path: path.clone(),
                    log: true,
                    end: scan.valid_end as u64,
                    predecessor: decode_predecessor(buf.as_slice()),
                    header_lost,
                });
                if scan.entries.is_empty() {
                    empties.push((id, path));
                    continue;
                }
                buf.as_mut_slice()[scan.valid_end..].fill(0);
                let slab = Arc::new(Slab::recovered(id, buf, scan.valid_end));
                shared.registry.insert(id, Source::Slab(slab.clone()));
                recovered.push((slab, scan.valid_end));
                per_file.push((id, scan.entries));
            }
        }
    }

    let cut = cut_after_lost_records(&links);
    set_aside(
        shared,
        &links,
        &cut,
        &mut per_file,
        &mut recovered,
        &mut torn,
    )?;
    // After the set-aside files: an emptied predecessor must outlive them.
    let listed_max = max_id;
    for (id, path) in &empties {
        shared
            .id_floor
            .cover(&*shared.vfs, &data_dir, *id, listed_max.saturating_add(1))?;
        remove_empty(shared, path)?;
    }
    let last_file = links
        .iter()
        .rev()
        .find(|l| !cut.contains(&l.id) && l.end > FILE_HEADER_LEN as u64)
        .map(|l| Predecessor {
            file_id: l.id,
            end: l.end,
        });

    let loaded = started.elapsed();
    let (records, superseded) = apply_entries(shared, &per_file);
    account_space(shared, &per_file, &superseded);
    crate::gc::evict_over_capacity(shared)?;
    tracing::info!(
        files_ms = loaded.as_secs_f64() * 1e3,
        index_ms = (started.elapsed() - loaded).as_secs_f64() * 1e3,
        records,
        "recovered"
    );
    shared
        .counters
        .recovered_torn_bytes
        .store(torn, Ordering::Relaxed);
    shared
        .counters
        .recovered_records
        .store(records, Ordering::Relaxed);
    shared
        .counters
        .recovered_dropped_files
        .store(cut.len() as u64, Ordering::Relaxed);
    // Ids only grow, past the files set aside too (a later set-aside file
    // must not replace one of theirs in `dropped/`).
    let dropped = std::fs::read_dir(data_dir.with_file_name("dropped"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(parse_name))
        .map(|(id, _)| id);
    max_id = dropped.fold(max_id, u32::max);
    // A file named with the largest id leaves none for new files (ids
    // must grow): refused by name rather than wrapped around to 0.
    let next_file_id = max_id.checked_add(1).ok_or_else(|| {
        Error::corruption(
            data_dir.join(format!("{max_id:08}.*")),
            0,
            "a data file's id is the largest there is, so new files would have none; move it out of data/",
        )
    })?;
    Ok(WriterInit {
        next_file_id,
        recovered,
        last_file,
    })
}

/// One data file, as far as write order goes.
#[derive(Debug)]
pub(crate) struct Link {
    pub id: u32,
    pub path: PathBuf,
    /// An unsealed log; a segment is complete (it was fsynced before it was
    /// published).
    pub log: bool,
    /// The end of its intact records.
    pub end: u64,
    pub predecessor: Option<Predecessor>,
    /// An unsealed log whose header page is gone (lost in a power cut while
    /// later pages were kept, or damaged), so which file it followed, and
    /// how far, is unknown.
    pub header_lost: bool,
}

/// The files (ids, ascending) that cannot be kept: each names a predecessor
/// that is an unsealed log which lost records below the end the file
/// recorded for it, or that is itself cut. A log acknowledged before it was
/// durable (`Buffered`, `None`) can lose its tail in a power cut while a
/// later file keeps its own; keeping the later one would recover a state
/// that no prefix of the history had. A predecessor that is gone entirely
/// was compacted, evicted or empty, so it breaks nothing. A log whose
/// header is lost cannot say what it followed: if any earlier file is an
/// unsealed log (which may have lost records no one can measure), it is cut
/// too, set aside and counted rather than trusted.
pub(crate) fn cut_after_lost_records(links: &[Link]) -> Vec<u32> {
    let mut cut = Vec::new();
    for (i, link) in links.iter().enumerate() {
        if link.log && link.header_lost && links[..i].iter().any(|l| l.log) {
            cut.push(link.id);
            continue;
        }
        let Some(p) = link.predecessor else { continue };
        let short = links
            .binary_search_by_key(&p.file_id, |l| l.id)
            .ok()
            .map(|i| &links[i])
            .is_some_and(|q| q.log && q.end < p.end);
        if short || cut.contains(&p.file_id) {
            cut.push(link.id);
        }
    }
    cut
}

/// Moves the cut files out of the data directory, newest first (so that if
/// a crash interrupts this, every cut file left still follows one that is
/// short or cut), into `<dir>/dropped/`: they are kept for inspection, not
/// deleted, in case what cut them was damage rather than a power cut.
fn set_aside(
    shared: &Shared,
    links: &[Link],
    cut: &[u32],
    per_file: &mut Vec<(u32, Vec<FooterEntry>)>,
    recovered: &mut Vec<(Arc<Slab>, usize)>,
    torn: &mut u64,
) -> Result<()> {
    if cut.is_empty() {
        return Ok(());
    }
    let data_dir = shared.registry.data_dir();
    let dropped = data_dir.with_file_name("dropped");
    std::fs::create_dir_all(&dropped).map_err(|e| Error::io("create dropped/", &dropped, e))?;
    for &id in cut.iter().rev() {
        let (Ok(i), Ok(j)) = (
            links.binary_search_by_key(&id, |l| l.id),
            per_file.binary_search_by_key(&id, |(f, _)| *f),
        ) else {
            continue;
        };
        let path = &links[i].path;
        let name = path.file_name().unwrap_or_default();
        tracing::warn!(path = %path.display(), to = %dropped.display(),
            "a file written before this one lost records it needs (a power cut, or damage); setting it aside");
        *torn += links[i].end.saturating_sub(FILE_HEADER_LEN as u64);
        shared
            .vfs
            .rename(path, &dropped.join(name))
            .map_err(|e| Error::io("set aside a data file", path, e))?;
        shared
            .vfs
            .sync_dir(data_dir)
            .map_err(|e| Error::io("fsync data directory", data_dir, e))?;
        shared.registry.remove(id);
        per_file.remove(j);
        recovered.retain(|(slab, _)| slab.file_id() != id);
    }
    Ok(())
}

/// Where a file's records end: after its last entry.
pub(crate) fn records_end(entries: &[FooterEntry]) -> u64 {
    entries
        .iter()
        .map(|e| u64::from(e.offset) + u64::from(e.len))
        .max()
        .unwrap_or(FILE_HEADER_LEN as u64)
}

/// A segment and its records: from the footer, or by a scan if the footer
/// is damaged.
pub(crate) fn open_segment(
    path: &Path,
    id: u32,
    verify: bool,
) -> Result<(Segment, Vec<FooterEntry>)> {
    let (seg, found) = Segment::open(path, id, verify)?;
    check_version(path, seg.bytes(0, 20).unwrap_or_default())?;
    let entries = match found {
        SegmentIndex::Footer(f) => f.entries,
        SegmentIndex::Scanned(scan, why) => {
            tracing::warn!(path = %path.display(), reason = %why,
                records = scan.entries.len(), "segment footer unusable; recovered its records by scanning");
            scan.entries
        }
    };
    Ok((seg, entries))
}

/// Applies files' records (oldest file first) to the index; returns how
/// many were applied and the locations they superseded. Records are
/// partitioned by shard first (keeping file order within each shard, which
/// is all that "newest wins" needs), then each shard is sized once and
/// filled while its table is cache-resident, with the shards split over up
/// to 4 threads. Recovery runs it once; a follower's refresh, on what is new.
pub(crate) fn apply_entries(
    shared: &Shared,
    per_file: &[(u32, Vec<FooterEntry>)],
) -> (u64, Vec<Location>) {
    let index = &shared.index;
    let shards = index.shard_count();
    let mut by_shard: Vec<Vec<(u64, Entry, bool)>> = vec![Vec::new(); shards];
    let mut records = 0u64;
    for (file_id, entries) in per_file {
        records += entries.len() as u64;
        for e in entries {
            let loc = Location {
                file_id: *file_id,
                offset: e.offset,
            };
            let entry = Entry::put(loc, u64::from(e.len));
            by_shard[index.shard_of(e.hash)].push((e.hash, entry, e.delete));
        }
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4);
    let by_shard = &by_shard;
    let reg = &shared.registry;
    // Keys are read only when an entry with the same hash bits exists (an
    // overwrite or a collision), so unique keys never touch value pages.
    let same = |old: Location, new: Location| reg.same_key_blocking(old, new);
    let superseded: Vec<Location> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t..shards)
                        .step_by(threads)
                        .flat_map(|i| index.load_shard(i, &by_shard[i], same))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    (records, superseded)
}

/// Sets each file's record and live bytes: every record counts as written,
/// every put as live unless a later record of its key superseded it.
fn account_space(shared: &Shared, per_file: &[(u32, Vec<FooterEntry>)], superseded: &[Location]) {
    let mut dead: std::collections::HashMap<u32, u64> = std::collections::HashMap::new();
    for loc in superseded {
        let Ok(i) = per_file.binary_search_by_key(&loc.file_id, |(id, _)| *id) else {
            continue;
        };
        let entries = &per_file[i].1;
        // Footer and scan entries are in offset order.
        if let Ok(j) = entries.binary_search_by_key(&loc.offset, |e| e.offset) {
            *dead.entry(loc.file_id).or_default() += u64::from(entries[j].len);
        }
    }
    for (id, entries) in per_file {
        let written: u64 = entries.iter().map(|e| u64::from(e.len)).sum();
        let puts: u64 = entries
            .iter()
            .filter(|e| !e.delete)
            .map(|e| u64::from(e.len))
            .sum();
        let live = puts.saturating_sub(dead.get(id).copied().unwrap_or(0));
        shared.space.set(*id, written, live);
    }
}

fn remove_empty(shared: &Shared, path: &Path) -> Result<()> {
    shared
        .vfs
        .remove_file(path)
        .map_err(|e| Error::io("remove empty WAL", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(id: u32, log: bool, end: u64, predecessor: Option<(u32, u64)>) -> Link {
        Link {
            id,
            path: PathBuf::from(format!("{id}")),
            log,
            end,
            predecessor: predecessor.map(|(file_id, end)| Predecessor { file_id, end }),
            header_lost: false,
        }
    }

    #[test]
    fn a_log_that_lost_its_header_after_another_log_is_cut_with_what_follows() {
        let lost = |id: u32, end: u64| Link {
            header_lost: true,
            ..link(id, true, end, None)
        };
        // 2 may have followed 1 past 1's end: nothing can tell, so 2 and
        // 3 (which names 2) go; 1 stays.
        let links = [
            link(1, true, 5000, None),
            lost(2, 9000),
            link(3, true, 9000, Some((2, 9000))),
        ];
        assert_eq!(cut_after_lost_records(&links), vec![2, 3]);
        // After segments only, nothing earlier can have lost records.
        let links = [
            link(1, false, 5000, None),
            lost(2, 9000),
            link(3, true, 9000, Some((2, 9000))),
        ];
        assert!(cut_after_lost_records(&links).is_empty());
    }

    #[test]
    fn a_short_unsealed_predecessor_cuts_every_later_file_that_follows_it() {
        let links = [
            link(1, false, 9000, None),
            link(2, true, 5000, Some((1, 9000))),
            // 2 ended at 8000 when 3 began: 3000 bytes of it were lost.
            link(3, true, 7000, Some((2, 8000))),
            link(4, false, 6000, Some((3, 7000))),
            // Names 2 (the file between was empty and removed), which
            // reaches the 5000 recorded: kept.
            link(5, true, 4096, Some((2, 5000))),
        ];
        assert_eq!(cut_after_lost_records(&links), vec![3, 4]);
    }

    #[test]
    fn segments_and_missing_predecessors_break_nothing() {
        let links = [
            // A segment is complete whatever end was recorded.
            link(3, false, 100, None),
            link(4, true, 9000, Some((3, 8000))),
            // 5 was compacted away or evicted.
            link(6, true, 9000, Some((5, 8000))),
            // Written before predecessors were recorded, or damaged field.
            link(7, true, 9000, None),
        ];
        assert!(cut_after_lost_records(&links).is_empty());
    }

    #[test]
    fn a_log_that_lost_everything_cuts_what_follows() {
        let links = [link(1, true, 0, None), link(2, true, 9000, Some((1, 5000)))];
        assert_eq!(cut_after_lost_records(&links), vec![2]);
    }

    #[test]
    fn names() {
        assert_eq!(parse_name("00000012.silt"), Some((12, Kind::Segment)));
        assert_eq!(parse_name("7.log"), Some((7, Kind::Log)));
        assert_eq!(parse_name("x.log"), None);
        assert_eq!(parse_name(".silt"), None);
        assert_eq!(parse_name("99999999999.silt"), None);
        assert_eq!(parse_name("notes.txt"), None);
    }
}
