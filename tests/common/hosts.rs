//! Hosts for the cluster tests: network namespaces the test creates (one per host, joined by a
//! bridge in a namespace of its own, with addresses that exist only inside them), or, where
//! namespaces cannot be made (not root), ports on loopback.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The port every namespaced host listens on.
const PORT: u16 = 2101;

/// A set of hosts: where each listens, and how to run a command on it. Dropping it removes its
/// namespaces, with their links.
pub struct Hosts {
    addresses: Vec<String>,
    /// The hosts' namespaces and the bridge's, when the hosts are namespaces.
    namespaces: Option<(Vec<String>, String)>,
}

impl Hosts {
    /// `n` hosts: namespaces when this process may make them, loopback ports otherwise.
    pub fn new(n: usize) -> Hosts {
        static SETS: AtomicUsize = AtomicUsize::new(0);
        let set = format!(
            "e{}s{}",
            std::process::id() % 100_000,
            SETS.fetch_add(1, Ordering::Relaxed)
        );
        match namespaced(&set, n) {
            Ok(hosts) => hosts,
            Err(why) => {
                eprintln!("cluster tests on loopback ports: no network namespaces here ({why})");
                Hosts::loopback(n)
            }
        }
    }

    /// `n` hosts on loopback ports.
    pub fn loopback(n: usize) -> Hosts {
        Hosts {
            addresses: (0..n)
                .map(|_| format!("127.0.0.1:{}", unallocated_port()))
                .collect(),
            namespaces: None,
        }
    }

    /// Where each host's process listens, by index.
    pub fn addresses(&self) -> &[String] {
        &self.addresses
    }

    /// The addresses as a host file's text.
    pub fn host_file(&self) -> String {
        self.addresses.iter().map(|a| format!("{a}\n")).collect()
    }

    /// A command that runs `program` on host `i`.
    pub fn command(&self, i: usize, program: &str) -> Command {
        match &self.namespaces {
            Some((hosts, _)) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", &hosts[i], program]);
                command
            }
            None => Command::new(program),
        }
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        if let Some((hosts, bridge)) = &self.namespaces {
            for namespace in hosts.iter().chain([bridge]) {
                let _ = ip(&["netns", "del", namespace]);
            }
        }
    }
}

/// A loopback port that is free now, below Linux's range of ephemeral ports (32768 up): a
/// process started later binds it, and no port the system hands out meanwhile (to a proxy, a
/// client or [`super::free_port`]) can take it first.
pub fn unallocated_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    loop {
        let n = std::process::id() as usize * 7919 + NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20_000 + (n % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Runs `ip ARGS…`; the error is its standard error.
fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// `n` namespaces `SET-hI`, each with `eth0` at 10.77.0.(I+1) on a bridge in namespace `SET-sw`.
fn namespaced(set: &str, n: usize) -> Result<Hosts, String> {
    let bridge = format!("{set}-sw");
    ip(&["netns", "add", &bridge])?;
    let mut hosts = Hosts {
        addresses: Vec::new(),
        namespaces: Some((Vec::new(), bridge.clone())),
    };
    ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", &bridge, "link", "set", "br0", "up"])?;
    for i in 0..n {
        let host = format!("{set}-h{i}");
        ip(&["netns", "add", &host])?;
        if let Some((names, _)) = &mut hosts.namespaces {
            names.push(host.clone());
        }
        let port = format!("v{i}");
        ip(&[
            "link", "add", &port, "netns", &bridge, "type", "veth", "peer", "name", "eth0",
            "netns", &host,
        ])?;
        ip(&["-n", &bridge, "link", "set", &port, "master", "br0", "up"])?;
        let address = format!("10.77.0.{}", i + 1);
        ip(&[
            "-n",
            &host,
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &host, "link", "set", "eth0", "up"])?;
        ip(&["-n", &host, "link", "set", "lo", "up"])?;
        hosts.addresses.push(format!("{address}:{PORT}"));
    }
    Ok(hosts)
}
