//! `eddy demo` as a newcomer runs it, off a terminal: plain progress lines that carry measured
//! figures, no JSON on standard output, and a summary that accounts for every notification
//! request. And the whole demo (an in-process Kafka cluster, a dozen librdkafka clients, the
//! job, the notification adapter, the CPaaS stand-in and the HTTP server) within `ulimit -v` of
//! 1 GiB, where it once needed 2.6 GiB.

use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};

/// The numbers of `requested R = sent S + failed F + deduplicated D + pending P` in `line`.
fn accounting(line: &str) -> Option<[u64; 5]> {
    let at = line.find("requested ")?;
    let mut numbers = line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u64>().unwrap());
    let mut out = [0; 5];
    for n in &mut out {
        *n = numbers.next()?;
    }
    Some(out)
}

#[test]
fn the_demo_shows_measured_figures_and_accounts_for_every_notification() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args([
            "demo",
            "--duration",
            "5s",
            "--rate",
            "2000",
            "--http",
            "127.0.0.1:0",
            "--out",
        ])
        .arg(out_dir.path())
        .output()
        .expect("running eddy demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "eddy demo failed: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "the full streams go to files unless --stdout asks: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Every progress line's accounting adds up, and the last one's too.
    let progress: Vec<&str> = stderr
        .lines()
        .filter(|l| l.trim_start().starts_with("notifications requested"))
        .collect();
    assert!(!progress.is_empty(), "no progress lines: {stderr}");
    for line in &progress {
        let [requested, sent, failed, deduplicated, pending] =
            accounting(line).unwrap_or_else(|| panic!("no accounting in `{line}`"));
        assert_eq!(sent + failed + deduplicated + pending, requested, "{line}");
    }
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("eddy demo: notifications requested"))
        .unwrap_or_else(|| panic!("no notification summary: {stderr}"));
    let [requested, sent, failed, deduplicated, pending] = accounting(summary).unwrap();
    assert!(requested > 0 && sent > 0, "{summary}");
    assert_eq!(
        sent + failed + deduplicated + pending,
        requested,
        "{summary}"
    );
    let said = stderr
        .lines()
        .find(|l| {
            l.starts_with("eddy demo: every notification request was decided")
                || l.contains("notification requests were not sent")
        })
        .unwrap_or_else(|| panic!("the summary does not say what became of pending requests"));
    assert_eq!(pending == 0, said.contains("every"), "{said}");

    // The figures are measured: the output latency has a value, the lag is a number.
    let measured = stderr.lines().any(|l| {
        l.split_once("output latency p99 ")
            .and_then(|(_, v)| v.trim().strip_suffix('s'))
            .is_some_and(|v| v.parse::<f64>().is_ok_and(|s| s > 0.0))
    });
    assert!(measured, "no measured output latency: {stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.split_once("  lag ").is_some_and(|(_, v)| v
                .split(' ')
                .next()
                .unwrap()
                .parse::<i64>()
                .is_ok())),
        "no lag figure: {stderr}"
    );
    assert!(
        !stderr.contains("{\""),
        "JSON among the progress lines: {stderr}"
    );

    // The full streams are in the output directory.
    for file in ["alerts.jsonl", "alert-holders.jsonl", "notifications.jsonl"] {
        assert!(out_dir.path().join(file).is_file(), "{file} missing");
    }
}

/// The address-space limit, as `prlimit --as=1073741824` or `ulimit -v 1048576` sets it.
const ONE_GIB: libc::rlim_t = 1 << 30;

#[test]
fn the_demo_runs_within_one_gib_of_address_space() {
    let out_dir = tempfile::tempdir().unwrap();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_eddy"));
    demo.args(["demo", "--duration", "5s", "--http", "127.0.0.1:0", "--out"])
        .arg(out_dir.path())
        .stdin(Stdio::null());
    // SAFETY: only setrlimit, which is async-signal-safe, runs between fork and exec.
    unsafe {
        demo.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: ONE_GIB,
                rlim_max: ONE_GIB,
            };
            match libc::setrlimit(libc::RLIMIT_AS, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    let out = demo.output().expect("running eddy demo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}:\n{stderr}", out.status);
    assert!(stderr.contains("eddy demo: done."), "{stderr}");
}
