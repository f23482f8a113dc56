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
