//! XL values: a put whose record does not fit in a slab, or a batch that
//! does not, gets a segment file of its own, `data/<id>.silt`, with exactly the layout of any segment
//! (4 KiB header page, the records, footer, trailer), so recovery, reads
//! (zero-copy from the mmap), eviction and GC need nothing new.
//!
//! The value goes from the caller's `Bytes` to the file through the page
//! cache in 1 MiB writes (no copy into a slab, no aligned bounce buffer for
//! a gigabyte), then fdatasync. The file is written as `<id>.tmp` and
//! renamed once complete, so a crash never leaves half a value under a
//! segment name; recovery deletes leftover `.tmp` files.
//!
//! The writer seals its active slab before giving the XL file its id, so the
//! id order recovery relies on ("newest wins") still matches the order of
//! writes.

use crate::error::{Error, Result};
use crate::index::MAX_RECORD_OFFSET;
use crate::io::{Vfs, WRITE_CHUNK};
use crate::record::{self, FLAG_BEGIN, FLAG_DELETE, FLAG_END, FLAG_PUT};
use crate::registry::segment_path;
use crate::segment::{encode_footer, FooterEntry, Segment, SegmentIndex};
use crate::slab::{encode_file_header, encode_predecessor, Predecessor, FILE_HEADER_LEN};
use std::path::{Path, PathBuf};

/// Writes (of up to `WRITE_CHUNK` bytes) per batch: one batch in flight
/// to the device and one being written (see `write_and_publish`).
const WRITE_BEHIND_BATCH: usize = 8;

/// Path of an XL file being written.
pub(crate) fn temp_path(data_dir: &Path, file_id: u32) -> PathBuf {
    data_dir.join(format!("{file_id:08}.tmp"))
}

/// One record of an own-file write: a put, or a delete (empty value).
#[derive(Debug, Clone, Copy)]
pub(crate) struct XlRecord<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub delete: bool,
}

impl XlRecord<'_> {
    fn len(&self) -> usize {
        record::encoded_len(self.key.len(), self.value.len())
    }
}

/// Where the records go (file offsets) and where the footer starts, or an
/// error if the file would pass the 4 GiB that footer offsets can name, or
/// a record would start past [`MAX_RECORD_OFFSET`] (2 GiB: footer entries
/// and index entries keep 31 offset bits).
fn layout(records: &[XlRecord<'_>]) -> Result<(Vec<FooterEntry>, usize)> {
    let mut at = FILE_HEADER_LEN;
    let mut entries = Vec::with_capacity(records.len());
    for r in records {
        let len = r.len();
        if at > MAX_RECORD_OFFSET as usize {
            return Err(Error::InvalidArgument(format!(
                "a record of this batch would start at byte {at} of its file; records may start up to byte {MAX_RECORD_OFFSET} (2 GiB), so every record of a batch but the last must end before it (one put may be up to 4 GiB)"
            )));
        }
        let (offset, len32) = match (u32::try_from(at), u32::try_from(len)) {
            (Ok(o), Ok(l)) if at + len <= u32::MAX as usize => (o, l),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "a write of {} bytes (keys + values + record headers) passes the 4 GiB limit of one write",
                    records.iter().map(XlRecord::len).sum::<usize>()
                )))
            }
        };
        entries.push(FooterEntry {
            hash: record::key_hash(r.key),
            offset,
            len: len32,
            delete: r.delete,
        });
        at += len;
    }
    Ok((entries, at))
}

/// Bytes of the file holding `records`.
pub(crate) fn file_len(records: &[XlRecord<'_>]) -> Result<u64> {
    let (entries, data_end) = layout(records)?;
    let (footer_off, tail) = encode_footer(&entries, data_end);
    Ok((footer_off + tail.len()) as u64)
}

/// Writes, syncs and publishes the segment `file_id` holding `records` (one
/// put too large for a slab, or a whole batch too large for one: all or
/// nothing, as the file is renamed into place only once complete);
/// returns it mapped, and each record's offset and length. On error the
/// temporary file is removed (best effort) and nothing was published.
pub(crate) fn write_xl_segment(
    vfs: &dyn Vfs,
    data_dir: &Path,
    file_id: u32,
    predecessor: Option<Predecessor>,
    records: &[XlRecord<'_>],
) -> Result<(Segment, Vec<(u32, u32)>)> {
    let tmp = temp_path(data_dir, file_id);
    let res = write_and_publish(vfs, data_dir, &tmp, file_id, predecessor, records);
    if res.is_err() {
        // Not acknowledged: leave no trace, published or not.
        let _ = vfs.remove_file(&tmp);
        let _ = vfs.remove_file(&segment_path(data_dir, file_id));
    }
    res
}

fn write_and_publish(
    vfs: &dyn Vfs,
    data_dir: &Path,
    tmp: &Path,
    file_id: u32,
    predecessor: Option<Predecessor>,
    records: &[XlRecord<'_>],
) -> Result<(Segment, Vec<(u32, u32)>)> {
    let (entries, data_end) = layout(records)?;
    let last = records.len().saturating_sub(1);
    let heads: Vec<Vec<u8>> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut flags = if r.delete { FLAG_DELETE } else { FLAG_PUT };
            if i == 0 {
                flags |= FLAG_BEGIN;
            }
            if i == last {
                flags |= FLAG_END;
            }
            record::encode_head(flags, r.key, r.value)
        })
        .collect();
    let (footer_off, tail) = encode_footer(&entries, data_end);
    let mut page = vec![0u8; FILE_HEADER_LEN];
    encode_file_header(&mut page, file_id);
    encode_predecessor(&mut page, predecessor);

    let write_err = |e| Error::io("write XL value file", tmp, e);
    let (file, _) = vfs.open_write(tmp, true, false).map_err(write_err)?;
    let mut writes: Vec<(&[u8], u64)> = vec![(&page, 0)];
    for ((r, head), e) in records.iter().zip(&heads).zip(&entries) {
        let at = u64::from(e.offset);
        writes.push((head, at));
        let value_at = at + head.len() as u64;
        writes.extend(
            r.value
                .chunks(WRITE_CHUNK)
                .enumerate()
                .map(|(i, c)| (c, value_at + (i * WRITE_CHUNK) as u64)),
        );
    }
    writes.push((&tail, footer_off as u64));
    // Bounded batches, so io_uring has several writes in flight but not a
    // thousand. Each batch's range is sent to the device once written and
    // the one before it waited for (write-behind), so at most two batches
    // of this file's dirty pages stand in front of other files' writes
    // (the WAL's fdatasyncs), not the whole value at its fdatasync.
    let (mut sent, mut waited) = (0u64, 0u64);
    for batch in writes.chunks(WRITE_BEHIND_BATCH) {
        file.write_many(batch).map_err(write_err)?;
        let end = batch
            .iter()
            .map(|(b, at)| at + b.len() as u64)
            .fold(sent, u64::max);
        file.write_behind(sent, end - sent, false)
            .map_err(write_err)?;
        if sent > waited {
            file.write_behind(waited, sent - waited, true)
                .map_err(write_err)?;
            waited = sent;
        }
        sent = end;
    }
    file.set_len((footer_off + tail.len()) as u64)
        .map_err(write_err)?;
    file.sync_data()
        .map_err(|e| Error::io("fdatasync XL value file", tmp, e))?;
    drop(file);
    let path = segment_path(data_dir, file_id);
    vfs.rename(tmp, &path)
        .map_err(|e| Error::io("publish XL value file", &path, e))?;
    vfs.sync_dir(data_dir)
        .map_err(|e| Error::io("fsync data directory", data_dir, e))?;
    let (segment, found) = Segment::open(&path, file_id, false)?;
    match found {
        SegmentIndex::Footer(f) if f.entries.len() == records.len() => {
            Ok((segment, entries.iter().map(|e| (e.offset, e.len)).collect()))
        }
        _ => Err(Error::corruption(
            &path,
            footer_off as u64,
            "XL value file footer unreadable right after writing it",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record of an own-file batch may start at `MAX_RECORD_OFFSET`,
    /// not one byte later (index and footer entries keep 31 offset bits).
    #[test]
    fn records_start_at_most_at_the_largest_offset() {
        // Zeroed and never touched: no memory is used for it.
        let big = vec![0u8; MAX_RECORD_OFFSET as usize];
        let first_len = |val: usize| record::encoded_len(1, val);
        // The second record starts right after the first.
        let fits = MAX_RECORD_OFFSET as usize - FILE_HEADER_LEN - first_len(0);
        for (val, ok) in [(fits, true), (fits + 1, false)] {
            let records = [
                XlRecord {
                    key: b"a",
                    value: &big[..val],
                    delete: false,
                },
                XlRecord {
                    key: b"b",
                    value: b"x",
                    delete: false,
                },
            ];
            match layout(&records) {
                Ok((entries, _)) => {
                    assert!(ok, "{val}");
                    assert_eq!(entries[1].offset, MAX_RECORD_OFFSET);
                }
                Err(e) => assert!(!ok, "{val}: {e}"),
            }
        }
    }
}
