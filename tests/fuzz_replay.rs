//! The fuzz harnesses (`fuzz/`, run by `cargo fuzz` on nightly) on stable,
//! in every CI run: every saved input in `fuzz/regressions/<target>/` is
//! replayed, and a seeded sweep feeds `open_dir` directories made from a
//! real store's files (cut short, bytes flipped, under odd names, with
//! intact, damaged or missing headers). Each input must end in Ok or an
//! `Error`; a panic fails the test.

mod common;

use rand::{Rng, SeedableRng};
use silt::internals::{fuzz_open_dir, fuzz_record, fuzz_segment_image};
use std::path::Path;

#[test]
fn saved_fuzz_inputs_replay_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut replayed = 0;
    for target in std::fs::read_dir(&root).unwrap() {
        let target = target.unwrap().path();
        let name = target.file_name().unwrap().to_str().unwrap().to_string();
        for input in std::fs::read_dir(&target).unwrap() {
            let input = input.unwrap().path();
            let data = std::fs::read(&input).unwrap();
            match name.as_str() {
                "record" => fuzz_record(&data),
                "footer" => fuzz_segment_image(&data),
                "open_dir" => {
                    fuzz_open_dir(tempfile::tempdir().unwrap().path(), &data);
                }
                other => panic!("{}: no harness named {other}", input.display()),
            }
            replayed += 1;
        }
    }
    assert!(replayed >= 1, "no saved input under {}", root.display());
}

/// The files of a store that crashed with a segment and a WAL on disk.
fn real_files() -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let db = silt::Db::builder(dir.path()).slab_size(64 * 1024);
    common::crash_after(db, |db| async move {
        for i in 0..300u32 {
            db.put(format!("key{i}"), vec![i as u8; 100 + i as usize % 300])
                .await
                .unwrap();
            if i == 150 {
                db.flush().await.unwrap();
            }
        }
        db.delete("key7").await.unwrap();
    });
    common::wait_unlocked(dir.path());
    let mut files: Vec<Vec<u8>> = ["silt", "log"]
        .iter()
        .flat_map(|ext| common::data_files(dir.path(), ext))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert!(files.len() >= 2, "a segment and a WAL");
    // The same files without their header page, for the harness to put
    // its own (intact or damaged) header in front.
    let headless: Vec<Vec<u8>> = files
        .iter()
        .map(|f| f[4096.min(f.len())..].to_vec())
        .collect();
    files.extend(headless);
    files
}

#[test]
fn damaged_directories_open_or_fail_cleanly() {
    let files = real_files();
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    let (mut opened, mut with_pairs) = (0, 0);
    for _ in 0..300 {
        let mut input = Vec::new();
        for _ in 0..rng.gen_range(1..=4) {
            let mut bytes = files[rng.gen_range(0..files.len())].clone();
            bytes.truncate(rng.gen_range(0..=bytes.len().min(u16::MAX as usize)));
            for _ in 0..rng.gen_range(0..4) {
                if !bytes.is_empty() {
                    let at = rng.gen_range(0..bytes.len());
                    bytes[at] ^= 1 << rng.gen_range(0..8);
                }
            }
            input.push(rng.gen::<u8>());
            input.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
            input.extend_from_slice(&bytes);
        }
        if let Some(pairs) = fuzz_open_dir(tempfile::tempdir().unwrap().path(), &input) {
            opened += 1;
            with_pairs += (pairs > 0) as u32;
        }
    }
    // The sweep reaches past open: most stores open (damage costs records,
    // not the store) and many still hold pairs.
    assert!(
        opened > 150 && with_pairs > 50,
        "{opened} opened, {with_pairs} with pairs"
    );
}
