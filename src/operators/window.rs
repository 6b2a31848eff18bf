//! Event-time windows: tumbling, hopping and session windows, aggregated per key.
//!
//! A window `[s, e)` fires once, when the input frontier reaches `e + lateness`; a record counts in
//! every window it belongs to that is still open *by its own stamp* (`Event::frontier < e +
//! lateness`), and goes to the late output when none is (docs/semantics.md#lateness). Tumbling
//! and hopping windows fold each record once, into a pane of `gcd(size, slide)`, and combine panes
//! when a window fires.
//!
//! The operator holds its output capability at the earliest timely time of any input it still
//! retains, and emits each window at the earliest input time of its contents (never after its
//! fire time). So a probe downstream passes a time `t` only once everything derived from input
//! sent before `t` has been emitted, and every window firing before `t` too (an unfired window
//! holds the probe at or before its fire time): sources commit their offsets behind it without
//! losing the contents of open windows, and record `t` with them so that a restarted job does not
//! emit those windows again.

use std::collections::BTreeMap;
use std::hash::Hash;
use std::rc::Rc;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use timely::ExchangeData;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use serde::de::DeserializeOwned;

use super::aggregate::Aggregate;
use super::aside::{Aside, MessageCaps};
use super::delivery::{Delivery, Unacknowledged, hold_at_least};
use super::key::GroupKey;
use super::slots::KeySlots;
use crate::failure::fail;
use crate::record::Event;
use crate::state::SectionCheckpoint;

/// How many results a firing window hands downstream at a time: a window of many keys goes out
/// in batches rather than as one vector that grows to its size.
const RESULTS_BATCH: usize = 1024;

/// How many results the operator emits in one activation. A window of more keys is emitted over
/// several, so the operators downstream take each share (and free its batches) before the next
/// is made: the allocator hands the same memory out again, instead of fresh pages for every
/// window.
const RESULTS_PER_ACTIVATION: usize = 8 * RESULTS_BATCH;

/// The shape of the windows, in milliseconds of event time. Windows are aligned to the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowSpec {
    /// Consecutive windows of `size`.
    Tumbling {
        /// Window length.
        size: u64,
    },
    /// Windows of `size` starting every `slide`.
    Hopping {
        /// Window length.
        size: u64,
        /// Distance between window starts.
        slide: u64,
    },
    /// Per key, records closer than `gap` share a window `[first, last + gap)`.
    Session {
        /// Inactivity that closes a session.
        gap: u64,
    },
}

impl WindowSpec {
    /// How many panes of `gcd(size, slide)` a window is made of (1 for tumbling and session
    /// windows).
    pub fn panes(&self) -> u64 {
        match *self {
            WindowSpec::Hopping { size, slide } => size / gcd(size, slide).max(1),
            WindowSpec::Tumbling { .. } | WindowSpec::Session { .. } => 1,
        }
    }
}

/// Which windows an operator computes, and which of them an earlier run already emitted.
pub struct Windows {
    /// Their shape.
    pub spec: WindowSpec,
    /// Allowed lateness in ms: a window fires this long after its end.
    pub lateness: u64,
    /// Windows firing before this time were emitted, complete, by an earlier run of the job (the
    /// checkpoint committed with the source offsets says so): records replayed after a restart do
    /// not count in them again, so a restart never re-emits such a window with part of its input.
    pub emitted_before: u64,
    /// How results are judged delivered: a fired window counts as done on the
    /// [`WindowStreams::fired`] stream only once [`Delivery::flushed`] has passed the time its
    /// results were emitted at, and its input as settled only once [`Delivery::acknowledged`]
    /// has passed its fire time. `None`: done once emitted, and no `settled` stream.
    pub delivery: Option<Delivery>,
    /// Takes part in the job's checkpoints as this section (see
    /// [`crate::state::Checkpointing`]): restores its share of the section's state, emits each
    /// window at its fire time or later (so everything emitted before a checkpoint's frontier
    /// comes from windows that fired before it), and hands off its open windows at each
    /// checkpoint. `None`: no checkpoints.
    pub checkpoint: Option<SectionCheckpoint>,
}

impl From<WindowSpec> for Windows {
    fn from(spec: WindowSpec) -> Self {
        Windows {
            spec,
            lateness: 0,
            emitted_before: 0,
            delivery: None,
            checkpoint: None,
        }
    }
}

/// What the window operator produces.
pub struct WindowStreams<'scope, K, O, D> {
    /// One result per key and fired window.
    pub results: StreamVec<'scope, u64, WindowResult<K, O>>,
    /// Events whose every window had closed by their stamp.
    pub late: StreamVec<'scope, u64, Event<D>>,
    /// No data: its frontier passes a time `t` once every window firing before `t` has fired and
    /// (with [`Windows::delivery`]) its results are flushed. Sources record it with their
    /// offsets as the frontier of emitted windows (see [`Windows::emitted_before`]).
    pub fired: StreamVec<'scope, u64, ()>,
    /// No data, in input times: its frontier passes a time `t` once every window with input
    /// sent before `t` has fired and every worker has seen `fired` pass it (see
    /// [`crate::operators::delivery`]). A source commits an offset once this (and the sinks)
    /// passed the time its data was sent at, and reads `fired` then: the windows whose contents
    /// it commits count as emitted.
    pub settled: StreamVec<'scope, u64, ()>,
}

/// One fired window of one key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowResult<K, O> {
    /// The group-by key.
    pub key: K,
    /// Window start, epoch ms (inclusive).
    pub start: i64,
    /// Window end, epoch ms (exclusive).
    pub end: i64,
    /// The aggregate.
    pub value: O,
}

/// Windowed aggregation of an event stream.
///
/// # Examples
///
/// Payments counted and summed per account in tumbling windows of 10 s:
///
/// ```
/// use eddy::{AggregateKind, Event, FieldAggregates, Record, Value, WindowAggregate, WindowSpec};
/// use timely::dataflow::operators::capture::Extract;
/// use timely::dataflow::operators::vec::Map;
/// use timely::dataflow::operators::{Capture, ToStream};
///
/// // (account, event time, amount)
/// let payments = [(1, 1_000, 250), (1, 4_000, 100), (2, 12_000, 75), (1, 15_000, 30)];
/// let results = timely::example(move |scope| {
///     payments
///         .map(|(account, time, amount)| Event {
///             time,
///             frontier: 0,
///             data: Record::from(vec![Value::Int(account), Value::Int(amount)]),
///         })
///         .to_stream(scope)
///         .container::<Vec<_>>()
///         .window_aggregate(
///             WindowSpec::Tumbling { size: 10_000 },
///             |payment: &Record| payment[0].clone(),
///             FieldAggregates(vec![(AggregateKind::Count, 0), (AggregateKind::Sum, 1)]),
///         )
///         .results
///         .map(|r| (r.key.to_text(), r.start, r.value.iter().map(Value::to_text).collect()))
///         .capture()
/// });
/// let mut rows: Vec<(_, _, Vec<_>)> =
///     results.extract().into_iter().flat_map(|(_, rows)| rows).collect();
/// rows.sort();
/// assert_eq!(
///     rows,
///     [
///         ("1".into(), 0, vec!["2".into(), "350".into()]),
///         ("1".into(), 10_000, vec!["1".into(), "30".into()]),
///         ("2".into(), 10_000, vec!["1".into(), "75".into()]),
///     ]
/// );
/// ```
pub trait WindowAggregate<'scope, D> {
    /// Groups events by `key`, aggregates each key's windows with `aggregate`, and emits one
    /// [`WindowResult`] per key and window once the input frontier reaches the window's end (plus
    /// the allowed lateness), at the earliest timely time of its input. Returns the results and
    /// the late events (those whose every window had closed by their stamp).
    fn window_aggregate<G, A>(
        self,
        windows: impl Into<Windows>,
        key: G,
        aggregate: A,
    ) -> WindowStreams<'scope, G::Key, A::Output, D>
    where
        G: GroupKey<D>,
        G::Key: Serialize + DeserializeOwned + Send,
        A: Aggregate<D>,
        A::Cell: Clone + Serialize + DeserializeOwned + Send,
        A::Output: 'static;
}

impl<'scope, D: ExchangeData + Clone> WindowAggregate<'scope, D>
    for StreamVec<'scope, u64, Event<D>>
{
    fn window_aggregate<G, A>(
        self,
        windows: impl Into<Windows>,
        key: G,
        aggregate: A,
    ) -> WindowStreams<'scope, G::Key, A::Output, D>
    where
        G: GroupKey<D>,
        G::Key: Serialize + DeserializeOwned + Send,
        A: Aggregate<D>,
        A::Cell: Clone + Serialize + DeserializeOwned + Send,
        A::Output: 'static,
    {
        let mut windows = windows.into();
        let spec = windows.spec;
        let delivery = windows.delivery.clone();
        let mut checkpoint = windows.checkpoint.take();
        let mut restored = checkpoint.as_ref().map(|c| {
            let entries = c
                .restore::<G::Key, KeyState<A::Cell>>(self.scope().peers())
                .unwrap_or_else(|e| fail(e));
            (c.part.checkpointing().restored_frontier(), entries)
        });
        let checkpointed = checkpoint.is_some();
        // With checkpoints, a window is emitted at its fire time or later, never before: what is
        // emitted before a checkpoint's frontier T then comes from windows fired before T.
        let emit_at = move |fire: u64, since: u64| {
            if checkpointed { fire.max(since) } else { since }
        };
        let key = Rc::new(key);
        let route = {
            let key = Rc::clone(&key);
            move |event: &Event<D>| key.hash(&event.data)
        };
        let scope = self.scope();
        let mut builder = OperatorBuilder::new(format!("Window({spec:?})"), scope);
        let activator = scope.activator_for(builder.operator_info().address);
        let mut input = builder.new_input(self, Exchange::new(route));
        let (results, results_stream) = builder.new_output();
        let (late, late_stream) = builder.new_output();
        let (_fired, fired_stream) = builder.new_output::<Vec<()>>();
        let (_settled, settled_stream) = builder.new_output::<Vec<()>>();
        let mut results = OutputBuilder::from(results);
        let mut late = OutputBuilder::from(late);

        builder.build(move |mut initial_capabilities| {
            // On the `settled` output: at the earliest input time of a window not fired, or
            // fired but not acknowledged yet.
            let mut settled_cap = initial_capabilities.pop().filter(|_| delivery.is_some());
            // On the `fired` output: a capability at the least fire time of a window that is
            // pending, or fired with results the `flushed` probe has not passed yet.
            let mut fired_cap: Option<Capability<u64>> = None;
            let initial_fired = initial_capabilities.pop();
            let initial_results = initial_capabilities.swap_remove(0);
            // Fire time → latest time its results were emitted at, awaiting `flushed`.
            let mut unflushed = BTreeMap::<u64, u64>::new();
            let mut unacknowledged = Unacknowledged::default();
            let mut state = WindowState::<G::Key, A::Cell>::new(windows, aggregate.width());
            // Fire time (window end + lateness) → earliest input time of its contents.
            let mut pending = BTreeMap::<u64, u64>::new();
            // A capability at the earliest input time of any retained content.
            let mut held: Option<Capability<u64>> = None;
            let mut late_events = Vec::new();
            let mut fired = Vec::new();
            if let Some((frontier, entries)) = restored.take() {
                // Restored contents stand for input before the checkpoint's frontier.
                state.restore(entries, frontier, |fire| {
                    pending.insert(fire, frontier);
                });
                if let Some(&fire) = pending.keys().next() {
                    held = Some(initial_results.delayed(&frontier));
                    fired_cap = initial_fired.as_ref().map(|c| c.delayed(&fire));
                }
            }
            drop((initial_results, initial_fired));
            // The input at or past a pending checkpoint's frontier, until the handoff.
            let mut aside = Aside::<Event<D>, 3>::default();
            move |frontiers| {
                let plan = checkpoint.as_mut().and_then(SectionCheckpoint::pending);
                let mut results = results.activate();
                let mut late = late.activate();
                let mut fold = |time: u64, caps: MessageCaps<'_, 3>, data: &mut Vec<Event<D>>| {
                    let mut retained = false;
                    state.insert_message(
                        data,
                        &*key,
                        time,
                        &aggregate,
                        |fire, since| {
                            let earliest = pending.entry(fire).or_insert(since);
                            *earliest = (*earliest).min(since);
                            retained = true;
                            if fired_cap.as_ref().is_none_or(|c| *c.time() > fire) {
                                fired_cap = Some(caps.delayed(fire, 2));
                            }
                        },
                        &mut late_events,
                    );
                    if retained && held.as_ref().is_none_or(|h| *h.time() > time) {
                        held = Some(caps.delayed(time, 0));
                    }
                    if !late_events.is_empty() {
                        late.session(&caps.delayed(time, 1))
                            .give_container(&mut late_events);
                    }
                };
                for (caps, mut data) in aside.take_before(plan) {
                    fold(*caps[0].time(), MessageCaps::Kept(&caps), &mut data);
                }
                input.for_each(|cap, data| {
                    let Some(&time) = cap.least() else { return };
                    if checkpoint.as_mut().is_some_and(|c| c.keeps_aside(time)) {
                        aside.keep(&cap, time, data);
                        return;
                    }
                    fold(time, MessageCaps::Input(&cap), data);
                });
                // A message may have shown a checkpoint begun since the activation began.
                let plan = checkpoint.as_mut().and_then(SectionCheckpoint::pending);
                let upto = frontiers[0].frontier().first().copied();
                let due = |fire: u64| upto.is_none_or(|f| fire <= f);
                let mut budget = RESULTS_PER_ACTIVATION;
                // Due windows in order of fire time; one that is not emitted in full within the
                // budget stays first in `pending`, and goes on in the next activation.
                while let Some((&fire, &since)) = pending.first_key_value()
                    && due(fire)
                    && plan.is_none_or(|frontier| fire < frontier)
                {
                    if budget == 0 {
                        activator.activate();
                        break;
                    }
                    let held = held.as_ref().expect("pending contents hold a capability");
                    let since = emit_at(fire, since);
                    let at = held.delayed(&since);
                    let mut session = results.session(&at);
                    let mut emitted = false;
                    let done = state.fire(fire, &aggregate, budget, |result| {
                        if fired.is_empty() {
                            // A batch handed downstream takes its buffer along: the next one
                            // starts at full size instead of doubling up to it.
                            fired.reserve(RESULTS_BATCH);
                        }
                        fired.push(result);
                        budget = budget.saturating_sub(1);
                        if fired.len() == RESULTS_BATCH {
                            session.give_container(&mut fired);
                            emitted = true;
                        }
                    });
                    if !fired.is_empty() {
                        session.give_container(&mut fired);
                        emitted = true;
                    }
                    drop(session);
                    if emitted && delivery.is_some() {
                        let emitted = unflushed.entry(fire).or_insert(since);
                        *emitted = (*emitted).max(since);
                    }
                    if !done {
                        activator.activate();
                        break;
                    }
                    pending.pop_first();
                    if delivery.is_some() {
                        unacknowledged.hold(since, fire);
                    }
                }
                // Hands off once the input before the frontier is in and every window due before
                // it is emitted; the input kept aside is folded in the next activation.
                if let Some(frontier) = plan
                    && upto.is_none_or(|f| f >= frontier)
                    && pending.keys().next().is_none_or(|&fire| fire >= frontier)
                    && let Some(c) = checkpoint.as_mut()
                {
                    c.hand_off(state.snapshot(&*key));
                    activator.activate();
                }
                if let Some(delivery) = &delivery {
                    unflushed.retain(|_, emitted| delivery.flushed.less_equal(emitted));
                    if unacknowledged.release(&delivery.acknowledged) || !unflushed.is_empty() {
                        activator.activate_after(std::time::Duration::from_millis(5));
                    }
                }
                let least_fire = pending.keys().chain(unflushed.keys()).min().copied();
                match (least_fire, fired_cap.as_mut()) {
                    (Some(fire), Some(cap)) => cap.downgrade(&fire),
                    (None, _) => fired_cap = None,
                    (Some(_), None) => unreachable!("a pending window holds the fired capability"),
                }
                // Panes and key slots stay until every due window is emitted in full.
                let unfired = pending.keys().next().copied().filter(|&fire| due(fire));
                state.release(unfired.map_or(upto, |fire| Some(fire.saturating_sub(1))));
                match pending
                    .iter()
                    .map(|(&fire, &since)| emit_at(fire, since))
                    .min()
                {
                    Some(earliest) => {
                        if let Some(h) = held.as_mut() {
                            h.downgrade(&earliest);
                        }
                    }
                    None => held = None,
                }
                let emittable = pending.values().min().copied();
                let kept_times = aside.times();
                let unsettled = unacknowledged
                    .times()
                    .chain(emittable)
                    .chain(kept_times)
                    .chain(upto);
                hold_at_least(&mut settled_cap, unsettled);
            }
        });
        WindowStreams {
            results: results_stream,
            late: late_stream,
            fired: fired_stream,
            settled: settled_stream,
        }
    }
}

/// One key's open windows as a checkpoint stores them: its states per pane, per window of
/// records late for some of its panes, and per session, each as the aggregate's cells.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound(serialize = "C: Serialize", deserialize = "C: DeserializeOwned"))]
pub struct KeyState<C> {
    /// (pane start, cells).
    panes: Vec<(i64, Vec<C>)>,
    /// (window start, cells).
    partial: Vec<(i64, Vec<C>)>,
    /// (session start, session end, cells).
    sessions: Vec<(i64, i64, Vec<C>)>,
}

impl<C> Default for KeyState<C> {
    fn default() -> Self {
        KeyState {
            panes: Vec::new(),
            partial: Vec::new(),
            sessions: Vec::new(),
        }
    }
}

/// The keyed window contents of one operator instance.
enum WindowState<K, C> {
    Panes(Box<Panes<K, C>>),
    Sessions(Sessions<K, C>),
}

impl<K: Hash + Eq + Clone, C: Default> WindowState<K, C> {
    /// Window state for `windows`, of aggregate states `width` cells wide.
    fn new(windows: Windows, width: usize) -> Self {
        let lateness = windows.lateness as i64;
        let emitted_before = windows.emitted_before as i64;
        match windows.spec {
            WindowSpec::Tumbling { size } => Self::Panes(Box::new(Panes::new(
                size,
                size,
                lateness,
                emitted_before,
                width,
            ))),
            WindowSpec::Hopping { size, slide } => Self::Panes(Box::new(Panes::new(
                size,
                slide,
                lateness,
                emitted_before,
                width,
            ))),
            WindowSpec::Session { gap } => Self::Sessions(Sessions {
                gap: gap as i64,
                lateness,
                emitted_before,
                by_key: FxHashMap::default(),
                by_fire: BTreeMap::new(),
            }),
        }
    }

    /// Folds the `events` of one input message of timely time `time` into their open windows,
    /// calling `register(fire, since)` for the windows whose contents they join (at least once
    /// per message): `since` is the earliest input time of those contents. Moves the events that
    /// are late for all their windows to `late`.
    fn insert_message<D, A: Aggregate<D, Cell = C>>(
        &mut self,
        events: &mut Vec<Event<D>>,
        key: &impl GroupKey<D, Key = K>,
        time: u64,
        aggregate: &A,
        mut register: impl FnMut(u64, u64),
        late: &mut Vec<Event<D>>,
    ) {
        match self {
            Self::Panes(panes) => {
                panes.insert_message(events, key, time, aggregate, register, late)
            }
            Self::Sessions(sessions) => {
                for event in events.drain(..) {
                    if !sessions.insert(
                        key.key(&event.data),
                        &event,
                        time,
                        aggregate,
                        &mut register,
                    ) {
                        late.push(event);
                    }
                }
            }
        }
    }

    /// Emits the results of the windows whose fire time is `fire`, about `budget` of them (a
    /// call for the same `fire` goes on where the last one stopped); true once all are emitted.
    /// Sessions emit all at once: a key's sessions firing together are few.
    fn fire<D, A: Aggregate<D, Cell = C>>(
        &mut self,
        fire: u64,
        aggregate: &A,
        budget: usize,
        mut emit: impl FnMut(WindowResult<K, A::Output>),
    ) -> bool {
        match self {
            Self::Panes(panes) => panes.fire(fire, aggregate, budget, emit),
            Self::Sessions(sessions) => {
                sessions.fire(fire, aggregate, &mut emit);
                true
            }
        }
    }

    /// Frees state that no window open at frontier `upto` (or none, at the end) needs.
    fn release(&mut self, upto: Option<u64>) {
        if let Self::Panes(panes) = self {
            panes.release(upto);
        }
    }

    /// Every key's open windows, as (key hash, key, state), for a checkpoint. Called between
    /// windows, never while one is being emitted.
    fn snapshot<D>(&self, key: &impl GroupKey<D, Key = K>) -> Vec<(u64, K, KeyState<C>)>
    where
        C: Clone,
    {
        match self {
            Self::Panes(panes) => panes.snapshot(),
            Self::Sessions(sessions) => sessions
                .by_key
                .iter()
                .map(|(k, kept)| {
                    let sessions = kept
                        .iter()
                        .map(|s| (s.start, s.end, s.state.to_vec()))
                        .collect();
                    let state = KeyState {
                        sessions,
                        ..KeyState::default()
                    };
                    (key.key_hash(k), k.clone(), state)
                })
                .collect(),
        }
    }

    /// Takes back the open windows of a checkpoint at `frontier`, calling `register(fire)` for
    /// each window they hold that fires at or after it (the others were emitted before the
    /// checkpoint). Ends the worker when a state's width is not the aggregate's: the checkpoint
    /// was taken with other aggregates.
    fn restore(
        &mut self,
        entries: Vec<(u64, K, KeyState<C>)>,
        frontier: u64,
        mut register: impl FnMut(u64),
    ) where
        C: Clone,
    {
        match self {
            Self::Panes(panes) => panes.restore(entries, frontier, register),
            Self::Sessions(sessions) => {
                for (_, k, state) in entries {
                    let kept = sessions.by_key.entry(k.clone()).or_default();
                    for (start, end, cells) in state.sessions {
                        let fire = (end + sessions.lateness) as u64;
                        kept.push(Session {
                            start,
                            end,
                            since: frontier,
                            state: cells.into_boxed_slice(),
                        });
                        sessions.by_fire.entry(fire).or_default().push(k.clone());
                        register(fire);
                    }
                }
            }
        }
    }
}

/// How many events ahead of the one it folds the window operator prefetches a state.
const PREFETCH_AHEAD: usize = 16;

/// How many slots' states a pane keeps in one chunk.
const CHUNK_SLOTS: usize = 1024;

/// The per-key states of one pane, or of one window's records that were late for some of its
/// panes, by key slot (see [`KeySlots`]): each state is `width` cells of the aggregate, side by
/// side.
///
/// The states are kept in chunks of [`CHUNK_SLOTS`] that a pane adds as its slots reach them and
/// keeps when it is reused: a pane never moves the states it holds (a vector growing by doubling
/// would copy them and have the kernel zero twice the memory it ends up with), and a reused pane
/// touches no fresh memory until the keys outgrow it. A slot's cells stay as they are when its
/// state is taken out, until the slot gets a state again.
struct Pane<C> {
    start: i64,
    width: usize,
    chunks: Vec<Chunk<C>>,
    /// The slots with a state, in the order they got it.
    filled: Vec<u32>,
}

/// The cells of [`CHUNK_SLOTS`] states, and which of them hold one.
struct Chunk<C> {
    cells: Box<[C]>,
    present: [u64; CHUNK_SLOTS / 64],
}

impl<C: Default> Pane<C> {
    /// An empty pane of states of `width` cells starting at `start`: one of the `spare` ones if
    /// there is one.
    fn reused(spare: &mut Vec<Pane<C>>, start: i64, width: usize) -> Self {
        let mut pane = spare.pop().unwrap_or_else(|| Pane {
            start,
            width,
            chunks: Vec::new(),
            filled: Vec::new(),
        });
        pane.start = start;
        pane
    }

    /// The chunk of `slot`, and its place there.
    #[inline]
    fn place(slot: usize) -> (usize, usize) {
        (slot / CHUNK_SLOTS, slot % CHUNK_SLOTS)
    }

    /// The cells of the state at `at` in a chunk, for states `width` cells wide.
    #[inline]
    fn cells(width: usize, at: usize) -> std::ops::Range<usize> {
        at * width..(at + 1) * width
    }

    /// The state of `slot`, if it has one.
    #[inline]
    fn get(&self, slot: usize) -> Option<&[C]> {
        let (chunk, at) = Self::place(slot);
        let chunk = self.chunks.get(chunk)?;
        let present = chunk.present[at / 64] & (1 << (at % 64)) != 0;
        present.then(|| &chunk.cells[Self::cells(self.width, at)])
    }

    /// The state of `slot`, made empty by `init` if it has none.
    #[inline]
    fn state(&mut self, slot: usize, init: impl FnOnce(&mut [C])) -> &mut [C] {
        let (chunk, at) = Self::place(slot);
        while chunk >= self.chunks.len() {
            self.chunks.push(Chunk {
                cells: std::iter::repeat_with(C::default)
                    .take(CHUNK_SLOTS * self.width)
                    .collect(),
                present: [0; CHUNK_SLOTS / 64],
            });
        }
        let cells = Self::cells(self.width, at);
        let chunk = &mut self.chunks[chunk];
        let state = &mut chunk.cells[cells];
        if chunk.present[at / 64] & (1 << (at % 64)) == 0 {
            chunk.present[at / 64] |= 1 << (at % 64);
            self.filled.push(slot as u32);
            init(state);
        }
        state
    }

    /// Asks the CPU to bring the state of `slot` into cache.
    #[inline]
    fn prefetch(&self, slot: usize) {
        let (chunk, at) = Self::place(slot);
        if let Some(state) = self
            .chunks
            .get(chunk)
            .and_then(|chunk| chunk.cells.get(Self::cells(self.width, at)))
        {
            super::prefetch(state);
        }
    }

    /// Orders the filled slots by number, so that a pass over them reads the state chunks (and
    /// the keys of the slots) front to back rather than at random.
    fn sort(&mut self) {
        self.filled.sort_unstable();
    }

    /// The states of the first `count` filled slots (in the order of `filled`), which no longer
    /// count as filled; the pane is empty once it has no filled slot left, and is then
    /// [`Pane::clear`]ed before it takes states again.
    fn drain(&mut self, count: usize) -> impl Iterator<Item = (usize, &[C])> + '_ {
        let count = count.min(self.filled.len());
        let (chunks, width) = (&self.chunks, self.width);
        self.filled.drain(..count).map(move |slot| {
            let (chunk, at) = Self::place(slot as usize);
            (slot as usize, &chunks[chunk].cells[Self::cells(width, at)])
        })
    }

    /// Takes every state out.
    fn clear(&mut self) {
        self.filled.clear();
        for chunk in &mut self.chunks {
            chunk.present = [0; CHUNK_SLOTS / 64];
        }
    }
}

/// Tumbling and hopping windows, folded per pane of `gcd(size, slide)`.
struct Panes<K, C> {
    size: i64,
    slide: i64,
    pane: i64,
    lateness: i64,
    /// Windows firing before this were emitted by an earlier run.
    emitted_before: i64,
    /// How many cells of the aggregate a state takes.
    width: usize,
    /// The slot of each key with state in some pane, kept until its last pane is released.
    slots: KeySlots<K>,
    /// The first open window start when slots were last released.
    slots_released: i64,
    /// The live panes, ordered by start; only a few are live at once.
    panes: Vec<Pane<C>>,
    /// Per-window state of records that were late for some of their windows but not all.
    partial: BTreeMap<i64, Pane<C>>,
    /// The window whose results are being emitted: its states, merged, sorted, and starting
    /// where it starts.
    firing: Option<Pane<C>>,
    /// The (first open, last) window starts whose fire times were registered for this message.
    registered: Option<(i64, i64)>,
    /// Emptied panes kept for reuse.
    spare: Vec<Pane<C>>,
    /// The hashes of the keys and their slots of the message being folded (kept for their
    /// allocations).
    message_hashes: Vec<u64>,
    message_slots: Vec<usize>,
}

/// How many emptied panes a window operator keeps for reuse.
const SPARE_PANES: usize = 8;

fn gcd<T: Copy + PartialEq + Default + std::ops::Rem<Output = T>>(a: T, b: T) -> T {
    if b == T::default() { a } else { gcd(b, a % b) }
}

impl<K: Hash + Eq + Clone, C: Default> Panes<K, C> {
    fn new(size: u64, slide: u64, lateness: i64, emitted_before: i64, width: usize) -> Self {
        let (size, slide) = (size as i64, slide as i64);
        Panes {
            size,
            slide,
            pane: gcd(size, slide),
            lateness,
            emitted_before,
            width,
            slots: KeySlots::default(),
            slots_released: i64::MIN,
            panes: Vec::new(),
            partial: BTreeMap::new(),
            firing: None,
            registered: None,
            spare: Vec::new(),
            message_hashes: Vec::new(),
            message_slots: Vec::new(),
        }
    }

    fn fire_time(&self, start: i64) -> u64 {
        (start + self.size + self.lateness) as u64
    }

    fn pane_start(&self, time: u64) -> i64 {
        let t = time as i64;
        t - t.rem_euclid(self.pane)
    }

    /// Folds a message in passes: the hashes of the keys; each key's slot, while the CPU
    /// fetches the index bucket of a key a few events ahead, and the slot's key of one half as
    /// far ahead (a key is made only for a new slot); then each event, while it fetches the
    /// state of one a few events ahead.
    fn insert_message<D, A: Aggregate<D, Cell = C>>(
        &mut self,
        events: &mut Vec<Event<D>>,
        key: &impl GroupKey<D, Key = K>,
        time: u64,
        aggregate: &A,
        mut register: impl FnMut(u64, u64),
        late: &mut Vec<Event<D>>,
    ) {
        self.registered = None;
        let mut hashes = std::mem::take(&mut self.message_hashes);
        let mut slots = std::mem::take(&mut self.message_slots);
        hashes.extend(events.iter().map(|event| key.hash(&event.data)));
        for (at, event) in events.iter().enumerate() {
            if let Some(&ahead) = hashes.get(at + PREFETCH_AHEAD) {
                self.slots.prefetch(ahead);
            }
            if let Some(&ahead) = hashes.get(at + PREFETCH_AHEAD / 2) {
                self.slots.prefetch_key(ahead);
            }
            let until = self.pane_start(event.time) + self.pane;
            let datum = &event.data;
            slots.push(self.slots.slot(
                hashes[at],
                until,
                |kept| key.matches(datum, kept),
                || key.key(datum),
            ));
        }
        let mut late_at = Vec::new();
        for (at, (event, &slot)) in events.iter().zip(&slots).enumerate() {
            if let (Some(ahead), Some(&slot)) = (
                events.get(at + PREFETCH_AHEAD),
                slots.get(at + PREFETCH_AHEAD),
            ) {
                let start = self.pane_start(ahead.time);
                if let Some(pane) = self.panes.iter().find(|p| p.start == start) {
                    pane.prefetch(slot);
                }
            }
            if !self.insert(slot, event, time, aggregate, &mut register) {
                late_at.push(at);
            }
        }
        slots.clear();
        hashes.clear();
        (self.message_hashes, self.message_slots) = (hashes, slots);
        if late_at.is_empty() {
            events.clear();
        } else {
            let mut late_at = late_at.into_iter().peekable();
            for (at, event) in events.drain(..).enumerate() {
                if late_at.next_if_eq(&at).is_some() {
                    late.push(event);
                }
            }
        }
    }

    /// Folds one event, whose key has `slot`; returns false when it is late for all its windows.
    #[inline]
    fn insert<D, A: Aggregate<D, Cell = C>>(
        &mut self,
        slot: usize,
        event: &Event<D>,
        time: u64,
        aggregate: &A,
        mut register: impl FnMut(u64, u64),
    ) -> bool {
        let t = event.time as i64;
        let stamp = event.frontier as i64;
        let last = t - t.rem_euclid(self.slide);
        let mut oldest = last;
        while oldest - self.slide > t - self.size {
            oldest -= self.slide;
        }
        // The oldest window still open for this record: its fire time must exceed the stamp.
        let mut first_open = oldest;
        while first_open <= last && self.fire_time(first_open) as i64 <= stamp {
            first_open += self.slide;
        }
        if first_open > last {
            return false;
        }
        // Windows an earlier run emitted take nothing more (the record is no longer late for
        // them: it was counted there before the restart).
        while first_open <= last && (self.fire_time(first_open) as i64) < self.emitted_before {
            first_open += self.slide;
        }
        if first_open > last {
            return true;
        }
        if self.registered != Some((first_open, last)) {
            for start in (first_open..=last).step_by(self.slide as usize) {
                register(self.fire_time(start), time);
            }
            self.registered = Some((first_open, last));
        }
        if first_open != oldest {
            // Late for its oldest windows only: fold it into the open ones directly.
            for start in (first_open..=last).step_by(self.slide as usize) {
                let spare = &mut self.spare;
                let states = self
                    .partial
                    .entry(start)
                    .or_insert_with(|| Pane::reused(spare, start, self.width));
                aggregate.add(
                    states.state(slot, |state| aggregate.init(state)),
                    &event.data,
                );
            }
            return true;
        }
        let start = self.pane_start(event.time);
        let at = match self.panes.iter().rposition(|p| p.start <= start) {
            Some(i) if self.panes[i].start == start => i,
            found => {
                let at = found.map_or(0, |i| i + 1);
                let pane = Pane::reused(&mut self.spare, start, self.width);
                self.panes.insert(at, pane);
                at
            }
        };
        let state = self.panes[at].state(slot, |state| aggregate.init(state));
        aggregate.add(state, &event.data);
        true
    }

    /// Emits up to `budget` results of the window firing at `fire`, merging its panes on the
    /// first call; true once all are emitted.
    fn fire<D, A: Aggregate<D, Cell = C>>(
        &mut self,
        fire: u64,
        aggregate: &A,
        budget: usize,
        mut emit: impl FnMut(WindowResult<K, A::Output>),
    ) -> bool {
        let end = fire as i64 - self.lateness;
        let start = end - self.size;
        let merged = match &mut self.firing {
            Some(merged) => merged,
            None => {
                let merged = self.merge(start, end, aggregate);
                self.firing.insert(merged)
            }
        };
        debug_assert_eq!(merged.start, start, "one window is emitted at a time");
        for (slot, state) in merged.drain(budget) {
            emit(WindowResult {
                key: self.slots.key(slot).clone(),
                start,
                end,
                value: aggregate.finish(state),
            });
        }
        if !merged.filled.is_empty() {
            return false;
        }
        if let Some(merged) = self.firing.take() {
            self.recycle(merged);
        }
        true
    }

    /// The states of the window `[start, end)`, merged from its panes into one, sorted by slot.
    fn merge<D, A: Aggregate<D, Cell = C>>(
        &mut self,
        start: i64,
        end: i64,
        aggregate: &A,
    ) -> Pane<C> {
        self.registered = None;
        // The panes before `start + slide` belong to no later window: unless records late for
        // some panes started the window, the first becomes the base of the merge, taken whole
        // (for tumbling windows, it is the whole window).
        let oldest = start..start + self.slide;
        let mut merged = match self.partial.remove(&start) {
            Some(partial) => partial,
            None => match self.panes.iter().position(|p| oldest.contains(&p.start)) {
                Some(i) => self.panes.remove(i),
                None => Pane::reused(&mut self.spare, start, self.width),
            },
        };
        for pane in self
            .panes
            .iter_mut()
            .filter(|p| (start..end).contains(&p.start))
        {
            pane.sort();
            for &slot in &pane.filled {
                let slot = slot as usize;
                let from = pane.get(slot).expect("a filled slot has a state");
                aggregate.merge(merged.state(slot, |state| aggregate.init(state)), from);
            }
        }
        merged.sort();
        merged.start = start;
        merged
    }

    /// Every key's panes and partial windows, as (key hash, key, state).
    fn snapshot(&self) -> Vec<(u64, K, KeyState<C>)>
    where
        C: Clone,
    {
        let mut by_slot = FxHashMap::<usize, KeyState<C>>::default();
        let panes = self.panes.iter().map(|pane| (pane, false));
        let partial = self.partial.values().map(|pane| (pane, true));
        for (pane, is_partial) in panes.chain(partial) {
            for &slot in &pane.filled {
                let slot = slot as usize;
                let cells = pane.get(slot).expect("a filled slot has a state").to_vec();
                let state = by_slot.entry(slot).or_default();
                match is_partial {
                    false => state.panes.push((pane.start, cells)),
                    true => state.partial.push((pane.start, cells)),
                }
            }
        }
        by_slot
            .into_iter()
            .map(|(slot, state)| (self.slots.hash(slot), self.slots.key(slot).clone(), state))
            .collect()
    }

    /// Takes back a checkpoint's panes and partial windows (see [`WindowState::restore`]).
    fn restore(
        &mut self,
        entries: Vec<(u64, K, KeyState<C>)>,
        frontier: u64,
        mut register: impl FnMut(u64),
    ) where
        C: Clone,
    {
        let mut starts = std::collections::BTreeSet::new();
        for (hash, key, state) in entries {
            let until = state
                .panes
                .iter()
                .map(|(start, _)| start + self.pane)
                .chain(state.partial.iter().map(|(start, _)| start + self.size))
                .max()
                .unwrap_or(i64::MIN);
            let slot = self
                .slots
                .slot(hash, until, |kept| *kept == key, || key.clone());
            for (start, cells) in state.panes {
                let at = match self.panes.iter().rposition(|p| p.start <= start) {
                    Some(i) if self.panes[i].start == start => i,
                    found => {
                        let at = found.map_or(0, |i| i + 1);
                        let pane = Pane::reused(&mut self.spare, start, self.width);
                        self.panes.insert(at, pane);
                        at
                    }
                };
                self.restore_cells(slot, &cells, |panes| &mut panes.panes[at]);
                starts.insert(start);
            }
            for (start, cells) in state.partial {
                let spare = &mut self.spare;
                let width = self.width;
                self.partial
                    .entry(start)
                    .or_insert_with(|| Pane::reused(spare, start, width));
                self.restore_cells(slot, &cells, |panes| {
                    panes.partial.get_mut(&start).expect("inserted above")
                });
                if self.fire_time(start) >= frontier {
                    register(self.fire_time(start));
                }
            }
        }
        // Every window holding a restored pane that had not fired by the frontier.
        for pane in starts {
            let last = pane - pane.rem_euclid(self.slide);
            let mut start = last;
            while start > pane - self.size {
                if self.fire_time(start) >= frontier {
                    register(self.fire_time(start));
                }
                start -= self.slide;
            }
        }
    }

    /// Copies a restored state's cells into `slot` of the pane `pane` picks.
    fn restore_cells(
        &mut self,
        slot: usize,
        cells: &[C],
        pane: impl FnOnce(&mut Self) -> &mut Pane<C>,
    ) where
        C: Clone,
    {
        if cells.len() != self.width {
            fail(format!(
                "a checkpoint's window state is {} cells wide where the job's aggregates take \
                 {}: the checkpoint was taken with other aggregates",
                cells.len(),
                self.width
            ));
        }
        pane(self).state(slot, |_| {}).clone_from_slice(cells);
    }

    /// Keeps an emptied pane, with its vectors, for the next one: panes come and go at a steady
    /// pace, and reusing their vectors spares the allocator and the kernel's page zeroing.
    fn recycle(&mut self, mut pane: Pane<C>) {
        if self.spare.len() < SPARE_PANES {
            pane.clear();
            self.spare.push(pane);
        }
    }

    fn release(&mut self, upto: Option<u64>) {
        let Some(upto) = upto else {
            self.panes.clear();
            self.partial.clear();
            self.slots.clear();
            return;
        };
        // Windows whose fire time is at most `upto` have fired; the first still open starts at
        // the least multiple of the slide with `start + size + lateness > upto`.
        let bound = upto as i64 - self.size - self.lateness + 1;
        let first_open = bound + (self.slide - bound.rem_euclid(self.slide)) % self.slide;
        while let Some(i) = self
            .panes
            .iter()
            .position(|p| p.start + self.pane <= first_open)
        {
            let pane = self.panes.remove(i);
            self.recycle(pane);
        }
        self.partial.retain(|start, _| *start >= first_open);
        if first_open > self.slots_released {
            // A key's slot lives until the end of the latest pane it joined, which covers every
            // window it joined late, too; every window before `first_open` has fired.
            self.slots.release(first_open);
            self.slots_released = first_open;
        }
    }
}

/// Session windows: per key, the open sessions, and which keys have a session ending at a time.
struct Sessions<K, C> {
    gap: i64,
    lateness: i64,
    /// Sessions firing before this were emitted by an earlier run.
    emitted_before: i64,
    by_key: FxHashMap<K, Vec<Session<C>>>,
    /// Fire time → keys with a session that may end then (entries go stale as sessions grow).
    by_fire: BTreeMap<u64, Vec<K>>,
}

struct Session<C> {
    start: i64,
    end: i64,
    /// The earliest input time of its contents.
    since: u64,
    state: Box<[C]>,
}

impl<K: Hash + Eq + Clone, C: Default> Sessions<K, C> {
    fn insert<D, A: Aggregate<D, Cell = C>>(
        &mut self,
        key: K,
        event: &Event<D>,
        time: u64,
        aggregate: &A,
        mut register: impl FnMut(u64, u64),
    ) -> bool {
        let t = event.time as i64;
        let stamp = event.frontier as i64;
        let lateness = self.lateness;
        let sessions = self.by_key.entry(key.clone()).or_default();
        let open = |s: &Session<C>| s.end + lateness > stamp;
        // Flink's rule: windows that touch merge; merging may reach further sessions.
        let (mut start, mut end) = (t, t + self.gap);
        loop {
            let mut grew = false;
            for s in sessions.iter().filter(|s| open(s)) {
                if s.start <= end && s.end >= start && (s.start < start || s.end > end) {
                    start = start.min(s.start);
                    end = end.max(s.end);
                    grew = true;
                }
            }
            if !grew {
                break;
            }
        }
        let late = end + lateness <= stamp;
        if late || end + lateness < self.emitted_before {
            if sessions.is_empty() {
                self.by_key.remove(&key);
            }
            return !late;
        }
        let mut state: Box<[C]> = std::iter::repeat_with(C::default)
            .take(aggregate.width())
            .collect();
        aggregate.init(&mut state);
        let mut since = time;
        let mut previous_end = None;
        sessions.retain_mut(|s| {
            let merge = open(s) && s.start <= end && s.end >= start;
            if merge {
                aggregate.merge(&mut state, &s.state);
                since = since.min(s.since);
                previous_end = previous_end.max(Some(s.end));
            }
            !merge
        });
        aggregate.add(&mut state, &event.data);
        sessions.push(Session {
            start,
            end,
            since,
            state,
        });
        let fire = (end + lateness) as u64;
        register(fire, since);
        if previous_end != Some(end) {
            self.by_fire.entry(fire).or_default().push(key);
        }
        true
    }

    fn fire<D, A: Aggregate<D, Cell = C>>(
        &mut self,
        fire: u64,
        aggregate: &A,
        mut emit: impl FnMut(WindowResult<K, A::Output>),
    ) {
        let lateness = self.lateness;
        for key in self.by_fire.remove(&fire).unwrap_or_default() {
            let Some(sessions) = self.by_key.get_mut(&key) else {
                continue;
            };
            sessions.retain(|s| {
                let due = (s.end + lateness) as u64 <= fire;
                if due {
                    emit(WindowResult {
                        key: key.clone(),
                        start: s.start,
                        end: s.end,
                        value: aggregate.finish(&s.state),
                    });
                }
                !due
            });
            if sessions.is_empty() {
                self.by_key.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::aggregate::{AggregateKind, FieldAggregates};
    use crate::record::{Key, Record, Value};

    /// Keys that come and go hold no slot once their windows have fired.
    #[test]
    fn keys_that_are_gone_give_up_their_slots() {
        let aggregate = FieldAggregates(vec![(AggregateKind::Count, 0)]);
        let key = |record: &Record| -> Key { std::iter::once(record[0].clone()).collect() };
        let mut panes = Panes::new(1_000, 1_000, 0, 0, aggregate.width());
        let (mut late, mut results) = (Vec::new(), Vec::new());
        for second in 0..50u64 {
            // Each second, 100 keys that were never seen before.
            let at = second * 1_000;
            let mut events: Vec<Event<Record>> = (0..100)
                .map(|i| Event {
                    time: at + i,
                    frontier: at,
                    data: vec![Value::Int((at + i) as i64)].into(),
                })
                .collect();
            panes.insert_message(&mut events, &key, at, &aggregate, |_, _| {}, &mut late);
            let done = panes.fire(at, &aggregate, usize::MAX, |result| results.push(result));
            assert!(done);
            panes.release(Some(at));
            assert_eq!(panes.slots.live(), 100, "second {second}");
        }
        assert!(late.is_empty());
        assert_eq!(results.len(), 49 * 100);
        assert!(results.iter().all(|r| r.value[..] == [Value::Int(1)]));
    }
}
