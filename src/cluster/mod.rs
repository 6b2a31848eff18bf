//! Running as one of several processes. [`Peers`] says where every process listens; [`join`]
//! connects to all of them, checks that they run the same job, and hands back timely's
//! allocators with a [`ControlPlane`] beside them, which turns a peer's failure, loss or silence
//! into one clear error on every process.
//!
//! The contract is Flink's and Materialize's: when any process fails, every process stops
//! promptly and says why; a process manager restarts them all.

pub mod connect;
pub mod control;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context as _, bail};
use timely::communication::allocator::ProcessBuilder;
use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
use timely::communication::{AllocatorBuilder, Hooks};

pub use control::ControlPlane;

/// The first port of the default addresses, as timely numbers them: process `i` listens on
/// `127.0.0.1:2101 + i`.
const DEFAULT_BASE_PORT: u16 = 2101;

/// Where each process of a cluster listens, by process index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peers {
    addresses: Vec<String>,
}

impl Peers {
    /// The addresses of `processes` processes from `hosts`: `None` for `127.0.0.1:2101`,
    /// `127.0.0.1:2102`, …; a pattern holding `{i}` (e.g. `eddy-{i}.eddy:2101`, as a Kubernetes
    /// StatefulSet's pods are named), expanded for each index; or the path of a file with one
    /// `host:port` per line (blank lines and `#` comments skipped), of which the first
    /// `processes` are used.
    pub fn resolve(hosts: Option<&str>, processes: usize) -> anyhow::Result<Peers> {
        let addresses: Vec<String> = match hosts {
            None => (0..processes)
                .map(|i| {
                    let port = u16::try_from(i)
                        .ok()
                        .and_then(|i| DEFAULT_BASE_PORT.checked_add(i))
                        .context("too many processes for the default ports: give -h")?;
                    Ok(format!("127.0.0.1:{port}"))
                })
                .collect::<anyhow::Result<_>>()?,
            Some(pattern) if pattern.contains("{i}") => (0..processes)
                .map(|i| pattern.replace("{i}", &i.to_string()))
                .collect(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the host file {path}"))?;
                let hosts: Vec<String> = text
                    .lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty() && !line.starts_with('#'))
                    .take(processes)
                    .map(str::to_string)
                    .collect();
                if hosts.len() < processes {
                    bail!(
                        "the host file {path} names {} processes, and -n is {processes}",
                        hosts.len()
                    );
                }
                hosts
            }
        };
        for (i, address) in addresses.iter().enumerate() {
            if address
                .rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            {
                bail!("process {i}'s address `{address}` is not host:port");
            }
        }
        Ok(Peers { addresses })
    }

    /// How many processes the cluster has.
    pub fn len(&self) -> usize {
        self.addresses.len()
    }

    /// Whether the cluster has no process (never true of a resolved one).
    pub fn is_empty(&self) -> bool {
        self.addresses.is_empty()
    }

    /// Where process `index` listens.
    pub fn address(&self, index: usize) -> &str {
        &self.addresses[index]
    }

    /// Process `index` as messages name it: `process 2 (10.0.0.3:2101)`.
    pub fn name(&self, index: usize) -> String {
        format!("process {index} ({})", self.addresses[index])
    }
}

/// How this process joins its cluster.
#[derive(Clone, Debug)]
pub struct Settings {
    /// This process's index.
    pub process: usize,
    /// Worker threads per process.
    pub workers: usize,
    /// Where to listen for peers, when not at this process's own address in [`Peers`].
    pub listen: Option<String>,
    /// How long to wait for every peer at start-up.
    pub peer_timeout: Duration,
    /// How long a peer may stay silent before it is taken for lost.
    pub heartbeat: Duration,
    /// A digest of the job file and the Eddy version: every process must have the same.
    pub fingerprint: [u8; 32],
}

/// A joined cluster: timely's allocators for this process's workers, the threads that move
/// their data (to be kept alive while they run), and the control plane.
pub struct Joined {
    /// One allocator per worker thread of this process.
    pub builders: Vec<AllocatorBuilder>,
    /// The communication threads' guard, which `timely::execute::execute_from` takes.
    pub comms: Box<dyn std::any::Any + Send>,
    /// Failures and completion, exchanged with every peer.
    pub control: ControlPlane,
}

/// Connects to every peer (see [`connect::connect_all`]), starts the control plane, which calls
/// `on_failure` with the first failure a peer reports or its loss and shares `stop` with the
/// peers, and builds timely's allocators on the data connections.
pub fn join(
    peers: &Peers,
    settings: &Settings,
    stop: Arc<AtomicBool>,
    on_failure: impl Fn(String) + Send + Sync + 'static,
) -> anyhow::Result<Joined> {
    let links = connect::connect_all(peers, settings)?;
    let control = ControlPlane::start(links.control, peers, settings.heartbeat, stop, on_failure);
    let hooks = Hooks::default();
    let local = ProcessBuilder::new_typed_vector(settings.workers, hooks.refill.clone(), None);
    let (builders, comms) = initialize_networking_from_sockets(
        local,
        links.data,
        settings.process,
        settings.workers,
        hooks,
    )
    .context("starting the cluster's communication threads")?;
    Ok(Joined {
        builders: builders.into_iter().map(AllocatorBuilder::Tcp).collect(),
        comms: Box::new(comms),
        control,
    })
}

#[cfg(test)]
mod tests {
    use super::Peers;

    #[test]
    fn default_addresses_count_up_from_2101() {
        let peers = Peers::resolve(None, 3).unwrap();
        assert_eq!(peers.address(2), "127.0.0.1:2103");
        assert_eq!(peers.name(0), "process 0 (127.0.0.1:2101)");
    }

    #[test]
    fn a_pattern_names_each_process() {
        let peers = Peers::resolve(Some("eddy-{i}.eddy:2101"), 3).unwrap();
        assert_eq!(peers.address(1), "eddy-1.eddy:2101");
        assert_eq!(peers.len(), 3);
    }

    #[test]
    fn a_host_file_needs_a_line_per_process() {
        let dir = std::env::temp_dir().join(format!("eddy-hosts-{}", std::process::id()));
        std::fs::write(&dir, "# the cluster\n10.0.0.1:2101\n\n10.0.0.2:2101\n").unwrap();
        let path = dir.to_str().unwrap();
        assert_eq!(
            Peers::resolve(Some(path), 2).unwrap().address(1),
            "10.0.0.2:2101"
        );
        let error = Peers::resolve(Some(path), 3).unwrap_err().to_string();
        assert!(error.contains("names 2 processes, and -n is 3"), "{error}");
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn an_address_without_a_port_is_refused() {
        let error = Peers::resolve(Some("eddy-{i}"), 2).unwrap_err().to_string();
        assert_eq!(error, "process 0's address `eddy-0` is not host:port");
    }
}
