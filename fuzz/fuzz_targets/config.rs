//! cargo-fuzz target: see `mpwg_fuzz::config` (fuzz/src/harness.rs) and FUZZING.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mpwg_fuzz::config(data));
