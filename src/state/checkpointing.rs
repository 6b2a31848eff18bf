//! How a running job takes checkpoints: when one begins, at which frontier, and how each worker's
//! sources, operators and sinks hand off their parts of it.
//!
//! The protocol, for a checkpoint at frontier T:
//! - A source publishes, before it sends a batch, the greatest time that batch goes at
//!   ([`SourceCheckpoint::publish`]). When a checkpoint is due, the publish that finds it due
//!   begins it at T = one past the greatest time any source has published, so every record sent
//!   so far goes at a time before T, and every record at T or later is sent after the plan is
//!   set. A source hands off its positions at T (after its last record sent before T) once its
//!   capability has passed T: it sends nothing before T any more.
//! - A stateful operator keeps the input it receives at T or later aside until its input
//!   frontier has passed T and it has emitted everything due before T, hands off its state
//!   then, and goes on with what it kept aside. A sink does the same with what it writes.
//! - Each worker's parts make one [`WorkerSnapshot`], submitted to the [`Writer`] once every part
//!   of that worker has handed off; the writer completes the checkpoint once every worker has.
//!
//! A stop (Ctrl-C, SIGTERM) takes a final checkpoint: the sources read on until one begun after
//! the stop is complete ([`Checkpointing::final_checkpoint_done`]), then halt.
//!
//! Once a source has ended (a bounded file is read to its end), no checkpoint begins: what is
//! left of the job is the flush of its last windows, and a checkpoint would wait on sources
//! that no longer move. The one in flight, if any, still completes.
//!
//! [`Writer`]: super::Writer

use std::any::Any;
use std::cell::RefCell;
use std::hash::Hash;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::manifest::{CheckpointId, Plan};
use super::restore::Restored;
use super::snapshot::{Entries, WorkerSnapshot};
use super::writer::WriterHandle;

/// A job's checkpointing, shared by the workers of a process. Cheap to clone.
#[derive(Clone)]
pub struct Checkpointing {
    inner: Arc<Inner>,
}

struct Inner {
    writer: WriterHandle,
    interval: Duration,
    restored: Option<Arc<Restored>>,
    /// The id of the latest plan (0: none yet), readable without the lock.
    latest: AtomicU64,
    shared: Mutex<Shared>,
}

struct Shared {
    /// The latest plan begun.
    plan: Option<Plan>,
    /// When the next checkpoint is due.
    due: Instant,
    /// Per source instance, the greatest time it has published.
    published: Vec<u64>,
    /// A source has ended: no checkpoint begins any more.
    ended: bool,
    /// A stop waits for a checkpoint newer than this one.
    last_before_stop: Option<CheckpointId>,
}

impl std::fmt::Debug for Checkpointing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointing")
            .field("interval", &self.inner.interval)
            .field("restored", &self.restored().map(|r| r.manifest().id))
            .finish()
    }
}

impl Checkpointing {
    /// Checkpointing through `writer` every `interval`, restoring from `restored` if given.
    pub fn new(
        writer: WriterHandle,
        interval: Duration,
        restored: Option<Restored>,
    ) -> Checkpointing {
        Checkpointing {
            inner: Arc::new(Inner {
                writer,
                interval,
                restored: restored.map(Arc::new),
                latest: AtomicU64::new(0),
                shared: Mutex::new(Shared {
                    plan: None,
                    due: Instant::now() + interval,
                    published: Vec::new(),
                    ended: false,
                    last_before_stop: None,
                }),
            }),
        }
    }

    /// The job's name.
    pub fn job(&self) -> &str {
        self.inner.writer.job()
    }

    /// The history the job's checkpoints belong to (see [`super::Manifest::history`]).
    pub fn history(&self) -> u64 {
        self.inner.writer.history()
    }

    /// The wall-clock time between checkpoints.
    pub fn interval(&self) -> Duration {
        self.inner.interval
    }

    /// The checkpoint the job resumes from, if any.
    pub fn restored(&self) -> Option<&Restored> {
        self.inner.restored.as_deref()
    }

    /// The frontier of the restored checkpoint (0 when the job starts afresh): the restored
    /// state holds everything before it.
    pub fn restored_frontier(&self) -> u64 {
        self.restored().map_or(0, |r| r.manifest().frontier)
    }

    /// The latest plan begun, if it is newer than `handled`.
    pub fn newer_than(&self, handled: CheckpointId) -> Option<Plan> {
        if self.inner.latest.load(Ordering::Acquire) <= handled {
            return None;
        }
        self.inner.shared.lock().unwrap().plan.clone()
    }

    /// The collector of worker `index`'s parts.
    pub fn worker(&self, index: usize) -> WorkerCheckpoint {
        WorkerCheckpoint {
            checkpointing: self.clone(),
            collect: Rc::new(RefCell::new(Collect {
                index,
                parts: 0,
                current: None,
            })),
            shared: Rc::default(),
        }
    }

    /// For a stop: asks for a checkpoint to begin at once, and says whether one begun since the
    /// first ask is complete, so the job may end losing no progress. Also true when none can
    /// begin any more (a source has ended). A store that keeps failing leaves the stop to its
    /// timeout (`eddy --stop-timeout`).
    pub fn final_checkpoint_done(&self) -> bool {
        let mut shared = self.inner.shared.lock().unwrap();
        if shared.ended {
            return true;
        }
        let latest = self.inner.latest.load(Ordering::Acquire);
        let before = *shared.last_before_stop.get_or_insert(latest);
        if latest == before {
            // None begun since the stop: the next publish begins it.
            shared.due = Instant::now();
        }
        let complete = self.inner.writer.status().last_complete;
        complete.is_some_and(|id| id > before)
    }

    fn register_source(&self) -> usize {
        let mut shared = self.inner.shared.lock().unwrap();
        shared.published.push(0);
        shared.published.len() - 1
    }
}

/// One worker's collector: gathers the parts of its sources, operators and sinks into one
/// [`WorkerSnapshot`] per checkpoint. Cheap to clone; not `Send` (it lives on its worker).
#[derive(Clone)]
pub struct WorkerCheckpoint {
    checkpointing: Checkpointing,
    collect: Rc<RefCell<Collect>>,
    /// Values the worker's parts share, one per type (see [`WorkerCheckpoint::shared`]).
    shared: Rc<RefCell<Vec<Rc<dyn Any>>>>,
}

struct Collect {
    index: usize,
    /// How many parts hand off per checkpoint.
    parts: usize,
    /// The snapshot being gathered, and how many parts it has.
    current: Option<(WorkerSnapshot, usize)>,
}

impl WorkerCheckpoint {
    /// The job's checkpointing.
    pub fn checkpointing(&self) -> &Checkpointing {
        &self.checkpointing
    }

    /// The worker's index.
    pub fn index(&self) -> usize {
        self.collect.borrow().index
    }

    /// A part that hands off once per checkpoint. Parts are registered while the dataflow is
    /// built, before any checkpoint begins.
    pub fn part(&self) -> Part {
        self.collect.borrow_mut().parts += 1;
        Part {
            worker: self.clone(),
            handled: 0,
        }
    }

    /// The worker's one value of type `T`, made on first ask: how parts of one worker that
    /// know each other's kind exchange what a checkpoint needs beyond its snapshot (a source's
    /// positions offered to the transactions of the sinks on the same worker).
    pub fn shared<T: Default + 'static>(&self) -> Rc<T> {
        let mut shared = self.shared.borrow_mut();
        if let Some(value) = shared
            .iter()
            .find_map(|v| Rc::clone(v).downcast::<T>().ok())
        {
            return value;
        }
        let value = Rc::new(T::default());
        shared.push(Rc::clone(&value) as Rc<dyn Any>);
        value
    }

    /// The checkpointing of one source instance on this worker, as a part.
    pub fn source(&self) -> SourceCheckpoint {
        SourceCheckpoint {
            id: self.checkpointing.register_source(),
            part: self.part(),
        }
    }
}

/// One part of a worker's snapshot: a source, an operator or a sink. It hands off exactly once
/// per checkpoint.
pub struct Part {
    worker: WorkerCheckpoint,
    handled: CheckpointId,
}

impl Part {
    /// The latest plan, if this part has not handed off for it yet.
    pub fn pending(&self) -> Option<Plan> {
        self.worker.checkpointing.newer_than(self.handled)
    }

    /// The job's checkpointing.
    pub fn checkpointing(&self) -> &Checkpointing {
        self.worker.checkpointing()
    }

    /// The worker this part belongs to.
    pub fn worker(&self) -> &WorkerCheckpoint {
        &self.worker
    }

    /// Hands off this part of `plan`: `add` adds its sections or positions to the worker's
    /// snapshot, which goes to the writer once every part has handed off.
    pub fn hand_off(&mut self, plan: &Plan, add: impl FnOnce(&mut WorkerSnapshot)) {
        debug_assert!(plan.id > self.handled, "one handoff per checkpoint");
        self.handled = plan.id;
        let mut collect = self.worker.collect.borrow_mut();
        let index = collect.index;
        let (snapshot, parts) = collect
            .current
            .get_or_insert_with(|| (WorkerSnapshot::new(plan, index), 0));
        debug_assert_eq!(snapshot.checkpoint(), plan.id, "one checkpoint at a time");
        add(snapshot);
        *parts += 1;
        if *parts == collect.parts
            && let Some((snapshot, _)) = collect.current.take()
        {
            self.worker.checkpointing.inner.writer.submit(snapshot);
        }
    }
}

/// A source instance's part: it publishes the times it sends at, and hands off its positions.
pub struct SourceCheckpoint {
    id: usize,
    /// The part it hands off as.
    pub part: Part,
}

impl SourceCheckpoint {
    /// Publishes that this source is about to send at times up to `upto`, and gives the plan it
    /// has yet to hand off for, if any: beginning one if one is due.
    pub fn publish(&mut self, upto: u64) -> Option<Plan> {
        let inner = &self.part.worker.checkpointing.inner;
        let mut shared = inner.shared.lock().unwrap();
        let published = &mut shared.published[self.id];
        *published = (*published).max(upto);
        let now = Instant::now();
        if !shared.ended && now >= shared.due {
            let frontier = shared.published.iter().max().map_or(1, |t| t + 1);
            if let Some(plan) = inner.writer.begin(frontier) {
                tracing::debug!(id = plan.id, frontier, "checkpoint begins");
                inner.latest.store(plan.id, Ordering::Release);
                shared.plan = Some(plan);
                shared.due = now + inner.interval;
            }
        }
        shared
            .plan
            .clone()
            .filter(|plan| plan.id > self.part.handled)
    }

    /// Says that this source has ended: no checkpoint begins from now on.
    pub fn end(&mut self) {
        let inner = &self.part.worker.checkpointing.inner;
        let mut shared = inner.shared.lock().unwrap();
        if !shared.ended {
            tracing::info!(
                "a source has ended: no further checkpoints begin (the job is finishing)"
            );
        }
        shared.ended = true;
    }
}

/// A stateful operator's or sink's part: the section its state is stored as, and its share of
/// each checkpoint.
///
/// The contract, for a checkpoint at frontier T: the section asks [`SectionCheckpoint::pending`]
/// at the start of every activation and [`SectionCheckpoint::keeps_aside`] before it folds in
/// each input message; it sets aside every message at T or later, and once its input frontier
/// has passed T and it has emitted everything due before T, it hands off its state
/// ([`SectionCheckpoint::hand_off`]) and goes on with what it set aside. Asking at every
/// activation matters: an input frontier past T is only ever seen once the plan is visible, so
/// a section that asks first never acts past T before it knows of the checkpoint.
pub struct SectionCheckpoint {
    /// The section's name in the checkpoint: unique in the job.
    pub name: String,
    /// Its part of the worker's snapshots.
    pub part: Part,
    /// The checkpoint it has yet to hand off for, once it knows of it.
    plan: Option<Plan>,
}

impl SectionCheckpoint {
    /// A section named `name` of `worker`'s snapshots.
    pub fn new(worker: &WorkerCheckpoint, name: String) -> SectionCheckpoint {
        SectionCheckpoint {
            name,
            part: worker.part(),
            plan: None,
        }
    }

    /// The frontier of the checkpoint this section has yet to hand off for, looking for a newly
    /// begun one if it knows of none.
    pub fn pending(&mut self) -> Option<u64> {
        if self.plan.is_none() {
            self.plan = self.part.pending();
        }
        self.plan.as_ref().map(|p| p.frontier)
    }

    /// Whether input at timely time `time` waits for the pending checkpoint's handoff.
    pub fn keeps_aside(&mut self, time: u64) -> bool {
        self.pending().is_some_and(|frontier| time >= frontier)
    }

    /// Hands off the section's whole state for the pending checkpoint: (key hash, key, value)
    /// entries, each key once, the hash the one its operator exchanges the key by. The writer
    /// writes what changed since the last checkpoint ([`WorkerSnapshot::state`]). Does nothing
    /// when no checkpoint is pending.
    pub fn hand_off<K, V>(&mut self, entries: Entries<K, V>)
    where
        K: Serialize + Send + 'static,
        V: Serialize + Send + 'static,
    {
        if let Some(plan) = self.plan.take() {
            let name = &self.name;
            self.part
                .hand_off(&plan, |snapshot| snapshot.state(name, entries));
        }
    }

    /// This worker's share of the section's restored state (of a job of `peers` workers):
    /// empty when the job starts afresh or the checkpoint has no such section. An error when
    /// the state does not decode as `K` and `V`, naming the section.
    pub fn restore<K, V>(&self, peers: usize) -> Result<Entries<K, V>, String>
    where
        K: DeserializeOwned + Hash + Eq,
        V: DeserializeOwned,
    {
        let Some(restored) = self.part.checkpointing().restored() else {
            return Ok(Vec::new());
        };
        match restored.section(&self.name, self.part.worker.index(), peers) {
            None => Ok(Vec::new()),
            Some(Ok(entries)) => Ok(entries),
            Some(Err(e)) => Err(format!(
                "checkpoint {}: the state of `{}` does not read back: {e}",
                restored.manifest().id,
                self.name
            )),
        }
    }
}
