//! The notification part of `eddy demo`: the CPaaS stand-in on 127.0.0.1, told to fail a share
//! of its calls, and a feed of `NotificationRequested` events (a few with an invalid phone
//! number, which the CPaaS refuses, and a few repeated, which must not be sent twice) for the
//! demo job's notify sink.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::stats::{Counter, Stats};
use crate::tools::cpaas::{CpaasStandIn, Faults, StandInOptions};

/// The topics the notification part uses.
pub const TOPICS: [&str; 2] = ["notifications.requested", "notifications.outcomes"];

/// The running stand-in and request feed.
pub struct NotificationDemo {
    /// The CPaaS stand-in.
    pub standin: CpaasStandIn,
    /// Its API key (made up per run; the job reads it from `EDDY_CPAAS_KEY`).
    key: String,
    /// Where the sent-record lives for this run.
    state: PathBuf,
    /// How many requests the feed has produced so far.
    fed: Arc<AtomicU64>,
    feed: Option<thread::JoinHandle<anyhow::Result<()>>>,
}

/// What became of every notification request so far: each one requested (by the demo's feed or
/// the job's orchestrator) is sent, failed (refused by the CPaaS, given up after retries, or no
/// valid request), deduplicated (a repeat, answered without sending again), or pending (still in
/// its topic or the adapter's queue).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accounting {
    /// Requests produced into the request topics.
    pub requested: u64,
    /// Messages the CPaaS accepted.
    pub sent: u64,
    /// Requests that failed for good.
    pub failed: u64,
    /// Repeats answered from the sent-record or a request in flight.
    pub deduplicated: u64,
    /// Requests not decided yet.
    pub pending: u64,
}

impl fmt::Display for Accounting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "requested {} = sent {} + failed {} + deduplicated {} + pending {}",
            self.requested, self.sent, self.failed, self.deduplicated, self.pending
        )
    }
}

impl NotificationDemo {
    /// Starts the stand-in (10 % of calls answered 503, 5 % 429, 2 % slower than the adapter's
    /// timeout) and feeds `rate` requests per second into `notifications.requested` until
    /// `stop` is set, counting them (see [`NotificationDemo::accounting`]).
    pub fn start(brokers: &str, rate: u64, stop: &Arc<AtomicBool>) -> anyhow::Result<Self> {
        let key = format!("demo-{:x}", rand::random::<u64>());
        let standin = CpaasStandIn::start(StandInOptions::new(&key))?;
        standin.set_faults(Faults {
            server_errors: 0.10,
            too_many_requests: 0.05,
            retry_after: Duration::from_secs(1),
            slow: 0.02,
            slow_by: Duration::from_secs(3),
        });
        let state = std::env::temp_dir().join(format!("eddy-demo-{}", std::process::id()));
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "5")
            .create()
            .context("creating the notification request producer")?;
        let (stop, fed) = (Arc::clone(stop), Arc::new(AtomicU64::new(0)));
        let feed = {
            let fed = Arc::clone(&fed);
            thread::spawn(move || feed_requests(&producer, rate.max(1), &stop, &fed))
        };
        Ok(NotificationDemo {
            standin,
            key,
            state,
            fed,
            feed: Some(feed),
        })
    }

    /// The job-file variables it provides: `EDDY_CPAAS_URL`, `EDDY_CPAAS_KEY`, `EDDY_STATE`.
    pub fn var(&self, name: &str) -> Option<String> {
        match name {
            "EDDY_CPAAS_URL" => Some(self.standin.base_url()),
            "EDDY_CPAAS_KEY" => Some(self.key.clone()),
            "EDDY_STATE" => Some(self.state.display().to_string()),
            _ => None,
        }
    }

    /// The requests so far and what became of them. Once the feed has stopped and the job has
    /// decided every request, `pending` is 0.
    pub fn accounting(&self, stats: &Stats) -> Accounting {
        let requested =
            self.fed.load(Ordering::Relaxed) + stats.get(Counter::NotificationsRequested);
        let sent = stats.get(Counter::NotificationsSent);
        let failed =
            stats.get(Counter::NotificationsFailed) + stats.get(Counter::NotificationsInvalid);
        let deduplicated = stats.get(Counter::NotificationsDeduplicated);
        Accounting {
            requested,
            sent,
            failed,
            deduplicated,
            pending: requested.saturating_sub(sent + failed + deduplicated),
        }
    }

    /// Waits for the feed (once `stop` is set) and removes the sent-record; returns what the
    /// CPaaS stand-in saw.
    pub fn finish(mut self) -> anyhow::Result<String> {
        match self.feed.take().map(thread::JoinHandle::join) {
            Some(Ok(fed)) => fed?,
            _ => anyhow::bail!("the notification feed panicked"),
        }
        let counts = self.standin.counts();
        let _ = std::fs::remove_dir_all(&self.state);
        Ok(format!(
            "the CPaaS stand-in took {} calls, failed {} on purpose, refused {}, and sent {} \
             messages",
            counts.calls, counts.failed, counts.refused, counts.sent
        ))
    }
}

/// Produces requests at `rate` per second until `stop`, counting them in `fed`; every 200th has
/// an invalid number and every 100th repeats the one before it.
fn feed_requests(
    producer: &BaseProducer,
    rate: u64,
    stop: &AtomicBool,
    fed: &AtomicU64,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = start.elapsed().as_millis() as u64 * rate / 1000;
        while n < due {
            let id = if n % 100 == 99 { n - 1 } else { n };
            let to = if n % 200 == 7 {
                "12".to_string()
            } else {
                format!("+417{id:08}")
            };
            let now = jiff::Timestamp::now().as_millisecond();
            let payload = format!(
                r#"{{"request_id":"welcome-{id}","channel":"sms","to":"{to}","text":"Welcome to Eddy, user {id}!","time":{now}}}"#
            );
            let key = format!("welcome-{id}");
            let record = BaseRecord::to(TOPICS[0]).key(&key).payload(&payload);
            if let Err((e, _)) = producer.send(record) {
                producer.poll(Duration::from_millis(10));
                tracing::debug!("notification feed: {e}; retrying");
                continue;
            }
            n += 1;
            fed.store(n, Ordering::Relaxed);
        }
        producer.poll(Duration::from_millis(10));
    }
    producer.flush(Duration::from_secs(10))?;
    Ok(())
}
