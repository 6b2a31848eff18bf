//! Live counters of a running job, shared by its workers and read by progress displays.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;

use timely::dataflow::StreamVec;
use timely::dataflow::operators::core::Inspect;

/// Counters a job updates as it runs; every field only grows except `consumer_lag`.
#[derive(Debug)]
pub struct Stats {
    /// Events decoded by the sources.
    pub events_in: AtomicU64,
    /// Inputs sent to the dead-letter sink.
    pub dead_letters: AtomicU64,
    /// Events that arrived after all their windows had closed.
    pub late: AtomicU64,
    /// Window results emitted.
    pub windows_out: AtomicU64,
    /// Fraud alerts emitted.
    pub alerts: AtomicU64,
    /// Events (and rejections) emitted by command processors.
    pub events_out: AtomicU64,
    /// Notification requests emitted by orchestrators.
    pub notifications_requested: AtomicU64,
    /// Notifications the CPaaS accepted.
    pub notifications_sent: AtomicU64,
    /// Notifications that failed for good (also dead-lettered).
    pub notifications_failed: AtomicU64,
    /// Notifications sent again after a transient error (one per message and retry).
    pub notification_retries: AtomicU64,
    /// Requests answered from the sent-record or a request in flight with the same id, without
    /// sending again (duplicates and replays).
    pub notifications_deduplicated: AtomicU64,
    /// Messages behind the end of the assigned partitions, summed over consumers.
    pub consumer_lag: AtomicI64,
    /// How many workers have built their dataflow (their sources opened and assigned).
    pub workers_ready: AtomicUsize,
    /// How many workers the job runs on.
    pub workers: AtomicUsize,
    /// End-to-end latency in microseconds: from the moment the sources have emitted everything
    /// up to an event time until every sink has flushed what derives from it.
    pub latency: Mutex<Histogram<u64>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            events_in: Default::default(),
            dead_letters: Default::default(),
            late: Default::default(),
            windows_out: Default::default(),
            alerts: Default::default(),
            events_out: Default::default(),
            notifications_requested: Default::default(),
            notifications_sent: Default::default(),
            notifications_failed: Default::default(),
            notification_retries: Default::default(),
            notifications_deduplicated: Default::default(),
            consumer_lag: Default::default(),
            workers_ready: Default::default(),
            workers: Default::default(),
            latency: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds"),
            ),
        }
    }
}

impl Stats {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Whether every worker has built its dataflow: the job is running.
    pub fn ready(&self) -> bool {
        let workers = self.workers.load(Ordering::Acquire);
        workers > 0 && self.workers_ready.load(Ordering::Acquire) >= workers
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Records one end-to-end latency.
    pub fn record_latency(&self, latency: Duration) {
        let micros = (latency.as_micros() as u64).clamp(1, 3_600_000_000);
        self.latency
            .lock()
            .unwrap()
            .record(micros)
            .expect("clamped into bounds");
    }

    /// The latency at quantile `q` (0..=1), if any was recorded.
    pub fn latency_quantile(&self, q: f64) -> Option<Duration> {
        let histogram = self.latency.lock().unwrap();
        (!histogram.is_empty()).then(|| Duration::from_micros(histogram.value_at_quantile(q)))
    }
}

/// Counts the records of a stream into one of the job's counters.
pub trait CountInto {
    /// Adds the number of records passing by to the counter `pick` chooses.
    fn count_into(self, stats: &Arc<Stats>, pick: fn(&Stats) -> &AtomicU64) -> Self;
}

impl<D: 'static> CountInto for StreamVec<'_, u64, D> {
    fn count_into(self, stats: &Arc<Stats>, pick: fn(&Stats) -> &AtomicU64) -> Self {
        let stats = Arc::clone(stats);
        self.inspect_core(move |event| {
            if let Ok((_, batch)) = event {
                Stats::add(pick(&stats), batch.len());
            }
        })
    }
}
