//! Choosing the I/O backend: explicit, by environment, by probing; the
//! data path itself runs on both backends because .ci/run runs the whole
//! suite once per `SILT_IO_BACKEND`.

use silt::{Db, Durability, Error, FaultInjector, IoBackend};

async fn round_trip(b: silt::Builder) -> IoBackend {
    let db = b.slab_size(64 * 1024).open().await.unwrap();
    for i in 0..500u32 {
        db.put(format!("k{i}"), vec![i as u8; 700]).await.unwrap();
    }
    db.flush().await.unwrap();
    let backend = db.stats().io_backend;
    db.close().await.unwrap();
    backend
}

#[tokio::test]
async fn explicit_backends_run_and_are_reported() {
    for (want, d) in [
        (IoBackend::Std, Durability::Sync),
        (IoBackend::Uring, Durability::Sync),
        (IoBackend::Uring, Durability::Buffered),
        (IoBackend::Uring, Durability::None),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let got = round_trip(Db::builder(dir.path()).io_backend(want).durability(d)).await;
        assert_eq!(got, want, "{d:?}");
        // Written by one backend, read back after reopen by the other.
        let other = if want == IoBackend::Std {
            IoBackend::Uring
        } else {
            IoBackend::Std
        };
        let db = Db::builder(dir.path())
            .io_backend(other)
            .open()
            .await
            .unwrap();
        assert_eq!(db.stats().keys, 500);
        assert_eq!(db.get(b"k7").await.unwrap().unwrap(), vec![7u8; 700]);
        db.close().await.unwrap();
    }
}

#[tokio::test]
async fn auto_falls_back_to_std_where_io_uring_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let inj = FaultInjector::new();
    inj.refuse_io_uring(true);
    let b = Db::builder(dir.path()).fault_injector(inj.clone());
    assert_eq!(
        round_trip(b.clone().io_backend(IoBackend::Auto)).await,
        IoBackend::Std
    );
    match b.io_backend(IoBackend::Uring).open().await {
        Err(Error::Config(msg)) => assert!(msg.contains("io_uring"), "{msg}"),
        other => panic!("expected a Config error, got {other:?}"),
    }
}

#[tokio::test]
async fn the_environment_sets_the_default_but_not_an_explicit_choice() {
    // This binary's other tests all choose a backend explicitly, so the
    // variable set here cannot change what they run.
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var(silt::IO_BACKEND_ENV, "bogus");
    match Db::open(dir.path()).await {
        Err(Error::Config(msg)) => assert!(msg.contains("SILT_IO_BACKEND"), "{msg}"),
        other => panic!("expected a Config error, got {other:?}"),
    }
    std::env::set_var(silt::IO_BACKEND_ENV, "std");
    let db = Db::open(dir.path()).await.unwrap();
    assert_eq!(db.stats().io_backend, IoBackend::Std);
    db.close().await.unwrap();
    let db = Db::builder(dir.path())
        .io_backend(IoBackend::Uring)
        .open()
        .await
        .unwrap();
    assert_eq!(db.stats().io_backend, IoBackend::Uring);
    db.close().await.unwrap();
    std::env::remove_var(silt::IO_BACKEND_ENV);
}

/// Whether this file system takes O_DIRECT (tmpfs, for one, refuses it).
fn fs_allows_o_direct(dir: &std::path::Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(dir.join("probe"))
        .is_ok()
}

/// The open flags of this process's descriptors for `path`, from
/// /proc/self/fdinfo (what the kernel holds, not what silt reports).
fn open_flags(path: &std::path::Path) -> Vec<i32> {
    let mut flags = Vec::new();
    for fd in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        if std::fs::read_link(fd.path()).ok().as_deref() != Some(path) {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/self/fdinfo/{}",
            fd.file_name().to_str().unwrap()
        ))
        .unwrap_or_default();
        if let Some(f) = info.lines().find_map(|l| l.strip_prefix("flags:")) {
            flags.push(i32::from_str_radix(f.trim(), 8).unwrap());
        }
    }
    flags
}

/// Where the file system allows it, the WAL really is written with
/// O_DIRECT (the descriptor's flags say so), on both backends; where it
/// does not, the store says so in its stats.
#[tokio::test]
async fn the_wal_uses_o_direct_where_the_file_system_allows_it() {
    for backend in [IoBackend::Std, IoBackend::Uring] {
        let dir = tempfile::tempdir().unwrap();
        let allowed = fs_allows_o_direct(dir.path());
        let db = Db::builder(dir.path())
            .io_backend(backend)
            .durability(Durability::Sync)
            .open()
            .await
            .unwrap();
        db.put("k", vec![1u8; 10_000]).await.unwrap();
        assert_eq!(db.stats().wal_direct_io, allowed, "{backend:?}");
        let logs: Vec<_> = std::fs::read_dir(dir.path().join("data"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .collect();
        assert_eq!(logs.len(), 1, "{backend:?}");
        let flags = open_flags(&logs[0]);
        assert!(!flags.is_empty(), "{backend:?}: the log is not open");
        let direct = flags.iter().any(|f| f & libc::O_DIRECT != 0);
        assert_eq!(
            direct, allowed,
            "{backend:?}: log open with flags {flags:?}"
        );
        db.close().await.unwrap();
    }
}
