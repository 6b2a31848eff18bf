//! Routing against plain Rust: every event must land on exactly the routes whose predicates hold
//! for it (fan-out included), the `otherwise` route must take exactly the events no predicate
//! holds for, and a route without `when` every event. Checked engine-only (the generator, file
//! sinks) on 1 and 2 workers, and end to end through Kafka with a topic per country and
//! undecodable input dead-lettered beside the routes. `eddy check` errors name the file, line and
//! column of a bad predicate.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::kafka::{
    Cluster, START_MS, Tier, Transaction, generate, generate_partitions, generator, produce_input,
    read_topic, run_to_end,
};
use eddy::job::Job;
use eddy::sources::generator::COUNTRIES;

/// The content routes under test: name, predicate as the job file states it, and the same
/// predicate in plain Rust.
type Rule = (&'static str, &'static str, fn(&Transaction) -> bool);

const RULES: [Rule; 3] = [
    (
        "big_foreign",
        r#"amount_cents > 20000 && country != "US""#,
        |t| t.amount_cents > 20_000 && t.country != "US",
    ),
    (
        "eu_core",
        r#"country in ["DE", "FR", "IT", "ES", "NL"] && !(amount_cents < 1000)"#,
        |t| ["DE", "FR", "IT", "ES", "NL"].contains(&t.country.as_str()) && t.amount_cents >= 1000,
    ),
    (
        "odd_merchant",
        r#"merchant.endsWith("7") || (account_id % 50 == 3 && amount_cents * 2 >= 6000.5)"#,
        |t| {
            t.merchant.ends_with('7')
                || (t.account_id % 50 == 3 && (t.amount_cents * 2) as f64 >= 6000.5)
        },
    ),
];

/// The routing job: `source` (named `payments`), the content routes of [`RULES`], an `otherwise`
/// route `default` and a route `all` without `when`, each to the sink of its name that `sink`
/// declares; with `dead_letter`, undecodable input goes to sink `dlq`.
fn routing_job(source: &str, sink: impl Fn(&str) -> String, dead_letter: bool) -> String {
    let mut text = format!(
        r#"
[job]
name = "routing-test"
tick = "10ms"
commit_interval = "50ms"
{}

[[sources]]
name = "payments"
{source}
event_time = "ts"
out_of_orderness = "2s"
schema = {{ txn_id = "string", account_id = "int", amount_cents = "int", merchant = "string", country = "string", ts = "timestamp" }}
"#,
        if dead_letter {
            r#"dead_letter = "dlq""#
        } else {
            ""
        }
    );
    for (name, when, _) in RULES {
        text += &format!(
            "\n[[routes]]\nname = \"{name}\"\nsource = \"payments\"\nwhen = '{when}'\nsinks = [\"{name}\"]\n"
        );
    }
    text += "\n[[routes]]\nname = \"default\"\nsource = \"payments\"\notherwise = true\nsinks = [\"default\"]\n";
    text += "\n[[routes]]\nname = \"all\"\nsource = \"payments\"\nsinks = [\"all\"]\n";
    let mut sinks: Vec<&str> = RULES.iter().map(|r| r.0).collect();
    sinks.extend(["default", "all"]);
    if dead_letter {
        sinks.push("dlq");
    }
    for name in sinks {
        text += &format!("\n[[sinks]]\nname = \"{name}\"\n{}\n", sink(name));
    }
    text
}

/// Route name → the txn ids that route must take, computed from `txns` in plain Rust.
fn expected_routes(txns: &[Transaction]) -> BTreeMap<&'static str, BTreeSet<String>> {
    let mut routes: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for t in txns {
        let mut matched = false;
        for (name, _, holds) in RULES {
            if holds(t) {
                routes.entry(name).or_default().insert(t.txn_id.clone());
                matched = true;
            }
        }
        if !matched {
            routes
                .entry("default")
                .or_default()
                .insert(t.txn_id.clone());
        }
        routes.entry("all").or_default().insert(t.txn_id.clone());
    }
    // The test means something only if every route takes events and some take the same ones.
    for name in RULES.iter().map(|r| r.0).chain(["default"]) {
        assert!(
            routes.get(name).is_some_and(|ids| ids.len() >= 20),
            "route `{name}` takes too few of the test's events: {:?}",
            routes.get(name).map(BTreeSet::len)
        );
    }
    let fanned_out = txns
        .iter()
        .filter(|t| RULES.iter().filter(|r| (r.2)(t)).count() >= 2)
        .count();
    assert!(
        fanned_out >= 20,
        "too few events match two routes: {fanned_out}"
    );
    routes
}

/// Checks that the rows a route wrote are the expected events, each once, with every field intact.
fn assert_route(
    what: &str,
    rows: &[Transaction],
    expected: &BTreeSet<String>,
    by_id: &BTreeMap<&str, &Transaction>,
) {
    let got: BTreeSet<String> = rows.iter().map(|t| t.txn_id.clone()).collect();
    assert_eq!(got.len(), rows.len(), "{what}: an event was written twice");
    let missing: Vec<_> = expected.difference(&got).take(5).collect();
    let extra: Vec<_> = got.difference(expected).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: {} rows, {} expected; missing e.g. {missing:?}; unexpected e.g. {extra:?}",
        rows.len(),
        expected.len()
    );
    for row in rows {
        assert_eq!(
            by_id[row.txn_id.as_str()],
            row,
            "{what}: the row differs from the event"
        );
    }
}

fn parse_rows(what: &str, lines: impl IntoIterator<Item = Vec<u8>>) -> Vec<Transaction> {
    lines
        .into_iter()
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice(&l).unwrap_or_else(|e| {
                panic!(
                    "{what}: {:?} is not a row: {e}",
                    String::from_utf8_lossy(&l)
                )
            })
        })
        .collect()
}

#[test]
fn every_event_lands_on_exactly_the_routes_whose_predicates_hold() {
    const PARTITIONS: u64 = 2;
    let config = generator(Tier::Mock, 5, 20_000, START_MS);
    let txns: Vec<Transaction> = generate_partitions(&config, PARTITIONS)
        .iter()
        .map(Transaction::from)
        .collect();
    let by_id: BTreeMap<&str, &Transaction> = txns.iter().map(|t| (t.txn_id.as_str(), t)).collect();
    assert_eq!(by_id.len(), txns.len(), "the generator's ids are unique");
    let expected = expected_routes(&txns);
    let source = format!(
        "kind = \"generator\"\nseed = 5\ncount = 20000\nrate = 250\naccounts = 200\nmerchants = 50\n\
         disorder = \"2s\"\npartitions = {PARTITIONS}"
    );
    for workers in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(format!("{name}.jsonl"));
        let text = routing_job(
            &source,
            |name| format!("kind = \"file\"\npath = {:?}", path(name)),
            false,
        );
        let stats = run_to_end(&text, "", workers);
        assert_eq!(
            stats.get(eddy::stats::Counter::EventsIn),
            txns.len() as u64,
            "{workers} worker(s): events read"
        );
        for (name, ids) in &expected {
            let written = std::fs::read(path(name)).unwrap();
            let rows = parse_rows(name, written.split(|b| *b == b'\n').map(<[u8]>::to_vec));
            assert_route(
                &format!("{workers} worker(s), route `{name}`"),
                &rows,
                ids,
                &by_id,
            );
        }
    }
}

#[test]
fn through_kafka_with_a_topic_per_country_and_dead_letters() {
    const INPUT: &str = "payments";
    const MALFORMED_EVERY: u64 = 40;
    let country_topics: Vec<String> = COUNTRIES.iter().map(|c| format!("country.{c}")).collect();
    let mut topics: Vec<(&str, i32)> = vec![(INPUT, 4), ("default", 2), ("dlq", 1)];
    topics.extend(RULES.iter().map(|r| (r.0, 2)));
    topics.extend(country_topics.iter().map(|t| (t.as_str(), 1)));
    let cluster =
        Cluster::start(Tier::Mock, "routing", &topics).expect("the mock cluster is never skipped");
    let brokers = cluster.brokers();
    let config = generator(Tier::Mock, 9, 12_000, START_MS);
    produce_input(brokers, INPUT, &config, Some(MALFORMED_EVERY));
    // Every MALFORMED_EVERY-th message (1-based) was replaced by broken JSON.
    let txns: Vec<Transaction> = generate(&config)
        .iter()
        .enumerate()
        .filter(|(i, _)| !(*i as u64 + 1).is_multiple_of(MALFORMED_EVERY))
        .map(|(_, t)| Transaction::from(t))
        .collect();
    let malformed = config.count.unwrap() / MALFORMED_EVERY;
    let by_id: BTreeMap<&str, &Transaction> = txns.iter().map(|t| (t.txn_id.as_str(), t)).collect();
    let expected = expected_routes(&txns);

    let source = format!(
        "kind = \"kafka\"\nbrokers = \"${{BROKERS}}\"\ntopics = [\"{INPUT}\"]\ngroup = \"routing\""
    );
    let text = routing_job(
        &source,
        |name| {
            // The route without `when` writes a topic per country.
            let (topic, key) = match name {
                "all" => ("country.{country}", "\nkey = \"account_id\""),
                "dlq" => ("dlq", ""),
                _ => (name, "\nkey = \"account_id\""),
            };
            format!("kind = \"kafka\"\nbrokers = \"${{BROKERS}}\"\ntopic = \"{topic}\"{key}")
        },
        true,
    );
    let stats = run_to_end(&text, brokers, 2);
    assert_eq!(
        stats.get(eddy::stats::Counter::DeadLetters),
        malformed,
        "dead letters counted"
    );

    let rows_of = |topic: &str, route: &str| {
        let messages = read_topic(brokers, topic);
        for m in &messages {
            assert_eq!(m.header("eddy.job").as_deref(), Some("routing-test"));
            assert_eq!(m.header("eddy.output").as_deref(), Some(route), "{topic}");
        }
        let rows = parse_rows(topic, messages.iter().map(|m| m.payload.clone()));
        for (m, row) in messages.iter().zip(&rows) {
            assert_eq!(
                m.key.as_deref(),
                Some(row.account_id.to_string().as_bytes())
            );
        }
        rows
    };
    for name in RULES.iter().map(|r| r.0).chain(["default"]) {
        assert_route(
            &format!("topic `{name}`"),
            &rows_of(name, name),
            &expected[name],
            &by_id,
        );
    }
    // The topic per country: every event once, in its country's topic.
    let mut all = Vec::new();
    for (country, topic) in COUNTRIES.iter().zip(&country_topics) {
        let rows = rows_of(topic, "all");
        assert!(
            rows.iter().all(|t| t.country == *country),
            "`{topic}` holds another country's events"
        );
        all.extend(rows);
    }
    assert_route("the topics per country", &all, &expected["all"], &by_id);

    // The dead letters: the broken payloads, with the reason.
    let dead = read_topic(brokers, "dlq");
    assert_eq!(dead.len() as u64, malformed, "dead letters written");
    for d in &dead {
        let error = d.header("eddy.error").expect("an eddy.error header");
        assert!(!error.trim().is_empty(), "a dead letter without its reason");
        assert_eq!(d.header("eddy.source.topic").as_deref(), Some(INPUT));
        assert!(
            serde_json::from_slice::<Transaction>(&d.payload).is_err(),
            "a decodable event was dead-lettered: {:?}",
            String::from_utf8_lossy(&d.payload)
        );
    }
}

/// The job file around a route or sink under test: a file source and a file sink.
fn job_with(extra: &str) -> String {
    format!(
        r#"[job]
name = "bad-routes"

[[sources]]
name = "payments"
kind = "file"
paths = ["in.jsonl"]
event_time = "ts"
schema = {{ txn_id = "string", amount_cents = "int", country = "string", ts = "timestamp" }}

[[sinks]]
name = "out"
kind = "file"
path = "out.jsonl"
{extra}"#
    )
}

fn errors(text: &str) -> Vec<String> {
    match Job::parse_with(Path::new("routes.toml"), text, &|_| None) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn assert_reports(text: &str, expected: &[&str]) {
    let errors = errors(text);
    for e in expected {
        assert!(
            errors.iter().any(|got| got.contains(e)),
            "missing {e:?} in:\n{}",
            errors.join("\n")
        );
    }
}

#[test]
fn check_reports_bad_predicates_with_line_and_column() {
    let text = job_with(
        r#"
[[routes]]
name = "typo"
source = "payments"
when = 'amount_cents > 50000 && contry != "US"'
sinks = ["out"]

[[routes]]
name = "syntax"
source = "payments"
when = 'amount_cents > && country == "US"'
sinks = ["out"]

[[routes]]
name = "types"
source = "payments"
when = 'country > 5'
sinks = ["out"]
"#,
    );
    assert_reports(
        &text,
        &[
            "routes.toml:19: routes[0].when: unknown field `contry`: the source has txn_id, \
             amount_cents, country, ts at column 25 of the expression",
            "routes.toml:25: routes[1].when: syntax error: extraneous input '&&' where a field, \
             a literal or `(` should be at column 16 of the expression",
            "routes.toml:31: routes[2].when: cannot compare string with int at column 9 of the \
             expression",
        ],
    );
}

#[test]
fn check_reports_bad_route_sections() {
    let text = job_with(
        r#"
[[routes]]
name = "a"
source = "nowhere"
sinks = ["nothing"]

[[routes]]
name = "b"
source = "payments"
when = 'country == "US"'
sinks = ["out"]

[[routes]]
name = "c"
source = "payments"
otherwise = true
sinks = ["out"]

[[routes]]
name = "d"
source = "payments"
otherwise = true
sinks = ["out"]

[[routes]]
name = "e"
source = "payments"
when = 'country == "FR"'
otherwise = true
sinks = []
"#,
    );
    assert_reports(
        &text,
        &[
            "routes.toml:18: routes[0].source: no source named `nowhere`",
            "routes.toml:19: routes[0].sinks: no sink named `nothing`",
            "routes.toml:36: routes[3].otherwise: source `payments` already has an otherwise \
             route, `c`",
            "routes.toml:43: routes[4].otherwise: a route takes either `when` or `otherwise = \
             true`, not both",
            "routes.toml:40: routes[4].sinks: the events go nowhere",
            "routes.toml:11: sinks[0]: a file sink takes one output, but route `b` and route `c` \
             write to it",
        ],
    );
}

#[test]
fn check_reports_topic_placeholders_naming_no_column() {
    let text = r#"[job]
name = "bad-topics"
dead_letter = "dlq"

[[sources]]
name = "payments"
kind = "file"
paths = ["in.jsonl"]
event_time = "ts"
schema = { country = "string", ts = "timestamp" }

[[routes]]
name = "all"
source = "payments"
sinks = ["by_type"]

[[sinks]]
name = "by_type"
kind = "kafka"
brokers = "localhost:9092"
topic = "events.{type}"

[[sinks]]
name = "dlq"
kind = "kafka"
brokers = "localhost:9092"
topic = "dead.{country}"

[[sinks]]
name = "broken"
kind = "kafka"
brokers = "localhost:9092"
topic = "events.{country"
"#;
    assert_reports(
        text,
        &[
            "routes.toml:21: sinks[0].topic: `{type}` is not a column of the results of route \
             `all`: country, ts",
            "routes.toml:27: sinks[1].topic: `{country}` is not a column of dead letters: they \
             have none",
            "routes.toml:33: sinks[2].topic: unclosed `{` in topic `events.{country`",
        ],
    );
}

#[test]
fn the_example_routing_job_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/jobs/routing.toml");
    let job = Job::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(job.routes.len() >= 3);
}
