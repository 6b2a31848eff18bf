//! Clusters of three processes on three hosts (network namespaces the test makes, or loopback
//! ports where it may not): the results are the single process's, and any failure, loss,
//! silence or mismatch ends every process with one line naming the process and its address.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::hosts::Hosts;

/// How long any process of these tests may take to end once it should: generous, as a slow
/// machine may be; the tests never assert how fast.
const PATIENCE: Duration = Duration::from_secs(120);

/// A bounded Q1-like job over `${EDDY_INPUT}`, three splits, sorted CSV to `${EDDY_OUTPUT}`.
const FILE_JOB: &str = r#"
[job]
name = "cluster-q1"

[[sources]]
name = "transactions"
kind = "file"
paths = ["${EDDY_INPUT}"]
splits = 3
event_time = "ts"
out_of_orderness = "2s"
schema = { account_id = "int", amount_cents = "int", ts = "timestamp" }

[[metrics]]
name = "q1"
source = "transactions"
group_by = ["account_id"]
window = { kind = "tumbling", size = "10s" }
aggregates = { count = "count", sum = "sum(amount_cents)" }
sinks = ["csv"]

[[sinks]]
name = "csv"
kind = "file"
path = "${EDDY_OUTPUT}"
format = "csv"
columns = ["account_id", "window_start", "window_end", "count", "sum"]
order_by = ["account_id", "window_start"]
"#;

/// A job that runs until stopped: paced generated transactions into one-second windows.
const LIVE_JOB: &str = r#"
[job]
name = "cluster-live"

[[sources]]
name = "transactions"
kind = "generator"
rate = 2000
paced = true
partitions = 3
event_time = "ts"
schema = { account_id = "int", amount_cents = "int", ts = "timestamp" }

[[metrics]]
name = "per_account"
source = "transactions"
group_by = ["account_id"]
window = { kind = "tumbling", size = "1s" }
aggregates = { count = "count" }
sinks = ["nowhere"]

[[sinks]]
name = "nowhere"
kind = "discard"
"#;

/// A test's directory, job files and hosts.
struct Setup {
    dir: PathBuf,
    hosts: Hosts,
}

impl Setup {
    fn new(name: &str) -> Setup {
        Setup::with_hosts(name, Hosts::new(3))
    }

    fn with_hosts(name: &str, hosts: Hosts) -> Setup {
        let dir = std::env::temp_dir().join(format!("eddy-cluster-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the test directory");
        std::fs::write(dir.join("hosts.txt"), hosts.host_file()).expect("writing the host file");
        Setup { dir, hosts }
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).expect("writing a test file");
        path
    }

    /// `eddy run JOB -n 3 -p I -h hosts.txt ARGS…` on host `i`, with `env` set.
    fn start(&self, i: usize, job: &Path, args: &[&str], env: &[(&str, &Path)]) -> Process {
        let log = self.dir.join(format!("process-{i}.log"));
        let file = std::fs::File::create(&log).expect("creating a log file");
        let mut command = self.hosts.command(i, env!("CARGO_BIN_EXE_eddy"));
        command
            .arg("run")
            .arg(job)
            .args(["-n", "3", "-p", &i.to_string(), "-h"])
            .arg(self.dir.join("hosts.txt"))
            .args(args)
            .env("RUST_LOG", "eddy=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("sharing the log file"))
            .stderr(file);
        for (name, value) in env {
            command.env(name, value);
        }
        Process {
            child: command.spawn().expect("starting eddy"),
            log,
        }
    }

    fn address(&self, i: usize) -> &str {
        &self.hosts.addresses()[i]
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One `eddy run` of a test.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to end by itself.
    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("polling a process") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the process did not end; its log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the log holds `text`.
    fn wait_for_log(&mut self, text: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.log().contains(text) {
            if let Some(status) = self.child.try_wait().expect("polling a process") {
                panic!(
                    "the process ended ({status}) before logging `{text}`:\n{}",
                    self.log()
                );
            }
            assert!(Instant::now() < deadline, "no `{text}` in:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// The last line of the log: the one the process ends with.
    fn last_line(&self) -> String {
        self.log().lines().last().unwrap_or_default().to_string()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Input for the file job: 80 000 transactions over 200 accounts, about 5 MB, so that each of
/// the three splits has a stripe (1 MiB) to read.
fn input(setup: &Setup) -> PathBuf {
    setup.file(
        "txn.jsonl",
        &common::json_lines(&common::transactions(80_000, 200, 500, 0, 0)),
    )
}

/// Runs the file job on one process of two workers, then on the three hosts with two workers
/// each and `args(i)`, and checks that the outputs are the same, that each process read a share,
/// and that each closes with the cluster's totals.
fn same_results_as_one_process(setup: &Setup, args: &dyn Fn(usize) -> Vec<String>) {
    let (job, input) = (setup.file("job.toml", FILE_JOB), input(setup));
    let single = setup.dir.join("single.csv");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_eddy"))
        .arg("run")
        .arg(&job)
        .args(["-w", "2"])
        .env("EDDY_INPUT", &input)
        .env("EDDY_OUTPUT", &single)
        .stderr(Stdio::null())
        .status()
        .expect("running eddy");
    assert!(status.success());
    let output = setup.dir.join("out.csv");
    let env = [
        ("EDDY_INPUT", input.as_path()),
        ("EDDY_OUTPUT", output.as_path()),
    ];
    let mut processes: Vec<Process> = (0..3)
        .map(|i| {
            let args = [vec!["-w".to_string(), "2".into()], args(i)].concat();
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            setup.start(i, &job, &args, &env)
        })
        .collect();
    for process in &mut processes {
        assert!(process.wait().success(), "{}", process.log());
        let last = process.last_line();
        assert!(
            last.starts_with("eddy: done: 80000 events,")
                && last.contains("in the cluster of 3 processes"),
            "{last}"
        );
    }
    let (ours, theirs) = (
        std::fs::read(&output).unwrap(),
        std::fs::read(&single).unwrap(),
    );
    assert!(ours.len() > 1000, "too little output to compare");
    assert!(
        ours == theirs,
        "the cluster's output differs from one process's"
    );
    // Three splits over three processes of two workers: every process read one.
    for process in &processes {
        let log = process.log();
        assert!(!log.contains("has nothing for this process"), "{log}");
        let share = log.rsplit_once("(").unwrap().1;
        assert!(!share.starts_with("0 events"), "{log}");
    }
}

#[test]
fn three_processes_give_the_single_process_results_and_the_cluster_totals() {
    same_results_as_one_process(&Setup::new("results"), &|_| Vec::new());
}

#[test]
fn three_processes_behind_a_50_ms_link_give_the_same_results() {
    // Loopback, as the delay proxies run in this process: process I listens on its own port, and
    // its peers reach it through a proxy that delays each direction by 50 ms.
    let setup = Setup::with_hosts("delay", Hosts::loopback(3));
    let proxies: Vec<String> = (0..3)
        .map(|i| common::delay::start(setup.address(i).into(), Duration::from_millis(50)))
        .collect();
    let listen: Vec<String> = (0..3).map(|i| setup.address(i).to_string()).collect();
    let hosts: String = proxies.iter().map(|p| format!("{p}\n")).collect();
    std::fs::write(setup.dir.join("hosts.txt"), hosts).unwrap();
    same_results_as_one_process(&setup, &|i| vec!["--listen".into(), listen[i].clone()]);
}

#[test]
fn a_missing_input_on_one_host_ends_every_process_naming_it() {
    let setup = Setup::new("missing-input");
    let (job, input) = (setup.file("job.toml", FILE_JOB), input(&setup));
    let (output, missing) = (setup.dir.join("out.csv"), setup.dir.join("nowhere.jsonl"));
    let mut processes: Vec<Process> = (0..3)
        .map(|i| {
            let input = if i == 1 { &missing } else { &input };
            let env = [
                ("EDDY_INPUT", input.as_path()),
                ("EDDY_OUTPUT", output.as_path()),
            ];
            setup.start(i, &job, &[], &env)
        })
        .collect();
    let failed = format!("process 1 ({})", setup.address(1));
    for (i, process) in processes.iter_mut().enumerate() {
        assert_eq!(process.wait().code(), Some(1), "{}", process.log());
        let last = process.last_line();
        let cause = "source `transactions`: ";
        let expected = match i {
            1 => format!("eddy: error: {failed}: {cause}"),
            _ => format!("eddy: error: {failed} failed: {cause}"),
        };
        assert!(last.starts_with(&expected), "process {i}: {last}");
        assert!(!process.log().contains("panicked"), "{}", process.log());
    }
    assert!(
        !output.exists(),
        "a failed job left output at its final path"
    );
}

/// Starts the live job on all three hosts with `args` and waits until each has joined.
fn start_live(setup: &Setup, args: &[&str]) -> Vec<Process> {
    let job = setup.file("live.toml", LIVE_JOB);
    let mut processes: Vec<Process> = (0..3).map(|i| setup.start(i, &job, args, &[])).collect();
    for process in &mut processes {
        process.wait_for_log("joined the cluster");
    }
    processes
}

#[test]
fn a_killed_process_ends_the_others_naming_it() {
    let setup = Setup::new("kill");
    let mut processes = start_live(&setup, &[]);
    processes[2].signal("KILL");
    let lost = format!(
        "eddy: error: lost process 2 ({}): connection closed",
        setup.address(2)
    );
    for process in &mut processes[..2] {
        assert_eq!(process.wait().code(), Some(1), "{}", process.log());
        assert_eq!(process.last_line(), lost);
        assert!(!process.log().contains("panicked"), "{}", process.log());
    }
}

#[test]
fn a_frozen_process_is_detected_by_its_silence() {
    let setup = Setup::new("stop");
    let mut processes = start_live(&setup, &["--peer-heartbeat", "2s"]);
    processes[2].signal("STOP");
    let lost = format!(
        "eddy: error: lost process 2 ({}): no heartbeat for 2s",
        setup.address(2)
    );
    for process in &mut processes[..2] {
        assert_eq!(process.wait().code(), Some(1), "{}", process.log());
        assert!(process.last_line().starts_with(&lost), "{}", process.log());
    }
}

#[test]
fn a_stop_of_one_process_stops_the_cluster_gracefully() {
    let setup = Setup::new("interrupt");
    let mut processes = start_live(&setup, &[]);
    processes[0].signal("INT");
    assert_eq!(
        processes[0].wait().code(),
        Some(130),
        "{}",
        processes[0].log()
    );
    for process in &mut processes {
        let status = process.wait();
        assert!(status.code() == Some(0) || status.code() == Some(130));
        let last = process.last_line();
        assert!(
            last.starts_with("eddy: done:") && last.contains("in the cluster of 3 processes"),
            "{last}"
        );
    }
}

#[test]
fn a_missing_peer_is_named_when_the_peer_timeout_passes() {
    let setup = Setup::new("missing-peer");
    let job = setup.file("live.toml", LIVE_JOB);
    let mut processes: Vec<Process> = (0..2)
        .map(|i| setup.start(i, &job, &["--peer-timeout", "3s"], &[]))
        .collect();
    let missing = format!("missing process 2 ({}) (did not connect)", setup.address(2));
    for process in &mut processes {
        assert_eq!(process.wait().code(), Some(1), "{}", process.log());
        let last = process.last_line();
        assert!(
            last.contains("within 3s (--peer-timeout)") && last.ends_with(&missing),
            "{last}"
        );
    }
}

#[test]
fn processes_of_different_jobs_refuse_each_other() {
    let setup = Setup::new("mismatch");
    let job = setup.file("live.toml", LIVE_JOB);
    let other = setup.file(
        "other.toml",
        &LIVE_JOB.replace("rate = 2000", "rate = 3000"),
    );
    let mut processes: Vec<Process> = (0..3)
        .map(|i| {
            // Process 2 may find process 1 gone before it dials it: it waits this long.
            let args = ["--peer-timeout", "5s"];
            setup.start(i, if i == 1 { &other } else { &job }, &args, &[])
        })
        .collect();
    for process in &mut processes {
        assert_eq!(process.wait().code(), Some(1), "{}", process.log());
    }
    for (i, other) in [(0, 1), (1, 0)] {
        let last = processes[i].last_line();
        let expected = format!(
            "process {other} ({}) runs another job file",
            setup.address(other)
        );
        assert!(last.contains(&expected), "process {i}: {last}");
    }
}

#[test]
fn a_host_pattern_names_the_processes() {
    let setup = Setup::new("pattern");
    let job = setup.file("live.toml", LIVE_JOB);
    // Nothing listens on these: the error names the pattern's addresses.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_eddy"))
        .arg("run")
        .arg(&job)
        .args([
            "-n",
            "2",
            "-p",
            "1",
            "-h",
            "127.0.0.1:4{i}917",
            "--peer-timeout",
            "1s",
        ])
        .stderr(Stdio::piped())
        .output()
        .expect("running eddy");
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert_eq!(status.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("eddy: error: process 1 (127.0.0.1:41917): ")
            && stderr.contains("missing process 0 (127.0.0.1:40917)"),
        "{stderr}"
    );
}

#[test]
fn metrics_say_which_process_they_are_the_share_of() {
    // Loopback, so that this test reaches each process's server.
    let setup = Setup::with_hosts("metrics", Hosts::loopback(3));
    let job = setup.file(
        "live.toml",
        &format!("{LIVE_JOB}\n[server]\nlisten = \"${{EDDY_HTTP}}\"\n"),
    );
    let http: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", common::hosts::unallocated_port()))
        .collect();
    let mut processes: Vec<Process> = (0..3)
        .map(|i| setup.start(i, &job, &[], &[("EDDY_HTTP", Path::new(&http[i]))]))
        .collect();
    for process in &mut processes {
        process.wait_for_log("joined the cluster");
    }
    let metrics = get(&http[1], "/metrics");
    assert!(
        metrics.contains(
            r#"eddy_source_records_total{process="1",processes="3",source="transactions"}"#
        ),
        "{metrics}"
    );
}

/// The body of `GET path` from the server at `address`.
fn get(address: &str, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(address).expect("connecting to the server");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}
