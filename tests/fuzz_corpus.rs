//! The fuzz targets' properties (`fuzz/src/lib.rs`) over their seed corpus
//! (`fuzz/corpus/<target>/`), which keeps every input a fuzzing run found failing: what `.ci/fuzz`
//! explores for a minute per target, every test run checks for these inputs.

#[path = "../fuzz/src/lib.rs"]
mod targets;

use std::path::Path;

/// Runs `check` on every file of `fuzz/corpus/{target}`, naming the file that fails.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    for file in files {
        let data = std::fs::read(&file).expect("a corpus file");
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{target} fails on {}", file.display());
    }
}

#[test]
fn the_job_file_loader_never_panics_on_the_corpus() {
    replay("job_file", targets::job_file);
}

#[test]
fn the_json_decoder_agrees_with_serde_json_on_the_corpus() {
    replay("json_decoder", targets::json_decoder);
}

#[test]
fn the_predicate_compiler_never_panics_on_the_corpus() {
    replay("cel_predicate", targets::cel_predicate);
}

#[test]
fn the_http_server_answers_every_request_target_of_the_corpus() {
    replay("http_query", targets::http_query);
}
