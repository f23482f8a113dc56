//! Cold reads: a store several times larger than the memory the process may
//! use, random gets from 32 tasks, one task beside them getting keys that
//! are in memory, the bytes the disk read (from sysfs), and fio's random
//! reads on the same disk in the same run as the reference (issue 15):
//! fio runs right before and right after silt, and silt is compared with
//! the mean of the two.
//!
//! `cargo bench --bench cold_reads` as root (it puts itself in a memory
//! cgroup and drops the page cache). Knobs: SILT_COLD_DIR (default a
//! directory under SILT_BENCH_DIR or the system temp dir; kept between
//! runs, so the stores are written once), SILT_COLD_GIB (data per store,
//! 3), SILT_COLD_LIMIT_MIB (the cgroup's limit, 1024), SILT_COLD_SECS
//! (seconds per measured phase, 10), SILT_COLD_ONLY=64k|4k, SILT_COLD_HOT=0
//! (no in-memory task beside the cold readers), SILT_COLD_READS=0 (the
//! write phases only: puts of new keys, hot and cold overwrites from one
//! task, cold overwrites from 32).

use silt::{Db, Durability};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TASKS: u64 = 32;
const HOT_KEYS: u64 = 10_000;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn hot_key(i: u64) -> String {
    format!("hot{i:08}")
}

fn cold_key(i: u64) -> String {
    format!("val{i:010}")
}

fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (seed + 1);
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// Moves this process into a fresh memory cgroup (v1) limited to `bytes`.
fn enter_cgroup(bytes: u64) -> Result<PathBuf, String> {
    let dir = PathBuf::from(format!(
        "/sys/fs/cgroup/memory/silt-cold-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::write(dir.join("memory.limit_in_bytes"), bytes.to_string())
        .map_err(|e| format!("limit: {e}"))?;
    std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string())
        .map_err(|e| format!("join: {e}"))?;
    Ok(dir)
}

fn drop_caches() -> bool {
    // SAFETY: sync(2) takes no arguments.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "1").is_ok()
}

/// Bytes read so far by the block device holding `path`.
fn device_read_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let stat = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/stat")).ok()?;
    let sectors: u64 = stat.split_whitespace().nth(2)?.parse().ok()?;
    Some(sectors * 512)
}

fn pct(lat: &mut [Duration], q: f64) -> f64 {
    if lat.is_empty() {
        return 0.0;
    }
    lat.sort_unstable();
    lat[((lat.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6
}

/// Writes a store of `count` values of `size` bytes plus the hot keys,
/// unless a complete one is there.
async fn build_store(path: &Path, size: usize, count: u64) {
    let done = path.join("COMPLETE");
    if done.exists() {
        return;
    }
    let _ = std::fs::remove_dir_all(path);
    let t = Instant::now();
    let db = Db::builder(path)
        .durability(Durability::Buffered)
        .open()
        .await
        .expect("open");
    for i in 0..HOT_KEYS {
        db.put(hot_key(i), vec![b'h'; 100]).await.expect("put");
    }
    let mut tasks = Vec::new();
    for w in 0..TASKS {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < count {
                let mut v = vec![(i % 251) as u8; size];
                v[..8].copy_from_slice(&i.to_le_bytes());
                db.put(cold_key(i), v).await.expect("put");
                i += TASKS;
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    db.close().await.expect("close");
    std::fs::write(&done, b"").expect("mark");
    println!(
        "  built {} ({count} × {size} B) in {:.1} s",
        path.display(),
        t.elapsed().as_secs_f64()
    );
}

/// Gets of hot keys from one task until `stop`; (ops, p99 µs).
async fn hot_reader(db: Db, stop: Arc<AtomicBool>) -> (u64, f64) {
    let mut next = xorshift(99);
    let mut lat = Vec::with_capacity(1 << 20);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let k = hot_key(next() % HOT_KEYS);
        let t = Instant::now();
        let v = db.get(k).await.expect("get");
        if n.is_multiple_of(16) {
            lat.push(t.elapsed());
        }
        assert!(v.is_some());
        n += 1;
    }
    (n, pct(&mut lat, 0.99))
}

struct ColdResult {
    gets: u64,
    bytes: u64,
    secs: f64,
    device: Option<u64>,
    p50: f64,
    p99: f64,
    hot_ops: u64,
    hot_p99: f64,
}

/// 32 tasks of random gets of the cold values for `secs`, the hot reader
/// beside them.
async fn cold_phase(db: &Db, dir: &Path, count: u64, secs: u64) -> ColdResult {
    let stop = Arc::new(AtomicBool::new(false));
    let returned = Arc::new(AtomicU64::new(0));
    let dev0 = device_read_bytes(dir);
    let start = Instant::now();
    let with_hot = std::env::var("SILT_COLD_HOT").map_or(true, |v| v != "0");
    let hot = with_hot.then(|| tokio::spawn(hot_reader(db.clone(), stop.clone())));
    let mut tasks = Vec::new();
    for w in 0..TASKS {
        let (db, stop, returned) = (db.clone(), stop.clone(), returned.clone());
        tasks.push(tokio::spawn(async move {
            let mut next = xorshift(w);
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let i = next() % count;
                let t = Instant::now();
                let v = db.get(cold_key(i)).await.expect("get").expect("present");
                lat.push(t.elapsed());
                assert_eq!(v[..8], i.to_le_bytes());
                returned.fetch_add(v.len() as u64, Ordering::Relaxed);
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("task"));
    }
    let secs = start.elapsed().as_secs_f64();
    let (hot_ops, hot_p99) = match hot {
        Some(h) => h.await.expect("hot"),
        None => (0, 0.0),
    };
    let device = dev0.zip(device_read_bytes(dir)).map(|(a, b)| b - a);
    ColdResult {
        gets: lat.len() as u64,
        bytes: returned.load(Ordering::Relaxed),
        secs,
        device,
        p50: pct(&mut lat, 0.5),
        p99: pct(&mut lat, 0.99),
        hot_ops,
        hot_p99,
    }
}

/// One task: `n` puts of new keys, then `n` overwrites of those (in
/// memory), then `n` overwrites of random cold keys; (p50, p99) µs of
/// each.
async fn overwrite_phase(db: &Db, count: u64, size: usize, n: u64) -> [(f64, f64); 3] {
    let mut lat_new = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        db.put(format!("new{i:08}"), vec![1u8; size])
            .await
            .expect("put");
        lat_new.push(t.elapsed());
    }
    let mut lat_hot = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        db.put(format!("new{i:08}"), vec![2u8; size])
            .await
            .expect("put");
        lat_hot.push(t.elapsed());
    }
    let mut next = xorshift(7);
    let mut lat_old = Vec::new();
    for _ in 0..n {
        let i = next() % count;
        let mut v = vec![(i % 251) as u8; size];
        v[..8].copy_from_slice(&i.to_le_bytes());
        let t = Instant::now();
        db.put(cold_key(i), v).await.expect("put");
        lat_old.push(t.elapsed());
    }
    [
        (pct(&mut lat_new, 0.5), pct(&mut lat_new, 0.99)),
        (pct(&mut lat_hot, 0.5), pct(&mut lat_hot, 0.99)),
        (pct(&mut lat_old, 0.5), pct(&mut lat_old, 0.99)),
    ]
}

/// `TASKS` tasks overwriting random cold keys for `secs`: (puts/s, p50,
/// p99 µs).
async fn cold_overwrites_phase(db: &Db, count: u64, size: usize, secs: u64) -> (f64, f64, f64) {
    let until = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let db = db.clone();
            tokio::spawn(async move {
                let mut next = xorshift(100 + t);
                let mut lat = Vec::new();
                while Instant::now() < until {
                    let i = next() % count;
                    let mut v = vec![(i % 251) as u8; size];
                    v[..8].copy_from_slice(&i.to_le_bytes());
                    let t0 = Instant::now();
                    db.put(cold_key(i), v).await.expect("put");
                    lat.push(t0.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("task"));
    }
    let rate = lat.len() as f64 / secs as f64;
    (rate, pct(&mut lat, 0.5), pct(&mut lat, 0.99))
}

/// fio's random reads of `bs` at QD32, O_DIRECT, io_uring, on a file of
/// `gib` GiB in `dir`: (MB/s, IOPS).
fn fio(dir: &Path, bs: &str, gib: u64, secs: u64) -> Option<(f64, f64)> {
    let file = dir.join("fio.dat");
    let out = std::process::Command::new("fio")
        .args([
            "--name=ref",
            &format!("--filename={}", file.display()),
            &format!("--size={gib}G"),
            "--rw=randread",
            &format!("--bs={bs}"),
            "--direct=1",
            "--ioengine=io_uring",
            "--iodepth=32",
            &format!("--runtime={secs}"),
            "--time_based",
            "--minimal",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("3;"))?;
    let f: Vec<&str> = line.split(';').collect();
    let kib_s: f64 = f.get(6)?.parse().ok()?;
    let iops: f64 = f.get(7)?.parse().ok()?;
    Some((kib_s * 1024.0 / 1e6, iops))
}

/// The write phases' rows.
fn write_rows(
    rt: &tokio::runtime::Runtime,
    db: &Db,
    label: &str,
    count: u64,
    size: usize,
    secs: u64,
    rows: &mut Vec<(String, String)>,
) {
    let [new, hot, old] = rt.block_on(overwrite_phase(db, count, size, 20_000));
    rows.push((
        format!(
            "{label} puts, 1 task, Buffered: new keys / overwrites in memory / cold overwrites"
        ),
        format!(
            "p50 {:.0} / {:.0} / {:.0} µs, p99 {:.0} / {:.0} / {:.0} µs",
            new.0, hot.0, old.0, new.1, hot.1, old.1
        ),
    ));
    let _ = drop_caches();
    let (rate, p50, p99) = rt.block_on(cold_overwrites_phase(db, count, size, secs));
    rows.push((
        format!("{label} cold overwrites, {TASKS} tasks, Buffered"),
        format!("{rate:.0} puts/s, p50 {p50:.0} µs, p99 {p99:.0} µs"),
    ));
}

fn main() {
    let gib = env_u64("SILT_COLD_GIB", 3);
    let limit = env_u64("SILT_COLD_LIMIT_MIB", 1024) << 20;
    let secs = env_u64("SILT_COLD_SECS", 10);
    let only = std::env::var("SILT_COLD_ONLY").unwrap_or_default();
    let dir = std::env::var_os("SILT_COLD_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("SILT_BENCH_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir)
                .join("silt-cold-bench")
        });
    std::fs::create_dir_all(&dir).expect("bench dir");
    let cgroup = enter_cgroup(limit);
    match &cgroup {
        Ok(p) => println!(
            "memory cgroup {} limited to {} MiB",
            p.display(),
            limit >> 20
        ),
        Err(e) => {
            println!("NOT in a memory cgroup ({e}): data may be cached, figures are not cold")
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut rows: Vec<(String, String)> = Vec::new();
    for (label, size) in [("64k", 64 << 10), ("4k", 4 << 10)] {
        if !only.is_empty() && only != label {
            continue;
        }
        let count = (gib << 30) / size as u64;
        let path = dir.join(format!("store-{label}-{gib}g"));
        rt.block_on(build_store(&path, size, count));
        let reads = std::env::var("SILT_COLD_READS").map_or(true, |v| v != "0");
        let fio_before = if reads {
            fio(&dir, label, gib, secs)
        } else {
            None
        };
        if !drop_caches() {
            println!("  could not drop the page cache (not root?)");
        }
        let db = rt
            .block_on(Db::builder(&path).durability(Durability::Buffered).open())
            .expect("open");
        if !reads {
            write_rows(&rt, &db, label, count, size, secs, &mut rows);
            rt.block_on(db.close()).expect("close");
            continue;
        }
        // The hot keys' pages come in once; then the reader alone.
        rt.block_on(async {
            for i in 0..HOT_KEYS {
                db.get(hot_key(i)).await.expect("get");
            }
        });
        let stop = Arc::new(AtomicBool::new(false));
        let idle = rt.block_on(async {
            let h = tokio::spawn(hot_reader(db.clone(), stop.clone()));
            tokio::time::sleep(Duration::from_secs(secs.min(5))).await;
            stop.store(true, Ordering::Relaxed);
            h.await.expect("hot")
        });
        let idle_rate = idle.0 as f64 / secs.min(5) as f64;
        let r = rt.block_on(cold_phase(&db, &path, count, secs));
        // The disk's speed drifts between runs by ±25 %: fio runs before
        // and after silt, and silt is compared with their mean.
        let fio_after = fio(&dir, label, gib, secs);
        let fio_ref = match (fio_before, fio_after) {
            (Some(a), Some(b)) => Some(((a.0 + b.0) / 2.0, (a.1 + b.1) / 2.0)),
            (a, b) => a.or(b),
        };
        let mbs = r.bytes as f64 / 1e6 / r.secs;
        let gets = r.gets as f64 / r.secs;
        let amp = r.device.map_or("n/a".to_string(), |d| {
            format!("{:.2}×", d as f64 / r.bytes.max(1) as f64)
        });
        let hot_rate = r.hot_ops as f64 / r.secs;
        let vs_fio = fio_ref.map_or("n/a".into(), |(fmbs, fiops)| {
            if size >= 64 << 10 {
                format!("{:.0} % of fio's {fmbs:.0} MB/s", mbs / fmbs * 100.0)
            } else {
                format!("{:.0} % of fio's {fiops:.0} IOPS", gets / fiops * 100.0)
            }
        });
        rows.push((
            format!("{label} cold gets, {TASKS} tasks"),
            format!(
                "{gets:.0} gets/s, {mbs:.0} MB/s ({vs_fio}), p50 {:.0} µs, p99 {:.0} µs",
                r.p50, r.p99
            ),
        ));
        rows.push((format!("{label} device bytes / bytes returned"), amp));
        rows.push((
            format!("{label} in-memory task beside them"),
            format!(
                "{hot_rate:.0} gets/s ({:.0} % of {idle_rate:.0} alone), p99 {:.0} µs (alone {:.1} µs)",
                hot_rate / idle_rate * 100.0,
                r.hot_p99,
                idle.1
            ),
        ));
        write_rows(&rt, &db, label, count, size, secs, &mut rows);
        // The overwrites kept every value's shape: the store stays usable.
        rt.block_on(db.close()).expect("close");
    }
    println!(
        "\nsilt cold reads: {gib} GiB per store, {} MiB memory limit, {secs} s per phase\n",
        limit >> 20
    );
    println!("| workload | result |");
    println!("|---|---|");
    for (name, result) in rows {
        println!("| {name} | {result} |");
    }
    if let Ok(cg) = cgroup {
        // Out of the cgroup first, so it can be removed.
        let _ = std::fs::write(
            "/sys/fs/cgroup/memory/cgroup.procs",
            std::process::id().to_string(),
        );
        let _ = std::fs::remove_dir(cg);
    }
}
