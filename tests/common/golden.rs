//! Golden files: outputs compared with files kept in the repository. `EDDY_BLESS=1` rewrites
//! the files with what the test got instead, for review in the diff after an intended change.

use std::path::Path;

/// Compares each `(file name, output)` with the file of that name in `dir`; fails listing
/// every difference, or, with `EDDY_BLESS` set, writes the outputs there.
pub fn assert_golden(dir: &Path, outputs: &[(String, String)]) {
    assert!(
        !outputs.is_empty(),
        "no outputs to compare in {}",
        dir.display()
    );
    if std::env::var_os("EDDY_BLESS").is_some() {
        std::fs::create_dir_all(dir).unwrap();
        for (name, got) in outputs {
            std::fs::write(dir.join(name), got).unwrap();
        }
        return;
    }
    let differ: Vec<String> = outputs
        .iter()
        .filter_map(|(name, got)| {
            let expected = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
            (*got != expected).then(|| format!("{name}: expected\n{expected}got\n{got}"))
        })
        .collect();
    assert!(
        differ.is_empty(),
        "{} of {} outputs differ from {} (EDDY_BLESS=1 rewrites them):\n\n{}",
        differ.len(),
        outputs.len(),
        dir.display(),
        differ.join("\n")
    );
}
