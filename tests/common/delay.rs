//! A TCP proxy that delays each direction of every connection by a fixed time: link latency for
//! tests, where the kernel has no netem.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Listens on a loopback port and forwards every connection to `target`, each chunk of bytes
/// `delay` after it arrived, in each direction. It runs until the test process ends.
pub fn start(target: String, delay: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding the delay proxy");
    let address = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(&target) else {
                continue;
            };
            for (from, to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                forward(from, to, delay);
            }
        }
    });
    address
}

/// Copies `from` to `to`, each chunk `delay` after it was read; the end of `from` shuts down
/// `to`'s writing side once the chunks before it are through.
fn forward(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (chunks, due) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::spawn(move || {
        let mut buffer = vec![0; 64 * 1024];
        loop {
            let n = from.read(&mut buffer).unwrap_or(0);
            if chunks
                .send((Instant::now() + delay, buffer[..n].to_vec()))
                .is_err()
                || n == 0
            {
                return;
            }
        }
    });
    thread::spawn(move || {
        for (at, chunk) in due {
            thread::sleep(at.saturating_duration_since(Instant::now()));
            if chunk.is_empty() || to.write_all(&chunk).is_err() {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
        }
    });
}
