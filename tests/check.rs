//! `eddy check` on the job files of `tests/check/`: each `NAME.toml` beside a `NAME.expected`
//! that holds the exact output (standard output, then standard error, then the exit status).
//! After an intended change of messages, rewrite the expected files with
//! `EDDY_BLESS=1 cargo test --test check` and review their diff.

mod common;

use std::path::Path;

/// Every job of `tests/check/` prints what its golden file holds, in a fixed environment:
/// `EDDY_BROKERS`, `EDDY_CPAAS_KEY` and `EDDY_EMPTY` (empty) are set, nothing else is.
#[test]
fn check_messages_match_their_golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/check");
    let env = [
        ("EDDY_BROKERS", "127.0.0.1:9092"),
        ("EDDY_CPAAS_KEY", "key"),
        ("EDDY_EMPTY", ""),
    ];
    common::golden::assert_check_messages(&dir, "toml", &env);
}
