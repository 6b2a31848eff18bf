//! Running a job on timely workers: one process or a cluster, with a progress report.

use std::any::Any;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use sha2::{Digest as _, Sha256};
use timely::CommunicationConfig;
use timely::communication::AllocatorBuilder;

use crate::cluster::{self, ControlPlane, Peers, Settings};

use crate::dataflows::{JobProbes, RunOptions, build_job};
use crate::failure;
use crate::job::{Job, SourceKind, StateChange, section_name, state_changes};
use crate::sinks::SinkKind;
use crate::sinks::file::FileTarget;
use crate::sources::kafka::StartFrom;
use crate::state::{
    CheckpointStore, Checkpointing, Report, Restored, SectionSettings, Writer, WriterConfig,
};
use crate::stats::Stats;

/// Where a job runs: worker threads in this process, and the cluster of processes it is one of,
/// with timely's flags (`-w`, `-n`, `-p`, `-h`).
#[derive(Clone, Debug, clap::Args)]
pub struct ClusterArgs {
    /// Worker threads per process.
    #[arg(short = 'w', long = "workers", default_value_t = 1)]
    pub workers: usize,
    /// Number of processes in the cluster.
    #[arg(short = 'n', long = "processes", default_value_t = 1)]
    pub processes: usize,
    /// This process's index in the cluster (a Kubernetes StatefulSet can set `EDDY_PROCESS` to
    /// its pod's index).
    #[arg(
        short = 'p',
        long = "process",
        env = "EDDY_PROCESS",
        default_value_t = 0
    )]
    pub process: usize,
    /// Where the processes listen: a file with one `host:port` per process, or a pattern with
    /// `{i}` for the process index (e.g. `eddy-{i}.eddy:2101`). Default: 127.0.0.1:2101, 2102, …
    #[arg(short = 'h', long = "hosts")]
    pub hosts: Option<String>,
    /// The address this process listens on for its peers, when it is not its own entry of
    /// `--hosts` (e.g. `0.0.0.0:2101` behind a DNS name, or a port behind a proxy).
    #[arg(long)]
    pub listen: Option<String>,
    /// How long to wait at start-up for every process of the cluster to connect.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub peer_timeout: Duration,
    /// How long a process of the cluster may stay silent (frozen, or its network cut) before the
    /// others take it for lost and stop.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub peer_heartbeat: Duration,
}

impl ClusterArgs {
    /// `workers` threads in this one process.
    pub fn local(workers: usize) -> Self {
        ClusterArgs {
            workers,
            processes: 1,
            process: 0,
            hosts: None,
            listen: None,
            peer_timeout: Duration::from_secs(60),
            peer_heartbeat: Duration::from_secs(10),
        }
    }
}

/// A duration on the command line, as `10s`, `1m30s` or `250ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    s.parse::<jiff::SignedDuration>()
        .map_err(|e| e.to_string())
        .and_then(|d| Duration::try_from(d).map_err(|e| e.to_string()))
}

/// Measures, per worker, how long after the sources' frontier passes a time the sinks' flushed
/// frontier passes it too.
#[derive(Default)]
struct LatencyTracker {
    /// Source frontier advances not yet flushed: (frontier, when it was first seen).
    ingested: VecDeque<(u64, Instant)>,
}

impl LatencyTracker {
    fn observe(&mut self, probes: &JobProbes, stats: &Stats) {
        let now = Instant::now();
        let frontier = |probe: &timely::dataflow::ProbeHandle<u64>| {
            probe.with_frontier(|f| f.first().copied().unwrap_or(u64::MAX))
        };
        let ingested = frontier(&probes.ingested);
        // Frontier 0 is where every source starts, before it has read an event time.
        if ingested > 0 && self.ingested.back().is_none_or(|(t, _)| *t < ingested) {
            self.ingested.push_back((ingested, now));
        }
        let flushed = frontier(&probes.flushed);
        while let Some(&(t, since)) = self.ingested.front() {
            if t > flushed {
                break;
            }
            stats.record_latency(now - since);
            self.ingested.pop_front();
        }
    }
}

/// Where a failure arose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// In this process: its peers are told.
    Here,
    /// In a peer, or the loss of one: the control plane has heard of it.
    Peer,
}

/// The first failure of the job, here or in the cluster. Once one is reported, every worker
/// drops its dataflow at its next step and returns, so one worker's failure ends the whole job.
#[derive(Clone, Default)]
struct FirstFailure(Arc<(Mutex<Option<Failure>>, Condvar)>);

/// A failure's message and where it arose.
type Failure = (String, Origin);

impl FirstFailure {
    /// Keeps `message` if it is the first failure reported.
    fn report(&self, message: String, origin: Origin) {
        let mut first = self.0.0.lock().unwrap();
        if first.is_none() {
            failure::quiet_aftermath();
            *first = Some((message, origin));
            self.0.1.notify_all();
        }
    }

    /// The first failure, if any.
    fn first(&self) -> Option<Failure> {
        self.0.0.lock().unwrap().clone()
    }

    /// Whether a failure has been reported.
    fn any(&self) -> bool {
        self.0.0.lock().unwrap().is_some()
    }

    /// Waits at most `timeout` for a failure to be reported.
    fn wait(&self, timeout: Duration) -> bool {
        let first = self.0.0.lock().unwrap();
        let (first, _) = self
            .0
            .1
            .wait_timeout_while(first, timeout, |first| first.is_none())
            .unwrap();
        first.is_some()
    }
}

/// How long the workers have, once one has failed, to notice it and return.
const FAILURE_GRACE: Duration = Duration::from_secs(2);

/// How long a worker of a cluster that panicked waits for the control plane to name a cause
/// elsewhere: a peer's lost connection panics timely's threads here before its loss is known.
const PEER_NEWS: Duration = Duration::from_secs(2);

/// This process's part in a cluster, when it is in one.
struct Membership {
    peers: Peers,
    process: usize,
    control: ControlPlane,
}

impl Membership {
    /// The job's error as this process reports it: a failure here is prefixed with this
    /// process's name and sent to the peers; news from a peer already names it.
    fn failed(&self, message: String, origin: Origin) -> anyhow::Error {
        match origin {
            Origin::Here => {
                self.control.fail(&message);
                anyhow!("{}: {message}", self.peers.name(self.process))
            }
            Origin::Peer => anyhow!("{message}"),
        }
    }
}

/// Runs `job` to completion (bounded sources) or until `options.stop` is set, calling `report`
/// every `interval` with the live counters.
///
/// When any worker fails (an error building or running its part of the dataflow, or a panic),
/// every worker of the process stops, and the first failure is returned, naming the worker. A
/// worker that does not stop within a grace period (stuck in an operator) is left behind: the
/// error is returned anyway, and the caller is expected to exit.
///
/// In a cluster (`cluster.processes > 1`), the process first connects to every peer and checks
/// that they run the same job; a failure anywhere ends every process, each naming the process
/// that failed or was lost, and a stop of one stops all. A completed job sets
/// [`Stats::cluster`] to the cluster's totals.
pub fn run_job(
    job: Job,
    cluster: &ClusterArgs,
    options: RunOptions,
    interval: Duration,
    mut report: impl FnMut(&Stats, Duration) + Send + 'static,
) -> anyhow::Result<()> {
    let first_failure = FirstFailure::default();
    let Connected {
        builders,
        comms,
        member,
    } = connect(&job, cluster, &options, &first_failure)?;
    if let Err(e) = preflight(&job) {
        return Err(match member {
            Some(member) => {
                // Its threads wait on peers that are about to go: they end with the process.
                std::mem::forget(comms);
                member.failed(format!("{e:#}"), Origin::Here)
            }
            None => e,
        });
    }
    options.stats.workers.store(
        cluster.workers * cluster.processes,
        std::sync::atomic::Ordering::Release,
    );
    let checkpoints = CheckpointRun::start(&job, cluster, options.start, &options.reset_state)?;
    let checkpointing = checkpoints.as_ref().map(|c| c.checkpointing.clone());
    let job = Arc::new(job);
    let done = Arc::new(AtomicBool::new(false));
    let reporter = {
        let (stats, done) = (Arc::clone(&options.stats), Arc::clone(&done));
        thread::spawn(move || {
            let start = Instant::now();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                thread::park_timeout(interval);
                report(&stats, start.elapsed());
            }
        })
    };
    let failed = first_failure.clone();
    let stats = Arc::clone(&options.stats);
    let processes = cluster.processes;
    let in_cluster = member.is_some();
    let worker_config = timely::WorkerConfig::default();
    let result = timely::execute::execute_from(builders, comms, worker_config, move |worker| {
        let index = worker.index();
        let outcome = failure::catch(|| {
            let checkpoints = checkpointing.as_ref();
            run_worker(
                worker,
                &job,
                &options,
                processes,
                checkpoints,
                &first_failure,
            )
        });
        let message = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(format!("{e:#}")),
            // A lost peer panics the communication threads, then the workers: give the control
            // plane the time to say which peer it was.
            Err(_) if in_cluster && first_failure.wait(PEER_NEWS) => None,
            Err(caught) => Some(format!("worker {index}: {caught}")),
        };
        if let Some(message) = message {
            tracing::debug!(worker = index, "failed: {message}");
            first_failure.report(message, Origin::Here);
        }
        if first_failure.any() {
            // Timely steps the dataflows a worker leaves installed until they complete, which a
            // half-built or panicked one never does.
            for dataflow in worker.installed_dataflows() {
                worker.drop_dataflow(dataflow);
            }
        }
    });
    let outcome = match result {
        Ok(guards) => join_workers(guards, &failed),
        Err(e) => Err((format!("starting the timely workers: {e}"), Origin::Here)),
    };
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    reporter.thread().unpark();
    let _ = reporter.join();
    if let Some(checkpoints) = checkpoints {
        checkpoints.finish();
    }
    match (member, outcome.err()) {
        (None, None) => Ok(()),
        (None, Some((message, _))) => Err(anyhow!("{message}")),
        (Some(member), Some((message, origin))) => Err(member.failed(message, origin)),
        (Some(member), None) => {
            let totals = member.control.finish(stats.totals())?;
            let _ = stats.cluster.set((totals, processes));
            Ok(())
        }
    }
}

/// A process ready to start its workers.
struct Connected {
    /// The allocators of this process's workers.
    builders: Vec<AllocatorBuilder>,
    /// The guard of the threads that move their data.
    comms: Box<dyn Any + Send>,
    /// In a cluster, this process's membership.
    member: Option<Membership>,
}

/// Readies this process's workers: in a cluster, once every peer is connected.
fn connect(
    job: &Job,
    cluster: &ClusterArgs,
    options: &RunOptions,
    failure: &FirstFailure,
) -> anyhow::Result<Connected> {
    if cluster.processes <= 1 {
        let config = match cluster.workers {
            0 | 1 => CommunicationConfig::Thread,
            workers => CommunicationConfig::Process(workers),
        };
        let (builders, comms) = config
            .try_build()
            .map_err(|e| anyhow!("starting the timely workers: {e}"))?;
        return Ok(Connected {
            builders,
            comms,
            member: None,
        });
    }
    if cluster.process >= cluster.processes {
        bail!(
            "-p {} is not a process of a cluster of {} (-n): the indices are 0 to {}",
            cluster.process,
            cluster.processes,
            cluster.processes - 1
        );
    }
    let peers = Peers::resolve(cluster.hosts.as_deref(), cluster.processes)?;
    failure::install_hook();
    let settings = Settings {
        process: cluster.process,
        workers: cluster.workers,
        listen: cluster.listen.clone(),
        peer_timeout: cluster.peer_timeout,
        heartbeat: cluster.peer_heartbeat,
        fingerprint: fingerprint(job),
    };
    let failure = failure.clone();
    let joined = cluster::join(
        &peers,
        &settings,
        Arc::clone(&options.stop),
        move |message| {
            failure.report(message, Origin::Peer);
        },
    )
    .with_context(|| peers.name(cluster.process))?;
    tracing::info!(
        "joined the cluster as {} of {}: every peer connected and runs this job",
        peers.name(cluster.process),
        cluster.processes
    );
    let member = Membership {
        peers,
        process: cluster.process,
        control: joined.control,
    };
    Ok(Connected {
        builders: joined.builders,
        comms: joined.comms,
        member: Some(member),
    })
}

/// What every process of a cluster must agree on: the job file and the Eddy version.
fn fingerprint(job: &Job) -> [u8; 32] {
    let mut digest = Sha256::new();
    digest.update(job.digest);
    digest.update(env!("CARGO_PKG_VERSION").as_bytes());
    digest.finalize().into()
}
/// Checks what can fail before any input is read: every file source opens, and every file
/// sink can be written and is not one of the sources' files (which it would truncate).
fn preflight(job: &Job) -> anyhow::Result<()> {
    let mut inputs = Vec::new();
    for source in &job.sources {
        if let SourceKind::File { paths, .. } = &source.kind {
            for path in paths {
                let opened = std::fs::File::open(path)
                    .map_err(|e| anyhow!("source `{}`: {}: {e}", source.name, path.display()))?;
                drop(opened);
                inputs.push((path.canonicalize()?, &source.name));
            }
        }
    }
    for sink in &job.sinks {
        let SinkKind::File(target) = &sink.kind else {
            continue;
        };
        target
            .check_writable()
            .with_context(|| format!("sink `{}`", sink.name))?;
        if let FileTarget::Path(path) = target
            && let Ok(path) = path.canonicalize()
            && let Some((_, source)) = inputs.iter().find(|(input, _)| *input == path)
        {
            bail!(
                "sink `{}`: {} is the input of source `{source}`, which writing would destroy",
                sink.name,
                path.display()
            );
        }
    }
    Ok(())
}

/// Waits for the workers to return; once one has failed, waits at most [`FAILURE_GRACE`] for
/// the others. The result is the first failure, if any.
fn join_workers(
    guards: timely::communication::WorkerGuards<()>,
    failure: &FirstFailure,
) -> Result<(), Failure> {
    let (joined, all_joined) = std::sync::mpsc::channel();
    // Joining also ends the communication threads, whose panics (a peer gone) are the
    // failure's symptom: caught here, and reported as the failure.
    thread::spawn(move || {
        let outcomes =
            failure::catch(|| guards.join()).unwrap_or_else(|caught| vec![Err(caught.to_string())]);
        let _ = joined.send(outcomes);
    });
    let mut failed_at = None;
    let outcomes = loop {
        match all_joined.recv_timeout(Duration::from_millis(50)) {
            Ok(outcomes) => break outcomes,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                break vec![Err("the worker threads ended without a result".into())];
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Some(first) = failure.first() {
            let since = *failed_at.get_or_insert_with(Instant::now);
            if since.elapsed() > FAILURE_GRACE {
                tracing::warn!("some workers did not stop within {FAILURE_GRACE:?} of the failure");
                return Err(first);
            }
        }
    };
    if let Some(first) = failure.first() {
        return Err(first);
    }
    for outcome in outcomes {
        outcome.map_err(|e| (format!("a worker failed: {e}"), Origin::Here))?;
    }
    Ok(())
}

/// One worker's run: builds its part of the job and steps it until everything is flushed, the
/// job is stopped, or another worker has failed.
fn run_worker(
    worker: &mut timely::worker::Worker,
    job: &Job,
    options: &RunOptions,
    processes: usize,
    checkpoints: Option<&Checkpointing>,
    failure: &FirstFailure,
) -> anyhow::Result<()> {
    let dataflow = worker.next_dataflow_index();
    let probes = worker
        .dataflow::<u64, _, _>(|scope| build_job(scope, job, options, processes, checkpoints))?;
    options
        .stats
        .workers_ready
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    let mut latency = LatencyTracker::default();
    while !probes.flushed.done() {
        if failure.any() {
            worker.drop_dataflow(dataflow);
            break;
        }
        worker.step_or_park(Some(Duration::from_millis(20)));
        latency.observe(&probes, &options.stats);
        if probes.halted.get() == probes.sources {
            // Stopped: every source has committed what was flushed.
            worker.drop_dataflow(dataflow);
            break;
        }
    }
    Ok(())
}

/// Keeps the restored state of each section whose state-relevant settings are those of the
/// checkpoint, warns of the sections the job no longer has, starts the sections named in `reset`
/// empty, and refuses a section whose settings changed otherwise, naming it and the setting.
fn follow_changes(
    restored: &mut Restored,
    settings: &BTreeMap<String, SectionSettings>,
    reset: &[String],
) -> anyhow::Result<()> {
    let mut refused = Vec::new();
    for change in state_changes(&restored.manifest().settings, settings) {
        match &change {
            StateChange::Removed(_) => tracing::warn!("{change}"),
            StateChange::Changed { .. } if reset.iter().any(|r| r == change.name()) => {}
            StateChange::Changed { .. } => refused.push(change.to_string()),
        }
    }
    if !refused.is_empty() {
        return Err(anyhow::Error::new(StateChanged(refused.join("\n"))));
    }
    for name in reset {
        if restored.forget(name) {
            eprintln!("eddy: the state of `{name}` starts empty (--reset-state)");
        }
    }
    Ok(())
}

/// The job's stateful sections changed in ways their checkpointed state cannot follow: a run
/// refused like a bad job file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StateChanged(pub String);

/// A job's checkpoints while it runs: the writer, and the thread that logs what becomes of each
/// checkpoint.
struct CheckpointRun {
    checkpointing: Checkpointing,
    done: std::sync::mpsc::Sender<()>,
    logger: thread::JoinHandle<()>,
}

impl CheckpointRun {
    /// Opens the store of `job`'s `[checkpoints]`, if it has one, and restores its latest
    /// complete checkpoint unless `start` says where to start instead; the sections named in
    /// `reset` start empty.
    fn start(
        job: &Job,
        cluster: &ClusterArgs,
        start: StartFrom,
        reset: &[String],
    ) -> anyhow::Result<Option<CheckpointRun>> {
        let Some(spec) = &job.checkpoints else {
            if let Some(name) = reset.first() {
                bail!(
                    "--reset-state {name}: job `{}` has no [checkpoints]",
                    job.name
                );
            }
            return Ok(None);
        };
        let settings = job.state_settings();
        if let Some(name) = reset
            .iter()
            .find(|name| !settings.keys().any(|key| section_name(key) == *name))
        {
            bail!(
                "--reset-state {name}: job `{}` has no stateful section named `{name}`",
                job.name
            );
        }
        if cluster.processes > 1 {
            bail!(
                "job `{}` has [checkpoints], which a cluster of processes does not take yet: run \
                 it as one process (with -w threads), or without [checkpoints]",
                job.name
            );
        }
        let store = CheckpointStore::open(&spec.store)?;
        let mut restored = match start {
            StartFrom::Checkpoint => {
                let restore = store.restore()?;
                for skipped in &restore.skipped {
                    tracing::warn!(
                        "checkpoint {} in {} is not used: {}",
                        skipped.id,
                        spec.store,
                        skipped.reason
                    );
                }
                restore.restored
            }
            _ => None,
        };
        if let Some(restored) = restored.as_mut() {
            follow_changes(restored, &settings, reset)?;
        }
        match &restored {
            Some(r) => eprintln!(
                "eddy: restoring checkpoint {} (frontier {}) from {}",
                r.manifest().id,
                r.manifest().frontier,
                spec.store
            ),
            None => tracing::info!("starting afresh; checkpoints go to {}", spec.store),
        }
        let base = restored.as_ref().map(|r| r.manifest().clone());
        let peers = cluster.workers * cluster.processes;
        let config = WriterConfig {
            settings,
            history: base.as_ref().map_or_else(rand::random, |m| m.history),
            ..WriterConfig::new(&job.name, peers, spec.keep)
        };
        let writer = Writer::start(store, config, base)?;
        let checkpointing = Checkpointing::new(writer.handle(), spec.interval, restored);
        let (done, stop) = std::sync::mpsc::channel();
        let logger = thread::Builder::new()
            .name("eddy-checkpoint-log".into())
            .spawn(move || Self::log(writer, &stop))
            .context("starting the checkpoint log")?;
        Ok(Some(CheckpointRun {
            checkpointing,
            done,
            logger,
        }))
    }

    /// Logs each checkpoint's outcome until `stop` says the job is over, then finishes the
    /// writer (writing what was handed off) and logs the rest.
    fn log(writer: Writer, stop: &std::sync::mpsc::Receiver<()>) {
        let log = |report: Report| match report {
            Report::Complete(summary) => tracing::info!(
                id = summary.id,
                frontier = summary.frontier,
                size = summary.size,
                written = summary.written,
                "checkpoint complete"
            ),
            Report::Failed { id, reason } => tracing::warn!("checkpoint {id} failed: {reason}"),
            Report::Part(_) => {}
        };
        // Until the job is over, or the run that started it has gone.
        while let Err(std::sync::mpsc::TryRecvError::Empty) = stop.try_recv() {
            if let Ok(report) = writer.reports().recv_timeout(Duration::from_millis(100)) {
                log(report);
            }
        }
        writer.finish().into_iter().for_each(log);
    }

    /// Ends the log once the job is over.
    fn finish(self) {
        let _ = self.done.send(());
        let _ = self.logger.join();
    }
}
