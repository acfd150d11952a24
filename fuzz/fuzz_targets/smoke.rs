//! Placeholder fuzz target: proves the cargo-fuzz pipeline works end to end.
//! Replace or accompany with real targets (encoder, config env parsing,
//! request operation sequences, reply decoding).
#![no_main]

use libfuzzer_sys::fuzz_target;
use scout_core as _;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = core::str::from_utf8(data) {
        // Round-trip must be lossless for valid UTF-8.
        assert_eq!(s.as_bytes(), data);
        let _ = s.chars().count();
    }
});
