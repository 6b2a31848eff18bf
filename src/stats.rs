//! Live counters of a running job, shared by its workers and read by progress displays.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use timely::dataflow::StreamVec;
use timely::dataflow::operators::core::Inspect;

/// Counters a job updates as it runs; every field only grows except `consumer_lag`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Events decoded by the sources.
    pub events_in: AtomicU64,
    /// Inputs sent to the dead-letter sink.
    pub dead_letters: AtomicU64,
    /// Events that arrived after all their windows had closed.
    pub late: AtomicU64,
    /// Window results emitted.
    pub windows_out: AtomicU64,
    /// Records written by the sinks.
    pub records_out: AtomicU64,
    /// Messages behind the end of the assigned partitions, summed over consumers.
    pub consumer_lag: AtomicI64,
}

impl Stats {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
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
