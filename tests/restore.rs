//! Restoring from checkpoints: a job killed with SIGKILL at random points, restored each time
//! (on a different number of workers each time), and run to its end writes what an
//! uninterrupted run writes.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use eddy::state::{CheckpointStore, Location};

/// The input: 300 s of event time at 1000 transactions a second over 500 accounts, a little out
/// of order, with some records late.
fn input(dir: &Path) -> PathBuf {
    let path = dir.join("transactions.jsonl");
    let events = common::transactions(300_000, 500, 1_500, 1_000, 20_000);
    std::fs::write(&path, common::json_lines(&events)).unwrap();
    path
}

/// `job` with a `[checkpoints]` section taking a checkpoint as often as it can, into `store`.
fn with_checkpoints(job: &str, store: &Path, dir: &Path, name: &str) -> PathBuf {
    let text = format!(
        "{job}\n[checkpoints]\nstore = \"{}\"\ninterval = \"20ms\"\nkeep = 2\n",
        store.display()
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The newest checkpoint's id in `store` (0 for none).
fn newest(store: &Path) -> u64 {
    CheckpointStore::open(&Location::Dir(store.into()))
        .and_then(|s| s.checkpoints())
        .map_or(0, |listed| {
            listed.iter().map(|(id, _)| *id).max().unwrap_or(0)
        })
}

/// A small deterministic generator for the kill points.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// Runs `job` (writing `output`) three times, each killed with SIGKILL once the store holds a
/// checkpoint newer than before and a random moment later, alternating between one worker and
/// two; then runs it to its end on two workers, and returns the output.
fn killed_and_restored(job: &Path, input: &Path, output: &Path, store: &Path, seed: u64) -> String {
    let mut rng = Rng(seed | 1);
    for round in 0..3 {
        let workers = if round % 2 == 0 { "1" } else { "2" };
        let mut child = Command::new(env!("CARGO_BIN_EXE_eddy"))
            .args(["run", job.to_str().unwrap(), "-w", workers])
            .env("EDDY_INPUT", input)
            .env("EDDY_OUTPUT", output)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting eddy");
        let target = newest(store) + 1 + rng.next(3);
        while child.try_wait().unwrap().is_none() && newest(store) < target {
            thread::sleep(Duration::from_millis(2));
        }
        thread::sleep(Duration::from_millis(rng.next(40)));
        let _ = child.kill();
        let _ = child.wait();
    }
    let last = common::run_job_file(job, 2, &[("EDDY_INPUT", input), ("EDDY_OUTPUT", output)]);
    let said = String::from_utf8_lossy(&last.stderr);
    assert!(
        said.contains("eddy: restoring checkpoint"),
        "the last run restores a checkpoint: {said}"
    );
    std::fs::read_to_string(output).unwrap()
}

fn seed() -> u64 {
    let seed = std::env::var("EDDY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("seed {seed} (EDDY_TEST_SEED={seed} repeats this run)");
    seed
}

/// A metrics job killed three times and restored, each time on another number of workers,
/// writes byte for byte what it writes uninterrupted.
fn assert_restores_exactly(example: &str) {
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path());
    let expected = dir.path().join("expected.csv");
    common::run_job_file(
        &common::example(example),
        2,
        &[("EDDY_INPUT", &input), ("EDDY_OUTPUT", &expected)],
    );
    let expected = std::fs::read_to_string(expected).unwrap();
    assert!(
        expected.lines().count() > 100,
        "{example}: a sizeable output"
    );
    let store = dir.path().join("store");
    let text = std::fs::read_to_string(common::example(example)).unwrap();
    let job = with_checkpoints(&text, &store, dir.path(), example);
    let output = dir.path().join("restored.csv");
    let restored = killed_and_restored(&job, &input, &output, &store, seed());
    assert!(newest(&store) > 0, "{example}: checkpoints were taken");
    assert!(
        restored == expected,
        "{example}: the restored run's output differs"
    );
}

#[test]
fn q1_tumbling_windows_restore_exactly() {
    assert_restores_exactly("q1.toml");
}

#[test]
fn q2_hopping_windows_restore_exactly() {
    assert_restores_exactly("q2.toml");
}

/// Session windows written as they fire (no order): the file is cut back to the checkpoint's
/// length on restore, so every row is written once.
#[test]
fn session_windows_written_as_they_fire_restore_exactly() {
    let job = r#"
[job]
name = "sessions"

[[sources]]
name = "transactions"
kind = "file"
paths = ["${EDDY_INPUT}"]
splits = 2
event_time = "ts"
out_of_orderness = "2s"
schema = { account_id = "int", amount_cents = "int", ts = "timestamp" }

[[metrics]]
name = "sessions"
source = "transactions"
group_by = ["account_id"]
window = { kind = "session", gap = "1s" }
aggregates = { count = "count", sum = "sum(amount_cents)" }
sinks = ["csv"]

[[sinks]]
name = "csv"
kind = "file"
path = "${EDDY_OUTPUT}"
format = "csv"
columns = ["account_id", "window_start", "window_end", "count", "sum"]
"#;
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path());
    let plain = dir.path().join("plain.toml");
    std::fs::write(&plain, job).unwrap();
    let expected = dir.path().join("expected.csv");
    common::run_job_file(
        &plain,
        2,
        &[("EDDY_INPUT", &input), ("EDDY_OUTPUT", &expected)],
    );
    let sorted = |text: String| {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    let expected = sorted(std::fs::read_to_string(expected).unwrap());
    assert!(expected.len() > 1_000);
    let store = dir.path().join("store");
    let job = with_checkpoints(job, &store, dir.path(), "sessions.toml");
    let output = dir.path().join("restored.csv");
    let restored = sorted(killed_and_restored(&job, &input, &output, &store, seed()));
    assert!(newest(&store) > 0, "checkpoints were taken");
    assert_eq!(restored.len(), expected.len(), "every row once");
    assert!(restored == expected, "the restored run's rows differ");
}
