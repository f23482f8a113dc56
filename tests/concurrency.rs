//! Many tasks on a multi-thread runtime, each always reading its own latest
//! write, while slabs rotate and flush underneath.

mod common;

use silt::{Db, Durability};

async fn own_keys(db: Db, tasks: u32, rounds: u32) {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let db = db.clone();
        handles.push(tokio::spawn(async move {
            for r in 0..rounds {
                let k = format!("task{t}-key{}", r % 7);
                let v = format!("task{t}-round{r}-").repeat(4);
                db.put(k.clone(), v.clone()).await.unwrap();
                let got = db.get(k.as_bytes()).await.unwrap();
                assert_eq!(got.as_deref(), Some(v.as_bytes()), "task {t} round {r}");
                if r % 5 == 4 {
                    db.delete(k.clone()).await.unwrap();
                    assert_eq!(db.get(k.as_bytes()).await.unwrap(), None);
                }
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_tasks_read_their_own_writes() {
    for d in [Durability::Sync, Durability::Buffered, Durability::None] {
        let dir = tempfile::tempdir().unwrap();
        let db = common::small(dir.path())
            .durability(d)
            .open()
            .await
            .unwrap();
        own_keys(db.clone(), 64, 150).await;
        let st = db.stats();
        // Background GC may already have compacted the published segments.
        assert!(
            st.segments > 0 || st.gc_files > 0,
            "{d:?}: slabs rotated and flushed: {st:?}"
        );
        if d != Durability::None {
            assert!(
                st.max_group_size > 1,
                "{d:?}: concurrent writers share group commits: {st:?}"
            );
        }
        db.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_see_a_torn_or_older_value() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::small(dir.path())
        .durability(Durability::Buffered)
        .open()
        .await
        .unwrap();
    let writer = {
        let db = db.clone();
        tokio::spawn(async move {
            for i in 0..3000u32 {
                // Each value is its counter repeated: a torn read would mix.
                db.put("hot", i.to_string().repeat(50)).await.unwrap();
            }
        })
    };
    let mut readers = Vec::new();
    for _ in 0..4 {
        let db = db.clone();
        readers.push(tokio::spawn(async move {
            let mut last = 0u32;
            for _ in 0..3000 {
                if let Some(v) = db.get(b"hot").await.unwrap() {
                    let s = std::str::from_utf8(&v).unwrap();
                    let n: u32 = s[..s.len() / 50].parse().unwrap();
                    assert_eq!(s, n.to_string().repeat(50), "torn value");
                    assert!(n >= last, "went back from {last} to {n}");
                    last = n;
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    writer.await.unwrap();
    for r in readers {
        r.await.unwrap();
    }
    db.close().await.unwrap();
}
