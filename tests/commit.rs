//! What sources commit while the workers fire a window at different times: one worker has
//! emitted and flushed its keys of a window, the other has not fired it yet. A source may commit
//! the first worker's records of that window only with a checkpoint that counts the window as
//! emitted; otherwise a restart would emit it again from the records after the commit alone.

use std::cell::Cell;
use std::hash::BuildHasher;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use eddy::operators::delivery::{Acknowledge, Delivery};
use eddy::sources::{Checkpoint, Positioned, ReadBatch, ReadStatus, Reader, SourceOptions};
use eddy::{AggregateKind, FieldAggregates, Record, Value, WindowAggregate, WindowSpec, Windows};
use rustc_hash::FxBuildHasher;
use timely::dataflow::ProbeHandle;
use timely::dataflow::operators::Probe;

const WINDOW: u64 = 10_000;

/// The first key ≥ `from` that the window operator routes to `worker` of 2.
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
/// before record `PAUSE_AT` until worker 0 has committed something, or for 2 s: so its window
/// operator has seen the frontier its earlier records left, but not the one after.
struct Scripted {
    worker: usize,
    records: Vec<(u64, i64)>,
    next: usize,
    shared: Arc<Shared>,
}

/// Where worker 1 pauses: after its first record of the second window.
const PAUSE_AT: usize = 7;

impl Reader<Record> for Scripted {
    fn partitions(&self) -> usize {
        1
    }

    fn read(&mut self, batch: &mut ReadBatch<Record>) -> ReadStatus {
        let shared = &self.shared;
        if self.worker == 1 {
            if !shared.ahead.load(Ordering::Relaxed) {
                return ReadStatus::Waiting;
            }
            if self.next == PAUSE_AT && !shared.resumed.load(Ordering::Relaxed) {
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

#[test]
fn records_of_a_window_one_worker_has_not_fired_are_committed_only_as_emitted() {
    let (key0, key1) = (key_on(0, 1), key_on(1, 1));
    // Worker 0 reads key0's records of the first window, and more that close it. Worker 1 reads
    // one more of key0 (a partition's first record goes at time 0), then late records of key1
    // in the first window, which go at 8 000, then pauses after the first record of the second
    // window, which lets worker 0 fire the first.
    let later = |key| (21..60).map(move |s| (s * 500, key));
    let scripts = [
        (1..10)
            .map(|s| (s * 1_000, key0))
            .chain(later(key0))
            .collect::<Vec<_>>(),
        std::iter::once((8_000, key0))
            .chain((95..100).map(|s| (s * 100, key1)))
            .chain(later(key1))
            .collect(),
    ];
    let shared = Arc::new(Shared::default());
    let scripts = Arc::new(scripts);
    {
        let (shared, scripts) = (Arc::clone(&shared), Arc::clone(&scripts));
        timely::execute(timely::Config::process(2), move |worker| {
            let index = worker.index();
            let reader = Scripted {
                worker: index,
                records: scripts[index].clone(),
                next: 0,
                shared: Arc::clone(&shared),
            };
            let delivery = Delivery {
                flushed: ProbeHandle::new(),
                acknowledged: ProbeHandle::new(),
            };
            let (fired, settled) = (ProbeHandle::new(), ProbeHandle::new());
            worker.dataflow::<u64, _, _>(|scope| {
                let options = SourceOptions {
                    out_of_orderness: Duration::ZERO,
                    idle_timeout: None,
                    tick: 1_000,
                    commit_interval: Duration::ZERO,
                    stop: Arc::new(AtomicBool::new(false)),
                    halted: Rc::new(Cell::new(0)),
                    fired: fired.clone(),
                    backlogs: Vec::new(),
                };
                let source = eddy::sources::event_source(
                    scope,
                    "scripted",
                    reader,
                    options,
                    settled.clone(),
                );
                let windows = source.events.window_aggregate(
                    Windows {
                        spec: WindowSpec::Tumbling { size: WINDOW },
                        lateness: 0,
                        emitted_before: 0,
                        delivery: Some(delivery.clone()),
                    },
                    |record: &Record| record[0].clone(),
                    FieldAggregates(vec![(AggregateKind::Count, 0)]),
                );
                windows
                    .fired
                    .probe_with(&fired)
                    .acknowledge()
                    .probe_with(&delivery.acknowledged);
                windows.settled.probe_with(&settled);
                windows
                    .results
                    .probe_with(&delivery.flushed)
                    .probe_with(&settled);
            });
            while worker.step() {}
        })
        .unwrap();
    }
    let commits = shared.commits.lock().unwrap();
    for worker in 0..2 {
        let mut last = (-1, 0);
        for &(_, position, emitted_before) in commits.iter().filter(|c| c.0 == worker) {
            for &(time, _) in &scripts[worker][..position as usize] {
                let fire = (time / WINDOW + 1) * WINDOW;
                assert!(
                    fire < emitted_before,
                    "worker {worker} committed its record at {time} (position {position}) with \
                     emitted_before {emitted_before}: a restart would emit the window firing at \
                     {fire} again without it"
                );
            }
            last = (position, emitted_before);
        }
        assert_eq!(
            last,
            (scripts[worker].len() as i64, u64::MAX),
            "worker {worker}'s last commit covers its whole partition"
        );
    }
}
