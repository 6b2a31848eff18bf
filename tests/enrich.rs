//! Enrichment against plain Rust: purchases joined with a view of user profiles kept from
//! another source (both shuffled within the out-of-orderness bound) must carry, for every
//! purchase, the profile as it stood at the purchase's event time (changes from view ticks that
//! ended by then), on 1 and 2 workers; an `inner` enrichment drops purchases of users without a
//! profile yet. Bad `[[enrich]]` sections name the file, line and field.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::kafka::run_views_to_end;
use eddy::job::Job;
use eddy::sources::kafka::StartFrom;
use eddy::stats::Counter;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

const START_MS: i64 = 1_700_000_000_000;
/// Users with profiles; purchases also come from as many users again that never have one.
const USERS: i64 = 40;
/// The view's tick: a profile change is seen from the end of its tick on.
const VIEW_TICK_MS: i64 = 50;

/// Profile changes and purchases, each list in event-time order with distinct times (about ten
/// lines per view tick, so purchases often fall in the tick of a change and must not see it).
fn inputs(n: usize, seed: u64) -> (Vec<Value>, Vec<Value>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut profiles, mut purchases) = (Vec::new(), Vec::new());
    for i in 0..n as i64 {
        let ts = START_MS + i * 5;
        if rng.random_range(0..100) < 15 {
            let user = rng.random_range(0..USERS);
            let name = (rng.random_range(0..10) < 7).then(|| format!("user {user} v{i}"));
            let phone = (rng.random_range(0..10) < 6).then(|| format!("+3859{i:07}"));
            profiles.push(json!({"user_id": user, "name": name, "phone": phone, "ts": ts}));
        } else {
            let user = rng.random_range(0..2 * USERS);
            let amount = rng.random_range(100..50_000);
            purchases.push(
                json!({"txn_id": format!("t{i}"), "user_id": user, "amount_cents": amount, "ts": ts}),
            );
        }
    }
    (profiles, purchases)
}

/// The lines as a JSON-lines file, each moved by up to 500 ms of event time from its place
/// (within the job's out-of-orderness, so none is late).
fn file_text(lines: &[Value], seed: u64) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut keyed: Vec<(i64, &Value)> = lines
        .iter()
        .map(|l| (l["ts"].as_i64().unwrap() + rng.random_range(0..=500), l))
        .collect();
    keyed.shuffle(&mut rng);
    keyed.sort_by_key(|(arrival, _)| *arrival);
    keyed.iter().map(|(_, l)| format!("{l}\n")).collect()
}

/// Per purchase id, the added columns it must carry, computed in plain Rust: the user's latest
/// non-null name and phone and the number of changes, over the changes whose view tick ended at
/// or before the purchase; `None` when the user has no profile by then.
fn reference(profiles: &[Value], purchases: &[Value]) -> BTreeMap<String, Option<Value>> {
    let seen_from = |ts: i64| ts - ts % VIEW_TICK_MS + VIEW_TICK_MS - 1;
    purchases
        .iter()
        .map(|p| {
            let (user, at) = (&p["user_id"], p["ts"].as_i64().unwrap());
            let mut row: Option<Value> = None;
            for change in profiles
                .iter()
                .filter(|c| c["user_id"] == *user && seen_from(c["ts"].as_i64().unwrap()) <= at)
            {
                let row = row.get_or_insert_with(
                    || json!({"holder": null, "holder_phone": null, "profile_changes": 0}),
                );
                for (field, column) in [("name", "holder"), ("phone", "holder_phone")] {
                    if !change[field].is_null() {
                        row[column] = change[field].clone();
                    }
                }
                row["profile_changes"] = json!(row["profile_changes"].as_i64().unwrap() + 1);
            }
            (p["txn_id"].as_str().unwrap().to_string(), row)
        })
        .collect()
}

fn enrich_job(profiles: &Path, purchases: &Path, left: &Path, inner: &Path) -> String {
    format!(
        r#"
[job]
name = "enrich-test"
tick = "10ms"

[[sources]]
name = "profiles"
kind = "file"
paths = ["{profiles}"]
splits = 2
event_time = "ts"
out_of_orderness = "3s"
schema = {{ user_id = "int", name = "string?", phone = "string?", ts = "timestamp" }}

[[sources]]
name = "purchases"
kind = "file"
paths = ["{purchases}"]
splits = 2
event_time = "ts"
out_of_orderness = "3s"
schema = {{ txn_id = "string", user_id = "int", amount_cents = "int", ts = "timestamp" }}

[[views]]
name = "users"
source = "profiles"
key = "user_id"
tick = "{VIEW_TICK_MS}ms"
columns = {{ name = "last(name)", phone = "last(phone)", changes = "count" }}

[[enrich]]
name = "purchases-with-holder"
source = "purchases"
view = "users"
key = "user_id"
columns = {{ holder = "name", holder_phone = "phone", profile_changes = "changes" }}
sinks = ["left"]

[[enrich]]
name = "purchases-of-known-users"
source = "purchases"
view = "users"
key = "user_id"
inner = true
columns = {{ holder = "name", holder_phone = "phone", profile_changes = "changes" }}
sinks = ["inner"]

[[sinks]]
name = "left"
kind = "file"
path = "{left}"

[[sinks]]
name = "inner"
kind = "file"
path = "{inner}"
"#,
        profiles = profiles.display(),
        purchases = purchases.display(),
        left = left.display(),
        inner = inner.display(),
    )
}

/// The rows of a JSON-lines file by `txn_id`; each purchase must be there at most once.
fn rows_by_txn(path: &Path) -> BTreeMap<String, Value> {
    let mut rows = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        let id = row["txn_id"].as_str().unwrap().to_string();
        assert!(rows.insert(id.clone(), row).is_none(), "{id} written twice");
    }
    rows
}

#[test]
fn purchases_carry_the_profile_as_of_their_time_on_one_and_two_workers() {
    let (profiles, purchases) = inputs(4_000, 11);
    let expected = reference(&profiles, &purchases);
    let missing = expected.values().filter(|r| r.is_none()).count();
    assert!(
        missing > 100 && missing < expected.len() - 100,
        "the input has purchases with and without a profile ({missing})"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("profiles.jsonl"), file_text(&profiles, 1)).unwrap();
    std::fs::write(path("purchases.jsonl"), file_text(&purchases, 2)).unwrap();
    for workers in [1, 2] {
        let (left, inner) = (
            path(&format!("left-{workers}.jsonl")),
            path(&format!("inner-{workers}.jsonl")),
        );
        let text = enrich_job(
            &path("profiles.jsonl"),
            &path("purchases.jsonl"),
            &left,
            &inner,
        );
        let job = Job::parse(Path::new("enrich.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
        let views = job.view_stores();
        run_views_to_end(job, workers, StartFrom::Earliest, views);

        let (left, inner) = (rows_by_txn(&left), rows_by_txn(&inner));
        assert_eq!(left.len(), expected.len(), "{workers} worker(s): purchases");
        let purchase_of: BTreeMap<&str, &Value> = purchases
            .iter()
            .map(|p| (p["txn_id"].as_str().unwrap(), p))
            .collect();
        for (id, profile) in &expected {
            let row = &left[id];
            let purchase = purchase_of[id.as_str()];
            for field in ["user_id", "amount_cents", "ts"] {
                assert_eq!(
                    row[field], purchase[field],
                    "{workers} worker(s): {id}.{field}"
                );
            }
            let added = json!({
                "holder": row["holder"],
                "holder_phone": row["holder_phone"],
                "profile_changes": row["profile_changes"],
            });
            let none = json!({"holder": null, "holder_phone": null, "profile_changes": null});
            assert_eq!(
                added,
                profile.clone().unwrap_or(none),
                "{workers} worker(s): the profile purchase {id} saw"
            );
            assert_eq!(
                inner.get(id),
                profile.as_ref().map(|_| row),
                "{workers} worker(s): purchase {id} in the inner enrichment"
            );
        }
    }
}

#[test]
fn bad_enrich_sections_name_the_file_line_and_field() {
    let job = |section: &str| {
        format!(
            r#"
[job]
name = "bad-enrich"

[[sources]]
name = "events"
kind = "file"
paths = ["events.jsonl"]
event_time = "ts"
schema = {{ user_id = "int", name = "string?", ts = "timestamp" }}

[[views]]
name = "users"
source = "events"
key = "user_id"
columns = {{ name = "last(name)", events = "count" }}

[[sinks]]
name = "out"
kind = "stdout"

[[enrich]]
name = "enriched"
source = "events"
{section}
"#
        )
    };
    // (the section's rest, the field named, what the message says, the (last) line it points
    // at)
    for (section, field, says, on) in [
        (
            "view = \"people\"\nkey = \"user_id\"\ncolumns = { who = \"name\" }\nsinks = [\"out\"]",
            "enrich[0].view",
            "no view named `people`",
            "view = ",
        ),
        (
            "view = \"users\"\nkey = \"user_id\"\ncolumns = { who = \"nick\" }\nsinks = [\"out\"]",
            "enrich[0].columns.who",
            "view `users` has no column `nick`: it has name, events",
            "columns = { who",
        ),
        (
            "view = \"users\"\nkey = \"uid\"\ncolumns = { who = \"name\" }\nsinks = [\"out\"]",
            "enrich[0].key",
            "`uid` is not a field of source `events`",
            "key = \"uid\"",
        ),
        (
            "view = \"users\"\nkey = \"user_id\"\ncolumns = { name = \"name\" }\nsinks = [\"out\"]",
            "enrich[0].columns.name",
            "`name` is already a field of source `events`",
            "columns = { name",
        ),
        (
            "view = \"users\"\nkey = \"user_id\"\ncolumns = { who = \"name\" }",
            "enrich[0].sinks",
            "the events go nowhere",
            "name = \"enriched\"",
        ),
        (
            "view = \"users\"\nkey = \"user_id\"\ncolumns = { who = \"name\" }\nsinks = [\"nowhere\"]",
            "enrich[0].sinks",
            "no sink named `nowhere`",
            "sinks = [\"nowhere\"]",
        ),
    ] {
        let text = job(section);
        let errors = Job::parse(Path::new("bad.toml"), &text)
            .expect_err("an invalid enrichment")
            .to_string();
        let lines: Vec<&str> = text.lines().collect();
        let line = 1 + lines
            .iter()
            .rposition(|l| l.starts_with(on))
            .expect("the line the error is on");
        let at = format!("bad.toml:{line}: {field}: ");
        assert!(errors.contains(&at), "names `{at}`: {errors}");
        assert!(errors.contains(says), "says `{says}`: {errors}");
    }
}

/// An enrichment job killed with SIGKILL after a checkpoint (on one worker, then two), then
/// restored and run to its end: the view comes back with its rows, the purchases read before the
/// checkpoint that had not looked it up yet come back with the checkpoint, and each purchase is
/// written once, with what an uninterrupted run gives it.
#[test]
fn a_restored_enrichment_writes_what_an_uninterrupted_run_writes() {
    let (profiles, purchases) = inputs(40_000, 5);
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("profiles.jsonl"), file_text(&profiles, 3)).unwrap();
    std::fs::write(path("purchases.jsonl"), file_text(&purchases, 4)).unwrap();
    let job_text = |run: &str| {
        enrich_job(
            &path("profiles.jsonl"),
            &path("purchases.jsonl"),
            &path(&format!("left-{run}.jsonl")),
            &path(&format!("inner-{run}.jsonl")),
        )
    };
    let plain = Job::parse(Path::new("enrich.toml"), &job_text("plain")).unwrap();
    let views = plain.view_stores();
    run_views_to_end(plain, 2, StartFrom::Earliest, views);

    let job_path = path("enrich.toml");
    common::killed_twice_after_checkpoints(&job_text("restored"), &path("store"), &job_path);
    let job = Job::load(&job_path).unwrap_or_else(|e| panic!("{e}"));
    let views = job.view_stores();
    let stats = run_views_to_end(job, 2, StartFrom::Checkpoint, views);
    let read = stats.get(Counter::EventsIn);
    assert!(
        read < (profiles.len() + purchases.len()) as u64,
        "the restored run reads only what follows the checkpoint ({read} events)"
    );
    for output in ["left", "inner"] {
        let expected = rows_by_txn(&path(&format!("{output}-plain.jsonl")));
        let restored = rows_by_txn(&path(&format!("{output}-restored.jsonl")));
        assert_eq!(restored.len(), expected.len(), "{output}: rows");
        for (id, row) in &expected {
            assert_eq!(restored.get(id), Some(row), "{output}: purchase {id}");
        }
    }
}
