//! Helpers shared by the integration tests.
#![allow(dead_code)]

use silt::{Builder, Db};
use std::path::{Path, PathBuf};

/// A small-slab builder so rotation and flushing happen constantly.
pub fn small(path: &Path) -> Builder {
    Db::builder(path).slab_size(64 * 1024).max_sealed_slabs(2)
}

/// Runs `work` against a store on a private runtime, then "crashes": the
/// runtime is dropped while the store is open, so the writer task is
/// cancelled without sealing, flushing or closing anything. What is left
/// on disk is what a killed process leaves behind (page cache included).
pub fn crash_after<F, Fut>(builder: Builder, work: F)
where
    F: FnOnce(Db) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    // Its own OS thread, so it works from inside a #[tokio::test] too.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let db = rt.block_on(async {
            let db = builder.open().await.unwrap();
            work(db.clone()).await;
            db
        });
        drop(rt);
        drop(db);
    })
    .join()
    .unwrap();
}

/// The files in `dir/data` with the given extension, sorted.
pub fn data_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("data"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// Opens after a simulated crash: the crashed store's flush threads release
/// the directory lock when they notice their channel closed, a moment after
/// the runtime is gone (a killed process releases it at once).
pub async fn open_after_crash(builder: Builder) -> Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match builder.clone().open().await {
            Err(silt::Error::Locked { .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await
            }
            other => return other.unwrap(),
        }
    }
}

/// Waits until no store holds `dir`'s lock (a dead store's background
/// threads release it when they notice their channels closed).
pub fn wait_unlocked(dir: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("LOCK"))
        .unwrap();
    while lock.try_lock().is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the store's lock was never released"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    lock.unlock().unwrap();
}
