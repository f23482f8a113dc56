//! XL values: a put whose record does not fit in a slab gets a segment file
//! of its own, `data/<id>.silt`, with exactly the layout of any segment
//! (4 KiB header page, the one record, footer, trailer), so recovery, reads
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
use crate::io::{Vfs, WRITE_CHUNK};
use crate::record::{self, FLAG_BEGIN, FLAG_END, FLAG_PUT};
use crate::registry::segment_path;
use crate::segment::{encode_footer, FooterEntry, Segment, SegmentIndex};
use crate::slab::{encode_file_header, encode_predecessor, Predecessor, FILE_HEADER_LEN};
use std::path::{Path, PathBuf};

/// Path of an XL file being written.
pub(crate) fn temp_path(data_dir: &Path, file_id: u32) -> PathBuf {
    data_dir.join(format!("{file_id:08}.tmp"))
}

/// Bytes of the XL file for a key and value of these lengths.
pub(crate) fn file_len(key_len: usize, value_len: usize) -> u64 {
    let data_end = FILE_HEADER_LEN + record::encoded_len(key_len, value_len);
    let (footer_off, tail) = encode_footer(&[], data_end);
    // One entry more than the empty footer still fits in its page.
    (footer_off + tail.len()) as u64
}

/// Writes, syncs and publishes the XL segment `file_id` holding one put;
/// returns it mapped, and the record's length. On error the temporary file
/// is removed (best effort) and nothing was published.
pub(crate) fn write_xl_segment(
    vfs: &dyn Vfs,
    data_dir: &Path,
    file_id: u32,
    predecessor: Option<Predecessor>,
    key: &[u8],
    value: &[u8],
) -> Result<(Segment, u32)> {
    let tmp = temp_path(data_dir, file_id);
    let res = write_and_publish(vfs, data_dir, &tmp, file_id, predecessor, key, value);
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
    key: &[u8],
    value: &[u8],
) -> Result<(Segment, u32)> {
    let len = record::encoded_len(key.len(), value.len());
    let len32 = u32::try_from(len).map_err(|_| {
        Error::InvalidArgument(format!(
            "a record of {len} bytes (key + value + header) exceeds the 4 GiB limit"
        ))
    })?;
    let head = record::encode_head(FLAG_BEGIN | FLAG_END | FLAG_PUT, key, value);
    let data_end = FILE_HEADER_LEN + len;
    let entry = FooterEntry {
        hash: record::key_hash(key),
        offset: FILE_HEADER_LEN as u32,
        len: len32,
        delete: false,
    };
    let (footer_off, tail) = encode_footer(&[entry], data_end);
    let mut page = vec![0u8; FILE_HEADER_LEN];
    encode_file_header(&mut page, file_id);
    encode_predecessor(&mut page, predecessor);

    let write_err = |e| Error::io("write XL value file", tmp, e);
    let (file, _) = vfs.open_write(tmp, true, false).map_err(write_err)?;
    let value_at = (FILE_HEADER_LEN + head.len()) as u64;
    let mut writes: Vec<(&[u8], u64)> = vec![(&page, 0), (&head, FILE_HEADER_LEN as u64)];
    writes.extend(
        value
            .chunks(WRITE_CHUNK)
            .enumerate()
            .map(|(i, c)| (c, value_at + (i * WRITE_CHUNK) as u64)),
    );
    writes.push((&tail, footer_off as u64));
    // Bounded batches, so io_uring has several writes in flight but not a
    // thousand.
    for batch in writes.chunks(16) {
        file.write_many(batch).map_err(write_err)?;
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
    debug_assert_eq!(segment.len() as u64, file_len(key.len(), value.len()));
    match found {
        SegmentIndex::Footer(f) if f.entries.len() == 1 => Ok((segment, len32)),
        _ => Err(Error::corruption(
            &path,
            footer_off as u64,
            "XL value file footer unreadable right after writing it",
        )),
    }
}
