//! The only place that reads a located record: `get`, `scan`, GC and the
//! index's key comparisons all go through [`Registry::record`], so an async
//! cold-read path can slot in here later.

use crate::error::{Error, Result};
use crate::index::Location;
use crate::record::{self, Header, HEADER_LEN};
use crate::registry::{log_path, Registry, Source};
use crate::segment::{decode_footer, scan_records, FooterEntry};
use bytes::Bytes;
use std::path::PathBuf;

impl Source {
    /// The file's records (hash, offset, length, tombstone): a segment's
    /// footer (or, if that is damaged, a header scan), a slab's published
    /// records.
    pub fn entries(&self) -> Vec<FooterEntry> {
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

    fn bytes(&self, off: usize, len: usize) -> Option<&[u8]> {
        match self {
            Source::Slab(s) => s.bytes(off, len),
            Source::Segment(s) => s.bytes(off, len),
        }
    }
}

/// A record found at a location, header decoded and bounds checked.
#[derive(Debug)]
pub(crate) struct RecordRef {
    source: Source,
    offset: usize,
    pub header: Header,
}

impl RecordRef {
    fn slice(&self) -> &[u8] {
        self.source
            .bytes(self.offset, self.header.record_len())
            .unwrap_or_default()
    }

    pub fn key(&self) -> &[u8] {
        record::key_of(&self.header, self.slice())
    }

    fn part(&self, start: usize, len: usize) -> Bytes {
        Bytes::from_owner(RecordPart {
            source: self.source.clone(),
            start: self.offset + start,
            len,
        })
    }

    /// The key as zero-copy `Bytes`.
    pub fn key_bytes(&self) -> Bytes {
        self.part(HEADER_LEN, self.header.key_len as usize)
    }

    /// The value as zero-copy `Bytes` (slab memory or segment mmap).
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
        // In bounds: `Registry::record` checked the whole record, and the
        // bytes below a slab's watermark or in a segment never change.
        self.source.bytes(self.start, self.len).unwrap_or_default()
    }
}

impl Registry {
    fn path_of(&self, source: &Source, file_id: u32) -> PathBuf {
        match source {
            Source::Slab(_) => log_path(self.data_dir(), file_id),
            Source::Segment(s) => s.path().to_path_buf(),
        }
    }

    /// The record at `loc`. With `verify`, its CRC is checked.
    pub fn record(&self, loc: Location, verify: bool) -> Result<RecordRef> {
        let source = self.get(loc.file_id).ok_or_else(|| {
            Error::corruption(
                log_path(self.data_dir(), loc.file_id),
                loc.offset as u64,
                "index points at a file that is not loaded",
            )
        })?;
        self.record_in(&source, loc, verify)
    }

    /// The record at `loc` in `source` (pinned by the caller).
    pub fn record_in(&self, source: &Source, loc: Location, verify: bool) -> Result<RecordRef> {
        let source = source.clone();
        let off = loc.offset as usize;
        let fail =
            |what: &str| Error::corruption(self.path_of(&source, loc.file_id), off as u64, what);
        let head = source
            .bytes(off, HEADER_LEN)
            .ok_or_else(|| fail("record header beyond the end of the file"))?;
        let header = record::decode_fixed(head).map_err(|e| fail(e.describe()))?;
        let rec = source
            .bytes(off, header.record_len())
            .ok_or_else(|| fail("record extends beyond the end of the file"))?;
        if verify {
            record::check_crc(&header, rec).map_err(|e| fail(e.describe()))?;
        }
        Ok(RecordRef {
            source,
            offset: off,
            header,
        })
    }

    /// Whether the record at `loc` holds `key` (header checks only).
    pub fn key_is(&self, loc: Location, key: &[u8]) -> Result<bool> {
        Ok(self.record(loc, false)?.key() == key)
    }
}
