//! Std vs io_uring, and the disk's own limit measured by fio in the same run.
//!
//! `bash benches/io_backends.sh` (installs fio if missing), or
//! `cargo bench --bench io_backends`. SILT_BENCH_BYTES sets the volume of
//! the 64 KiB-value test (default 2 GiB), SILT_BENCH_TASKS its writers
//! (default 64), SILT_BENCH_ROUNDS the interleaved rounds (default 6),
//! SILT_BENCH_DIR the disk.

mod bench_env;
mod workloads;

use silt::{Db, Durability, IoBackend};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use workloads::{print_table, Row};

fn main() {
    let env_num = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let bytes = env_num("SILT_BENCH_BYTES", 2 << 30);
    // This VM's disk varies by ±25 % from one run to the next, so fio and
    // silt run interleaved, several rounds, and each row is the median.
    let rounds = env_num("SILT_BENCH_ROUNDS", 6).max(1) as usize;
    let (tmp, rt) = bench_env::bench_env();
    // SILT_BENCH_ONLY=fio,large,flush,buffered,small (any of them) runs those
    // parts.
    let only = std::env::var("SILT_BENCH_ONLY").unwrap_or_default();
    let want = |part: &str| only.is_empty() || only.split(',').any(|p| p == part);
    // Each row's runs, by row name, in the order rows first appear.
    let mut runs: Vec<(String, Vec<Row>)> = Vec::new();
    let mut record = |row: Option<Row>| {
        let Some(row) = row else { return };
        match runs.iter_mut().find(|(name, _)| *name == row.name) {
            Some((_, rows)) => rows.push(row),
            None => runs.push((row.name.clone(), vec![row])),
        }
    };
    for round in 0..rounds {
        if want("fio") {
            record(fio(tmp.path(), bytes, false));
            record(fio(tmp.path(), bytes, true));
        }
        // The backends take turns going first: the first silt run of a
        // round measured up to 40 % slower than the second, whichever
        // backend it was (docs/decisions.md).
        let mut backends = [IoBackend::Std, IoBackend::Uring];
        if round % 2 == 1 {
            backends.reverse();
        }
        for backend in backends {
            if want("large") {
                let row = large_values(tmp.path(), backend, bytes, Durability::Sync);
                record(Some(rt.block_on(row)));
            }
            if want("flush") {
                let row = large_values(tmp.path(), backend, bytes, Durability::None);
                record(Some(rt.block_on(row)));
            }
            if want("buffered") {
                let row = large_values(tmp.path(), backend, bytes, Durability::Buffered);
                record(Some(rt.block_on(row)));
            }
            if want("small") {
                record(Some(rt.block_on(small_sync(tmp.path(), backend, 200_000))));
            }
        }
    }
    let rows: Vec<Row> = runs.into_iter().filter_map(|(_, r)| median(r)).collect();
    println!(
        "\nsilt I/O backends: {} MiB of 64 KiB values and 200k 100 B values, Durability::Sync, 64 tasks; median of {rounds} interleaved rounds\n",
        bytes >> 20
    );
    print_table(&rows);
}

/// The run with the median time, its note extended by the spread.
fn median(mut runs: Vec<Row>) -> Option<Row> {
    runs.sort_by_key(|r| r.elapsed);
    let (lo, hi) = (runs.last()?.mb_per_sec(), runs.first()?.mb_per_sec());
    let n = runs.len();
    let mut row = runs.swap_remove(n / 2);
    if n > 1 {
        let spread = if row.bytes >> 20 > 100 {
            format!("{lo:.0}–{hi:.0} MB/s")
        } else {
            let ops = |mb: f64| mb * 1e6 / (row.bytes as f64 / row.ops as f64);
            format!("{:.0}–{:.0} ops/s", ops(lo), ops(hi))
        };
        row.note = format!("{}; range {spread}", row.note);
    }
    Some(row)
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
    bench_env::settle();
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

/// 64 tasks put 64 KiB values until `bytes` are written. With
/// `Durability::Sync` every put waits for the WAL; with `None` there is no
/// WAL and the time runs until `flush()` has written every slab, so the row
/// measures the flush workers' writes.
async fn large_values(dir: &Path, backend: IoBackend, bytes: u64, durability: Durability) -> Row {
    let path = dir.join(format!("large-{backend:?}"));
    let db = open(&path, backend)
        .durability(durability)
        .open()
        .await
        .expect("open");
    let values = bytes / (64 << 10);
    let tasks: u64 = std::env::var("SILT_BENCH_TASKS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
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
    match durability {
        Durability::None => db.flush().await.expect("flush"),
        Durability::Buffered => db.sync().await.expect("sync"),
        Durability::Sync => {}
    }
    let elapsed = t.elapsed();
    let st = db.stats();
    db.close().await.expect("close");
    let _ = std::fs::remove_dir_all(&path);
    bench_env::settle();
    Row {
        name: format!(
            "silt {:?}: 64 KiB values, {tasks} tasks, {durability:?}",
            st.io_backend
        ),
        ops: values,
        elapsed,
        bytes: values * (64 << 10),
        note: if durability == Durability::None {
            "no WAL; until flush() returns".into()
        } else if durability == Durability::Buffered {
            "until sync() returns".into()
        } else {
            format!(
                "avg group {:.1}, {:.2} groups/sync",
                st.avg_group_size,
                groups_per_sync(&st)
            )
        },
    }
}

/// 64 tasks put 100 B values with Durability::Sync.
async fn small_sync(dir: &Path, backend: IoBackend, n: u64) -> Row {
    let path = dir.join(format!("small-{backend:?}"));
    let db = open(&path, backend).open().await.expect("open");
    let mut row = workloads::fill_concurrent(&db, 0, n, 64).await;
    let st = db.stats();
    row.name = format!("silt {:?}: 100 B values, 64 tasks, Sync", st.io_backend);
    row.note = format!("{}, {:.2} groups/sync", row.note, groups_per_sync(&st));
    db.close().await.expect("close");
    let _ = std::fs::remove_dir_all(&path);
    bench_env::settle();
    row
}

fn groups_per_sync(st: &silt::Stats) -> f64 {
    st.commit_groups as f64 / st.wal_syncs.max(1) as f64
}
