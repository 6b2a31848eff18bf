//! `eddy demo`: the whole path on one machine with nothing installed. An in-process Kafka-protocol
//! cluster (librdkafka's mock cluster), generators feeding it (card transactions, user commands),
//! and the demo job reading it through the real Kafka source and writing through the real Kafka
//! sink, with live progress; notification requests go through the notification adapter to a
//! local CPaaS stand-in ([`notifications`]).

mod commands;
mod notifications;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use rdkafka::mocking::MockCluster;

use crate::dataflows::RunOptions;
use crate::job::Job;
use crate::produce::{ProduceOptions, produce};
use crate::run::{ClusterArgs, run_job};
use crate::server::Server;
use crate::sources::generator::GeneratorConfig;
use crate::sources::incidents::FraudMix;
use crate::sources::kafka::StartFrom;
use crate::stats::Stats;
use commands::{CardHolders, feed_commands};
use notifications::NotificationDemo;

/// The demo's job file, shipped as `examples/jobs/demo.toml`.
pub const DEMO_JOB: &str = include_str!("../../examples/jobs/demo.toml");

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
}

/// Runs the demo until `stop` is set or the duration passes.
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
    let notify = NotificationDemo::start(&brokers, (options.rate / 20).max(1), &stop)?;
    let job = Job::parse_with(Path::new("examples/jobs/demo.toml"), DEMO_JOB, &|name| {
        (name == "EDDY_BROKERS")
            .then(|| brokers.clone())
            .or_else(|| notify.var(name))
    })?;
    eprintln!(
        "eddy demo: in-process Kafka cluster at {brokers}; feeding `transactions` at {} events/s \
         ({} partitions); job `{}` with {} workers. Ctrl-C stops.",
        options.rate,
        options.partitions,
        job.name,
        cluster.workers * cluster.processes
    );
    eprintln!(
        "  outputs: metrics.country, metrics.account, alerts, events, notifications, late, \
         dead-letters (Kafka topics); alerts and notification requests are also printed below"
    );
    eprintln!(
        "  notifications: notifications.requested → CPaaS stand-in at {} (failing 17 % of calls) \
         → notifications.outcomes",
        notify.standin.base_url()
    );

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
        let (stop, produced) = (Arc::clone(&stop), Arc::clone(&produced));
        thread::spawn(move || produce(&feed, &stop, &produced))
    };
    let holders = CardHolders {
        first_account: accounts,
        seconds_apart: incident_every as f64 / options.rate.max(1) as f64,
    };
    let commands_sent = Arc::new(AtomicU64::new(0));
    let command_feed = {
        let (stop, sent, brokers) = (
            Arc::clone(&stop),
            Arc::clone(&commands_sent),
            brokers.clone(),
        );
        thread::spawn(move || feed_commands(&brokers, "commands", holders, &stop, &sent))
    };
    if let Some(duration) = options.duration {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            thread::sleep(duration);
            stop.store(true, Ordering::Relaxed);
        });
    }

    let stats = Arc::new(Stats::default());
    let views = job.view_stores();
    let server = Server::for_job(&job, &views, &stats)?;
    if let Some(server) = &server {
        let url = format!("http://{}", server.addr());
        eprintln!(
            "  views: {url}/views/users?limit=5, {url}/views/accounts, {url}/metrics, \
             {url}/health; e.g.\n    curl -s '{url}/views/users?limit=3'\n    curl -sN \
             {url}/views/users/changes"
        );
    }
    let run = RunOptions {
        start: StartFrom::Earliest,
        until_end: false,
        stop: Arc::clone(&stop),
        stats: Arc::clone(&stats),
        views,
    };
    let mut last = (0, 0);
    let shown = Arc::clone(&produced);
    run_job(
        job,
        cluster,
        run,
        Duration::from_secs(1),
        move |stats, elapsed| {
            let (p, c) = (shown.load(Ordering::Relaxed), Stats::get(&stats.events_in));
            let p99 = stats
                .latency_quantile(0.99)
                .map_or("n/a".to_string(), |d| format!("{:.1}s", d.as_secs_f64()));
            eprintln!(
                "{:>5.0}s  produced {p:>9} ({:>6}/s)  processed {c:>9} ({:>6}/s)  lag {:>6}  \
                 windows {:>6}  alerts {:>4}  events {:>5}  notifications {:>5}  late {:>4}  \
                 dead-lettered {:>5}  latency p99 {p99:>6}",
                elapsed.as_secs_f64(),
                p - last.0,
                c - last.1,
                stats.consumer_lag.load(Ordering::Relaxed),
                Stats::get(&stats.windows_out),
                Stats::get(&stats.alerts),
                Stats::get(&stats.events_out),
                Stats::get(&stats.notifications_requested),
                Stats::get(&stats.late),
                Stats::get(&stats.dead_letters),
            );
            eprintln!("        {}", NotificationDemo::progress(stats));
            last = (p, c);
        },
    )?;
    stop.store(true, Ordering::Relaxed);
    let sent = producer
        .join()
        .map_err(|_| anyhow::anyhow!("the producer thread panicked"))??;
    command_feed
        .join()
        .map_err(|_| anyhow::anyhow!("the command feed panicked"))??;
    eprintln!(
        "eddy demo: done. produced {sent} transactions and {} commands, processed {}, windows \
         emitted {}, alerts {}, events {}, notification requests {}, late {}, dead-lettered {}",
        commands_sent.load(Ordering::Relaxed),
        Stats::get(&stats.events_in),
        Stats::get(&stats.windows_out),
        Stats::get(&stats.alerts),
        Stats::get(&stats.events_out),
        Stats::get(&stats.notifications_requested),
        Stats::get(&stats.late),
        Stats::get(&stats.dead_letters),
    );
    eprintln!("eddy demo: {}", notify.finish(&stats)?);
    drop(mock);
    Ok(())
}
