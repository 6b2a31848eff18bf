//! The notification adapter against the CPaaS stand-in on 127.0.0.1: the calls' shape, retries,
//! permanent errors, exactly-once delivery under failures and across a restart, and
//! backpressure; the job-level tests run a job file through librdkafka's in-process cluster.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::kafka::{Cluster, PATIENCE, Tier, high_watermarks, read_topic};
use eddy::dataflows::RunOptions;
use eddy::job::Job;
use eddy::run::{ClusterArgs, run_job};
use eddy::sinks::notify::adapter::{Completion, NotificationAdapter, Submission};
use eddy::sinks::notify::client::{EMAIL_PATH, SMS_PATH};
use eddy::sinks::notify::config::{ApiKey, NotifyConfig, RetryPolicy};
use eddy::sinks::notify::outcome::{Delivery, Outcome};
use eddy::sinks::notify::request::{Channel, NotificationRequest};
use eddy::sources::kafka::StartFrom;
use eddy::stats::{Counter, Stats};
use eddy::tools::cpaas::{CpaasStandIn, Fault, Faults, StandInOptions};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde::Deserialize;

const KEY: &str = "test-key-0123";

// ---------------------------------------------------------------------------------------------
// The adapter on its own.

fn sms(id: &str, to: &str) -> NotificationRequest {
    NotificationRequest {
        request_id: id.into(),
        channel: Channel::Sms,
        to: to.into(),
        subject: None,
        text: format!("hello {id}"),
    }
}

/// An adapter config for `standin` with a fresh sent-record in `dir`, fast retries and the
/// given client timeout.
fn config(standin: &CpaasStandIn, dir: &Path, timeout: Duration) -> NotifyConfig {
    let mut config = NotifyConfig::new(
        &standin.base_url(),
        ApiKey::new(KEY.into()),
        "Eddy",
        dir.join("sent.redb"),
    );
    config.timeout = timeout;
    config.retry = RetryPolicy {
        max_attempts: 20,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(20),
    };
    config
}

/// Submits every request (waiting while the queue is full) and returns their outcomes by tag.
fn deliver(adapter: &NotificationAdapter, requests: Vec<NotificationRequest>) -> Vec<Outcome> {
    let (reply, completions) = mpsc::channel::<Completion>();
    let n = requests.len();
    for (tag, request) in requests.into_iter().enumerate() {
        let mut submission = Submission {
            request,
            tag: tag as u64,
            reply: reply.clone(),
        };
        while let Some(refused) = adapter.offer(submission) {
            submission = refused;
            thread::sleep(Duration::from_millis(1));
        }
    }
    let mut outcomes: Vec<Option<Outcome>> = vec![None; n];
    for _ in 0..n {
        let c = completions
            .recv_timeout(PATIENCE)
            .expect("an outcome for every request");
        outcomes[c.tag as usize] = Some(c.outcome.expect("the sent-record works"));
    }
    outcomes.into_iter().map(Option::unwrap).collect()
}

fn message_id(outcome: &Outcome) -> &str {
    match &outcome.delivery {
        Delivery::Sent { message_id, .. } => message_id,
        Delivery::Failed { reason } => panic!("{} failed: {reason}", outcome.request.request_id),
    }
}

#[test]
fn calls_have_the_api_shape_headers_and_idempotency_keys() {
    let standin = CpaasStandIn::start(StandInOptions {
        record_calls: true,
        ..StandInOptions::new(KEY)
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stats = Arc::new(Stats::default());
    let adapter = NotificationAdapter::start(
        &config(&standin, dir.path(), Duration::from_secs(10)),
        &stats,
    )
    .unwrap();
    let email = NotificationRequest {
        request_id: "e1".into(),
        channel: Channel::Email,
        to: "ada@example.com".into(),
        subject: Some("Welcome".into()),
        text: "Hello Ada".into(),
    };
    let outcomes = deliver(&adapter, vec![sms("s1", "+41790000001"), email]);
    assert_eq!(message_id(&outcomes[0]), "s1");
    assert_eq!(message_id(&outcomes[1]), "e1");
    drop(adapter);

    let calls = standin.calls();
    assert_eq!(calls.len(), 2, "{calls:#?}");
    let sms_call = calls.iter().find(|c| c.path == SMS_PATH).unwrap();
    assert_eq!(sms_call.authorization.as_deref(), Some("App test-key-0123"));
    assert_eq!(sms_call.content_type.as_deref(), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&sms_call.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"messages": [{
            "destinations": [{"to": "+41790000001", "messageId": "s1"}],
            "from": "Eddy",
            "text": "hello s1"
        }]})
    );
    let email_call = calls.iter().find(|c| c.path == EMAIL_PATH).unwrap();
    assert_eq!(
        email_call.authorization.as_deref(),
        Some("App test-key-0123")
    );
    assert!(
        email_call
            .content_type
            .as_deref()
            .unwrap()
            .starts_with("multipart/form-data; boundary=")
    );
    let form: HashMap<&str, &str> = email_call
        .form
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        form,
        HashMap::from([
            ("from", "Eddy"),
            ("to", "ada@example.com"),
            ("subject", "Welcome"),
            ("text", "Hello Ada"),
            ("messageId", "e1"),
        ])
    );
}

#[test]
fn a_wrong_key_is_a_permanent_error() {
    let standin = CpaasStandIn::start(StandInOptions::new("another-key")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let adapter = NotificationAdapter::start(
        &config(&standin, dir.path(), Duration::from_secs(10)),
        &Arc::new(Stats::default()),
    )
    .unwrap();
    let outcomes = deliver(&adapter, vec![sms("s1", "+41790000001")]);
    let Delivery::Failed { reason } = &outcomes[0].delivery else {
        panic!("sent with a wrong key: {outcomes:?}");
    };
    assert!(reason.contains("401"), "{reason}");
    assert!(!reason.contains("test-key"), "the key leaked into {reason}");
    assert_eq!(outcomes[0].attempts, 1);
}

#[test]
fn limits_too_large_for_the_runtime_are_an_error_not_a_panic() {
    let standin = CpaasStandIn::start(StandInOptions::new(KEY)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stats = Arc::new(Stats::default());
    let huge = i64::MAX as usize;
    let mut queue = config(&standin, dir.path(), Duration::from_secs(5));
    queue.queue = huge;
    let mut concurrency = config(&standin, dir.path(), Duration::from_secs(5));
    concurrency.sms.concurrency = huge;
    concurrency.email.concurrency = huge;
    for (config, field) in [(queue, "`queue`"), (concurrency, "`sms.concurrency`")] {
        // Before the bounds, tokio's semaphores panicked here (more than MAX_PERMITS).
        let error = NotificationAdapter::start(&config, &stats)
            .err()
            .unwrap_or_else(|| panic!("a huge {field} was accepted"));
        let error = format!("{error:#}");
        assert!(
            error.starts_with(&format!("{field} is {huge}: it must be from 1 to")),
            "{error}"
        );
    }
}

#[test]
fn transient_errors_are_retried_and_end_in_exactly_one_send() {
    let standin = CpaasStandIn::start(StandInOptions::new(KEY)).unwrap();
    standin.script([
        Fault::TooManyRequests {
            retry_after: Duration::from_secs(1),
        },
        Fault::ServerError,
        Fault::ServerError,
        Fault::ServerError,
        // Accepted, but answered after the client's timeout: the retry must not send again.
        Fault::Slow(Duration::from_secs(3)),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let stats = Arc::new(Stats::default());
    let adapter = NotificationAdapter::start(
        &config(&standin, dir.path(), Duration::from_millis(500)),
        &stats,
    )
    .unwrap();
    let outcomes = deliver(&adapter, vec![sms("s1", "+41790000001")]);
    assert_eq!(message_id(&outcomes[0]), "s1");
    assert_eq!(outcomes[0].attempts, 6);
    assert_eq!(stats.get(Counter::NotificationRetries), 5);
    drop(adapter);
    let counts = standin.counts();
    assert_eq!(counts.calls, 6);
    assert_eq!(counts.sent, 1, "{counts:?}");
    assert_eq!(
        counts.duplicates, 1,
        "the retry after the timeout: {counts:?}"
    );
    assert_eq!(standin.sent().len(), 1);
}

#[test]
fn a_bad_request_fails_alone_without_failing_its_batch() {
    let standin = CpaasStandIn::start(StandInOptions::new(KEY)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&standin, dir.path(), Duration::from_secs(10));
    // One call slot, so that the requests queue up and go in one batch.
    config.sms.concurrency = 1;
    let adapter = NotificationAdapter::start(&config, &Arc::new(Stats::default())).unwrap();
    let mut requests: Vec<_> = (0..50)
        .map(|i| sms(&format!("s{i}"), &format!("+417900{i:05}")))
        .collect();
    requests[7].to = "12".into();
    let outcomes = deliver(&adapter, requests);
    for (i, outcome) in outcomes.iter().enumerate() {
        if i == 7 {
            let Delivery::Failed { reason } = &outcome.delivery else {
                panic!("an invalid number was sent: {outcome:?}");
            };
            assert!(reason.contains("400 Bad Request"), "{reason}");
            assert!(
                reason.contains("Invalid destination address `12`"),
                "{reason}"
            );
        } else {
            assert_eq!(message_id(outcome), format!("s{i}"));
        }
    }
    drop(adapter);
    let counts = standin.counts();
    assert_eq!(counts.sent, 49);
    // The refused batch was halved until the bad message was alone: one 400 per halving on its
    // way down (50, 25, 12, 6, 3, 2, 1), and the others went out in a few large calls, not one
    // call each.
    assert!(
        (2..=7).contains(&counts.refused),
        "400s: {} (its batch's halvings, then itself): {counts:?}",
        counts.refused
    );
    assert!(
        counts.calls <= 2 * 7 + 1,
        "{} calls for a batch of 50 with one bad message: {counts:?}",
        counts.calls
    );
}

#[test]
fn duplicates_and_a_reopened_sent_record_never_send_twice() {
    let standin = CpaasStandIn::start(StandInOptions {
        dedupe: false,
        ..StandInOptions::new(KEY)
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config(&standin, dir.path(), Duration::from_secs(10));
    let stats = Arc::new(Stats::default());
    let requests: Vec<_> = (0..300)
        .map(|i| sms(&format!("s{}", i % 100), &format!("+417900{:05}", i % 100)))
        .collect();
    {
        let adapter = NotificationAdapter::start(&config, &stats).unwrap();
        let outcomes = deliver(&adapter, requests.clone());
        assert!(
            outcomes
                .iter()
                .all(|o| matches!(o.delivery, Delivery::Sent { .. }))
        );
        assert_eq!(outcomes.iter().filter(|o| !o.deduplicated).count(), 100);
    }
    let adapter = NotificationAdapter::start(&config, &stats).unwrap();
    let outcomes = deliver(&adapter, requests);
    assert!(outcomes.iter().all(|o| o.deduplicated && o.attempts == 0));
    drop(adapter);
    let counts = standin.counts();
    assert_eq!((counts.sent, counts.duplicates), (100, 0), "{counts:?}");
}

/// A stop waits for no retry: a request whose call is failing when the adapter stops is left
/// undecided (not recorded as failed), and the next run delivers it.
#[test]
fn a_stop_abandons_retries_and_the_next_run_delivers_the_request() {
    let standin = CpaasStandIn::start(StandInOptions::new(KEY)).unwrap();
    standin.set_faults(Faults {
        server_errors: 1.0,
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(&standin, dir.path(), Duration::from_secs(10));
    // Three attempts, seconds apart: without the stop, the request would fail for good within
    // the adapter's stop patience.
    config.retry = RetryPolicy {
        max_attempts: 3,
        min_delay: Duration::from_secs(2),
        max_delay: Duration::from_secs(2),
    };
    let stats = Arc::new(Stats::default());
    let adapter = NotificationAdapter::start(&config, &stats).unwrap();
    let (reply, completions) = mpsc::channel::<Completion>();
    let submission = Submission {
        request: sms("s1", "+41790000001"),
        tag: 0,
        reply,
    };
    assert!(adapter.offer(submission).is_none());
    wait_for("the first call", || standin.counts().calls >= 1);
    drop(adapter);
    assert_eq!(standin.counts().calls, 1, "no retry after the stop");
    assert!(completions.try_recv().is_err(), "the request was decided");

    standin.set_faults(Faults::default());
    let adapter = NotificationAdapter::start(&config, &stats).unwrap();
    let outcomes = deliver(&adapter, vec![sms("s1", "+41790000001")]);
    assert_eq!(message_id(&outcomes[0]), "s1");
    assert!(!outcomes[0].deduplicated);
    drop(adapter);
    assert_eq!(standin.counts().sent, 1);
}

// ---------------------------------------------------------------------------------------------
// Jobs: requests from Kafka, outcomes and dead letters back to Kafka.

const REQUESTS: &str = "notifications.requested";
const OUTCOMES: &str = "notifications.outcomes";
const DLQ: &str = "dlq";

/// A job reading requests from `REQUESTS` and delivering them through `base_url`.
fn job_text(base_url: &str, sent_record: &Path, limits: &str) -> String {
    format!(
        r#"
[job]
name = "notify-test"
commit_interval = "50ms"
dead_letter = "dlq"

[[sources]]
name = "requests"
kind = "kafka"
brokers = "${{BROKERS}}"
topics = ["{REQUESTS}"]
group = "notify-test"
event_time = "ts"
schema = {{ request_id = "string", channel = "string", to = "string", subject = "string?", text = "string", ts = "timestamp" }}

[[sinks]]
name = "cpaas"
kind = "notify"
source = "requests"
base_url = "{base_url}"
api_key = "${{EDDY_CPAAS_KEY}}"
outcomes = "outcomes"
sent_record = "{sent_record}"
min_backoff = "1ms"
max_backoff = "20ms"
max_attempts = 30
{limits}

[[sinks]]
name = "outcomes"
kind = "kafka"
brokers = "${{BROKERS}}"
topic = "{OUTCOMES}"

[[sinks]]
name = "dlq"
kind = "kafka"
brokers = "${{BROKERS}}"
topic = "{DLQ}"
"#,
        sent_record = sent_record.display(),
    )
}

/// Writes `n` SMS requests `r0…` keyed by request id, plus `extra` raw payloads.
fn produce_requests(brokers: &str, ids: std::ops::Range<usize>, extra: &[&str]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let mut payloads: Vec<(String, String)> = ids
        .map(|i| {
            let id = format!("r{i}");
            let payload = format!(
                r#"{{"request_id":"{id}","channel":"sms","to":"+417{i:08}","text":"hello {i}","ts":{}}}"#,
                1_700_000_000_000u64 + i as u64
            );
            (id, payload)
        })
        .collect();
    payloads.extend(
        extra
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("x{i}"), p.to_string())),
    );
    for (key, payload) in &payloads {
        let mut record = BaseRecord::to(REQUESTS).key(key).payload(payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(PATIENCE).unwrap();
}

/// The in-process Kafka cluster with `topics`, and its address.
fn mock_cluster(test: &str, topics: &[(&str, i32)]) -> (Cluster, String) {
    let cluster = Cluster::start(Tier::Mock, test, topics).expect("the mock tier always runs");
    let brokers = cluster.brokers().to_string();
    (cluster, brokers)
}

/// Runs `text` in a thread until `stop` is set; returns its handle.
fn start_job(
    text: &str,
    brokers: &str,
    workers: usize,
    stop: &Arc<AtomicBool>,
    stats: &Arc<Stats>,
) -> thread::JoinHandle<anyhow::Result<()>> {
    let brokers = brokers.to_string();
    let job = Job::parse_with(Path::new("notify.toml"), text, &|name| match name {
        "BROKERS" => Some(brokers.clone()),
        "EDDY_CPAAS_KEY" => Some(KEY.into()),
        _ => None,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let options = RunOptions {
        start: StartFrom::Committed,
        until_end: false,
        stop: Arc::clone(stop),
        stats: Arc::clone(stats),
        views: job.view_stores(),
        reset_state: Vec::new(),
    };
    thread::spawn(move || {
        run_job(
            job,
            &ClusterArgs::local(workers),
            options,
            Duration::from_secs(60),
            |_, _| {},
        )
    })
}

/// Waits until `done` holds, failing after `PATIENCE` with `what`.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "waited {PATIENCE:?} for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// How many messages `topic` holds.
fn topic_size(brokers: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    high_watermarks(&consumer, topic)
        .values()
        .map(|(low, high)| high - low)
        .sum()
}

/// An outcome event as read back.
#[derive(Debug, Deserialize)]
struct OutcomeEvent {
    #[serde(rename = "type")]
    kind: String,
    request_id: String,
    message_id: Option<String>,
    reason: Option<String>,
    deduplicated: bool,
    user_id: Option<String>,
    time: Option<i64>,
}

fn outcome_events(brokers: &str) -> Vec<OutcomeEvent> {
    read_topic(brokers, OUTCOMES)
        .iter()
        .map(|m| {
            let event: OutcomeEvent = serde_json::from_slice(&m.payload).unwrap();
            assert_eq!(m.key.as_deref(), Some(event.request_id.as_bytes()));
            assert_eq!(m.header("eddy.event").as_deref(), Some(event.kind.as_str()));
            event
        })
        .collect()
}

/// Checks that each of `ids` ended as NotificationSent with its own message id, and that no two
/// outcomes both claim to have sent it (after a restart, replays come from the sent-record and
/// say so).
fn assert_each_sent_once(events: &[OutcomeEvent], ids: &HashSet<String>) {
    let mut sent = HashMap::<&str, usize>::new();
    for e in events {
        assert_eq!(e.kind, "NotificationSent", "{e:?}");
        assert_eq!(e.message_id.as_deref(), Some(e.request_id.as_str()));
        if !e.deduplicated {
            *sent.entry(&e.request_id).or_default() += 1;
        }
    }
    let got: HashSet<String> = events.iter().map(|e| e.request_id.clone()).collect();
    assert_eq!(&got, ids, "requests without an outcome, or unknown ones");
    let twice: Vec<_> = sent.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
}

#[test]
fn with_half_of_all_calls_failing_every_request_is_sent_exactly_once() {
    let (_mock, brokers) = mock_cluster("notify1", &[(REQUESTS, 4), (OUTCOMES, 2), (DLQ, 1)]);
    let standin = CpaasStandIn::start(StandInOptions::new(KEY)).unwrap();
    standin.set_faults(Faults {
        server_errors: 0.3,
        too_many_requests: 0.1,
        retry_after: Duration::ZERO,
        slow: 0.1,
        slow_by: Duration::from_millis(400),
    });
    let dir = tempfile::tempdir().unwrap();
    let text = job_text(
        &standin.base_url(),
        &dir.path().join("sent.redb"),
        "timeout = \"200ms\"\nsms = { batch = 20, concurrency = 8 }",
    );
    const N: usize = 2_000;
    produce_requests(&brokers, 0..N, &[]);
    let (stop, stats) = (Arc::new(AtomicBool::new(false)), Arc::new(Stats::default()));
    let job = start_job(&text, &brokers, 2, &stop, &stats);
    wait_for("every outcome", || {
        topic_size(&brokers, OUTCOMES) >= N as i64
    });
    stop.store(true, Ordering::Relaxed);
    job.join().unwrap().unwrap();

    let ids: HashSet<String> = (0..N).map(|i| format!("r{i}")).collect();
    assert_each_sent_once(&outcome_events(&brokers), &ids);
    let counts = standin.counts();
    assert_eq!(counts.sent, N as u64, "{counts:?}");
    assert!(counts.failed > 0 && stats.get(Counter::NotificationRetries) > 0);
    assert_eq!(
        standin.sent().keys().cloned().collect::<HashSet<_>>(),
        ids,
        "the stand-in sent other messages"
    );
    assert_eq!(topic_size(&brokers, DLQ), 0);
}

#[test]
fn bad_requests_go_to_the_dead_letters_with_the_reason() {
    let (_mock, brokers) = mock_cluster("notify2", &[(REQUESTS, 1), (OUTCOMES, 1), (DLQ, 1)]);
    let standin = CpaasStandIn::start(StandInOptions::new(KEY)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = job_text(&standin.base_url(), &dir.path().join("sent.redb"), "");
    produce_requests(
        &brokers,
        0..20,
        &[
            r#"{"request_id":"bad-number","channel":"sms","to":"12","text":"x","ts":1}"#,
            r#"{"request_id":"bad-channel","channel":"fax","to":"+41790000001","text":"x","ts":1}"#,
            r#"{"request_id":"no-subject","channel":"email","to":"a@b.ch","text":"x","ts":1}"#,
            r#"{"request_id":"not json"#,
        ],
    );
    let (stop, stats) = (Arc::new(AtomicBool::new(false)), Arc::new(Stats::default()));
    let job = start_job(&text, &brokers, 1, &stop, &stats);
    wait_for("outcomes and dead letters", || {
        topic_size(&brokers, OUTCOMES) >= 23 && topic_size(&brokers, DLQ) >= 4
    });
    stop.store(true, Ordering::Relaxed);
    job.join().unwrap().unwrap();

    let events = outcome_events(&brokers);
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "NotificationFailed")
        .collect();
    let reason = |id: &str| {
        let event = failed.iter().find(|e| e.request_id == id);
        event.and_then(|e| e.reason.clone()).unwrap_or_default()
    };
    assert_eq!(failed.len(), 3, "{events:?}");
    assert!(reason("bad-number").contains("400 Bad Request"));
    assert_eq!(
        reason("bad-channel"),
        "request `bad-channel`: unknown channel `fax`: expected sms or email"
    );
    assert_eq!(
        reason("no-subject"),
        "request `no-subject`: an e-mail needs a `subject`"
    );
    assert_eq!(events.len(), 23);
    let letters = read_topic(&brokers, DLQ);
    let mut errors: Vec<String> = letters
        .iter()
        .map(|m| m.header("eddy.error").unwrap())
        .collect();
    errors.sort();
    assert_eq!(letters.len(), 4, "{errors:#?}");
    assert!(errors[0].contains("EOF while parsing"), "{errors:#?}");
    assert_eq!(
        errors[1],
        "not a notification request: request `bad-channel`: unknown channel `fax`: expected sms \
         or email"
    );
    assert_eq!(
        errors[2],
        "not a notification request: request `no-subject`: an e-mail needs a `subject`"
    );
    assert!(errors[3].contains("400 Bad Request") && errors[3].contains("`12`"));
    assert_eq!(standin.counts().sent, 20);
}

/// Everything the process logs at debug level from now on (one subscriber for the whole test
/// binary, set by the first test that asks).
fn captured_logs() -> Arc<std::sync::Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<std::sync::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    Arc::clone(LOGS.get_or_init(|| {
        let logs = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Arc::clone(&logs);
        tracing_subscriber::fmt()
            .with_env_filter("eddy=debug")
            .with_ansi(false)
            .with_writer(move || LogWriter(Arc::clone(&sink)))
            .init();
        logs
    }))
}

struct LogWriter(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn a_cpaas_that_echoes_the_key_gets_it_recorded_nowhere() {
    let logs = captured_logs();
    let (_mock, brokers) = mock_cluster("notify-echo", &[(REQUESTS, 1), (OUTCOMES, 1), (DLQ, 1)]);
    let standin = CpaasStandIn::start(StandInOptions::new(KEY)).unwrap();
    // A transient echo (retried, and logged), then a permanent one (the request fails with it).
    standin.script([
        Fault::EchoAuthorization(StatusCode::SERVICE_UNAVAILABLE),
        Fault::EchoAuthorization(StatusCode::BAD_REQUEST),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let sent_record = dir.path().join("sent.redb");
    let text = job_text(&standin.base_url(), &sent_record, "");
    produce_requests(&brokers, 0..1, &[]);
    let (stop, stats) = (Arc::new(AtomicBool::new(false)), Arc::new(Stats::default()));
    let job = start_job(&text, &brokers, 1, &stop, &stats);
    wait_for("the outcome and the dead letter", || {
        topic_size(&brokers, OUTCOMES) >= 1 && topic_size(&brokers, DLQ) >= 1
    });
    stop.store(true, Ordering::Relaxed);
    job.join().unwrap().unwrap();
    assert_eq!(standin.counts().failed, 2);

    let events = outcome_events(&brokers);
    assert_eq!(events.len(), 1, "{events:?}");
    let reason = events[0].reason.clone().unwrap_or_default();
    assert_eq!(events[0].kind, "NotificationFailed");
    assert!(
        reason.contains("400 Bad Request") && reason.contains("App <redacted>"),
        "{reason}"
    );
    for m in read_topic(&brokers, OUTCOMES)
        .iter()
        .chain(&read_topic(&brokers, DLQ))
    {
        assert!(!holds(&m.payload, KEY), "{m:?}");
        assert!(!holds(m.key.as_deref().unwrap_or_default(), KEY), "{m:?}");
        for (name, value) in &m.headers {
            assert!(!holds(value, KEY), "header {name} of {m:?}");
        }
    }
    let letters = read_topic(&brokers, DLQ);
    assert!(
        letters[0]
            .header("eddy.error")
            .unwrap()
            .contains("App <redacted>")
    );
    // The sent-record keeps the failure's reason, redacted.
    let stored = std::fs::read(&sent_record).unwrap();
    assert!(holds(&stored, "App <redacted>"));
    assert!(!holds(&stored, KEY));
    let logs = logs.lock().unwrap();
    assert!(
        holds(&logs, "retrying"),
        "{}",
        String::from_utf8_lossy(&logs)
    );
    assert!(holds(&logs, "App <redacted>"));
    assert!(!holds(&logs, KEY), "{}", String::from_utf8_lossy(&logs));
}

#[test]
fn a_restart_mid_stream_sends_nothing_twice() {
    let (_mock, brokers) = mock_cluster("notify3", &[(REQUESTS, 2), (OUTCOMES, 1), (DLQ, 1)]);
    // The stand-in sends a repeated message id again: only the adapter prevents doubles here.
    let standin = CpaasStandIn::start(StandInOptions {
        dedupe: false,
        ..StandInOptions::new(KEY)
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = job_text(
        &standin.base_url(),
        &dir.path().join("sent.redb"),
        "sms = { batch = 10, concurrency = 2, rate = 2000 }",
    );
    const N: usize = 3_000;
    produce_requests(&brokers, 0..N, &[]);
    let (stop, stats) = (Arc::new(AtomicBool::new(false)), Arc::new(Stats::default()));
    let job = start_job(&text, &brokers, 1, &stop, &stats);
    wait_for("a third of the messages", || {
        standin.counts().sent >= N as u64 / 3
    });
    stop.store(true, Ordering::Relaxed);
    job.join().unwrap().unwrap();
    let first = standin.counts().sent;
    assert!(first < N as u64, "the first run sent everything");

    let (stop, stats) = (Arc::new(AtomicBool::new(false)), Arc::new(Stats::default()));
    let job = start_job(&text, &brokers, 1, &stop, &stats);
    let ids: HashSet<String> = (0..N).map(|i| format!("r{i}")).collect();
    wait_for("as many outcomes as requests", || {
        topic_size(&brokers, OUTCOMES) >= N as i64
    });
    wait_for("an outcome for every request", || {
        let seen: HashSet<String> = read_topic(&brokers, OUTCOMES)
            .iter()
            .map(|m| String::from_utf8(m.key.clone().unwrap()).unwrap())
            .collect();
        seen == ids
    });
    stop.store(true, Ordering::Relaxed);
    job.join().unwrap().unwrap();

    let counts = standin.counts();
    assert_eq!(
        (counts.sent, counts.duplicates),
        (N as u64, 0),
        "{counts:?}"
    );
    assert_each_sent_once(&outcome_events(&brokers), &ids);
}

#[test]
fn a_slow_cpaas_slows_the_source_instead_of_dropping_or_buffering() {
    let (_mock, brokers) = mock_cluster("notify4", &[(REQUESTS, 1), (OUTCOMES, 1), (DLQ, 1)]);
    let standin = CpaasStandIn::start(StandInOptions::new(KEY)).unwrap();
    standin.set_faults(Faults {
        slow: 1.0,
        slow_by: Duration::from_millis(200),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let (queue, concurrency, batch) = (16, 2, 10);
    let text = job_text(
        &standin.base_url(),
        &dir.path().join("sent.redb"),
        &format!("queue = {queue}\nsms = {{ batch = {batch}, concurrency = {concurrency} }}"),
    );
    // More than one read batch of the source, and small enough for the in-process cluster to
    // keep every outcome.
    const N: u64 = 16_000;
    produce_requests(&brokers, 0..N as usize, &[]);
    let (stop, stats) = (Arc::new(AtomicBool::new(false)), Arc::new(Stats::default()));
    let job = start_job(&text, &brokers, 1, &stop, &stats);
    // Read but undecided: at most one read batch of the Kafka source (8192), the queue and the
    // calls in flight.
    let bound = 8192 + queue + concurrency * batch;
    let mut max_undecided = 0;
    let undecided = |stats: &Stats| {
        let decided =
            stats.get(Counter::NotificationsSent) + stats.get(Counter::NotificationsFailed);
        stats.get(Counter::EventsIn) - decided
    };
    wait_for("twenty slow calls", || {
        max_undecided = max_undecided.max(undecided(&stats));
        standin.counts().calls >= 20
    });
    let read_while_slow = stats.get(Counter::EventsIn);
    assert!(
        read_while_slow <= bound as u64 + standin.counts().sent,
        "the source read {read_while_slow} requests while the CPaaS took {} calls",
        standin.counts().calls
    );
    standin.set_faults(Faults::default());
    wait_for("every outcome", || {
        max_undecided = max_undecided.max(undecided(&stats));
        topic_size(&brokers, OUTCOMES) >= N as i64
    });
    stop.store(true, Ordering::Relaxed);
    job.join().unwrap().unwrap();
    assert!(
        max_undecided <= bound as u64,
        "{max_undecided} requests were held at once (bound {bound})"
    );
    let ids: HashSet<String> = (0..N).map(|i| format!("r{i}")).collect();
    assert_each_sent_once(&outcome_events(&brokers), &ids);
    assert_eq!(standin.counts().sent, N);
}

#[test]
fn bad_notify_settings_are_reported_with_line_and_field() {
    let text = r#"[job]
name = "bad-notify"

[[sources]]
name = "requests"
kind = "kafka"
brokers = "b:9092"
topics = ["requests"]
group = "g"
event_time = "ts"
schema = { request_id = "string", channel = "string", to = "int", ts = "timestamp" }

[[sinks]]
name = "cpaas"
kind = "notify"
source = "requests"
base_url = "ftp://cpaas"
api_key = "${EDDY_CPAAS_KEY}"
outcomes = "nowhere"
email = { batch = 5 }
sms = { rate = 0 }

[[sinks]]
name = "cpaas2"
kind = "notify"
source = "requests"
base_url = "http://127.0.0.1:9"
api_key = "k"
outcomes = "nowhere"
sent_record = "sent.redb"

[[sinks]]
name = "cpaas3"
kind = "notify"
source = "requests"
base_url = "http://127.0.0.1:9"
api_key = "k"
outcomes = "nowhere"
sent_record = "sent.redb"
"#;
    let errors = Job::parse_with(Path::new("n.toml"), text, &|_| None)
        .unwrap_err()
        .to_string();
    for expected in [
        "n.toml:15: sinks[0].sent_record: a notify sink needs `sent_record`",
        "n.toml:16: sinks[0].source: the source schema has no `text`",
        "n.toml:17: sinks[0].base_url: `ftp` is not an http or https URL",
        "n.toml:18: sinks[0].api_key: environment variable `EDDY_CPAAS_KEY` is not set",
        "n.toml:19: sinks[0].outcomes: no sink named `nowhere`",
        "n.toml:20: sinks[0].email.batch: the e-mail API takes one message per call",
        "n.toml:21: sinks[0].sms.rate: must be an integer from 1 to 1000000",
        "n.toml:39: sinks[2].sent_record: `sent.redb` is the file sinks[1].sent_record writes: \
         give each sink its own file",
    ] {
        assert!(
            errors.contains(expected),
            "missing {expected:?} in:\n{errors}"
        );
    }
    let with_key = Job::parse_with(Path::new("n.toml"), text, &|_| Some("s3cr3t".into()))
        .unwrap_err()
        .to_string();
    assert!(!with_key.contains("s3cr3t"), "{with_key}");
}

/// The orchestrator's notification requests (welcome messages for registered users), read back
/// from its topic by a notify sink of the same job: each is sent on the user's channel, and a
/// user without a phone number gets a NotificationFailed with the reason.
#[test]
fn the_orchestrators_requests_are_delivered() {
    let (_cluster, brokers) = mock_cluster(
        "notify-orchestrated",
        &[("events", 1), ("requests", 1), (OUTCOMES, 1), (DLQ, 1)],
    );
    let standin = CpaasStandIn::start(StandInOptions {
        record_calls: true,
        ..StandInOptions::new(KEY)
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let events = [
        r#"{"event_id":"e1","event":"UserRegistered","user_id":1,"time":1700000000000,"name":"Ada","phone":"+41790000001","email":"ada@example.com","channel":"sms"}"#,
        r#"{"event_id":"e2","event":"UserRegistered","user_id":2,"time":1700000000001,"name":"Bob","phone":"+41790000002","email":"bob@example.com","channel":"email"}"#,
        r#"{"event_id":"e3","event":"UserRegistered","user_id":3,"time":1700000000002,"name":"Cy","email":"cy@example.com","channel":"sms"}"#,
        // Moves event time on, so that the registrations are complete; causes nothing.
        r#"{"event_id":"e4","event":"PreferencesUpdated","user_id":1,"time":1700000060000,"channel":"sms"}"#,
    ];
    for event in events {
        producer
            .send(BaseRecord::<(), _>::to("events").payload(event))
            .unwrap();
    }
    producer.flush(PATIENCE).unwrap();
    let text = format!(
        r#"
[job]
name = "orchestrated"
commit_interval = "50ms"
dead_letter = "dlq"

[[sources]]
name = "events"
kind = "kafka"
brokers = "${{BROKERS}}"
topics = ["events"]
group = "orchestrated-events"
event_time = "time"
idle_timeout = "200ms"
schema = {{ event_id = "string", event = "string", user_id = "int", time = "timestamp", name = "string?", phone = "string?", email = "string?", channel = "string?" }}

[[orchestrators]]
name = "welcome"
events = "events"
sinks = ["requests"]

[orchestrators.reactions.UserRegistered]
subject = "Welcome"
text = "Welcome, {{name}}!"

[[sources]]
name = "requests"
kind = "kafka"
brokers = "${{BROKERS}}"
topics = ["requests"]
group = "orchestrated-requests"
event_time = "time"
schema = {{ request_id = "string", channel = "string?", to = "string?", subject = "string?", text = "string", time = "timestamp", user_id = "int?" }}

[[sinks]]
name = "requests"
kind = "kafka"
brokers = "${{BROKERS}}"
topic = "requests"
key = "user_id"

[[sinks]]
name = "cpaas"
kind = "notify"
source = "requests"
base_url = "{base_url}"
api_key = "${{EDDY_CPAAS_KEY}}"
outcomes = "outcomes"
sent_record = "{sent_record}"

[[sinks]]
name = "outcomes"
kind = "kafka"
brokers = "${{BROKERS}}"
topic = "{OUTCOMES}"

[[sinks]]
name = "dlq"
kind = "kafka"
brokers = "${{BROKERS}}"
topic = "{DLQ}"
"#,
        base_url = standin.base_url(),
        sent_record = dir.path().join("sent.redb").display(),
    );
    let (stop, stats) = (Arc::new(AtomicBool::new(false)), Arc::new(Stats::default()));
    let job = start_job(&text, &brokers, 1, &stop, &stats);
    wait_for("three outcomes", || topic_size(&brokers, OUTCOMES) >= 3);
    stop.store(true, Ordering::Relaxed);
    job.join().unwrap().unwrap();

    let mut events = outcome_events(&brokers);
    events.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    let summary: Vec<_> = events
        .iter()
        .map(|e| (&*e.request_id, &*e.kind, e.reason.as_deref()))
        .collect();
    assert_eq!(
        summary,
        [
            ("e1:sms", "NotificationSent", None),
            ("e2:email", "NotificationSent", None),
            (
                "e3:sms",
                "NotificationFailed",
                Some("request `e3:sms`: `to` is empty")
            ),
        ]
    );
    // Each outcome names the user and event time of the request (the rejected one too), so a
    // view can count a user's notifications.
    let users: Vec<_> = events
        .iter()
        .map(|e| (&*e.request_id, e.user_id.as_deref(), e.time))
        .collect();
    assert_eq!(
        users,
        [
            ("e1:sms", Some("1"), Some(1_700_000_000_000)),
            ("e2:email", Some("2"), Some(1_700_000_000_001)),
            ("e3:sms", Some("3"), Some(1_700_000_000_002)),
        ]
    );
    let sent = standin.sent();
    assert_eq!(sent["e1:sms"].to, "+41790000001");
    assert_eq!(sent["e1:sms"].text, "Welcome, Ada!");
    let email = &sent["e2:email"];
    assert_eq!(
        (email.to.as_str(), email.subject.as_deref()),
        ("bob@example.com", Some("Welcome"))
    );
    assert_eq!(sent.len(), 2);
    assert_eq!(topic_size(&brokers, DLQ), 1);
}
