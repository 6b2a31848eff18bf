//! Keyed patterns in event time: per-key state machines that see each key's events in event-time
//! order, whatever order they arrived in.
//!
//! The operator buffers each on-time event until the input frontier passes its event time, then
//! feeds every key its events in order of event time, all events of one key and one millisecond
//! together (simultaneous, in a deterministic order). A [`Pattern`] decides what a key keeps and
//! when it matches. So matches depend only on which events are on time, never on batching,
//! arrival order within the allowed out-of-orderness, or the number of workers. An event already
//! behind its partition's watermark when it arrived (`Event::time < Event::frontier`, see
//! docs/semantics.md#lateness) goes to the late output and into no pattern.
//!
//! Like the window operator, it holds its output capability at the earliest timely time of any
//! input a key's state may still need (events within the pattern's horizon of the frontier), and
//! emits matches at that time: a probe downstream passes `t` only once every match derived from
//! input sent before `t` is out, so sources commit offsets behind it and a restart replays enough
//! history to rebuild the states. Its `fired` output says up to which event time matches are
//! emitted and flushed; a restarted job passes that back as [`Detection::emitted_before`] and does
//! not emit those matches again.

use std::collections::{BTreeMap, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::rc::Rc;
use std::time::Duration;

use rustc_hash::{FxBuildHasher, FxHashMap};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use timely::ExchangeData;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use super::aside::{Aside, MessageCaps};
use super::delivery::{Delivery, Unacknowledged, hold_at_least};
use crate::failure::fail;
use crate::record::Event;
use crate::state::{Entries, SectionCheckpoint};

/// Per-key logic over a key's events in event-time order.
pub trait Pattern<D>: 'static {
    /// What the pattern keeps per key; a checkpoint stores it.
    type State: Default + Clone + Serialize + DeserializeOwned + Send + 'static;
    /// What it reports.
    type Match: 'static;

    /// Feeds `events`: all of one key's on-time events at event time `time` (simultaneous), in
    /// increasing `time` from call to call. Matches at `time` go to `emit`.
    fn advance(
        &self,
        state: &mut Self::State,
        time: u64,
        events: &[D],
        emit: &mut impl FnMut(Self::Match),
    );

    /// How far back, in milliseconds of event time, a key's state reaches: events older than the
    /// newest by more than this affect no later match.
    fn horizon(&self) -> u64;

    /// Whether a key's state can be dropped once every event before `frontier` has been fed.
    fn expired(&self, state: &Self::State, frontier: u64) -> bool;
}

/// An optional pattern: `None` never matches.
impl<D, P: Pattern<D>> Pattern<D> for Option<P> {
    type State = P::State;
    type Match = P::Match;

    fn advance(
        &self,
        state: &mut P::State,
        time: u64,
        events: &[D],
        emit: &mut impl FnMut(P::Match),
    ) {
        if let Some(pattern) = self {
            pattern.advance(state, time, events, emit);
        }
    }

    fn horizon(&self) -> u64 {
        self.as_ref().map_or(0, P::horizon)
    }

    fn expired(&self, state: &P::State, frontier: u64) -> bool {
        self.as_ref().is_none_or(|p| p.expired(state, frontier))
    }
}

/// Several patterns with one kind of match, run side by side on the same events.
macro_rules! pattern_tuple {
    ($($p:ident $i:tt),+) => {
        impl<D, M: 'static, $($p: Pattern<D, Match = M>),+> Pattern<D> for ($($p,)+) {
            type State = ($($p::State,)+);
            type Match = M;

            fn advance(&self, state: &mut Self::State, time: u64, events: &[D], emit: &mut impl FnMut(M)) {
                $(self.$i.advance(&mut state.$i, time, events, emit);)+
            }

            fn horizon(&self) -> u64 {
                0u64 $(.max(self.$i.horizon()))+
            }

            fn expired(&self, state: &Self::State, frontier: u64) -> bool {
                true $(&& self.$i.expired(&state.$i, frontier))+
            }
        }
    };
}

pattern_tuple!(A 0, B 1);
pattern_tuple!(A 0, B 1, C 2);
pattern_tuple!(A 0, B 1, C 2, E 3);
pattern_tuple!(A 0, B 1, C 2, E 3, F 4);

/// A pattern whose matches are merged per incident: after a match at `t`, further matches before
/// `t + period` belong to the same incident and are not reported.
#[derive(Clone, Debug)]
pub struct Suppressed<P> {
    /// The pattern.
    pub pattern: P,
    /// How long after a reported match further matches are merged into it (ms).
    pub period: u64,
}

impl<D, P: Pattern<D>> Pattern<D> for Suppressed<P> {
    /// The pattern's state and the event time before which matches are merged into the last
    /// reported one (0 until one is reported): a plain number keeps per-key state small.
    type State = (P::State, u64);
    type Match = P::Match;

    fn advance(
        &self,
        (state, quiet_until): &mut Self::State,
        time: u64,
        events: &[D],
        emit: &mut impl FnMut(P::Match),
    ) {
        let period = self.period;
        self.pattern.advance(state, time, events, &mut |m| {
            if time >= *quiet_until {
                *quiet_until = time.saturating_add(period);
                emit(m);
            }
        });
    }

    /// Rebuilding the time of the last report needs the events that led to it.
    fn horizon(&self) -> u64 {
        self.pattern.horizon().saturating_add(self.period)
    }

    fn expired(&self, (state, quiet_until): &Self::State, frontier: u64) -> bool {
        self.pattern.expired(state, frontier) && *quiet_until <= frontier
    }
}

/// What the pattern operator does with an event that is behind its partition's watermark.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Late {
    /// Sends it to the late output: it enters no pattern (results stay deterministic).
    #[default]
    Output,
    /// Feeds it to its key's pattern at the earliest event time not yet fed (or its own, if
    /// later): it is processed out of order, after what was already fed, but processed.
    Feed,
}

/// Which matches an operator emits, what it does with late events, and the checkpoints it takes
/// part in.
#[derive(Default)]
pub struct Detection {
    /// Matches before this event time were emitted by an earlier run of the job (the checkpoint
    /// committed with the source offsets says so): a restart replays their events to rebuild
    /// state, but does not emit them again.
    pub emitted_before: u64,
    /// How matches are judged delivered: they count as done on the [`PatternStreams::fired`]
    /// stream once [`Delivery::flushed`] has passed the time they were emitted at, and events as
    /// settled once they matter to no future match and [`Delivery::acknowledged`] has passed
    /// the event times they could still have mattered to. `None`: done once emitted, and no
    /// `settled` stream.
    pub delivery: Option<Delivery>,
    /// What to do with late events.
    pub late: Late,
    /// Takes part in the job's checkpoints as this section (see
    /// [`crate::state::SectionCheckpoint`]): restores its share of the section's per-key states
    /// and waiting events, emits each match at its event time or later (so what is emitted
    /// before a checkpoint's frontier T comes from events before T), and at each checkpoint
    /// hands off every key's state and waiting events once it has fed every event before T.
    /// `None`: no checkpoints.
    pub checkpoint: Option<SectionCheckpoint>,
}

/// One match of one key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detected<K, M> {
    /// The key.
    pub key: K,
    /// Event time of the match (of the event that completed it), epoch ms.
    pub time: u64,
    /// What the pattern reported.
    pub value: M,
}

/// What the pattern operator produces.
pub struct PatternStreams<'scope, K, M, D> {
    /// The matches.
    pub matches: StreamVec<'scope, u64, Detected<K, M>>,
    /// Events that were behind their partition's watermark on arrival (with [`Late::Output`]).
    pub late: StreamVec<'scope, u64, Event<D>>,
    /// No data: its frontier passes a time `t` once every match before event time `t` has been
    /// emitted and (with [`Detection::delivery`]) flushed.
    pub fired: StreamVec<'scope, u64, ()>,
    /// No data, in input times: its frontier passes a time `t` once no event sent before `t`
    /// matters to a future match and every worker has seen `fired` pass the matches it could
    /// have been part of (see [`crate::operators::window::WindowStreams::settled`]).
    pub settled: StreamVec<'scope, u64, ()>,
}

/// Keyed pattern detection over an event stream.
///
/// # Examples
///
/// A pattern that reports a key's third event, run over two keys whose events arrive out of
/// order: each key's events are fed in event-time order.
///
/// ```
/// use eddy::Event;
/// use eddy::operators::pattern::{DetectPattern, Detection, Pattern};
/// use timely::dataflow::operators::capture::Extract;
/// use timely::dataflow::operators::vec::Map;
/// use timely::dataflow::operators::{Capture, ToStream};
///
/// struct Third;
///
/// impl Pattern<(char, u64)> for Third {
///     type State = usize;
///     type Match = u64;
///     fn advance(&self, seen: &mut usize, time: u64, events: &[(char, u64)], emit: &mut impl FnMut(u64)) {
///         for _ in events {
///             *seen += 1;
///             if *seen == 3 {
///                 emit(time);
///             }
///         }
///     }
///     // Every event counts, however old.
///     fn horizon(&self) -> u64 {
///         u64::MAX
///     }
///     fn expired(&self, _: &usize, _: u64) -> bool {
///         false
///     }
/// }
///
/// let events = [('a', 30), ('b', 10), ('a', 10), ('a', 20), ('b', 20)];
/// let matches = timely::example(move |scope| {
///     events
///         .map(|(key, time)| Event { time, frontier: 0, data: (key, time) })
///         .to_stream(scope)
///         .container::<Vec<_>>()
///         .detect(Detection::default(), |event: &(char, u64)| event.0, Third)
///         .matches
///         .map(|m| (m.key, m.value))
///         .capture()
/// });
/// let found: Vec<_> = matches.extract().into_iter().flat_map(|(_, m)| m).collect();
/// // `a`'s third event in event time is the one at 30, though it came first.
/// assert_eq!(found, [('a', 30)]);
/// ```
pub trait DetectPattern<'scope, D> {
    /// Groups events by `key` and runs `pattern` over each key's on-time events in event-time
    /// order (ties in the order of `D`), emitting a [`Detected`] per match.
    fn detect<K, F, P>(
        self,
        detection: Detection,
        key: F,
        pattern: P,
    ) -> PatternStreams<'scope, K, P::Match, D>
    where
        K: Hash + Ord + Clone + Serialize + DeserializeOwned + Send + 'static,
        F: Fn(&D) -> K + 'static,
        P: Pattern<D>;
}

/// An on-time event awaiting the frontier.
struct Pending<K, D> {
    time: u64,
    /// The key's hash: ready events are ordered by it (then by key) before they are fed.
    hash: u64,
    key: K,
    data: D,
    /// The timely time it arrived at.
    since: u64,
}

/// On-time events awaiting the frontier, in buckets of event time, so that a round takes the
/// ready events without moving or scanning those that wait.
struct PendingEvents<K, D> {
    /// By `time / BUCKET_MS`: the events and the earliest timely time any of them arrived at.
    buckets: BTreeMap<u64, (Vec<Pending<K, D>>, u64)>,
    /// Emptied bucket vectors, reused so that buckets do not grow from nothing each time.
    spare: Vec<Vec<Pending<K, D>>>,
}

/// Milliseconds of event time per bucket of [`PendingEvents`].
const BUCKET_MS: u64 = 64;

impl<K, D> PendingEvents<K, D> {
    fn push(&mut self, event: Pending<K, D>) {
        let (events, since) = self
            .buckets
            .entry(event.time / BUCKET_MS)
            .or_insert_with(|| (self.spare.pop().unwrap_or_default(), u64::MAX));
        *since = (*since).min(event.since);
        events.push(event);
    }

    /// Moves the events before event time `upto` to `ready`.
    fn take_before(&mut self, upto: u64, ready: &mut Ready<K, D>) {
        ready.events.clear();
        while let Some(mut bucket) = self.buckets.first_entry() {
            let start = *bucket.key() * BUCKET_MS;
            if start >= upto {
                break;
            }
            if start.saturating_add(BUCKET_MS) <= upto {
                let mut events = bucket.remove().0;
                ready.events.extend(events.drain(..).map(Some));
                self.spare.push(events);
                continue;
            }
            let (events, since) = bucket.get_mut();
            let mut i = 0;
            while i < events.len() {
                if events[i].time < upto {
                    ready.events.push(Some(events.swap_remove(i)));
                } else {
                    i += 1;
                }
            }
            *since = events.iter().map(|e| e.since).min().unwrap_or(u64::MAX);
            break;
        }
    }

    /// The earliest timely time a waiting event arrived at.
    fn since(&self) -> Option<u64> {
        self.buckets.values().map(|b| b.1).min()
    }

    /// A lower bound on the time, the later of arrival and event time, of every waiting event:
    /// with checkpoints, what a match of one of them may be emitted at (see
    /// [`Detection::checkpoint`]).
    fn emittable(&self) -> Option<u64> {
        let bound = |(bucket, (_, since)): (&u64, &(Vec<_>, u64))| (*since).max(bucket * BUCKET_MS);
        self.buckets.iter().map(bound).min()
    }
}

/// Events ready to be fed, and the order to feed them in.
struct Ready<K, D> {
    events: Vec<Option<Pending<K, D>>>,
    /// `(time, key hash, index)` of each event, sorted as compact triples so that most
    /// comparisons and moves never touch the events.
    order: Vec<(u64, u64, usize)>,
}

impl<K: Ord, D: Ord> Ready<K, D> {
    /// Orders the events by (time, key hash, key, data): the order they are fed in.
    fn sort(&mut self) {
        let Ready { events, order } = self;
        order.clear();
        order.extend(events.iter().enumerate().map(|(i, e)| {
            let e = e.as_ref().expect("not taken yet");
            (e.time, e.hash, i)
        }));
        order.sort_unstable_by(|a, b| {
            (a.0, a.1).cmp(&(b.0, b.1)).then_with(|| {
                let (a, b) = (events[a.2].as_ref(), events[b.2].as_ref());
                let (a, b) = (a.expect("not taken yet"), b.expect("not taken yet"));
                (&a.key, &a.data).cmp(&(&b.key, &b.data))
            })
        });
    }

    /// How many events there are.
    fn len(&self) -> usize {
        self.order.len()
    }

    /// The event at position `at` of the order, unless taken or past the end.
    fn peek(&self, at: usize) -> Option<&Pending<K, D>> {
        self.order
            .get(at)
            .and_then(|&(_, _, i)| self.events[i].as_ref())
    }

    /// Moves the event at position `at` of the order out.
    fn take(&mut self, at: usize) -> Pending<K, D> {
        self.events[self.order[at].2]
            .take()
            .expect("each event is taken once")
    }
}

/// One key's entry in a checkpoint: its state and its events still waiting, as (event time,
/// event).
type KeyEntry<S, D> = (S, Vec<(u64, D)>);

/// Every key's state and waiting events, for a checkpoint, under the hash the operator
/// exchanges the key by.
fn key_entries<K, S, D>(
    states: &States<K, S>,
    pending: &PendingEvents<K, D>,
) -> Entries<K, KeyEntry<S, D>>
where
    K: Hash + Eq + Clone,
    S: Default + Clone,
    D: Clone,
{
    let mut entries: Entries<K, KeyEntry<S, D>> = states
        .states
        .iter()
        .map(|(key, state)| {
            (
                FxBuildHasher.hash_one(key),
                key.clone(),
                (state.clone(), Vec::new()),
            )
        })
        .collect();
    // Keys with waiting events but no state yet, by their entry.
    let mut stateless = FxHashMap::<K, usize>::default();
    for event in pending.buckets.values().flat_map(|(events, _)| events) {
        let at = match states.slots.get(&event.key) {
            Some(&slot) => slot,
            None => *stateless.entry(event.key.clone()).or_insert_with(|| {
                entries.push((event.hash, event.key.clone(), (S::default(), Vec::new())));
                entries.len() - 1
            }),
        };
        entries[at].2.1.push((event.time, event.data.clone()));
    }
    entries
}

/// How many events ahead of the one it feeds the operator prefetches a key's state.
const PREFETCH_AHEAD: usize = 8;

/// Per-key states in one vector, found through an index from key to slot. The index is small
/// enough to stay in cache, so the operator looks keys up a few events ahead and has the CPU
/// fetch their states while it feeds the current one: with many keys, waiting for state memory
/// is most of a pattern's cost.
struct States<K, S> {
    slots: FxHashMap<K, usize>,
    states: Vec<(K, S)>,
}

impl<K: Hash + Eq + Clone, S: Default> States<K, S> {
    /// The state of `key`, a default one if it has none.
    fn get_or_default(&mut self, key: &K) -> &mut S {
        let slot = match self.slots.get(key) {
            Some(&slot) => slot,
            None => {
                self.slots.insert(key.clone(), self.states.len());
                self.states.push((key.clone(), S::default()));
                self.states.len() - 1
            }
        };
        &mut self.states[slot].1
    }

    /// Sets the state of `key`, which has none yet.
    fn insert(&mut self, key: K, state: S) {
        self.slots.insert(key.clone(), self.states.len());
        self.states.push((key, state));
    }

    /// Asks the CPU to bring the state of `key`, if it has one, into cache.
    fn prefetch(&self, key: &K) {
        if let Some(&slot) = self.slots.get(key) {
            super::prefetch(&self.states[slot]);
        }
    }

    /// Drops the states `keep` says no to.
    fn retain(&mut self, keep: impl Fn(&S) -> bool) {
        let mut slot = 0;
        while slot < self.states.len() {
            if keep(&self.states[slot].1) {
                slot += 1;
                continue;
            }
            let (key, _) = self.states.swap_remove(slot);
            self.slots.remove(&key);
            if let Some((moved, _)) = self.states.get(slot) {
                *self.slots.get_mut(moved).expect("every state is indexed") = slot;
            }
        }
    }
}

impl<'scope, D: ExchangeData + Clone + Ord> DetectPattern<'scope, D>
    for StreamVec<'scope, u64, Event<D>>
{
    fn detect<K, F, P>(
        self,
        detection: Detection,
        key: F,
        pattern: P,
    ) -> PatternStreams<'scope, K, P::Match, D>
    where
        K: Hash + Ord + Clone + Serialize + DeserializeOwned + Send + 'static,
        F: Fn(&D) -> K + 'static,
        P: Pattern<D>,
    {
        let key = Rc::new(key);
        let route = {
            let key = Rc::clone(&key);
            move |event: &Event<D>| FxBuildHasher.hash_one(key(&event.data))
        };
        let scope = self.scope();
        let mut builder = OperatorBuilder::new("Pattern".to_string(), scope);
        let activator = scope.activator_for(builder.operator_info().address);
        let mut input = builder.new_input(self, Exchange::new(route));
        let (matches, matches_stream) = builder.new_output();
        let (late, late_stream) = builder.new_output();
        let (_fired, fired_stream) = builder.new_output::<Vec<()>>();
        let (_settled, settled_stream) = builder.new_output::<Vec<()>>();
        let mut matches = OutputBuilder::from(matches);
        let mut late = OutputBuilder::from(late);
        let Detection {
            emitted_before,
            delivery,
            late: late_policy,
            mut checkpoint,
        } = detection;
        let horizon = pattern.horizon();
        let mut restored = checkpoint.as_ref().map(|c| {
            let entries = c
                .restore::<K, KeyEntry<P::State, D>>(scope.peers())
                .unwrap_or_else(|e| fail(e));
            (c.part.checkpointing().restored_frontier(), entries)
        });
        let checkpointed = checkpoint.is_some();

        builder.build(move |mut initial_capabilities| {
            // On the `settled` output: at the earliest input time of events that may still matter
            // to a match, or whose matches are not acknowledged yet.
            let mut settled_cap = initial_capabilities.pop().filter(|_| delivery.is_some());
            // On the `fired` output: at the least event time whose matches may not be emitted
            // and flushed yet.
            let mut fired_cap = initial_capabilities.pop();
            let initial_matches = initial_capabilities.swap_remove(0);
            let mut states = States::<K, P::State> {
                slots: FxHashMap::default(),
                states: Vec::new(),
            };
            let mut pending = PendingEvents::<K, D> {
                buckets: BTreeMap::new(),
                spare: Vec::new(),
            };
            // Per round of fed events: the earliest input time among them and the event time
            // after which none of them matters; kept with increasing input times (a later round
            // with an earlier input time absorbs the rounds before it).
            let mut rounds = VecDeque::<(u64, u64)>::new();
            // Rounds of matches awaiting `flushed`: (earliest match time, emitted at).
            let mut unflushed = VecDeque::<(u64, u64)>::new();
            // Rounds that no longer matter, until their matches are acknowledged.
            let mut unacknowledged = Unacknowledged::default();
            // A capability at the earliest input time any pending event or state may need.
            let mut held: Option<Capability<u64>> = None;
            // Every event before this event time has been fed.
            let mut fed_upto = 0u64;
            let mut last_sweep = 0u64;
            let mut ready = Ready {
                events: Vec::new(),
                order: Vec::new(),
            };
            let mut group = Vec::new();
            let mut found = Vec::new();
            let mut batch = Vec::new();
            let mut late_events = Vec::new();
            if let Some((frontier, entries)) = restored.take() {
                // Restored states and events stand for input before the checkpoint's frontier.
                for (hash, key, (state, events)) in entries {
                    for (time, data) in events {
                        let key = key.clone();
                        let since = frontier;
                        pending.push(Pending {
                            time,
                            hash,
                            key,
                            data,
                            since,
                        });
                    }
                    states.insert(key, state);
                }
                if pending.since().is_some() {
                    held = Some(initial_matches.delayed(&frontier));
                }
                fed_upto = frontier;
                last_sweep = frontier;
            }
            drop(initial_matches);
            // The input at or past a pending checkpoint's frontier, until the handoff.
            let mut aside = Aside::<Event<D>, 2>::default();
            move |frontiers| {
                let mut late = late.activate();
                let plan = checkpoint.as_mut().and_then(SectionCheckpoint::pending);
                let mut fold = |since: u64, caps: MessageCaps<'_, 2>, data: &mut Vec<Event<D>>| {
                    let mut any = false;
                    for event in data.drain(..) {
                        let is_late = event.time < event.frontier;
                        if is_late && late_policy == Late::Output {
                            late_events.push(event);
                        } else {
                            let key = key(&event.data);
                            any = true;
                            pending.push(Pending {
                                time: if is_late {
                                    event.time.max(fed_upto)
                                } else {
                                    event.time
                                },
                                hash: FxBuildHasher.hash_one(&key),
                                key,
                                data: event.data,
                                since,
                            });
                        }
                    }
                    if any && held.as_ref().is_none_or(|h| *h.time() > since) {
                        held = Some(caps.delayed(since, 0));
                    }
                    if !late_events.is_empty() {
                        late.session(&caps.delayed(since, 1))
                            .give_container(&mut late_events);
                    }
                };
                for (caps, mut data) in aside.take_before(plan) {
                    fold(*caps[0].time(), MessageCaps::Kept(&caps), &mut data);
                }
                input.for_each(|cap, data| {
                    let Some(&since) = cap.least() else { return };
                    if checkpoint.as_mut().is_some_and(|c| c.keeps_aside(since)) {
                        aside.keep(&cap, since, data);
                        return;
                    }
                    fold(since, MessageCaps::Input(&cap), data);
                });
                let input_upto = frontiers[0].frontier().first().copied().unwrap_or(u64::MAX);
                // While a checkpoint is pending, events at or past its frontier wait: its
                // handoff holds what they find.
                let plan = checkpoint.as_mut().and_then(SectionCheckpoint::pending);
                let upto = input_upto.min(plan.unwrap_or(u64::MAX));
                if upto > fed_upto {
                    pending.take_before(upto, &mut ready);
                    if !ready.events.is_empty() {
                        let mut round = (u64::MAX, 0);
                        ready.sort();
                        let mut at = 0;
                        while at < ready.len() {
                            if let Some(ahead) = ready.peek(at + PREFETCH_AHEAD) {
                                states.prefetch(&ahead.key);
                            }
                            let first = ready.take(at);
                            at += 1;
                            let (time, hash) = (first.time, first.hash);
                            round.0 = round.0.min(first.since);
                            group.push(first.data);
                            let key = first.key;
                            while ready
                                .peek(at)
                                .is_some_and(|e| e.time == time && e.hash == hash && e.key == key)
                            {
                                let next = ready.take(at);
                                at += 1;
                                round.0 = round.0.min(next.since);
                                group.push(next.data);
                            }
                            round.1 = time;
                            let state = states.get_or_default(&key);
                            pattern.advance(state, time, &group, &mut |value| {
                                if time >= emitted_before {
                                    found.push(Detected {
                                        key: key.clone(),
                                        time,
                                        value,
                                    });
                                }
                            });
                            group.clear();
                        }
                        let (since, mut release) = (round.0, round.1.saturating_add(horizon));
                        while rounds.back().is_some_and(|r| r.0 >= since) {
                            release = release.max(rounds.pop_back().expect("checked").1);
                        }
                        rounds.push_back((since, release));
                    }
                    if !found.is_empty() {
                        let held = held.as_ref().expect("fed events hold a capability");
                        let first = found.iter().map(|m| m.time).min().expect("not empty");
                        // With checkpoints, at the match's event time or later: matches come
                        // in event-time order, so in runs of one emit time each.
                        let emit_at = |m: &Detected<K, P::Match>| {
                            let at = *held.time();
                            if checkpointed { at.max(m.time) } else { at }
                        };
                        let mut matches = matches.activate();
                        let mut last = *held.time();
                        for m in found.drain(..) {
                            let at = emit_at(&m);
                            if at != last && !batch.is_empty() {
                                matches
                                    .session(&held.delayed(&last))
                                    .give_container(&mut batch);
                            }
                            last = at;
                            batch.push(m);
                        }
                        matches
                            .session(&held.delayed(&last))
                            .give_container(&mut batch);
                        if delivery.is_some() {
                            unflushed.push_back((first, last));
                        }
                    }
                    fed_upto = upto;
                    // At the end of the input (`upto` is MAX) every round is done, however far
                    // its horizon reaches.
                    while let Some(&(since, release)) = rounds.front()
                        && (release < upto || upto == u64::MAX)
                    {
                        rounds.pop_front();
                        if delivery.is_some() {
                            unacknowledged.hold(since, release);
                        }
                    }
                    if upto == u64::MAX || upto - last_sweep >= horizon.max(1000) {
                        states.retain(|state| !pattern.expired(state, upto));
                        last_sweep = upto;
                    }
                    // With checkpoints, a restore brings the states back, so no replay needs the
                    // capability held for past rounds: it follows the waiting events only, and
                    // a checkpoint's frontier passes downstream once the events before it are fed.
                    let earliest = if checkpointed {
                        pending.emittable()
                    } else {
                        pending
                            .since()
                            .into_iter()
                            .chain(rounds.front().map(|r| r.0))
                            .min()
                    };
                    match earliest {
                        Some(t) => held.as_mut().expect("held while needed").downgrade(&t),
                        None => held = None,
                    }
                }
                // Hands off once every event before the frontier is fed; the input kept aside
                // is folded in the next activation.
                if let Some(frontier) = plan
                    && input_upto >= frontier
                    && let Some(c) = checkpoint.as_mut()
                {
                    c.hand_off(key_entries(&states, &pending));
                    activator.activate();
                }
                if let Some(delivery) = &delivery {
                    while unflushed
                        .front()
                        .is_some_and(|u| !delivery.flushed.less_equal(&u.1))
                    {
                        unflushed.pop_front();
                    }
                    if unacknowledged.release(&delivery.acknowledged) || !unflushed.is_empty() {
                        activator.activate_after(Duration::from_millis(5));
                    }
                }
                let done = unflushed.iter().map(|u| u.0).min().unwrap_or(u64::MAX);
                match done.min(fed_upto) {
                    u64::MAX => fired_cap = None,
                    t => {
                        if let Some(cap) = fired_cap.as_mut() {
                            cap.downgrade(&t.max(*cap.time()));
                        }
                    }
                }
                let emittable = held.as_ref().map(|h| *h.time());
                let input = frontiers[0].frontier().first().copied();
                // Waiting events and rounds still within their horizon are unsettled too (with
                // checkpoints, `held` waits for neither).
                let unsettled = unacknowledged
                    .times()
                    .chain(pending.since())
                    .chain(rounds.front().map(|r| r.0))
                    .chain(emittable)
                    .chain(aside.times())
                    .chain(input);
                hold_at_least(&mut settled_cap, unsettled);
            }
        });
        PatternStreams {
            matches: matches_stream,
            late: late_stream,
            fired: fired_stream,
            settled: settled_stream,
        }
    }
}
