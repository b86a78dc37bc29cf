//! cargo-fuzz target: see `mpwg_fuzz::gso_gro` (fuzz/src/harness.rs) and FUZZING.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mpwg_fuzz::gso_gro(data));
