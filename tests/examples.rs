//! The example jobs of `examples/jobs/` run as a user runs them (`eddy run`, a child process),
//! with their output compared with golden files in `tests/golden/`, on one worker and on two. After
//! an intended change of output, `EDDY_BLESS=1 cargo test --test examples` rewrites the files.
//! (The Kafka examples, `demo.toml` and `engagement.toml`, are run by the demo's and the
//! engagement flow's own tests.)

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::golden::assert_golden;
use common::{example, run_job_file as run};
use sha2::{Digest, Sha256};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// The benchmark queries' input: 100 000 transactions of 500 accounts over 100 s of event time,
/// out of order by up to 1.5 s, every 1000th 20 s behind its watermark.
fn transactions(dir: &Path) -> PathBuf {
    let path = dir.join("transactions.jsonl");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for (account, ts, amount) in common::transactions(100_000, 500, 1_500, 1_000, 20_000) {
        writeln!(
            file,
            r#"{{"account_id":{account},"amount_cents":{amount},"ts":{ts}}}"#
        )
        .unwrap();
    }
    file.flush().unwrap();
    path
}

/// Q1 and Q2 of the common workload write the same sorted CSV on one worker and on two.
#[test]
fn the_benchmark_queries_write_their_golden_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = transactions(dir.path());
    let mut outputs = Vec::new();
    for query in ["q1", "q2"] {
        let output = dir.path().join(format!("{query}.csv"));
        let mut got = Vec::new();
        for workers in [1, 2] {
            let env = [
                ("EDDY_INPUT", input.as_os_str()),
                ("EDDY_OUTPUT", output.as_os_str()),
            ];
            run(&example(&format!("{query}.toml")), workers, &[], &env);
            got.push(std::fs::read_to_string(&output).unwrap());
        }
        assert_eq!(got[0], got[1], "{query}: one worker and two differ");
        outputs.push((format!("{query}.csv"), got.remove(0)));
    }
    assert_golden(&golden_dir(), &outputs);
}

/// The fraud example prints one alert per incident the generator injects; alerts come as each
/// fires, so they are compared sorted.
#[test]
fn the_fraud_example_prints_its_golden_alerts() {
    let mut got = Vec::new();
    for workers in [1, 2] {
        let output = run(&example("fraud.toml"), workers, &[], &[]);
        let mut lines: Vec<_> = String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        lines.sort();
        got.push(lines.join("\n") + "\n");
    }
    assert_eq!(got[0], got[1], "one worker and two differ");
    assert_golden(&golden_dir(), &[("fraud.jsonl".into(), got.remove(0))]);
}

/// The routing example's three files (in a directory of the test's instead of /tmp): each
/// route's line count and the SHA-256 of its lines sorted (each route writes as events come;
/// the files, 9 MB, are too large to keep).
#[test]
fn the_routing_example_writes_its_golden_routes() {
    let text = std::fs::read_to_string(example("routing.toml")).unwrap();
    assert!(
        text.contains("\"/tmp/eddy-"),
        "the example writes to /tmp/eddy-*"
    );
    let mut got = Vec::new();
    for workers in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let job = dir.path().join("routing.toml");
        let prefix = format!("\"{}/eddy-", dir.path().display());
        std::fs::write(&job, text.replace("\"/tmp/eddy-", &prefix)).unwrap();
        run(&job, workers, &[], &[]);
        let mut summary = String::new();
        for route in ["large-foreign", "euro-area", "rest"] {
            let path = dir.path().join(format!("eddy-{route}.jsonl"));
            let text = std::fs::read_to_string(path).unwrap();
            let mut lines: Vec<_> = text.lines().collect();
            lines.sort_unstable();
            let mut digest = Sha256::new();
            lines
                .iter()
                .for_each(|line| digest.update(format!("{line}\n")));
            let digest: String = digest
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            summary += &format!("{route} {} {digest}\n", lines.len());
        }
        got.push(summary);
    }
    assert_eq!(got[0], got[1], "one worker and two differ");
    assert_golden(&golden_dir(), &[("routing.txt".into(), got.remove(0))]);
}
