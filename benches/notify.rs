//! Notification throughput: requests/s through the notification adapter to the local CPaaS
//! stand-in (127.0.0.1), with 64 calls in flight, batched (up to 100 SMS per call) and one SMS
//! per call; every outcome is recorded durably in the sent-record before it counts.
//!
//! `cargo bench --bench notify`; `EDDY_BENCH_NOTIFICATIONS` sets the number of batched requests
//! (default 200 000; the unbatched run sends a tenth of them).

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use eddy::sinks::notify::adapter::{Completion, NotificationAdapter, Submission};
use eddy::sinks::notify::config::{ApiKey, NotifyConfig};
use eddy::sinks::notify::outcome::Delivery;
use eddy::sinks::notify::request::{Channel, NotificationRequest};
use eddy::stats::Stats;
use eddy::tools::cpaas::{CpaasStandIn, StandInOptions};

const KEY: &str = "bench-key";

/// Delivers `n` SMS requests with `batch` messages per call and 64 calls in flight; returns
/// notifications per second.
fn run(n: usize, batch: usize) -> f64 {
    let standin = CpaasStandIn::start(StandInOptions::new(KEY)).expect("starting the stand-in");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut config = NotifyConfig::new(
        &standin.base_url(),
        ApiKey::new(KEY.into()),
        "Eddy",
        dir.path().join("sent.redb"),
    );
    config.sms.concurrency = 64;
    config.sms.batch = batch;
    config.sms.rate = 10_000_000;
    config.queue = 8192;
    let stats = Arc::new(Stats::default());
    let adapter = NotificationAdapter::start(&config, &stats).expect("starting the adapter");
    let (reply, completions) = mpsc::channel::<Completion>();
    let start = Instant::now();
    let mut pending = (0..n).map(|i| Submission {
        request: NotificationRequest {
            request_id: format!("b{i}"),
            channel: Channel::Sms,
            to: format!("+417{i:08}"),
            subject: None,
            text: format!("Your code is {i}"),
        },
        tag: i as u64,
        reply: reply.clone(),
    });
    let mut refused = None;
    let mut done = 0;
    while done < n {
        while let Some(s) = refused.take().or_else(|| pending.next()) {
            refused = adapter.offer(s);
            if refused.is_some() {
                break;
            }
        }
        while let Ok(c) = completions.recv_timeout(Duration::from_millis(1)) {
            let outcome = c.outcome.expect("the sent-record works");
            assert!(
                matches!(outcome.delivery, Delivery::Sent { .. }),
                "{outcome:?}"
            );
            done += 1;
        }
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(adapter);
    assert_eq!(standin.counts().sent, n as u64);
    rate
}

fn main() {
    let n = std::env::var("EDDY_BENCH_NOTIFICATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    println!("| SMS per call | notifications | notifications/s |");
    println!("|---|---|---|");
    for (batch, count) in [(100, n), (1, n / 10)] {
        let rate = run(count, batch);
        println!("| {batch} | {count} | {rate:.0} |");
    }
}
