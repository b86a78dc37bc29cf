//! cargo-fuzz target: see `mpwg_fuzz::receive` (fuzz/src/harness.rs) and FUZZING.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mpwg_fuzz::receive(data));
