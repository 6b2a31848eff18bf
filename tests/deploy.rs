//! The deployment files' command lines are ones Eddy accepts: run with their flags (the job and
//! host list swapped for the test's, on loopback), a process waits for its peers and names the
//! missing one, rather than failing on usage.

use std::path::Path;
use std::process::Command;

mod common;

/// The Kubernetes manifest's `args:` list.
fn kubernetes_args(manifest: &str) -> Vec<String> {
    let mut lines = manifest.lines().skip_while(|line| line.trim() != "args:");
    lines.next().expect("the manifest has an args list");
    lines
        .map(str::trim)
        .take_while(|line| line.starts_with("- "))
        .map(|line| line[2..].to_string())
        .collect()
}

/// The systemd unit's `ExecStart=` arguments, after the program.
fn systemd_args(unit: &str) -> Vec<String> {
    let line = unit
        .lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart");
    line.split_whitespace()
        .skip(1)
        .map(str::to_string)
        .collect()
}

/// Runs `eddy ARGS…` as process 1 with `EDDY_PROCESS`, the job and the hosts swapped in, and
/// checks that it fails waiting for process 0, which it names with its address.
fn runs_as_process_1(args: Vec<String>, hosts: &str, dir: &Path) {
    let job = dir.join("job.toml");
    std::fs::write(
        &job,
        "[job]\nname = \"deploy\"\n\n[[sources]]\nname = \"t\"\nkind = \"generator\"\n\
         event_time = \"ts\"\nschema = { ts = \"timestamp\" }\n\n[[sinks]]\nname = \"n\"\n\
         kind = \"discard\"\n\n[[routes]]\nname = \"all\"\nsource = \"t\"\nsinks = [\"n\"]\n",
    )
    .unwrap();
    let args: Vec<String> = args
        .into_iter()
        .map(|arg| match arg.split_once('=') {
            Some(("--hosts", _)) => format!("--hosts={hosts}"),
            Some(("--peer-timeout", _)) => "--peer-timeout=1s".into(),
            _ if arg.ends_with("job.toml") => job.display().to_string(),
            _ => arg,
        })
        .collect();
    let args = if args.iter().any(|a| a.starts_with("--peer-timeout")) {
        args
    } else {
        [args, vec!["--peer-timeout=1s".into()]].concat()
    };
    let output = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(&args)
        .env("EDDY_PROCESS", "1")
        .output()
        .expect("running eddy");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "eddy {args:?}:\n{stderr}");
    assert!(
        stderr.contains("eddy: error: process 1 (") && stderr.contains("missing process 0 ("),
        "eddy {args:?}:\n{stderr}"
    );
}

#[test]
fn the_kubernetes_statefulset_runs_a_process_of_its_cluster() {
    let manifest = std::fs::read_to_string("deploy/kubernetes/eddy.yaml").unwrap();
    let args = kubernetes_args(&manifest);
    assert!(
        args.contains(&"--hosts=eddy-{i}.eddy:2101".to_string()),
        "{args:?}"
    );
    let dir = std::env::temp_dir().join(format!("eddy-deploy-k8s-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A pattern as the manifest's, on loopback: process I listens on port BASE·10 + I, between
    // 10000 and 19999, where neither the system nor the other tests' ports land.
    let base = 1000 + std::process::id() % 999;
    let pattern = format!("127.0.0.1:{base}{{i}}");
    runs_as_process_1(args, &pattern, &dir);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_systemd_unit_runs_a_process_of_its_cluster() {
    let unit = std::fs::read_to_string("deploy/systemd/eddy.service").unwrap();
    let args = systemd_args(&unit);
    let dir = std::env::temp_dir().join(format!("eddy-deploy-systemd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let hosts = dir.join("hosts.txt");
    let lines: String = (0..3)
        .map(|_| format!("127.0.0.1:{}\n", common::hosts::unallocated_port()))
        .collect();
    std::fs::write(&hosts, lines).unwrap();
    runs_as_process_1(args, hosts.to_str().unwrap(), &dir);
    std::fs::remove_dir_all(&dir).unwrap();
}
