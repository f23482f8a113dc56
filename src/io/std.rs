//! Blocking POSIX I/O (IoBackend::Std): pwrite, fdatasync, O_DIRECT where the
//! file system allows it.

use super::{gather_len, iovecs_after, FileIo, Vfs};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// The std backend's file system.
#[derive(Debug, Default)]
pub(crate) struct StdVfs;

#[derive(Debug)]
struct StdFile(File);

impl FileIo for StdFile {
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn write_gather(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        let total = gather_len(bufs)?;
        let mut done = 0;
        while done < total {
            let iov = iovecs_after(bufs, done);
            // SAFETY: every iovec points into `bufs`, borrowed for the call.
            let n = unsafe {
                libc::pwritev(
                    self.0.as_raw_fd(),
                    iov.as_ptr(),
                    iov.len() as libc::c_int,
                    (offset + done as u64) as libc::off_t,
                )
            };
            match n {
                n if n > 0 => done += n as usize,
                0 => return Err(io::ErrorKind::WriteZero.into()),
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn write_behind(&self, offset: u64, len: u64, wait: bool) -> io::Result<()> {
        super::sync_file_range(self.0.as_raw_fd(), offset, len, wait)
    }
}

fn open(path: &Path, create: bool, flags: i32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(create)
        .truncate(create)
        .custom_flags(flags)
        .open(path)
}

/// Opens for writing, with O_DIRECT if asked and the file system allows it
/// (tmpfs and some others refuse it at open with EINVAL); the bool says
/// whether O_DIRECT is in use. Shared by every backend.
pub(crate) fn open_file(path: &Path, create: bool, direct: bool) -> io::Result<(File, bool)> {
    if direct {
        match open(path, create, libc::O_DIRECT) {
            Ok(f) => return Ok((f, true)),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    Ok((open(path, create, 0)?, false))
}

impl Vfs for StdVfs {
    fn open_write(
        &self,
        path: &Path,
        create: bool,
        direct: bool,
    ) -> io::Result<(Box<dyn FileIo>, bool)> {
        let (file, direct) = open_file(path, create, direct)?;
        Ok((Box::new(StdFile(file)), direct))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
}
