//! Flush workers: turn a sealed slab into a published segment.
//!
//! Each worker is an OS thread fed by a bounded crossbeam channel. For a slab
//! it writes the pages not yet on disk, then the footer and trailer,
//! fdatasyncs, renames `<id>.log` to `<id>.silt`, fsyncs the directory, maps
//! the segment and swaps it into the registry. Only then does the slab's
//! backpressure permit return.

use crate::error::{Error, Result};
use crate::io::aligned::{page_floor, AlignedBuf, PAGE};
use crate::io::write_slab_range;
use crate::registry::{log_path, segment_path};
use crate::segment::{encode_footer, scan_records, Segment, SegmentIndex};
use crate::shared::Shared;
use crate::slab::Slab;
use std::sync::Arc;

/// A slab that will take no more appends, on its way to becoming a segment.
#[derive(Debug)]
pub(crate) struct SealedSlab {
    pub slab: Arc<Slab>,
    /// Bytes `[0, written_upto)` are already in the file (by the WAL).
    pub written_upto: usize,
    /// Returned to the writer's backpressure budget when the slab is
    /// published (or its flush failed).
    pub permit: crate::backpressure::Permit,
}

/// Starts `n` workers; returns the channel to send sealed slabs to. Workers
/// exit when every sender is dropped and the channel is drained.
pub(crate) fn start_workers(
    n: usize,
    capacity: usize,
    shared: Arc<Shared>,
) -> Result<crossbeam_channel::Sender<SealedSlab>> {
    let (tx, rx) = crossbeam_channel::bounded::<SealedSlab>(capacity);
    for i in 0..n {
        let rx = rx.clone();
        let worker_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name(format!("silt-flush-{i}"))
            .spawn(move || {
                let shared = worker_shared;
                let mut bounce = AlignedBuf::zeroed(PAGE);
                for sealed in rx {
                    let id = sealed.slab.file_id();
                    let span = tracing::info_span!("flush", file_id = id);
                    let _enter = span.enter();
                    // Reports the slab done even if this thread panics, so
                    // no `flush`/`close` waits for it forever.
                    let _done = FlushDone(&shared, id);
                    let timer = crate::signals::Timer::start();
                    let flushed = flush_with_retries(&shared, &sealed, &mut bounce);
                    timer.record("silt_flush_seconds");
                    match flushed {
                        Ok(()) => {
                            tracing::debug!("segment published");
                            shared.gc_wake.notify_one();
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "flush failed; the store refuses writes until reopened");
                            shared.poison(&e);
                        }
                    }
                    drop(sealed.permit);
                }
            })
            .map_err(|e| Error::io("spawn flush worker", shared.registry.data_dir(), e))?;
        crate::sync::lock(&shared.threads).push(handle);
    }
    Ok(tx)
}

/// Marks a slab's flush finished when dropped (normally, or by a panic,
/// which also poisons the store).
struct FlushDone<'a>(&'a Shared, u32);

impl Drop for FlushDone<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let cause = crate::error::StopCause::ThreadGone("flush worker (it panicked)");
            self.0.poison(&Error::Stopped { cause });
        }
        self.0.flush_done(self.1);
    }
}

/// Attempts after the first before a flush failure poisons the store.
const FLUSH_RETRIES: u32 = 5;

/// A transient failure (ENOSPC until space is freed, a passing EIO) is
/// retried with backoff (10 ms … 160 ms); the slab stays readable in memory
/// meanwhile. Each attempt before the rename starts over from the slab, so
/// a half-written file is simply rewritten; after it, from the directory
/// fsync.
fn flush_with_retries(shared: &Shared, sealed: &SealedSlab, bounce: &mut AlignedBuf) -> Result<()> {
    let mut attempt = 0;
    // Once the rename is done the file is whole and under its segment
    // name: a retry only publishes it (the `.log` name is gone).
    let mut renamed = false;
    loop {
        match flush_one(shared, sealed, bounce, &mut renamed) {
            Ok(()) => return Ok(()),
            Err(e) if attempt < FLUSH_RETRIES => {
                shared
                    .counters
                    .flush_retries
                    .fetch_add(1, crate::sync::Ordering::Relaxed);
                tracing::warn!(error = %e, attempt, "flush failed; retrying");
                std::thread::sleep(std::time::Duration::from_millis(10 << attempt));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

fn flush_one(
    shared: &Shared,
    sealed: &SealedSlab,
    bounce: &mut AlignedBuf,
    renamed: &mut bool,
) -> Result<()> {
    let slab = &sealed.slab;
    let id = slab.file_id();
    let dir = shared.registry.data_dir();
    let log = log_path(dir, id);
    let seg = segment_path(dir, id);
    let vfs = &shared.vfs;
    let data_end = slab.published();
    let image = slab
        .bytes(0, data_end)
        .ok_or_else(|| Error::corruption(&log, 0, "sealed slab watermark moved"))?;
    // The slab holds only committed records (the writer seals after its last
    // group is durable), so a header-only scan is enough to build the footer.
    let scan = scan_records(image, false);
    let (footer_off, tail) = encode_footer(&scan.entries, scan.valid_end);
    let size = (footer_off + tail.len()) as u64;
    // Cache mode: make room before the file exists, so files being written
    // plus published segments never pass the capacity.
    let reservation = crate::gc::reserve(shared, size)?;
    if !*renamed {
        let (file, direct) = vfs
            .open_write(&log, sealed.written_upto == 0, shared.config.direct_io)
            .map_err(|e| Error::io("open slab file for flush", &log, e))?;
        write_slab_range(
            &*file,
            slab,
            page_floor(sealed.written_upto),
            data_end,
            direct,
            bounce,
        )
        .map_err(|e| Error::io("write segment data", &log, e))?;
        let mut buf = AlignedBuf::zeroed(tail.len());
        buf.as_mut_slice()[..tail.len()].copy_from_slice(&tail);
        file.write_at(&buf.as_slice()[..tail.len()], footer_off as u64)
            .map_err(|e| Error::io("write segment footer", &log, e))?;
        file.set_len(size)
            .map_err(|e| Error::io("truncate segment", &log, e))?;
        file.sync_data()
            .map_err(|e| Error::io("fdatasync segment", &log, e))?;
    }
    // Publishing (rename, directory fsync, registry swap) happens under the
    // eviction lock.
    reservation.publish(|| {
        if !*renamed {
            vfs.rename(&log, &seg)
                .map_err(|e| Error::io("publish segment", &seg, e))?;
            *renamed = true;
        }
        vfs.sync_dir(dir)
            .map_err(|e| Error::io("fsync data directory", dir, e))?;
        let (segment, found) = Segment::open(&seg, id, false)?;
        match found {
            SegmentIndex::Footer(f)
                if f.entries.len() == scan.entries.len() && f.data_end == scan.valid_end =>
            {
                shared.registry.publish_segment(Arc::new(segment));
                Ok(())
            }
            _ => Err(Error::corruption(
                &seg,
                footer_off as u64,
                "segment footer unreadable right after writing it",
            )),
        }
    })
}
