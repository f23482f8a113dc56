//! Issue 17: a store on any Tokio runtime, `current_thread` included, that
//! neither hangs on its opener's runtime being busy nor loses what its
//! docs promise when dropped without `close`.

mod common;

use silt::{Db, Durability, StoreRuntime};
use std::time::Duration;

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Opened on a `current_thread` runtime whose one thread then blocks in
/// synchronous work: writes from another runtime complete meanwhile (the
/// store runs on its own thread). The opener's thread blocks until those
/// writes are done, so if they needed it they would time out instead.
#[test]
fn a_busy_current_thread_opener_does_not_hold_up_other_runtimes() {
    let dir = tempfile::tempdir().unwrap();
    let rt = current_thread();
    let db = rt.block_on(Db::open(dir.path())).unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let other = std::thread::spawn({
        let db = db.clone();
        move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let res = rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(30), async {
                    for i in 0..500u32 {
                        db.put(i.to_be_bytes(), "v").await.unwrap();
                    }
                    db.get(7u32.to_be_bytes()).await.unwrap()
                })
                .await
            });
            done_tx.send(()).unwrap();
            res
        }
    });
    // The opener's only thread is busy (blocked) until the other runtime
    // is done.
    done_rx.recv().unwrap();
    let got = other
        .join()
        .unwrap()
        .expect("writes waited for the opener's runtime");
    assert_eq!(got.unwrap(), "v");
    rt.block_on(db.close()).unwrap();
}

/// Drops the last handle without `close`, then the runtime, and reopens
/// once the store released its lock: what is there is what
/// `Db`'s docs promise for `durability` on that runtime flavour.
fn drop_without_close(durability: Durability, multi_thread: bool) {
    const N: u32 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let rt = if multi_thread {
        tokio::runtime::Runtime::new().unwrap()
    } else {
        current_thread()
    };
    rt.block_on(async {
        let db = Db::builder(dir.path())
            .slab_size(1 << 20)
            .durability(durability)
            .open()
            .await
            .unwrap();
        for i in 0..N {
            db.put(i.to_be_bytes(), vec![3u8; 50]).await.unwrap();
        }
        drop(db);
    });
    if multi_thread && durability == Durability::None {
        // The writer runs on this runtime (`StoreRuntime::Auto`): its
        // background flush needs the runtime alive until the store stops.
        common::wait_unlocked(dir.path());
    }
    drop(rt);
    common::wait_unlocked(dir.path());
    let rt = current_thread();
    rt.block_on(async {
        let db = Db::open(dir.path()).await.unwrap();
        let what = format!("{durability:?}, multi_thread={multi_thread}");
        assert_eq!(db.stats().keys, u64::from(N), "{what}");
        for i in (0..N).step_by(997) {
            assert!(
                db.contains_key(i.to_be_bytes()).await.unwrap(),
                "{what}: key {i}"
            );
        }
        db.close().await.unwrap();
    });
}

#[test]
fn drop_without_close_keeps_every_acknowledged_write_on_current_thread() {
    for d in [Durability::Sync, Durability::Buffered, Durability::None] {
        drop_without_close(d, false);
    }
}

#[test]
fn drop_without_close_keeps_every_acknowledged_write_on_multi_thread() {
    for d in [Durability::Sync, Durability::Buffered, Durability::None] {
        drop_without_close(d, true);
    }
}

/// Under `Durability::None` on the caller's runtime, a runtime dropped
/// right after the last handle cuts the background flush short: only
/// what was flushed survives (here the first slab's worth), never a
/// mix. The docs say to `close` (or use `StoreRuntime::Dedicated`).
#[test]
fn unlogged_writes_on_a_dropped_callers_runtime_are_a_flushed_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let db = Db::builder(dir.path())
            .slab_size(1 << 20)
            .durability(Durability::None)
            .runtime(StoreRuntime::Caller)
            .open()
            .await
            .unwrap();
        for i in 0..20_000u32 {
            db.put(i.to_be_bytes(), vec![3u8; 50]).await.unwrap();
        }
        drop(db);
    });
    drop(rt);
    common::wait_unlocked(dir.path());
    current_thread().block_on(async {
        let db = Db::open(dir.path()).await.unwrap();
        let keys = db.stats().keys as u32;
        for i in 0..keys {
            assert!(
                db.contains_key(i.to_be_bytes()).await.unwrap(),
                "a gap at {i}"
            );
        }
        db.close().await.unwrap();
    });
}

/// `StoreRuntime::Caller` needs a runtime to run the writer on: asked for
/// outside one, it is a `Config` error, not a panic; `Auto` there opens
/// a store of its own.
#[test]
fn the_callers_runtime_outside_any_runtime_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let caller = Db::builder(dir.path()).runtime(StoreRuntime::Caller).open();
    match futures::executor::block_on(caller) {
        Err(silt::Error::Config(msg)) => assert!(msg.contains("Caller"), "{msg}"),
        other => panic!("{other:?}"),
    }
    let db = futures::executor::block_on(Db::open(dir.path())).unwrap();
    futures::executor::block_on(db.close()).unwrap();
}

/// A panic in the writer (a bug) stops the store like any other end:
/// callers get `Stopped` with `WriterPanicked` and the panic's message as
/// its cause (not `Closed`, not a hang), the lock is released, and every
/// acknowledged write is there after a reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicked_writer_is_reported_as_stopped_and_loses_nothing() {
    for placement in [StoreRuntime::Caller, StoreRuntime::Dedicated] {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::builder(dir.path())
            .runtime(placement)
            .open()
            .await
            .unwrap();
        for i in 0..100u32 {
            db.put(i.to_be_bytes(), "v").await.unwrap();
        }
        db.panic_writer_for_tests().await;
        let err = loop {
            match db.put("after", "x").await {
                Err(e) => break e,
                // Queued before the panic was handled.
                Ok(()) => tokio::task::yield_now().await,
            }
        };
        assert!(
            matches!(
                err,
                silt::Error::Stopped {
                    cause: silt::StopCause::WriterPanicked(_)
                }
            ),
            "{placement:?}: {err:?}"
        );
        common::wait_unlocked(dir.path());
        // Once the store has stopped, the cause carries the panic's message
        // (the first caller may see it while the panic is still unwinding).
        match db.put("after", "x").await {
            Err(silt::Error::Stopped {
                cause: silt::StopCause::WriterPanicked(msg),
            }) => assert!(msg.contains("asked to panic"), "{placement:?}: {msg}"),
            other => panic!("{placement:?}: {other:?}"),
        }
        drop(db);
        let db = Db::open(dir.path()).await.unwrap();
        assert_eq!(db.stats().keys, 100, "{placement:?}");
        db.close().await.unwrap();
    }
}
