//! SASL/SCRAM over TLS against a real broker: a tansu broker that requires SCRAM authentication,
//! behind a TLS terminator (socat with OpenSSL, since tansu 0.6 accepts `--cert` but never
//! serves TLS), read and written by Eddy's Kafka source and sink and by the independent Python
//! client, as a managed Kafka service (SASL_SSL with SCRAM-SHA-512) would be. Part of the
//! real-broker tier: skipped locally without tansu, socat, openssl or confluent-kafka, and a
//! failure under CI.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::free_port;
use common::tansu;
use eddy::job::Job;

const USER: &str = "eddy";
const PASSWORD: &str = "s3cret-pass";
const COUNT: usize = 200;

/// A child process killed when dropped, so a failing test leaves none behind.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `program args` to its end in `dir`, failing with its output if it fails.
fn run(dir: &Path, program: &Path, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    assert!(
        output.status.success(),
        "{} {args:?}: {}{}",
        program.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Waits until something listens on `port`.
fn await_port(port: u16, process: &mut Process, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = process.0.try_wait().unwrap() {
            panic!("{what} exited with {status}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} is not listening on {port}"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// The tansu broker on its SQLite engine in `dir`, listening on `port` and advertising
/// `advertised` (the TLS terminator in front of it).
fn broker(binary: &Path, dir: &Path, port: u16, advertised: u16, authenticate: bool) -> Process {
    let listener = format!("tcp://127.0.0.1:{port}");
    let advertised = format!("tcp://127.0.0.1:{advertised}");
    let log = std::fs::File::create(dir.join("broker.log")).unwrap();
    let mut command = Command::new(binary);
    command
        .arg("broker")
        .args(["--listener-url", &listener])
        .args(["--advertised-listener-url", &advertised])
        .args(["--storage-engine", "sqlite://broker.db"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    if authenticate {
        command.arg("--authentication");
    }
    let mut process = Process(command.spawn().unwrap());
    await_port(port, &mut process, "the tansu broker");
    process
}

/// The client settings of SASL_SSL with SCRAM-SHA-512 and the test's CA, as `(key, value)`.
fn security(dir: &Path, password: &str) -> Vec<(&'static str, String)> {
    vec![
        ("security.protocol", "SASL_SSL".into()),
        ("sasl.mechanisms", "SCRAM-SHA-512".into()),
        ("sasl.username", USER.into()),
        ("sasl.password", password.into()),
        (
            "ssl.ca.location",
            dir.join("cert.pem").display().to_string(),
        ),
    ]
}

/// The Python client's configuration, as a dict literal.
fn python_config(brokers: &str, dir: &Path) -> String {
    let mut entries = vec![format!("'bootstrap.servers': '{brokers}'")];
    for (key, value) in security(dir, PASSWORD) {
        entries.push(format!("'{key}': '{value}'"));
    }
    format!("{{{}}}", entries.join(", "))
}

/// Runs a Python snippet with `confluent_kafka` and `config` (a dict) in scope; its stdout.
fn python(snippet: &str, config: &str) -> String {
    let script =
        format!("import json\nfrom confluent_kafka import *\nconfig = {config}\n{snippet}");
    let output = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "python: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The job: every event of `in` routed to `out`, both over SASL_SSL with `password`.
fn job_text(brokers: &str, dir: &Path, password: &str) -> String {
    let properties: String = security(dir, password)
        .iter()
        .map(|(key, value)| format!("\"{key}\" = \"{value}\"\n"))
        .collect();
    format!(
        r#"[job]
name = "scram"

[[sources]]
name = "in"
kind = "kafka"
brokers = "{brokers}"
topics = ["in"]
group = "scram"
event_time = "ts"
schema = {{ id = "int", ts = "timestamp" }}
[sources.properties]
{properties}
[[routes]]
name = "all"
source = "in"
sinks = ["out"]

[[sinks]]
name = "out"
kind = "kafka"
brokers = "{brokers}"
topic = "out"
[sinks.properties]
{properties}"#
    )
}

/// Why the test cannot run here, if it cannot.
fn missing() -> Option<String> {
    let tansu = tansu::find().err();
    let python = common::python::available().err().map(str::to_string);
    let tools = ["socat", "openssl"].into_iter().find_map(|tool| {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .status()
            .is_ok_and(|s| s.success());
        (!found).then(|| format!("no `{tool}` (apt-get install {tool})"))
    });
    tansu.or(python).or(tools)
}

#[test]
fn scram_over_tls_reads_and_writes_through_a_real_broker() {
    if let Some(why) = missing() {
        tansu::skip::<()>("scram_over_tls", &why);
        return;
    }
    let binary: PathBuf = tansu::find().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let openssl = Path::new("openssl");
    run(
        dir,
        openssl,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
    );
    let pem = [dir.join("cert.pem"), dir.join("key.pem")]
        .map(|p| std::fs::read_to_string(p).unwrap())
        .concat();
    std::fs::write(dir.join("server.pem"), pem).unwrap();
    let (port, tls_port) = (free_port(), free_port());
    let url = format!("tcp://127.0.0.1:{port}");
    // The user and the topics are made before authentication is required: tansu's `user
    // create` is refused by a broker that requires it.
    {
        let _setup = broker(&binary, dir, port, tls_port, false);
        run(
            dir,
            &binary,
            &[
                "user",
                "create",
                "--broker",
                &url,
                "--mechanism",
                "scram512",
                USER,
                PASSWORD,
            ],
        );
        for topic in ["in", "out"] {
            run(
                dir,
                &binary,
                &[
                    "topic",
                    "create",
                    "--broker",
                    &url,
                    "--partitions",
                    "2",
                    topic,
                ],
            );
        }
    }
    let _broker = broker(&binary, dir, port, tls_port, true);
    let mut terminator = Process(
        Command::new("socat")
            .arg(format!(
                "OPENSSL-LISTEN:{tls_port},bind=127.0.0.1,reuseaddr,fork,cert={},verify=0",
                dir.join("server.pem").display()
            ))
            .arg(format!("TCP:127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    await_port(tls_port, &mut terminator, "socat");
    let brokers = format!("127.0.0.1:{tls_port}");
    let config = python_config(&brokers, dir);
    python(
        &format!(
            "p = Producer(config)\nfor i in range({COUNT}):\n    \
             p.produce('in', json.dumps({{'id': i, 'ts': 1700000000000 + i}}).encode())\n\
             assert p.flush(30) == 0"
        ),
        &config,
    );

    let text = job_text(&brokers, dir, PASSWORD);
    let job = Job::parse(Path::new("scram.toml"), &text).unwrap();
    let stats = common::kafka::run_job_to_end(job, 2);
    assert_eq!(stats.get(eddy::stats::Counter::EventsIn), COUNT as u64);

    let read = python(
        &format!(
            "config.update({{'group.id': 'check', 'auto.offset.reset': 'earliest'}})\n\
             c = Consumer(config)\nc.subscribe(['out'])\nids = set()\n\
             import time\ndeadline = time.time() + 60\n\
             while len(ids) < {COUNT} and time.time() < deadline:\n    \
             m = c.poll(1)\n    \
             if m is not None and m.error() is None:\n        \
             ids.add(json.loads(m.value())['id'])\n\
             c.close()\nprint(sorted(ids) == list(range({COUNT})))"
        ),
        &config,
    );
    assert_eq!(
        read.trim(),
        "True",
        "every event reached `out`, read over SASL_SSL"
    );
}
