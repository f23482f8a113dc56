//! Bad arguments and a second writer: each gets its clear error, and the
//! store is unchanged.

mod common;

use silt::{Db, Error, WriteBatch, MAX_KEY_LEN};

#[tokio::test]
async fn empty_and_oversize_keys_are_refused_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).await.unwrap();
    db.put("keep", "1").await.unwrap();
    let long = vec![b'k'; 70_000];
    for res in [
        db.put("", "v").await,
        db.put(long.clone(), "v").await,
        db.delete("").await,
        db.delete(long.clone()).await,
    ] {
        match res {
            Err(Error::InvalidArgument(msg)) => assert!(msg.contains("key"), "{msg}"),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }
    match db.get(&long).await {
        Err(Error::InvalidArgument(msg)) => assert!(msg.contains("65535"), "{msg}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    assert!(matches!(db.get(b"").await, Err(Error::InvalidArgument(_))));
    assert!(matches!(
        db.contains_key(b"").await,
        Err(Error::InvalidArgument(_))
    ));
    // A batch with one bad key writes none of its operations.
    let mut b = WriteBatch::new();
    b.put("good", "1");
    b.put(long.clone(), "2");
    assert!(matches!(db.write(b).await, Err(Error::InvalidArgument(_))));
    assert_eq!(db.get(b"good").await.unwrap(), None);
    // The longest legal key works.
    let max = vec![b'm'; MAX_KEY_LEN];
    db.put(max.clone(), "max").await.unwrap();
    assert_eq!(db.get(&max).await.unwrap().unwrap(), "max");
    assert_eq!(db.stats().keys, 2);
    db.close().await.unwrap();
    let db = Db::open(dir.path()).await.unwrap();
    assert_eq!(db.stats().keys, 2);
    assert_eq!(db.get(b"keep").await.unwrap().unwrap(), "1");
    assert_eq!(db.get(&max).await.unwrap().unwrap(), "max");
    db.close().await.unwrap();
}

#[tokio::test]
async fn a_second_writer_gets_locked() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path()).await.unwrap();
    db.put("k", "v").await.unwrap();
    match Db::open(dir.path()).await {
        Err(Error::Locked { path }) => assert!(path.ends_with("LOCK")),
        other => panic!("expected Locked, got {other:?}"),
    }
    // The failed open changed nothing.
    assert_eq!(db.get(b"k").await.unwrap().unwrap(), "v");
    db.put("k2", "v2").await.unwrap();
    db.close().await.unwrap();
    let db = Db::open(dir.path()).await.unwrap();
    assert_eq!(db.get(b"k2").await.unwrap().unwrap(), "v2");
    db.close().await.unwrap();
}

#[tokio::test]
async fn a_path_that_is_a_file_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    assert!(matches!(Db::open(&file).await, Err(Error::Io { .. })));
}

/// Issue 16.7: with a 64 KiB slab a 65,000-byte key could be put (a file
/// of its own) but not deleted (its delete record did not fit a slab), so
/// it could never go away. Every key a put takes can be deleted now; one
/// too long for the slab is refused up front, naming the limit.
#[tokio::test]
async fn every_key_that_can_be_put_can_be_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let db = common::small(dir.path()).open().await.unwrap();
    let too_long = vec![b'k'; 65_000];
    match db.put(too_long.clone(), "v").await {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("slab_size"), "{m}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    assert_eq!(
        db.get(&too_long).await.unwrap(),
        None,
        "nothing was written"
    );
    // The longest key that fits: put, read, delete, gone.
    let longest = vec![b'k'; 64 * 1024 - 4096 - 11];
    db.put(longest.clone(), vec![1u8; 10]).await.unwrap();
    assert_eq!(db.get(&longest).await.unwrap().unwrap().len(), 10);
    db.delete(longest.clone()).await.unwrap();
    assert_eq!(db.get(&longest).await.unwrap(), None);
    assert!(db.put(vec![b'k'; longest.len() + 1], "v").await.is_err());
    db.close().await.unwrap();
}
