//! The standard silt workloads, shared by `benches/core.rs` and the CLI's
//! `bench` command (included by path, so there is one copy).
#![allow(dead_code)]

use silt::{Db, WriteBatch};
use std::time::{Duration, Instant};

/// 16-byte key number `i`.
pub fn key(i: u64) -> Vec<u8> {
    format!("{i:016}").into_bytes()
}

/// 100-byte value for key `i`.
pub fn value(i: u64) -> Vec<u8> {
    let mut v = format!("value-{i}-").into_bytes();
    v.resize(100, b'.');
    v
}

/// Random key numbers: `0..keys` (present) or `keys..2*keys` (missing),
/// from a cheap xorshift seeded per task, so every run asks the same keys.
pub fn random_keys(seed: u64, keys: u64, missing: bool) -> impl Iterator<Item = u64> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (seed + 1);
    std::iter::repeat_with(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if missing {
            keys + x % keys
        } else {
            x % keys
        }
    })
}

/// One line of a results table.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub ops: u64,
    pub elapsed: Duration,
    pub bytes: u64,
    pub note: String,
}

impl Row {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

pub fn print_table(rows: &[Row]) {
    println!(
        "| {:<44} | {:>10} | {:>12} | {:>9} | {:<34} |",
        "workload", "ops", "ops/s", "MB/s", "notes"
    );
    println!(
        "|{:-<46}|{:->12}|{:->14}|{:->11}|{:-<36}|",
        "", "", "", "", ""
    );
    for r in rows {
        println!(
            "| {:<44} | {:>10} | {:>12.0} | {:>9.1} | {:<34} |",
            r.name,
            r.ops,
            r.ops_per_sec(),
            r.mb_per_sec(),
            r.note
        );
    }
}

fn pair_bytes(n: u64) -> u64 {
    n * (16 + 100)
}

/// `n` sequential puts from one spawned task (a runtime worker, as in a
/// service; `block_on`'s thread is not a worker and would add two thread
/// hops per call).
pub async fn fill_sequential(db: &Db, start: u64, n: u64) -> Row {
    let t = Instant::now();
    let db2 = db.clone();
    tokio::spawn(async move {
        for i in start..start + n {
            db2.put(key(i), value(i)).await.expect("put");
        }
    })
    .await
    .expect("task");
    Row {
        name: "fill, 1 task, sequential puts".into(),
        ops: n,
        elapsed: t.elapsed(),
        bytes: pair_bytes(n),
        note: String::new(),
    }
}

/// `n` puts spread over `tasks` concurrent tasks.
pub async fn fill_concurrent(db: &Db, start: u64, n: u64, tasks: u64) -> Row {
    let t = Instant::now();
    let per = n / tasks;
    let mut handles = Vec::new();
    for w in 0..tasks {
        let db = db.clone();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per as usize);
            for i in start + w * per..start + (w + 1) * per {
                let t = Instant::now();
                db.put(key(i), value(i)).await.expect("put");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(h.await.expect("task"));
    }
    let elapsed = t.elapsed();
    let st = db.stats();
    Row {
        name: format!("fill, {tasks} tasks"),
        ops: per * tasks,
        elapsed,
        bytes: pair_bytes(per * tasks),
        note: format!(
            "{}, avg group {:.1}",
            percentiles(&mut lat),
            st.avg_group_size
        ),
    }
}

/// `n` puts as WriteBatches of `batch` from one spawned task.
pub async fn fill_batches(db: &Db, start: u64, n: u64, batch: u64) -> Row {
    let t = Instant::now();
    let db2 = db.clone();
    tokio::spawn(async move {
        let mut i = start;
        while i < start + n {
            let mut b = WriteBatch::new();
            for j in i..(i + batch).min(start + n) {
                b.put(key(j), value(j));
            }
            db2.write(b).await.expect("write");
            i += batch;
        }
    })
    .await
    .expect("task");
    Row {
        name: format!("fill, 1 task, batches of {batch}"),
        ops: n,
        elapsed: t.elapsed(),
        bytes: pair_bytes(n),
        note: String::new(),
    }
}

/// `n` gets of random existing keys (`0..keys`) from `tasks` tasks.
pub async fn random_gets(db: &Db, keys: u64, n: u64, tasks: u64, missing: bool) -> Row {
    let t = Instant::now();
    let per = n / tasks;
    let mut handles = Vec::new();
    for w in 0..tasks {
        let db = db.clone();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per as usize);
            for i in random_keys(w, keys, missing).take(per as usize) {
                let k = key(i);
                let t = Instant::now();
                let v = db.get(&k).await.expect("get");
                lat.push(t.elapsed());
                assert_eq!(v.is_some(), !missing, "key {i}");
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for h in handles {
        lat.extend(h.await.expect("task"));
    }
    Row {
        name: format!(
            "{} gets, {tasks} task{}",
            if missing { "missing-key" } else { "random" },
            if tasks == 1 { "" } else { "s" }
        ),
        ops: per * tasks,
        elapsed: t.elapsed(),
        bytes: if missing { 0 } else { per * tasks * 100 },
        note: percentiles(&mut lat),
    }
}

pub fn percentiles(lat: &mut [Duration]) -> String {
    if lat.is_empty() {
        return String::new();
    }
    lat.sort_unstable();
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    format!("p50 {:.1} µs, p99 {:.1} µs", p(0.5), p(0.99))
}

/// Bytes of every file under `path`.
pub fn disk_bytes(path: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(path) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                total += disk_bytes(&p);
            } else if let Ok(m) = e.metadata() {
                total += m.len();
            }
        }
    }
    total
}

/// Told when each workload of [`standard_suite`] starts and ends.
pub trait Progress {
    /// `total` operations (if known) against `db`; `db.stats().keys` grows
    /// during fills.
    fn start(&self, name: &str, db: &Db, total: Option<u64>);
    fn finish(&self, row: &Row);
}

/// No progress output.
pub struct Quiet;

impl Progress for Quiet {
    fn start(&self, _: &str, _: &Db, _: Option<u64>) {}
    fn finish(&self, _: &Row) {}
}

/// The standard workloads (the core bench and `silt bench`): fills with
/// Buffered from 1 task, 64 tasks and batches of 256, Sync from 64 tasks,
/// reopen, random and missing-key gets, index and disk footprint, a
/// follower's open and refresh. `n` keys
/// of 16 B with 100 B values, in stores under `dir`.
pub async fn standard_suite(dir: &std::path::Path, n: u64, progress: &dyn Progress) -> Vec<Row> {
    use silt::Durability;
    let mut rows = Vec::new();
    // SILT_BENCH_RUNTIME=dedicated|caller measures a writer placement
    // other than the default (docs/decisions.md, "Where the writer runs").
    let placement = match std::env::var("SILT_BENCH_RUNTIME").as_deref() {
        Ok("dedicated") => silt::StoreRuntime::Dedicated,
        Ok("caller") => silt::StoreRuntime::Caller,
        _ => silt::StoreRuntime::Auto,
    };
    let open = move |name: &str, d: Durability| {
        Db::builder(dir.join(name))
            .durability(d)
            .runtime(placement)
            .open()
    };
    let fills: [(&str, Durability, u64); 4] = [
        ("seq", Durability::Buffered, n),
        ("conc", Durability::Buffered, n),
        ("batch", Durability::Buffered, n),
        ("sync", Durability::Sync, n / 4),
    ];
    for (name, d, count) in fills {
        let db = open(name, d).await.expect("open");
        let label = match name {
            "seq" => "Buffered fill, 1 task, sequential puts",
            "conc" => "Buffered fill, 64 tasks",
            "batch" => "Buffered fill, 1 task, batches of 256",
            _ => "Sync fill, 64 tasks (n/4 keys)",
        };
        progress.start(label, &db, Some(count));
        let mut r = match name {
            "seq" => fill_sequential(&db, 0, count).await,
            "batch" => fill_batches(&db, 0, count, 256).await,
            _ => fill_concurrent(&db, 0, count, 64).await,
        };
        r.name = label.into();
        progress.finish(&r);
        rows.push(r);
        db.close().await.expect("close");
    }

    // Reads on the 64-task Buffered fill, after a reopen: served from the
    // segment mmaps, page cache hot.
    let path = dir.join("conc");
    let t = Instant::now();
    let db = Db::builder(&path)
        .runtime(placement)
        .open()
        .await
        .expect("reopen");
    let reopen = t.elapsed();
    let st = db.stats();
    let r = Row {
        name: "reopen (footers only)".into(),
        ops: st.keys,
        elapsed: reopen,
        bytes: 0,
        note: format!("{:.1} ms", reopen.as_secs_f64() * 1e3),
    };
    progress.finish(&r);
    rows.push(r);
    let keys = st.keys;
    for (tasks, missing) in [(1, false), (2, false), (64, false), (1, true)] {
        progress.start("gets", &db, None);
        let r = random_gets(&db, keys, n, tasks, missing).await;
        progress.finish(&r);
        rows.push(r);
    }
    let disk = disk_bytes(&path);
    let r = Row {
        name: "index RAM per key / disk per logical byte".into(),
        ops: keys,
        elapsed: Duration::from_secs(1),
        bytes: 0,
        note: format!(
            "{:.1} B/key, {:.2} x on disk",
            st.index_bytes as f64 / keys.max(1) as f64,
            disk as f64 / (keys.max(1) * 116) as f64
        ),
    };
    progress.finish(&r);
    rows.push(r);

    // A read-only follower beside the open writer: its open, then a refresh
    // after the writer added n/10 keys (it reads only the new bytes).
    let t = Instant::now();
    let follower = Db::open_read_only(&path).await.expect("follower");
    let r = Row {
        name: "follower open beside the writer".into(),
        ops: follower.stats().keys,
        elapsed: t.elapsed(),
        bytes: 0,
        note: format!("{:.1} ms", t.elapsed().as_secs_f64() * 1e3),
    };
    progress.finish(&r);
    rows.push(r);
    fill_concurrent(&db, keys, (n / 10).max(64), 64).await;
    let more = db.stats().keys - keys;
    let read_before = follower.stats().follower_bytes_read;
    let t = Instant::now();
    follower.refresh().await.expect("refresh");
    let elapsed = t.elapsed();
    let read = follower.stats().follower_bytes_read - read_before;
    assert_eq!(
        follower.stats().keys,
        db.stats().keys,
        "the follower caught up"
    );
    let r = Row {
        name: format!("follower refresh after {more} more puts"),
        ops: more,
        elapsed,
        bytes: read,
        note: format!(
            "{:.1} ms, {:.1} MiB read",
            elapsed.as_secs_f64() * 1e3,
            read as f64 / (1 << 20) as f64
        ),
    };
    progress.finish(&r);
    rows.push(r);
    follower.close().await.expect("close follower");
    db.close().await.expect("close");
    rows
}
