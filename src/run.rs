//! Running a job on timely workers: one process or a cluster, with a progress report.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

use crate::dataflows::{JobProbes, RunOptions, build_job};
use crate::failure;
use crate::job::{Job, SinkKind, SourceKind};
use crate::sinks::file::FileTarget;
use crate::stats::Stats;

/// Timely cluster options, as timely itself names them.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ClusterArgs {
    /// Worker threads per process.
    #[arg(short = 'w', long = "workers", default_value_t = 1)]
    pub workers: usize,
    /// Number of processes in the cluster.
    #[arg(short = 'n', long = "processes", default_value_t = 1)]
    pub processes: usize,
    /// This process's index in the cluster.
    #[arg(short = 'p', long = "process", default_value_t = 0)]
    pub process: usize,
    /// File with one `host:port` per process (default: localhost:2101, 2102, …).
    #[arg(short = 'h', long = "hostfile")]
    pub hostfile: Option<String>,
}

impl ClusterArgs {
    /// `workers` threads in this one process.
    pub fn local(workers: usize) -> Self {
        ClusterArgs {
            workers,
            processes: 1,
            process: 0,
            hostfile: None,
        }
    }

    /// The timely configuration these options describe.
    pub fn config(&self) -> anyhow::Result<timely::Config> {
        let mut args = vec![
            "-w".to_string(),
            self.workers.to_string(),
            "-n".into(),
            self.processes.to_string(),
            "-p".into(),
            self.process.to_string(),
        ];
        if let Some(h) = &self.hostfile {
            args.extend(["-h".into(), h.clone()]);
        }
        timely::Config::from_args(args.into_iter()).map_err(|e| anyhow!("cluster options: {e}"))
    }
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

/// The first error of any worker of this process. Once one is reported, every worker drops its
/// dataflow at its next step and returns, so one worker's failure ends the whole job.
#[derive(Clone, Default)]
struct FirstFailure(Arc<OnceLock<String>>);

impl FirstFailure {
    /// Keeps `message` if it is the first failure reported.
    fn report(&self, message: String) {
        let _ = self.0.set(message);
    }

    /// The first failure, if any.
    fn first(&self) -> Option<&String> {
        self.0.get()
    }
}

/// How long the workers have, once one has failed, to notice it and return.
const FAILURE_GRACE: Duration = Duration::from_secs(2);

/// Runs `job` to completion (bounded sources) or until `options.stop` is set, calling `report`
/// every `interval` with the live counters.
///
/// When any worker fails (an error building or running its part of the dataflow, or a panic),
/// every worker of the process stops, and the first failure is returned, naming the worker. A
/// worker that does not stop within a grace period (stuck in an operator) is left behind: the
/// error is returned anyway, and the caller is expected to exit.
pub fn run_job(
    job: Job,
    cluster: &ClusterArgs,
    options: RunOptions,
    interval: Duration,
    mut report: impl FnMut(&Stats, Duration) + Send + 'static,
) -> anyhow::Result<()> {
    let config = cluster.config()?;
    preflight(&job)?;
    options.stats.workers.store(
        cluster.workers * cluster.processes,
        std::sync::atomic::Ordering::Release,
    );
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
    let first_failure = FirstFailure::default();
    let failed = first_failure.clone();
    let result = timely::execute(config, move |worker| {
        let index = worker.index();
        let outcome = failure::catch(|| run_worker(worker, &job, &options, &first_failure));
        let message = match outcome {
            Ok(Ok(())) => return,
            Ok(Err(e)) => format!("{e:#}"),
            Err(caught) => format!("worker {index}: {caught}"),
        };
        tracing::debug!(worker = index, "failed: {message}");
        first_failure.report(message);
        // Timely steps the dataflows a worker leaves installed until they complete, which a
        // half-built or panicked one never does.
        for dataflow in worker.installed_dataflows() {
            worker.drop_dataflow(dataflow);
        }
    });
    let outcome = match result {
        Ok(guards) => join_workers(guards, &failed),
        Err(e) => Err(anyhow!("starting the timely workers: {e}")),
    };
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    reporter.thread().unpark();
    let _ = reporter.join();
    outcome
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
) -> anyhow::Result<()> {
    let (joined, all_joined) = std::sync::mpsc::channel();
    thread::spawn(move || joined.send(guards.join()));
    let mut failed_at = None;
    let outcomes = loop {
        match all_joined.recv_timeout(Duration::from_millis(50)) {
            Ok(outcomes) => break outcomes,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                break vec![Err("the worker threads ended without a result".into())];
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Some(message) = failure.first() {
            let since = *failed_at.get_or_insert_with(Instant::now);
            if since.elapsed() > FAILURE_GRACE {
                tracing::warn!("some workers did not stop within {FAILURE_GRACE:?} of the failure");
                return Err(anyhow!("{message}"));
            }
        }
    };
    if let Some(message) = failure.first() {
        return Err(anyhow!("{message}"));
    }
    for outcome in outcomes {
        outcome.map_err(|e| anyhow!("a worker failed: {e}"))?;
    }
    Ok(())
}

/// One worker's run: builds its part of the job and steps it until everything is flushed, the
/// job is stopped, or another worker has failed.
fn run_worker(
    worker: &mut timely::worker::Worker,
    job: &Job,
    options: &RunOptions,
    failure: &FirstFailure,
) -> anyhow::Result<()> {
    let dataflow = worker.next_dataflow_index();
    let probes = worker.dataflow::<u64, _, _>(|scope| build_job(scope, job, options))?;
    options
        .stats
        .workers_ready
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    let mut latency = LatencyTracker::default();
    while !probes.flushed.done() {
        if failure.first().is_some() {
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
