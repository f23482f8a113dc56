//! Cache mode: a bounded on-disk cache. No WAL (`Durability::None`), and the
//! oldest segments are dropped once the store passes its capacity.
//!
//! `cargo run --release --example cache [DIR]`: streams 256 MiB of 4 KiB
//! values through a 64 MiB cache, then reads back recent and old keys.

use silt::{Db, Durability};

#[tokio::main]
async fn main() -> silt::Result<()> {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = std::env::args()
        .nth(1)
        .map(Into::into)
        .unwrap_or_else(|| tmp.path().join("cache"));
    let db = Db::builder(&dir)
        .durability(Durability::None)
        .slab_size(8 << 20)
        .capacity(64 << 20)
        .open()
        .await?;
    let n = 65_536u64; // 256 MiB of 4 KiB values
    let writer = db.clone();
    tokio::spawn(async move {
        for i in 0..n {
            writer
                .put(format!("object:{i}"), vec![(i % 251) as u8; 4096])
                .await?;
        }
        writer.flush().await
    })
    .await
    .expect("task")?;
    let (mut hits, mut misses) = (0u64, 0u64);
    for i in (0..n).step_by(64) {
        match db.get(format!("object:{i}").as_bytes()).await? {
            Some(v) => {
                assert_eq!(v[0], (i % 251) as u8);
                hits += 1;
            }
            None => misses += 1,
        }
    }
    let st = db.stats();
    println!(
        "wrote {} MiB into a 64 MiB cache: {} segments evicted ({} MiB), {} MiB kept on disk",
        (n * 4096) >> 20,
        st.evictions,
        st.evicted_bytes >> 20,
        st.segment_bytes >> 20
    );
    println!(
        "sampled reads: {hits} hits, {misses} misses (the oldest objects were evicted); {} keys live",
        st.keys
    );
    db.close().await
}
