//! The independent client: `produce.py`, on the `confluent-kafka` Python package (which ships its
//! own librdkafka build), writes the real-broker tier's input, so that Eddy's decoding is checked
//! against bytes it did not write. (Debian's kcat links librdkafka 2.0.2, which fails against
//! tansu's ApiVersions reply.)

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use super::kafka::Input;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/produce.py");

/// Whether `python3` can import `confluent_kafka`; if not, why (checked once).
pub fn available() -> Result<(), &'static str> {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    CHECK
        .get_or_init(|| {
            let output = Command::new("python3")
                .args(["-c", "import confluent_kafka"])
                .output()
                .map_err(|e| format!("no python3 for the independent Kafka client: {e}"))?;
            if output.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "python3 cannot import confluent_kafka, the independent Kafka client (pip \
                     install confluent-kafka): {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ))
            }
        })
        .as_ref()
        .map(|_| ())
        .map_err(String::as_str)
}

/// Produces `inputs` into `topic` in order, `per_second` messages per wall-clock second (all at
/// once when `None`), counting what has been handed to the client in `produced`; returns once
/// every message is delivered, and fails if one is not.
pub fn produce(
    brokers: &str,
    topic: &str,
    inputs: &[Input],
    per_second: Option<u64>,
    produced: &AtomicU64,
) {
    let mut file = tempfile::NamedTempFile::new().expect("a file for the input");
    for input in inputs {
        serde_json::to_writer(&mut file, input).expect("writing the input");
        file.write_all(b"\n").expect("writing the input");
    }
    file.flush().expect("writing the input");
    // A file rather than a pipe, so that much logging cannot block the client.
    let errors_file = tempfile::tempfile().expect("a file for produce.py's errors");
    let mut child = Command::new("python3")
        .arg(SCRIPT)
        .arg(brokers)
        .arg(topic)
        .arg(file.path())
        .arg(per_second.unwrap_or(0).to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(errors_file.try_clone().expect("sharing a file"))
        .spawn()
        .expect("starting produce.py");
    let stdout = child.stdout.take().expect("produce.py's output");
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("reading produce.py's output");
        let count = line
            .strip_prefix("produced ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("produce.py printed `{line}`"));
        produced.store(count, Ordering::Relaxed);
    }
    let status = child.wait().expect("waiting for produce.py");
    let mut errors = String::new();
    let mut file = errors_file;
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_string(&mut errors))
        .expect("reading produce.py's errors");
    assert!(
        status.success(),
        "produce.py into `{topic}` on {brokers} failed with {status}:\n{errors}"
    );
    assert_eq!(
        produced.load(Ordering::Relaxed),
        inputs.len() as u64,
        "produce.py into `{topic}` delivered a different number of messages"
    );
}

const READER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/consume.py");

/// Every message of `topic` up to its high watermarks, read by `consume.py` with the independent
/// client as a plain consumer, in (partition, offset) order.
pub fn read_topic(brokers: &str, topic: &str) -> Vec<super::kafka::Msg> {
    #[derive(serde::Deserialize)]
    struct Read {
        partition: i32,
        offset: i64,
        key: Option<String>,
        value: String,
        headers: Vec<(String, Option<String>)>,
    }
    let output = Command::new("python3")
        .arg(READER)
        .arg(brokers)
        .arg(topic)
        .stdin(Stdio::null())
        .output()
        .expect("starting consume.py");
    assert!(
        output.status.success(),
        "consume.py reading `{topic}` on {brokers} failed with {}:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("consume.py prints UTF-8")
        .lines()
        .map(|line| {
            let read: Read = serde_json::from_str(line).expect("a line of consume.py");
            super::kafka::Msg {
                partition: read.partition,
                offset: read.offset,
                timestamp: None,
                key: read.key.map(String::into_bytes),
                payload: read.value.into_bytes(),
                headers: read
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k, v.unwrap_or_default().into_bytes()))
                    .collect(),
            }
        })
        .collect()
}
