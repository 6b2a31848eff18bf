//! One worker's failure ends the whole job: `eddy run` as a child process on 1, 2 and 4 workers,
//! with a missing input, an unwritable output, or a worker that panics; each run must exit 1 with
//! one message naming what failed, and leave no output file. And signals: the stop after SIGINT or
//! SIGTERM is graceful, a repeated signal does not cut it short, and a stop that cannot finish
//! ends at the stop timeout.

use std::fs;
use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a child may take before the test calls it hung (and kills it).
const PATIENCE: Duration = Duration::from_secs(60);

const WORKERS: [usize; 3] = [1, 2, 4];

/// A job over `input` into a sorted CSV at `output`, read in `splits` splits.
fn job(dir: &Path, splits: usize) -> PathBuf {
    let text = format!(
        r#"
[job]
name = "failures"

[[sources]]
name = "transactions"
kind = "file"
paths = ["${{EDDY_INPUT}}"]
splits = {splits}
event_time = "ts"
schema = {{ account_id = "int", amount_cents = "int", ts = "timestamp" }}

[[metrics]]
name = "per_account"
source = "transactions"
group_by = ["account_id"]
window = {{ kind = "tumbling", size = "10s" }}
aggregates = {{ count = "count", sum = "sum(amount_cents)" }}
sinks = ["csv"]

[[sinks]]
name = "csv"
kind = "file"
path = "${{EDDY_OUTPUT}}"
format = "csv"
order_by = ["account_id", "window_start"]
"#
    );
    let path = dir.join(format!("job-{splits}.toml"));
    fs::write(&path, text).unwrap();
    path
}

/// A JSON-lines input of `n` transactions, one per 10 ms of event time.
fn input(dir: &Path, n: u64) -> PathBuf {
    let path = dir.join("input.jsonl");
    let mut file = fs::File::create(&path).unwrap();
    for i in 0..n {
        let (account, amount, ts) = (i % 17, 100 + i % 900, 1_700_000_000_000 + i * 10);
        writeln!(
            file,
            r#"{{"account_id":{account},"amount_cents":{amount},"ts":{ts}}}"#
        )
        .unwrap();
    }
    path
}

fn eddy(args: &[&str], env: &[(&str, &Path)], extra_env: &[(&str, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_eddy"));
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    for (name, value) in extra_env {
        command.env(name, value);
    }
    command.env_remove("RUST_LOG").env("NO_COLOR", "1");
    command
}

/// Waits for `child` to exit, killing it and failing the test once [`PATIENCE`] has passed.
fn wait(mut child: Child, what: &str) -> Output {
    let deadline = Instant::now() + PATIENCE;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!(
                "{what}: still running after {PATIENCE:?}; stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Runs the job on `workers` workers and checks that it failed: exit status 1, one error line
/// containing `message`, and no output file.
fn assert_fails(
    dir: &Path,
    splits: usize,
    workers: usize,
    input: &Path,
    output: &Path,
    fault: Option<String>,
    message: &str,
) {
    let job = job(dir, splits);
    let w = workers.to_string();
    let args = ["run", job.to_str().unwrap(), "-w", &w];
    let env = [("EDDY_INPUT", input), ("EDDY_OUTPUT", output)];
    let fault: Vec<_> = fault.into_iter().map(|f| ("EDDY_TEST_FAULT", f)).collect();
    let what = format!("-w {workers}, expecting `{message}`");
    let out = wait(eddy(&args, &env, &fault).spawn().unwrap(), &what);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{what}: stderr:\n{stderr}");
    let errors: Vec<_> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{what}: one error line, got:\n{stderr}");
    assert!(errors[0].starts_with("eddy: error: "), "{what}: {stderr}");
    assert!(errors[0].contains(message), "{what}: {stderr}");
    assert!(
        !stderr.contains("panicked at"),
        "{what}: a raw panic:\n{stderr}"
    );
    if !output.is_dir() {
        assert!(!output.exists(), "{what}: left {}", output.display());
    }
}

#[test]
fn a_missing_input_file_ends_every_worker() {
    let dir = tempfile::tempdir().unwrap();
    for workers in WORKERS {
        // One split: the workers past the first have no part of the file to open.
        assert_fails(
            dir.path(),
            1,
            workers,
            &dir.path().join("nope.jsonl"),
            &dir.path().join("out.csv"),
            None,
            "source `transactions`: ",
        );
    }
}

#[test]
fn a_missing_output_directory_ends_every_worker() {
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path(), 500);
    let output = dir.path().join("no-such-dir").join("out.csv");
    for workers in WORKERS {
        assert_fails(
            dir.path(),
            1,
            workers,
            &input,
            &output,
            None,
            "sink `csv`: ",
        );
    }
}

#[test]
fn an_output_path_that_is_a_directory_ends_every_worker() {
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path(), 500);
    let output = dir.path().join("a-directory");
    fs::create_dir(&output).unwrap();
    for workers in WORKERS {
        assert_fails(
            dir.path(),
            1,
            workers,
            &input,
            &output,
            None,
            "is a directory",
        );
    }
    assert!(fs::read_dir(&output).unwrap().next().is_none());
}

#[test]
fn an_output_that_is_the_input_by_another_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path(), 500);
    let before = fs::read(&input).unwrap();
    let link = dir.path().join("link.jsonl");
    std::os::unix::fs::symlink(&input, &link).unwrap();
    let job = job(dir.path(), 1);
    let env = [("EDDY_INPUT", input.as_path()), ("EDDY_OUTPUT", &link)];
    let args = ["run", job.to_str().unwrap()];
    let out = wait(eddy(&args, &env, &[]).spawn().unwrap(), "output = input");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The job file names one file twice, which loading it finds (before `run` opens anything).
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "is the file sources[0].paths[0] reads: a sink must not write over its input"
        ),
        "{stderr}"
    );
    assert_eq!(fs::read(&input).unwrap(), before, "the input was touched");
}

#[test]
fn a_panic_on_one_worker_ends_every_worker() {
    let dir = tempfile::tempdir().unwrap();
    // Over 4 MiB: a split is every n-th 1 MiB stripe, so every worker reads some of it.
    let input = input(dir.path(), 100_000);
    let output = dir.path().join("out.csv");
    for workers in WORKERS {
        // Every worker reads a split; the last one panics at its first event.
        let fault = format!("panic:{}", workers - 1);
        assert_fails(
            dir.path(),
            workers,
            workers,
            &input,
            &output,
            Some(fault),
            &format!("worker {}: panicked: ", workers - 1),
        );
    }
}

/// The job runs to the end once the fault hook is off: the failures above come from the faults.
#[test]
fn the_same_job_without_a_fault_writes_its_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path(), 5_000);
    let output = dir.path().join("out.csv");
    for workers in WORKERS {
        let job = job(dir.path(), workers);
        let w = workers.to_string();
        let args = ["run", job.to_str().unwrap(), "-w", &w];
        let env = [("EDDY_INPUT", input.as_path()), ("EDDY_OUTPUT", &output)];
        let out = wait(eddy(&args, &env, &[]).spawn().unwrap(), "no fault");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        let csv = fs::read_to_string(&output).unwrap();
        // 17 accounts over 50 s of event time in 10 s windows, and the header.
        assert_eq!(csv.lines().count(), 17 * 5 + 1, "{csv}");
        fs::remove_file(&output).unwrap();
    }
}

/// An unbounded job: generated payments, every one written to a JSON-lines file as it comes.
fn unbounded_job(dir: &Path, output: &Path) -> PathBuf {
    let text = format!(
        r#"
[job]
name = "unbounded"

[[sources]]
name = "payments"
kind = "generator"
rate = 2000
paced = true
partitions = 2
event_time = "ts"
schema = {{ txn_id = "string", account_id = "int", ts = "timestamp" }}

[[routes]]
name = "all"
source = "payments"
sinks = ["file"]

[[sinks]]
name = "file"
kind = "file"
path = "{}"
"#,
        output.display()
    );
    let path = dir.join("unbounded.toml");
    fs::write(&path, text).unwrap();
    path
}

/// Waits until `path` holds at least `lines` complete lines, failing if `child` exits first.
fn wait_for_lines(child: &mut Child, path: &Path, lines: usize) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        if text.matches('\n').count() >= lines {
            return;
        }
        assert!(child.try_wait().unwrap().is_none(), "the job ended early");
        assert!(Instant::now() < deadline, "no output after {PATIENCE:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Every line of a JSON-lines file is whole.
fn assert_whole_lines(path: &Path) -> usize {
    let text = fs::read_to_string(path).unwrap();
    assert!(text.ends_with('\n'), "a cut line at the end");
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }
    text.lines().count()
}

/// A file sink's output appears while the job runs, not only at its end.
#[test]
fn a_running_jobs_file_grows_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.jsonl");
    let job = unbounded_job(dir.path(), &output);
    let mut child = eddy(&["run", job.to_str().unwrap(), "-w", "2"], &[], &[])
        .spawn()
        .unwrap();
    wait_for_lines(&mut child, &output, 10);
    let seen = assert_whole_lines(&output);
    wait_for_lines(&mut child, &output, seen + 10);
    signal(&child, "-TERM");
    let out = wait(child, "SIGTERM");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(assert_whole_lines(&output) >= seen + 10);
}

/// Two SIGINTs in a row (as `timeout` and a terminal deliver them) make one graceful stop.
#[test]
fn a_second_sigint_at_once_does_not_cut_the_stop_short() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.jsonl");
    let job = unbounded_job(dir.path(), &output);
    let mut child = eddy(&["run", job.to_str().unwrap()], &[], &[])
        .spawn()
        .unwrap();
    wait_for_lines(&mut child, &output, 10);
    signal(&child, "-INT");
    signal(&child, "-INT");
    let out = wait(child, "SIGINT twice");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("eddy: stopping"), "{stderr}");
    assert!(!stderr.contains("quitting"), "{stderr}");
    assert!(stderr.contains("eddy: done: "), "{stderr}");
    assert_whole_lines(&output);
}

/// A worker stuck in an operator cannot stop gracefully: the process quits at the stop timeout.
#[test]
fn a_stop_that_cannot_finish_ends_at_the_stop_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.jsonl");
    let job = unbounded_job(dir.path(), &output);
    let args = [
        "run",
        job.to_str().unwrap(),
        "-w",
        "2",
        "--stop-timeout",
        "1s",
    ];
    let fault = [("EDDY_TEST_FAULT", "stall:1".to_string())];
    let mut child = eddy(&args, &[], &fault).spawn().unwrap();
    wait_for_lines(&mut child, &output, 10);
    signal(&child, "-TERM");
    let out = wait(child, "SIGTERM with a stalled worker");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("the stop did not finish within the stop timeout"),
        "{stderr}"
    );
}

/// Sorted output to something that is not a regular file (a pipe here; /dev/null alike) is
/// written through it, never renamed onto it.
#[test]
fn sorted_output_into_a_pipe_goes_through_the_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path(), 5_000);
    let pipe = dir.path().join("pipe");
    assert!(
        Command::new("mkfifo")
            .arg(&pipe)
            .status()
            .unwrap()
            .success()
    );
    let reader = {
        let pipe = pipe.clone();
        thread::spawn(move || fs::read_to_string(pipe).unwrap())
    };
    let job = job(dir.path(), 1);
    let env = [("EDDY_INPUT", input.as_path()), ("EDDY_OUTPUT", &pipe)];
    let out = wait(
        eddy(&["run", job.to_str().unwrap()], &env, &[])
            .spawn()
            .unwrap(),
        "into a pipe",
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Before joining the reader, which a pipe replaced by a file would leave waiting.
    assert!(fs::symlink_metadata(&pipe).unwrap().file_type().is_fifo());
    let csv = reader.join().unwrap();
    assert_eq!(csv.lines().count(), 17 * 5 + 1, "{csv}");
}
