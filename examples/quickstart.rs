//! Open a store, put, get, batch, scan, close; then time 100k puts and gets.
//!
//! `cargo run --release --example quickstart [DIR]` (default: a temp dir).

use futures::StreamExt;
use silt::{Db, Durability, WriteBatch};
use std::time::Instant;

#[tokio::main]
async fn main() -> silt::Result<()> {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = std::env::args()
        .nth(1)
        .map(Into::into)
        .unwrap_or_else(|| tmp.path().join("quickstart"));
    println!("store: {}", dir.display());

    // Durability::Sync (the default): put() resolves after an fdatasync.
    let db = Db::open(&dir).await?;
    db.put("hello", "world").await?;
    println!("get(hello) = {:?}", db.get(b"hello").await?);

    // A batch is atomic: after any crash, all of it or none of it.
    let mut batch = WriteBatch::new();
    batch.put("user:1", "ada");
    batch.put("user:2", "grace");
    batch.delete("hello");
    db.write(batch).await?;

    let mut pairs = Box::pin(db.scan());
    while let Some(pair) = pairs.next().await {
        let (k, v) = pair?;
        println!(
            "scan: {} = {}",
            String::from_utf8_lossy(&k),
            String::from_utf8_lossy(&v)
        );
    }
    db.close().await?;

    // 100k puts from one task, then 100k gets, with Buffered durability.
    // The loop runs in a spawned task: `main`'s own thread is not a runtime
    // worker, so every call from it would cross threads twice.
    let db = Db::builder(&dir)
        .durability(Durability::Buffered)
        .open()
        .await?;
    let n = 100_000u64;
    let db2 = db.clone();
    let (put, get) = tokio::spawn(async move {
        let t = Instant::now();
        for i in 0..n {
            db2.put(format!("key{i:012}"), vec![b'v'; 100]).await?;
        }
        let put = t.elapsed();
        let t = Instant::now();
        for i in 0..n {
            let v = db2.get(format!("key{i:012}").as_bytes()).await?;
            assert!(v.is_some());
        }
        Ok::<_, silt::Error>((put, t.elapsed()))
    })
    .await
    .expect("task")?;
    let st = db.stats();
    db.close().await?;
    println!(
        "{n} puts in {:.2} s ({:.0}/s), {n} gets in {:.2} s ({:.0}/s); {} keys, {:.1} index bytes/key",
        put.as_secs_f64(),
        n as f64 / put.as_secs_f64(),
        get.as_secs_f64(),
        n as f64 / get.as_secs_f64(),
        st.keys,
        st.index_bytes as f64 / st.keys as f64
    );
    Ok(())
}
