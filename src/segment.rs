//! Segment files: the slab's bytes, then a footer (one entry per record) and a
//! fixed trailer. Opening a segment reads the trailer and footer only, so
//! reopen time does not depend on value bytes. See `docs/format.md`.

use crate::error::{Error, Result};
use crate::io::aligned::page_ceil;
use crate::io::read::ReadFile;
use crate::record::{self, DecodeError, FLAG_BEGIN, FLAG_END};
use crate::resident::Residency;
use crate::slab::{decode_file_header, FILE_HEADER_LEN};
use memmap2::Mmap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes of one footer entry: key hash and record offset. A record's length
/// is the distance to the next one (records are contiguous), or to
/// `data_end` for the last.
pub(crate) const FOOTER_ENTRY_LEN: usize = 12;
/// In a footer entry's offset field: the record is a delete. Offsets are
/// below 1 GiB (the largest slab), so the top bit is free.
const OFFSET_DELETE_BIT: u32 = 1 << 31;
/// Bytes of the trailer, which ends the file.
pub(crate) const TRAILER_LEN: usize = 40;
/// Version 2: 12-byte footer entries. A version-1 segment (16-byte entries)
/// fails the magic check and is recovered by a record scan.
const TRAILER_MAGIC: &[u8; 8] = b"SILTEND2";

/// One record as the footer (or a scan) describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FooterEntry {
    pub hash: u64,
    pub offset: u32,
    pub len: u32,
    pub delete: bool,
}

/// What a record-by-record scan found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Committed records, in file order.
    pub entries: Vec<FooterEntry>,
    /// End of the last committed record.
    pub valid_end: usize,
    /// Non-zero bytes after `valid_end` that were cut (torn or damaged tail).
    pub torn_bytes: u64,
    /// Why the scan stopped before the end of the data, if it did.
    pub stopped_by: Option<DecodeError>,
}

/// Scans the records of a data file image from the end of its header.
/// Records of an atomic group (BEGIN … END) count only if the END record is
/// intact. `verify` checks CRCs.
pub fn scan_records(data: &[u8], verify: bool) -> Scan {
    scan_records_from(data, FILE_HEADER_LEN, verify)
}

/// As [`scan_records`], from `start`, which must be the end of a committed
/// group (a follower continuing where its last refresh stopped).
pub fn scan_records_from(data: &[u8], start: usize, verify: bool) -> Scan {
    let mut scan = Scan {
        valid_end: start.min(data.len()),
        ..Scan::default()
    };
    let mut pos = start;
    let mut group: Vec<FooterEntry> = Vec::new();
    while pos < data.len() {
        let rest = &data[pos..];
        let decoded = if verify {
            record::decode(rest)
        } else {
            record::decode_header(rest)
        };
        let h = match decoded {
            Ok(h) => h,
            Err(e) => {
                if e != DecodeError::End {
                    scan.stopped_by = Some(e);
                }
                break;
            }
        };
        let (Ok(offset), Ok(len)) = (u32::try_from(pos), u32::try_from(h.record_len())) else {
            scan.stopped_by = Some(DecodeError::BadHeader);
            break;
        };
        // A BEGIN inside an open group means the earlier group was torn
        // (cannot happen in files silt wrote); drop the open group.
        if h.flags & FLAG_BEGIN != 0 {
            group.clear();
        } else if group.is_empty() {
            scan.stopped_by = Some(DecodeError::BadHeader);
            break;
        }
        let key = record::key_of(&h, rest);
        group.push(FooterEntry {
            hash: record::key_hash(key),
            offset,
            len,
            delete: h.is_delete(),
        });
        pos += h.record_len();
        if h.flags & FLAG_END != 0 {
            scan.entries.append(&mut group);
            scan.valid_end = pos;
        }
    }
    if let Some(last_nonzero) = data.iter().rposition(|&b| b != 0) {
        if last_nonzero >= scan.valid_end {
            scan.torn_bytes = (last_nonzero + 1 - scan.valid_end) as u64;
        }
    }
    scan
}

/// Lays out footer and trailer for records ending at `data_end`. Returns the
/// offset where the footer starts and the bytes from there to the end of the
/// file (page-padded, trailer last).
pub fn encode_footer(entries: &[FooterEntry], data_end: usize) -> (usize, Vec<u8>) {
    let footer_off = page_ceil(data_end);
    let body = entries.len() * FOOTER_ENTRY_LEN;
    let total = page_ceil(body + TRAILER_LEN);
    let mut out = vec![0u8; total];
    for (i, e) in entries.iter().enumerate() {
        let o = &mut out[i * FOOTER_ENTRY_LEN..(i + 1) * FOOTER_ENTRY_LEN];
        o[0..8].copy_from_slice(&e.hash.to_le_bytes());
        let off = e.offset | if e.delete { OFFSET_DELETE_BIT } else { 0 };
        o[8..12].copy_from_slice(&off.to_le_bytes());
    }
    let t = total - TRAILER_LEN;
    out[t..t + 8].copy_from_slice(&(footer_off as u64).to_le_bytes());
    out[t + 8..t + 12].copy_from_slice(&(entries.len() as u32).to_le_bytes());
    out[t + 12..t + 20].copy_from_slice(&(data_end as u64).to_le_bytes());
    // Bytes 20..28 are reserved (zero); version 1 kept a sequence number.
    let mut h = crc32fast::Hasher::new();
    h.update(&out[..body]);
    h.update(&out[t..t + 28]);
    let crc = h.finalize();
    out[t + 28..t + 32].copy_from_slice(&crc.to_le_bytes());
    out[t + 32..t + 40].copy_from_slice(TRAILER_MAGIC);
    (footer_off, out)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

/// The parsed footer of a whole segment image.
#[derive(Debug)]
pub struct Footer {
    pub entries: Vec<FooterEntry>,
    pub data_end: usize,
}

/// Parses trailer and footer; `Err` says what is wrong. Every length is
/// checked against the file before anything is allocated or read.
pub(crate) fn decode_footer(file: &[u8]) -> std::result::Result<Footer, String> {
    if file.len() < FILE_HEADER_LEN + TRAILER_LEN {
        return Err(format!(
            "file too short for a trailer ({} bytes)",
            file.len()
        ));
    }
    let t = &file[file.len() - TRAILER_LEN..];
    if &t[32..40] != TRAILER_MAGIC {
        return Err("no trailer magic".into());
    }
    let footer_off = le_u64(&t[0..8]);
    let count = le_u32(&t[8..12]) as u64;
    let data_end = le_u64(&t[12..20]);
    let crc = le_u32(&t[28..32]);
    let trailer_start = (file.len() - TRAILER_LEN) as u64;
    let footer_end = footer_off.checked_add(count * FOOTER_ENTRY_LEN as u64);
    if data_end < FILE_HEADER_LEN as u64
        || data_end > footer_off
        || footer_end.is_none_or(|end| end > trailer_start)
    {
        return Err("trailer offsets out of range".into());
    }
    let footer =
        &file[footer_off as usize..(footer_off + count * FOOTER_ENTRY_LEN as u64) as usize];
    let mut h = crc32fast::Hasher::new();
    h.update(footer);
    h.update(&t[..28]);
    if h.finalize() != crc {
        return Err("footer CRC mismatch".into());
    }
    let mut entries: Vec<FooterEntry> = Vec::with_capacity(count as usize);
    let mut next_start = FILE_HEADER_LEN as u64;
    for o in footer.chunks_exact(FOOTER_ENTRY_LEN) {
        let off = le_u32(&o[8..12]);
        let offset = off & !OFFSET_DELETE_BIT;
        // Records are contiguous: a record ends where the next one starts
        // (or at `data_end`), which gives its length.
        if (offset as u64) < next_start || offset as u64 >= data_end {
            return Err(format!(
                "footer entry at {offset} is out of order or outside the data"
            ));
        }
        if let Some(prev) = entries.last_mut() {
            prev.len = offset - prev.offset;
        }
        next_start = offset as u64 + 1;
        entries.push(FooterEntry {
            hash: le_u64(&o[0..8]),
            offset,
            len: 0,
            delete: off & OFFSET_DELETE_BIT != 0,
        });
    }
    if let Some(last) = entries.last_mut() {
        last.len = u32::try_from(data_end - last.offset as u64)
            .map_err(|_| "last record longer than 4 GiB".to_string())?;
    }
    if entries
        .iter()
        .any(|e| (e.len as usize) <= record::HEADER_LEN)
    {
        return Err("footer entry shorter than a record".into());
    }
    Ok(Footer {
        entries,
        data_end: data_end as usize,
    })
}

/// A published, immutable segment file: read through a read-only mmap
/// where its pages are in memory, through the I/O threads where not.
pub struct Segment {
    file_id: u32,
    path: PathBuf,
    map: Mmap,
    /// End of the records (from the trailer; the file's length if unknown).
    data_end: usize,
    file: Arc<ReadFile>,
    residency: Residency,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("file_id", &self.file_id)
            .field("len", &self.map.len())
            .finish()
    }
}

/// How a segment's records were found at open.
#[derive(Debug)]
pub enum SegmentIndex {
    /// From the footer (the normal case).
    Footer(Footer),
    /// The footer was damaged: from a record-by-record scan.
    Scanned(Scan, String),
}

impl Segment {
    /// Maps a segment file. Reads nothing but what `decode_footer` touches
    /// unless the footer is damaged.
    pub fn open(path: &Path, file_id: u32, verify: bool) -> Result<(Segment, SegmentIndex)> {
        let file = std::fs::File::open(path).map_err(|e| Error::io("open segment", path, e))?;
        // SAFETY: segment files are immutable once published, and silt holds
        // the directory lock; a file truncated behind silt's back is outside
        // the media assumptions (docs/format.md).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io("mmap segment", path, e))?;
        // A fault reads only its page: the kernel's read-around
        // (`read_ahead_kb`, 8 MiB on the test VM) turned each fault into
        // megabytes of reads (docs/decisions.md). Records not in memory are
        // read by the I/O threads instead (`crate::read`).
        let _ = map.advise(memmap2::Advice::Random);
        let residency = Residency::new(map.len());
        let mut seg = Segment {
            file_id,
            path: path.to_path_buf(),
            data_end: map.len(),
            map,
            file: Arc::new(ReadFile::new(path, file)),
            residency,
        };
        let header_ok = decode_file_header(&seg.map) == Some(file_id);
        let footer = decode_footer(&seg.map);
        // The header holds only the magic, version and id (the id is also
        // the file's name); the footer and the records carry their own
        // checks, so a damaged header costs no record.
        if !header_ok {
            tracing::warn!(path = %path.display(), "segment file header damaged; reading its records by their own checks");
        }
        let found = match footer {
            Ok(footer) => SegmentIndex::Footer(footer),
            Err(why) => SegmentIndex::Scanned(scan_records(&seg.map, verify), why),
        };
        if let SegmentIndex::Footer(f) = &found {
            seg.data_end = f.data_end;
        }
        Ok((seg, found))
    }

    pub fn file_id(&self) -> u32 {
        self.file_id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Bytes `[off, off + len)` of the file, if it has them. Touching them
    /// may fault; see [`Segment::resident`].
    pub fn bytes(&self, off: usize, len: usize) -> Option<&[u8]> {
        self.map.get(off..off.checked_add(len)?)
    }

    /// Asks the kernel to read the footer ahead (the mapping is
    /// `MADV_RANDOM`, so walking it would fault page by page).
    pub(crate) fn prefetch_footer(&self) {
        let Some(t) = self
            .map
            .len()
            .checked_sub(TRAILER_LEN)
            .and_then(|t| self.map.get(t..))
        else {
            return;
        };
        let footer_off = (le_u64(&t[0..8]) as usize / 4096) * 4096;
        if footer_off < self.map.len() {
            let _ = self.map.advise_range(
                memmap2::Advice::WillNeed,
                footer_off,
                self.map.len() - footer_off,
            );
        }
    }

    /// Where the records end (a record read is clamped to it).
    pub fn data_end(&self) -> usize {
        self.data_end
    }

    /// The file, for reads by the I/O threads.
    pub(crate) fn read_file(&self) -> &Arc<ReadFile> {
        &self.file
    }

    /// Whether `[off, off + len)` is in memory, so that reading it through
    /// the mapping does not wait for the disk (see `crate::resident`).
    pub fn resident(&self, off: usize, len: usize) -> bool {
        self.residency.all_resident(&self.map, off, len)
    }

    /// `[off, off + len)` was just read through the page cache.
    pub(crate) fn mark_resident(&self, off: usize, len: usize) {
        self.residency.mark(off, len);
    }

    /// Drops the file's pages from this mapping and, where no one else
    /// maps them, from the page cache (tests and benchmarks of cold reads).
    #[cfg(any(test, feature = "fault-injection"))]
    pub(crate) fn drop_cached(&self) {
        // SAFETY: MADV_DONTNEED on a read-only file mapping only drops the
        // page table entries; the next access reads the file again. No
        // reference into the mapping is held across this call by silt,
        // and the file's bytes never change, so a caller's `Bytes` of it
        // still reads the same bytes.
        let _ = unsafe {
            self.map
                .unchecked_advise(memmap2::UncheckedAdvice::DontNeed)
        };
        let fd = std::os::fd::AsRawFd::as_raw_fd(self.file.file());
        // Dirty pages (a file just written through the page cache, not yet
        // written back) are not dropped: write them back first, so the
        // next read really goes to the disk.
        // SAFETY: fdatasync only reads its argument.
        let _ = unsafe { libc::fdatasync(fd) };
        // SAFETY: posix_fadvise only reads its arguments.
        unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) };
        self.residency.forget();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{FLAG_DELETE, FLAG_PUT};
    use crate::slab::SlabWriter;

    fn image(records: &[(u8, &[u8], &[u8])]) -> Vec<u8> {
        let mut w = SlabWriter::new(1, 64 * 1024);
        for (flags, k, v) in records {
            w.append(*flags, k, v).unwrap();
        }
        w.publish();
        let mut img = w.slab().bytes(0, w.appended()).unwrap().to_vec();
        img.resize(w.slab().capacity(), 0);
        img
    }

    const ONE: u8 = FLAG_BEGIN | FLAG_END;

    #[test]
    fn scan_finds_committed_records_and_cuts_torn_batch() {
        let img = image(&[
            (FLAG_PUT | ONE, b"a", b"1"),
            (FLAG_PUT | FLAG_BEGIN, b"b", b"2"),
            (FLAG_DELETE | FLAG_END, b"a", b""),
            (FLAG_PUT | FLAG_BEGIN, b"c", b"3"),
        ]);
        let s = scan_records(&img, true);
        // The last batch has no END: it is not committed.
        assert_eq!(s.entries.len(), 3);
        assert!(s.entries[2].delete);
        assert_eq!(s.torn_bytes, (record::HEADER_LEN + 2) as u64);
        assert_eq!(s.stopped_by, None);
    }

    #[test]
    fn scan_stops_at_damage() {
        let mut img = image(&[(FLAG_PUT | ONE, b"a", b"1"), (FLAG_PUT | ONE, b"b", b"2")]);
        let second = FILE_HEADER_LEN + record::HEADER_LEN + 2;
        img[second + record::HEADER_LEN] ^= 0xff; // its key
        let s = scan_records(&img, true);
        assert_eq!(s.entries.len(), 1);
        assert_eq!(s.valid_end, second);
        assert_eq!(s.stopped_by, Some(DecodeError::BadCrc));
        assert!(s.torn_bytes > 0);
    }

    #[test]
    fn footer_round_trip_and_damage() {
        let img = image(&[(FLAG_PUT | ONE, b"a", b"1"), (FLAG_PUT | ONE, b"b", b"22")]);
        let s = scan_records(&img, true);
        let (off, tail) = encode_footer(&s.entries, s.valid_end);
        let mut file = img[..off].to_vec();
        file.extend_from_slice(&tail);
        assert_eq!(file.len() % 4096, 0);
        let f = decode_footer(&file).unwrap();
        assert_eq!(f.entries, s.entries);
        assert_eq!(f.data_end, s.valid_end);
        // Any flipped byte in footer or trailer is caught.
        for i in [off, off + 9, file.len() - 20, file.len() - 1] {
            let mut bad = file.clone();
            bad[i] ^= 0x40;
            assert!(decode_footer(&bad).is_err(), "flip at {i}");
        }
        // Truncated files are refused, never a panic.
        for cut in [0, 10, 4096, off, file.len() - 1] {
            assert!(decode_footer(&file[..cut]).is_err());
        }
    }
}
