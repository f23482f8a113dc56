//! A floor under the next file id, kept in `data/next_id`, so that an id is
//! never given to a second file.
//!
//! Recovery starts new files at one more than the largest id it finds.
//! When GC, eviction or recovery removes the newest files, that would hand
//! their ids out again, and a follower that had loaded the old file of an
//! id would take the new one for it and never read it (issue 26). So
//! before a data file is removed whose id is at or above the floor, the
//! floor is raised past it and made durable (written to a temporary file,
//! fdatasynced, renamed, directory fsynced); a reopen starts at the larger
//! of the floor and the largest id found. Most removals are of old files,
//! below the floor, and write nothing.
//!
//! Format: the floor as a little-endian u32, then the CRC-32 of those four
//! bytes. A damaged or missing file reads as no floor (logged): it only
//! keeps ids from being reused, it holds no data.

use crate::error::{Error, Result};
use crate::io::Vfs;
use crate::sync::{lock, Mutex};
use std::path::Path;

/// Its name in the data directory.
pub(crate) const FILE_NAME: &str = "next_id";
const TMP_NAME: &str = "next_id.new";

/// Whether `name` in the data directory is the floor's (or its temporary).
pub(crate) fn is_its_file(name: &str) -> bool {
    name == FILE_NAME || name == TMP_NAME
}

/// See the module docs.
#[derive(Debug, Default)]
pub(crate) struct IdFloor {
    floor: Mutex<u32>,
}

fn encode(floor: u32) -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&floor.to_le_bytes());
    let crc = crc32fast::hash(&out[..4]);
    out[4..].copy_from_slice(&crc.to_le_bytes());
    out
}

fn decode(bytes: &[u8]) -> Option<u32> {
    let (value, crc) = (bytes.get(..4)?, bytes.get(4..8)?);
    (bytes.len() == 8 && crc32fast::hash(value).to_le_bytes() == crc)
        .then(|| u32::from_le_bytes([value[0], value[1], value[2], value[3]]))
}

impl IdFloor {
    /// Reads the floor kept in `data_dir` (recovery, before any file is
    /// removed) and returns it.
    pub fn load(&self, data_dir: &Path) -> u32 {
        let path = data_dir.join(FILE_NAME);
        let floor = match std::fs::read(&path) {
            Ok(bytes) => decode(&bytes).unwrap_or_else(|| {
                tracing::warn!(path = %path.display(), "ignoring a damaged file-id floor");
                0
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable file-id floor");
                0
            }
        };
        *lock(&self.floor) = floor;
        floor
    }

    /// Before data file `id` is removed: makes sure the durable floor is
    /// above it, raising it to at least `next` (the store's next id, so
    /// that the removals that follow need nothing). Blocking.
    pub fn cover(&self, vfs: &dyn Vfs, data_dir: &Path, id: u32, next: u32) -> Result<()> {
        let mut floor = lock(&self.floor);
        if id < *floor {
            return Ok(());
        }
        let new = next.max(id.saturating_add(1));
        let (tmp, path) = (data_dir.join(TMP_NAME), data_dir.join(FILE_NAME));
        let fail = |what: &'static str, p: &Path| {
            let p = p.to_path_buf();
            move |e| Error::io(what, p, e)
        };
        let (file, _) = vfs
            .open_write(&tmp, true, false)
            .map_err(fail("create file-id floor", &tmp))?;
        file.write_at(&encode(new), 0)
            .map_err(fail("write file-id floor", &tmp))?;
        file.sync_data()
            .map_err(fail("fdatasync file-id floor", &tmp))?;
        drop(file);
        vfs.rename(&tmp, &path)
            .map_err(fail("rename file-id floor", &path))?;
        vfs.sync_dir(data_dir)
            .map_err(fail("fsync data directory", data_dir))?;
        *floor = new;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_round_trips_and_damage_reads_as_none() {
        assert_eq!(decode(&encode(77)), Some(77));
        let mut bad = encode(77);
        bad[0] ^= 1;
        assert_eq!(decode(&bad), None);
        assert_eq!(decode(&encode(77)[..7]), None);
    }

    #[test]
    fn cover_raises_the_floor_only_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let vfs = crate::io::std_backend::StdVfs;
        let floor = IdFloor::default();
        assert_eq!(floor.load(dir.path()), 0);
        floor.cover(&vfs, dir.path(), 5, 9).unwrap();
        assert_eq!(IdFloor::default().load(dir.path()), 9);
        // Below the floor: nothing written.
        std::fs::remove_file(dir.path().join(FILE_NAME)).unwrap();
        floor.cover(&vfs, dir.path(), 8, 20).unwrap();
        assert!(!dir.path().join(FILE_NAME).exists());
        floor.cover(&vfs, dir.path(), 9, 3).unwrap();
        assert_eq!(IdFloor::default().load(dir.path()), 10);
    }
}
