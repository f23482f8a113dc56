//! Opens a store whose data directory holds files of arbitrary bytes under
//! odd names, with intact, damaged or missing headers, then reads every key
//! it found: every input ends in Ok or an Error (see
//! `silt::internals::fuzz_open_dir`, which tests/fuzz_replay.rs also runs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    silt::internals::fuzz_open_dir(dir.path(), data);
});
