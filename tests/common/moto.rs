//! A local S3-compatible server for the checkpoint store's S3 tests: moto's server
//! (`pip install 'moto[server]'`), one per test, on a free loopback port, stopped when dropped.
//! A local run without moto skips those tests, saying so on standard error; under CI
//! (`CI=true`, where `.ci/run` installs moto) that is a failure instead.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::free_port;

/// Upper bound for the server to start listening (it takes about a second).
const START_PATIENCE: Duration = Duration::from_secs(60);

/// A running moto server.
pub struct Moto {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    address: String,
    child: Child,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A moto server, or `None` (after saying why) when moto is missing here and this is not CI.
pub fn moto(test: &str) -> Option<Moto> {
    let check = Command::new("python3")
        .args(["-c", "import moto.server"])
        .output();
    let missing = match check {
        Ok(output) if output.status.success() => None,
        Ok(output) => Some(String::from_utf8_lossy(&output.stderr).trim().to_string()),
        Err(e) => Some(format!("no python3: {e}")),
    };
    if let Some(why) = missing {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: python3 cannot import moto.server ({why}); CI=true, where the S3 tests \
             must run (.ci/run installs moto[server])"
        );
        let line = format!(
            "skipped: {test}: python3 cannot import moto.server (pip install 'moto[server]')\n"
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
        return None;
    }
    let port = free_port();
    let child = Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting moto's server");
    let mut moto = Moto {
        endpoint: format!("http://127.0.0.1:{port}"),
        address: format!("127.0.0.1:{port}"),
        child,
    };
    let deadline = Instant::now() + START_PATIENCE;
    while TcpStream::connect(&moto.address).is_err() {
        if let Some(status) = moto.child.try_wait().expect("polling moto's server") {
            panic!("moto's server exited with {status}");
        }
        assert!(
            Instant::now() < deadline,
            "moto's server was not listening on {} after {START_PATIENCE:?}",
            moto.address
        );
        thread::sleep(Duration::from_millis(20));
    }
    Some(moto)
}

impl Moto {
    /// The `AWS_*` settings of a client of this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into()
    }

    /// Creates bucket `name`, by a plain HTTP request (which moto takes unsigned).
    pub fn create_bucket(&self, name: &str) {
        let mut stream = TcpStream::connect(&self.address).expect("connecting to moto");
        let request = format!(
            "PUT /{name} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.address
        );
        stream
            .write_all(request.as_bytes())
            .expect("writing to moto");
        let mut reply = String::new();
        stream
            .read_to_string(&mut reply)
            .expect("reading moto's reply");
        assert!(
            reply.starts_with("HTTP/1.1 200"),
            "creating bucket {name}: {reply}"
        );
    }
}
