//! End-to-end tests of the Kafka path: generated transactions are produced into a topic, a job
//! file is run through the real Kafka source and sinks, and the output topics are read back and
//! compared with results computed here, from the generator, independently of the engine.
//!
//! Each test runs against librdkafka's in-process mock cluster; the round trip, the dead letters
//! and the restart also run against a real broker, tansu, a separate process (the `tansu_*`
//! tests), where their input is written by an independent client (see `common/tansu.rs`).

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::kafka::{
    At, Cluster, GroupOffsets, Input, Msg, PATIENCE, Payload, Row, START_MS, Tier, Transaction,
    assert_rows_equal, check_input, generate, generator, job_text, late_txns, output_rows,
    output_rows_at, produce_input, read_topic, reference, run, run_to_end,
};
use eddy::sources::generator::GeneratorConfig;
use eddy::sources::kafka::StartFrom;
use eddy::stats::{Counter, Stats};

const INPUT: &str = "transactions";
/// Partitions of the input topic.
const INPUT_PARTITIONS: i32 = 4;

/// The payload `eddy produce` writes in place of every n-th transaction.
const BROKEN: &[u8] = br#"{"txn_id":"broken","account_id":"#;

// ---------------------------------------------------------------------------------------------
// The input.

/// The transactions `config` describes, regenerated here, as the input topic carries them.
fn transactions(config: &GeneratorConfig) -> Vec<Transaction> {
    generate(config).iter().map(Transaction::from).collect()
}

/// Produces `config`'s transactions into `topic`, every `malformed_every`-th replaced by
/// [`BROKEN`]: on the mock cluster with `eddy produce`'s code; on the real broker, the same
/// messages with the independent client.
fn produce_generated(
    cluster: &Cluster,
    topic: &str,
    config: &GeneratorConfig,
    malformed_every: Option<u64>,
) {
    match cluster.tier {
        Tier::Mock => produce_input(cluster.brokers(), topic, config, malformed_every),
        Tier::Tansu => {
            let inputs: Vec<Input> = transactions(config)
                .into_iter()
                .enumerate()
                .map(|(i, t)| {
                    let mut input = Input::keyed(t);
                    if malformed_every.is_some_and(|n| (i as u64 + 1).is_multiple_of(n)) {
                        input.payload = Payload::Raw(
                            String::from_utf8(BROKEN.to_vec()).expect("a UTF-8 payload"),
                        );
                    }
                    input
                })
                .collect();
            cluster.produce(topic, &inputs, None, &AtomicU64::new(0));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// Kafka in, windows per account, Kafka out: the rows equal the reference with 1 and 2 workers.
#[test]
fn kafka_round_trip_matches_reference_with_one_and_two_workers() {
    round_trip(Tier::Mock);
}

/// The round trip on tansu.
#[test]
fn tansu_round_trip_matches_reference_with_one_and_two_workers() {
    round_trip(Tier::Tansu);
}

fn round_trip(tier: Tier) {
    let Some(cluster) = Cluster::start(
        tier,
        "round-trip",
        &[(INPUT, INPUT_PARTITIONS), ("out-1", 3), ("out-2", 3)],
    ) else {
        return;
    };
    let brokers = cluster.brokers();
    let input_topic = cluster.topic(INPUT);
    let config = generator(tier, 11, tier.count(20_000), START_MS);
    produce_generated(&cluster, &input_topic, &config, None);
    let txns = transactions(&config);
    let input = read_topic(brokers, &input_topic);
    assert!(check_input(&input, &txns).is_empty());
    let late = late_txns(&input);
    let expected: BTreeSet<Row> =
        reference(txns.iter().filter(|t| !late.contains(t.txn_id.as_str())))
            .into_values()
            .collect();
    assert!(
        expected.len() > 1000,
        "the reference is too small to mean much: {}",
        expected.len()
    );

    for workers in [1, 2] {
        let output = cluster.topic(&format!("out-{workers}"));
        let stats = run_to_end(
            &job_text(
                tier,
                "kafka-test",
                &input_topic,
                &format!("round-trip-{workers}"),
                &output,
                None,
            ),
            brokers,
            workers,
        );
        let rows = output_rows(brokers, &output);
        assert_rows_equal(&format!("{workers} worker(s)"), &rows, &expected);
        for message in read_topic(brokers, &output) {
            assert_eq!(message.header("eddy.job").as_deref(), Some("kafka-test"));
            assert_eq!(
                message.header("eddy.output").as_deref(),
                Some("per_account")
            );
        }
        assert_eq!(
            stats.get(Counter::EventsIn),
            txns.len() as u64,
            "{workers} worker(s): events read"
        );
        assert_eq!(
            stats.get(Counter::Late),
            late.len() as u64,
            "{workers} worker(s): late events"
        );
        assert_eq!(
            stats.get(Counter::DeadLetters),
            0,
            "{workers} worker(s): dead letters"
        );
    }
}

/// Undecodable input goes to the dead-letter topic, as the bytes read and with headers naming the
/// error and where it was read; the valid records still make the right windows.
#[test]
fn dead_letters_carry_payload_and_provenance_and_the_job_goes_on() {
    dead_letters(Tier::Mock);
}

/// The dead letters on tansu.
#[test]
fn tansu_dead_letters_carry_payload_and_provenance_and_the_job_goes_on() {
    dead_letters(Tier::Tansu);
}

/// The dead-letter test's sources' `max_record_bytes`.
const MAX_RECORD_BYTES: usize = 4096;

fn dead_letters(tier: Tier) {
    let Some(cluster) = Cluster::start(
        tier,
        "dead-letters",
        &[(INPUT, INPUT_PARTITIONS), ("out", 2), ("dlq", 2)],
    ) else {
        return;
    };
    let brokers = cluster.brokers();
    let (input_topic, output, dlq) = (
        cluster.topic(INPUT),
        cluster.topic("out"),
        cluster.topic("dlq"),
    );
    let count = tier.count(20_000);
    let config = generator(tier, 23, count, START_MS);
    produce_generated(&cluster, &input_topic, &config, Some(50));
    // A well-formed object whose `amount_cents` has the wrong type, produced as these bytes.
    let violation = format!(
        r#"{{"txn_id":"bad-type","account_id":7,"amount_cents":"abc","merchant":"m1","country":"US","ts":{}}}"#,
        START_MS + 30_000
    );
    let violating = Input {
        key: Some("7".into()),
        partition: Some(1),
        timestamp: None,
        payload: Payload::Raw(violation.clone()),
    };
    // A message longer than the source's `max_record_bytes`, dead-lettered undecoded: its
    // reason is its length, not the type of `amount_cents`.
    let long = format!(
        r#"{{"txn_id":"long","pad":"{}","account_id":7,"amount_cents":"abc","merchant":"m1","country":"US","ts":{}}}"#,
        "x".repeat(MAX_RECORD_BYTES),
        START_MS + 31_000
    );
    let too_long = Input {
        payload: Payload::Raw(long.clone()),
        ..violating.clone()
    };
    cluster.produce(
        &input_topic,
        &[violating, too_long],
        None,
        &AtomicU64::new(0),
    );

    // Every 50th message (1-based) was replaced by broken JSON; the rest are the transactions.
    let txns = transactions(&config);
    let valid: Vec<Transaction> = txns
        .iter()
        .enumerate()
        .filter(|(i, _)| !(*i as u64 + 1).is_multiple_of(50))
        .map(|(_, t)| t.clone())
        .collect();
    let malformed = count / 50;
    let input = read_topic(brokers, &input_topic);
    let undecodable = check_input(&input, &valid);
    assert_eq!(
        undecodable.len() as u64,
        malformed + 2,
        "undecodable messages in the input topic"
    );
    assert_eq!(
        undecodable.iter().filter(|m| m.payload == BROKEN).count() as u64,
        malformed,
        "messages of the input topic with the producer's broken payload"
    );
    let late = late_txns(&input);
    let expected: BTreeSet<Row> =
        reference(valid.iter().filter(|t| !late.contains(t.txn_id.as_str())))
            .into_values()
            .collect();

    let stats = run_to_end(
        &job_text(
            tier,
            "kafka-test",
            &input_topic,
            "dead-letters",
            &output,
            Some(&dlq),
        )
        .replace(
            "out_of_orderness = \"2s\"",
            &format!("out_of_orderness = \"2s\"\nmax_record_bytes = {MAX_RECORD_BYTES}"),
        ),
        brokers,
        2,
    );

    // The dead letters: exactly the undecodable input messages, each once.
    let dead = read_topic(brokers, &dlq);
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
        assert_eq!(header("eddy.source.topic"), input_topic);
        let partition: i32 = header("eddy.source.partition")
            .parse()
            .expect("a partition number");
        let offset: i64 = header("eddy.source.offset").parse().expect("an offset");
        let source = sources.get(&(partition, offset)).unwrap_or_else(|| {
            panic!(
                "dead letter says it came from {input_topic}/{partition}@{offset}, which holds no undecodable \
                 message (error `{error}`, payload {:?})",
                String::from_utf8_lossy(&d.payload)
            )
        });
        assert!(
            seen.insert((partition, offset)),
            "{input_topic}/{partition}@{offset} was dead-lettered twice"
        );
        assert_eq!(
            d.payload, source.payload,
            "the dead letter of {input_topic}/{partition}@{offset} does not carry the bytes read there"
        );
        assert!(
            !error.trim().is_empty(),
            "empty eddy.error for {input_topic}/{partition}@{offset}"
        );
        if source.payload == BROKEN {
            // The message ends right after `"account_id":`.
            assert!(
                error.contains("account_id") || error.to_lowercase().contains("eof"),
                "eddy.error of the truncated message at {input_topic}/{partition}@{offset} does not say \
                 what is wrong: `{error}`"
            );
        } else if source.payload == long.as_bytes() {
            assert_eq!(
                error,
                format!(
                    "record of {} bytes is longer than max_record_bytes ({MAX_RECORD_BYTES}): \
                     not decoded",
                    long.len()
                )
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
        stats.get(Counter::DeadLetters),
        malformed + 2,
        "dead letters counted"
    );

    // The valid records made the right windows.
    let rows = output_rows(brokers, &output);
    assert_rows_equal("windows beside dead letters", &rows, &expected);
    assert_eq!(
        stats.get(Counter::EventsIn),
        valid.len() as u64,
        "events read"
    );
}

/// A job stopped halfway and restarted from its committed offsets loses nothing: every reference
/// row appears in the union of both runs' output (repeats allowed: at-least-once), and the second
/// run resumes at the offsets the first committed instead of at the beginning.
#[test]
fn restart_from_committed_offsets_loses_nothing() {
    restart(Tier::Mock);
}

/// The restart on tansu: its consumer group keeps the offsets (and the checkpoints in their
/// metadata) that the second run resumes from.
#[test]
fn tansu_restart_from_committed_offsets_loses_nothing() {
    restart(Tier::Tansu);
}

fn restart(tier: Tier) {
    let Some(cluster) = Cluster::start(tier, "restart", &[(INPUT, INPUT_PARTITIONS), ("out", 2)])
    else {
        return;
    };
    let brokers = cluster.brokers();
    let (input_topic, output) = (cluster.topic(INPUT), cluster.topic("out"));
    let half = tier.count(20_000);
    // Two halves with consecutive event times: the first is all the input while the first run
    // reads it, so the stop comes halfway through the whole input however fast the run is.
    let first = generator(tier, 31, half, START_MS);
    let second = generator(tier, 32, half, START_MS + half * 1000 / tier.rate());
    let group = "restart";
    let text = job_text(tier, "kafka-test", &input_topic, group, &output, None);

    produce_generated(&cluster, &input_topic, &first, None);
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
        let offsets = GroupOffsets::new(brokers, group, &input_topic, INPUT_PARTITIONS);
        thread::spawn(move || {
            let deadline = Instant::now() + PATIENCE;
            while !finished.load(Ordering::Relaxed) {
                if stats.get(Counter::EventsIn) >= half && offsets.get().iter().any(|&o| o > 0) {
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
        brokers,
        2,
        StartFrom::Committed,
        false,
        stop,
        Arc::clone(&stats1),
    );
    finished.store(true, Ordering::Relaxed);
    stopper.join().expect("the stopping thread");
    let read1 = stats1.get(Counter::EventsIn);
    assert!(
        !gave_up.load(Ordering::Relaxed),
        "after {PATIENCE:?} the first run had read {read1} of {half} events and committed offsets \
         {:?}: it was stopped",
        GroupOffsets::new(brokers, group, &input_topic, INPUT_PARTITIONS).get()
    );
    let written_first: HashSet<(i32, i64)> = output_rows_at(brokers, &output)
        .into_iter()
        .map(|at| (at.partition, at.offset))
        .collect();
    assert_eq!(
        read1, half,
        "the first run should have read the whole first half before stopping"
    );
    let committed: Vec<i64> =
        GroupOffsets::new(brokers, group, &input_topic, INPUT_PARTITIONS).get();
    let resume_at: u64 = committed.iter().map(|&o| o.max(0) as u64).sum();
    assert!(
        resume_at > 0 && resume_at <= half,
        "after the first run the group's committed offsets are {committed:?}"
    );

    produce_generated(&cluster, &input_topic, &second, None);
    let stats2 = Arc::new(Stats::default());
    run(
        &text,
        brokers,
        2,
        StartFrom::Committed,
        true,
        Arc::new(AtomicBool::new(false)),
        Arc::clone(&stats2),
    );
    let read2 = stats2.get(Counter::EventsIn);
    let (rows1, rows2): (Vec<_>, Vec<_>) = output_rows_at(brokers, &output)
        .into_iter()
        .partition(|at| written_first.contains(&(at.partition, at.offset)));
    let rows1: Vec<Row> = rows1.into_iter().map(|at: At| at.row).collect();
    let rows2: Vec<Row> = rows2.into_iter().map(|at: At| at.row).collect();

    let mut txns = transactions(&first);
    txns.extend(transactions(&second));
    let input = read_topic(brokers, &input_topic);
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
    let expected: BTreeSet<Row> = reference(&txns).into_values().collect();
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

/// A partition that never receives a record stops holding the watermark back once it has been
/// idle for `idle_timeout`: windows fire while the job runs. (Without an idle timeout the empty
/// partition would keep every window open until the input ends, see the watermark unit tests.)
#[test]
fn an_idle_partition_does_not_hold_windows_back() {
    let cluster =
        Cluster::start(Tier::Mock, "idle", &[(INPUT, 2), ("out-idle", 1)]).expect("a mock cluster");
    let brokers = cluster.brokers().to_string();
    let config = generator(Tier::Mock, 13, 6_000, START_MS);
    let txns: Vec<Transaction> = generate(&config).iter().map(Transaction::from).collect();
    // Everything goes to partition 0; partition 1 stays empty.
    let inputs: Vec<Input> = txns
        .iter()
        .map(|t| Input {
            key: None,
            partition: Some(0),
            timestamp: None,
            payload: Payload::Value(t.clone()),
        })
        .collect();
    cluster.produce(INPUT, &inputs, None, &AtomicU64::new(0));

    let text = job_text(Tier::Mock, "idle-test", INPUT, "idle", "out-idle", None).replace(
        "out_of_orderness = \"2s\"",
        "out_of_orderness = \"2s\"\nidle_timeout = \"300ms\"",
    );
    assert!(
        text.contains("idle_timeout"),
        "the job declares an idle timeout"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Stats::default());
    // Follows the topic (no --until-end): only the idle timeout lets windows fire before a stop,
    // and a stop does not fire open windows.
    let job = {
        let (brokers, stop, stats) = (brokers.clone(), Arc::clone(&stop), Arc::clone(&stats));
        thread::spawn(move || run(&text, &brokers, 1, StartFrom::Earliest, false, stop, stats))
    };
    let deadline = Instant::now() + PATIENCE;
    let mut rows = Vec::new();
    while rows.is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
        rows = output_rows(&brokers, "out-idle");
    }
    stop.store(true, Ordering::Relaxed);
    job.join().expect("the job thread");
    assert!(
        !rows.is_empty(),
        "no window fired within {PATIENCE:?} while partition 1 stayed empty ({} events read)",
        stats.get(Counter::EventsIn)
    );
    let expected = reference(&txns);
    for row in output_rows(&brokers, "out-idle") {
        assert_eq!(
            Some(&row),
            expected.get(&row.window()),
            "a window fired with other values than the reference"
        );
    }
}
