//! The `silt` command line: every subcommand, its output and exit codes.
#![cfg(feature = "cli")]

mod common;

use std::os::unix::fs::FileExt;
use std::process::{Command, Output};

fn silt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_silt"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn put_get_dump_stats_verify() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().to_str().unwrap();
    assert!(silt(&["put", p, "alpha", "one"]).status.success());
    assert!(silt(&["put", p, "beta", "two\ttabs"]).status.success());
    let got = silt(&["get", p, "alpha"]);
    assert!(got.status.success());
    assert_eq!(text(&got), "one\n");
    let missing = silt(&["get", p, "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    let dump = text(&silt(&["dump", p]));
    let mut lines: Vec<&str> = dump.lines().collect();
    lines.sort();
    assert_eq!(lines, vec!["alpha\tone", "beta\ttwo\\ttabs"]);
    let keys = text(&silt(&["dump", p, "--keys-only"]));
    assert_eq!(keys.lines().count(), 2);
    let stats = text(&silt(&["stats", p]));
    assert!(stats.contains("keys: 2"), "{stats}");
    let ok = silt(&["verify", p]);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(text(&ok).contains("records"));
}

/// `get` and `dump` read beside a running writer (a follower, no lock);
/// `put` is refused while the writer holds the lock.
#[test]
fn get_and_dump_work_beside_a_running_writer() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().to_str().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(async {
        let db = silt::Db::open(dir.path()).await.unwrap();
        db.put("live", "yes").await.unwrap();
        db
    });
    let got = silt(&["get", p, "live"]);
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(text(&got), "yes\n");
    assert_eq!(text(&silt(&["dump", p])), "live\tyes\n");
    let put = silt(&["put", p, "k", "v"]);
    assert!(!put.status.success());
    assert!(String::from_utf8_lossy(&put.stderr).contains("lock"));
    rt.block_on(db.close()).unwrap();
}

#[test]
fn compact_reclaims_overwritten_values() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().to_str().unwrap();
    // Every overwrite leaves a dead record in an older file (background GC
    // off, so they stay for `silt compact`).
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let db = silt::Db::builder(dir.path())
            .gc_threshold(0.0)
            .open()
            .await
            .unwrap();
        for v in ["one", "two", "three"] {
            db.put("k", v).await.unwrap();
            db.flush().await.unwrap();
        }
        db.close().await.unwrap();
    });
    // `close` released the lock, but a `silt` child that another test of
    // this binary forked meanwhile holds a copy of the lock's descriptor
    // until it execs; the CLI below would find the store locked.
    common::wait_unlocked(dir.path());
    let files = text(&silt(&["stats", p, "--files"]));
    assert!(files.contains("live"), "{files}");
    let out = silt(&["compact", p]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    let report = text(&out);
    assert!(report.contains("files rewritten"), "{report}");
    assert!(!report.starts_with("0 files"), "{report}");
    assert_eq!(text(&silt(&["get", p, "k"])), "three\n");
    let missing = silt(&["compact", &format!("{p}/nothing-here")]);
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn verify_reports_corruption_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().to_str().unwrap();
    assert!(silt(&["put", p, "key", "a value to damage"])
        .status
        .success());
    let seg = std::fs::read_dir(dir.path().join("data"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "silt"))
        .unwrap();
    let bytes = std::fs::read(&seg).unwrap();
    let at = bytes.windows(6).position(|w| w == b"damage").unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .write_at(b"X", at as u64)
        .unwrap();
    let out = silt(&["verify", p]);
    assert_eq!(out.status.code(), Some(2));
    let t = text(&out);
    assert!(
        t.contains("CORRUPT") && t.contains(".silt") && t.contains("CRC"),
        "{t}"
    );
}

#[test]
fn errors_are_one_line_and_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    for args in [
        vec!["get", missing.to_str().unwrap(), "k"],
        vec!["stats", missing.to_str().unwrap()],
        vec!["verify", missing.to_str().unwrap()],
    ] {
        let out = silt(&args);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with("error: ") && err.contains("no silt store"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    assert!(!missing.exists(), "inspection must not create a store");
    let p = dir.path().to_str().unwrap();
    let out = silt(&["put", p, "", "v"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("key must not be empty"));
}

#[test]
fn bench_prints_a_results_table() {
    let dir = tempfile::tempdir().unwrap();
    let out = silt(&[
        "bench",
        "--keys",
        "2000",
        "--path",
        dir.path().to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let t = text(&out);
    for row in [
        "Buffered fill, 64 tasks",
        "Sync fill",
        "reopen",
        "random gets, 2 tasks",
        "missing-key gets",
    ] {
        assert!(t.contains(row), "missing {row}: {t}");
    }
}
