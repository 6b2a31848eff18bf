//! The `eddy` binary on job files: `check` reports every error with file, line and field; `run`
//! over a JSON-lines file gives the reference results, the same on 1 worker, 2 workers and 2
//! processes, with malformed lines dead-lettered and late records routed to their sink.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn eddy(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(args)
        .current_dir(dir)
        .env("EDDY_BROKERS", "127.0.0.1:9")
        .env("EDDY_INPUT", "in.jsonl")
        .env("EDDY_OUTPUT", "out.csv")
        .env("EDDY_CPAAS_URL", "http://127.0.0.1:9")
        .env("EDDY_CPAAS_KEY", "key")
        .env("EDDY_STATE", "state")
        .output()
        .expect("running eddy")
}

#[test]
fn check_reports_every_error_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let job = r#"[job]
name = "bad"
tick = "ten"

[[sources]]
name = "in"
kind = "file"
paths = ["in.jsonl"]
event_time = "ts"
schema = { account_id = "int", ts = "timestamp", amount = "money" }

[[metrics]]
name = "m"
source = "in"
group_by = ["acount_id"]
window = { kind = "hopping", size = "10s" }
aggregates = { total = "sum(account_id)", x = "median(account_id)" }
having = "totl > 3"
sinks = ["nowhere"]
"#;
    std::fs::write(dir.path().join("bad.toml"), job).unwrap();
    let out = eddy(&["check", "bad.toml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "bad.toml:3: job.tick: `ten` is not a duration",
        "bad.toml:10: sources[0].schema.amount: unknown type `money`",
        "bad.toml:15: metrics[0].group_by: `acount_id` is not a field of the source schema",
        "bad.toml:16: metrics[0].window.slide: a hopping window needs `slide`",
        "bad.toml:17: metrics[0].aggregates.x: unknown function `median`",
        "bad.toml:18: metrics[0].having: `totl` is not an output column",
        "bad.toml:19: metrics[0].sinks: no sink named `nowhere`",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }

    std::fs::write(
        dir.path().join("syntax.toml"),
        "[job]\nname = \"x\"\n[[sources]]\nname = \n",
    )
    .unwrap();
    let out = eddy(&["check", "syntax.toml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("syntax.toml:4: name: "), "{stderr}");

    std::fs::write(
        dir.path().join("unknown.toml"),
        "[job]\nname = \"x\"\nspeed = 3\n",
    )
    .unwrap();
    let stderr =
        String::from_utf8_lossy(&eddy(&["check", "unknown.toml"], dir.path()).stderr).to_string();
    assert!(
        stderr.contains("unknown.toml:3: speed: unknown field `speed`"),
        "{stderr}"
    );
}

#[test]
fn shipped_examples_are_valid() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/jobs");
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        let out = eddy(&["check", path.to_str().unwrap()], &examples);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 3);
}

const JOB: &str = r#"[job]
name = "tumbling"
dead_letter = "dlq"

[[sources]]
name = "in"
kind = "file"
paths = ["in.jsonl"]
event_time = "ts"
out_of_orderness = "1500ms"
max_drift = "3s"
schema = { account_id = "int", ts = "timestamp", amount_cents = "int" }

[[metrics]]
name = "per_account"
source = "in"
group_by = ["account_id"]
window = { kind = "tumbling", size = "5s" }
aggregates = { count = "count", sum = "sum(amount_cents)", max = "max(amount_cents)" }
sinks = ["csv"]
late_sink = "late"

[[sinks]]
name = "csv"
kind = "file"
path = "out.csv"
format = "csv"
order_by = ["account_id", "window_start"]

[[sinks]]
name = "late"
kind = "file"
path = "late.jsonl"

[[sinks]]
name = "dlq"
kind = "file"
path = "dlq.jsonl"
"#;

/// Asserts equality, showing only the first differences.
fn assert_same_lines(got: &[String], expected: &[String], what: &str) {
    let missing: Vec<&String> = expected
        .iter()
        .filter(|l| !got.contains(l))
        .take(5)
        .collect();
    let extra: Vec<&String> = got
        .iter()
        .filter(|l| !expected.contains(l))
        .take(5)
        .collect();
    assert!(
        got == expected,
        "{what}: {} lines, expected {}; missing {missing:?}; unexpected {extra:?}",
        got.len(),
        expected.len()
    );
}

#[test]
fn file_job_gives_the_reference_on_one_worker_two_workers_and_two_processes() {
    let events = common::transactions(30_000, 200, 1_500, 101, 8_000);
    let (reference, late) = common::reference_windows(&events, 1_500, 5_000, 5_000, 0);
    let mut expected = vec!["account_id,window_start,window_end,count,sum,max".to_string()];
    expected.extend(
        reference
            .iter()
            .map(|((k, s), (c, sum, max))| format!("{k},{s},{},{c},{sum},{max}", s + 5_000)),
    );
    let mut input = common::json_lines(&events);
    let middle = input[input.len() / 2..].find('\n').unwrap() + input.len() / 2 + 1;
    input.insert_str(middle, "{\"account_id\": 5, \"ts\": \"soon\"}\n");

    let runs: [&[&str]; 3] = [&["-w", "1"], &["-w", "2"], &["-n", "2"]];
    for args in runs {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("in.jsonl"), &input).unwrap();
        std::fs::write(dir.path().join("job.toml"), JOB).unwrap();
        if args[0] == "-n" {
            let hosts = format!(
                "127.0.0.1:{}\n127.0.0.1:{}\n",
                common::free_port(),
                common::free_port()
            );
            std::fs::write(dir.path().join("hosts"), hosts).unwrap();
            let spawn = |p: &str| {
                Command::new(env!("CARGO_BIN_EXE_eddy"))
                    .args(["run", "job.toml", "-n", "2", "-p", p, "-h", "hosts"])
                    .current_dir(dir.path())
                    .spawn()
                    .unwrap()
            };
            let children = [spawn("0"), spawn("1")];
            for mut child in children {
                assert!(
                    child.wait().unwrap().success(),
                    "a process of the cluster failed"
                );
            }
        } else {
            let mut cmd = vec!["run", "job.toml"];
            cmd.extend_from_slice(args);
            let out = eddy(&cmd, dir.path());
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let csv = std::fs::read_to_string(dir.path().join("out.csv")).unwrap();
        let lines: Vec<String> = csv.lines().map(String::from).collect();
        assert_same_lines(&lines, &expected, &format!("results with {args:?}"));
        let late_lines = std::fs::read_to_string(dir.path().join("late.jsonl")).unwrap();
        assert_eq!(
            late_lines.lines().count(),
            late,
            "late records with {args:?}"
        );
        assert!(late > 0);
        let dlq = std::fs::read_to_string(dir.path().join("dlq.jsonl")).unwrap();
        let letters: Vec<serde_json::Value> = dlq
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(letters.len(), 1, "dead letters with {args:?}");
        assert!(
            letters[0]["error"]
                .as_str()
                .unwrap()
                .starts_with("field `ts`: `soon` is not an RFC 3339 time")
        );
        assert_eq!(
            letters[0]["payload"],
            "{\"account_id\": 5, \"ts\": \"soon\"}"
        );
        assert_eq!(
            letters[0]["offset"],
            input.find("{\"account_id\": 5, \"ts\"").unwrap()
        );
    }
}

/// `max_record_bytes` is a byte count from 1 to 1 GiB, on sources that read records.
#[test]
fn check_bounds_max_record_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let source = |kind: &str, value: &str| {
        format!(
            "[[sources]]\nname = \"{kind}{value}\"\nkind = \"{kind}\"\npaths = [\"in.jsonl\"]\n\
             event_time = \"ts\"\nschema = {{ ts = \"timestamp\" }}\nmax_record_bytes = {value}\n"
        )
    };
    let job = [
        "[job]\nname = \"limits\"\n".to_string(),
        source("file", "0"),
        source("file", "1073741825"),
        source("file", "1073741824"),
        source("generator", "10"),
    ]
    .join("\n");
    std::fs::write(dir.path().join("limits.toml"), job).unwrap();
    let out = eddy(&["check", "limits.toml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let bound = "must be a byte count from 1 to 1073741824 (1 GiB)";
    for expected in [
        format!("limits.toml:10: sources[0].max_record_bytes: {bound}"),
        format!("limits.toml:18: sources[1].max_record_bytes: {bound}"),
        "limits.toml:34: sources[3].max_record_bytes: the generator reads no records: only \
         kafka and file sources take it"
            .to_string(),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(!stderr.contains("sources[2]"), "{stderr}");
}
