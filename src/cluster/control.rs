//! The control plane: one connection to each peer beside timely's, carrying JSON lines. Every
//! process sends heartbeats; one that fails sends its error; one that is stopped asks the others
//! to stop too; one that has finished sends its totals. A reader per peer turns what arrives, or
//! what does not (a closed connection, a silence longer than the heartbeat), into one clear
//! failure for this process.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use anyhow::anyhow;
use serde::{Deserialize, Serialize};

use super::Peers;
use crate::stats::Totals;

/// The longest wait between two heartbeats (a quarter of the heartbeat timeout when shorter), so
/// a stop reaches the peers within about this long.
const MAX_BEAT_INTERVAL: Duration = Duration::from_millis(500);

/// One line on a control connection.
#[derive(Debug, Serialize, Deserialize)]
enum Message {
    /// The sender is alive.
    Beat,
    /// The sender was stopped (a signal): every process stops gracefully too.
    Stop,
    /// The sender failed, and why.
    Failed(String),
    /// The sender has finished its share of the job, with these totals.
    Done(Totals),
}

/// What the readers have learnt so far.
#[derive(Default)]
struct State {
    /// Each peer's totals, once it has finished.
    done: Vec<Option<Totals>>,
    /// The first failure heard of.
    failure: Option<String>,
}

/// What the readers, the heartbeat and [`ControlPlane::finish`] share.
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    on_failure: Box<dyn Fn(String) + Send + Sync>,
}

impl Shared {
    /// Records `message` as the cluster's failure if it is the first, and passes it on.
    fn failed(&self, message: String) {
        let first = {
            let mut state = self.state.lock().unwrap();
            let first = state.failure.is_none();
            if first {
                state.failure = Some(message.clone());
            }
            first
        };
        self.changed.notify_all();
        if first {
            (self.on_failure)(message);
        }
    }
}

/// This process's end of the control connections.
pub struct ControlPlane {
    writers: Arc<Vec<Option<Mutex<TcpStream>>>>,
    shared: Arc<Shared>,
}

impl ControlPlane {
    /// Starts a reader per peer and the heartbeat. A peer that fails, closes its connection
    /// before it has finished, or stays silent for `heartbeat`, is reported to `on_failure`
    /// (the first such news only); a peer that was stopped sets `stop`, and a set `stop` is sent
    /// to the peers.
    pub fn start(
        control: Vec<Option<TcpStream>>,
        peers: &Peers,
        heartbeat: Duration,
        stop: Arc<AtomicBool>,
        on_failure: impl Fn(String) + Send + Sync + 'static,
    ) -> ControlPlane {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                done: vec![None; control.len()],
                failure: None,
            }),
            changed: Condvar::new(),
            on_failure: Box::new(on_failure),
        });
        let mut writers = Vec::new();
        for (peer, stream) in control.into_iter().enumerate() {
            let Some(stream) = stream else {
                writers.push(None);
                continue;
            };
            let reader = stream.try_clone().expect("a control connection clones");
            // A frozen peer must not block the heartbeat: a write may wait at most this long.
            let _ = stream.set_write_timeout(Some(heartbeat));
            writers.push(Some(Mutex::new(stream)));
            let (shared, name, stop) = (Arc::clone(&shared), peers.name(peer), Arc::clone(&stop));
            thread::Builder::new()
                .name(format!("eddy:control-{peer}"))
                .spawn(move || read_peer(reader, peer, &name, heartbeat, &shared, &stop))
                .expect("a control reader starts");
        }
        let plane = ControlPlane {
            writers: Arc::new(writers),
            shared,
        };
        let writers = Arc::clone(&plane.writers);
        let interval = (heartbeat / 4).min(MAX_BEAT_INTERVAL);
        thread::Builder::new()
            .name("eddy:heartbeat".into())
            .spawn(move || {
                let mut stop_sent = false;
                loop {
                    if !stop_sent && stop.load(Ordering::Relaxed) {
                        send(&writers, &Message::Stop);
                        stop_sent = true;
                    }
                    send(&writers, &Message::Beat);
                    thread::sleep(interval);
                }
            })
            .expect("the heartbeat starts");
        plane
    }

    /// Tells every peer that this process failed with `message`.
    pub fn fail(&self, message: &str) {
        send(&self.writers, &Message::Failed(message.to_string()));
    }

    /// Tells every peer that this process has finished with `mine`, and waits until every peer
    /// has finished too: the result is the cluster's totals, or the failure heard of meanwhile.
    pub fn finish(&self, mine: Totals) -> anyhow::Result<Totals> {
        send(&self.writers, &Message::Done(mine));
        let mut state = self.shared.state.lock().unwrap();
        loop {
            if let Some(failure) = &state.failure {
                return Err(anyhow!("{failure}"));
            }
            let peers = self.writers.iter().enumerate().filter(|(_, w)| w.is_some());
            let mut total = mine;
            let mut all = true;
            for (peer, _) in peers {
                match state.done[peer] {
                    Some(theirs) => total = total + theirs,
                    None => all = false,
                }
            }
            if all {
                return Ok(total);
            }
            state = self.shared.changed.wait(state).unwrap();
        }
    }
}

/// Writes `message` to every peer; a peer that cannot take it is its reader's to report.
fn send(writers: &[Option<Mutex<TcpStream>>], message: &Message) {
    let mut line = serde_json::to_vec(message).expect("a control message serializes");
    line.push(b'\n');
    for writer in writers.iter().flatten() {
        let _ = writer.lock().unwrap().write_all(&line);
    }
}

/// Reads `peer`'s control connection until it has finished and closed it, or until it fails,
/// is lost or falls silent, which is reported.
fn read_peer(
    stream: TcpStream,
    peer: usize,
    name: &str,
    heartbeat: Duration,
    shared: &Shared,
    stop: &AtomicBool,
) {
    let _ = stream.set_read_timeout(Some(heartbeat));
    let finished = || shared.state.lock().unwrap().done[peer].is_some();
    let mut lines = BufReader::new(stream).lines();
    loop {
        let line = match lines.next() {
            Some(Ok(line)) => line,
            // A finished peer may close its connection, or stop beating, as it exits.
            _ if finished() => return,
            None => return shared.failed(format!("lost {name}: connection closed")),
            Some(Err(e)) => return shared.failed(format!("lost {name}: {}", loss(&e, heartbeat))),
        };
        match serde_json::from_str::<Message>(&line) {
            Ok(Message::Beat) => {}
            // Every process that stops says so, so a process hears of stops after its own.
            Ok(Message::Stop) => {
                if !stop.swap(true, Ordering::Relaxed) {
                    tracing::info!("{name} was stopped: stopping too");
                }
            }
            Ok(Message::Failed(message)) => {
                return shared.failed(format!("{name} failed: {message}"));
            }
            Ok(Message::Done(totals)) => {
                shared.state.lock().unwrap().done[peer] = Some(totals);
                shared.changed.notify_all();
            }
            Err(e) => {
                return shared.failed(format!(
                    "{name} sent a control message this process cannot read ({e}): `{line}`"
                ));
            }
        }
    }
}

/// Why a read of a peer's control connection failed, as the loss of the peer is reported.
fn loss(error: &std::io::Error, heartbeat: Duration) -> String {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => {
            format!("no heartbeat for {heartbeat:?} (--peer-heartbeat)")
        }
        // A killed peer's kernel resets the connection when data was left unread in it.
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => "connection closed".into(),
        _ => error.to_string(),
    }
}
