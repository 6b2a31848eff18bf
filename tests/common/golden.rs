//! Golden files: outputs compared with files kept in the repository. `EDDY_BLESS=1` rewrites
//! the files with what the test got instead, for review in the diff after an intended change.

use std::path::Path;
use std::process::Command;

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

/// Runs `eddy check` on every file of `dir` ending in `.extension`, in `dir` with only `env` set,
/// and compares what it prints and its exit status with the file's `.expected` golden file.
pub fn assert_check_messages(dir: &Path, extension: &str, env: &[(&str, &str)]) {
    let mut jobs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    jobs.sort();
    let outputs: Vec<(String, String)> = jobs
        .iter()
        .map(|job| {
            let name = job.file_name().unwrap().to_str().unwrap();
            let expected = job.with_extension("expected");
            let expected = expected.file_name().unwrap().to_str().unwrap().to_string();
            let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
                .args(["check", name])
                .current_dir(dir)
                .env_clear()
                .envs(env.iter().copied())
                .output()
                .expect("running eddy");
            let printed = format!(
                "{}{}exit status: {}\n",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                out.status.code().map_or("none".into(), |c| c.to_string()),
            );
            (expected, printed)
        })
        .collect();
    assert_golden(dir, &outputs);
}
