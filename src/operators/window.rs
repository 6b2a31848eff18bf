//! Event-time windows: tumbling, hopping and session windows, aggregated per key.
//!
//! A window `[s, e)` fires once, when the input frontier reaches `e + lateness`; a record counts in
//! every window it belongs to that is still open *by its own stamp* (`Event::frontier < e +
//! lateness`), and goes to the late output when none is (DESIGN §3). Tumbling and hopping windows
//! fold each record once, into a pane of `gcd(size, slide)`, and combine panes when a window fires.
//!
//! The operator holds its output capability at the earliest timely time of any input it still
//! retains, and emits each window at the earliest input time of its contents (never after its
//! fire time). So a probe downstream passes a time `t` only once everything derived from input
//! sent before `t` has been emitted, and every window firing before `t` too (an unfired window
//! holds the probe at or before its fire time): sources commit their offsets behind it without
//! losing the contents of open windows, and record `t` with them so that a restarted job does not
//! emit those windows again.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash};
use std::rc::Rc;

use rustc_hash::{FxBuildHasher, FxHashMap};
use serde::{Deserialize, Serialize};
use timely::ExchangeData;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{ProbeHandle, StreamVec};

use super::aggregate::Aggregate;
use crate::record::Event;

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

/// Which windows an operator computes, and which of them an earlier run already emitted.
#[derive(Clone, Debug)]
pub struct Windows {
    /// Their shape.
    pub spec: WindowSpec,
    /// Allowed lateness in ms: a window fires this long after its end.
    pub lateness: u64,
    /// Windows firing before this time were emitted, complete, by an earlier run of the job (the
    /// checkpoint committed with the source offsets says so): records replayed after a restart do
    /// not count in them again, so a restart never re-emits such a window with part of its input.
    pub emitted_before: u64,
    /// A probe on what the results become downstream (the sinks' flushed streams): a fired
    /// window counts as done on the [`WindowStreams::fired`] stream only once this probe has
    /// passed the time its results were emitted at. `None`: once emitted.
    pub flushed: Option<ProbeHandle<u64>>,
}

impl From<WindowSpec> for Windows {
    fn from(spec: WindowSpec) -> Self {
        Windows {
            spec,
            lateness: 0,
            emitted_before: 0,
            flushed: None,
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
    /// (with [`Windows::flushed`]) its results have passed that probe. Sources record it with their
    /// offsets as the frontier of emitted windows (see [`Windows::emitted_before`]).
    pub fired: StreamVec<'scope, u64, ()>,
    /// No data, in input times: its frontier passes a time `t` once every result emitted before
    /// `t` has passed [`Windows::flushed`] *and* `fired` has moved past its window, in the same
    /// step. A source commits an offset once this (and the sinks) passed the time its data was
    /// sent at, and reads `fired` then: the windows whose contents it commits count as emitted.
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
pub trait WindowAggregate<'scope, D> {
    /// Groups events by `key`, aggregates each key's windows with `aggregate`, and emits one
    /// [`WindowResult`] per key and window once the input frontier reaches the window's end (plus
    /// the allowed lateness), at the earliest timely time of its input. Returns the results and
    /// the late events (those whose every window had closed by their stamp).
    fn window_aggregate<K, F, A>(
        self,
        windows: impl Into<Windows>,
        key: F,
        aggregate: A,
    ) -> WindowStreams<'scope, K, A::Output, D>
    where
        K: Hash + Eq + Clone + 'static,
        F: Fn(&D) -> K + 'static,
        A: Aggregate<D>,
        A::Output: 'static;
}

impl<'scope, D: ExchangeData + Clone> WindowAggregate<'scope, D>
    for StreamVec<'scope, u64, Event<D>>
{
    fn window_aggregate<K, F, A>(
        self,
        windows: impl Into<Windows>,
        key: F,
        aggregate: A,
    ) -> WindowStreams<'scope, K, A::Output, D>
    where
        K: Hash + Eq + Clone + 'static,
        F: Fn(&D) -> K + 'static,
        A: Aggregate<D>,
        A::Output: 'static,
    {
        let windows = windows.into();
        let spec = windows.spec;
        let flushed = windows.flushed.clone();
        let key = Rc::new(key);
        let route = {
            let key = Rc::clone(&key);
            move |event: &Event<D>| FxBuildHasher.hash_one(key(&event.data))
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
            // On the `settled` output: at the earliest time of a result awaiting `flushed`, or
            // at which a result may still be emitted.
            let mut settled_cap = initial_capabilities.pop().filter(|_| flushed.is_some());
            // On the `fired` output: a capability at the least fire time of a window that is
            // pending, or fired with results the `flushed` probe has not passed yet.
            let mut fired_cap: Option<Capability<u64>> = None;
            // Fire time → latest time its results were emitted at, awaiting `flushed`.
            let mut unflushed = BTreeMap::<u64, u64>::new();
            let mut state = WindowState::<K, A::State>::new(windows);
            // Fire time (window end + lateness) → earliest input time of its contents.
            let mut pending = BTreeMap::<u64, u64>::new();
            // A capability at the earliest input time of any retained content.
            let mut held: Option<Capability<u64>> = None;
            let mut late_events = Vec::new();
            let mut fired = Vec::new();
            move |frontiers| {
                let mut results = results.activate();
                let mut late = late.activate();
                input.for_each(|cap, data| {
                    let Some(&time) = cap.least() else { return };
                    state.new_message();
                    let mut retained = false;
                    for event in data.drain(..) {
                        let on_time = state.insert(
                            key(&event.data),
                            &event,
                            time,
                            &aggregate,
                            |fire, since| {
                                let earliest = pending.entry(fire).or_insert(since);
                                *earliest = (*earliest).min(since);
                                retained = true;
                                if fired_cap.as_ref().is_none_or(|c| *c.time() > fire) {
                                    fired_cap = Some(cap.delayed(&fire, 2));
                                }
                            },
                        );
                        if !on_time {
                            late_events.push(event);
                        }
                    }
                    if retained && held.as_ref().is_none_or(|h| *h.time() > time) {
                        held = Some(cap.delayed(&time, 0));
                    }
                    if !late_events.is_empty() {
                        late.session(&cap).give_container(&mut late_events);
                    }
                });
                let upto = frontiers[0].frontier().first().copied();
                while let Some(entry) = pending.first_entry() {
                    if upto.is_some_and(|f| *entry.key() > f) {
                        break;
                    }
                    let (fire, since) = entry.remove_entry();
                    state.fire(fire, &aggregate, |result| fired.push(result));
                    if !fired.is_empty() {
                        let held = held.as_ref().expect("retained contents hold a capability");
                        results
                            .session(&held.delayed(&since))
                            .give_container(&mut fired);
                        if flushed.is_some() {
                            let emitted = unflushed.entry(fire).or_insert(since);
                            *emitted = (*emitted).max(since);
                        }
                    }
                }
                if let Some(probe) = &flushed {
                    unflushed.retain(|_, emitted| probe.less_equal(emitted));
                    if !unflushed.is_empty() {
                        activator.activate_after(std::time::Duration::from_millis(5));
                    }
                }
                let least_fire = pending.keys().chain(unflushed.keys()).min().copied();
                match (least_fire, fired_cap.as_mut()) {
                    (Some(fire), Some(cap)) => cap.downgrade(&fire),
                    (None, _) => fired_cap = None,
                    (Some(_), None) => unreachable!("a pending window holds the fired capability"),
                }
                state.release(upto);
                match pending.values().min() {
                    Some(earliest) => {
                        if let Some(h) = held.as_mut() {
                            h.downgrade(earliest);
                        }
                    }
                    None => held = None,
                }
                let unsettled = unflushed.values().copied();
                let emittable = held.as_ref().map(|h| *h.time());
                super::hold_at_least(&mut settled_cap, unsettled.chain(emittable).chain(upto));
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

/// The keyed window contents of one operator instance.
enum WindowState<K, S> {
    Panes(Panes<K, S>),
    Sessions(Sessions<K, S>),
}

impl<K: Hash + Eq + Clone, S> WindowState<K, S> {
    fn new(windows: Windows) -> Self {
        let lateness = windows.lateness as i64;
        let emitted_before = windows.emitted_before as i64;
        match windows.spec {
            WindowSpec::Tumbling { size } => {
                Self::Panes(Panes::new(size, size, lateness, emitted_before))
            }
            WindowSpec::Hopping { size, slide } => {
                Self::Panes(Panes::new(size, slide, lateness, emitted_before))
            }
            WindowSpec::Session { gap } => Self::Sessions(Sessions {
                gap: gap as i64,
                lateness,
                emitted_before,
                by_key: FxHashMap::default(),
                by_fire: BTreeMap::new(),
            }),
        }
    }

    /// Starts a new input message: registrations are no longer known to cover its time.
    fn new_message(&mut self) {
        if let Self::Panes(panes) = self {
            panes.registered = None;
        }
    }

    /// Folds `event`, which arrived in a message of timely time `time`, into its open windows,
    /// calling `register(fire, since)` for the windows whose contents it joins (at least once per
    /// message): `since` is the earliest input time of those contents. Returns false when the
    /// event is late for all its windows.
    #[inline]
    fn insert<D, A: Aggregate<D, State = S>>(
        &mut self,
        key: K,
        event: &Event<D>,
        time: u64,
        aggregate: &A,
        register: impl FnMut(u64, u64),
    ) -> bool {
        match self {
            Self::Panes(panes) => panes.insert(key, event, time, aggregate, register),
            Self::Sessions(sessions) => sessions.insert(key, event, time, aggregate, register),
        }
    }

    /// Emits the windows whose fire time is `fire`.
    fn fire<D, A: Aggregate<D, State = S>>(
        &mut self,
        fire: u64,
        aggregate: &A,
        emit: impl FnMut(WindowResult<K, A::Output>),
    ) {
        match self {
            Self::Panes(panes) => panes.fire(fire, aggregate, emit),
            Self::Sessions(sessions) => sessions.fire(fire, aggregate, emit),
        }
    }

    /// Frees state that no window open at frontier `upto` (or none, at the end) needs.
    fn release(&mut self, upto: Option<u64>) {
        if let Self::Panes(panes) = self {
            panes.release(upto);
        }
    }
}

/// Tumbling and hopping windows, folded per pane of `gcd(size, slide)`.
struct Panes<K, S> {
    size: i64,
    slide: i64,
    pane: i64,
    lateness: i64,
    /// Windows firing before this were emitted by an earlier run.
    emitted_before: i64,
    /// Per-pane state, ordered by pane start; only a few panes are live at once.
    panes: Vec<(i64, FxHashMap<K, S>)>,
    /// Per-window state of records that were late for some of their windows but not all.
    partial: BTreeMap<i64, FxHashMap<K, S>>,
    /// The (first open, last) window starts whose fire times were registered for this message.
    registered: Option<(i64, i64)>,
    /// Emptied maps kept for reuse.
    spare: Vec<FxHashMap<K, S>>,
}

/// How many emptied maps a window operator keeps for reuse.
const SPARE_MAPS: usize = 8;

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl<K: Hash + Eq + Clone, S> Panes<K, S> {
    fn new(size: u64, slide: u64, lateness: i64, emitted_before: i64) -> Self {
        let (size, slide) = (size as i64, slide as i64);
        Panes {
            size,
            slide,
            pane: gcd(size, slide),
            lateness,
            emitted_before,
            panes: Vec::new(),
            partial: BTreeMap::new(),
            registered: None,
            spare: Vec::new(),
        }
    }

    fn fire_time(&self, start: i64) -> u64 {
        (start + self.size + self.lateness) as u64
    }

    #[inline]
    fn insert<D, A: Aggregate<D, State = S>>(
        &mut self,
        key: K,
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
                let states = self.partial.entry(start).or_default();
                let state = states
                    .entry(key.clone())
                    .or_insert_with(|| aggregate.init());
                aggregate.add(state, &event.data);
            }
            return true;
        }
        let pane = t - t.rem_euclid(self.pane);
        let at = match self.panes.iter().rposition(|(start, _)| *start <= pane) {
            Some(i) if self.panes[i].0 == pane => i,
            found => {
                let at = found.map_or(0, |i| i + 1);
                let map = self.spare.pop().unwrap_or_default();
                self.panes.insert(at, (pane, map));
                at
            }
        };
        let state = self.panes[at]
            .1
            .entry(key)
            .or_insert_with(|| aggregate.init());
        aggregate.add(state, &event.data);
        true
    }

    fn fire<D, A: Aggregate<D, State = S>>(
        &mut self,
        fire: u64,
        aggregate: &A,
        mut emit: impl FnMut(WindowResult<K, A::Output>),
    ) {
        self.registered = None;
        let end = fire as i64 - self.lateness;
        let start = end - self.size;
        let mut merged = match self.partial.remove(&start) {
            Some(partial) => partial,
            None => self.spare.pop().unwrap_or_default(),
        };
        // The panes before `start + slide` belong to no later window: the first becomes the base
        // of the merge, taken whole (for tumbling windows, it is the whole window).
        let oldest = start..start + self.slide;
        if merged.is_empty()
            && let Some(i) = self.panes.iter().position(|(s, _)| oldest.contains(s))
        {
            let base = self.panes.remove(i).1;
            self.spare.push(std::mem::replace(&mut merged, base));
        }
        for (_, pane) in self.panes.iter().filter(|(s, _)| (start..end).contains(s)) {
            for (key, state) in pane {
                match merged.get_mut(key) {
                    Some(into) => aggregate.merge(into, state),
                    None => {
                        let mut into = aggregate.init();
                        aggregate.merge(&mut into, state);
                        merged.insert(key.clone(), into);
                    }
                }
            }
        }
        for (key, state) in merged.drain() {
            emit(WindowResult {
                key,
                start,
                end,
                value: aggregate.finish(&state),
            });
        }
        self.recycle(merged);
    }

    /// Keeps an emptied map, with its capacity, for the next pane: windows come and go at a
    /// steady pace, and reusing their tables spares the allocator and the kernel's page zeroing.
    fn recycle(&mut self, mut map: FxHashMap<K, S>) {
        if self.spare.len() < SPARE_MAPS {
            map.clear();
            self.spare.push(map);
        }
    }

    fn release(&mut self, upto: Option<u64>) {
        let Some(upto) = upto else {
            self.panes.clear();
            self.partial.clear();
            return;
        };
        // Windows whose fire time is at most `upto` have fired; the first still open starts at
        // the least multiple of the slide with `start + size + lateness > upto`.
        let bound = upto as i64 - self.size - self.lateness + 1;
        let first_open = bound + (self.slide - bound.rem_euclid(self.slide)) % self.slide;
        while let Some(i) = self
            .panes
            .iter()
            .position(|(start, _)| start + self.pane <= first_open)
        {
            let (_, map) = self.panes.remove(i);
            self.recycle(map);
        }
        self.partial.retain(|start, _| *start >= first_open);
    }
}

/// Session windows: per key, the open sessions, and which keys have a session ending at a time.
struct Sessions<K, S> {
    gap: i64,
    lateness: i64,
    /// Sessions firing before this were emitted by an earlier run.
    emitted_before: i64,
    by_key: FxHashMap<K, Vec<Session<S>>>,
    /// Fire time → keys with a session that may end then (entries go stale as sessions grow).
    by_fire: BTreeMap<u64, Vec<K>>,
}

struct Session<S> {
    start: i64,
    end: i64,
    /// The earliest input time of its contents.
    since: u64,
    state: S,
}

impl<K: Hash + Eq + Clone, S> Sessions<K, S> {
    fn insert<D, A: Aggregate<D, State = S>>(
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
        let open = |s: &Session<S>| s.end + lateness > stamp;
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
        let mut state = aggregate.init();
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

    fn fire<D, A: Aggregate<D, State = S>>(
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
