//! Live counters of a running job, shared by its workers and read by progress displays.

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use prometheus_client::metrics::counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use timely::dataflow::StreamVec;
use timely::dataflow::operators::core::Inspect;

use crate::record::{Record, Value};

mod counters;

pub use counters::{Counter, CounterSpec, Shown, Totals};

/// The labels of one series of a labelled metric, as `(name, value)` pairs.
pub type Labels = Vec<(&'static str, String)>;

/// Counters a job updates as it runs, shared by its workers: the [`Counter`]s, and the ones
/// kept per source, sink or partition. Every one only grows except the lags.
#[derive(Debug)]
pub struct Stats {
    /// The value of each [`Counter`], in its order.
    counters: [AtomicU64; Counter::ALL.len()],
    /// When the sources decoded their first batch of events, how many it held, and when they
    /// decoded their latest: what [`Stats::ingest_rate`] measures over.
    pub ingest_span: Mutex<Option<IngestSpan>>,
    /// Bytes of the file sources' lines read, over all workers: how far through its files a
    /// job is.
    pub file_bytes: counter::Counter,
    /// Messages behind the end of the assigned partitions, summed over consumers.
    pub consumer_lag: AtomicI64,
    /// Messages behind the end of the assigned partitions, per source (label `source`): which
    /// source falls behind.
    pub source_lag: Family<Labels, Gauge>,
    /// Events decoded, per source (label `source`).
    pub source_records: Family<Labels, counter::Counter>,
    /// Records handed to each sink to write, per sink (label `sink`).
    pub sink_records: Family<Labels, counter::Counter>,
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
    /// In a cluster, this process's index and the number of processes: its figures are its own
    /// share, and `/metrics` labels them so.
    pub process: OnceLock<(usize, usize)>,
    /// Output latency in microseconds: from the event time an output row carries (an alert's,
    /// a command's or a notification request's `time`, a window's end) to the moment it is
    /// handed to its sinks. Unlike [`Stats::latency`], it is not held back by windows and
    /// patterns that keep state (and hence their input's times) open for their whole span.
    pub output_latency: Mutex<Histogram<u64>>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            counters: Default::default(),
            ingest_span: Default::default(),
            file_bytes: Default::default(),
            source_lag: Default::default(),
            consumer_lag: Default::default(),
            source_records: Default::default(),
            sink_records: Default::default(),
            partition_lag: Default::default(),
            workers_ready: Default::default(),
            workers: Default::default(),
            latency: Mutex::new(latency_histogram()),
            output_latency: Mutex::new(latency_histogram()),
            cluster: OnceLock::new(),
            process: OnceLock::new(),
        }
    }
}

/// A histogram of latencies from 1 µs to an hour, to two significant digits.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, 2).expect("valid histogram bounds")
}

/// The longest latency a histogram keeps apart (longer ones count as this).
const MAX_LATENCY_MICROS: u64 = 3_600_000_000;

/// Records `micros` into `histogram`, clamped into its bounds.
fn record_micros(histogram: &mut Histogram<u64>, micros: u64) {
    histogram
        .record(micros.clamp(1, MAX_LATENCY_MICROS))
        .expect("clamped into bounds");
}

/// The value at quantile `q` (0..=1) of `histogram`, if it holds any.
fn quantile(histogram: &Mutex<Histogram<u64>>, q: f64) -> Option<Duration> {
    let histogram = histogram.lock().unwrap();
    (!histogram.is_empty()).then(|| Duration::from_micros(histogram.value_at_quantile(q)))
}

impl Stats {
    /// Every counter's value now.
    pub fn totals(&self) -> Totals {
        Totals::read(|counter| self.get(counter))
    }

    /// Adds `n` to `counter`.
    pub fn add(&self, counter: Counter, n: usize) {
        self.counters[counter as usize].fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Reads `counter`.
    pub fn get(&self, counter: Counter) -> u64 {
        self.counters[counter as usize].load(Ordering::Relaxed)
    }

    /// Counts a batch of `n` events the sources decoded just now.
    pub fn ingest(&self, n: usize) {
        self.add(Counter::EventsIn, n);
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
        let events = self.get(Counter::EventsIn) - span.first_events;
        (seconds > 0.0).then(|| (events as f64 / seconds, seconds))
    }

    /// Whether every worker has built its dataflow: the job is running.
    pub fn ready(&self) -> bool {
        let workers = self.workers.load(Ordering::Acquire);
        workers > 0 && self.workers_ready.load(Ordering::Acquire) >= workers
    }

    /// The records counter of source `name`, registered at build time so that counting is one
    /// atomic add per batch.
    pub fn source_counter(&self, name: &str) -> counter::Counter {
        self.source_records
            .get_or_create_owned(&vec![("source", name.to_string())])
    }

    /// The records counter of sink `name` (see [`Stats::source_counter`]).
    pub fn sink_counter(&self, name: &str) -> counter::Counter {
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

    /// The lag gauge of source `source`, summed over its consumers.
    pub fn source_lag(&self, source: &str) -> Gauge {
        self.source_lag
            .get_or_create_owned(&vec![("source", source.to_string())])
    }

    /// Records one end-to-end latency.
    pub fn record_latency(&self, latency: Duration) {
        record_micros(
            &mut self.latency.lock().unwrap(),
            latency.as_micros() as u64,
        );
    }

    /// The latency at quantile `q` (0..=1), if any was recorded.
    pub fn latency_quantile(&self, q: f64) -> Option<Duration> {
        quantile(&self.latency, q)
    }

    /// Records the output latency of rows carrying the event times `times` (epoch ms), handed
    /// to their sinks at `now_ms`; a time ahead of `now_ms` counts as the least latency.
    pub fn record_output_latencies(&self, now_ms: i64, times: impl Iterator<Item = i64>) {
        let mut histogram = self.output_latency.lock().unwrap();
        for time in times {
            let micros = now_ms.saturating_sub(time).max(0) as u64 * 1000;
            record_micros(&mut histogram, micros);
        }
    }

    /// The output latency at quantile `q` (0..=1), if any was recorded.
    pub fn output_latency_quantile(&self, q: f64) -> Option<Duration> {
        quantile(&self.output_latency, q)
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

    /// Adds the number of records passing by to `counter`.
    fn count_into(self, stats: &Arc<Stats>, counter: Counter) -> Self {
        let stats = Arc::clone(stats);
        self.count_with(move |n| stats.add(counter, n))
    }

    /// Adds the number of records passing by to a labelled `counter`.
    fn count_in(self, counter: counter::Counter) -> Self {
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

/// Measures the output latency of rows (see [`Stats::output_latency`]).
pub trait MeasureLatency: Sized {
    /// Records, for each batch of rows passing by, how long after the event time in column
    /// `time` (epoch ms; rows without an integer there are skipped) it passes.
    fn measure_latency(self, stats: &Arc<Stats>, time: usize) -> Self;
}

impl MeasureLatency for StreamVec<'_, u64, Record> {
    fn measure_latency(self, stats: &Arc<Stats>, time: usize) -> Self {
        let stats = Arc::clone(stats);
        self.inspect_core(move |event| {
            if let Ok((_, batch)) = event
                && !batch.is_empty()
            {
                let now = jiff::Timestamp::now().as_millisecond();
                stats.record_output_latencies(
                    now,
                    batch.iter().filter_map(|row| match row[time] {
                        Value::Int(t) => Some(t),
                        _ => None,
                    }),
                );
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
        assert_eq!(stats.get(Counter::EventsIn), 1_500);
        let (rate, seconds) = stats.ingest_rate().expect("two batches at two times");
        let span = stats.ingest_span.lock().unwrap().expect("a span");
        assert_eq!(seconds, (span.last - span.first).as_secs_f64());
        assert!(
            (rate * seconds - 500.0).abs() < 1e-6,
            "{rate} events/s over {seconds} s"
        );
    }

    /// Output latency runs from a row's event time to when it passed, a time from the future
    /// counting as none.
    #[test]
    fn output_latency_counts_from_the_rows_event_times() {
        let stats = Stats::default();
        assert!(stats.output_latency_quantile(0.99).is_none());
        stats.record_output_latencies(10_000, [9_000, 8_000, 10_500].into_iter());
        let near = |q: f64, ms: u64| {
            let got = stats.output_latency_quantile(q).expect("recorded");
            let want = Duration::from_millis(ms);
            assert!(
                got.abs_diff(want) <= want / 50,
                "q{q}: {got:?}, want {want:?}"
            );
        };
        near(1.0, 2_000);
        near(0.5, 1_000);
        assert!(stats.output_latency_quantile(0.0).unwrap() <= Duration::from_millis(1));
    }
}
