//! `eddy check` on the job files of `tests/check/`: each `NAME.toml` beside a `NAME.expected`
//! that holds the exact output (standard output, then standard error, then the exit status).
//! After an intended change of messages, rewrite the expected files with
//! `EDDY_BLESS=1 cargo test --test check` and review their diff.

mod common;

use std::path::Path;
use std::process::Command;

use common::golden;

/// What `eddy check NAME.toml` prints in `dir`, in a fixed environment: `EDDY_BROKERS`,
/// `EDDY_CPAAS_KEY` and `EDDY_EMPTY` (empty) are set, nothing else is.
fn check(dir: &Path, name: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["check", name])
        .current_dir(dir)
        .env_clear()
        .env("EDDY_BROKERS", "127.0.0.1:9092")
        .env("EDDY_CPAAS_KEY", "key")
        .env("EDDY_EMPTY", "")
        .output()
        .expect("running eddy");
    format!(
        "{}{}exit status: {}\n",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status.code().map_or("none".into(), |c| c.to_string()),
    )
}

#[test]
fn check_messages_match_their_golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/check");
    let mut jobs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    jobs.sort();
    let outputs: Vec<(String, String)> = jobs
        .iter()
        .map(|job| {
            let name = job.file_name().unwrap().to_str().unwrap();
            let expected = job.with_extension("expected");
            let expected = expected.file_name().unwrap().to_str().unwrap().to_string();
            (expected, check(&dir, name))
        })
        .collect();
    golden::assert_golden(&dir, &outputs);
}
