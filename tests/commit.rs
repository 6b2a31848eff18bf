//! What sources commit while the workers fire a window, or get past a pattern's events, at
//! different times: one worker has emitted and flushed its part, the other has not got there
//! yet. A source may commit the first worker's input only with a checkpoint that counts
//! everything that input matters to as emitted; otherwise a restart would emit it again from
//! the records after the commit alone.

use std::cell::Cell;
use std::hash::BuildHasher;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use eddy::operators::delivery::{Acknowledge, Delivery};
use eddy::operators::pattern::{DetectPattern, Detection, Late, Pattern};
use eddy::sources::{Checkpoint, Positioned, ReadBatch, ReadStatus, Reader, SourceOptions};
use eddy::{
    AggregateKind, Event, FieldAggregates, Record, Value, WindowAggregate, WindowSpec, Windows,
};
use rustc_hash::FxBuildHasher;
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::{ProbeHandle, StreamVec};

const WINDOW: u64 = 10_000;

/// The first key ≥ `from` that the window and pattern operators route to `worker` of 2 (an
/// `i64` hashes as its `Value::Int`).
fn key_on(worker: u64, from: i64) -> i64 {
    (from..)
        .find(|k| FxBuildHasher.hash_one(Value::Int(*k)) & 1 == worker)
        .expect("some key of each parity")
}

/// What the two readers share: the commits, and where each has got to.
#[derive(Default)]
struct Shared {
    /// Every commit: (worker, position, checkpoint's emitted_before).
    commits: Mutex<Vec<(usize, i64, u64)>>,
    committed: Condvar,
    /// Worker 0 has read all its records.
    ahead: AtomicBool,
    /// Worker 1 has gone on after its pause.
    resumed: AtomicBool,
}

/// One partition of `(event time, key)` records, one record per read. Worker 0 reads all its
/// records first, and ends its partition only once worker 1 has resumed (a source that has ended
/// commits only when everything has settled). Worker 1 starts once worker 0 is ahead, and stops
/// before record `pause_at` until worker 0 has committed something, or for 2 s: so its operator
/// has seen the frontier its earlier records left, but not the one after.
struct Scripted {
    worker: usize,
    records: Vec<(u64, i64)>,
    next: usize,
    pause_at: usize,
    /// For worker 1, if set: its fired probe, and the frontier that probe must have reached
    /// before it reads its record before the pause (its operator has caught up by then).
    caught_up: Option<(ProbeHandle<u64>, u64)>,
    shared: Arc<Shared>,
}

impl Reader<Record> for Scripted {
    fn partition_name(&self, partition: usize) -> String {
        partition.to_string()
    }

    fn partitions(&self) -> usize {
        1
    }

    fn read(&mut self, batch: &mut ReadBatch<Record>) -> ReadStatus {
        let shared = &self.shared;
        if self.worker == 1 {
            if !shared.ahead.load(Ordering::Relaxed) {
                return ReadStatus::Waiting;
            }
            if self.next + 1 == self.pause_at
                && let Some((fired, frontier)) = &self.caught_up
                && fired.less_than(frontier)
            {
                return ReadStatus::Waiting;
            }
            if self.next == self.pause_at && !shared.resumed.load(Ordering::Relaxed) {
                let commits = shared.commits.lock().unwrap();
                let _ = shared
                    .committed
                    .wait_timeout_while(commits, Duration::from_secs(2), |commits| {
                        !commits
                            .iter()
                            .any(|&(worker, position, _)| worker == 0 && position > 0)
                    })
                    .unwrap();
                shared.resumed.store(true, Ordering::Relaxed);
            }
        }
        let Some(&(time, key)) = self.records.get(self.next) else {
            if self.worker == 0 {
                shared.ahead.store(true, Ordering::Relaxed);
                if !shared.resumed.load(Ordering::Relaxed) {
                    return ReadStatus::Waiting;
                }
            }
            batch.finished.push(0);
            return ReadStatus::Done;
        };
        self.next += 1;
        batch.events.push(Positioned {
            partition: 0,
            next: self.next as i64,
            item: (time, vec![Value::Int(key), Value::Int(1)].into()),
        });
        ReadStatus::Ready
    }

    fn commit(&mut self, positions: &[i64], checkpoint: &Checkpoint, _last: bool) {
        let mut commits = self.shared.commits.lock().unwrap();
        commits.push((self.worker, positions[0], checkpoint.emitted_before));
        self.shared.committed.notify_all();
    }
}

/// The probes one worker's sources commit by, for the operator under test to feed.
struct Probes {
    delivery: Delivery,
    /// On the operator's fired stream: the checkpoint's `emitted_before`.
    fired: ProbeHandle<u64>,
    /// On its settled stream and outputs: what the source may commit.
    settled: ProbeHandle<u64>,
}

impl Probes {
    /// Tracks an operator's fired and settled streams, as a job does.
    fn track(&self, fired: StreamVec<'_, u64, ()>, settled: StreamVec<'_, u64, ()>) {
        fired
            .probe_with(&self.fired)
            .acknowledge()
            .probe_with(&self.delivery.acknowledged);
        settled.probe_with(&self.settled);
    }
}

/// Runs two workers, each reading its script with a [`Scripted`] reader (worker 1 pausing
/// before its record `pause_at`, and reading the one before only once the fired frontier has
/// reached `caught_up`, if set) into what `build` adds; returns every commit.
fn run<B>(
    scripts: &Arc<[Vec<(u64, i64)>; 2]>,
    pause_at: usize,
    caught_up: Option<u64>,
    build: B,
) -> Vec<(usize, i64, u64)>
where
    B: for<'s> Fn(StreamVec<'s, u64, Event<Record>>, &Probes) + Send + Sync + 'static,
{
    let shared = Arc::new(Shared::default());
    {
        let (shared, scripts) = (Arc::clone(&shared), Arc::clone(scripts));
        timely::execute(timely::Config::process(2), move |worker| {
            let index = worker.index();
            let probes = Probes {
                delivery: Delivery {
                    flushed: ProbeHandle::new(),
                    acknowledged: ProbeHandle::new(),
                },
                fired: ProbeHandle::new(),
                settled: ProbeHandle::new(),
            };
            let reader = Scripted {
                worker: index,
                records: scripts[index].clone(),
                next: 0,
                pause_at,
                caught_up: caught_up.map(|frontier| (probes.fired.clone(), frontier)),
                shared: Arc::clone(&shared),
            };
            worker.dataflow::<u64, _, _>(|scope| {
                let options = SourceOptions {
                    out_of_orderness: Duration::ZERO,
                    idle_timeout: None,
                    max_drift: None,
                    tick: 1_000,
                    commit_interval: Duration::ZERO,
                    stop: Arc::new(AtomicBool::new(false)),
                    halted: Rc::new(Cell::new(0)),
                    fired: probes.fired.clone(),
                    backlogs: Vec::new(),
                };
                let source = eddy::sources::event_source(
                    scope,
                    "scripted",
                    reader,
                    options,
                    probes.settled.clone(),
                    None,
                );
                build(source.events, &probes);
            });
            while worker.step() {}
        })
        .unwrap();
    }
    std::mem::take(&mut *shared.commits.lock().unwrap())
}

/// Asserts that no commit covers a record that matters to output at or after the commit's
/// `emitted_before` (`reach`: the latest event time of output a record at a time matters to;
/// `consequence`: what a restart would get wrong there), and that each worker's last commit
/// covers its whole partition.
fn assert_commits(
    commits: &[(usize, i64, u64)],
    scripts: &[Vec<(u64, i64)>; 2],
    reach: impl Fn(u64) -> u64,
    consequence: impl Fn(u64) -> String,
) {
    for (worker, script) in scripts.iter().enumerate() {
        let mut last = (-1, 0);
        for &(_, position, emitted_before) in commits.iter().filter(|c| c.0 == worker) {
            for &(time, _) in &script[..position as usize] {
                let until = reach(time);
                assert!(
                    until < emitted_before,
                    "worker {worker} committed its record at {time} (position {position}) with \
                     emitted_before {emitted_before}: a restart would {}",
                    consequence(until)
                );
            }
            last = (position, emitted_before);
        }
        assert_eq!(
            last,
            (script.len() as i64, u64::MAX),
            "worker {worker}'s last commit covers its whole partition"
        );
    }
}

#[test]
fn records_of_a_window_one_worker_has_not_fired_are_committed_only_as_emitted() {
    let (key0, key1) = (key_on(0, 1), key_on(1, 1));
    // Worker 0 reads key0's records of the first window, and more that close it. Worker 1 reads
    // one more of key0 (a partition's first record goes at time 0), then late records of key1
    // in the first window, which go at 8 000, then pauses after the first record of the second
    // window, which lets worker 0 fire the first.
    let later = |key| (21..60).map(move |s| (s * 500, key));
    let scripts = Arc::new([
        (1..10)
            .map(|s| (s * 1_000, key0))
            .chain(later(key0))
            .collect::<Vec<_>>(),
        std::iter::once((8_000, key0))
            .chain((95..100).map(|s| (s * 100, key1)))
            .chain(later(key1))
            .collect(),
    ]);
    let commits = run(&scripts, 7, None, |events, probes| {
        let windows = events.window_aggregate(
            Windows {
                spec: WindowSpec::Tumbling { size: WINDOW },
                lateness: 0,
                emitted_before: 0,
                delivery: Some(probes.delivery.clone()),
                checkpoint: None,
            },
            |record: &Record| record[0].clone(),
            FieldAggregates(vec![(AggregateKind::Count, 0)]),
        );
        probes.track(windows.fired, windows.settled);
        windows
            .results
            .probe_with(&probes.delivery.flushed)
            .probe_with(&probes.settled);
    });
    assert_commits(
        &commits,
        &scripts,
        |time| (time / WINDOW + 1) * WINDOW,
        |fire| format!("emit the window firing at {fire} again without it"),
    );
}

/// How far back, in ms of event time, [`Burst`] reaches.
const HORIZON: u64 = 500;

/// Reports, at an event of a key with others within [`HORIZON`] before it, how many there are
/// (itself included): a match that changes if an event it counts is missing.
struct Burst;

impl Pattern<i64> for Burst {
    /// The times of the key's events within the horizon of its latest.
    type State = Vec<u64>;
    type Match = usize;

    fn advance(
        &self,
        recent: &mut Vec<u64>,
        time: u64,
        events: &[i64],
        emit: &mut impl FnMut(usize),
    ) {
        recent.retain(|&t| time - t <= HORIZON);
        recent.extend(events.iter().map(|_| time));
        if recent.len() > 1 {
            emit(recent.len());
        }
    }

    fn horizon(&self) -> u64 {
        HORIZON
    }

    fn expired(&self, recent: &Vec<u64>, frontier: u64) -> bool {
        recent.last().is_none_or(|&last| last + HORIZON < frontier)
    }
}

/// A restart replays the events after the committed position, rebuilding each key's state from
/// them, and emits only matches at or after the checkpoint's `emitted_before`. An event at `t`
/// counts in matches up to `t + HORIZON` (its round's `release`), so a source may commit it only
/// with every match up to there counted emitted: `t + HORIZON < emitted_before`.
#[test]
fn events_of_matches_one_worker_has_not_seen_past_are_committed_only_as_emitted() {
    let (key0, key1) = (key_on(0, 1), key_on(1, 1));
    // Worker 0 reads key0's events up to 9 400 (the one at 8 600 goes at 7 000, the one at
    // 9 000 at 8 000) and later ones. Worker 1 reads one more of key0, which goes at time 0 (a
    // partition's first record does) and so keeps worker 0's input unsettled until the frontier
    // passes its round's release, 9 100; then one that takes the frontier to 9 000, and once its
    // operator has fed up to there, one that takes it to 10 000; then it pauses. Worker 0 has
    // then fed every event before 10 000, and they matter to no match it has not emitted; but
    // worker 1 has fed only up to 9 000, so the fired frontier stays there while the events at
    // 8 600 and 9 000 count in matches from 9 000 on. Worker 1's records before the pause all go
    // to worker 0, which sees the frontier pass 10 000 whether or not worker 1's operator runs.
    // Worker 0's events before 9 000 are too far apart to match: a match emitted while that round
    // holds its output at time 0 could not be flushed, and worker 1 would wait for ever.
    let later = |key| (22..60).map(move |s| (s * 500, key));
    let scripts = Arc::new([
        (1..8)
            .map(|s| (s * 1_000, key0))
            .chain([(8_600, key0), (9_000, key0), (9_400, key0)])
            .chain(later(key0))
            .collect::<Vec<_>>(),
        [(8_000, key0), (9_200, key0), (10_500, key0)]
            .into_iter()
            .chain(later(key1))
            .collect(),
    ]);
    let commits = run(&scripts, 3, Some(9_000), |events, probes| {
        let key = |record: &Record| match record[0] {
            Value::Int(key) => key,
            ref other => panic!("a scripted key is an int, not {other:?}"),
        };
        let streams = events
            .map(move |e| Event {
                time: e.time,
                frontier: e.frontier,
                data: key(&e.data),
            })
            .detect(
                Detection {
                    emitted_before: 0,
                    delivery: Some(probes.delivery.clone()),
                    late: Late::Output,
                    checkpoint: None,
                },
                |key: &i64| *key,
                Burst,
            );
        probes.track(streams.fired, streams.settled);
        streams
            .matches
            .probe_with(&probes.delivery.flushed)
            .probe_with(&probes.settled);
        streams
            .late
            .probe_with(&probes.delivery.flushed)
            .probe_with(&probes.settled);
    });
    assert_commits(
        &commits,
        &scripts,
        |time| time + HORIZON,
        |until| format!("rebuild the matches up to {until} without it"),
    );
}
