//! A long bounded job off a terminal prints plain progress lines while it runs: its position
//! against the end of its input, events per second and the time left.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

#[test]
fn a_long_file_job_prints_progress_lines_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("payments.jsonl");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
    for i in 0..300_000u64 {
        writeln!(
            file,
            r#"{{"account_id":{},"amount_cents":{},"ts":{}}}"#,
            i % 1000,
            i % 5000,
            1_700_000_000_000 + i
        )
        .unwrap();
    }
    file.flush().unwrap();
    drop(file);
    let len = std::fs::metadata(&input).unwrap().len();
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        format!(
            r#"
[job]
name = "progress"

[[sources]]
name = "payments"
kind = "file"
paths = ["{}"]
event_time = "ts"
schema = {{ account_id = "int", amount_cents = "int", ts = "timestamp" }}

[[metrics]]
name = "per_account"
source = "payments"
group_by = ["account_id"]
window = {{ kind = "tumbling", size = "10s" }}
aggregates = {{ n = "count" }}
sinks = ["nowhere"]

[[sinks]]
name = "nowhere"
kind = "discard"
"#,
            input.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["run", job.to_str().unwrap(), "--progress-every", "20ms"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("running eddy");
    // Read the lines as they come, until the summary.
    let mut progress = Vec::new();
    let mut summary = None;
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.starts_with("eddy: done") {
            summary = Some(line);
            break;
        }
        if let Some(rest) = line.strip_prefix("eddy: progress ") {
            progress.push((line.clone(), rest.to_string()));
        }
    }
    assert!(child.wait().unwrap().success());
    assert!(summary.is_some(), "no summary");
    // The lines before the end give a share below 100 % against the file's size, rising.
    let shares: Vec<u64> = progress
        .iter()
        .filter_map(|(_, rest)| rest.split_once('%').and_then(|(n, _)| n.parse().ok()))
        .collect();
    assert!(
        shares.iter().any(|&s| s < 100),
        "no progress line while the job ran: {progress:?}"
    );
    assert!(shares.windows(2).all(|w| w[0] <= w[1]), "{shares:?}");
    let of_file = format!(" of {len} bytes), ETA ");
    for (line, _) in &progress {
        assert!(
            line.contains(&of_file),
            "`{line}` lacks the position against {len} bytes"
        );
        assert!(line.contains(" events ("), "`{line}` lacks the events/s");
    }
}
