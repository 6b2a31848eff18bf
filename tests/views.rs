//! Views against plain Rust: a user view kept from two sources (user events and notification
//! outcomes, shuffled within the out-of-orderness bound) must hold, for every user, exactly the
//! row a reference computes from the same input, on 1 and 2 workers; its change batches come in
//! time order and, replayed from nothing, rebuild the final rows (every intermediate state is a
//! whole one). Its columns include `recent` lists, with and without a `when`. Bad `[[views]]`
//! sections name the file, line and field.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::kafka::run_views_to_end;
use eddy::job::Job;
use eddy::sinks::view::{Change, Row};
use eddy::sources::kafka::StartFrom;
use eddy::stats::Counter;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

const START_MS: i64 = 1_700_000_000_000;
const USERS: i64 = 150;
const CHANNELS: [&str; 2] = ["sms", "email"];

/// One input line: its JSON and its event time.
struct Line {
    json: Value,
    ts: i64,
}

/// User events (registrations, preference changes, purchases, heartbeats the view ignores)
/// and notification outcomes, each list in event-time order with distinct times.
fn inputs(n: usize, seed: u64) -> (Vec<Line>, Vec<Line>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut events, mut outcomes) = (Vec::new(), Vec::new());
    for i in 0..n as i64 {
        let ts = START_MS + i * 7;
        let user = rng.random_range(0..USERS);
        let channel = CHANNELS[rng.random_range(0..2)];
        let line = match rng.random_range(0..10) {
            0 => {
                json!({"kind": "UserRegistered", "user_id": user, "name": format!("user {user} v{i}"), "channel": channel, "ts": ts})
            }
            1 => {
                json!({"kind": "PreferencesUpdated", "user_id": user, "channel": channel, "ts": ts})
            }
            2 => json!({"kind": "Heartbeat", "user_id": user, "ts": ts}),
            3..=5 => {
                let kind = if rng.random_range(0..4) == 0 {
                    "NotificationFailed"
                } else {
                    "NotificationSent"
                };
                outcomes.push(Line {
                    json: json!({"kind": kind, "user_id": user, "channel": channel, "ts": ts}),
                    ts,
                });
                continue;
            }
            _ => {
                json!({"kind": "PurchaseInitiated", "user_id": user, "amount_cents": rng.random_range(100..50_000), "ts": ts})
            }
        };
        events.push(Line { json: line, ts });
    }
    (events, outcomes)
}

/// The lines as a JSON-lines file, each moved by up to `disorder_ms` of event time from its
/// place (within the job's out-of-orderness, so none is late).
fn file_text(lines: &[Line], disorder_ms: i64, seed: u64) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut keyed: Vec<(i64, &Line)> = lines
        .iter()
        .map(|l| (l.ts + rng.random_range(0..=disorder_ms), l))
        .collect();
    keyed.shuffle(&mut rng);
    keyed.sort_by_key(|(arrival, _)| *arrival);
    keyed.iter().map(|(_, l)| format!("{}\n", l.json)).collect()
}

/// What the view must hold: per user, the columns the job declares, computed in plain Rust.
fn reference(events: &[Line], outcomes: &[Line]) -> BTreeMap<String, Row> {
    let mut rows = BTreeMap::<String, Row>::new();
    let mut add = |user: &Value, column: &str, by: i64| {
        let row = rows.entry(user.to_string()).or_default();
        let total = row.get(column).and_then(Value::as_i64).unwrap_or(0) + by;
        row.insert(column.into(), total.into());
    };
    for line in events.iter().filter(|l| l.json["kind"] != "Heartbeat") {
        let j = &line.json;
        add(&j["user_id"], "events", 1);
        if j["kind"] == "PurchaseInitiated" {
            add(&j["user_id"], "purchases", 1);
            add(
                &j["user_id"],
                "spent_cents",
                j["amount_cents"].as_i64().unwrap(),
            );
        }
    }
    for line in outcomes {
        let j = &line.json;
        if j["kind"] == "NotificationFailed" {
            add(&j["user_id"], "failed", 1);
        } else if j["channel"] == "sms" {
            add(&j["user_id"], "sms_sent", 1);
        }
    }
    // Lines are in event-time order: the last non-null value of a field is the latest, and
    // a list of recent values gains it in front.
    let push_recent = |row: &mut Row, column: &str, value: &Value, n: usize| {
        let list = row.entry(column).or_insert_with(|| json!([]));
        let list = list.as_array_mut().unwrap();
        list.insert(0, value.clone());
        list.truncate(n);
    };
    for line in events.iter().filter(|l| l.json["kind"] != "Heartbeat") {
        let row = rows.entry(line.json["user_id"].to_string()).or_default();
        for field in ["name", "channel"] {
            if let Some(v) = line.json.get(field) {
                row.insert(field.into(), v.clone());
            }
        }
        row.insert("last_seen".into(), line.ts.into());
        if let Some(amount) = line.json.get("amount_cents") {
            push_recent(row, "recent_amounts", amount, 3);
        }
        if line.json["kind"] != "PurchaseInitiated" {
            push_recent(row, "recent_kinds", &line.json["kind"], 2);
        }
    }
    rows
}

fn view_job(events: &Path, outcomes: &Path) -> String {
    format!(
        r#"
[job]
name = "views-test"
tick = "10ms"

[[sources]]
name = "events"
kind = "file"
paths = ["{events}"]
splits = 2
event_time = "ts"
out_of_orderness = "3s"
schema = {{ kind = "string", user_id = "int", name = "string?", channel = "string?", amount_cents = "int?", ts = "timestamp" }}

[[sources]]
name = "outcomes"
kind = "file"
paths = ["{outcomes}"]
event_time = "ts"
out_of_orderness = "3s"
schema = {{ kind = "string", user_id = "int", channel = "string", ts = "timestamp" }}

[[views]]
name = "users"
source = "events"
key = "user_id"
when = 'kind != "Heartbeat"'
tick = "200ms"
columns = {{ name = "last(name)", channel = "last(channel)", last_seen = "last(ts)", events = "count", purchases = {{ value = "count", when = 'kind == "PurchaseInitiated"' }}, spent_cents = {{ value = "sum(amount_cents)", when = 'kind == "PurchaseInitiated"' }}, recent_amounts = "recent(amount_cents, 3)", recent_kinds = {{ value = "recent(kind, 2)", when = 'kind != "PurchaseInitiated"' }} }}

[[views]]
name = "users"
source = "outcomes"
key = "user_id"
columns = {{ sms_sent = {{ value = "count", when = 'kind == "NotificationSent" && channel == "sms"' }}, failed = {{ value = "count", when = 'kind == "NotificationFailed"' }} }}
"#,
        events = events.display(),
        outcomes = outcomes.display(),
    )
}

#[test]
fn user_view_equals_the_reference_on_one_and_two_workers_and_its_changes_rebuild_it() {
    let (events, outcomes) = inputs(12_000, 7);
    let expected = reference(&events, &outcomes);
    let dir = tempfile::tempdir().unwrap();
    let (events_path, outcomes_path) = (
        dir.path().join("events.jsonl"),
        dir.path().join("outcomes.jsonl"),
    );
    std::fs::write(&events_path, file_text(&events, 2_000, 1)).unwrap();
    std::fs::write(&outcomes_path, file_text(&outcomes, 2_000, 2)).unwrap();
    let text = view_job(&events_path, &outcomes_path);
    for workers in [1, 2] {
        let job = Job::parse(Path::new("views.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
        let views = job.view_stores();
        let users = views.get("users").expect("the users view").clone();
        let mut changes = users.subscribe();
        run_views_to_end(job, workers, StartFrom::Earliest, views);

        let page = users.page("", None, 10_000);
        let got: BTreeMap<String, Row> = page.rows.into_iter().map(|r| (r.key, r.row)).collect();
        assert_eq!(
            got.len(),
            expected.len(),
            "{workers} worker(s): users in the view"
        );
        for (key, row) in &expected {
            assert_eq!(
                got.get(key),
                Some(row),
                "{workers} worker(s): row of user {key}"
            );
        }
        assert_eq!(
            users.get("0").0.as_ref(),
            expected.get("0"),
            "lookup by key"
        );

        // Replaying the change batches, in the order they came, rebuilds the rows.
        let mut replayed = BTreeMap::<String, Row>::new();
        let mut last_time = None;
        let mut batches = 0;
        while let Ok(batch) = changes.try_recv() {
            assert!(last_time < Some(batch.time), "change batches in time order");
            last_time = Some(batch.time);
            batches += 1;
            for change in &batch.changes {
                match change {
                    Change::Upsert { key, row } => replayed.insert(key.clone(), row.clone()),
                    Change::Delete { key } => replayed.remove(key),
                };
            }
        }
        assert!(
            batches > 10,
            "the view changed a tick at a time ({batches} batches)"
        );
        assert_eq!(replayed, got, "{workers} worker(s): changes replayed");
    }
}

#[test]
fn bad_view_sections_name_the_file_line_and_field() {
    let job = |columns: &str| {
        format!(
            r#"
[job]
name = "bad-views"

[[sources]]
name = "events"
kind = "file"
paths = ["events.jsonl"]
event_time = "ts"
schema = {{ kind = "string", user_id = "int", name = "string?", ts = "timestamp" }}

[[views]]
name = "users"
source = "events"
key = "user_id"
columns = {{ {columns} }}
"#
        )
    };
    for (columns, field, says) in [
        (
            r#"n = "sum(name)""#,
            "views[0].columns.n",
            "not an integer field",
        ),
        (
            r#"n = "last(nope)""#,
            "views[0].columns.n",
            "`nope` is not a field",
        ),
        (
            r#"n = "median(ts)""#,
            "views[0].columns.n",
            "expected count, sum(field), last(field) or recent(field, n)",
        ),
        (
            r#"n = "recent(nope, 5)""#,
            "views[0].columns.n",
            "`nope` is not a field",
        ),
        (
            r#"n = "recent(name, 0)""#,
            "views[0].columns.n",
            "n must be an integer from 1 to 1000",
        ),
        (
            r#"n = "recent(name, lots)""#,
            "views[0].columns.n",
            "n must be an integer from 1 to 1000",
        ),
        (
            r#"n = "recent(name)""#,
            "views[0].columns.n",
            "expected recent(field, n)",
        ),
        (
            r#"n = { value = "count", when = "kind ==" }"#,
            "views[0].columns.n.when",
            "",
        ),
    ] {
        let errors = Job::parse(Path::new("bad.toml"), &job(columns))
            .expect_err("an invalid view")
            .to_string();
        assert!(errors.contains("bad.toml:"), "names the file: {errors}");
        assert!(errors.contains(field), "names `{field}`: {errors}");
        assert!(errors.contains(says), "says `{says}`: {errors}");
    }
}

/// The user view of a job killed with SIGKILL after a checkpoint (on one worker, then two), then
/// restored and run to its end: the counts, sums, last values and recent lists come back with the
/// checkpoint, and the rows equal the reference, as if the job had never stopped.
#[test]
fn a_restored_user_view_equals_the_reference() {
    let (events, outcomes) = inputs(60_000, 11);
    let expected = reference(&events, &outcomes);
    let dir = tempfile::tempdir().unwrap();
    let (events_path, outcomes_path) = (
        dir.path().join("events.jsonl"),
        dir.path().join("outcomes.jsonl"),
    );
    std::fs::write(&events_path, file_text(&events, 2_000, 3)).unwrap();
    std::fs::write(&outcomes_path, file_text(&outcomes, 2_000, 4)).unwrap();
    let path = dir.path().join("views.toml");
    let job = view_job(&events_path, &outcomes_path);
    common::killed_twice_after_checkpoints(&job, &dir.path().join("store"), &path);
    let job = Job::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let views = job.view_stores();
    let users = views.get("users").expect("the users view").clone();
    let stats = run_views_to_end(job, 2, StartFrom::Checkpoint, views);
    let read = stats.get(Counter::EventsIn);
    assert!(
        read < (events.len() + outcomes.len()) as u64,
        "the restored run reads only what follows the checkpoint ({read} events)"
    );
    let page = users.page("", None, 10_000);
    let got: BTreeMap<String, Row> = page.rows.into_iter().map(|r| (r.key, r.row)).collect();
    assert_eq!(got.len(), expected.len(), "users in the view");
    for (key, row) in &expected {
        assert_eq!(got.get(key), Some(row), "row of user {key}");
    }
}
