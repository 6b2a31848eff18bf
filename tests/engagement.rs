//! The customer-engagement flow: the command processor gives every validation failure its reason,
//! takes each user's commands in event-time order, and ignores repeated command ids; end to end
//! through Kafka, a command becomes the event and then the notification request it causes.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicU64;

use common::kafka::{Cluster, Input, Payload, Tier, read_topic, run_job_to_end, run_to_end};
use eddy::job::Job;
use serde_json::{Value as Json, json};

const T0: u64 = 1_700_000_000_000;

const COMMAND_SCHEMA: &str = r#"schema = { command_id = "string", user_id = "int", type = "string", ts = "timestamp", name = "string?", phone = "string?", email = "string?", channel = "string?", amount_cents = "int?", item = "string?" }"#;

/// The command processor with the three standard command types, built in.
fn commands_job(source: &str, sinks: &str) -> String {
    format!(
        r#"[job]
name = "engagement-test"
tick = "10ms"
commit_interval = "50ms"
dead_letter = "dlq"

[[sources]]
name = "commands"
{source}
event_time = "ts"
out_of_orderness = "1s"
{COMMAND_SCHEMA}

[[commands]]
name = "commands"
source = "commands"
dedup_within = "1h"
sinks = ["events"]

{sinks}
"#
    )
}

fn register(id: &str, user: i64, ts: u64, phone: &str, email: &str, channel: &str) -> Json {
    json!({"command_id": id, "user_id": user, "type": "RegisterUser", "ts": ts,
           "name": format!("User {user}"), "phone": phone, "email": email, "channel": channel})
}

fn purchase(id: &str, user: i64, ts: u64, amount: i64) -> Json {
    json!({"command_id": id, "user_id": user, "type": "InitiatePurchase", "ts": ts,
           "amount_cents": amount, "item": "book"})
}

/// What a command must cause: (command id, event, reason).
type Expected = (&'static str, &'static str, Option<&'static str>);

/// An event row in brief: (event, reason, user, time).
type Caused = (String, Option<String>, i64, u64);

/// Commands in arrival order, and what each must cause.
fn commands() -> (Vec<Json>, Vec<Expected>) {
    let input = vec![
        // User 1's purchase arrives before its registration, which is earlier in event time
        // (within the bound): processed in event-time order, it is accepted.
        purchase("a2", 1, T0 + 100, 500),
        register("a1", 1, T0 + 50, "+4915112345678", "ann@example.com", "sms"),
        register(
            "a1",
            1,
            T0 + 200,
            "+4915112345678",
            "ann@example.com",
            "sms",
        ),
        json!({"command_id": "a3", "user_id": 1, "type": "UpdatePreferences", "ts": T0 + 300, "channel": "pigeon"}),
        register(
            "a4",
            1,
            T0 + 400,
            "+4915112345678",
            "ann@example.com",
            "sms",
        ),
        register("b1", 2, T0 + 100, "12345", "bob@example.com", "email"),
        register("b2", 2, T0 + 150, "+33612345678", "nope", "email"),
        json!({"command_id": "b3", "user_id": 2, "type": "RegisterUser", "ts": T0 + 200, "phone": "+33612345678", "email": "bob@example.com", "channel": "email"}),
        purchase("b4", 2, T0 + 250, 100),
        json!({"command_id": "b5", "user_id": 2, "type": "Teleport", "ts": T0 + 300}),
        register(
            "b6",
            2,
            T0 + 350,
            "+33612345678",
            "bob@example.com",
            "email",
        ),
        purchase("b7", 2, T0 + 400, -3),
        json!({"command_id": "b8", "user_id": 2, "type": "UpdatePreferences", "ts": T0 + 450, "channel": "sms"}),
        purchase("b9", 2, T0 + 500, 2500),
        // The same command id again, later: nothing.
        purchase("b9", 2, T0 + 600, 2500),
    ];
    let expected = vec![
        ("a1", "UserRegistered", None),
        ("a2", "PurchaseInitiated", None),
        (
            "a3",
            "CommandRejected",
            Some("`channel` must be one of sms, email, not `pigeon`"),
        ),
        ("a4", "CommandRejected", Some("user `1` already exists")),
        (
            "b1",
            "CommandRejected",
            Some("`phone` is not an E.164 phone number: `12345`"),
        ),
        (
            "b2",
            "CommandRejected",
            Some("`email` is not an e-mail address: `nope`"),
        ),
        (
            "b3",
            "CommandRejected",
            Some("missing required field `name`"),
        ),
        ("b4", "CommandRejected", Some("user `2` does not exist")),
        (
            "b5",
            "CommandRejected",
            Some("unknown command type `Teleport`"),
        ),
        ("b6", "UserRegistered", None),
        (
            "b7",
            "CommandRejected",
            Some("`amount_cents` must be positive, not `-3`"),
        ),
        ("b8", "PreferencesUpdated", None),
        ("b9", "PurchaseInitiated", None),
    ];
    (input, expected)
}

/// (command id) → (event, reason, user, time) from event rows.
fn by_command(rows: &[Json]) -> BTreeMap<String, Vec<Caused>> {
    let mut out = BTreeMap::<String, Vec<_>>::new();
    for row in rows {
        out.entry(row["command_id"].as_str().unwrap().to_string())
            .or_default()
            .push((
                row["event"].as_str().unwrap().to_string(),
                row["reason"].as_str().map(str::to_string),
                row["user_id"].as_i64().unwrap(),
                row["time"].as_u64().unwrap(),
            ));
    }
    out
}

fn assert_events(rows: &[Json], expected: &[Expected]) {
    let got = by_command(rows);
    assert_eq!(
        got.len(),
        expected.len(),
        "one event per distinct command: {got:#?}"
    );
    for (id, event, reason) in expected {
        let events = &got[*id];
        assert_eq!(events.len(), 1, "{id} caused {events:?}");
        assert_eq!(events[0].0, *event, "{id}: {events:?}");
        assert_eq!(events[0].1.as_deref(), *reason, "{id}");
    }
    for row in rows {
        assert_eq!(
            row["event_id"],
            format!(
                "{}:{}",
                row["command_id"].as_str().unwrap(),
                row["event"].as_str().unwrap()
            )
        );
    }
}

#[test]
fn commands_are_validated_in_order_per_user_and_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    let (input, expected) = commands();
    let mut lines: Vec<String> = input.iter().map(Json::to_string).collect();
    // Bad input is dead-lettered with its reason, and processing goes on.
    lines.insert(
        3,
        r#"{"command_id": "x1", "user_id": 1, "type": "Regis"#.into(),
    );
    lines.insert(
        5,
        json!({"user_id": 1, "type": "RegisterUser", "ts": T0 + 60}).to_string(),
    );
    std::fs::write(dir.path().join("commands.jsonl"), lines.join("\n") + "\n").unwrap();
    let text = commands_job(
        "kind = \"file\"\npaths = [\"commands.jsonl\"]",
        r#"[[sinks]]
name = "events"
kind = "file"
path = "events.jsonl"

[[sinks]]
name = "dlq"
kind = "file"
path = "dlq.jsonl""#,
    );
    let path = dir.path().join("job.toml");
    std::fs::write(&path, &text).unwrap();
    let job = Job::load(&path).unwrap_or_else(|e| panic!("{e}"));
    for workers in [1, 2] {
        run_job_to_end(job.clone(), workers);
        let rows: Vec<Json> = std::fs::read_to_string(dir.path().join("events.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_events(&rows, &expected);
        let registered = rows.iter().find(|r| r["command_id"] == "a1").unwrap();
        assert_eq!(registered["phone"], "+4915112345678");
        assert_eq!(registered["time"], T0 + 50);
        let dlq = std::fs::read_to_string(dir.path().join("dlq.jsonl")).unwrap();
        assert_eq!(dlq.lines().count(), 2, "{dlq}");
        assert!(dlq.contains("missing required field `command_id`"), "{dlq}");
    }
}

#[test]
fn a_bad_commands_section_names_file_line_and_field() {
    let text = format!(
        r#"[job]
name = "bad"

[[sources]]
name = "commands"
kind = "file"
paths = ["in.jsonl"]
event_time = "ts"
{COMMAND_SCHEMA}

[[commands]]
name = "c"
source = "commands"
fields = {{ user = "user" }}

[commands.types.Ship]
event = "Shipped"
user = "someone"
required = ["adress"]
formats = {{ phone = "phone-number", amount_cents = "email" }}

[[orchestrators]]
name = "o"
events = "commands"
reactions = {{ Shipped = {{ text = "Hi {{nmae}}" }}, alert = {{ text = "x" }} }}
"#
    );
    let errors = Job::parse(Path::new("bad.toml"), &text)
        .unwrap_err()
        .to_string();
    for expected in [
        "bad.toml:14: commands[0].fields.user: the source schema has no field `user`",
        "bad.toml:18: commands[0].types.Ship.user: `someone`: expected new, existing or any",
        "bad.toml:19: commands[0].types.Ship.required: the source schema has no field `adress`",
        "bad.toml:20: commands[0].types.Ship.formats.phone: unknown format `phone-number`",
        "bad.toml:20: commands[0].types.Ship.formats.amount_cents: `email` needs a string field",
        "bad.toml:24: orchestrators[0]: source `commands` has no field `event_id`",
        "bad.toml:25: orchestrators[0].reactions.Shipped.text: `{nmae}` is neither a field",
        "bad.toml:25: orchestrators[0].reactions.alert: a reaction to `alert` needs the orchestrator's `alerts` source",
    ] {
        assert!(
            errors.contains(expected),
            "missing {expected:?} in:\n{errors}"
        );
    }
}

/// Commands in, events out, and the orchestrator's notification requests: a registration gets a
/// welcome on the user's preferred channel, a purchase a confirmation, a fraud alert an SMS.
#[test]
fn a_command_becomes_its_event_and_notification_through_kafka() {
    let topics = [
        ("commands", 1),
        ("events", 2),
        ("alerts", 1),
        ("notifications", 2),
        ("dlq", 1),
    ];
    let cluster = Cluster::start(Tier::Mock, "engagement", &topics)
        .expect("the mock cluster is never skipped");
    let brokers = cluster.brokers();
    let raw = |key: &Json, payload: &Json| Input {
        key: Some(key.to_string()),
        partition: Some(0),
        timestamp: None,
        payload: Payload::Raw(payload.to_string()),
    };
    let (input, expected) = commands();
    let messages: Vec<Input> = input.iter().map(|c| raw(&c["user_id"], c)).collect();
    cluster.produce("commands", &messages, None, &AtomicU64::new(0));
    let kafka = |topic: &str, group: &str| {
        format!(
            "kind = \"kafka\"\nbrokers = \"${{BROKERS}}\"\ntopics = [\"{topic}\"]\ngroup = \"{group}\""
        )
    };
    let sink = |name: &str, topic: &str| {
        format!(
            "[[sinks]]\nname = \"{name}\"\nkind = \"kafka\"\nbrokers = \"${{BROKERS}}\"\ntopic = \"{topic}\"\nkey = \"user_id\"\n"
        )
    };
    let first = commands_job(
        &kafka("commands", "engagement-commands"),
        &(sink("events", "events") + &sink("dlq", "dlq").replace("key = \"user_id\"\n", "")),
    );
    run_to_end(&first, brokers, 2);
    let events: Vec<Json> = read_topic(brokers, "events")
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect();
    assert_events(&events, &expected);

    // A fraud alert on user 2's card.
    let alert = json!({"alert_id": "fraud:velocity:2:1700000001000", "rule": "velocity",
                       "account_id": 2, "time": T0 + 1000, "evidence": "t1,t2", "detail": "5 payments"});
    cluster.produce(
        "alerts",
        &[raw(&json!(2), &alert)],
        None,
        &AtomicU64::new(0),
    );
    let second = format!(
        r#"[job]
name = "orchestrator-test"
tick = "10ms"
commit_interval = "50ms"

[[sources]]
name = "events"
{events}
event_time = "time"
out_of_orderness = "1s"
schema = {{ event_id = "string", event = "string", user_id = "int", time = "timestamp", name = "string?", phone = "string?", email = "string?", channel = "string?", amount_cents = "int?", item = "string?" }}

[[sources]]
name = "alerts"
{alerts}
event_time = "time"
out_of_orderness = "1s"
schema = {{ alert_id = "string", rule = "string", account_id = "int", time = "timestamp" }}

[[orchestrators]]
name = "notify"
events = "events"
alerts = "alerts"
sinks = ["notifications"]

[orchestrators.reactions.UserRegistered]
subject = "Welcome"
text = "Welcome, {{name}}!"

[orchestrators.reactions.PurchaseInitiated]
subject = "Your purchase"
text = "{{name}}: {{item}} for {{amount_cents}} cents is confirmed."

[orchestrators.reactions.alert]
channel = "sms"
text = "Suspicious activity ({{rule}}) on your card."

{sink}
"#,
        events = kafka("events", "engagement-events"),
        alerts = kafka("alerts", "engagement-alerts"),
        sink = sink("notifications", "notifications"),
    );
    run_to_end(&second, brokers, 2);
    let mut requests: Vec<Json> = read_topic(brokers, "notifications")
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect();
    requests.sort_by_key(|r| r["request_id"].as_str().unwrap().to_string());
    let summary: Vec<(&str, &str, &str, &str)> = requests
        .iter()
        .map(|r| {
            (
                r["request_id"].as_str().unwrap(),
                r["channel"].as_str().unwrap(),
                r["to"].as_str().unwrap(),
                r["text"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                "a1:UserRegistered:sms",
                "sms",
                "+4915112345678",
                "Welcome, User 1!"
            ),
            (
                "a2:PurchaseInitiated:sms",
                "sms",
                "+4915112345678",
                "User 1: book for 500 cents is confirmed."
            ),
            (
                "b6:UserRegistered:email",
                "email",
                "bob@example.com",
                "Welcome, User 2!"
            ),
            // User 2 switched to SMS before this purchase.
            (
                "b9:PurchaseInitiated:sms",
                "sms",
                "+33612345678",
                "User 2: book for 2500 cents is confirmed."
            ),
            (
                "fraud:velocity:2:1700000001000:sms",
                "sms",
                "+33612345678",
                "Suspicious activity (velocity) on your card."
            ),
        ]
    );
    for r in &requests {
        assert_eq!(r["event"], "NotificationRequested");
    }
}

/// A command processor reading Kafka writes its events to a file as it makes them: a reader of
/// the file sees them while the job runs, long before it stops.
#[test]
fn a_running_command_processor_writes_its_events_file_as_it_goes() {
    let cluster = Cluster::start(Tier::Mock, "engagement-file", &[("commands", 1)])
        .expect("the mock cluster is never skipped");
    let (mut input, expected) = commands();
    // A later command moves the watermark past every other one (and is itself held back).
    input.push(purchase("z1", 99, T0 + 5_000, 100));
    let messages: Vec<Input> = input
        .iter()
        .map(|c| Input {
            key: Some(c["user_id"].to_string()),
            partition: Some(0),
            timestamp: None,
            payload: Payload::Raw(c.to_string()),
        })
        .collect();
    cluster.produce("commands", &messages, None, &AtomicU64::new(0));
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let job = dir.path().join("job.toml");
    let source =
        "kind = \"kafka\"\nbrokers = \"${BROKERS}\"\ntopics = [\"commands\"]\ngroup = \"file\"";
    let sinks = format!(
        "[[sinks]]\nname = \"events\"\nkind = \"file\"\npath = \"{}\"\n\n[[sinks]]\nname = \"dlq\"\nkind = \"stdout\"\n",
        events.display()
    );
    std::fs::write(&job, commands_job(source, &sinks)).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["run", job.to_str().unwrap(), "--from", "earliest"])
        .env("BROKERS", cluster.brokers())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let rows = loop {
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        let rows: Vec<Json> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        if rows.len() >= expected.len() {
            break rows;
        }
        let running = child.try_wait().unwrap().is_none();
        if !running || std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "{} of {} events in the file while the job ran",
                rows.len(),
                expected.len()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(
        child.try_wait().unwrap().is_none(),
        "the job is still running"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert_events(&rows, &expected);
}
