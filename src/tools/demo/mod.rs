//! `eddy demo`: the whole path on one machine with nothing installed. An in-process Kafka-protocol
//! cluster (librdkafka's mock cluster), generators feeding it (card transactions, user commands),
//! and the demo job reading it through the real Kafka source and writing through the real Kafka
//! sink, with a live panel ([`panel`]); notification requests go through the notification
//! adapter to a local CPaaS stand-in ([`notifications`]).
//!
//! At the end (the duration, or Ctrl-C) the feeds stop first, then the job runs on until every
//! notification request is decided, for at most [`DRAIN`]; the summary accounts for each one.

mod commands;
mod notifications;
mod panel;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use rdkafka::mocking::MockCluster;

use crate::dataflows::RunOptions;
use crate::job::Job;
use crate::run::{ClusterArgs, run_job};
use crate::server::Server;
use crate::sinks::SinkKind;
use crate::sinks::file::FileTarget;
use crate::sources::generator::GeneratorConfig;
use crate::sources::incidents::FraudMix;
use crate::sources::kafka::StartFrom;
use crate::stats::{Counter, Shown, Stats};
use crate::tools::produce::{ProduceOptions, produce};
use commands::{CardHolders, feed_commands};
use notifications::{Accounting, NotificationDemo};
use panel::{Figures, Panel, Tails};

/// The demo's job file, shipped as `examples/jobs/demo.toml`.
pub const DEMO_JOB: &str = include_str!("../../../examples/jobs/demo.toml");

const TOPICS: [&str; 9] = [
    "transactions",
    "commands",
    "events",
    "notifications",
    "metrics.country",
    "metrics.account",
    "alerts",
    "late",
    "dead-letters",
];

/// Settings of the demo.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Stop after this long (otherwise at Ctrl-C).
    pub duration: Option<Duration>,
    /// Transactions per second fed into the cluster.
    pub rate: u64,
    /// Partitions of the input topic.
    pub partitions: i32,
    /// Where the alerts and notification requests are written as JSON lines.
    pub out: PathBuf,
    /// Write them to standard output instead.
    pub stdout: bool,
    /// The address of the HTTP server, in place of the demo job's.
    pub http: std::net::SocketAddr,
}

/// How long the demo, once its feeds have stopped, waits for the notification requests still
/// pending to be decided.
pub const DRAIN: Duration = Duration::from_secs(10);

/// The demo's output files, in [`DemoOptions::out`].
const FILES: [&str; 3] = ["alerts.jsonl", "alert-holders.jsonl", "notifications.jsonl"];

/// Runs the demo until `stop` is set or the duration passes, then drains the notifications.
pub fn demo(
    options: &DemoOptions,
    cluster: &ClusterArgs,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mock = MockCluster::new(1).context("starting the in-process Kafka cluster")?;
    let brokers = mock.bootstrap_servers();
    for topic in TOPICS.iter().chain(&notifications::TOPICS) {
        mock.create_topic(topic, options.partitions, 1)
            .with_context(|| format!("creating topic `{topic}`"))?;
    }
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("creating the output directory {}", options.out.display()))?;
    // The feeds stop first; the job stops once the notifications are drained.
    let feeds_stop = Arc::new(AtomicBool::new(false));
    let job_stop = Arc::new(AtomicBool::new(false));
    let notify = NotificationDemo::start(&brokers, (options.rate / 20).max(1), &feeds_stop)?;
    let out = options.out.display().to_string();
    let mut job = Job::parse_with(
        Path::new("examples/jobs/demo.toml"),
        DEMO_JOB,
        &|name| match name {
            "EDDY_BROKERS" => Some(brokers.clone()),
            "EDDY_DEMO_OUT" => Some(out.clone()),
            _ => notify.var(name),
        },
    )?;
    if let Some(server) = &mut job.server {
        server.listen = options.http;
    }
    if options.stdout {
        for sink in &mut job.sinks {
            if let SinkKind::File(target) = &mut sink.kind {
                *target = FileTarget::Stdout;
            }
        }
    }
    eprintln!(
        "eddy demo: in-process Kafka cluster at {brokers}; feeding `transactions` at {} events/s \
         ({} partitions); job `{}` with {} workers. Ctrl-C stops.",
        options.rate,
        options.partitions,
        job.name,
        cluster.workers * cluster.processes
    );
    eprintln!(
        "  notifications: notifications.requested → CPaaS stand-in at {} (failing 17 % of calls) \
         → notifications.outcomes",
        notify.standin.base_url()
    );
    let streams = streams_line(options);
    eprintln!("  {streams}");

    let produced = Arc::new(AtomicU64::new(0));
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    // Round robin over this many accounts pays each every 5 s, under the rules' 10 s spans; an
    // incident every 2 s.
    let accounts = options.rate.max(1) * 5;
    let incident_every = options.rate.max(1) * 2;
    let feed = ProduceOptions {
        properties: vec![("bootstrap.servers".into(), brokers.clone())],
        topic: "transactions".into(),
        generator: GeneratorConfig {
            seed: now_ms,
            count: None,
            rate: options.rate,
            accounts,
            merchants: 5_000,
            disorder_ms: 1_500,
            start_ms: now_ms,
            paced: true,
            fraud: Some(FraudMix {
                every: incident_every,
                within_ms: 10_000,
            }),
        },
        malformed_every: Some(997),
    };
    let producer = {
        let (stop, produced) = (Arc::clone(&feeds_stop), Arc::clone(&produced));
        thread::spawn(move || produce(&feed, &stop, &produced))
    };
    let holders = CardHolders {
        first_account: accounts,
        seconds_apart: incident_every as f64 / options.rate.max(1) as f64,
    };
    let commands_sent = Arc::new(AtomicU64::new(0));
    let command_feed = {
        let (stop, sent, brokers) = (
            Arc::clone(&feeds_stop),
            Arc::clone(&commands_sent),
            brokers.clone(),
        );
        thread::spawn(move || feed_commands(&brokers, "commands", holders, &stop, &sent))
    };

    let stats = Arc::new(Stats::default());
    let views = job.view_stores();
    let server = Server::for_job(&job, &views, &stats)?;
    let mut footer = vec![match options.stdout {
        true => "  full streams: the Kafka topics, and standard output".to_string(),
        false => format!(
            "  full streams: the Kafka topics, and {}/*.jsonl",
            options.out.display()
        ),
    }];
    if let Some(server) = &server {
        let url = format!("http://{}", server.addr());
        eprintln!(
            "  views: {url}/views/users?limit=5, {url}/views/accounts, {url}/metrics, \
             {url}/health"
        );
        footer.push(format!(
            "  console: {url}/views/users?limit=5, {url}/metrics"
        ));
    }
    let notify = Arc::new(notify);
    let phase = Arc::new(Mutex::new(None::<String>));
    let stopper = {
        let (stats, notify, phase) = (Arc::clone(&stats), Arc::clone(&notify), Arc::clone(&phase));
        let flags = StopFlags {
            user: stop,
            feeds: Arc::clone(&feeds_stop),
            job: Arc::clone(&job_stop),
        };
        let deadline = options.duration.map(|d| Instant::now() + d);
        thread::spawn(move || stop_in_order(&flags, deadline, &notify, &stats, &phase))
    };
    let run = RunOptions {
        start: StartFrom::Earliest,
        until_end: false,
        stop: Arc::clone(&job_stop),
        stats: Arc::clone(&stats),
        views,
        reset_state: Vec::new(),
    };
    let tails = (!options.stdout).then(|| Tails {
        alerts: options.out.join(FILES[0]),
        notifications: options.out.join(FILES[2]),
    });
    let panel = Arc::new(Panel::new(tails, footer));
    let sources: Vec<String> = job.sources.iter().map(|s| s.name.clone()).collect();
    let mut last = (0, 0);
    let report = {
        let (produced, panel, notify) = (
            Arc::clone(&produced),
            Arc::clone(&panel),
            Arc::clone(&notify),
        );
        move |stats: &Stats, elapsed: Duration| {
            let (p, c) = (
                produced.load(Ordering::Relaxed),
                stats.get(Counter::EventsIn),
            );
            panel.show(&Figures {
                elapsed,
                produced: (p, p - last.0),
                processed: (c, c.saturating_sub(last.1)),
                stats,
                sources: &sources,
                notifications: notify.accounting(stats),
                phase: phase.lock().unwrap().clone(),
            });
            last = (p, c);
        }
    };
    let result = run_job(job, cluster, run, Duration::from_secs(1), report);
    panel.finish();
    job_stop.store(true, Ordering::Relaxed);
    stopper
        .join()
        .map_err(|_| anyhow::anyhow!("the demo's stop thread panicked"))?;
    result?;
    let sent = producer
        .join()
        .map_err(|_| anyhow::anyhow!("the producer thread panicked"))??;
    command_feed
        .join()
        .map_err(|_| anyhow::anyhow!("the command feed panicked"))??;
    let accounting = notify.accounting(&stats);
    let standin = Arc::into_inner(notify)
        .expect("the report and stop threads have ended")
        .finish()?;
    let latency = |q| {
        stats
            .output_latency_quantile(q)
            .map_or("n/a".to_string(), |d| format!("{:.2} s", d.as_secs_f64()))
    };
    eprintln!(
        "eddy demo: done. produced {sent} transactions and {} commands, processed {} events; \
         {}; output latency p50 {}, p99 {}",
        commands_sent.load(Ordering::Relaxed),
        stats.get(Counter::EventsIn),
        stats.totals().line(Shown::Console, ", "),
        latency(0.5),
        latency(0.99),
    );
    eprintln!(
        "eddy demo: notifications {accounting} (retried {}); {standin}",
        stats.get(Counter::NotificationRetries)
    );
    eprintln!("eddy demo: {}", pending_line(&accounting));
    if !options.stdout {
        let files: Vec<String> = FILES
            .iter()
            .map(|f| options.out.join(f).display().to_string())
            .collect();
        eprintln!(
            "eddy demo: the alerts and notification requests are in {}",
            files.join(", ")
        );
    }
    drop(mock);
    Ok(())
}

/// The demo's stop flags: the user's (a signal), and the ones it sets in turn.
struct StopFlags {
    /// Set by a signal.
    user: Arc<AtomicBool>,
    /// Stops the feeds.
    feeds: Arc<AtomicBool>,
    /// Stops the job; also set when the job has ended by itself (a failure).
    job: Arc<AtomicBool>,
}

/// Once the user stops the demo or the `deadline` passes, stops the feeds, waits up to
/// [`DRAIN`] for the pending notification requests to be decided (saying so in `phase`), then
/// stops the job. Returns early once the job has stopped.
fn stop_in_order(
    flags: &StopFlags,
    deadline: Option<Instant>,
    notify: &NotificationDemo,
    stats: &Stats,
    phase: &Mutex<Option<String>>,
) {
    let job_stopped = || flags.job.load(Ordering::Relaxed);
    while !flags.user.load(Ordering::Relaxed)
        && !job_stopped()
        && deadline.is_none_or(|d| Instant::now() < d)
    {
        thread::sleep(Duration::from_millis(50));
    }
    flags.feeds.store(true, Ordering::Relaxed);
    let draining = Instant::now();
    while notify.accounting(stats).pending > 0 && draining.elapsed() < DRAIN && !job_stopped() {
        *phase.lock().unwrap() = Some(format!(
            "stopping: feeds stopped; waiting for the pending notification requests (at most \
             {:.0} s more)",
            DRAIN.saturating_sub(draining.elapsed()).as_secs_f64()
        ));
        thread::sleep(Duration::from_millis(100));
    }
    *phase.lock().unwrap() = Some("stopping: the job commits and ends".into());
    flags.job.store(true, Ordering::Relaxed);
}

/// Where the full streams go.
fn streams_line(options: &DemoOptions) -> String {
    let files = match options.stdout {
        true => "standard output".to_string(),
        false => format!("{}/{{{}}}", options.out.display(), FILES.join(",")),
    };
    format!(
        "full streams: Kafka topics {} (in process); alerts and notification requests also to \
         {files}",
        TOPICS.join(", ")
    )
}

/// What the summary says of the requests still pending at the end.
fn pending_line(accounting: &Accounting) -> String {
    match accounting.pending {
        0 => "every notification request was decided".to_string(),
        n => format!(
            "{n} notification requests were not sent: still pending after the {} s drain, in \
             their topic or the adapter's queue. The in-process cluster ends with the demo, so \
             they are dropped; a job on a real cluster resumes them at its next run (their \
             offsets are not committed)",
            DRAIN.as_secs()
        ),
    }
}
