//! Event-time watermarks of a source worker (docs/semantics.md#watermarks).
//!
//! Each partition's watermark is `W = highest event time seen − D`; the worker's is the minimum over
//! its partitions, skipping those idle for longer than the idle timeout or finished. Everything
//! here is expressed as a *frontier*, `W + 1`: the least event time that is not yet complete.

use std::time::{Duration, Instant};

/// One partition's event-time progress.
#[derive(Clone, Debug)]
struct PartitionClock {
    /// `highest event time seen + 1`, or 0 before the first record.
    max_seen_plus_one: u64,
    last_active: Instant,
    finished: bool,
}

/// The watermarks of the partitions one source worker reads.
#[derive(Clone, Debug)]
pub struct Watermarks {
    clocks: Vec<PartitionClock>,
    out_of_orderness: u64,
    idle_timeout: Option<Duration>,
    /// The worker frontier last reported; it never moves back.
    emitted: u64,
}

impl Watermarks {
    /// Clocks for `partitions` partitions, started at `now`.
    pub fn new(
        partitions: usize,
        out_of_orderness: Duration,
        idle_timeout: Option<Duration>,
        now: Instant,
    ) -> Self {
        let clock = PartitionClock {
            max_seen_plus_one: 0,
            last_active: now,
            finished: false,
        };
        Watermarks {
            clocks: vec![clock; partitions],
            out_of_orderness: out_of_orderness.as_millis() as u64,
            idle_timeout,
            emitted: 0,
        }
    }

    fn partition_frontier(&self, clock: &PartitionClock) -> u64 {
        clock
            .max_seen_plus_one
            .saturating_sub(self.out_of_orderness)
    }

    /// Accounts for a record of `partition` at event time `time`, returning the stamp it carries:
    /// its partition's frontier just before it, never below what the worker already reported
    /// (a partition back from idleness cannot reopen windows downstream may have closed).
    #[inline]
    pub fn stamp(&mut self, partition: usize, time: u64, now: Instant) -> u64 {
        let clock = &mut self.clocks[partition];
        let before = clock
            .max_seen_plus_one
            .saturating_sub(self.out_of_orderness);
        clock.max_seen_plus_one = clock.max_seen_plus_one.max(time + 1);
        clock.last_active = now;
        before.max(self.emitted)
    }

    /// The stamp a record of `partition` would carry now, without accounting for one: what its
    /// dead letters carry.
    #[inline]
    pub fn current(&self, partition: usize) -> u64 {
        let clock = &self.clocks[partition];
        self.partition_frontier(clock).max(self.emitted)
    }

    /// The highest event time seen + 1 on `partition` (0 before any record): what a checkpoint
    /// keeps so that a restart stamps replayed records as this run did.
    #[inline]
    pub fn clock(&self, partition: usize) -> u64 {
        self.clocks[partition].max_seen_plus_one
    }

    /// Restores the per-partition clocks of a checkpoint.
    pub fn restore(&mut self, clocks: &[u64]) {
        for (clock, &seen) in self.clocks.iter_mut().zip(clocks) {
            clock.max_seen_plus_one = seen;
        }
    }

    /// Counts every partition as active at `now`: for a worker that chose not to read.
    pub fn touch(&mut self, now: Instant) {
        for clock in &mut self.clocks {
            clock.last_active = now;
        }
    }

    /// Marks `partition` as having no more input: it no longer holds the worker back.
    pub fn finish(&mut self, partition: usize) {
        self.clocks[partition].finished = true;
    }

    /// Whether every partition has finished.
    pub fn all_finished(&self) -> bool {
        self.clocks.iter().all(|c| c.finished)
    }

    /// The worker's frontier at `now`: the least frontier over its active partitions. When every
    /// unfinished partition is idle, the greatest of theirs; it never moves back.
    pub fn frontier(&mut self, now: Instant) -> u64 {
        let idle = |c: &PartitionClock| {
            self.idle_timeout
                .is_some_and(|timeout| now.duration_since(c.last_active) > timeout)
        };
        let open = || self.clocks.iter().filter(|c| !c.finished);
        let active = open()
            .filter(|c| !idle(c))
            .map(|c| self.partition_frontier(c))
            .min();
        let frontier = active.or_else(|| open().map(|c| self.partition_frontier(c)).max());
        if let Some(f) = frontier {
            self.emitted = self.emitted.max(f);
        }
        self.emitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_millis(2000);

    #[test]
    fn frontier_is_max_seen_minus_delay_plus_one() {
        let now = Instant::now();
        let mut w = Watermarks::new(1, D, None, now);
        assert_eq!(w.stamp(0, 10_000, now), 0);
        assert_eq!(w.frontier(now), 8_001);
        // An earlier record does not move the watermark back; it is stamped with the current one.
        assert_eq!(w.stamp(0, 9_000, now), 8_001);
        assert_eq!(w.frontier(now), 8_001);
    }

    #[test]
    fn worker_frontier_is_the_minimum_over_partitions_skipping_idle_ones() {
        let start = Instant::now();
        let mut w = Watermarks::new(2, D, Some(Duration::from_secs(5)), start);
        w.stamp(0, 10_000, start);
        w.stamp(1, 20_000, start);
        assert_eq!(w.frontier(start), 8_001);
        let later = start + Duration::from_secs(6);
        w.stamp(1, 30_000, later);
        // Partition 0 has been idle for 6 s: skipped.
        assert_eq!(w.frontier(later), 28_001);
        // Back from idleness, partition 0's records are stamped no lower than the worker's frontier.
        assert_eq!(w.stamp(0, 11_000, later), 28_001);
        assert_eq!(w.frontier(later), 28_001, "the frontier never moves back");
    }

    #[test]
    fn all_idle_partitions_release_the_greatest_frontier_and_finished_ones_none() {
        let start = Instant::now();
        let mut w = Watermarks::new(2, D, Some(Duration::from_secs(1)), start);
        w.stamp(0, 10_000, start);
        w.stamp(1, 20_000, start);
        assert_eq!(w.frontier(start + Duration::from_secs(2)), 18_001);
        let mut w = Watermarks::new(2, D, None, start);
        w.stamp(0, 10_000, start);
        w.stamp(1, 20_000, start);
        w.finish(1);
        assert_eq!(w.frontier(start), 8_001);
        assert!(!w.all_finished());
        w.finish(0);
        assert!(w.all_finished());
    }
}
