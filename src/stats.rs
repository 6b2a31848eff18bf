//! Live counters of a running job, shared by its workers and read by progress displays.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use timely::dataflow::StreamVec;
use timely::dataflow::operators::core::Inspect;

/// The labels of one series of a labelled metric, as `(name, value)` pairs.
pub type Labels = Vec<(&'static str, String)>;

/// Counters a job updates as it runs; every field only grows except `consumer_lag`.
#[derive(Debug)]
pub struct Stats {
    /// Events decoded by the sources (see [`Stats::ingest`]).
    pub events_in: AtomicU64,
    /// When the sources decoded their first batch of events, how many it held, and when they
    /// decoded their latest: what [`Stats::ingest_rate`] measures over.
    pub ingest_span: Mutex<Option<IngestSpan>>,
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
    /// Events decoded, per source (label `source`).
    pub source_records: Family<Labels, Counter>,
    /// Records handed to each sink to write, per sink (label `sink`).
    pub sink_records: Family<Labels, Counter>,
    /// Messages behind the end of each assigned Kafka partition (labels `source`, `topic`,
    /// `partition`).
    pub partition_lag: Family<Labels, Gauge>,
    /// How many workers have built their dataflow (their sources opened and assigned).
    pub workers_ready: AtomicUsize,
    /// How many workers the job runs on.
    pub workers: AtomicUsize,
    /// End-to-end latency in microseconds: from the moment the sources have emitted everything
    /// up to an event time until every sink has flushed what derives from it.
    pub latency: Mutex<Histogram<u64>>,
    /// The totals of every process of a cluster and how many processes there are, once all have
    /// finished; unset on a single process.
    pub cluster: OnceLock<(Totals, usize)>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            events_in: Default::default(),
            ingest_span: Default::default(),
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
            source_records: Default::default(),
            sink_records: Default::default(),
            partition_lag: Default::default(),
            workers_ready: Default::default(),
            workers: Default::default(),
            latency: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds"),
            ),
            cluster: OnceLock::new(),
        }
    }
}

/// A job's closing figures: what one process counted, or (added up) a whole cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Totals {
    /// Events decoded by the sources.
    pub events: u64,
    /// Window results emitted.
    pub window_results: u64,
    /// Events that arrived after all their windows had closed.
    pub late: u64,
    /// Inputs sent to the dead-letter sink.
    pub dead_letters: u64,
}

impl std::ops::Add for Totals {
    type Output = Totals;

    fn add(self, other: Totals) -> Totals {
        Totals {
            events: self.events + other.events,
            window_results: self.window_results + other.window_results,
            late: self.late + other.late,
            dead_letters: self.dead_letters + other.dead_letters,
        }
    }
}

impl Stats {
    /// This process's closing figures.
    pub fn totals(&self) -> Totals {
        Totals {
            events: Self::get(&self.events_in),
            window_results: Self::get(&self.windows_out),
            late: Self::get(&self.late),
            dead_letters: Self::get(&self.dead_letters),
        }
    }

    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts a batch of `n` events the sources decoded just now.
    pub fn ingest(&self, n: usize) {
        Self::add(&self.events_in, n);
        let now = Instant::now();
        let mut span = self.ingest_span.lock().unwrap();
        match span.as_mut() {
            Some(span) => span.last = now,
            None => {
                *span = Some(IngestSpan {
                    first: now,
                    first_events: n as u64,
                    last: now,
                })
            }
        }
    }

    /// Events decoded per second, from the first batch to the latest (the events of the first
    /// batch, decoded before it, do not count), with the span's length in seconds; `None` before
    /// a second batch.
    pub fn ingest_rate(&self) -> Option<(f64, f64)> {
        let span = (*self.ingest_span.lock().unwrap())?;
        let seconds = (span.last - span.first).as_secs_f64();
        let events = Self::get(&self.events_in) - span.first_events;
        (seconds > 0.0).then(|| (events as f64 / seconds, seconds))
    }

    /// Whether every worker has built its dataflow: the job is running.
    pub fn ready(&self) -> bool {
        let workers = self.workers.load(Ordering::Acquire);
        workers > 0 && self.workers_ready.load(Ordering::Acquire) >= workers
    }

    /// The records counter of source `name`, registered at build time so that counting is one
    /// atomic add per batch.
    pub fn source_counter(&self, name: &str) -> Counter {
        self.source_records
            .get_or_create_owned(&vec![("source", name.to_string())])
    }

    /// The records counter of sink `name` (see [`Stats::source_counter`]).
    pub fn sink_counter(&self, name: &str) -> Counter {
        self.sink_records
            .get_or_create_owned(&vec![("sink", name.to_string())])
    }

    /// The lag gauge of partition `partition` of `topic`, read by source `source`.
    pub fn partition_lag(&self, source: &str, topic: &str, partition: i32) -> Gauge {
        self.partition_lag.get_or_create_owned(&vec![
            ("source", source.to_string()),
            ("topic", topic.to_string()),
            ("partition", partition.to_string()),
        ])
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

/// When a job's sources decoded events (see [`Stats::ingest`]).
#[derive(Clone, Copy, Debug)]
pub struct IngestSpan {
    /// When the first batch was decoded.
    pub first: Instant,
    /// How many events it held.
    pub first_events: u64,
    /// When the latest batch was decoded.
    pub last: Instant,
}

/// Counts the records of a stream, a batch at a time.
pub trait CountInto: Sized {
    /// Calls `add` with the number of records of each batch passing by.
    fn count_with(self, add: impl Fn(usize) + 'static) -> Self;

    /// Adds the number of records passing by to the counter `pick` chooses.
    fn count_into(self, stats: &Arc<Stats>, pick: fn(&Stats) -> &AtomicU64) -> Self {
        let stats = Arc::clone(stats);
        self.count_with(move |n| Stats::add(pick(&stats), n))
    }

    /// Adds the number of records passing by to a labelled `counter`.
    fn count_in(self, counter: Counter) -> Self {
        self.count_with(move |n| {
            counter.inc_by(n as u64);
        })
    }
}

impl<D: 'static> CountInto for StreamVec<'_, u64, D> {
    fn count_with(self, add: impl Fn(usize) + 'static) -> Self {
        self.inspect_core(move |event| {
            if let Ok((_, batch)) = event {
                add(batch.len());
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ingest rate counts the events after the first batch over the time since it, and
    /// needs two batches.
    #[test]
    fn the_ingest_rate_runs_from_the_first_batch_to_the_latest() {
        let stats = Stats::default();
        assert!(stats.ingest_rate().is_none());
        stats.ingest(1_000);
        // Only so that the clock moves on between the two batches.
        std::thread::sleep(Duration::from_millis(2));
        stats.ingest(300);
        stats.ingest(200);
        assert_eq!(Stats::get(&stats.events_in), 1_500);
        let (rate, seconds) = stats.ingest_rate().expect("two batches at two times");
        let span = stats.ingest_span.lock().unwrap().expect("a span");
        assert_eq!(seconds, (span.last - span.first).as_secs_f64());
        assert!(
            (rate * seconds - 500.0).abs() < 1e-6,
            "{rate} events/s over {seconds} s"
        );
    }
}
