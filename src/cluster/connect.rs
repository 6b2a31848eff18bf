//! Connecting the processes of a cluster. Process `i` dials every process before it and accepts
//! every process after it, twice: a data connection for timely and a control connection for the
//! [`ControlPlane`](super::ControlPlane). Each connection opens with a [`Hello`] both ways, which
//! says which process is calling and which job it runs, so processes of different jobs or Eddy
//! versions refuse each other before any data moves.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use socket2::{SockRef, TcpKeepalive};

use super::{Peers, Settings};

/// The first bytes of every connection between Eddy processes.
const MAGIC: [u8; 8] = *b"EDDYPEER";

/// A hello's size: magic, kind, index, number of processes, fingerprint.
const HELLO_LEN: usize = 8 + 1 + 4 + 4 + 32;

/// The first wait between two attempts to reach a peer that is not listening yet; it doubles up
/// to [`MAX_BACKOFF`], so processes started together connect within milliseconds.
const FIRST_BACKOFF: Duration = Duration::from_millis(5);

/// The longest wait between two attempts to reach a peer.
const MAX_BACKOFF: Duration = Duration::from_millis(250);

/// How long one attempt to open a connection, or to read a peer's hello, may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// What a connection carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Timely's data and progress messages.
    Data = 0,
    /// The control plane's messages.
    Control = 1,
}

/// The first message on a connection, sent by both ends.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Hello {
    kind: Kind,
    /// The sender's process index.
    index: u32,
    /// How many processes the sender's cluster has.
    processes: u32,
    /// The sender's job fingerprint (see [`Settings::fingerprint`]).
    fingerprint: [u8; 32],
}

impl Hello {
    fn encode(&self) -> [u8; HELLO_LEN] {
        let mut bytes = [0; HELLO_LEN];
        bytes[..8].copy_from_slice(&MAGIC);
        bytes[8] = self.kind as u8;
        bytes[9..13].copy_from_slice(&self.index.to_be_bytes());
        bytes[13..17].copy_from_slice(&self.processes.to_be_bytes());
        bytes[17..].copy_from_slice(&self.fingerprint);
        bytes
    }

    /// The hello in `bytes`, or why they are not one.
    fn decode(bytes: &[u8; HELLO_LEN]) -> Result<Hello, String> {
        if bytes[..8] != MAGIC {
            return Err("it is not an Eddy process (its first bytes are not Eddy's hello)".into());
        }
        let kind = match bytes[8] {
            0 => Kind::Data,
            1 => Kind::Control,
            other => return Err(format!("it opened a connection of unknown kind {other}")),
        };
        let word = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        Ok(Hello {
            kind,
            index: word(9),
            processes: word(13),
            fingerprint: bytes[17..].try_into().expect("32 bytes"),
        })
    }
}

/// One process's connections, by peer index (`None` at its own).
pub struct Links {
    /// The connections timely's communication threads use.
    pub data: Vec<Option<TcpStream>>,
    /// The connections of the control plane.
    pub control: Vec<Option<TcpStream>>,
}

impl Links {
    fn put(&mut self, peer: usize, kind: Kind, stream: TcpStream) {
        match kind {
            Kind::Data => self.data[peer] = Some(stream),
            Kind::Control => self.control[peer] = Some(stream),
        }
    }
}

/// Opens both connections to every peer, dialling the ones before this process (retrying with a
/// short backoff while they are not listening yet) and accepting the ones after it. Fails when a
/// peer runs another job or Eddy version, or when some peers are not reached within
/// `settings.peer_timeout`: the error names them.
pub fn connect_all(peers: &Peers, settings: &Settings) -> anyhow::Result<Links> {
    let me = settings.process;
    let deadline = Instant::now() + settings.peer_timeout;
    let listen = settings.listen.as_deref().unwrap_or(peers.address(me));
    let listener = TcpListener::bind(listen)
        .with_context(|| format!("listening on {listen} as process {me}"))?;
    let acceptor = {
        let (peers, settings) = (peers.clone(), settings.clone());
        thread::Builder::new()
            .name("eddy:accept".into())
            .spawn(move || accept_all(&listener, &peers, &settings, deadline))?
    };
    let mut links = Links {
        data: (0..peers.len()).map(|_| None).collect(),
        control: (0..peers.len()).map(|_| None).collect(),
    };
    let mut missing = Vec::new();
    for peer in 0..me {
        for kind in [Kind::Data, Kind::Control] {
            match dial(peers, peer, kind, settings, deadline)? {
                Ok(stream) => links.put(peer, kind, stream),
                Err(cause) => {
                    missing.push(format!("{} ({cause})", peers.name(peer)));
                    break;
                }
            }
        }
    }
    let (accepted, unaccepted) = acceptor
        .join()
        .map_err(|_| anyhow!("the thread accepting peers panicked"))??;
    for (peer, kind, stream) in accepted {
        links.put(peer, kind, stream);
    }
    missing.extend(unaccepted);
    if !missing.is_empty() {
        bail!(
            "not every process of the cluster was reached within {:?} (--peer-timeout): missing {}",
            settings.peer_timeout,
            missing.join(", ")
        );
    }
    Ok(links)
}

/// Dials `peer` for a connection of `kind` until `deadline`. The outer error is fatal (the peer
/// runs another job); the inner one is why the peer was not reached in time.
fn dial(
    peers: &Peers,
    peer: usize,
    kind: Kind,
    settings: &Settings,
    deadline: Instant,
) -> anyhow::Result<Result<TcpStream, String>> {
    let mut backoff = FIRST_BACKOFF;
    loop {
        match open(peers.address(peer), deadline) {
            Ok(mut stream) => {
                let outcome = (|| -> std::io::Result<Result<Hello, String>> {
                    stream.set_read_timeout(Some(ATTEMPT_TIMEOUT))?;
                    stream.write_all(&hello(kind, peers, settings).encode())?;
                    read_hello(&mut stream)
                })();
                match outcome {
                    Ok(Ok(theirs)) => {
                        check(&theirs, Some(peer), peers, settings)?;
                        tune(&stream, kind, settings.heartbeat)?;
                        return Ok(Ok(stream));
                    }
                    Ok(Err(why)) => bail!("{} refused: {why}", peers.name(peer)),
                    // Accepted by a listener that is not serving yet, or closed: try again.
                    Err(e) if Instant::now() < deadline => {
                        tracing::debug!("{}: {e}; trying again", peers.name(peer));
                    }
                    Err(e) => return Ok(Err(e.to_string())),
                }
            }
            Err(e) if Instant::now() >= deadline => return Ok(Err(e.to_string())),
            Err(_) => {}
        }
        thread::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())));
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One attempt to connect to `address`, resolved anew each time (a peer's DNS name may appear
/// only once it starts).
fn open(address: &str, deadline: Instant) -> std::io::Result<TcpStream> {
    let timeout = deadline
        .saturating_duration_since(Instant::now())
        .clamp(Duration::from_millis(10), ATTEMPT_TIMEOUT);
    let mut last = None;
    for resolved in address.to_socket_addrs()? {
        match TcpStream::connect_timeout(&resolved, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other(format!("{address} resolves to nothing"))))
}

/// The connections accepted from the processes after this one, and the peers that did not
/// connect by `deadline`.
type Accepted = (Vec<(usize, Kind, TcpStream)>, Vec<String>);

/// Accepts both connections of every process after this one until `deadline`. A connection
/// that is not an Eddy peer's is logged and dropped; a peer of another job is fatal.
fn accept_all(
    listener: &TcpListener,
    peers: &Peers,
    settings: &Settings,
    deadline: Instant,
) -> anyhow::Result<Accepted> {
    let me = settings.process;
    let expected = (peers.len() - me - 1) * 2;
    let mut accepted: Vec<(usize, Kind, TcpStream)> = Vec::new();
    listener.set_nonblocking(true)?;
    while accepted.len() < expected && Instant::now() < deadline {
        let (mut stream, from) = match listener.accept() {
            Ok(connection) => connection,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(FIRST_BACKOFF);
                continue;
            }
            Err(e) => return Err(e).context("accepting a peer"),
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(ATTEMPT_TIMEOUT))?;
        let theirs = match read_hello(&mut stream) {
            Ok(Ok(hello)) => hello,
            Ok(Err(why)) => {
                tracing::warn!("a connection from {from} was dropped: {why}");
                continue;
            }
            Err(e) => {
                tracing::debug!("a connection from {from} closed before its hello: {e}");
                continue;
            }
        };
        // Answered before checking, so a peer of another job learns why it is refused too.
        let kind = theirs.kind;
        stream.write_all(&hello(kind, peers, settings).encode())?;
        check(&theirs, None, peers, settings)?;
        let peer = theirs.index as usize;
        if peer <= me || accepted.iter().any(|(p, k, _)| *p == peer && *k == kind) {
            bail!(
                "a connection from {from} says it is process {peer}, which this process \
                 ({me}) dials itself or has already accepted: is a process index given twice?"
            );
        }
        tune(&stream, kind, settings.heartbeat)?;
        accepted.push((peer, kind, stream));
    }
    let unaccepted = (me + 1..peers.len())
        .filter(|peer| accepted.iter().filter(|(p, _, _)| p == peer).count() < 2)
        .map(|peer| format!("{} (did not connect)", peers.name(peer)))
        .collect();
    Ok((accepted, unaccepted))
}

/// This process's hello on a connection of `kind`.
fn hello(kind: Kind, peers: &Peers, settings: &Settings) -> Hello {
    Hello {
        kind,
        index: settings.process as u32,
        processes: peers.len() as u32,
        fingerprint: settings.fingerprint,
    }
}

/// Reads a peer's hello; the inner error says why the bytes read are not one.
fn read_hello(stream: &mut TcpStream) -> std::io::Result<Result<Hello, String>> {
    let mut bytes = [0; HELLO_LEN];
    stream.read_exact(&mut bytes)?;
    Ok(Hello::decode(&bytes))
}

/// Checks that a peer's hello belongs to this cluster and job: the same number of processes,
/// the same fingerprint, and (when dialled) the index dialled.
fn check(
    theirs: &Hello,
    dialled: Option<usize>,
    peers: &Peers,
    settings: &Settings,
) -> anyhow::Result<()> {
    let index = theirs.index as usize;
    let name = if index < peers.len() {
        peers.name(index)
    } else {
        format!("process {index}")
    };
    if let Some(dialled) = dialled
        && dialled != index
    {
        bail!(
            "{} answered as process {index}: is a process index given twice?",
            peers.name(dialled)
        );
    }
    if theirs.processes as usize != peers.len() {
        bail!(
            "{name} runs in a cluster of {} processes, this one of {} (-n)",
            theirs.processes,
            peers.len()
        );
    }
    if theirs.fingerprint != settings.fingerprint {
        bail!(
            "{name} runs another job file or Eddy version (fingerprint {} there, {} here): \
             every process must run the same job with the same Eddy",
            short_hex(&theirs.fingerprint),
            short_hex(&settings.fingerprint)
        );
    }
    Ok(())
}

/// The first bytes of a fingerprint, in hex.
fn short_hex(bytes: &[u8; 32]) -> String {
    bytes[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// Readies an established connection: no read timeout, no Nagle delay, and keepalive with a
/// user timeout, so that a peer whose network is cut fails its connections within about a
/// heartbeat instead of the kernel's default of minutes.
fn tune(stream: &TcpStream, kind: Kind, heartbeat: Duration) -> std::io::Result<()> {
    stream.set_read_timeout(None)?;
    if kind == Kind::Data {
        stream.set_nodelay(true)?;
    }
    let second = Duration::from_secs(1);
    let socket = SockRef::from(stream);
    socket.set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time((heartbeat / 2).max(second))
            .with_interval((heartbeat / 4).max(second))
            .with_retries(2),
    )?;
    socket.set_tcp_user_timeout(Some(heartbeat.max(second)))
}

#[cfg(test)]
mod tests {
    use super::{HELLO_LEN, Hello, Kind};

    #[test]
    fn a_hello_reads_back_as_written() {
        let hello = Hello {
            kind: Kind::Control,
            index: 2,
            processes: 3,
            fingerprint: [7; 32],
        };
        assert_eq!(Hello::decode(&hello.encode()), Ok(hello));
    }

    #[test]
    fn bytes_of_another_protocol_are_no_hello() {
        let mut bytes = [0; HELLO_LEN];
        bytes[..8].copy_from_slice(b"GET / HT");
        let error = Hello::decode(&bytes).unwrap_err();
        assert!(error.contains("not an Eddy process"), "{error}");
    }
}
