//! Accepting and serving the HTTP server's connections within [`ServerLimits`]: hyper's HTTP/1
//! connections with a header-read timeout (which also closes idle keep-alive connections), a
//! write timeout on each socket (which closes a client that stops reading), a bounded buffer
//! per connection, and at most so many connections at once (more wait in the listen queue,
//! unaccepted, until one closes).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_io_timeout::TimeoutStream;

/// How long shutting down waits for requests in flight before dropping their connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long accepting pauses after an error that is not one connection's (e.g. out of file
/// descriptors), so that the loop does not spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// What one client may hold of the server, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections served at once; more wait, unaccepted, until one closes.
    pub max_connections: usize,
    /// How long a request's head may take to arrive in full, counted from the connection's
    /// opening or from the end of the previous answer: it closes connections that send nothing,
    /// send part of a head, or stay idle between requests.
    pub header_timeout: Duration,
    /// How long writing to a client may make no progress (a client that does not read) before
    /// its connection is closed.
    pub write_timeout: Duration,
    /// Bytes hyper buffers per connection, each way (at least 8192).
    pub connection_buffer: usize,
    /// Change batches a change-stream subscriber may have waiting, unsent.
    pub subscriber_batches: usize,
    /// Bytes of encoded change batches a subscriber may have waiting, unsent (a single batch
    /// larger than this is still sent to a subscriber that has nothing else waiting).
    pub subscriber_bytes: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            connection_buffer: 64 * 1024,
            subscriber_batches: 1024,
            subscriber_bytes: 1024 * 1024,
        }
    }
}

impl ServerLimits {
    /// The most connections a server may be allowed.
    pub const MAX_CONNECTIONS: usize = 1 << 16;
    /// The smallest connection buffer hyper takes.
    pub const MIN_CONNECTION_BUFFER: usize = 8192;

    /// Whether a server can run within these limits; else which is out of bounds, and why.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=Self::MAX_CONNECTIONS).contains(&self.max_connections) {
            return Err(format!(
                "`max_connections` is {}: it must be from 1 to {}",
                self.max_connections,
                Self::MAX_CONNECTIONS
            ));
        }
        if self.connection_buffer < Self::MIN_CONNECTION_BUFFER {
            return Err(format!(
                "`connection_buffer` is {}: it must be at least {} bytes",
                self.connection_buffer,
                Self::MIN_CONNECTION_BUFFER
            ));
        }
        Ok(())
    }
}

/// The server's connection slots: one taken by each connection open, so many at most.
#[derive(Clone, Debug)]
pub(super) struct Slots {
    free: Arc<Semaphore>,
    open: Arc<AtomicUsize>,
}

impl Slots {
    /// `max` slots, all free (`max` within [`ServerLimits::MAX_CONNECTIONS`]).
    pub(super) fn new(max: usize) -> Slots {
        Slots {
            free: Arc::new(Semaphore::new(max)),
            open: Arc::default(),
        }
    }

    /// The connections open now.
    pub(super) fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Counts a connection as open, in `slot`, until the result is dropped.
    fn hold(&self, slot: OwnedSemaphorePermit) -> Held {
        self.open.fetch_add(1, Ordering::Relaxed);
        Held {
            _slot: slot,
            open: Arc::clone(&self.open),
        }
    }
}

/// A connection's slot, held while it is served.
struct Held {
    _slot: OwnedSemaphorePermit,
    open: Arc<AtomicUsize>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `app` on `listener` within `limits`, a connection per slot of `slots`, until
/// `stopped` turns true, then lets the requests in flight finish (change streams end at once)
/// for up to [`SHUTDOWN_GRACE`].
pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    slots: Slots,
    mut stopped: watch::Receiver<bool>,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.connection_buffer);
    let connections = GracefulShutdown::new();
    loop {
        // A free slot first: until one is free, connections wait in the listen queue.
        let slot = tokio::select! {
            biased;
            _ = stopped.wait_for(|&stop| stop) => break,
            slot = Arc::clone(&slots.free).acquire_owned() => {
                slot.expect("the slots are never closed")
            }
        };
        let accepted = tokio::select! {
            biased;
            _ = stopped.wait_for(|&stop| stop) => break,
            accepted = listener.accept() => accepted,
        };
        let socket = match accepted {
            Ok((socket, _)) => socket,
            Err(e) => {
                if !is_connection_error(&e) {
                    tracing::warn!("HTTP server: accepting a connection: {e}");
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                }
                continue;
            }
        };
        let mut socket = TimeoutStream::new(socket);
        socket.set_write_timeout(Some(limits.write_timeout));
        let connection = http.serve_connection(
            TokioIo::new(Box::pin(socket)),
            TowerToHyperService::new(app.clone()),
        );
        let connection = connections.watch(connection);
        let held = slots.hold(slot);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("HTTP connection closed: {e}");
            }
            drop(held);
        });
    }
    drop(listener);
    tokio::select! {
        () = connections.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("HTTP server: requests still in flight at shutdown were dropped");
        }
    }
}

/// Whether an accept error concerns only the connection being accepted (the next may work).
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    )
}
