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
