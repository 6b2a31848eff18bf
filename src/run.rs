//! Running a job on timely workers: one process or a cluster, with a progress report.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::anyhow;

use crate::dataflows::{RunOptions, build_job};
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
        let probe = worker.dataflow::<u64, _, _>(|scope| build_job(scope, &job, &options))?;
        while !probe.done() {
            worker.step_or_park(Some(Duration::from_millis(20)));
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
