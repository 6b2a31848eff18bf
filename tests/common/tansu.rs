//! The real-broker tier: one tansu broker (an Apache-Kafka-compatible broker, a separate process
//! speaking the protocol over a loopback socket) per test binary, and the gate that runs or skips
//! that tier's tests.
//!
//! The broker is found as `EDDY_TANSU` (a path to the binary) or `tansu` on the `PATH`, and runs
//! on its SQLite engine (`cargo install --locked tansu --features libsql`): its in-memory engine
//! has offset bugs, and the SQLite one does everything the tier needs but transactions. A local
//! run without a broker (or without the independent Python client, see `python.rs`) skips the
//! tier's tests, saying so on standard error; under CI (`CI=true`) that is a failure instead, so
//! the tier can never pass by not running.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use super::free_port;
use super::python;

/// Upper bound for the broker to start listening (it takes ~50 ms).
const START_PATIENCE: Duration = Duration::from_secs(30);

/// The test binary's broker. It runs until the test process exits, however that happens: it is
/// started by a small shell that stops it at end of file on a pipe only this process holds, then
/// removes its directory (statics are never dropped, and a killed or aborted test run would
/// otherwise leave the broker behind). The shell exits with the broker, so a broker that dies
/// early is noticed.
pub struct Broker {
    /// The bootstrap address, `127.0.0.1:PORT`.
    pub address: String,
    /// The broker's standard output and error, for failure messages.
    pub log: PathBuf,
    /// Held open for as long as this process lives; its end of file stops the broker.
    _lifeline: Mutex<ChildStdin>,
}

impl Broker {
    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The broker of this test binary, started on first use; `None` when the tier is skipped here
/// (after saying why on standard error). Panics in CI when the broker or the Python client is
/// missing, and whenever a broker that is present does not start.
pub fn broker(test: &str) -> Option<&'static Broker> {
    static BROKER: OnceLock<Result<Broker, String>> = OnceLock::new();
    let broker = BROKER.get_or_init(|| find().map(|binary| start(&binary)));
    if let Err(why) = python::available() {
        return skip(test, why);
    }
    match broker {
        Ok(broker) => Some(broker),
        Err(why) => skip(test, why),
    }
}

/// Fails under CI; otherwise says on standard error (past the test harness's capture, so that a
/// skipped test is visible in a plain `cargo test`) that the running test was skipped and why.
pub fn skip<T>(test: &str, why: &str) -> Option<T> {
    // The harness names each test's thread after the test.
    let name = thread::current()
        .name()
        .filter(|name| *name != "main")
        .map_or_else(|| test.to_string(), str::to_string);
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{name}: {why}; CI=true, where the real-broker tier must run (.ci/run installs both)"
    );
    // One write, so that the line is not interleaved with the harness's own output.
    let line = format!("skipped: {name}: {why} (the real-broker tier; see README.md, Testing)\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    None
}

/// The broker binary: `EDDY_TANSU`, or `tansu` on the `PATH`.
pub fn find() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("EDDY_TANSU") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("EDDY_TANSU={} is not a file", path.display()))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("tansu"))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            "no tansu broker: neither EDDY_TANSU nor `tansu` on the PATH \
             (cargo install --locked tansu --features libsql)"
                .to_string()
        })
}

/// Starts `binary` on a free loopback port with its SQLite engine in a fresh directory, and waits
/// until it accepts connections.
fn start(binary: &Path) -> Broker {
    let dir = tempfile::Builder::new()
        .prefix("eddy-tansu-")
        .tempdir()
        .expect("a temporary directory for the broker")
        // Removed by the shell below once the broker has stopped.
        .keep();
    let log = dir.join("broker.log");
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let output = std::fs::File::create(&log).expect("creating the broker's log");
    let mut shell = Command::new("sh")
        .arg("-c")
        .arg(
            r#"dir=$1; shift
exec 3<&0
"$@" <&- &
broker=$!
(read -r _ <&3; kill "$broker" 2>/dev/null) &
wait "$broker"
rm -rf "$dir""#,
        )
        .arg("sh")
        .arg(&dir)
        .arg(binary)
        .arg("broker")
        .args(["--listener-url", &url, "--advertised-listener-url", &url])
        // Relative to the working directory.
        .args(["--storage-engine", "sqlite://eddy.db"])
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(output.try_clone().expect("sharing the broker's log"))
        .stderr(output)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
    let lifeline = shell.stdin.take().expect("the shell's standard input");
    let broker = Broker {
        address: format!("127.0.0.1:{port}"),
        log,
        _lifeline: Mutex::new(lifeline),
    };
    // tansu prints `ready in …` once it listens; the port could in principle have been taken
    // between `free_port` and now, so the line is awaited before the connection.
    let deadline = Instant::now() + START_PATIENCE;
    loop {
        let ready = BufReader::new(std::fs::File::open(&broker.log).expect("the broker's log"))
            .lines()
            .map_while(Result::ok)
            .any(|line| line.starts_with("ready in"));
        if ready && TcpStream::connect(&broker.address).is_ok() {
            break;
        }
        if let Some(status) = shell.try_wait().expect("polling the broker's shell") {
            panic!(
                "the tansu broker exited with {status}; its log:\n{}",
                broker.log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the tansu broker was not listening on {} after {START_PATIENCE:?}; its log:\n{}",
            broker.address,
            broker.log()
        );
        thread::sleep(Duration::from_millis(10));
    }
    let line = format!(
        "tansu broker {} on {} (log {})\n",
        binary.display(),
        broker.address,
        broker.log.display()
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
    broker
}
