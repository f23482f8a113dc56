//! Issue 17: what operators see in the logs. A binary of its own: it
//! installs the process's global `tracing` subscriber (the store's threads
//! log outside any test's thread-local one).

use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// With `slow_op_warning(0)` every WAL write (and fdatasync, where it is a
/// step of its own) is logged as a `warn` with its duration; a background
/// GC that found nothing logs nothing at `info`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_steps_are_warned_with_their_duration_and_idle_gc_is_quiet() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let dir = tempfile::tempdir().unwrap();
    let db = silt::Db::builder(dir.path())
        .slab_size(64 * 1024)
        .slow_op_warning(std::time::Duration::ZERO)
        .open()
        .await
        .unwrap();
    for i in 0..50u32 {
        db.put(i.to_be_bytes(), vec![1u8; 100]).await.unwrap();
    }
    db.flush().await.unwrap();
    db.close().await.unwrap();
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let slow: Vec<&str> = text.lines().filter(|l| l.contains("slow WAL")).collect();
    assert!(slow.len() >= 50, "one per WAL write at least:\n{text}");
    assert!(
        slow.iter().all(|l| l.contains("WARN") && l.contains("ms=")),
        "{text}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l.contains("compacted") && l.contains("INFO")),
        "a GC pass that did nothing logged at info:\n{text}"
    );
}
