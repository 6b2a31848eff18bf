//! The throughput harness: events/s and end-to-end latency of the built-in dataflows and of a
//! view (events into its store), engine-only (from the in-memory generator) and through Kafka
//! (librdkafka's in-process cluster), on 1 and 2 workers, printed as one Markdown table.
//!
//! `cargo bench --bench throughput`; `EDDY_BENCH_EVENTS` sets the engine-only event count
//! (default 2 000 000, from a generator of two partitions); the Kafka runs read 480 000 events
//! pre-produced into 16 partitions (the in-process cluster keeps about 5 MiB per partition).
//! Events/s is measured from the first batch of events the sources decode to the last (timed by
//! the sources themselves), so a job's start-up and its last windows' firing do not count.
//! Arguments keep only the rows whose dataflow or path contains one of them:
//! `cargo bench --bench throughput -- fraud`.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

use eddy::dataflows::RunOptions;
use eddy::job::Job;
use eddy::run::{ClusterArgs, run_job};
use eddy::sources::generator::GeneratorConfig;
use eddy::sources::kafka::StartFrom;
use eddy::stats::{Counter, Stats};
use eddy::tools::produce::{ProduceOptions, produce};
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const KAFKA_EVENTS: u64 = 480_000;
const KAFKA_PARTITIONS: i32 = 16;

/// The fields the metrics and view jobs read of the generator's payments.
const FEW_FIELDS: &str = r#"account_id = "int", amount_cents = "int", ts = "timestamp""#;
/// The fields the fraud and routing jobs read of the generator's payments.
const ALL_FIELDS: &str = r#"txn_id = "string", account_id = "int", amount_cents = "int", merchant = "string", country = "string", ts = "timestamp""#;

/// The job `name`: one source `transactions` of the generator's payments (`source` declares its
/// kind and the rest) reading `fields`, with 2 s of out-of-orderness, then `sections`.
fn transactions_job(name: &str, source: &str, fields: &str, sections: &str) -> String {
    format!(
        r#"[job]
name = "{name}"

[[sources]]
name = "transactions"
{source}
event_time = "ts"
out_of_orderness = "2s"
schema = {{ {fields} }}
{sections}"#
    )
}

/// The metrics section of the common workload's Q1 (tumbling 60 s per account: count, sum,
/// max), writing to the sink `sink`.
fn q1_metrics(sink: &str) -> String {
    format!(
        r#"
[[metrics]]
name = "per_account"
source = "transactions"
group_by = ["account_id"]
window = {{ kind = "tumbling", size = "60s" }}
aggregates = {{ count = "count", sum = "sum(amount_cents)", max = "max(amount_cents)" }}
sinks = ["{sink}"]
"#
    )
}

/// The metrics job of Q1 ([`q1_metrics`]), reading `source` and writing CSV to /dev/null.
fn metrics_job(source: &str) -> String {
    let sections = q1_metrics("null")
        + r#"
[[sinks]]
name = "null"
kind = "file"
path = "/dev/null"
format = "csv"
"#;
    transactions_job("bench-metrics", source, FEW_FIELDS, &sections)
}

/// The fraud job with all five rules (spans of 10 s), reading `source` and writing alerts as
/// JSON to /dev/null.
fn fraud_job(source: &str) -> String {
    transactions_job(
        "bench-fraud",
        source,
        ALL_FIELDS,
        r#"
[[fraud]]
name = "fraud"
source = "transactions"
suppression = "10s"
velocity = { count = 5, amount = 100000, within = "10s" }
small_then_large = { small_below = 100, large_above = 50000, within = "10s" }
amount_spike = { factor = 5.0, history = 10, min_history = 4 }
impossible_travel = { within = "10s" }
card_testing = { merchants = 3, small_below = 100, within = "10s" }
sinks = ["null"]

[[sinks]]
name = "null"
kind = "file"
path = "/dev/null"
"#,
    )
}

/// A view of the users (accounts) in `source`: per key, a count, a sum and the latest event time,
/// at the default view tick (100 ms), served by no one (the store is kept all the same).
fn view_job(source: &str) -> String {
    transactions_job(
        "bench-view",
        source,
        FEW_FIELDS,
        r#"
[[views]]
name = "users"
source = "transactions"
key = "account_id"
columns = { n = "count", spent = "sum(amount_cents)", last_ts = "last(ts)" }
"#,
    )
}

/// The ten content routes of `common::ROUTES` and a default route over `source`, each to its
/// own sink: `sink` declares it (`kind` and the rest).
fn routing_job(source: &str, sink: &str) -> String {
    let mut job = transactions_job(
        "bench-routing",
        source,
        ALL_FIELDS,
        r#"
[[routes]]
name = "default"
source = "transactions"
otherwise = true
sinks = ["default"]
"#,
    );
    for (name, when) in common::ROUTES {
        job += &format!(
            "\n[[routes]]\nname = \"{name}\"\nsource = \"transactions\"\nwhen = '{when}'\nsinks = [\"{name}\"]\n"
        );
    }
    for name in common::ROUTES.iter().map(|r| r.0).chain(["default"]) {
        job += &format!("\n[[sinks]]\nname = \"{name}\"\n{sink}\n");
    }
    job
}

/// A generator emitting 50 000 payments a second of wall-clock time, for 6 s.
const LIVE: &str = "kind = \"generator\"\npartitions = 2\ncount = 300000\nrate = 50000\npaced = true\n\
                    accounts = 100000\ndisorder = \"2s\"";

/// Routing sinks that drop the rows: the engine's routing alone.
const DISCARD: &str = "kind = \"discard\"";
/// Routing sinks that write CSV to /dev/null: one writer per file sink, on worker 0.
const CSV_FILE: &str = "kind = \"file\"\npath = \"/dev/null\"\nformat = \"csv\"";

/// The command processor with the built-in command types, reading `source`, writing events as
/// JSON to /dev/null.
fn commands_job(source: &str) -> String {
    format!(
        r#"[job]
name = "bench-commands"

[[sources]]
name = "commands"
{source}
event_time = "ts"
out_of_orderness = "1s"
schema = {{ command_id = "string", user_id = "int", type = "string", ts = "timestamp", name = "string?", phone = "string?", email = "string?", channel = "string?", amount_cents = "int?", item = "string?" }}

[[commands]]
name = "commands"
source = "commands"
sinks = ["null"]

[[sinks]]
name = "null"
kind = "file"
path = "/dev/null"
"#
    )
}

struct Measured {
    events: u64,
    seconds: f64,
    /// Events per second over `seconds`.
    rate: f64,
    p50: Duration,
    p99: Duration,
}

/// Runs a job, timing from its first ingested batch of events to its last (the sources time
/// them, see [`Stats::ingest_rate`]).
fn measure(job: Job, workers: usize, until_end: bool) -> Measured {
    let stats = Arc::new(Stats::default());
    let options = RunOptions {
        start: StartFrom::Earliest,
        until_end,
        stop: Arc::new(AtomicBool::new(false)),
        stats: Arc::clone(&stats),
        views: job.view_stores(),
        reset_state: Vec::new(),
    };
    let cluster = ClusterArgs::local(workers);
    let started = Instant::now();
    run_job(job, &cluster, options, Duration::from_secs(1), |_, _| {}).expect("the job runs");
    let events = stats.get(Counter::EventsIn);
    let (rate, seconds) = stats.ingest_rate().unwrap_or_else(|| {
        let seconds = started.elapsed().as_secs_f64();
        (events as f64 / seconds, seconds)
    });
    Measured {
        events,
        seconds,
        rate,
        p50: stats.latency_quantile(0.5).unwrap_or_default(),
        p99: stats.latency_quantile(0.99).unwrap_or_default(),
    }
}

fn row(dataflow: &str, path: &str, workers: usize, m: &Measured) {
    println!(
        "| {dataflow} | {path} | {workers} | {} | {:.2} | {:.0} k | {:.1} | {:.1} |",
        m.events,
        m.seconds,
        m.rate / 1e3,
        m.p50.as_secs_f64() * 1e3,
        m.p99.as_secs_f64() * 1e3,
    );
}

fn main() {
    // The allocator set as `eddy` sets it (src/main.rs), so the harness measures what users run.
    eddy::allocator::keep_freed_memory();
    let events: u64 = std::env::var("EDDY_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    println!(
        "| dataflow | path | workers | events | seconds | events/s | latency p50 ms | latency p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|");

    let generator = format!(
        "kind = \"generator\"\npartitions = 2\ncount = {events}\nrate = 10000\naccounts = 100000\ndisorder = \"2s\""
    );
    rows("metrics (Q1)", "engine (generator)", |_| {
        metrics_job(&generator)
    });
    rows("user view (count, sum, last)", "engine (generator)", |_| {
        view_job(&generator)
    });
    let fraud_generator_source = format!(
        "kind = \"generator\"\npartitions = 2\ncount = {events}\nrate = 10000\naccounts = 100000\n\
         disorder = \"1s\"\nfraud = {{ every = 1000, within = \"10s\" }}"
    );
    rows("fraud (5 rules)", "engine (generator)", |_| {
        fraud_job(&fraud_generator_source)
    });

    let dir = std::env::temp_dir().join(format!("eddy-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let commands_file = dir.join("commands.jsonl");
    let lines = common::command_lines(events / 2);
    std::fs::write(&commands_file, lines.join("\n") + "\n").expect("commands written");
    let commands_source = format!(
        "kind = \"file\"\npaths = [\"{}\"]\nsplits = 2",
        commands_file.display()
    );
    rows("command processor", "engine (JSON-lines file)", |_| {
        commands_job(&commands_source)
    });
    std::fs::remove_dir_all(&dir).expect("temporary directory removed");

    for (path, sink) in [
        ("engine (generator, discard sinks)", DISCARD),
        ("engine (generator, CSV files)", CSV_FILE),
    ] {
        rows("routing (10 predicates)", path, |_| {
            routing_job(&generator, sink)
        });
    }

    let mock = MockCluster::new(1).expect("the in-process Kafka cluster starts");
    let brokers = mock.bootstrap_servers();
    for topic in ["bench", "bench-fraud", "bench-commands"] {
        mock.create_topic(topic, KAFKA_PARTITIONS, 1)
            .expect("topic created");
    }
    let feed = ProduceOptions {
        properties: vec![("bootstrap.servers".into(), brokers.clone())],
        topic: "bench".into(),
        generator: GeneratorConfig {
            disorder_ms: 2_000,
            ..common::payments(42, KAFKA_EVENTS, false)
        },
        malformed_every: None,
    };
    produce(&feed, &AtomicBool::new(false), &AtomicU64::new(0)).expect("input produced");
    let fraud_feed = ProduceOptions {
        topic: "bench-fraud".into(),
        generator: common::payments(42, KAFKA_EVENTS, true),
        ..feed
    };
    produce(&fraud_feed, &AtomicBool::new(false), &AtomicU64::new(0)).expect("input produced");
    produce_lines(
        &brokers,
        "bench-commands",
        &common::command_lines(KAFKA_EVENTS),
    );
    // Each run reads its topic from the start in a group of its own.
    let kafka = |topic: &str, group: &str| {
        format!(
            "kind = \"kafka\"\nbrokers = \"{brokers}\"\ntopics = [\"{topic}\"]\ngroup = \"{group}\""
        )
    };
    let path = "Kafka (in-process cluster, JSON)";
    rows("metrics (Q1)", path, |w| {
        metrics_job(&kafka("bench", &format!("bench-{w}")))
    });
    rows("fraud (5 rules)", path, |w| {
        fraud_job(&kafka("bench-fraud", &format!("bench-fraud-{w}")))
    });
    rows("command processor", path, |w| {
        commands_job(&kafka("bench-commands", &format!("bench-commands-{w}")))
    });
    rows("routing (10 predicates)", path, |w| {
        routing_job(&kafka("bench", &format!("bench-routing-{w}")), DISCARD)
    });

    // Delivery to Kafka: every payment routed to a topic, and Q1's rows, each written
    // at-least-once without checkpoints, and at-least-once and exactly-once with checkpoints.
    let every_payment = r#"
[[routes]]
name = "all"
source = "transactions"
sinks = ["kafka"]
"#;
    let q1 = q1_metrics("kafka");
    let stores = std::env::temp_dir().join(format!("eddy-bench-stores-{}", std::process::id()));
    for (i, delivery) in DELIVERIES.iter().enumerate() {
        for (dataflow, sections, fields) in [
            (
                "routing to Kafka (every payment)",
                every_payment,
                ALL_FIELDS,
            ),
            ("metrics (Q1) to Kafka", &q1, FEW_FIELDS),
        ] {
            let path = format!("Kafka → Kafka, {}", delivery.name);
            rows(dataflow, &path, |w| {
                let topic = format!("bench-out-{}-{i}-{w}", &dataflow[..4]);
                mock.create_topic(&topic, KAFKA_PARTITIONS, 1)
                    .expect("topic created");
                let source = kafka(
                    "bench",
                    &format!("bench-delivery-{}-{i}-{w}", &dataflow[..4]),
                );
                let job = transactions_job("bench-delivery", &source, fields, sections);
                delivering(&job, (&brokers, &topic), delivery, &stores)
            });
        }
        // A live feed: the latency of a sink that keeps up (a backlog read as fast as it can
        // be measures its queue instead).
        let path = format!("live generator (50 k/s) → Kafka, {}", delivery.name);
        rows("routing to Kafka (every payment)", &path, |w| {
            let topic = format!("bench-out-live-{i}-{w}");
            mock.create_topic(&topic, KAFKA_PARTITIONS, 1)
                .expect("topic created");
            let job = transactions_job("bench-delivery", LIVE, ALL_FIELDS, every_payment);
            delivering(&job, (&brokers, &topic), delivery, &stores)
        });
    }
    let _ = std::fs::remove_dir_all(&stores);
}

/// How a Kafka sink delivers, as the delivery rows compare it: its `delivery` setting, and
/// whether the job takes checkpoints every second.
struct Delivery {
    name: &'static str,
    delivery: &'static str,
    checkpoints: bool,
}

const DELIVERIES: [Delivery; 4] = [
    Delivery {
        name: "at-least-once",
        delivery: "at-least-once",
        checkpoints: false,
    },
    Delivery {
        name: "at-least-once, checkpoints every 1 s",
        delivery: "at-least-once",
        checkpoints: true,
    },
    Delivery {
        name: "exactly-once, checkpoints every 1 s",
        delivery: "exactly-once",
        checkpoints: true,
    },
    Delivery {
        name: "transactional, checkpoints every 1 s",
        delivery: "transactional",
        checkpoints: true,
    },
];

/// `job` with its sink `name` writing `topic` on `brokers` as `delivery` says, and the
/// checkpoints it says in a store under `dir`, one per run.
fn delivering(
    job: &str,
    (brokers, topic): (&str, &str),
    delivery: &Delivery,
    dir: &Path,
) -> String {
    let mut job = format!(
        "{job}
[[sinks]]
name = \"kafka\"
kind = \"kafka\"
brokers = \"{brokers}\"
\
         topic = \"{topic}\"
delivery = \"{}\"
",
        delivery.delivery
    );
    if delivery.checkpoints {
        let store = dir.join(topic);
        job += &format!(
            "
[checkpoints]
store = \"{}\"
interval = \"1s\"
",
            store.display()
        );
    }
    job
}

/// Runs the job `text(workers)` on 1 and 2 workers, a row each.
fn rows(dataflow: &str, path: &str, text: impl Fn(usize) -> String) {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if !filters.is_empty()
        && !filters
            .iter()
            .any(|f| dataflow.contains(f.as_str()) || path.contains(f.as_str()))
    {
        return;
    }
    for workers in [1, 2] {
        let job = Job::parse(Path::new("bench.toml"), &text(workers)).expect("valid job");
        row(dataflow, path, workers, &measure(job, workers, true));
    }
}

/// Produces `lines` into `topic`, round robin over its partitions.
fn produce_lines(brokers: &str, topic: &str, lines: &[String]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .create()
        .expect("a producer");
    for (i, line) in lines.iter().enumerate() {
        let mut record = BaseRecord::<(), _>::to(topic)
            .partition((i % KAFKA_PARTITIONS as usize) as i32)
            .payload(line);
        while let Err((e, r)) = producer.send(record) {
            assert!(e.to_string().contains("Queue full"), "producing: {e}");
            producer.poll(Duration::from_millis(5));
            record = r;
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flushed");
}
