//! Space: how much disk the stores keep after overwrites and deletes, what a
//! compaction gets back and how long it takes (silt vs the peers, same
//! workload, same run); and silt's cache mode under a stream much larger
//! than its capacity.
//!
//! `cargo bench --features compare --bench space`
//! (SILT_SPACE_N = keys, default 1,000,000; SILT_CACHE_GIB = bytes streamed
//! through the cache, default 2; SILT_BENCH_DIR = the disk).
//!
//! Values are 100 pseudo-random bytes, so compression (RocksDB, fjall) does
//! not stand in for garbage collection.

mod bench_env;
mod peers;
mod workloads;

use peers::{open_peer, Kind};
use silt::{Db, Durability};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use workloads::{disk_bytes, key};

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// 100 incompressible bytes for key `i` in `round`.
fn value(i: u64, round: u64) -> Vec<u8> {
    (0..13u64)
        .flat_map(|w| mix(i ^ (round << 40) ^ (w << 56)).to_le_bytes())
        .take(100)
        .collect()
}

/// The workload, as a list of steps: fill every key; overwrite a random
/// half, twice (independent halves); delete a random 10 %.
#[derive(Clone, Copy)]
enum Step {
    Put(u64, u64),
    Delete(u64),
}

fn phases(n: u64) -> Vec<Vec<Step>> {
    let fill = (0..n).map(|i| Step::Put(i, 0)).collect();
    let over = |round: u64| {
        (0..n)
            .filter(|&i| mix(i + round * n) % 2 == 0)
            .map(|i| Step::Put(i, round))
            .collect()
    };
    let deletes = (0..n)
        .filter(|&i| mix(i ^ 0xdead_beef) % 10 == 0)
        .map(Step::Delete)
        .collect();
    vec![fill, over(1), over(2), deletes]
}

fn live_keys(n: u64) -> u64 {
    (0..n).filter(|&i| mix(i ^ 0xdead_beef) % 10 != 0).count() as u64
}

struct SpaceRow {
    store: String,
    before: u64,
    after: Option<u64>,
    compact: Option<Duration>,
    note: String,
}

async fn silt_space(dir: &Path, n: u64) -> SpaceRow {
    let db = Db::builder(dir)
        .durability(Durability::Buffered)
        .open()
        .await
        .expect("open");
    for phase in phases(n) {
        let phase = Arc::new(phase);
        let mut tasks = Vec::new();
        for w in 0..64usize {
            let (db, phase) = (db.clone(), phase.clone());
            tasks.push(tokio::spawn(async move {
                for step in phase.iter().skip(w).step_by(64) {
                    match *step {
                        Step::Put(i, r) => db.put(key(i), value(i, r)).await.expect("put"),
                        Step::Delete(i) => db.delete(key(i)).await.expect("delete"),
                    }
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
    }
    db.flush().await.expect("flush");
    let st = db.stats();
    let before = disk_bytes(dir);
    let t = Instant::now();
    let report = db.compact().await.expect("compact");
    db.flush().await.expect("flush");
    let took = t.elapsed();
    let after = disk_bytes(dir);
    let end = db.stats();
    db.close().await.expect("close");
    SpaceRow {
        store: "silt".into(),
        before,
        after: Some(after),
        compact: Some(took),
        note: format!(
            "background GC during the load: {} files, {} MB; compact: {} files, {} moved, {} tombstones kept / {} dropped; live/record bytes after {:.3}; record bytes / logical {:.3}",
            st.gc_files,
            st.gc_reclaimed_bytes / 1_000_000,
            report.files_rewritten,
            report.records_moved,
            report.tombstones_kept,
            report.tombstones_dropped,
            end.live_bytes as f64 / end.record_bytes as f64,
            end.record_bytes as f64 / (live_keys(n) * 116) as f64,
        ),
    }
}

fn peer_space(kind: Kind, dir: &Path, n: u64) -> SpaceRow {
    let peer = open_peer(kind, dir);
    for phase in phases(n) {
        for step in phase {
            match step {
                Step::Put(i, r) => peer.put(&key(i), &value(i, r), false),
                Step::Delete(i) => peer.delete(&key(i)),
            }
        }
    }
    peer.sync();
    let before = disk_bytes(dir);
    let t = Instant::now();
    let compacted = peer.compact();
    let took = t.elapsed();
    peer.sync();
    let after = disk_bytes(dir);
    SpaceRow {
        store: format!("{kind:?}"),
        before,
        after: compacted.then_some(after),
        compact: compacted.then_some(took),
        note: if compacted {
            String::new()
        } else {
            "no compaction call".into()
        },
    }
}

/// Cache mode: `capacity` bytes, a stream of `total` bytes of 4 KiB values
/// with unique keys; disk use sampled every 5 ms; then hit rates.
async fn cache_mode(dir: &Path, capacity: u64, total: u64) {
    const VALUE: u64 = 4096;
    let slab = 16 << 20;
    let db = Db::builder(dir)
        .durability(Durability::None)
        .slab_size(slab)
        .capacity(capacity)
        .open()
        .await
        .expect("open");
    let n = total / VALUE;
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done, dir) = (peak.clone(), done.clone(), dir.to_path_buf());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(disk_bytes(&dir), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let v = bytes::Bytes::from(vec![0x5au8; VALUE as usize]);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..16u64 {
        let (db, v) = (db.clone(), v.clone());
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(16) {
                db.put(key(i), v.clone()).await.expect("put");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    db.flush().await.expect("flush");
    let took = t.elapsed();
    done.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let st = db.stats();
    // Reads: uniformly over everything written, and over the newest
    // `capacity` worth of keys (what a cache of that size can hold).
    let recent = capacity / VALUE;
    let mut all_hits = 0u64;
    let mut recent_hits = 0u64;
    let probes = 100_000u64;
    for j in 0..probes {
        let i = mix(j) % n;
        all_hits += db.get(&key(i)).await.expect("get").is_some() as u64;
        let r = n - 1 - mix(j ^ 0xabc) % recent;
        recent_hits += db.get(&key(r)).await.expect("get").is_some() as u64;
    }
    db.close().await.expect("close");
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "\ncache mode: capacity {:.0} MiB, slab {:.0} MiB, {:.0} MiB streamed as {} puts of 4 KiB in {:.1} s ({:.0} MB/s)",
        mib(capacity),
        mib(slab as u64),
        mib(total),
        n,
        took.as_secs_f64(),
        total as f64 / 1e6 / took.as_secs_f64()
    );
    println!(
        "  peak disk use {:.1} MiB (capacity + one slab = {:.0} MiB); {} segments evicted ({:.0} MiB)",
        mib(peak.load(Ordering::Relaxed)),
        mib(capacity + slab as u64),
        st.evictions,
        mib(st.evicted_bytes)
    );
    println!(
        "  hit rate: {:.1} % of uniform reads over all {} keys (at most {:.1} % fit), {:.1} % of reads over the newest {} keys",
        all_hits as f64 * 100.0 / probes as f64,
        n,
        capacity as f64 * 100.0 / total as f64,
        recent_hits as f64 * 100.0 / probes as f64,
        recent
    );
}

fn main() {
    let n: u64 = std::env::var("SILT_SPACE_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let gib: u64 = std::env::var("SILT_CACHE_GIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let (tmp, rt) = bench_env::bench_env();
    let logical = live_keys(n) * 116;
    let mut rows = vec![rt.block_on(silt_space(&tmp.path().join("silt"), n))];
    eprintln!("silt done");
    for kind in [
        Kind::Fjall,
        Kind::Redb,
        Kind::Sled,
        #[cfg(feature = "rocksdb")]
        Kind::Rocks,
    ] {
        let path = tmp.path().join(format!("{kind:?}"));
        rows.push(peer_space(kind, &path, n));
        eprintln!("{kind:?} done");
    }
    println!(
        "\nspace: {n} keys of 16 B + 100 random bytes; overwrite a random 50 % twice; delete 10 %; compact. Live logical bytes: {logical}\n"
    );
    println!(
        "| {:<6} | {:>22} | {:>21} | {:>12} |",
        "store", "disk / live, before", "disk / live, after", "compact (s)"
    );
    println!("|---|---|---|---|");
    for r in &rows {
        let amp = |b: u64| format!("{:.3} ({} MB)", b as f64 / logical as f64, b / 1_000_000);
        println!(
            "| {:<6} | {:>22} | {:>21} | {:>12} |",
            r.store,
            amp(r.before),
            r.after.map(amp).unwrap_or_else(|| "-".into()),
            r.compact
                .map(|d| format!("{:.2}", d.as_secs_f64()))
                .unwrap_or_else(|| "-".into()),
        );
    }
    for r in &rows {
        if !r.note.is_empty() {
            println!("  {}: {}", r.store, r.note);
        }
    }
    rt.block_on(cache_mode(&tmp.path().join("cache"), 256 << 20, gib << 30));
}
