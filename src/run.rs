//! Running a job on timely workers: one process or a cluster, with a progress report.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::anyhow;

use crate::dataflows::{JobProbes, RunOptions, build_job};
use crate::job::Job;
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

/// Runs `job` to completion (bounded sources) or until `options.stop` is set, calling `report`
/// every `interval` with the live counters.
pub fn run_job(
    job: Job,
    cluster: &ClusterArgs,
    options: RunOptions,
    interval: Duration,
    mut report: impl FnMut(&Stats, Duration) + Send + 'static,
) -> anyhow::Result<()> {
    let config = cluster.config()?;
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
    let result = timely::execute(config, move |worker| -> anyhow::Result<()> {
        let dataflow = worker.next_dataflow_index();
        let probes = worker.dataflow::<u64, _, _>(|scope| build_job(scope, &job, &options))?;
        options
            .stats
            .workers_ready
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let mut latency = LatencyTracker::default();
        while !probes.flushed.done() {
            worker.step_or_park(Some(Duration::from_millis(20)));
            latency.observe(&probes, &options.stats);
            if probes.halted.get() == probes.sources {
                // Stopped: every source has committed what was flushed.
                worker.drop_dataflow(dataflow);
                break;
            }
        }
        Ok(())
    });
    let outcomes = match result {
        Ok(guards) => guards.join(),
        Err(e) => vec![Err(format!("starting the timely workers: {e}"))],
    };
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    reporter.thread().unpark();
    let _ = reporter.join();
    for outcome in outcomes {
        outcome.map_err(|e| anyhow!("a worker failed: {e}"))??;
    }
    Ok(())
}
