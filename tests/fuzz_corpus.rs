//! The fuzz corpus, replayed: every committed input of each cargo-fuzz target
//! (`fuzz/corpus/TARGET/`) runs through the same harness (`fuzz/src/harness.rs`), so a
//! crash the fuzzer once found, or a path it reached, is checked by plain `cargo test`.
//! The long fuzz runs themselves are not part of the tests (see FUZZING.md).

#[path = "../fuzz/src/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::path::PathBuf;

/// Runs `f` on every file of `fuzz/corpus/TARGET`; fails if there is none.
fn replay(target: &str, f: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        // A fuzzer running on the same directory may remove files meanwhile.
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    for file in &files {
        let Ok(data) = std::fs::read(file) else {
            continue;
        };
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        if let Err(e) = std::panic::catch_unwind(|| f(&data)) {
            let why = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("fuzz/corpus/{target}/{name} fails: {why}");
        }
    }
    println!("{target}: {} inputs replayed", files.len());
}

#[test]
fn corpus_receive() {
    replay("receive", harness::receive);
}

#[test]
fn corpus_handshake() {
    replay("handshake", harness::handshake);
}

#[test]
fn corpus_uapi() {
    replay("uapi", harness::uapi);
}

#[test]
fn corpus_config() {
    replay("config", harness::config);
}

#[test]
fn corpus_gso_gro() {
    replay("gso_gro", harness::gso_gro);
}
