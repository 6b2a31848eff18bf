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
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use timely::dataflow::operators::Probe;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{ProbeHandle, Scope, StreamVec};

use crate::backlog::Backlog;
use crate::operators::watermark::Watermarks;
use crate::record::{DeadLetter, Event};
use crate::state::{Plan, Position, SourceCheckpoint};

/// One record of a partition as a reader hands it over.
#[derive(Debug)]
pub struct Positioned<T> {
    /// The partition, numbered from 0 per reader.
    pub partition: usize,
    /// The partition's position just after this record: where a restart resumes once everything
    /// derived from it is flushed (Kafka: its offset + 1).
    pub next: i64,
    /// The record: a decoded event `(event time, datum)`, or a dead letter.
    pub item: T,
}

/// What one call to [`Reader::read`] produced.
#[derive(Debug)]
pub struct ReadBatch<D> {
    /// Decoded events as `(event time, datum)`.
    pub events: Vec<Positioned<(u64, D)>>,
    /// Inputs that did not decode.
    pub dead: Vec<Positioned<DeadLetter>>,
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
    /// How many partitions this reader owns.
    fn partitions(&self) -> usize;
    /// Reads the next batch into `batch`.
    fn read(&mut self, batch: &mut ReadBatch<D>) -> ReadStatus;
    /// Records that, per partition, all output derived from input before `positions[p]` (a
    /// [`Positioned::next`], or −1 for nothing yet) has been flushed by every sink, so a restart may
    /// resume there with `checkpoint`.
    fn commit(&mut self, positions: &[i64], checkpoint: &Checkpoint, last: bool);
    /// The checkpoint committed with the position this reader resumes from, if any.
    fn restored(&self) -> Option<&Checkpoint> {
        None
    }
    /// The name of `partition` in a checkpoint's positions: the same for the same partition in
    /// every run, whichever worker reads it.
    fn partition_name(&self, partition: usize) -> String;
    /// Where `partition` started, when a restart can resume there (a [`Positioned::next`]): a
    /// checkpoint's position, or a Kafka offset; `None`: from its start, which has no position.
    fn resumed(&self, _partition: usize) -> Option<i64> {
        None
    }
    /// Told, per partition, the next position (`None`: nothing read yet) this reader hands off
    /// for a checkpoint, as it hands it off: a Kafka reader offers these offsets to the
    /// transactions of its worker's sinks.
    fn checkpointed(&self, _positions: &[Option<i64>]) {}
}

/// The event-time and delivery settings of a source.
#[derive(Clone, Debug)]
pub struct SourceOptions {
    /// D: how far behind the highest event time seen a record may still arrive.
    pub out_of_orderness: Duration,
    /// A partition silent for longer no longer holds the watermark back.
    pub idle_timeout: Option<Duration>,
    /// How far this worker's frontier may run ahead of the source's over all workers before it
    /// stops reading until the others catch up: the state of open windows then spans at most
    /// that much more event time than the slowest worker needs. `None`: no bound.
    pub max_drift: Option<Duration>,
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

/// What a source operator produces.
pub struct SourceStreams<'scope, D> {
    /// The stamped events.
    pub events: StreamVec<'scope, u64, Event<D>>,
    /// Input that did not decode.
    pub dead: StreamVec<'scope, u64, DeadLetter>,
    /// From the restored checkpoint: windows firing before this time were already emitted.
    pub emitted_before: u64,
}

/// Reads `reader` into a stream of events stamped as docs/semantics.md#watermarks says, and a
/// stream of dead letters.
///
/// The source's capability follows the worker watermark (truncated to the tick); each event is
/// sent at its own partition's watermark (truncated), never earlier, so the timely time an event
/// travels at stays close to its event time even when one read spans a long stretch of it. A
/// partition's position is committed once `settled` (a probe on every sink and on the window
/// and pattern operators' settled streams) has passed the time everything before it was sent
/// at. When the reader ends, the source closes its streams (every open window fires) and
/// commits its final positions once everything is settled. When `options.stop` is set instead,
/// it commits only what is settled and halts with its streams open, counting itself in
/// `options.halted`: the worker then drops the dataflow, so a stop never emits a window with
/// part of its input.
///
/// With `checkpoint`, the source takes part in the job's checkpoints as
/// [`crate::state::Checkpointing`] describes: it publishes the times it sends at, and hands off
/// each partition's position (and clock) after the last record it sent before a checkpoint's
/// frontier. A partition's records go at non-decreasing times, dead letters included (each in
/// its place among the partition's events, at the stamp an event there would get), so that
/// position divides what was sent before the frontier from what was sent after it, and a
/// record's time follows from its partition's input alone.
pub fn event_source<'scope, D, R>(
    scope: Scope<'scope, u64>,
    name: &str,
    mut reader: R,
    options: SourceOptions,
    settled: ProbeHandle<u64>,
    checkpoint: Option<SourceCheckpoint>,
) -> SourceStreams<'scope, D>
where
    D: Clone + 'static,
    R: Reader<D>,
{
    let mut builder = OperatorBuilder::new(format!("Source({name})"), scope);
    let mut positions = checkpoint.map(|checkpoint| SourcePositions::new(checkpoint, &reader));
    let info = builder.operator_info();
    let activator = scope.activator_for(info.address);
    let (events, events_stream) = builder.new_output();
    let (dead, dead_stream) = builder.new_output();
    let mut events = OutputBuilder::from(events);
    let mut dead = OutputBuilder::from(dead);
    let emitted_before = reader.restored().map_or(0, |c| c.emitted_before);
    // The frontier of this source's events over all workers (the slowest worker's), for
    // `options.max_drift`.
    let slowest = ProbeHandle::new();
    let probe = slowest.clone();
    let max_drift = options.max_drift.map(|d| d.as_millis() as u64);
    let name = name.to_string();

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
        let mut outbox = Outbox::default();
        let mut dead_letters = Vec::new();
        let mut commits = Commits::new(
            reader.partitions(),
            settled,
            options.fired.clone(),
            emitted_before,
        );
        let mut last_commit = Instant::now();
        let mut halted = false;
        // Whether the last read found nothing: an idle source's watermark stays where it is, so
        // a checkpoint begun past it cannot complete until input comes.
        let mut read_nothing = false;
        // Per partition, the indexes of this batch's dead letters not placed yet; and the time
        // each dead letter goes at.
        let mut dead_queues = vec![VecDeque::new(); reader.partitions()];
        let mut dead_at = Vec::new();
        move |_frontiers| {
            if halted {
                return false;
            }
            if options.stop.load(Ordering::Relaxed)
                && (read_nothing
                    || positions
                        .as_ref()
                        .is_none_or(SourcePositions::final_checkpoint_done))
            {
                // Stop without closing the stream, which would fire open windows with part of
                // their input: commit what has settled (with checkpoints, once a final one is
                // complete, or at once when idle, as no checkpoint can complete until input
                // comes; until then the source reads on) and let the worker drop the dataflow.
                // A restart resumes from there and recomputes the rest in full.
                commits.commit(&mut reader, true);
                halted = true;
                options.halted.set(options.halted.get() + 1);
                return false;
            }
            let Some(cap) = events_cap.as_mut() else {
                // Finished reading: stay alive until everything has settled, then commit.
                if let Some(positions) = positions.as_mut() {
                    positions.finished(&name, &reader);
                }
                if commits.settled.done() {
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
            let slowest = slowest.with_frontier(|f| f.first().copied());
            if let (Some(drift), Some(slowest)) = (max_drift, slowest)
                && cap.time().saturating_sub(slowest) > drift
            {
                // Too far ahead of another worker: wait for it. Waiting is not silence, so the
                // partitions do not turn idle meanwhile.
                watermarks.touch(now);
                activator.activate_after(Duration::from_millis(1));
                return true;
            }
            let status = reader.read(&mut batch);
            read_nothing = batch.events.is_empty() && batch.dead.is_empty();
            let time = *cap.time();
            outbox.reserve(batch.events.len());
            dead_at.clear();
            dead_at.resize(batch.dead.len(), 0);
            for (i, read) in batch.dead.iter().enumerate() {
                dead_queues[read.partition].push_back(i);
            }
            let mut place_dead =
                |upto: Option<(usize, i64)>,
                 watermarks: &Watermarks,
                 commits: &mut Commits,
                 positions: &mut Option<SourcePositions>| {
                    let partitions = match upto {
                        Some((partition, _)) => partition..partition + 1,
                        None => 0..dead_queues.len(),
                    };
                    for partition in partitions {
                        while let Some(&i) = dead_queues[partition].front()
                            && upto.is_none_or(|(_, next)| batch.dead[i].next < next)
                        {
                            dead_queues[partition].pop_front();
                            let read = &batch.dead[i];
                            let frontier = watermarks.current(partition);
                            let at = frontier - frontier % options.tick;
                            let clock = watermarks.clock(partition);
                            sent(commits, positions, (partition, at, read.next, clock));
                            dead_at[i] = at;
                        }
                    }
                };
            for read in batch.events.drain(..) {
                // A dead letter takes its place among its partition's events: it goes at the
                // partition's stamp after the events before it, with the position and clock
                // there, so its time follows from the partition's input alone, not from how
                // reads cut that into batches.
                if !batch.dead.is_empty() {
                    let upto = Some((read.partition, read.next));
                    place_dead(upto, &watermarks, &mut commits, &mut positions);
                }
                let (t, data) = read.item;
                let frontier = watermarks.stamp(read.partition, t, now);
                let at = frontier - frontier % options.tick;
                let clock = watermarks.clock(read.partition);
                sent(
                    &mut commits,
                    &mut positions,
                    (read.partition, at, read.next, clock),
                );
                outbox.push(
                    at,
                    Event {
                        time: t,
                        frontier,
                        data,
                    },
                );
            }
            place_dead(None, &watermarks, &mut commits, &mut positions);
            if let Some(positions) = positions.as_mut() {
                // Before anything of this batch is sent: a checkpoint that begins now has its
                // frontier past all of it.
                positions.publish(time);
            }
            let mut output = events.activate();
            for (at, mut group) in outbox.drain() {
                // At or after the capability's time: the stamp is never behind the worker's.
                output.session(&cap.delayed(&at)).give_container(&mut group);
            }
            drop(output);
            if !batch.dead.is_empty() {
                let dead_cap = dead_cap.as_ref().expect("held with the events capability");
                let mut dead = dead.activate();
                for (read, at) in batch.dead.drain(..).zip(&dead_at) {
                    dead_letters.push(read.item);
                    dead.session(&dead_cap.delayed(at))
                        .give_container(&mut dead_letters);
                }
            }
            for partition in batch.finished.drain(..) {
                watermarks.finish(partition);
            }
            if status == ReadStatus::Done || watermarks.all_finished() {
                (events_cap, dead_cap) = (None, None);
                if let Some(positions) = positions.as_mut() {
                    positions.end(&reader);
                }
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
            if let Some(positions) = positions.as_mut() {
                positions.passed(*cap.time(), &name, &reader);
            }
            match status {
                ReadStatus::Ready => activator.activate(),
                _ => activator.activate_after(Duration::from_millis(2)),
            }
            true
        }
    });
    SourceStreams {
        events: events_stream.probe_with(&probe),
        dead: dead_stream,
        emitted_before,
    }
}

/// Events of one read, grouped by the timely time each is sent at.
struct Outbox<T> {
    groups: Vec<(u64, Vec<T>)>,
    /// Room for the first group: usually every event of a read goes at one time.
    capacity: usize,
}

impl<T> Default for Outbox<T> {
    fn default() -> Self {
        Outbox {
            groups: Vec::new(),
            capacity: 0,
        }
    }
}

impl<T> Outbox<T> {
    fn reserve(&mut self, n: usize) {
        self.capacity = n;
    }

    fn push(&mut self, time: u64, item: T) {
        // Events of one partition go at non-decreasing times: the latest group is nearly always
        // the one.
        match self.groups.iter_mut().rev().find(|(t, _)| *t == time) {
            Some((_, items)) => items.push(item),
            None => {
                let mut items = Vec::with_capacity(std::mem::take(&mut self.capacity));
                items.push(item);
                self.groups.push((time, items));
            }
        }
    }

    /// The groups as `(time, events)`, leaving the outbox empty.
    fn drain(&mut self) -> std::vec::Drain<'_, (u64, Vec<T>)> {
        self.groups.drain(..)
    }
}

/// Where a partition had been read to by data sent at some time.
struct Mark {
    /// The latest time anything before `next` was sent at.
    sent_at: u64,
    /// The partition's position after it.
    next: i64,
    /// The partition's clock there (highest event time seen + 1).
    clock: u64,
}

/// What a source has read but not committed yet, and what tells it when it may.
struct Commits {
    /// Per partition, the positions reached by data sent at increasing times, awaiting
    /// `settled`.
    marks: Vec<VecDeque<Mark>>,
    /// Per partition, the position (and clock) a commit records: −1 before anything settled.
    positions: Vec<i64>,
    clocks: Vec<u64>,
    /// A probe on every sink and on the window and pattern operators' settled streams: data
    /// sent before its frontier has been flushed, and the `fired` probe counts what it became.
    settled: ProbeHandle<u64>,
    /// A probe on the window and pattern operators' fired streams.
    fired: ProbeHandle<u64>,
    /// From the restored checkpoint: an earlier run had emitted everything firing before this.
    emitted_before: u64,
}

impl Commits {
    fn new(
        partitions: usize,
        settled: ProbeHandle<u64>,
        fired: ProbeHandle<u64>,
        emitted_before: u64,
    ) -> Self {
        Commits {
            marks: (0..partitions).map(|_| VecDeque::new()).collect(),
            positions: vec![-1; partitions],
            clocks: vec![0; partitions],
            settled,
            fired,
            emitted_before,
        }
    }

    /// Notes that `partition` has been read up to `next` by data sent at `sent_at` or earlier.
    #[inline]
    fn record(&mut self, partition: usize, sent_at: u64, next: i64, clock: u64) {
        let marks = &mut self.marks[partition];
        match marks.back_mut() {
            Some(mark) if mark.sent_at >= sent_at => {
                mark.next = next;
                mark.clock = clock;
            }
            _ => marks.push_back(Mark {
                sent_at,
                next,
                clock,
            }),
        }
    }

    /// Commits, per partition, the latest position whose data has settled (sent at a time the
    /// `settled` probe has passed), with the time before which everything has fired: the
    /// `fired` probe's frontier, but never less than the restored checkpoint's (what fires
    /// before it was emitted by an earlier run, and this run skips it, so `fired` may lag behind
    /// it); `last` for a source that stops reading.
    ///
    /// The fired frontier read here covers every window whose input has settled: an operator
    /// keeps a fired window's input unsettled until every worker, this one included, has seen
    /// the fired frontier pass the window (see [`crate::operators::delivery`]).
    fn commit<D, R: Reader<D>>(&mut self, reader: &mut R, last: bool) {
        let mut moved = false;
        for (p, marks) in self.marks.iter_mut().enumerate() {
            while let Some(mark) = marks.front()
                && !self.settled.less_equal(&mark.sent_at)
            {
                (self.positions[p], self.clocks[p]) = (mark.next, mark.clock);
                marks.pop_front();
                moved = true;
            }
        }
        if moved {
            let fired = self
                .fired
                .with_frontier(|f| f.first().copied().unwrap_or(u64::MAX));
            let checkpoint = Checkpoint {
                clocks: self.clocks.clone(),
                emitted_before: fired.max(self.emitted_before),
            };
            reader.commit(&self.positions, &checkpoint, last);
        }
    }
}

/// A source's part in the job's checkpoints: what it has sent, and where each partition stood
/// before a checkpoint's frontier.
struct SourcePositions {
    checkpoint: SourceCheckpoint,
    /// Per partition, (next position, clock) after the latest record sent, or where it resumed.
    latest: PartitionPositions,
    /// This batch's records as (partition, time, next position, clock), until it is published.
    batch: Vec<(usize, u64, i64, u64)>,
    /// The checkpoint this source has yet to hand off for, with each partition's position after
    /// its last record before the frontier, and whether a record at or past the frontier has
    /// been sent (partitions send at non-decreasing times, so nothing before it follows).
    at_frontier: Option<(Plan, PartitionPositions, Vec<bool>)>,
}

/// Per partition, (next position, clock), or `None` before anything was read.
type PartitionPositions = Vec<Option<(i64, u64)>>;

impl SourcePositions {
    fn new<D>(checkpoint: SourceCheckpoint, reader: &impl Reader<D>) -> Self {
        let clocks = reader
            .restored()
            .map(|c| c.clocks.as_slice())
            .unwrap_or(&[]);
        let latest = (0..reader.partitions())
            .map(|p| {
                let clock = clocks.get(p).copied().unwrap_or(0);
                reader.resumed(p).map(|next| (next, clock))
            })
            .collect();
        SourcePositions {
            checkpoint,
            latest,
            batch: Vec::new(),
            at_frontier: None,
        }
    }

    /// Notes a record of this batch: `partition` is at `next` (with `clock`) after it, and it
    /// goes at time `at`.
    #[inline]
    fn sent(&mut self, partition: usize, at: u64, next: i64, clock: u64) {
        self.batch.push((partition, at, next, clock));
    }

    /// Publishes the batch's times (none before `time`, the source's capability) before it is
    /// sent, learning of a checkpoint that has begun; then takes the batch into the positions.
    fn publish(&mut self, time: u64) {
        let upto = self.batch.iter().map(|r| r.1).max().unwrap_or(0).max(time);
        // Published even while a checkpoint is pending here: the next one must begin past every
        // time sent.
        let plan = self.checkpoint.publish(upto);
        if self.at_frontier.is_none()
            && let Some(plan) = plan
        {
            let frozen = vec![false; self.latest.len()];
            self.at_frontier = Some((plan, self.latest.clone(), frozen));
        }
        for (partition, at, next, clock) in self.batch.drain(..) {
            self.latest[partition] = Some((next, clock));
            if let Some((plan, positions, frozen)) = self.at_frontier.as_mut()
                && !frozen[partition]
            {
                if at < plan.frontier {
                    positions[partition] = Some((next, clock));
                } else {
                    frozen[partition] = true;
                }
            }
        }
    }

    /// Hands off the positions once the source's capability is at `time`, if that has passed
    /// the frontier: nothing before it is sent any more.
    fn passed<D>(&mut self, time: u64, name: &str, reader: &impl Reader<D>) {
        if self
            .at_frontier
            .as_ref()
            .is_some_and(|(plan, _, _)| time >= plan.frontier)
            && let Some((plan, positions, _)) = self.at_frontier.take()
        {
            self.hand_off(&plan, &positions, name, reader);
        }
    }

    /// Whether a stop may halt the source: the job's final checkpoint is complete.
    fn final_checkpoint_done(&self) -> bool {
        self.checkpoint.part.checkpointing().final_checkpoint_done()
    }

    /// The reader has ended: no checkpoint begins from now on (unless it had nothing to read).
    fn end<D>(&mut self, reader: &impl Reader<D>) {
        if reader.partitions() > 0 {
            self.checkpoint.end();
        }
    }

    /// With everything read, hands off where reading ended for a checkpoint still in flight.
    fn finished<D>(&mut self, name: &str, reader: &impl Reader<D>) {
        let pending = match self.at_frontier.take() {
            Some((plan, positions, _)) => Some((plan, positions)),
            None => self
                .checkpoint
                .part
                .pending()
                .map(|plan| (plan, self.latest.clone())),
        };
        if let Some((plan, positions)) = pending {
            self.hand_off(&plan, &positions, name, reader);
        }
    }

    fn hand_off<D>(
        &mut self,
        plan: &Plan,
        positions: &[Option<(i64, u64)>],
        name: &str,
        reader: &impl Reader<D>,
    ) {
        reader.checkpointed(
            &positions
                .iter()
                .map(|p| p.map(|(next, _)| next))
                .collect::<Vec<_>>(),
        );
        self.checkpoint.part.hand_off(plan, |snapshot| {
            for (partition, position) in positions.iter().enumerate() {
                if let Some((next, clock)) = *position {
                    let position = Position {
                        offset: next.max(0) as u64,
                        state: clock.to_le_bytes().to_vec(),
                    };
                    snapshot.position(name, &reader.partition_name(partition), position);
                }
            }
        });
    }
}

/// Notes that a record of `partition` went at time `at`, the partition at `next` (with `clock`)
/// after it: for the commits, and for the checkpoints if the source takes part.
#[inline]
fn sent(
    commits: &mut Commits,
    positions: &mut Option<SourcePositions>,
    (partition, at, next, clock): (usize, u64, i64, u64),
) {
    commits.record(partition, at, next, clock);
    if let Some(positions) = positions.as_mut() {
        positions.sent(partition, at, next, clock);
    }
}

/// Reads a partition's (next position, clock) back from a checkpoint's [`Position`].
pub fn restored_position(position: &Position) -> Result<(i64, u64), String> {
    let clock: [u8; 8] = position.state.as_slice().try_into().map_err(|_| {
        format!(
            "a position's state is {} bytes, not the 8 of a clock",
            position.state.len()
        )
    })?;
    let next = i64::try_from(position.offset)
        .map_err(|_| format!("position {} is out of range", position.offset))?;
    Ok((next, u64::from_le_bytes(clock)))
}

/// The dead letter's reason for a record of `len` bytes, more than a source's `max_record_bytes`.
fn too_long(len: u64, max_record_bytes: usize) -> String {
    format!(
        "record of {len} bytes is longer than max_record_bytes ({max_record_bytes}): not decoded"
    )
}

/// The slot of worker `index` of `peers`, spread over `processes` processes of `peers /
/// processes` workers each, when partitions are dealt to slots by [`owned_partitions`]: the first
/// worker of each process comes first, then the second of each, and so on, so every process gets
/// a partition before any gets a second. (Timely numbers a process's workers consecutively.)
pub fn deal_slot(index: usize, peers: usize, processes: usize) -> usize {
    let workers = (peers / processes.max(1)).max(1);
    let (process, local) = (index / workers, index % workers);
    local * processes + process
}

/// The partitions of `total` that slot `index` of `peers` owns: a stable round-robin, so each
/// partition belongs to exactly one worker over all processes.
pub fn owned_partitions(total: usize, index: usize, peers: usize) -> impl Iterator<Item = usize> {
    (index..total).step_by(peers)
}

#[cfg(test)]
mod tests {
    use super::{deal_slot, owned_partitions};

    #[test]
    fn every_process_is_dealt_a_partition_before_any_gets_a_second() {
        // Three processes of two workers, three partitions: one for each process.
        let (processes, peers) = (3, 6);
        let owner = |partition: usize| {
            (0..peers)
                .find(|&w| {
                    owned_partitions(3, deal_slot(w, peers, processes), peers)
                        .any(|p| p == partition)
                })
                .unwrap()
        };
        let mut processes_dealt: Vec<usize> = (0..3).map(|p| owner(p) / 2).collect();
        processes_dealt.sort();
        assert_eq!(processes_dealt, [0, 1, 2]);
    }

    #[test]
    fn slots_are_a_permutation_of_the_workers() {
        for (peers, processes) in [(1, 1), (4, 1), (6, 3), (8, 2)] {
            let mut slots: Vec<usize> =
                (0..peers).map(|w| deal_slot(w, peers, processes)).collect();
            slots.sort();
            assert_eq!(slots, (0..peers).collect::<Vec<_>>());
        }
    }
}
