//! Arbitrary bytes into the record decoder: Ok or Err, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    silt::internals::fuzz_record(data);
});
