//! End-to-end tests of the Kafka path against librdkafka's in-process mock cluster: generated
//! transactions are produced into a topic, a job file is run through the real Kafka source and
//! sinks, and the output topics are read back and compared with results computed here, from the
//! generator, independently of the engine.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use eddy::dataflows::RunOptions;
use eddy::job::Job;
use eddy::produce::{ProduceOptions, produce};
use eddy::run::{ClusterArgs, run_job};
use eddy::sources::generator::{Generator, GeneratorConfig};
use eddy::sources::kafka::StartFrom;
use eddy::stats::Stats;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Deserialize;

const INPUT: &str = "transactions";
const START_MS: u64 = 1_700_000_000_000;
/// Event time advances 4 ms per transaction: 20 k transactions span 80 s, i.e. eight or nine
/// 10-second windows per account, so window boundaries and the 2 s disorder both matter.
const RATE: u64 = 250;
const WINDOW_MS: u64 = 10_000;
const OUT_OF_ORDERNESS_MS: u64 = 2_000;
/// Upper bound for waiting on the mock cluster; only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(60);
/// Upper bound for one run of a job (a few seconds normally).
const JOB_PATIENCE: Duration = Duration::from_secs(120);

/// The payload `eddy produce` writes in place of every n-th transaction.
const BROKEN: &[u8] = br#"{"txn_id":"broken","account_id":"#;

// ---------------------------------------------------------------------------------------------
// The cluster, input and output.

/// An in-process Kafka cluster with the given topics.
fn cluster(
    topics: &[(&str, i32)],
) -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    String,
) {
    let mock = MockCluster::new(1).expect("starting the mock cluster");
    for (topic, partitions) in topics {
        mock.create_topic(topic, *partitions, 1)
            .unwrap_or_else(|e| panic!("creating topic `{topic}`: {e}"));
    }
    let brokers = mock.bootstrap_servers();
    (mock, brokers)
}

fn generator(seed: u64, count: u64, start_ms: u64) -> GeneratorConfig {
    GeneratorConfig {
        seed,
        count: Some(count),
        rate: RATE,
        accounts: 200,
        merchants: 50,
        disorder_ms: 2_000,
        start_ms,
        paced: false,
    }
}

/// A transaction as the input topic carries it (decoded here with serde, not by the engine).
#[derive(Clone, Debug, PartialEq, Deserialize)]
struct Transaction {
    txn_id: String,
    account_id: i64,
    amount_cents: i64,
    merchant: String,
    country: String,
    ts: u64,
}

/// The transactions `config` describes, regenerated here.
fn generate(config: &GeneratorConfig) -> Vec<Transaction> {
    let mut all = Vec::new();
    let mut generator = Generator::new(config.clone());
    while !generator.finished() {
        generator.take(1000, |t| {
            all.push(Transaction {
                txn_id: format!("t{}", t.seq),
                account_id: t.account_id,
                amount_cents: t.amount_cents,
                merchant: format!("m{}", t.merchant),
                country: t.country.to_string(),
                ts: t.ts,
            })
        });
    }
    all
}

/// Produces `config`'s transactions into `topic` with `eddy produce`'s code.
fn produce_input(
    brokers: &str,
    topic: &str,
    config: &GeneratorConfig,
    malformed_every: Option<u64>,
) {
    let options = ProduceOptions {
        properties: vec![("bootstrap.servers".into(), brokers.into())],
        topic: topic.into(),
        generator: config.clone(),
        malformed_every,
    };
    let sent = produce(&options, &AtomicBool::new(false), &AtomicU64::new(0))
        .expect("producing the input");
    assert_eq!(
        Some(sent),
        config.count,
        "the producer sent a different number of messages"
    );
}

/// One message read back from a topic.
#[derive(Clone, Debug)]
struct Msg {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
}

impl Msg {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8(v.clone()).expect("a UTF-8 header"))
    }
}

/// Every message of every partition of `topic`, from the beginning up to the high watermarks seen
/// when called, in (partition, offset) order. Fails if a partition lost messages (the mock
/// cluster deletes old data past ~5 MiB per partition).
fn read_topic(brokers: &str, topic: &str) -> Vec<Msg> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "eddy-tests-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.queue.backoff.ms", "5")
        .create()
        .expect("creating the reading consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), PATIENCE)
        .unwrap_or_else(|e| panic!("metadata of `{topic}`: {e}"));
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .unwrap_or_else(|| panic!("topic `{topic}` not found"))
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    assert!(!partitions.is_empty(), "topic `{topic}` has no partitions");
    let mut next = HashMap::new();
    let mut ends = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for &p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, PATIENCE)
            .unwrap_or_else(|e| panic!("watermarks of {topic}/{p}: {e}"));
        assert_eq!(
            low, 0,
            "{topic}/{p} lost its first {low} messages: keep the test input smaller"
        );
        next.insert(p, 0i64);
        ends.insert(p, high);
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("a valid offset");
    }
    consumer.assign(&assignment).expect("assigning partitions");
    let mut messages = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while partitions.iter().any(|p| next[p] < ends[p]) {
        assert!(
            Instant::now() < deadline,
            "reading `{topic}`: still short of the end after {PATIENCE:?}: read up to {next:?}, ends {ends:?}"
        );
        let message = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(e)) => panic!("reading `{topic}`: {e}"),
            Some(Ok(m)) => m,
        };
        let p = message.partition();
        if message.offset() >= ends[&p] {
            continue;
        }
        assert!(
            message.offset() >= next[&p],
            "{topic}/{p}: offset {} read twice",
            message.offset()
        );
        next.insert(p, message.offset() + 1);
        messages.push(Msg {
            partition: p,
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().unwrap_or_default().to_vec(),
            headers: message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    messages.sort_by_key(|m| (m.partition, m.offset));
    messages
}

/// A function reading the offsets `group` has committed on the input topic's four partitions
/// (-1 where it has none).
fn group_offsets(brokers: &str, group: &str) -> impl Fn() -> Vec<i64> + Send + 'static {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("creating a consumer to read committed offsets");
    move || {
        let mut partitions = TopicPartitionList::new();
        for p in 0..4 {
            partitions.add_partition(INPUT, p);
        }
        let committed = consumer
            .committed_offsets(partitions, PATIENCE)
            .expect("reading committed offsets");
        (0..4)
            .map(
                |p| match committed.find_partition(INPUT, p).map(|e| e.offset()) {
                    Some(Offset::Offset(n)) => n,
                    _ => -1,
                },
            )
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The job.

/// The job under test: per account, tumbling 10 s windows with count, sum and max of the amount.
fn job_text(group: &str, output: &str, dead_letter: bool) -> String {
    let mut text = format!(
        r#"
[job]
name = "kafka-test"
tick = "10ms"
commit_interval = "50ms"
{dead_letter}

[[sources]]
name = "transactions"
kind = "kafka"
brokers = "${{BROKERS}}"
topics = ["{INPUT}"]
group = "{group}"
event_time = "ts"
out_of_orderness = "2s"
schema = {{ txn_id = "string", account_id = "int", amount_cents = "int", merchant = "string", country = "string", ts = "timestamp" }}

[[metrics]]
name = "per_account"
source = "transactions"
group_by = ["account_id"]
window = {{ kind = "tumbling", size = "10s" }}
aggregates = {{ count = "count", total_cents = "sum(amount_cents)", largest_cents = "max(amount_cents)" }}
sinks = ["out"]

[[sinks]]
name = "out"
kind = "kafka"
brokers = "${{BROKERS}}"
topic = "{output}"
format = "json"
key = "account_id"
"#,
        dead_letter = if dead_letter {
            r#"dead_letter = "dlq""#
        } else {
            ""
        },
    );
    if dead_letter {
        text.push_str(
            r#"
[[sinks]]
name = "dlq"
kind = "kafka"
brokers = "${BROKERS}"
topic = "dlq"
"#,
        );
    }
    text
}

/// Runs `text` with `workers` workers until it ends by itself or `stop` is set, counting into `stats`.
fn run(
    text: &str,
    brokers: &str,
    workers: usize,
    start: StartFrom,
    until_end: bool,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
) {
    let job = Job::parse_with(Path::new("test.toml"), text, &|name| {
        (name == "BROKERS").then(|| brokers.to_string())
    })
    .unwrap_or_else(|e| panic!("the test's job file is invalid:\n{e}"));
    let cluster = ClusterArgs::local(workers);
    // A job that never ends is stopped (and the test fails) rather than hanging the test run.
    let finished = Arc::new(AtomicBool::new(false));
    let timed_out = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (stop, finished, timed_out) = (
            Arc::clone(&stop),
            Arc::clone(&finished),
            Arc::clone(&timed_out),
        );
        thread::spawn(move || {
            let deadline = Instant::now() + JOB_PATIENCE;
            while !finished.load(Ordering::Relaxed) {
                let now = Instant::now();
                if now >= deadline {
                    timed_out.store(true, Ordering::Relaxed);
                    stop.store(true, Ordering::Relaxed);
                    return;
                }
                thread::park_timeout(deadline - now);
            }
        })
    };
    let options = RunOptions {
        start,
        until_end,
        stop,
        stats,
    };
    let outcome = run_job(job, &cluster, options, Duration::from_secs(1), |_, _| {});
    finished.store(true, Ordering::Relaxed);
    watchdog.thread().unpark();
    watchdog.join().expect("the watchdog thread");
    outcome.expect("running the job");
    assert!(
        !timed_out.load(Ordering::Relaxed),
        "the job had not finished after {JOB_PATIENCE:?}: it was stopped"
    );
}

/// Runs `text` from the beginning of the input to its end.
fn run_to_end(text: &str, brokers: &str, workers: usize) -> Arc<Stats> {
    let stats = Arc::new(Stats::default());
    run(
        text,
        brokers,
        workers,
        StartFrom::Earliest,
        true,
        Arc::new(AtomicBool::new(false)),
        Arc::clone(&stats),
    );
    stats
}

// ---------------------------------------------------------------------------------------------
// Expected results, computed here.

/// One output row of the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    account_id: i64,
    window_start: i64,
    window_end: i64,
    count: i64,
    total_cents: i64,
    largest_cents: i64,
}

impl Row {
    fn window(&self) -> (i64, i64) {
        (self.account_id, self.window_start)
    }
}

/// The rows of an output topic with where they were read, checking that each message is keyed by
/// its account.
fn output_rows_at(brokers: &str, topic: &str) -> Vec<((i32, i64), Row)> {
    read_topic(brokers, topic)
        .iter()
        .map(|m| {
            let row: Row = serde_json::from_slice(&m.payload).unwrap_or_else(|e| {
                panic!(
                    "{topic}/{}@{}: not a row: {e}: {}",
                    m.partition,
                    m.offset,
                    String::from_utf8_lossy(&m.payload)
                )
            });
            assert_eq!(
                m.key.as_deref(),
                Some(row.account_id.to_string().as_bytes()),
                "{topic}/{}@{}: the key is not the account id of {row:?}",
                m.partition,
                m.offset
            );
            ((m.partition, m.offset), row)
        })
        .collect()
}

/// The rows of an output topic.
fn output_rows(brokers: &str, topic: &str) -> Vec<Row> {
    output_rows_at(brokers, topic)
        .into_iter()
        .map(|(_, r)| r)
        .collect()
}

/// Per account and 10 s window (aligned to the epoch): count, sum and max of the amounts.
fn reference<'a>(txns: impl IntoIterator<Item = &'a Transaction>) -> BTreeSet<Row> {
    let mut windows = BTreeMap::<(i64, i64), Row>::new();
    for t in txns {
        let start = (t.ts / WINDOW_MS * WINDOW_MS) as i64;
        let row = windows.entry((t.account_id, start)).or_insert(Row {
            account_id: t.account_id,
            window_start: start,
            window_end: start + WINDOW_MS as i64,
            count: 0,
            total_cents: 0,
            largest_cents: i64::MIN,
        });
        row.count += 1;
        row.total_cents += t.amount_cents;
        row.largest_cents = row.largest_cents.max(t.amount_cents);
    }
    windows.into_values().collect()
}

/// The transactions (by id) that arrive late by DESIGN §3: stamped, per partition in offset order,
/// with `highest event time seen + 1 − D`, and late when that stamp has reached the end of the
/// record's only window. With the generator's 2 s disorder this is (nearly always) none, but it is
/// computed rather than assumed.
fn late_txns(input: &[Msg]) -> HashSet<String> {
    let mut late = HashSet::new();
    let mut max_seen_plus_one = HashMap::<i32, u64>::new();
    for m in input {
        let Ok(t) = serde_json::from_slice::<Transaction>(&m.payload) else {
            continue;
        };
        let clock = max_seen_plus_one.entry(m.partition).or_default();
        let stamp = clock.saturating_sub(OUT_OF_ORDERNESS_MS);
        if stamp >= t.ts / WINDOW_MS * WINDOW_MS + WINDOW_MS {
            late.insert(t.txn_id.to_string());
        }
        *clock = (*clock).max(t.ts + 1);
    }
    late
}

/// Checks that the input topic holds exactly `expected` (as a multiset) plus the payloads that do
/// not decode as transactions, which are returned, and that each partition keeps generation
/// order (keys are account ids, so one account's transactions stay in one partition).
fn check_input(input: &[Msg], expected: &[Transaction]) -> Vec<Msg> {
    let mut found = Vec::new();
    let mut undecodable = Vec::new();
    for m in input {
        match serde_json::from_slice::<Transaction>(&m.payload) {
            Ok(t) => {
                assert_eq!(m.key.as_deref(), Some(t.account_id.to_string().as_bytes()));
                found.push(t);
            }
            Err(_) => undecodable.push(m.clone()),
        }
    }
    let id = |t: &Transaction| (t.txn_id.clone(), t.ts, t.account_id);
    let mut a: Vec<_> = found.iter().map(|t| (id(t), t.clone())).collect();
    let mut b: Vec<_> = expected.iter().map(|t| (id(t), t.clone())).collect();
    a.sort_by(|x, y| x.0.cmp(&y.0));
    b.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        a.len(),
        b.len(),
        "the input topic does not hold the generated transactions"
    );
    assert!(
        a == b,
        "the input topic does not hold the generated transactions"
    );
    undecodable
}

/// Compares rows with the reference, listing the first differences.
fn assert_rows_equal(what: &str, rows: &[Row], expected: &BTreeSet<Row>) {
    let got: BTreeSet<Row> = rows.iter().copied().collect();
    let missing: Vec<_> = expected.difference(&got).take(5).collect();
    let extra: Vec<_> = got.difference(expected).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: {} rows, {} distinct, {} expected; {} expected rows missing, e.g. {missing:#?}; \
         {} unexpected rows, e.g. {extra:#?}",
        rows.len(),
        got.len(),
        expected.len(),
        expected.difference(&got).count(),
        got.difference(expected).count(),
    );
    assert_eq!(
        rows.len(),
        got.len(),
        "{what}: some rows were written more than once"
    );
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// Kafka in, windows per account, Kafka out: the rows equal the reference with 1 and 2 workers.
#[test]
fn kafka_round_trip_matches_reference_with_one_and_two_workers() {
    let (_mock, brokers) = cluster(&[(INPUT, 4), ("out-1", 3), ("out-2", 3)]);
    let config = generator(11, 20_000, START_MS);
    produce_input(&brokers, INPUT, &config, None);
    let txns = generate(&config);
    let input = read_topic(&brokers, INPUT);
    assert!(check_input(&input, &txns).is_empty());
    let late = late_txns(&input);
    let expected = reference(txns.iter().filter(|t| !late.contains(t.txn_id.as_str())));
    assert!(
        expected.len() > 1000,
        "the reference is too small to mean much: {}",
        expected.len()
    );

    for workers in [1, 2] {
        let output = format!("out-{workers}");
        let stats = run_to_end(
            &job_text(&format!("round-trip-{workers}"), &output, false),
            &brokers,
            workers,
        );
        let rows = output_rows(&brokers, &output);
        assert_rows_equal(&format!("{workers} worker(s)"), &rows, &expected);
        assert_eq!(
            Stats::get(&stats.events_in),
            txns.len() as u64,
            "{workers} worker(s): events read"
        );
        assert_eq!(
            Stats::get(&stats.late),
            late.len() as u64,
            "{workers} worker(s): late events"
        );
        assert_eq!(
            Stats::get(&stats.dead_letters),
            0,
            "{workers} worker(s): dead letters"
        );
    }
}

/// Undecodable input goes to the dead-letter topic, as the bytes read and with headers naming the
/// error and where it was read; the valid records still make the right windows.
#[test]
fn dead_letters_carry_payload_and_provenance_and_the_job_goes_on() {
    let (_mock, brokers) = cluster(&[(INPUT, 4), ("out", 2), ("dlq", 2)]);
    let count = 20_000;
    let config = generator(23, count, START_MS);
    produce_input(&brokers, INPUT, &config, Some(50));
    // A well-formed object whose `amount_cents` has the wrong type, produced directly.
    let violation = format!(
        r#"{{"txn_id":"bad-type","account_id":7,"amount_cents":"abc","merchant":"m1","country":"US","ts":{}}}"#,
        START_MS + 30_000
    );
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("creating a producer");
    producer
        .send(
            BaseRecord::to(INPUT)
                .partition(1)
                .key("7")
                .payload(&violation),
        )
        .map_err(|(e, _)| e)
        .expect("producing the schema violation");
    producer
        .flush(PATIENCE)
        .expect("flushing the schema violation");

    // Every 50th message (1-based) was replaced by broken JSON; the rest are the transactions.
    let txns = generate(&config);
    let valid: Vec<Transaction> = txns
        .iter()
        .enumerate()
        .filter(|(i, _)| !(*i as u64 + 1).is_multiple_of(50))
        .map(|(_, t)| t.clone())
        .collect();
    let malformed = count / 50;
    let input = read_topic(&brokers, INPUT);
    let undecodable = check_input(&input, &valid);
    assert_eq!(
        undecodable.len() as u64,
        malformed + 1,
        "undecodable messages in the input topic"
    );
    assert_eq!(
        undecodable.iter().filter(|m| m.payload == BROKEN).count() as u64,
        malformed,
        "messages of the input topic with the producer's broken payload"
    );
    let late = late_txns(&input);
    let expected = reference(valid.iter().filter(|t| !late.contains(t.txn_id.as_str())));

    let stats = run_to_end(&job_text("dead-letters", "out", true), &brokers, 2);

    // The dead letters: exactly the undecodable input messages, each once.
    let dead = read_topic(&brokers, "dlq");
    let sources: HashMap<(i32, i64), &Msg> = undecodable
        .iter()
        .map(|m| ((m.partition, m.offset), m))
        .collect();
    let mut seen = HashSet::new();
    for d in &dead {
        let header = |name: &str| {
            d.header(name).unwrap_or_else(|| {
                panic!(
                    "dead letter dlq/{}@{} has no `{name}` header: {:?}",
                    d.partition, d.offset, d.headers
                )
            })
        };
        let error = header("eddy.error");
        assert_eq!(header("eddy.source.topic"), INPUT);
        let partition: i32 = header("eddy.source.partition")
            .parse()
            .expect("a partition number");
        let offset: i64 = header("eddy.source.offset").parse().expect("an offset");
        let source = sources.get(&(partition, offset)).unwrap_or_else(|| {
            panic!(
                "dead letter says it came from {INPUT}/{partition}@{offset}, which holds no undecodable \
                 message (error `{error}`, payload {:?})",
                String::from_utf8_lossy(&d.payload)
            )
        });
        assert!(
            seen.insert((partition, offset)),
            "{INPUT}/{partition}@{offset} was dead-lettered twice"
        );
        assert_eq!(
            d.payload, source.payload,
            "the dead letter of {INPUT}/{partition}@{offset} does not carry the bytes read there"
        );
        assert!(
            !error.trim().is_empty(),
            "empty eddy.error for {INPUT}/{partition}@{offset}"
        );
        if source.payload == BROKEN {
            // The message ends right after `"account_id":`.
            assert!(
                error.contains("account_id") || error.to_lowercase().contains("eof"),
                "eddy.error of the truncated message at {INPUT}/{partition}@{offset} does not say \
                 what is wrong: `{error}`"
            );
        } else {
            assert_eq!(source.payload, violation.as_bytes());
            assert!(
                error.contains("amount_cents"),
                "eddy.error of the schema violation does not name `amount_cents`: `{error}`"
            );
        }
    }
    assert_eq!(dead.len(), undecodable.len(), "dead letters written");
    assert_eq!(
        Stats::get(&stats.dead_letters),
        malformed + 1,
        "dead letters counted"
    );

    // The valid records made the right windows.
    let rows = output_rows(&brokers, "out");
    assert_rows_equal("windows beside dead letters", &rows, &expected);
    assert_eq!(
        Stats::get(&stats.events_in),
        valid.len() as u64,
        "events read"
    );
}

/// A job stopped halfway and restarted from its committed offsets loses nothing: every reference
/// row appears in the union of both runs' output (repeats allowed: at-least-once), and the second
/// run resumes at the offsets the first committed instead of at the beginning.
#[test]
fn restart_from_committed_offsets_loses_nothing() {
    let (_mock, brokers) = cluster(&[(INPUT, 4), ("out", 2)]);
    let half = 20_000;
    // Two halves with consecutive event times: the first is all the input while the first run
    // reads it, so the stop comes halfway through the whole input however fast the run is.
    let first = generator(31, half, START_MS);
    let second = generator(32, half, START_MS + half * 1000 / RATE);
    let group = "restart";
    let text = job_text(group, "out", false);

    produce_input(&brokers, INPUT, &first, None);
    let stats1 = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    // Stops the first run once it has read the first half and committed some of it: at-least-once
    // only lets a source commit what the sinks have flushed, so a run stopped before any periodic
    // commit may rightly restart from the beginning.
    let gave_up = Arc::new(AtomicBool::new(false));
    let stopper = {
        let (stats, stop, finished, gave_up) = (
            Arc::clone(&stats1),
            Arc::clone(&stop),
            Arc::clone(&finished),
            Arc::clone(&gave_up),
        );
        let offsets = group_offsets(&brokers, group);
        thread::spawn(move || {
            let deadline = Instant::now() + PATIENCE;
            while !finished.load(Ordering::Relaxed) {
                if Stats::get(&stats.events_in) >= half && offsets().iter().any(|&o| o > 0) {
                    break;
                }
                if Instant::now() >= deadline {
                    gave_up.store(true, Ordering::Relaxed);
                    break;
                }
                thread::sleep(Duration::from_millis(5));
            }
            stop.store(true, Ordering::Relaxed);
        })
    };
    run(
        &text,
        &brokers,
        2,
        StartFrom::Committed,
        false,
        stop,
        Arc::clone(&stats1),
    );
    finished.store(true, Ordering::Relaxed);
    stopper.join().expect("the stopping thread");
    let read1 = Stats::get(&stats1.events_in);
    assert!(
        !gave_up.load(Ordering::Relaxed),
        "after {PATIENCE:?} the first run had read {read1} of {half} events and committed offsets \
         {:?}: it was stopped",
        group_offsets(&brokers, group)()
    );
    let written_first: HashSet<(i32, i64)> = output_rows_at(&brokers, "out")
        .into_iter()
        .map(|(at, _)| at)
        .collect();
    assert_eq!(
        read1, half,
        "the first run should have read the whole first half before stopping"
    );
    let committed: Vec<i64> = group_offsets(&brokers, group)();
    let resume_at: u64 = committed.iter().map(|&o| o.max(0) as u64).sum();
    assert!(
        resume_at > 0 && resume_at <= half,
        "after the first run the group's committed offsets are {committed:?}"
    );

    produce_input(&brokers, INPUT, &second, None);
    let stats2 = Arc::new(Stats::default());
    run(
        &text,
        &brokers,
        2,
        StartFrom::Committed,
        true,
        Arc::new(AtomicBool::new(false)),
        Arc::clone(&stats2),
    );
    let read2 = Stats::get(&stats2.events_in);
    let (rows1, rows2): (Vec<_>, Vec<_>) = output_rows_at(&brokers, "out")
        .into_iter()
        .partition(|(at, _)| written_first.contains(at));
    let rows1: Vec<Row> = rows1.into_iter().map(|(_, r)| r).collect();
    let rows2: Vec<Row> = rows2.into_iter().map(|(_, r)| r).collect();

    let mut txns = generate(&first);
    txns.extend(generate(&second));
    let input = read_topic(&brokers, INPUT);
    assert!(check_input(&input, &txns).is_empty());
    assert!(
        late_txns(&input).is_empty(),
        "the input has late events: pick other seeds"
    );
    let total = txns.len() as u64;
    assert!(
        read2 < total,
        "the second run read {read2} events, the whole input ({total}): it did not resume from \
         committed offsets"
    );
    assert!(
        read1 + read2 >= total,
        "the runs read {read1} + {read2} events, fewer than the {total} in the input"
    );
    assert_eq!(
        read2,
        total - resume_at,
        "the second run did not read exactly from the committed offsets {committed:?} to the end"
    );

    // Every reference row was written by one run or the other.
    let expected = reference(&txns);
    let got: HashSet<Row> = rows1.iter().chain(&rows2).copied().collect();
    let missing: Vec<&Row> = expected.iter().filter(|r| !got.contains(r)).collect();
    if !missing.is_empty() {
        let by_window = |rows: &[Row]| {
            let mut m = HashMap::<(i64, i64), Vec<Row>>::new();
            for r in rows {
                m.entry(r.window()).or_default().push(*r);
            }
            m
        };
        let (first_run, second_run) = (by_window(&rows1), by_window(&rows2));
        let examples: Vec<String> = missing
            .iter()
            .take(3)
            .map(|r| {
                format!(
                    "expected {r:?}\n  first run wrote {:?}\n  second run wrote {:?}",
                    first_run.get(&r.window()),
                    second_run.get(&r.window())
                )
            })
            .collect();
        panic!(
            "{} of {} reference rows are missing from the output of both runs ({} + {} rows; the \
             runs read {read1} + {read2} events; the first committed offsets {committed:?}). For \
             example:\n{}",
            missing.len(),
            expected.len(),
            rows1.len(),
            rows2.len(),
            examples.join("\n")
        );
    }
    let windows: HashSet<(i64, i64)> = expected.iter().map(Row::window).collect();
    let strays: Vec<&Row> = rows1
        .iter()
        .chain(&rows2)
        .filter(|r| !windows.contains(&r.window()))
        .take(5)
        .collect();
    assert!(
        strays.is_empty(),
        "rows for windows that have no transactions: {strays:?}"
    );
}
