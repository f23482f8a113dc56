//! silt against fjall, redb and sled (and RocksDB with `--features rocksdb`)
//! in one binary, on the same workloads and the same disk, each called the
//! way an async service must call it: silt awaited from tasks, the peers
//! through `spawn_blocking` (one blocking call per operation).
//!
//! `cargo bench --features compare --bench compare`
//! (SILT_CMP_N = keys for the fills, default 1,000,000; SILT_BENCH_DIR = the
//! disk, default a temp dir).

mod bench_env;
mod peers;
mod workloads;

use peers::{Kind, Peer};
use silt::{Db, Durability};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use workloads::{disk_bytes, key, percentiles, value};

/// One open store: silt natively, a peer behind spawn_blocking.
#[derive(Clone)]
enum Store {
    Silt(Db),
    Peer(Arc<dyn Peer>),
}

async fn open(kind: Kind, path: &Path, d: Durability) -> Store {
    if kind == Kind::Silt {
        return Store::Silt(
            Db::builder(path)
                .durability(d)
                .open()
                .await
                .expect("silt open"),
        );
    }
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || Store::Peer(peers::open_peer(kind, &path)))
        .await
        .expect("open task")
}

impl Store {
    async fn put(&self, k: Vec<u8>, v: bytes::Bytes, sync: bool) {
        match self {
            Store::Silt(db) => db.put(k, v).await.expect("silt put"),
            Store::Peer(p) => {
                let p = p.clone();
                tokio::task::spawn_blocking(move || p.put(&k, &v, sync))
                    .await
                    .expect("put task")
            }
        }
    }
    async fn get(&self, k: Vec<u8>) -> Option<usize> {
        match self {
            Store::Silt(db) => db.get(&k).await.expect("silt get").map(|v| v.len()),
            Store::Peer(p) => {
                let p = p.clone();
                tokio::task::spawn_blocking(move || p.get(&k))
                    .await
                    .expect("get task")
            }
        }
    }
    async fn close(self) {
        match self {
            Store::Silt(db) => db.close().await.expect("silt close"),
            Store::Peer(p) => tokio::task::spawn_blocking(move || {
                p.sync();
                drop(p);
            })
            .await
            .expect("close task"),
        }
    }
}

/// One measured figure and an optional latency note.
#[derive(Clone, Debug)]
struct Figure {
    value: f64,
    note: String,
}

async fn fill(store: &Store, n: u64, tasks: u64, sync: bool) -> Figure {
    let t = Instant::now();
    let per = n / tasks;
    let mut hs = Vec::new();
    for w in 0..tasks {
        let s = store.clone();
        hs.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per as usize);
            for i in w * per..(w + 1) * per {
                let t = Instant::now();
                s.put(key(i), value(i).into(), sync).await;
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for h in hs {
        lat.extend(h.await.expect("task"));
    }
    Figure {
        value: (per * tasks) as f64 / t.elapsed().as_secs_f64(),
        note: percentiles(&mut lat),
    }
}

async fn gets(store: &Store, keys: u64, n: u64, tasks: u64, missing: bool) -> Figure {
    let t = Instant::now();
    let per = n / tasks;
    let mut hs = Vec::new();
    for w in 0..tasks {
        let s = store.clone();
        hs.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per as usize);
            for i in workloads::random_keys(w, keys, missing).take(per as usize) {
                let t = Instant::now();
                let got = s.get(key(i)).await;
                lat.push(t.elapsed());
                assert_eq!(got.is_some(), !missing, "key {i}");
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for h in hs {
        lat.extend(h.await.expect("task"));
    }
    Figure {
        value: (per * tasks) as f64 / t.elapsed().as_secs_f64(),
        note: percentiles(&mut lat),
    }
}

/// 64 KiB values from 64 tasks, then a sync; then read back. MB/s each.
async fn large(store: &Store, count: u64) -> (Figure, Figure) {
    let v = bytes::Bytes::from(vec![0xa5u8; 64 << 10]);
    let t = Instant::now();
    let mut hs = Vec::new();
    for w in 0..64 {
        let (s, v) = (store.clone(), v.clone());
        hs.push(tokio::spawn(async move {
            for i in (w..count).step_by(64) {
                s.put(format!("large{i:010}").into_bytes(), v.clone(), false)
                    .await;
            }
        }));
    }
    for h in hs {
        h.await.expect("task");
    }
    match store {
        Store::Silt(db) => db.sync().await.expect("sync"),
        Store::Peer(p) => {
            let p = p.clone();
            tokio::task::spawn_blocking(move || p.sync())
                .await
                .expect("sync task")
        }
    }
    let mb = (count * (64 << 10)) as f64 / 1e6;
    let write = mb / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for i in 0..count {
        assert_eq!(
            store.get(format!("large{i:010}").into_bytes()).await,
            Some(64 << 10)
        );
    }
    let read = mb / t.elapsed().as_secs_f64();
    (
        Figure {
            value: write,
            note: String::new(),
        },
        Figure {
            value: read,
            note: String::new(),
        },
    )
}

const ROWS: [(&str, bool); 11] = [
    ("fill, 1 task, no fsync (ops/s)", true),
    ("fill, 64 tasks, no fsync (ops/s)", true),
    ("64 tasks, fsync before each ack (ops/s)", true),
    ("hot random gets, 1 task (ops/s)", true),
    ("hot random gets, 2 tasks (ops/s)", true),
    ("gets of missing keys (ops/s)", true),
    ("64 KiB values, write + sync (MB/s)", true),
    ("64 KiB values, read (MB/s)", true),
    ("reopen after the fill (ms)", false),
    ("bytes on disk / logical bytes", false),
    ("(latency notes below)", true),
];

async fn measure(kind: Kind, dir: &Path, n: u64) -> Vec<Figure> {
    let fig = |value: f64| Figure {
        value,
        note: String::new(),
    };
    let base = dir.join(format!("{kind:?}"));
    let mut out = Vec::new();

    let s = open(kind, &base.join("seq"), Durability::Buffered).await;
    out.push(fill(&s, n, 1, false).await);
    s.close().await;

    let path = base.join("conc");
    let s = open(kind, &path, Durability::Buffered).await;
    out.push(fill(&s, n, 64, false).await);
    s.close().await;

    let s = open(kind, &base.join("sync"), Durability::Sync).await;
    out.push(fill(&s, (n / 50).max(6400), 64, true).await);
    s.close().await;

    let t = Instant::now();
    let s = open(kind, &path, Durability::Buffered).await;
    let reopen = t.elapsed();
    let reads = (n / 2).max(10_000);
    out.push(gets(&s, n, reads, 1, false).await);
    out.push(gets(&s, n, reads, 2, false).await);
    out.push(gets(&s, n, reads, 1, true).await);
    s.close().await;

    let s = open(kind, &base.join("large"), Durability::Buffered).await;
    let (w, r) = large(&s, 4096).await;
    out.push(w);
    out.push(r);
    s.close().await;

    out.push(fig(reopen.as_secs_f64() * 1e3));
    out.push(fig(disk_bytes(&path) as f64 / (n * 116) as f64));
    eprintln!("{kind:?} done");
    out
}

fn main() {
    let n: u64 = std::env::var("SILT_CMP_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    // Every fill splits evenly over 64 tasks.
    let n = (n / 64).max(1) * 64;
    let (tmp, rt) = bench_env::bench_env();
    let kinds = [
        Kind::Silt,
        Kind::Fjall,
        Kind::Redb,
        Kind::Sled,
        #[cfg(feature = "rocksdb")]
        Kind::Rocks,
    ];
    let results: Vec<(Kind, Vec<Figure>)> = kinds
        .iter()
        .map(|&k| (k, rt.block_on(measure(k, tmp.path(), n))))
        .collect();

    println!("\nsilt vs peers: {n} keys of 16 B with 100 B values; peers through spawn_blocking; 2 worker threads\n");
    let mut header = format!("| {:<42} |", "workload");
    for (k, _) in &results {
        header += &format!(" {:>10} |", format!("{k:?}"));
    }
    header += " silt vs best peer |";
    println!("{header}");
    println!("|{}|", vec!["---"; results.len() + 2].join("|"));
    for (row, (name, higher_better)) in ROWS.iter().enumerate().take(ROWS.len() - 1) {
        let mut line = format!("| {name:<42} |");
        for (_, figs) in &results {
            line += &format!(" {:>10.2} |", figs[row].value);
        }
        let silt = results[0].1[row].value;
        let peers = results[1..].iter().map(|(_, f)| f[row].value);
        let best = if *higher_better {
            peers.fold(f64::MIN, f64::max)
        } else {
            peers.fold(f64::MAX, f64::min)
        };
        let ratio = if *higher_better {
            silt / best
        } else {
            best / silt
        };
        line += &format!(" {ratio:>16.2}x |");
        println!("{line}");
    }
    println!("\nlatency (p50 / p99) per store:");
    for (k, figs) in &results {
        for (i, name) in [
            (0, "fill 1 task"),
            (1, "fill 64 tasks"),
            (2, "sync 64 tasks"),
            (3, "gets 1 task"),
            (4, "gets 2 tasks"),
        ] {
            println!("  {k:?} {name}: {}", figs[i].note);
        }
    }
}
