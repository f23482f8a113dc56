//! Arbitrary bytes as a whole segment file: trailer/footer parsing and the
//! record-by-record scan. Ok or Err, never a panic or a huge allocation.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    silt::internals::fuzz_segment_image(data);
});
