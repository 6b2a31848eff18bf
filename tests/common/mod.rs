//! Helpers shared by the integration tests: a plain reference implementation of event-time
//! windows, and deterministic inputs; `golden`, outputs compared with files in the repository;
//! `kafka`, those of the tests against a Kafka cluster; `hosts`, the hosts of the cluster tests, and `delay`, a proxy that delays their links;
//! `tansu`, the real broker those tests also run against; `python`, the independent client that
//! writes their input there; `moto`, the S3-compatible server of the checkpoint store's tests.

#![allow(dead_code)]

pub mod delay;
pub mod golden;
pub mod hosts;
pub mod kafka;
pub mod moto;
pub mod python;
pub mod tansu;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A loopback port that was free a moment ago (for a server a test starts).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The example job `name` of `examples/jobs/`.
pub fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/jobs")
        .join(name)
}

/// `eddy run JOB -w WORKERS ARGS` with `env` added, its log plain and at its default level.
pub fn eddy_run(job: &Path, workers: usize, args: &[&str], env: &[(&str, &OsStr)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_eddy"));
    command
        .args(["run", job.to_str().unwrap(), "-w", &workers.to_string()])
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG");
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

/// Writes `job` with `[checkpoints]` every 20 ms into the directory `store` to `path`, and runs
/// it with `eddy run` on one worker and then on two, each run killed with SIGKILL once the store
/// holds two checkpoints more than before (or left to end); asserts that checkpoints were taken.
/// The job is then to be restored from the store.
pub fn killed_twice_after_checkpoints(job: &str, store: &Path, path: &Path) {
    let text = format!(
        "{job}\n[checkpoints]\nstore = \"{}\"\ninterval = \"20ms\"\n",
        store.display()
    );
    std::fs::write(path, text).unwrap();
    let newest = || {
        eddy::state::CheckpointStore::open(&eddy::state::Location::Dir(store.into()))
            .and_then(|s| s.checkpoints())
            .map_or(0, |listed| listed.iter().map(|c| c.0).max().unwrap_or(0))
    };
    for workers in [1, 2] {
        let mut child = eddy_run(path, workers, &[], &[])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting eddy");
        let target = newest() + 2;
        while child.try_wait().unwrap().is_none() && newest() < target {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(newest() > 0, "checkpoints were taken");
}

/// [`eddy_run`], which must succeed.
pub fn run_job_file(job: &Path, workers: usize, args: &[&str], env: &[(&str, &OsStr)]) -> Output {
    let output = eddy_run(job, workers, args, env)
        .output()
        .expect("running eddy");
    assert!(
        output.status.success(),
        "{} on {workers} workers: {}",
        job.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The events count of the closing `eddy: done: N events, …` line.
pub fn events_done(log: &str) -> u64 {
    let line = log
        .lines()
        .find_map(|l| l.strip_prefix("eddy: done: "))
        .unwrap_or_else(|| panic!("no `eddy: done:` line in the log:\n{log}"));
    line.split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no event count in `eddy: done: {line}`"))
}

/// One input event of the reference: (key, event time ms, amount).
pub type Txn = (i64, u64, i64);

/// (key, window start) → (count, sum, max).
pub type Windows = BTreeMap<(i64, i64), (i64, i64, i64)>;

/// Tumbling or hopping windows over one partition read in order, with Eddy's (and Flink's) rules
/// written out plainly: the watermark is the highest event time seen minus `delay`; a record
/// counts in each window `[s, s + size)` containing it whose `s + size + lateness - 1` is above the
/// watermark as it stood before the record; a record counting nowhere is late.
pub fn reference_windows(
    events: &[Txn],
    delay: u64,
    size: i64,
    slide: i64,
    lateness: i64,
) -> (Windows, usize) {
    let mut windows = Windows::new();
    let mut late = 0;
    let mut max_seen: Option<u64> = None;
    for &(key, t, amount) in events {
        let watermark = max_seen.map_or(i64::MIN, |m| m as i64 - delay as i64);
        let last = t as i64 - (t as i64).rem_euclid(slide);
        let mut counted = false;
        let mut start = last;
        while start > t as i64 - size {
            if start + size + lateness - 1 > watermark {
                let w = windows.entry((key, start)).or_insert((0, 0, i64::MIN));
                w.0 += 1;
                w.1 += amount;
                w.2 = w.2.max(amount);
                counted = true;
            }
            start -= slide;
        }
        if !counted {
            late += 1;
        }
        max_seen = Some(max_seen.map_or(t, |m| m.max(t)));
    }
    (windows, late)
}

/// `n` transactions over `keys` keys, 1000 per second of event time, with disorder up to
/// `disorder` ms, and every `late_every`-th event pushed `late_by` ms further back.
pub fn transactions(n: u64, keys: i64, disorder: u64, late_every: u64, late_by: u64) -> Vec<Txn> {
    // A small deterministic generator (xorshift), so the tests need no seed plumbing.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|i| {
            let mut t = 1_000_000 + i - next() % (disorder + 1);
            if late_every > 0 && i % late_every == late_every - 1 {
                t = t.saturating_sub(late_by);
            }
            ((next() % keys as u64) as i64, t, (next() % 1000) as i64 + 1)
        })
        .collect()
}

/// The transactions as JSON lines.
pub fn json_lines(events: &[Txn]) -> String {
    events
        .iter()
        .map(|(k, t, a)| {
            format!("{{\"account_id\":{k},\"ts\":{t},\"amount_cents\":{a},\"note\":\"x\"}}\n")
        })
        .collect()
}
