//! Helpers shared by the Kafka tests (tests/kafka.rs and tests/crash.rs): the cluster a test runs
//! against (librdkafka's in-process mock cluster, or the real tansu broker), producing input,
//! reading topics back, the job under test, and the windows expected from the input, computed
//! here independently of the engine.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Wake};
use std::thread;
use std::time::{Duration, Instant};

use eddy::dataflows::RunOptions;
use eddy::job::Job;
use eddy::run::{ClusterArgs, run_job};
use eddy::sinks::view::Views;
use eddy::sources::generator::{self, Generator, GeneratorConfig};
use eddy::sources::kafka::StartFrom;
use eddy::stats::Stats;
use eddy::tools::produce::{ProduceOptions, produce};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, DefaultProducerContext, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::{python, tansu};

pub const START_MS: u64 = 1_700_000_000_000;
/// Transactions per second of event time on the mock cluster: 4 ms apart, so 20 k transactions
/// span 80 s and 24 k span 96 s, eight to ten 10-second windows per account, so window
/// boundaries and the 2 s disorder both matter.
pub const RATE: u64 = 250;
pub const WINDOW_MS: u64 = 10_000;
pub const OUT_OF_ORDERNESS_MS: u64 = 2_000;
/// Upper bound for waiting on the cluster; only reached when something is broken.
pub const PATIENCE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// The cluster.

/// Which Kafka a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// librdkafka's mock cluster, in this process: nothing to install.
    Mock,
    /// The test binary's tansu broker, a separate process (see `tansu.rs`); its input is written
    /// by the independent Python client.
    Tansu,
}

impl Tier {
    /// Transactions per second of event time. tansu's SQLite engine takes about a millisecond
    /// per record to answer a fetch (more when the machine is loaded), and serves nothing else
    /// meanwhile, not even another connection's commit: on tansu the tests generate a fifth of the
    /// transactions over the same span of event time, so they still cover as many windows.
    pub fn rate(self) -> u64 {
        match self {
            Tier::Mock => RATE,
            Tier::Tansu => RATE / 5,
        }
    }

    /// How many transactions this tier generates where the mock cluster generates `n`: the same
    /// span of event time.
    pub fn count(self, n: u64) -> u64 {
        n * self.rate() / RATE
    }

    /// Whether the broker gives back the metadata committed with an offset, where a Kafka source
    /// keeps its restart checkpoint. tansu 0.6 stores it but never returns it: its OffsetFetch
    /// selects only the offset (`consumer_offset_select.sql` in tansu-storage 0.6.0), so every
    /// partition's metadata reads back as null.
    pub fn keeps_commit_metadata(self) -> bool {
        match self {
            Tier::Mock => true,
            Tier::Tansu => false,
        }
    }
}

/// A Kafka cluster with a test's topics; what reaching it takes is its [`Endpoint`], which it
/// dereferences to (the mock cluster cannot be shared between threads, an endpoint can).
pub struct Cluster {
    endpoint: Endpoint,
    _mock: Option<MockCluster<'static, DefaultProducerContext>>,
}

impl std::ops::Deref for Cluster {
    type Target = Endpoint;

    fn deref(&self) -> &Endpoint {
        &self.endpoint
    }
}

/// A test's view of a cluster: its address, its topics' names, and how the input is written.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub tier: Tier,
    brokers: String,
    /// Prepended to topic names: tests share the binary's tansu broker.
    prefix: String,
}

impl Cluster {
    /// A cluster of `tier` for the test `test` (a short name, which prefixes the topics on the
    /// shared broker), with `topics` (name, partitions) created. `None` when the tier is skipped
    /// in this run (`tansu::broker` has said why).
    pub fn start(tier: Tier, test: &str, topics: &[(&str, i32)]) -> Option<Cluster> {
        let cluster = match tier {
            Tier::Mock => {
                let mock = MockCluster::new(1).expect("starting the mock cluster");
                Cluster {
                    endpoint: Endpoint {
                        tier,
                        brokers: mock.bootstrap_servers(),
                        prefix: String::new(),
                    },
                    _mock: Some(mock),
                }
            }
            Tier::Tansu => Cluster {
                endpoint: Endpoint {
                    tier,
                    brokers: tansu::broker(test)?.address.clone(),
                    prefix: format!("{test}."),
                },
                _mock: None,
            },
        };
        match &cluster._mock {
            Some(mock) => {
                for (topic, partitions) in topics {
                    mock.create_topic(&cluster.topic(topic), *partitions, 1)
                        .unwrap_or_else(|e| panic!("creating topic `{topic}`: {e}"));
                }
            }
            None => {
                let topics: Vec<(String, i32)> = topics
                    .iter()
                    .map(|(name, partitions)| (cluster.topic(name), *partitions))
                    .collect();
                create_topics(&cluster.brokers, &topics);
            }
        }
        Some(cluster)
    }
}

impl Endpoint {
    /// The bootstrap address.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// The full name of the test's topic `name`.
    pub fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Produces `inputs` into `topic` in order, `per_second` messages per wall-clock second (all
    /// at once when `None`), counting what has been handed to the producer in `produced`; returns
    /// once all are delivered. On the mock cluster with our rdkafka producer; on the real broker
    /// with the independent Python client, so the payload bytes are not ours.
    pub fn produce(
        &self,
        topic: &str,
        inputs: &[Input],
        per_second: Option<u64>,
        produced: &AtomicU64,
    ) {
        match self.tier {
            Tier::Mock => produce_with_rdkafka(&self.brokers, topic, inputs, per_second, produced),
            Tier::Tansu => python::produce(&self.brokers, topic, inputs, per_second, produced),
        }
    }
}

/// Creates topics with the admin API (on a real broker).
pub fn create_topics(brokers: &str, topics: &[(String, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("creating an admin client");
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(PATIENCE));
    let results = block_on(admin.create_topics(&new, &options)).expect("creating topics");
    for result in results {
        if let Err((topic, e)) = result {
            panic!("creating topic `{topic}` on {brokers}: {e}");
        }
    }
}

/// Drives a future on this thread (rdkafka's admin client completes it from its own thread).
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        assert!(
            Instant::now() < deadline,
            "an admin request did not complete in {PATIENCE:?}"
        );
        thread::park_timeout(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------------
// Input.

/// A message for a test to produce.
#[derive(Clone, Debug, Serialize)]
pub struct Input {
    pub key: Option<String>,
    /// The partition; by default the producer's partitioner picks one from the key.
    pub partition: Option<i32>,
    /// The message timestamp, epoch ms; by default the producer's clock.
    pub timestamp: Option<i64>,
    #[serde(flatten)]
    pub payload: Payload,
}

/// What a message carries.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Payload {
    /// A transaction, encoded as JSON by the producing client.
    Value(Transaction),
    /// These bytes, as they are.
    Raw(String),
}

impl Input {
    /// A transaction keyed by its account.
    pub fn keyed(t: Transaction) -> Input {
        Input {
            key: Some(t.account_id.to_string()),
            partition: None,
            timestamp: None,
            payload: Payload::Value(t),
        }
    }
}

/// `produce` on the mock cluster: a librdkafka producer of ours, idempotent, with serde_json's
/// encoding.
fn produce_with_rdkafka(
    brokers: &str,
    topic: &str,
    inputs: &[Input],
    per_second: Option<u64>,
    produced: &AtomicU64,
) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .create()
        .expect("creating the producer");
    let started = Instant::now();
    let mut sent = 0;
    while sent < inputs.len() {
        let due = match per_second {
            None => inputs.len(),
            Some(rate) => ((started.elapsed().as_secs_f64() * rate as f64) as usize)
                .clamp(sent + 1, inputs.len()),
        };
        for input in &inputs[sent..due] {
            let payload = match &input.payload {
                Payload::Value(t) => serde_json::to_vec(t).expect("serializing a transaction"),
                Payload::Raw(bytes) => bytes.as_bytes().to_vec(),
            };
            loop {
                let mut record = BaseRecord::<str, _>::to(topic).payload(&payload);
                if let Some(key) = &input.key {
                    record = record.key(key.as_str());
                }
                if let Some(partition) = input.partition {
                    record = record.partition(partition);
                }
                if let Some(timestamp) = input.timestamp {
                    record = record.timestamp(timestamp);
                }
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        producer.poll(Duration::from_millis(5));
                    }
                    Err((e, _)) => panic!("producing into `{topic}`: {e}"),
                }
            }
        }
        sent = due;
        produced.store(sent as u64, Ordering::Relaxed);
        producer.poll(Duration::ZERO);
        if per_second.is_some() && sent < inputs.len() {
            thread::sleep(Duration::from_millis(10));
        }
    }
    producer.flush(PATIENCE).expect("flushing the producer");
}

/// `count` transactions from `seed`, at `tier`'s rate from `start_ms` on.
pub fn generator(tier: Tier, seed: u64, count: u64, start_ms: u64) -> GeneratorConfig {
    GeneratorConfig {
        seed,
        count: Some(count),
        rate: tier.rate(),
        accounts: 200,
        merchants: 50,
        disorder_ms: 2_000,
        start_ms,
        paced: false,
        fraud: None,
    }
}

/// The transactions `config` describes, regenerated here, in generation order.
pub fn generate(config: &GeneratorConfig) -> Vec<generator::Transaction> {
    drain(Generator::new(config.clone()))
}

/// The transactions of a job's generator source with `config` and `partitions` partitions,
/// regenerated here, partition after partition.
pub fn generate_partitions(
    config: &GeneratorConfig,
    partitions: u64,
) -> Vec<generator::Transaction> {
    (0..partitions)
        .flat_map(|p| drain(Generator::partition(config.clone(), p, partitions)))
        .collect()
}

fn drain(mut generator: Generator) -> Vec<generator::Transaction> {
    let mut all = Vec::new();
    while !generator.finished() {
        generator.take(1000, |t| all.push(t));
    }
    all
}

/// A transaction as the input topic carries it (decoded here with serde, not by the engine).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    pub txn_id: String,
    pub account_id: i64,
    pub amount_cents: i64,
    pub merchant: String,
    pub country: String,
    pub ts: u64,
}

impl From<&generator::Transaction> for Transaction {
    /// The generated transaction as it reads once written as JSON.
    fn from(t: &generator::Transaction) -> Transaction {
        Transaction {
            txn_id: format!("t{}", t.seq),
            account_id: t.account_id,
            amount_cents: t.amount_cents,
            merchant: format!("m{}", t.merchant),
            country: t.country.to_string(),
            ts: t.ts,
        }
    }
}

/// One message read back from a topic.
#[derive(Clone, Debug)]
pub struct Msg {
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Msg {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8(v.clone()).expect("a UTF-8 header"))
    }
}

/// Every message of every partition of `topic`, from the beginning up to the high watermarks seen
/// when called, in (partition, offset) order. Fails if a partition lost messages (the mock
/// cluster deletes old data past ~5 MiB per partition).
pub fn read_topic(brokers: &str, topic: &str) -> Vec<Msg> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "eddy-tests-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("fetch.queue.backoff.ms", "5")
        .create()
        .expect("creating the reading consumer");
    let ends = high_watermarks(&consumer, topic);
    let mut assignment = TopicPartitionList::new();
    let mut next = BTreeMap::new();
    for (&p, &(low, _)) in &ends {
        assert_eq!(
            low, 0,
            "{topic}/{p} lost its first {low} messages: keep the test input smaller"
        );
        next.insert(p, 0i64);
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("a valid offset");
    }
    consumer.assign(&assignment).expect("assigning partitions");
    let mut messages = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while ends.iter().any(|(p, (_, high))| next[p] < *high) {
        assert!(
            Instant::now() < deadline,
            "reading `{topic}`: still short of the end after {PATIENCE:?}: read up to {next:?}, \
             ends {ends:?}"
        );
        let message = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(e)) => panic!("reading `{topic}`: {e}"),
            Some(Ok(m)) => m,
        };
        let p = message.partition();
        if message.offset() >= ends[&p].1 {
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
            timestamp: message.timestamp().to_millis(),
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

/// (low, high) watermarks of each partition of `topic`.
pub fn high_watermarks<C: Consumer>(consumer: &C, topic: &str) -> BTreeMap<i32, (i64, i64)> {
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
    partitions
        .into_iter()
        .map(|p| {
            let marks = consumer
                .fetch_watermarks(topic, p, PATIENCE)
                .unwrap_or_else(|e| panic!("watermarks of {topic}/{p}: {e}"));
            (p, marks)
        })
        .collect()
}

/// Reads the offsets a consumer group has committed on a topic's partitions (-1 where none).
pub struct GroupOffsets {
    consumer: BaseConsumer,
    topic: String,
    partitions: i32,
}

impl GroupOffsets {
    /// For partitions `0..partitions` of `topic`.
    pub fn new(brokers: &str, group: &str, topic: &str, partitions: i32) -> Self {
        let consumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("creating a consumer to read committed offsets");
        GroupOffsets {
            consumer,
            topic: topic.into(),
            partitions,
        }
    }

    pub fn get(&self) -> Vec<i64> {
        let mut partitions = TopicPartitionList::new();
        for p in 0..self.partitions {
            partitions.add_partition(&self.topic, p);
        }
        let committed = self
            .consumer
            .committed_offsets(partitions, PATIENCE)
            .expect("reading committed offsets");
        (0..self.partitions)
            .map(
                |p| match committed.find_partition(&self.topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(n)) => n,
                    _ => -1,
                },
            )
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The job.

/// The job under test on `tier`, named `name`: per account, tumbling 10 s windows with count, sum
/// and max of the amount, Kafka topic `input` (read as `group`) to Kafka topic `output`; with
/// `dead_letter`, undecodable input goes to that topic.
///
/// On tansu the source's fetches are limited to 64 KiB. tansu ignores the per-partition limit
/// and answers a fetch with all of a partition's backlog; the source sends what one read
/// returns at one timely time, and can commit offsets only once everything sent at or before
/// a time is flushed, so a backlog read whole is committed only once its last window has fired,
/// which a job following the topic never sees for the input's last windows. Smaller fetches
/// (tansu honours the request's total limit) let the frontier, and the commits, move between
/// them, as they do on Kafka.
pub fn job_text(
    tier: Tier,
    name: &str,
    input: &str,
    group: &str,
    output: &str,
    dead_letter: Option<&str>,
) -> String {
    let mut text = format!(
        r#"
[job]
name = "{name}"
tick = "10ms"
commit_interval = "50ms"
{dead_letter}

[[sources]]
name = "transactions"
kind = "kafka"
brokers = "${{BROKERS}}"
topics = ["{input}"]
group = "{group}"
event_time = "ts"
out_of_orderness = "2s"
schema = {{ txn_id = "string", account_id = "int", amount_cents = "int", merchant = "string", country = "string", ts = "timestamp" }}
{fetch_limits}

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
        fetch_limits = match tier {
            Tier::Mock => "",
            // librdkafka wants `fetch.max.bytes` >= `message.max.bytes`.
            Tier::Tansu => {
                r#"properties = { "fetch.max.bytes" = "65536", "message.max.bytes" = "65536" }"#
            }
        },
        dead_letter = if dead_letter.is_some() {
            r#"dead_letter = "dlq""#
        } else {
            ""
        },
    );
    if let Some(topic) = dead_letter {
        text.push_str(&format!(
            r#"
[[sinks]]
name = "dlq"
kind = "kafka"
brokers = "${{BROKERS}}"
topic = "{topic}"
"#
        ));
    }
    text
}

// ---------------------------------------------------------------------------------------------
// Expected results, computed here.

/// One output row of the job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Row {
    pub account_id: i64,
    pub window_start: i64,
    pub window_end: i64,
    pub count: i64,
    pub total_cents: i64,
    pub largest_cents: i64,
}

impl Row {
    pub fn window(&self) -> (i64, i64) {
        (self.account_id, self.window_start)
    }
}

/// An output row and where it was read.
#[derive(Clone, Copy, Debug)]
pub struct At {
    pub partition: i32,
    pub offset: i64,
    pub row: Row,
}

/// The rows of an output topic with where they were read, checking that each message is keyed by
/// its account.
pub fn output_rows_at(brokers: &str, topic: &str) -> Vec<At> {
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
            At {
                partition: m.partition,
                offset: m.offset,
                row,
            }
        })
        .collect()
}

/// The rows of an output topic.
pub fn output_rows(brokers: &str, topic: &str) -> Vec<Row> {
    output_rows_at(brokers, topic)
        .into_iter()
        .map(|at| at.row)
        .collect()
}

/// Per account and 10 s window (aligned to the epoch): count, sum and max of the amounts, keyed
/// by (account, window start).
pub fn reference<'a>(txns: impl IntoIterator<Item = &'a Transaction>) -> BTreeMap<(i64, i64), Row> {
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
    windows
}

/// The transactions (by id) of `input` that arrive late by docs/semantics.md#lateness: stamped,
/// per partition in offset order, with `highest event time seen + 1 − D`, and late when that
/// stamp has reached the end of the record's only window. Messages that do not decode as
/// transactions are passed over. With the generator's 2 s disorder this is (nearly always) none,
/// but it is computed rather than assumed.
pub fn late_txns(input: &[Msg]) -> HashSet<String> {
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
/// not decode as transactions, which are returned, and that each decodable message is keyed by
/// its account (so one account's transactions stay in one partition, in generation order).
pub fn check_input(input: &[Msg], expected: &[Transaction]) -> Vec<Msg> {
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

/// Compares rows with the reference, listing the first differences, and fails if a row was
/// written more than once.
pub fn assert_rows_equal(what: &str, rows: &[Row], expected: &BTreeSet<Row>) {
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
// Running a job in this process.

/// Upper bound for one run of a job (a few seconds normally).
pub const JOB_PATIENCE: Duration = Duration::from_secs(120);

/// Runs `text` with `workers` workers until it ends by itself or `stop` is set, counting into `stats`.
pub fn run(
    text: &str,
    brokers: &str,
    workers: usize,
    start: StartFrom,
    until_end: bool,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
) {
    run_parsed(parse(text, brokers), workers, start, until_end, stop, stats);
}

/// The job `text` describes, with `${BROKERS}` set to `brokers`.
fn parse(text: &str, brokers: &str) -> Job {
    Job::parse_with(Path::new("test.toml"), text, &|name| {
        (name == "BROKERS").then(|| brokers.to_string())
    })
    .unwrap_or_else(|e| panic!("the test's job file is invalid:\n{e}"))
}

/// [`run`] for a job already loaded.
pub fn run_parsed(
    job: Job,
    workers: usize,
    start: StartFrom,
    until_end: bool,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
) {
    let views = job.view_stores();
    run_with_views(job, workers, start, until_end, stop, stats, views);
}

/// Runs `job` from `start` to the end of its input, keeping its views in `views`.
pub fn run_views_to_end(job: Job, workers: usize, start: StartFrom, views: Views) -> Arc<Stats> {
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let stats_of_run = Arc::clone(&stats);
    run_with_views(job, workers, start, true, stop, stats_of_run, views);
    stats
}

fn run_with_views(
    job: Job,
    workers: usize,
    start: StartFrom,
    until_end: bool,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
    views: Views,
) {
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
        views,
        reset_state: Vec::new(),
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
pub fn run_to_end(text: &str, brokers: &str, workers: usize) -> Arc<Stats> {
    run_job_to_end(parse(text, brokers), workers)
}

/// Runs `job` from the beginning of its input to its end.
pub fn run_job_to_end(job: Job, workers: usize) -> Arc<Stats> {
    let stats = Arc::new(Stats::default());
    run_parsed(
        job,
        workers,
        StartFrom::Earliest,
        true,
        Arc::new(AtomicBool::new(false)),
        Arc::clone(&stats),
    );
    stats
}

/// Produces `config`'s transactions into `topic` with `eddy produce`'s code (every
/// `malformed_every`-th replaced by broken JSON).
pub fn produce_input(
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
