//! Std vs io_uring, and the disk's own limit measured by fio in the same run.
//!
//! `bash benches/io_backends.sh` (installs fio if missing), or
//! `cargo bench --bench io_backends`. SILT_BENCH_BYTES sets the volume of
//! the 64 KiB-value test (default 2 GiB), SILT_BENCH_DIR the disk.

mod bench_env;
mod workloads;

use silt::{Db, Durability, IoBackend};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use workloads::{print_table, Row};

fn main() {
    let bytes: u64 = std::env::var("SILT_BENCH_BYTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2 << 30);
    let (tmp, rt) = bench_env::bench_env();
    // SILT_BENCH_ONLY=large|small|fio runs one part (for profiling).
    let only = std::env::var("SILT_BENCH_ONLY").unwrap_or_default();
    let want = |part: &str| only.is_empty() || only == part;
    let mut rows = Vec::new();
    if want("fio") {
        rows.extend(fio(tmp.path(), bytes, false));
        rows.extend(fio(tmp.path(), bytes, true));
    }
    for backend in [IoBackend::Std, IoBackend::Uring] {
        if want("large") {
            rows.push(rt.block_on(large_values(tmp.path(), backend, bytes)));
        }
        if want("small") {
            rows.push(rt.block_on(small_sync(tmp.path(), backend, 200_000)));
        }
    }
    println!("\nsilt I/O backends: {} MiB of 64 KiB values and 200k 100 B values, Durability::Sync, 64 tasks\n", bytes >> 20);
    print_table(&rows);
}

/// fio: O_DIRECT sequential writes of the same volume. The target shape
/// (1 MiB, iodepth 8, one fsync at the end), or with `per_write_sync` the
/// shape of a group commit done one at a time (2 MiB writes, fdatasync
/// after each, iodepth 1): the most a single in-flight WAL write can get.
fn fio(dir: &Path, bytes: u64, per_write_sync: bool) -> Option<Row> {
    let file = dir.join("fio.dat");
    let shape: &[&str] = if per_write_sync {
        &["--bs=2M", "--iodepth=1", "--fdatasync=1"]
    } else {
        &["--bs=1M", "--iodepth=8", "--end_fsync=1"]
    };
    let out = Command::new("fio")
        .args([
            "--name=seq",
            "--rw=write",
            "--direct=1",
            "--ioengine=io_uring",
            "--output-format=terse",
            "--terse-version=3",
        ])
        .args(shape)
        .arg(format!("--size={bytes}"))
        .arg(format!("--filename={}", file.display()))
        .output();
    let _ = std::fs::remove_file(&file);
    let out = match out {
        Ok(o) if o.status.success() => o,
        _ => {
            eprintln!("fio not available: run benches/io_backends.sh to install it");
            return None;
        }
    };
    // Terse v3: field 48 is write bandwidth in KiB/s (1-based, ';'-separated).
    let text = String::from_utf8_lossy(&out.stdout);
    let kib_s: f64 = text.split(';').nth(47)?.parse().ok()?;
    let secs = bytes as f64 / (kib_s * 1024.0);
    let (name, note) = if per_write_sync {
        (
            "fio: O_DIRECT seq 2 MiB writes + fdatasync each",
            "one write in flight",
        )
    } else {
        (
            "fio: O_DIRECT seq 1 MiB writes, iodepth 8",
            "the disk's limit",
        )
    };
    Some(Row {
        name: name.into(),
        ops: bytes >> 20,
        elapsed: Duration::from_secs_f64(secs),
        bytes,
        note: note.into(),
    })
}

fn open(dir: &Path, backend: IoBackend) -> silt::Builder {
    Db::builder(dir)
        .io_backend(backend)
        .durability(Durability::Sync)
}

/// 64 tasks put 64 KiB values with Durability::Sync until `bytes` are written.
async fn large_values(dir: &Path, backend: IoBackend, bytes: u64) -> Row {
    let path = dir.join(format!("large-{backend:?}"));
    let db = open(&path, backend).open().await.expect("open");
    let values = bytes / (64 << 10);
    let tasks = 64;
    let value = bytes::Bytes::from(vec![0x5au8; 64 << 10]);
    let t = Instant::now();
    let mut handles = Vec::new();
    for w in 0..tasks {
        let (db, value) = (db.clone(), value.clone());
        handles.push(tokio::spawn(async move {
            for i in (w..values).step_by(tasks as usize) {
                db.put(format!("{i:016}"), value.clone())
                    .await
                    .expect("put");
            }
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    let elapsed = t.elapsed();
    let st = db.stats();
    db.close().await.expect("close");
    let _ = std::fs::remove_dir_all(&path);
    Row {
        name: format!("silt {:?}: 64 KiB values, 64 tasks, Sync", st.io_backend),
        ops: values,
        elapsed,
        bytes: values * (64 << 10),
        note: format!(
            "avg group {:.1}, {} slabs recycled",
            st.avg_group_size, st.slabs_recycled
        ),
    }
}

/// 64 tasks put 100 B values with Durability::Sync.
async fn small_sync(dir: &Path, backend: IoBackend, n: u64) -> Row {
    let path = dir.join(format!("small-{backend:?}"));
    let db = open(&path, backend).open().await.expect("open");
    let mut row = workloads::fill_concurrent(&db, 0, n, 64).await;
    row.name = format!(
        "silt {:?}: 100 B values, 64 tasks, Sync",
        db.stats().io_backend
    );
    db.close().await.expect("close");
    let _ = std::fs::remove_dir_all(&path);
    row
}
