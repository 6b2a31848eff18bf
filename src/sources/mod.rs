//! Sources: where events come from, and the one timely operator that turns any [`Reader`] into a
//! stream of stamped [`Event`]s with event-time progress and a dead-letter output.

pub mod file;
pub mod generator;
pub mod incidents;
pub mod kafka;

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{ProbeHandle, Scope, StreamVec};

use crate::operators::watermark::Watermarks;
use crate::record::{DeadLetter, Event};

/// What one call to [`Reader::read`] produced.
#[derive(Debug)]
pub struct ReadBatch<D> {
    /// Decoded events as `(partition, event time, datum)`, partitions numbered from 0 per reader.
    pub events: Vec<(usize, u64, D)>,
    /// Inputs that did not decode.
    pub dead: Vec<DeadLetter>,
    /// Partitions that reached their end during this call.
    pub finished: Vec<usize>,
}

impl<D> Default for ReadBatch<D> {
    fn default() -> Self {
        ReadBatch {
            events: Vec::new(),
            dead: Vec::new(),
            finished: Vec::new(),
        }
    }
}

/// Whether a reader has more input right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadStatus {
    /// More may be read at once.
    Ready,
    /// Nothing is available now; try again shortly.
    Waiting,
    /// Every partition has ended.
    Done,
}

/// What a source commits beside its position, and a restarted job resumes from: enough to stamp
/// replayed records as before, and to skip the windows that were already emitted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Per partition of this reader, the highest event time seen + 1 at the position.
    pub clocks: Vec<u64>,
    /// Every window firing before this time had been emitted and flushed (for a restored
    /// checkpoint: the greatest over all partitions of the source).
    pub emitted_before: u64,
}

/// One worker's share of a source: some partitions, read in batches.
pub trait Reader<D>: 'static {
    /// A resumable position in all of this reader's partitions (offsets, for Kafka).
    type Position: Clone + 'static;
    /// How many partitions this reader owns.
    fn partitions(&self) -> usize;
    /// Reads the next batch into `batch`.
    fn read(&mut self, batch: &mut ReadBatch<D>) -> ReadStatus;
    /// The position after everything read so far.
    fn position(&self) -> Self::Position;
    /// Records that all output derived from input before `position` has been flushed by every
    /// sink, so a restart may resume there with `checkpoint`.
    fn commit(&mut self, position: &Self::Position, checkpoint: &Checkpoint, last: bool);
    /// The checkpoint committed with the position this reader resumes from, if any.
    fn restored(&self) -> Option<&Checkpoint> {
        None
    }
}

/// The event-time and delivery settings of a source.
#[derive(Clone, Debug)]
pub struct SourceOptions {
    /// D: how far behind the highest event time seen a record may still arrive.
    pub out_of_orderness: Duration,
    /// A partition silent for longer no longer holds the watermark back.
    pub idle_timeout: Option<Duration>,
    /// Timely timestamps are event-time frontiers truncated to this many milliseconds.
    pub tick: u64,
    /// How often processed positions are committed.
    pub commit_interval: Duration,
    /// When set, the source commits what has been flushed and halts (see [`event_source`]).
    pub stop: Arc<AtomicBool>,
    /// Counts the sources of this worker that have halted after a stop.
    pub halted: Rc<Cell<usize>>,
    /// A probe on the window operators' fired streams: committed with the offsets as the
    /// frontier of emitted windows.
    pub fired: ProbeHandle<u64>,
    /// The backlogs of the operators downstream that can refuse records: the source reads
    /// nothing while any of them holds records it could not hand on.
    pub backlogs: Vec<Backlog>,
}

/// How many records an operator holds because the next stage (an asynchronous sink's bounded
/// queue) refused them. Shared by the operator, which sets it, and the sources feeding it, which
/// stop reading while it is not zero: so a slow sink slows the source instead of records piling
/// up without bound or being dropped.
#[derive(Clone, Debug, Default)]
pub struct Backlog(Arc<AtomicUsize>);

impl Backlog {
    /// Adds `n` held records.
    pub fn hold(&self, n: usize) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Removes `n` records that have been handed on.
    pub fn release(&self, n: usize) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }

    /// How many records are held.
    pub fn held(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// What a source operator produces.
pub struct SourceStreams<'scope, D> {
    /// The stamped events.
    pub events: StreamVec<'scope, u64, Event<D>>,
    /// Input that did not decode.
    pub dead: StreamVec<'scope, u64, DeadLetter>,
    /// From the restored checkpoint: windows firing before this time were already emitted.
    pub emitted_before: u64,
}

/// Reads `reader` into a stream of events stamped per DESIGN §3, and a stream of dead letters.
///
/// The source's capability follows the worker watermark (truncated to the tick). Positions are
/// committed once `flushed` (a probe on every sink) has passed the time the data was sent at.
/// When the reader ends, the source closes its streams (every open window fires) and commits its
/// final position once everything is flushed. When `options.stop` is set instead, it commits only
/// what is flushed and halts with its streams open, counting itself in `options.halted`: the
/// worker then drops the dataflow, so a stop never emits a window with part of its input.
pub fn event_source<'scope, D, R>(
    scope: Scope<'scope, u64>,
    name: &str,
    mut reader: R,
    options: SourceOptions,
    flushed: ProbeHandle<u64>,
) -> SourceStreams<'scope, D>
where
    D: Clone + 'static,
    R: Reader<D>,
{
    let mut builder = OperatorBuilder::new(format!("Source({name})"), scope);
    let info = builder.operator_info();
    let activator = scope.activator_for(info.address);
    let (events, events_stream) = builder.new_output();
    let (dead, dead_stream) = builder.new_output();
    let mut events = OutputBuilder::from(events);
    let mut dead = OutputBuilder::from(dead);
    let emitted_before = reader.restored().map_or(0, |c| c.emitted_before);

    builder.build_reschedule(move |mut capabilities| {
        let mut dead_cap = capabilities.pop();
        let mut events_cap = capabilities.pop();
        let mut watermarks = Watermarks::new(
            reader.partitions(),
            options.out_of_orderness,
            options.idle_timeout,
            Instant::now(),
        );
        if let Some(checkpoint) = reader.restored() {
            watermarks.restore(&checkpoint.clocks);
        }
        if reader.partitions() == 0 {
            (events_cap, dead_cap) = (None, None);
        }
        let mut batch = ReadBatch::default();
        let mut stamped = Vec::new();
        let mut commits = Commits {
            uncommitted: VecDeque::new(),
            flushed,
            fired: options.fired.clone(),
            emitted_before,
        };
        let mut last_commit = Instant::now();
        let mut halted = false;
        move |_frontiers| {
            if halted {
                return false;
            }
            if options.stop.load(Ordering::Relaxed) {
                // Stop without closing the stream, which would fire open windows with part of
                // their input: commit what the sinks have flushed and let the worker drop the
                // dataflow. A restart resumes from there and recomputes the rest in full.
                commits.commit(&mut reader, true);
                halted = true;
                options.halted.set(options.halted.get() + 1);
                return false;
            }
            let Some(cap) = events_cap.as_mut() else {
                // Finished reading: stay alive until the sinks have flushed, then commit.
                if commits.flushed.done() {
                    commits.commit(&mut reader, true);
                    return false;
                }
                activator.activate_after(Duration::from_millis(5));
                return true;
            };
            let now = Instant::now();
            if now.duration_since(last_commit) >= options.commit_interval {
                commits.commit(&mut reader, false);
                last_commit = now;
            }
            if options.backlogs.iter().any(|b| b.held() > 0) {
                // Backpressure: read nothing (and leave the watermark where it is) until the
                // sink downstream has room again.
                activator.activate_after(Duration::from_millis(1));
                return true;
            }
            let status = reader.read(&mut batch);
            let time = *cap.time();
            if !batch.events.is_empty() {
                // `give_container` leaves `stamped` empty: size it once rather than let it double.
                stamped.reserve(batch.events.len());
                stamped.extend(batch.events.drain(..).map(|(partition, t, data)| Event {
                    time: t,
                    frontier: watermarks.stamp(partition, t, now),
                    data,
                }));
                events
                    .activate()
                    .session(&*cap)
                    .give_container(&mut stamped);
            }
            if !batch.dead.is_empty() {
                let dead_cap = dead_cap.as_ref().expect("held with the events capability");
                dead.activate()
                    .session(dead_cap)
                    .give_container(&mut batch.dead);
            }
            for partition in batch.finished.drain(..) {
                watermarks.finish(partition);
            }
            match commits.uncommitted.back_mut() {
                Some((t, position, clocks)) if *t == time => {
                    *position = reader.position();
                    *clocks = watermarks.clocks();
                }
                _ => commits
                    .uncommitted
                    .push_back((time, reader.position(), watermarks.clocks())),
            }
            if status == ReadStatus::Done || watermarks.all_finished() {
                (events_cap, dead_cap) = (None, None);
                activator.activate();
                return true;
            }
            let frontier = watermarks.frontier(now);
            let next = frontier - frontier % options.tick;
            if next > time {
                cap.downgrade(&next);
                if let Some(c) = dead_cap.as_mut() {
                    c.downgrade(&next);
                }
            }
            match status {
                ReadStatus::Ready => activator.activate(),
                _ => activator.activate_after(Duration::from_millis(2)),
            }
            true
        }
    });
    SourceStreams {
        events: events_stream,
        dead: dead_stream,
        emitted_before,
    }
}

/// What a source has read but not committed yet, and what tells it when it may.
struct Commits<P> {
    /// Positions (and clocks) reached by the data sent at each time, awaiting the sinks.
    uncommitted: VecDeque<(u64, P, Vec<u64>)>,
    /// A probe on every sink: data sent before its frontier is flushed.
    flushed: ProbeHandle<u64>,
    /// A probe on the window and pattern operators' fired streams.
    fired: ProbeHandle<u64>,
    /// From the restored checkpoint: an earlier run had emitted everything firing before this.
    emitted_before: u64,
}

impl<P> Commits<P> {
    /// Commits the latest position whose data the sinks have flushed (sent at a time the
    /// `flushed` probe has passed), with the time before which everything has fired: the `fired`
    /// probe's frontier, but never less than the restored checkpoint's (what fires before it
    /// was emitted by an earlier run, and this run skips it, so `fired` may lag behind it);
    /// `last` for a source that stops reading.
    fn commit<D, R: Reader<D, Position = P>>(&mut self, reader: &mut R, last: bool) {
        let mut safe = None;
        while self
            .uncommitted
            .front()
            .is_some_and(|(t, _, _)| !self.flushed.less_equal(t))
        {
            safe = self.uncommitted.pop_front();
        }
        if let Some((_, position, clocks)) = safe {
            let fired = self
                .fired
                .with_frontier(|f| f.first().copied().unwrap_or(u64::MAX));
            let checkpoint = Checkpoint {
                clocks,
                emitted_before: fired.max(self.emitted_before),
            };
            reader.commit(&position, &checkpoint, last);
        }
    }
}

/// The partitions of `total` that worker `index` of `peers` owns: a stable round-robin, so each
/// partition belongs to exactly one worker over all processes.
pub fn owned_partitions(total: usize, index: usize, peers: usize) -> impl Iterator<Item = usize> {
    (index..total).step_by(peers)
}
