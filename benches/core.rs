//! The durable core's standard workloads, one results table.
//!
//! `cargo bench --bench core` (SILT_BENCH_N=keys, default 1,000,000;
//! SILT_BENCH_DIR=a directory on the disk to measure, default a temp dir).

mod workloads;

use silt::{Db, Durability};
use std::time::Instant;
use workloads::*;

fn main() {
    let n: u64 = std::env::var("SILT_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let base = std::env::var_os("SILT_BENCH_DIR").map(std::path::PathBuf::from);
    let tmp = match &base {
        Some(b) => tempfile::tempdir_in(b),
        None => tempfile::tempdir(),
    }
    .expect("temp dir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let rows = rt.block_on(run(tmp.path(), n));
    println!("\nsilt core bench: {n} keys of 16 B with 100 B values, 2 worker threads\n");
    print_table(&rows);
}

async fn run(dir: &std::path::Path, n: u64) -> Vec<Row> {
    let mut rows = Vec::new();
    let open = |name: &str, d: Durability| Db::builder(dir.join(name)).durability(d).open();

    let db = open("seq", Durability::Buffered).await.expect("open");
    let mut r = fill_sequential(&db, 0, n).await;
    r.name = format!("Buffered {}", r.name);
    rows.push(r);
    db.close().await.expect("close");

    let db = open("conc", Durability::Buffered).await.expect("open");
    let mut r = fill_concurrent(&db, 0, n, 64).await;
    r.name = format!("Buffered {}", r.name);
    rows.push(r);
    db.close().await.expect("close");

    let db = open("batch", Durability::Buffered).await.expect("open");
    let mut r = fill_batches(&db, 0, n, 256).await;
    r.name = format!("Buffered {}", r.name);
    rows.push(r);
    db.close().await.expect("close");

    let db = open("sync", Durability::Sync).await.expect("open");
    let mut r = fill_concurrent(&db, 0, n / 4, 64).await;
    r.name = format!("Sync {} (n/4 keys)", r.name);
    rows.push(r);
    db.close().await.expect("close");

    // Reads on the 64-task Buffered fill: first from memory right after the
    // fill, then after reopen (served from segment mmaps, page cache hot).
    let path = dir.join("conc");
    let t = Instant::now();
    let db = Db::builder(&path).open().await.expect("reopen");
    let reopen = t.elapsed();
    let st = db.stats();
    rows.push(Row {
        name: "reopen (footers only)".into(),
        ops: st.keys,
        elapsed: reopen,
        bytes: 0,
        note: format!("{:.1} ms", reopen.as_secs_f64() * 1e3),
    });
    let keys = st.keys;
    rows.push(random_gets(&db, keys, n, 1, false).await);
    rows.push(random_gets(&db, keys, n, 2, false).await);
    rows.push(random_gets(&db, keys, n, 64, false).await);
    rows.push(random_gets(&db, keys, n, 1, true).await);
    let disk = disk_bytes(&path);
    rows.push(Row {
        name: "index RAM per key / disk per logical byte".into(),
        ops: keys,
        elapsed: std::time::Duration::from_secs(1),
        bytes: 0,
        note: format!(
            "{:.1} B/key, {:.2} x on disk",
            st.index_bytes as f64 / keys.max(1) as f64,
            disk as f64 / (keys.max(1) * 116) as f64
        ),
    });
    db.close().await.expect("close");
    rows
}
