//! file_id → where its bytes are now: the in-memory slab until the segment is
//! durable, then the mmap'd segment. Flushing swaps one entry; index
//! locations never change. A reader that cloned the `Source` keeps valid
//! memory through the swap (the `Arc` pins it).
//!
//! Reading a located record is in `read.rs`.

use crate::segment::Segment;
use crate::slab::Slab;
use crate::sync::{read, write, Arc, AtomicU64, Ordering, RwLock};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The holder of a file's bytes.
#[derive(Debug, Clone)]
pub enum Source {
    Slab(Arc<Slab>),
    Segment(Arc<Segment>),
}

#[cfg(loom)]
impl Source {
    /// A copy of bytes `[off, off + len)` (loom models read through this).
    pub fn copy_out(&self, off: usize, len: usize) -> Option<Vec<u8>> {
        match self {
            Source::Slab(s) => s.copy_out(off, len),
            Source::Segment(s) => s.bytes(off, len).map(<[u8]>::to_vec),
        }
    }
}

/// The registry of live data files.
#[derive(Debug)]
pub struct Registry {
    data_dir: PathBuf,
    files: RwLock<HashMap<u32, Source>>,
    /// Bytes of the registered segment files (kept beside `files`, so
    /// reads can ask without the lock).
    segment_bytes: AtomicU64,
}

fn segment_len(s: &Source) -> u64 {
    match s {
        Source::Segment(seg) => seg.len() as u64,
        Source::Slab(_) => 0,
    }
}

/// Path of the unsealed (write-ahead) file for `file_id`.
pub(crate) fn log_path(data_dir: &Path, file_id: u32) -> PathBuf {
    data_dir.join(format!("{file_id:08}.log"))
}

/// Path of the published segment for `file_id`.
pub(crate) fn segment_path(data_dir: &Path, file_id: u32) -> PathBuf {
    data_dir.join(format!("{file_id:08}.silt"))
}

impl Registry {
    pub fn new(data_dir: PathBuf) -> Registry {
        Registry {
            data_dir,
            files: RwLock::new(HashMap::new()),
            segment_bytes: AtomicU64::new(0),
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn insert(&self, file_id: u32, source: Source) {
        let added = segment_len(&source);
        let old = write(&self.files).insert(file_id, source);
        self.account(added, old.as_ref());
    }

    fn account(&self, added: u64, removed: Option<&Source>) {
        let removed = removed.map_or(0, segment_len);
        if added >= removed {
            self.segment_bytes
                .fetch_add(added - removed, Ordering::Relaxed);
        } else {
            self.segment_bytes
                .fetch_sub(removed - added, Ordering::Relaxed);
        }
    }

    /// Bytes of the registered segment files.
    pub fn segment_bytes(&self) -> u64 {
        self.segment_bytes.load(Ordering::Relaxed)
    }

    /// The flush's swap: `file_id` now reads from its published segment
    /// instead of its slab, in one step under the write lock, so a reader
    /// finds one or the other, never neither. A reader that cloned the slab's
    /// `Source` keeps reading it (the `Arc` pins the memory). Returns the
    /// slab it replaced.
    pub fn publish_segment(&self, segment: Arc<Segment>) -> Option<Source> {
        let id = segment.file_id();
        let added = segment.len() as u64;
        let old = write(&self.files).insert(id, Source::Segment(segment));
        self.account(added, old.as_ref());
        old
    }

    pub fn remove(&self, file_id: u32) -> Option<Source> {
        let old = write(&self.files).remove(&file_id);
        self.account(0, old.as_ref());
        old
    }

    pub fn get(&self, file_id: u32) -> Option<Source> {
        read(&self.files).get(&file_id).cloned()
    }

    /// Every loaded file, by id.
    pub fn sources(&self) -> Vec<(u32, Source)> {
        let mut all: Vec<_> = read(&self.files)
            .iter()
            .map(|(&id, s)| (id, s.clone()))
            .collect();
        all.sort_unstable_by_key(|(id, _)| *id);
        all
    }

    /// The largest id loaded (0 if none).
    pub fn max_id(&self) -> u32 {
        read(&self.files).keys().copied().max().unwrap_or(0)
    }

    /// Whether `file_id` is loaded.
    pub fn contains(&self, file_id: u32) -> bool {
        read(&self.files).contains_key(&file_id)
    }

    /// Bytes of all published segments, and the oldest file if it is a
    /// published segment. Eviction follows write order: while an older
    /// slab is still being flushed, no newer segment may go, or a key's
    /// newer value could be dropped while the older one it replaced comes
    /// back with that slab (issue 16.3).
    pub fn segments_by_age(&self) -> (u64, Option<Arc<Segment>>) {
        let files = read(&self.files);
        let mut total = 0;
        let mut oldest: Option<(u32, &Source)> = None;
        for (&id, s) in files.iter() {
            if let Source::Segment(seg) = s {
                total += seg.len() as u64;
            }
            if oldest.is_none_or(|(o, _)| id < o) {
                oldest = Some((id, s));
            }
        }
        let evictable = match oldest {
            Some((_, Source::Segment(seg))) => Some(seg.clone()),
            _ => None,
        };
        (total, evictable)
    }

    /// (slabs, segments, bytes of segment files)
    pub fn counts(&self) -> (usize, usize, u64) {
        let files = read(&self.files);
        let mut out = (0, 0, 0);
        for s in files.values() {
            match s {
                Source::Slab(_) => out.0 += 1,
                Source::Segment(seg) => {
                    out.1 += 1;
                    out.2 += seg.len() as u64;
                }
            }
        }
        out
    }
}
