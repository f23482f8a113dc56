//! Set-up shared by the bench binaries (not by the CLI, which has no
//! `tempfile`).

/// The benches' environment: a temp dir (under SILT_BENCH_DIR if set, to
/// measure another disk) and a 2-worker multi-thread runtime.
pub fn bench_env() -> (tempfile::TempDir, tokio::runtime::Runtime) {
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
    (tmp, rt)
}

/// Waits until no block device has I/O in flight (at most 20 s), after a
/// `sync`. Deleting a run's files on a file system mounted with `discard`
/// (this VM's root is) sends the device gigabytes of discards that run for
/// a second or more; without this the next measured run competes with them.
#[allow(dead_code)]
pub fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
    let busy = || -> bool {
        let Ok(devs) = std::fs::read_dir("/sys/block") else {
            return false;
        };
        devs.flatten().any(|d| {
            std::fs::read_to_string(d.path().join("inflight"))
                .map(|s| s.split_whitespace().any(|n| n != "0"))
                .unwrap_or(false)
        })
    };
    let start = std::time::Instant::now();
    let mut idle_since = None;
    while start.elapsed() < std::time::Duration::from_secs(20) {
        if busy() {
            idle_since = None;
        } else if idle_since
            .get_or_insert_with(std::time::Instant::now)
            .elapsed()
            >= std::time::Duration::from_millis(200)
        {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
