//! Regression test for the open_dir fuzzer's first finding: threads of a
//! closed store were still exiting when `close` returned (LeakSanitizer saw
//! their thread-local destructors pending). `close` now joins them. A binary
//! of its own, so no other test's store has threads alive.

use silt::{Db, Durability, IoBackend, StoreRuntime};

fn silt_threads() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .filter(|c| c.starts_with("silt-"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_returns_after_every_background_thread_exited() {
    for (d, b, r) in [
        (Durability::Sync, IoBackend::Uring, StoreRuntime::Auto),
        (Durability::Sync, IoBackend::Std, StoreRuntime::Auto),
        (Durability::Buffered, IoBackend::Std, StoreRuntime::Auto),
        (Durability::None, IoBackend::Uring, StoreRuntime::Auto),
        (Durability::Sync, IoBackend::Uring, StoreRuntime::Dedicated),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::builder(dir.path())
            .durability(d)
            .io_backend(b)
            .runtime(r)
            .slab_size(64 * 1024)
            .open()
            .await
            .unwrap();
        for i in 0..200u32 {
            db.put(format!("k{i}"), vec![1u8; 1000]).await.unwrap();
        }
        // A flush needs a flush worker to have run, and a thread takes its
        // name once it runs: only then can the check below see anything.
        db.flush().await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while silt_threads().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the store's threads never ran"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        db.close().await.unwrap();
        assert_eq!(silt_threads(), Vec::<String>::new(), "{d:?} {b:?} {r:?}");
    }
}
