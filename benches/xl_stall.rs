//! Small writes while an XL value is written (issue 16.8): how long do
//! other writers wait?
//!
//! `cargo bench --bench xl_stall` (SILT_XL_MIB=size of the XL value,
//! default 1024; SILT_XL_DURABILITY=buffered for `Buffered`, default `Sync`;
//! SILT_BENCH_DIR as for the other benches). 4 tasks put 100-byte values in a loop while one task
//! puts one XL value; the table gives the XL put's time and the small
//! puts' latencies while it was in flight. Before the XL path let other
//! writes go on, every small put waited for the whole XL write.

mod bench_env;

use bytes::Bytes;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let mib: usize = std::env::var("SILT_XL_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let durability = match std::env::var("SILT_XL_DURABILITY").as_deref() {
        Ok("buffered") => silt::Durability::Buffered,
        _ => silt::Durability::Sync,
    };
    let (tmp, rt) = bench_env::bench_env();
    rt.block_on(async {
        let db = silt::Db::builder(tmp.path())
            .durability(durability)
            .open()
            .await
            .expect("open");
        let value = Bytes::from(vec![7u8; mib << 20]);
        // Warm up: the first slab, the log files.
        for i in 0..1000u32 {
            db.put(format!("warm{i}"), vec![1u8; 100])
                .await
                .expect("put");
        }
        // 0: before the XL put, 1: while it runs, 2: after.
        let phase = Arc::new(AtomicU8::new(0));
        let writers: Vec<_> = (0..4u32)
            .map(|t| {
                let (db, phase) = (db.clone(), phase.clone());
                tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let mut i = 0u64;
                    loop {
                        let during = match phase.load(Ordering::Acquire) {
                            0 => false,
                            1 => true,
                            _ => break,
                        };
                        let start = Instant::now();
                        db.put(format!("t{t}-{i}"), vec![2u8; 100])
                            .await
                            .expect("small put");
                        // Every put that started while the XL put ran,
                        // however late it completed.
                        if during {
                            lat.push(start.elapsed());
                        }
                        i += 1;
                    }
                    lat
                })
            })
            .collect();
        // Let the small writers start.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let start = Instant::now();
        phase.store(1, Ordering::Release);
        db.put("xl", value).await.expect("XL put");
        let xl_time = start.elapsed();
        phase.store(2, Ordering::Release);
        let mut lat = Vec::new();
        for w in writers {
            lat.extend(w.await.expect("writer task"));
        }
        lat.sort_unstable();
        let q = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
        println!(
            "\nsilt XL stall bench: one {mib} MiB put, 4 tasks of 100 B puts, {durability:?}\n"
        );
        let slow = lat
            .iter()
            .filter(|l| **l > Duration::from_millis(10))
            .count();
        println!("| XL put | small puts started meanwhile | p50 | p99 | max | over 10 ms |");
        println!("|---|---|---|---|---|---|");
        println!(
            "| {:.2} s ({:.0} MiB/s) | {} | {:.2} ms | {:.2} ms | {:.1} ms | {slow} |",
            xl_time.as_secs_f64(),
            mib as f64 / xl_time.as_secs_f64(),
            lat.len(),
            q(0.5),
            q(0.99),
            q(1.0)
        );
        db.close().await.expect("close");
    });
}
