//! A source's `max_drift`: a worker whose share of the source runs ahead of the slowest worker's
//! by more than that much event time stops reading until the others catch up.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eddy::Record;
use eddy::Value;
use eddy::sources::{Checkpoint, Positioned, ReadBatch, ReadStatus, Reader, SourceOptions};
use timely::dataflow::ProbeHandle;

const TICK: u64 = 1_000;
const DRIFT: u64 = 5_000;
const END: u64 = 60_000;

/// One partition with a record every `step` ms of event time up to [`END`], one per read.
/// Worker 1 reads slowly (it says it is waiting after each record) and publishes how far it
/// has read; worker 0 reads as fast as it is let, and notes every read it was let make while
/// its frontier was further ahead of worker 1 than the drift allows.
struct Paced {
    worker: usize,
    step: u64,
    next: u64,
    /// The latest event time worker 1 has read.
    slow: Arc<AtomicU64>,
    too_far: Arc<Mutex<Vec<String>>>,
}

impl Reader<Record> for Paced {
    fn partition_name(&self, partition: usize) -> String {
        partition.to_string()
    }

    fn partitions(&self) -> usize {
        1
    }

    fn read(&mut self, batch: &mut ReadBatch<Record>) -> ReadStatus {
        if self.next > END {
            batch.finished.push(0);
            return ReadStatus::Done;
        }
        if self.worker == 0 && self.next > 0 {
            // This worker's frontier (no out-of-orderness, in ticks) against the most the
            // slowest worker's can be: just past what worker 1 has read.
            let frontier = (self.next - self.step + 1) / TICK * TICK;
            let slowest = self.slow.load(Ordering::SeqCst) + 1;
            if frontier > slowest + DRIFT {
                self.too_far.lock().unwrap().push(format!(
                    "worker 0 read at frontier {frontier} while worker 1 had read to {slowest}"
                ));
            }
        }
        let time = self.next;
        self.next += self.step;
        batch.events.push(Positioned {
            partition: 0,
            next: (time / self.step + 1) as i64,
            item: (time, vec![Value::Int(time as i64)].into()),
        });
        if self.worker == 1 {
            self.slow.store(time, Ordering::SeqCst);
            ReadStatus::Waiting
        } else {
            ReadStatus::Ready
        }
    }

    fn commit(&mut self, _positions: &[i64], _checkpoint: &Checkpoint, _last: bool) {}
}

/// Runs the two readers with `max_drift`; returns the reads worker 0 made too far ahead.
fn too_far_ahead(max_drift: Option<Duration>) -> Vec<String> {
    let slow = Arc::new(AtomicU64::new(0));
    let too_far = Arc::new(Mutex::new(Vec::new()));
    let (shared_slow, shared_too_far) = (Arc::clone(&slow), Arc::clone(&too_far));
    timely::execute(timely::Config::process(2), move |worker| {
        let index = worker.index();
        let reader = Paced {
            worker: index,
            step: if index == 0 { 100 } else { 1_000 },
            next: 0,
            slow: Arc::clone(&shared_slow),
            too_far: Arc::clone(&shared_too_far),
        };
        worker.dataflow::<u64, _, _>(|scope| {
            let options = SourceOptions {
                out_of_orderness: Duration::ZERO,
                idle_timeout: None,
                max_drift,
                tick: TICK,
                commit_interval: Duration::from_secs(60),
                stop: Arc::new(AtomicBool::new(false)),
                halted: Rc::new(Cell::new(0)),
                fired: ProbeHandle::new(),
                backlogs: Vec::new(),
            };
            eddy::sources::event_source(scope, "paced", reader, options, ProbeHandle::new(), None);
        });
        while worker.step() {}
    })
    .unwrap();
    too_far.lock().unwrap().clone()
}

#[test]
fn a_worker_ahead_by_more_than_max_drift_waits_for_the_slowest() {
    let too_far = too_far_ahead(Some(Duration::from_millis(DRIFT)));
    assert!(too_far.is_empty(), "{too_far:#?}");
    // The check can fail: without the bound, worker 0 reads its whole partition at once.
    assert!(!too_far_ahead(None).is_empty());
}
