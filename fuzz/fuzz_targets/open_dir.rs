//! Opens a store whose data directory holds files of arbitrary bytes, then
//! reads every key it found: every input ends in Ok or an Error.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Input: up to 4 files, each `[selector][len lo][len hi][bytes…]`.
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let mut rest = data;
    for i in 1..=4u32 {
        let [sel, lo, hi, tail @ ..] = rest else { break };
        let len = (u16::from_le_bytes([*lo, *hi]) as usize).min(tail.len());
        let name = match sel % 3 {
            0 => format!("{i:08}.silt"),
            1 => format!("{i:08}.log"),
            _ => format!("{i}.junk"),
        };
        std::fs::write(data_dir.join(name), &tail[..len]).unwrap();
        rest = &tail[len..];
    }
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let Ok(db) = silt::Db::builder(dir.path()).slab_size(64 * 1024).open().await else {
            return;
        };
        use futures_lite::StreamExt as _;
        let _ = db.stats();
        let mut s = Box::pin(db.scan());
        while let Some(item) = s.next().await {
            if let Ok((k, _)) = item {
                let _ = db.get(&k).await;
            }
        }
        let _ = db.close().await;
    });
});
