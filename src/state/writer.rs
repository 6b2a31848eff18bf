//! The background writer: workers hand off their snapshots through a bounded channel and go on;
//! one thread encodes them, writes their runs, commits the manifest once every worker's part is
//! in, applies retention, and reports.
//!
//! One checkpoint is in flight at a time: [`WriterHandle::begin`] gives no plan until the last
//! checkpoint is complete or has failed, so checkpoints follow each other as fast as they can be
//! written and never pile up, however short the interval.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{Context, Result};

use super::format::{Frame, Kind};
use super::manifest::{
    self, CheckpointId, Manifest, Plan, Run, SectionPart, SectionSettings, WorkerPart,
};
use super::snapshot::{Digest, Handoff, WorkerSnapshot};
use super::store::{CheckpointStore, manifest_key, run_key};

/// How a writer runs.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// The job's name, recorded in manifests.
    pub job: String,
    /// The history its checkpoints belong to (see [`Manifest::history`]).
    pub history: u64,
    /// The number of workers of the job, in all processes: a checkpoint is complete once each has
    /// handed off.
    pub peers: usize,
    /// Complete checkpoints kept.
    pub keep: usize,
    /// Whether this writer commits manifests. In a job of several processes one writer commits,
    /// and the others only write their workers' runs and report their parts
    /// ([`Report::Part`]), which the committer is given with [`WriterHandle::add_part`].
    pub commit: bool,
    /// Snapshots queued before [`WriterHandle::submit`] waits.
    pub queue: usize,
    /// The state-relevant settings of the job's stateful sections, recorded in every manifest.
    pub settings: BTreeMap<String, SectionSettings>,
}

impl WriterConfig {
    /// A committing writer for `peers` workers that keeps `keep` checkpoints.
    pub fn new(job: &str, peers: usize, keep: usize) -> WriterConfig {
        WriterConfig {
            job: job.into(),
            history: 0,
            peers,
            keep: keep.max(1),
            commit: true,
            queue: peers.max(1),
            settings: BTreeMap::new(),
        }
    }
}

/// A checkpoint's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// The checkpoint is complete.
    Complete(Summary),
    /// The checkpoint failed and its files were removed. The last complete checkpoint stays the
    /// base, so sections that handed off for this one hand off their whole state next (see
    /// [`Plan::delta_base`]).
    Failed {
        /// The checkpoint.
        id: CheckpointId,
        /// Why, for the log.
        reason: String,
    },
    /// (A writer that does not commit.) A worker's part is written, for the committer; or why it
    /// could not be.
    Part(PartResult),
}

/// A worker's part, or the checkpoint and why its part could not be written.
pub type PartResult = Result<WorkerPart, (CheckpointId, String)>;

/// A complete checkpoint, in figures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// The checkpoint.
    pub id: CheckpointId,
    /// Its frontier time.
    pub frontier: u64,
    /// The bytes a restore of it reads.
    pub size: u64,
    /// The bytes it wrote.
    pub written: u64,
    /// Sections of the previous checkpoint that no worker handed off, now dropped.
    pub dropped: Vec<String>,
    /// Older checkpoints deleted by retention.
    pub retired: Vec<CheckpointId>,
}

/// What a writer is doing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// The last complete checkpoint (written by this writer or restored).
    pub last_complete: Option<CheckpointId>,
    /// The checkpoint being written.
    pub in_flight: Option<Plan>,
    next: CheckpointId,
    rewrite: BTreeSet<String>,
}

enum Message {
    Snapshot(WorkerSnapshot),
    Part(PartResult),
    Stop,
}

/// The writer: owns its thread; [`Writer::handle`] gives the handles workers submit through.
///
/// # Examples
///
/// ```
/// use eddy::state::{CheckpointStore, Location, Report, Writer, WriterConfig, WorkerSnapshot};
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = CheckpointStore::open(&Location::Dir(dir.path().into())).unwrap();
/// let writer = Writer::start(store.clone(), WriterConfig::new("job", 1, 3), None).unwrap();
/// let handle = writer.handle();
/// let plan = handle.begin(1_000).unwrap();
/// assert!(handle.begin(2_000).is_none(), "one checkpoint at a time");
/// let mut snapshot = WorkerSnapshot::new(&plan, 0);
/// snapshot.whole("counts", vec![(1u64, 1u64, 10u64)]);
/// handle.submit(snapshot);
/// match writer.reports().recv().unwrap() {
///     Report::Complete(summary) => assert_eq!(summary.id, plan.id),
///     other => panic!("{other:?}"),
/// }
/// assert_eq!(store.checkpoints().unwrap().len(), 1);
/// ```
pub struct Writer {
    handle: WriterHandle,
    reports: Receiver<Report>,
    thread: JoinHandle<()>,
}

/// A worker's end of the writer.
#[derive(Clone)]
pub struct WriterHandle {
    sender: SyncSender<Message>,
    status: Arc<Mutex<Status>>,
    job: Arc<str>,
    history: u64,
}

impl Writer {
    /// Starts a writer on `store`, continuing from `base` (the restored checkpoint's manifest, if
    /// any): its chains are extended, and retention keeps it and its ancestors. Checkpoints
    /// outside that history (newer ones the restore passed over, or all of them when `base` is
    /// `None`: the job started afresh) are deleted once the first checkpoint commits, since the
    /// job's outputs no longer follow from them.
    pub fn start(
        store: CheckpointStore,
        config: WriterConfig,
        base: Option<Manifest>,
    ) -> Result<Writer> {
        let status = Arc::new(Mutex::new(Status {
            last_complete: base.as_ref().map(|b| b.id),
            in_flight: None,
            next: store.next_id()?,
            rewrite: base.as_ref().map(Manifest::rewrites).unwrap_or_default(),
        }));
        let (sender, messages) = mpsc::sync_channel(config.queue);
        let (job, history) = (Arc::from(config.job.as_str()), config.history);
        let (report, reports) = mpsc::channel();
        let mut thread = Thread {
            store,
            config,
            status: Arc::clone(&status),
            report,
            known: base.into_iter().map(|m| (m.id, m)).collect(),
            parts: BTreeMap::new(),
            digests: HashMap::new(),
            pending: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("eddy-checkpoint-writer".into())
            .spawn(move || thread.run(messages))
            .context("starting the checkpoint writer")?;
        Ok(Writer {
            handle: WriterHandle {
                sender,
                status,
                job,
                history,
            },
            reports,
            thread,
        })
    }

    /// A handle to submit through (cheap to clone, `Send`).
    pub fn handle(&self) -> WriterHandle {
        self.handle.clone()
    }

    /// The outcomes of checkpoints, in order.
    pub fn reports(&self) -> &Receiver<Report> {
        &self.reports
    }

    /// Writes what was submitted before this call, stops the thread, and gives the reports not
    /// yet received.
    pub fn finish(self) -> Vec<Report> {
        let _ = self.handle.sender.send(Message::Stop);
        let _ = self.thread.join();
        self.reports.try_iter().collect()
    }
}

impl WriterHandle {
    /// The job's name.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// The history its checkpoints belong to (see [`Manifest::history`]).
    pub fn history(&self) -> u64 {
        self.history
    }

    /// The plan of the next checkpoint at frontier `frontier`, or `None` while one is in flight.
    pub fn begin(&self, frontier: u64) -> Option<Plan> {
        let mut status = self.status.lock().unwrap();
        if status.in_flight.is_some() {
            return None;
        }
        let plan = Plan {
            id: status.next,
            frontier,
            base: status.last_complete,
            rewrite: status.rewrite.clone(),
        };
        status.next += 1;
        status.in_flight = Some(plan.clone());
        Some(plan)
    }

    /// Hands a worker's snapshot to the writer; waits only while the queue is full.
    pub fn submit(&self, snapshot: WorkerSnapshot) {
        let _ = self.sender.send(Message::Snapshot(snapshot));
    }

    /// Gives the committer a part that another process's writer wrote (or its failure).
    pub fn add_part(&self, part: PartResult) {
        let _ = self.sender.send(Message::Part(part));
    }

    /// What the writer is doing.
    pub fn status(&self) -> Status {
        self.status.lock().unwrap().clone()
    }
}

/// The writer thread's state.
struct Thread {
    store: CheckpointStore,
    config: WriterConfig,
    status: Arc<Mutex<Status>>,
    report: mpsc::Sender<Report>,
    /// Manifests of the current history: the base and those committed since (pruned to those
    /// kept).
    known: HashMap<CheckpointId, Manifest>,
    /// The parts in so far, of the checkpoint in flight.
    parts: BTreeMap<usize, WorkerPart>,
    /// Per (section, worker), the digest of the state last written, and the checkpoint it is
    /// of: the state a [`Handoff::State`] is compared with, when the plan's base is that
    /// checkpoint.
    digests: HashMap<(String, usize), (CheckpointId, Digest)>,
    /// The digests of the checkpoint in flight (`None`: the section's state on the worker is not
    /// known from this handoff), which replace those above once it is complete.
    pending: Vec<((String, usize), Option<Digest>)>,
}

impl Thread {
    fn run(&mut self, messages: Receiver<Message>) {
        for message in messages {
            let part = match message {
                Message::Stop => return,
                Message::Part(part) => part,
                Message::Snapshot(snapshot) => {
                    let id = snapshot.checkpoint;
                    if self.config.commit && self.in_flight().is_none_or(|plan| plan.id != id) {
                        // Of a checkpoint that failed, or was never begun: nothing to write.
                        continue;
                    }
                    self.write(snapshot).map_err(|e| (id, format!("{e:#}")))
                }
            };
            if !self.config.commit {
                let _ = self.report.send(Report::Part(part));
                continue;
            }
            match part {
                Ok(part)
                    if self
                        .in_flight()
                        .is_some_and(|plan| plan.id == part.checkpoint) =>
                {
                    self.parts.insert(part.worker, part);
                    if self.parts.len() == self.config.peers {
                        self.commit();
                    }
                }
                Ok(_) => {}
                Err((id, reason)) => self.fail(id, reason),
            }
        }
    }

    fn in_flight(&self) -> Option<Plan> {
        self.status.lock().unwrap().in_flight.clone()
    }

    /// Encodes and writes a snapshot's runs, concurrently with each other.
    fn write(&mut self, snapshot: WorkerSnapshot) -> Result<WorkerPart> {
        let (id, worker, peers) = (snapshot.checkpoint, snapshot.worker, self.config.peers);
        let plan = self.in_flight().filter(|plan| plan.id == id);
        let mut sections = BTreeMap::new();
        let mut puts = Vec::new();
        let encode = || -> Result<()> {
            for section in snapshot.sections {
                if sections.contains_key(&section.name) {
                    anyhow::bail!(
                        "worker {worker} handed off section `{}` twice",
                        section.name
                    );
                }
                let digest_key = (section.name.clone(), worker);
                let (since, previous) = match section.handoff {
                    Handoff::Whole => (None, None),
                    Handoff::Changes(since) => (Some(since), None),
                    Handoff::State => {
                        let previous = self.digests.get(&digest_key).filter(|(of, _)| {
                            plan.as_ref()
                                .is_some_and(|p| p.delta_base(&section.name, Some(*of)).is_some())
                        });
                        (previous.map(|p| p.0), previous.map(|p| &p.1))
                    }
                };
                let mut frame = Frame::new(Kind::Run);
                let encoded = section
                    .entries
                    .encode(previous, &mut frame, (worker, peers))?;
                // Only a state handed off whole is known whole from its digest.
                let digest = (section.handoff == Handoff::State && encoded.digest.exact)
                    .then_some(encoded.digest);
                self.pending.push((digest_key, digest));
                let run = (encoded.entries > 0).then(|| {
                    let bytes = frame.finish();
                    let path = run_key(id, &section.name, worker, peers);
                    let run = Run {
                        path: path.clone(),
                        checkpoint: id,
                        worker,
                        peers,
                        full: since.is_none(),
                        aligned: encoded.aligned,
                        bytes: bytes.len() as u64,
                        entries: encoded.entries,
                    };
                    puts.push(self.store.spawn(self.store.put_future(path, bytes)));
                    run
                });
                sections.insert(section.name, SectionPart { since, run });
            }
            Ok(())
        };
        let encoded = encode();
        // Every put begun is awaited, after an error too, so that a failed checkpoint's files
        // are all in place before they are removed.
        let mut written = Ok(());
        for put in puts {
            let result = self.store.block_on(put).map_err(anyhow::Error::from);
            if written.is_ok() {
                written = result.and_then(|put| put);
            }
        }
        encoded?;
        written?;
        Ok(WorkerPart {
            checkpoint: id,
            worker,
            sections,
            positions: snapshot.positions,
        })
    }

    /// Commits the checkpoint in flight from its parts.
    fn commit(&mut self) {
        let parts: Vec<WorkerPart> = std::mem::take(&mut self.parts).into_values().collect();
        let Some(plan) = self.in_flight() else {
            return;
        };
        let base = plan.base.and_then(|id| self.known.get(&id));
        let created_ms = jiff::Timestamp::now().as_millisecond().max(0) as u64;
        let manifest = manifest::commit(
            &plan,
            &self.config.job,
            created_ms,
            base,
            self.config.peers,
            &parts,
        )
        .and_then(|mut m| {
            m.settings = self.config.settings.clone();
            m.history = self.config.history;
            let bytes =
                crate::state::format::write(Kind::Manifest, &m).map_err(|e| e.to_string())?;
            self.store
                .put(&manifest_key(m.id), bytes)
                .map_err(|e| format!("{e:#}"))?;
            Ok(m)
        });
        let manifest = match manifest {
            Ok(manifest) => manifest,
            Err(reason) => return self.fail(plan.id, reason),
        };
        let dropped = base
            .map(|b| {
                b.sections
                    .keys()
                    .filter(|name| !manifest.sections.contains_key(*name))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let summary = Summary {
            id: manifest.id,
            frontier: manifest.frontier,
            size: manifest.size(),
            written: manifest.written(),
            dropped,
            retired: Vec::new(),
        };
        let rewrite = manifest.rewrites();
        for (key, digest) in std::mem::take(&mut self.pending) {
            match digest {
                Some(digest) => self.digests.insert(key, (plan.id, digest)),
                None => self.digests.remove(&key),
            };
        }
        self.known.insert(manifest.id, manifest);
        let retired = self.retain(plan.id).unwrap_or_else(|e| {
            tracing::warn!("checkpoint retention in {}: {e:#}", self.store);
            Vec::new()
        });
        {
            let mut status = self.status.lock().unwrap();
            status.last_complete = Some(plan.id);
            status.in_flight = None;
            status.rewrite = rewrite;
        }
        let _ = self
            .report
            .send(Report::Complete(Summary { retired, ..summary }));
    }

    /// Keeps checkpoint `newest` and its nearest ancestors, `keep` in all; deletes every other
    /// manifest up to `newest` and every file up to `newest` that no kept manifest names (which
    /// also removes what failed or interrupted checkpoints left).
    fn retain(&mut self, newest: CheckpointId) -> Result<Vec<CheckpointId>> {
        let mut kept = Vec::new();
        let mut next = Some(newest);
        while let Some(id) = next
            && kept.len() < self.config.keep
        {
            if !self.known.contains_key(&id) {
                match self.store.manifest(id) {
                    Ok(manifest) => {
                        self.known.insert(id, manifest);
                    }
                    Err(_) => break,
                }
            }
            kept.push(id);
            next = self.known[&id].parent;
        }
        self.known.retain(|id, _| kept.contains(id));
        let referenced: HashSet<&str> = self
            .known
            .values()
            .flat_map(Manifest::runs)
            .map(|run| run.path.as_str())
            .collect();
        let retired: Vec<CheckpointId> = self
            .store
            .manifest_ids()?
            .into_iter()
            .filter(|id| *id <= newest && !kept.contains(id))
            .collect();
        // Manifests go first: a checkpoint loses its manifest before any of its files.
        self.store
            .delete(retired.iter().map(|id| manifest_key(*id)).collect())?;
        let unreferenced = self
            .store
            .data()?
            .into_iter()
            .filter(|(key, id, _)| *id <= newest && !referenced.contains(key.as_str()))
            .map(|(key, _, _)| key)
            .collect();
        self.store.delete(unreferenced)?;
        Ok(retired)
    }

    /// Reports checkpoint `id` failed, removes its files, and lets the next one begin.
    fn fail(&mut self, id: CheckpointId, reason: String) {
        self.parts.clear();
        self.pending.clear();
        let files = self.store.data().map(|data| {
            data.into_iter()
                .filter(|(_, of, _)| *of == id)
                .map(|(key, _, _)| key)
                .collect::<Vec<_>>()
        });
        if let Err(e) = files.and_then(|files| self.store.delete(files)) {
            tracing::warn!("removing the files of failed checkpoint {id}: {e:#}");
        }
        let mut status = self.status.lock().unwrap();
        if status.in_flight.as_ref().is_some_and(|plan| plan.id == id) {
            status.in_flight = None;
        }
        drop(status);
        let _ = self.report.send(Report::Failed { id, reason });
    }
}
