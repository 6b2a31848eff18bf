//! The fraud job against ground truth: the generator in fraud mode injects incidents whose labels
//! say which rule must alert on which account; every incident must be alerted exactly once and
//! nothing else, engine-only with 1 and 2 workers, with arrival shuffled within the bound, and end
//! to end through Kafka. Edge cases: bursts across window-sized boundaries, simultaneous
//! payments, and a payment beyond the bound, which goes to the late output and into no rule.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::kafka::{Cluster, Tier, produce_input, read_topic, run_job_to_end, run_to_end};
use eddy::job::{Job, SourceKind};
use eddy::sources::generator::{Generator, GeneratorConfig, Transaction};
use eddy::sources::incidents::{Incident, incidents};
use eddy::stats::Counter;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;

/// The rules' span T (ms); the generator lays incidents out in fractions of it.
const WITHIN_MS: u64 = 5_000;

/// The fraud section and alert sinks shared by every test job (rules as the generator's
/// incidents expect them, `src/sources/incidents.rs`).
fn fraud_job(source: &str, alerts: &str, late: &str) -> String {
    format!(
        r#"
[job]
name = "fraud-test"
tick = "10ms"
commit_interval = "50ms"

{source}

[[fraud]]
name = "fraud"
source = "payments"
suppression = "5s"
velocity = {{ count = 5, amount = 100000, within = "5s" }}
small_then_large = {{ small_below = 100, large_above = 50000, within = "5s" }}
amount_spike = {{ factor = 5.0, history = 10, min_history = 4 }}
impossible_travel = {{ within = "5s" }}
card_testing = {{ merchants = 3, small_below = 100, within = "5s" }}
sinks = ["alerts"]
late_sink = "late"

{alerts}

{late}
"#
    )
}

const SCHEMA: &str = r#"schema = { txn_id = "string", account_id = "int", amount_cents = "int", merchant = "string", country = "string", ts = "timestamp" }"#;

fn file_sinks() -> (String, String) {
    (
        r#"[[sinks]]
name = "alerts"
kind = "file"
path = "alerts.jsonl""#
            .into(),
        r#"[[sinks]]
name = "late"
kind = "file"
path = "late.jsonl""#
            .into(),
    )
}

/// The payments source reading `in.jsonl` beside the job, cut into `splits` partitions.
fn file_source(splits: usize) -> String {
    format!(
        r#"[[sources]]
name = "payments"
kind = "file"
paths = ["in.jsonl"]
splits = {splits}
event_time = "ts"
out_of_orderness = "1s"
{SCHEMA}"#
    )
}

/// An alert as the sinks write it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
struct Alert {
    alert_id: String,
    rule: String,
    account_id: i64,
    time: i64,
    evidence: String,
    detail: String,
}

fn parse_alerts<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Vec<Alert> {
    lines
        .into_iter()
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice(l).unwrap_or_else(|e| {
                panic!("alert {:?} is not JSON: {e}", String::from_utf8_lossy(l))
            })
        })
        .collect()
}

/// Runs a job file written into `dir` on `workers` workers, and returns its alerts and the
/// number of late lines.
fn run_file_job(dir: &Path, text: &str, workers: usize) -> (Vec<Alert>, usize) {
    let path = dir.join("job.toml");
    std::fs::write(&path, text).unwrap();
    let job = Job::load(&path).unwrap_or_else(|e| panic!("the test's job is invalid:\n{e}"));
    run_job_to_end(job, workers);
    let alerts = std::fs::read(dir.join("alerts.jsonl")).unwrap();
    let late = std::fs::read_to_string(dir.join("late.jsonl")).unwrap();
    (
        parse_alerts(alerts.split(|b| *b == b'\n')),
        late.lines().count(),
    )
}

/// Asserts that `alerts` are exactly one per incident, on the incident's account and rule, with
/// evidence drawn from the incident's payments.
fn assert_alerts_match(alerts: &[Alert], truth: &[Incident]) {
    let expected: BTreeMap<i64, &Incident> = truth.iter().map(|i| (i.account, i)).collect();
    let mut seen = BTreeSet::new();
    for alert in alerts {
        let incident = expected.get(&alert.account_id).unwrap_or_else(|| {
            panic!("false positive: {alert:?} is on an account with no incident")
        });
        assert_eq!(
            alert.rule, incident.rule,
            "wrong rule for {incident:?}: {alert:?}"
        );
        assert!(
            seen.insert(alert.account_id),
            "incident alerted twice: {alert:?}"
        );
        let ids: BTreeSet<String> = incident
            .payments
            .iter()
            .map(|p| format!("t{}", p.seq))
            .collect();
        for id in alert.evidence.split(',') {
            assert!(
                ids.contains(id),
                "evidence {id} is not a payment of {incident:?}"
            );
        }
        assert_eq!(
            alert.alert_id,
            format!("fraud:{}:{}:{}", alert.rule, alert.account_id, alert.time)
        );
    }
    let missed: Vec<_> = truth
        .iter()
        .filter(|i| !seen.contains(&i.account))
        .collect();
    assert!(
        missed.is_empty(),
        "{} incidents not alerted, e.g. {:?}",
        missed.len(),
        missed.first()
    );
}

/// The generator config of the job's first source.
fn generator_of(job: &Job) -> GeneratorConfig {
    match &job.sources[0].kind {
        SourceKind::Generator { config, .. } => config.clone(),
        other => panic!("not a generator: {other:?}"),
    }
}

fn generator_source(count: u64, partitions: u64) -> String {
    format!(
        r#"[[sources]]
name = "payments"
kind = "generator"
seed = 11
count = {count}
rate = 2000
accounts = 5000
merchants = 500
disorder = "500ms"
partitions = {partitions}
fraud = {{ every = 400, within = "5s" }}
event_time = "ts"
out_of_orderness = "1s"
{SCHEMA}"#
    )
}

/// 120 k generated payments, 300 incidents of seven kinds: precision and recall 1.0, and the same
/// alerts with 1 and 2 workers.
#[test]
fn every_incident_is_alerted_once_and_nothing_else_with_one_and_two_workers() {
    let (alerts_sink, late_sink) = file_sinks();
    let text = fraud_job(&generator_source(120_000, 4), &alerts_sink, &late_sink);
    let dir = tempfile::tempdir().unwrap();
    let job = Job::parse(&dir.path().join("job.toml"), &text).unwrap();
    let truth = incidents(&generator_of(&job));
    assert!(truth.len() >= 250, "only {} incidents", truth.len());
    // The edge cases are in the input: a burst across a multiple of T, simultaneous payments.
    assert!(truth.iter().any(|i| {
        let (first, last) = (i.payments[0].ts, i.payments.last().unwrap().ts);
        i.rule == "velocity" && first / WITHIN_MS != last / WITHIN_MS
    }));
    assert!(
        truth
            .iter()
            .any(|i| i.payments.len() > 1 && i.payments.iter().all(|p| p.ts == i.payments[0].ts))
    );

    let (one, late) = run_file_job(dir.path(), &text, 1);
    assert_eq!(late, 0, "nothing is beyond the bound");
    assert_alerts_match(&one, &truth);
    let (mut two, _) = run_file_job(dir.path(), &text, 2);
    two.sort();
    let mut one = one;
    one.sort();
    assert_eq!(one, two, "1 and 2 workers disagree");
}

/// The same payments read from a file in an order shuffled within the bound give the same alerts
/// as in event-time order.
#[test]
fn arrival_order_within_the_bound_changes_nothing() {
    let config = GeneratorConfig {
        seed: 5,
        count: Some(100_000),
        rate: 2000,
        accounts: 5000,
        merchants: 500,
        disorder_ms: 0,
        start_ms: 1_700_000_000_000,
        paced: false,
        fraud: Some(eddy::sources::incidents::FraudMix {
            every: 500,
            within_ms: WITHIN_MS,
        }),
    };
    let mut payments: Vec<Transaction> = Vec::new();
    let mut generator = Generator::new(config.clone());
    while !generator.finished() {
        generator.take(10_000, |t| payments.push(t));
    }
    let truth = incidents(&config);
    let (alerts_sink, late_sink) = file_sinks();
    let source = file_source(3);
    let text = fraud_job(&source, &alerts_sink, &late_sink);
    let write = |dir: &Path, payments: &[Transaction]| {
        let mut lines = String::new();
        for p in payments {
            lines.push_str(&serde_json::to_string(p).unwrap());
            lines.push('\n');
        }
        std::fs::write(dir.join("in.jsonl"), lines).unwrap();
    };
    // In order of event time (ties by sequence).
    let ordered = tempfile::tempdir().unwrap();
    payments.sort_by_key(|p| (p.ts, p.seq));
    write(ordered.path(), &payments);
    let (mut in_order, late) = run_file_job(ordered.path(), &text, 2);
    assert_eq!(late, 0);
    assert_alerts_match(&in_order, &truth);
    // Shuffled: sorted by event time plus a random delay below the bound, then neighbours
    // swapped at random, so a payment arrives after payments up to 900 ms younger.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut keyed: Vec<(u64, Transaction)> = payments
        .iter()
        .map(|p| (p.ts + rng.random_range(0..900), *p))
        .collect();
    keyed.sort_by_key(|(k, _)| *k);
    let mut shuffled: Vec<Transaction> = keyed.into_iter().map(|(_, p)| p).collect();
    for chunk in shuffled.chunks_mut(2) {
        if chunk.len() == 2 && chunk[0].ts.abs_diff(chunk[1].ts) < 900 && rng.random_bool(0.5) {
            chunk.swap(0, 1);
        }
    }
    assert_ne!(shuffled, payments);
    let mixed = tempfile::tempdir().unwrap();
    write(mixed.path(), &shuffled);
    let (mut out_of_order, late) = run_file_job(mixed.path(), &text, 2);
    assert_eq!(late, 0);
    in_order.sort();
    out_of_order.sort();
    assert_eq!(in_order, out_of_order);
}

/// A payment that arrives after the watermark passed it goes to the late output and does not
/// complete a pattern; one within the bound does.
#[test]
fn a_payment_beyond_the_bound_is_late_and_fires_nothing() {
    let (alerts_sink, late_sink) = file_sinks();
    let source = file_source(1);
    let text = fraud_job(&source, &alerts_sink, &late_sink);
    let line = |id: &str, account: i64, amount: i64, country: &str, ts: u64| {
        format!(
            r#"{{"txn_id":"{id}","account_id":{account},"amount_cents":{amount},"merchant":"m1","country":"{country}","ts":{ts}}}"#
        )
    };
    let t0 = 1_700_000_000_000u64;
    let lines = [
        // Account 1: a small payment, then time moves on 3 s, then the large one, dated 1 s after
        // the small one, arrives 1 s behind the watermark: late, so no small-then-large alert.
        line("a1", 1, 50, "US", t0),
        line("x1", 9, 5000, "US", t0 + 3_000),
        line("a2", 1, 60_000, "US", t0 + 1_000),
        // Account 2: the same, but the large payment is only 500 ms behind: within the bound.
        line("b1", 2, 50, "US", t0 + 3_000),
        line("x2", 9, 5000, "US", t0 + 4_500),
        line("b2", 2, 60_000, "US", t0 + 4_000),
        line("x3", 9, 5000, "US", t0 + 20_000),
    ];
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.jsonl"), lines.join("\n") + "\n").unwrap();
    let (alerts, late) = run_file_job(dir.path(), &text, 1);
    assert_eq!(late, 1, "exactly the payment beyond the bound is late");
    let late_rows = std::fs::read_to_string(dir.path().join("late.jsonl")).unwrap();
    assert!(late_rows.contains(r#""txn_id":"a2""#), "{late_rows}");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(
        (alerts[0].rule.as_str(), alerts[0].account_id),
        ("small_then_large", 2)
    );
    assert_eq!(alerts[0].evidence, "b1,b2");
    assert_eq!(alerts[0].time, (t0 + 4_000) as i64);
}

/// Kafka in, alerts out to a Kafka topic: ground truth holds end to end.
#[test]
fn incidents_are_alerted_once_through_kafka() {
    let cluster = Cluster::start(
        Tier::Mock,
        "fraud",
        &[("payments", 4), ("alerts", 2), ("late", 1)],
    )
    .expect("the mock cluster is never skipped");
    let brokers = cluster.brokers();
    let config = GeneratorConfig {
        seed: 9,
        count: Some(100_000),
        rate: 2000,
        accounts: 5000,
        merchants: 500,
        disorder_ms: 500,
        start_ms: 1_700_000_000_000,
        paced: false,
        fraud: Some(eddy::sources::incidents::FraudMix {
            every: 500,
            within_ms: WITHIN_MS,
        }),
    };
    produce_input(brokers, "payments", &config, None);
    let source = format!(
        r#"[[sources]]
name = "payments"
kind = "kafka"
brokers = "${{BROKERS}}"
topics = ["payments"]
group = "fraud-test"
event_time = "ts"
out_of_orderness = "1s"
{SCHEMA}"#
    );
    let alerts_sink = r#"[[sinks]]
name = "alerts"
kind = "kafka"
brokers = "${BROKERS}"
topic = "alerts"
key = "account_id""#;
    let late_sink = r#"[[sinks]]
name = "late"
kind = "kafka"
brokers = "${BROKERS}"
topic = "late""#;
    let text = fraud_job(&source, alerts_sink, late_sink);
    let stats = run_to_end(&text, brokers, 2);
    let messages = read_topic(brokers, "alerts");
    let alerts = parse_alerts(messages.iter().map(|m| m.payload.as_slice()));
    assert_alerts_match(&alerts, &incidents(&config));
    assert_eq!(stats.get(Counter::Alerts), alerts.len() as u64);
    for m in &messages {
        assert_eq!(m.header("eddy.output").as_deref(), Some("fraud"));
    }
    assert!(read_topic(brokers, "late").is_empty());
}

/// A bad `[[fraud]]` section names the file, line and field of each problem.
#[test]
fn bad_fraud_sections_name_file_line_and_field() {
    let text = format!(
        r#"[job]
name = "bad"

[[sources]]
name = "payments"
kind = "file"
paths = ["in.jsonl"]
event_time = "ts"
{SCHEMA}

[[fraud]]
name = "f"
source = "payments"
fields = {{ account = "acount_id", country = "amount_cents" }}
suppression = "soon"
amount_spike = {{ factor = 0.5, history = 3, min_history = 5 }}
card_testing = {{ merchants = 0, small_below = 100, within = "0s" }}
sinks = ["nowhere"]

[[fraud]]
name = "g"
source = "payments"
"#
    );
    let errors = Job::parse(Path::new("bad.toml"), &text)
        .unwrap_err()
        .to_string();
    for expected in [
        "bad.toml:14: fraud[0].fields.account: the source schema has no field `acount_id`",
        "bad.toml:14: fraud[0].fields.country: field `amount_cents` is of type Int, but a payment's country must be string",
        "bad.toml:15: fraud[0].suppression: `soon` is not a duration",
        "bad.toml:16: fraud[0].amount_spike.factor: must be a number above 1",
        "bad.toml:16: fraud[0].amount_spike.min_history: must not exceed `history` (3)",
        "bad.toml:17: fraud[0].card_testing.merchants: must be an integer from 1 to 1000",
        "bad.toml:17: fraud[0].card_testing.within: must be at least 1ms",
        "bad.toml:18: fraud[0].sinks: no sink named `nowhere`",
        "bad.toml:21: fraud[1]: no rule is on",
    ] {
        assert!(
            errors.contains(expected),
            "missing {expected:?} in:\n{errors}"
        );
    }
}
