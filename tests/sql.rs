//! SQL jobs run through the binary as a user runs them: the benchmark queries and the routing
//! statement set written in Flink SQL give what their TOML jobs give, late records go where the
//! source table says, a job over Kafka (the mock cluster) writes what it writes over files, and
//! `eddy check` on the bad jobs of `tests/sql/` prints what their golden files hold, and the
//! jobs of `tests/sql/run/` write what theirs hold (`EDDY_BLESS=1 cargo test --test sql`
//! rewrites them). Kafka options and `WHERE` are checked
//! in process, on the job the SQL compiles to.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{example, run_job_file as run};

/// The header line, then the other lines sorted: a SQL file sink writes rows as windows fire,
/// the TOML examples sort them.
fn sorted(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default().to_string();
    let mut rows: Vec<&str> = lines.collect();
    rows.sort_unstable();
    std::iter::once(header.as_str())
        .chain(rows)
        .map(|l| format!("{l}\n"))
        .collect()
}

/// 100 000 transactions of 500 accounts over 100 s of event time, out of order by up to 1.5 s,
/// every 1000th 20 s behind its watermark (late for the windows it belongs to); amounts from
/// 1.00 to 1000.00, countries and merchants in turn.
fn transactions(dir: &Path) -> PathBuf {
    let path = dir.join("transactions.jsonl");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for (n, (account, ts, amount)) in common::transactions(100_000, 500, 1_500, 1_000, 20_000)
        .into_iter()
        .enumerate()
    {
        let country = ["US", "DE", "FR", "PT"][n % 4];
        writeln!(
            file,
            r#"{{"txn_id":"t{n}","account_id":{account},"amount_cents":{amount},"merchant":"m{}","country":"{country}","ts":{ts}}}"#,
            n % 7,
            amount = amount * 100,
        )
        .unwrap();
    }
    file.flush().unwrap();
    path
}

/// Q1 and Q2 written as Flink runs them give the rows of q1.toml and q2.toml, late events
/// dropped alike, on one worker and on two.
#[test]
fn the_benchmark_queries_in_sql_give_the_rows_of_their_toml_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let input = transactions(dir.path());
    for query in ["q1", "q2"] {
        for workers in [1, 2] {
            let mut got = Vec::new();
            for kind in ["toml", "sql"] {
                let output = dir.path().join(format!("{query}-{kind}-{workers}.csv"));
                let env = [
                    ("EDDY_INPUT", input.as_os_str()),
                    ("EDDY_OUTPUT", output.as_os_str()),
                ];
                run(&example(&format!("{query}.{kind}")), workers, &[], &env);
                got.push(sorted(&output));
            }
            assert!(
                got[0].lines().count() > 100,
                "{query}: too few rows to compare"
            );
            assert_eq!(
                got[0], got[1],
                "{query} on {workers} workers: TOML and SQL differ"
            );
        }
    }
}

/// Each bad job of `tests/sql/` is refused with the file, line, column, construct and reason
/// its golden file holds, and exit status 2 (with only `EDDY_INPUT` set).
#[test]
fn check_messages_of_bad_sql_match_their_golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql");
    common::golden::assert_check_messages(&dir, "sql", &[("EDDY_INPUT", "in.jsonl")]);
}

/// Each job of `tests/sql/run/` runs over `input.jsonl` there, on one worker and on two, and
/// writes the rows its golden file holds: each file of its output directory, its lines sorted.
#[test]
fn jobs_of_tests_sql_run_write_what_their_golden_files_hold() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql/run");
    let mut jobs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    jobs.sort();
    let outputs: Vec<(String, String)> = jobs
        .iter()
        .map(|job| {
            let written: Vec<String> = [1, 2].map(|workers| written_by(job, workers)).into();
            assert_eq!(
                written[0],
                written[1],
                "{}: one worker and two differ",
                job.display()
            );
            let expected = job.with_extension("expected");
            let name = expected.file_name().unwrap().to_str().unwrap().to_string();
            (name, written[0].clone())
        })
        .collect();
    common::golden::assert_golden(&dir, &outputs);
}

/// What `job` writes into the directory `EDDY_OUTPUT` names, run on `workers`: each file's
/// name, then its lines sorted, files in name order.
fn written_by(job: &Path, workers: usize) -> String {
    let out = tempfile::tempdir().unwrap();
    run(
        job,
        workers,
        &[],
        &[("EDDY_OUTPUT", out.path().as_os_str())],
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(file).unwrap();
            let mut lines: Vec<&str> = text.lines().collect();
            lines.sort_unstable();
            let name = file.file_name().unwrap().to_string_lossy();
            format!(
                "== {name}\n{}",
                lines.iter().map(|l| format!("{l}\n")).collect::<String>()
            )
        })
        .collect()
}

/// The routes of `examples/jobs/routing.toml` over a file instead of the generator: the TOML
/// job that `examples/jobs/routing.sql` must equal.
const ROUTES_TOML: &str = r#"
[job]
name = "routing"

[[sources]]
name = "payments"
kind = "file"
paths = ["${EDDY_INPUT}"]
event_time = "ts"
out_of_orderness = "2s"
schema = { txn_id = "string", account_id = "int", amount_cents = "int", merchant = "string", country = "string", ts = "timestamp" }

[[routes]]
name = "large_foreign"
source = "payments"
when = 'amount_cents > 50000 && country != "US"'
sinks = ["large-foreign"]

[[routes]]
name = "euro_area"
source = "payments"
when = 'country in ["DE", "FR", "IT", "ES", "NL", "BE", "AT", "IE", "PT", "FI"] && amount_cents >= 2000'
sinks = ["euro-area"]

[[routes]]
name = "rest"
source = "payments"
otherwise = true
sinks = ["rest"]

[[sinks]]
name = "large-foreign"
kind = "file"
path = "${EDDY_OUT}/eddy-large-foreign.jsonl"

[[sinks]]
name = "euro-area"
kind = "file"
path = "${EDDY_OUT}/eddy-euro-area.jsonl"

[[sinks]]
name = "rest"
kind = "file"
path = "${EDDY_OUT}/eddy-rest.csv"
format = "csv"
columns = ["txn_id", "country", "amount_cents"]
"#;

/// The routing statement set writes the records the TOML routes job writes, file by file, on
/// one worker and on two.
#[test]
fn the_routing_statement_set_writes_what_the_toml_routes_write() {
    let dir = tempfile::tempdir().unwrap();
    let input = transactions(dir.path());
    let toml = dir.path().join("routing.toml");
    std::fs::write(&toml, ROUTES_TOML).unwrap();
    // The example writes /tmp/eddy-sql-*: here, the test's directory.
    let sql = dir.path().join("routing.sql");
    let text = std::fs::read_to_string(example("routing.sql")).unwrap();
    assert!(
        text.contains("'/tmp/eddy-sql-"),
        "the example writes /tmp/eddy-sql-*"
    );
    let out = dir.path().join("out");
    let prefix = format!("'{}/eddy-", out.display());
    std::fs::write(&sql, text.replace("'/tmp/eddy-sql-", &prefix)).unwrap();
    for workers in [1, 2] {
        let mut got = Vec::new();
        for job in [&toml, &sql] {
            std::fs::create_dir(&out).unwrap();
            run(
                job,
                workers,
                &[],
                &[
                    ("EDDY_INPUT", input.as_os_str()),
                    ("EDDY_OUT", out.as_os_str()),
                ],
            );
            let files: Vec<String> = ["eddy-large-foreign.jsonl", "eddy-euro-area.jsonl"]
                .iter()
                .map(|f| {
                    let mut lines: Vec<String> = std::fs::read_to_string(out.join(f))
                        .unwrap()
                        .lines()
                        .map(str::to_string)
                        .collect();
                    lines.sort_unstable();
                    lines.join("\n")
                })
                .chain([sorted(&out.join("eddy-rest.csv"))])
                .collect();
            std::fs::remove_dir_all(&out).unwrap();
            got.push(files);
        }
        for (toml, sql) in got[0].iter().zip(&got[1]) {
            assert!(toml.lines().count() > 100, "too few records to compare");
            assert_eq!(
                toml, sql,
                "on {workers} workers: TOML and SQL routes differ"
            );
        }
    }
}

/// A route whose `WHERE` holds `CASE`, `CHAR_LENGTH` and `ABS` writes the records the TOML
/// route with the same condition in CEL (`? :`, `size`) writes.
#[test]
fn case_and_functions_in_where_write_what_the_toml_conditional_writes() {
    let dir = tempfile::tempdir().unwrap();
    let input = transactions(dir.path());
    let toml = dir.path().join("case.toml");
    std::fs::write(
        &toml,
        r#"
[job]
name = "case"

[[sources]]
name = "payments"
kind = "file"
paths = ["${EDDY_INPUT}"]
event_time = "ts"
out_of_orderness = "2s"
schema = { txn_id = "string", amount_cents = "int", country = "string", ts = "timestamp" }

[[routes]]
name = "big"
source = "payments"
when = '(country == "US" ? amount_cents : amount_cents * 2) > 150000 && size(txn_id) == 5 && (amount_cents - 50000 < 0 ? -(amount_cents - 50000) : amount_cents - 50000) > 1000'
sinks = ["big"]

[[sinks]]
name = "big"
kind = "file"
path = "${EDDY_OUT}/big.jsonl"
"#,
    )
    .unwrap();
    let sql = dir.path().join("case.sql");
    std::fs::write(
        &sql,
        "CREATE TABLE payments (txn_id STRING, amount_cents BIGINT, country STRING, ts BIGINT,
           rt AS TO_TIMESTAMP_LTZ(ts, 3), WATERMARK FOR rt AS rt - INTERVAL '2' SECOND)
         WITH ('connector' = 'filesystem', 'path' = '${EDDY_INPUT}', 'format' = 'json');
         CREATE TABLE big (txn_id STRING, amount_cents BIGINT, country STRING, ts BIGINT)
         WITH ('connector' = 'filesystem', 'path' = '${EDDY_OUT}/big.jsonl', 'format' = 'json');
         INSERT INTO big SELECT * FROM payments
         WHERE CASE WHEN country = 'US' THEN amount_cents ELSE amount_cents * 2 END > 150000
           AND CHAR_LENGTH(txn_id) = 5 AND ABS(amount_cents - 50000) > 1000;",
    )
    .unwrap();
    let out = dir.path().join("out");
    let mut got = Vec::new();
    for job in [&toml, &sql] {
        std::fs::create_dir(&out).unwrap();
        run(
            job,
            1,
            &[],
            &[
                ("EDDY_INPUT", input.as_os_str()),
                ("EDDY_OUT", out.as_os_str()),
            ],
        );
        let mut lines: Vec<String> = std::fs::read_to_string(out.join("big.jsonl"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        lines.sort_unstable();
        std::fs::remove_dir_all(&out).unwrap();
        got.push(lines);
    }
    assert!(got[0].len() > 100, "too few records to compare");
    assert_eq!(got[0], got[1], "TOML and SQL routes differ");
}

/// Kafka tables take Flink's options: the topic, `properties.*` passed to librdkafka with
/// `${VAR}` expanded (secrets stay out of the file), `key.fields` as the message key; `SET`
/// takes the time zone and the job's name.
#[test]
fn kafka_tables_and_settings_become_the_jobs_sources_and_sinks() {
    use eddy::job::SourceKind;
    use eddy::sinks::SinkKind;
    let text = r#"
        SET 'table.local-time-zone' = 'UTC';
        SET 'pipeline.name' = 'velocity';
        CREATE TABLE txns (
          account_id BIGINT NOT NULL,
          amount_cents BIGINT,
          ts BIGINT,
          rt AS TO_TIMESTAMP_LTZ(ts, 3),
          WATERMARK FOR rt AS rt - INTERVAL '1.5' SECOND
        ) WITH (
          'connector' = 'kafka',
          'topic' = 'transactions',
          'properties.bootstrap.servers' = '${BROKERS}',
          'properties.group.id' = 'eddy-sql',
          'properties.sasl.password' = '${SECRET}',
          'scan.startup.mode' = 'group-offsets',
          'format' = 'json'
        );
        CREATE TABLE alerts (account_id BIGINT, n BIGINT) WITH (
          'connector' = 'kafka',
          'topic' = 'alerts',
          'properties.bootstrap.servers' = '${BROKERS}',
          'key.fields' = 'account_id',
          'sink.delivery-guarantee' = 'at-least-once',
          'format' = 'csv'
        );
        INSERT INTO alerts
        SELECT account_id, COUNT(DISTINCT amount_cents)
        FROM TABLE(SESSION(TABLE txns, DESCRIPTOR(rt), INTERVAL '30' SECOND))
        GROUP BY window_start, window_end, account_id
        HAVING COUNT(DISTINCT amount_cents) > 3;
    "#;
    let vars = |name: &str| match name {
        "BROKERS" => Some("127.0.0.1:9092".to_string()),
        "SECRET" => Some("s3cr3t".to_string()),
        _ => None,
    };
    let job = eddy::sql::parse(Path::new("k.sql"), text, &vars).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(job.name, "velocity");
    let source = &job.sources[0];
    assert_eq!(
        source.out_of_orderness,
        std::time::Duration::from_millis(1500)
    );
    let SourceKind::Kafka { properties, topics } = &source.kind else {
        panic!("{:?}", source.kind)
    };
    assert_eq!(topics, &["transactions"]);
    for pair in [
        ("bootstrap.servers", "127.0.0.1:9092"),
        ("group.id", "eddy-sql"),
        ("sasl.password", "s3cr3t"),
    ] {
        assert!(
            properties.contains(&(pair.0.into(), pair.1.into())),
            "{properties:?}"
        );
    }
    let sink = &job.sinks[0];
    let SinkKind::Kafka(config) = &sink.kind else {
        panic!("{:?}", sink.kind)
    };
    assert_eq!(config.topic, "alerts");
    assert_eq!(sink.key.as_deref(), Some("account_id"));
    assert_eq!(sink.format, eddy::sinks::format::Format::Csv);
    let metric = &job.metrics[0];
    assert_eq!(
        metric.window,
        eddy::WindowSpec::Session { gap: 30_000 },
        "the session gap"
    );
    assert_eq!(
        metric.aggregates.len(),
        1,
        "COUNT(DISTINCT) once, for SELECT and HAVING"
    );
    let having = metric.having.as_ref().expect("HAVING");
    let row = |n| {
        [
            eddy::Value::Int(7),
            eddy::Value::Int(0),
            eddy::Value::Int(1),
            eddy::Value::Int(n),
        ]
    };
    assert!(
        having.holds(&row(4)) && !having.holds(&row(3)),
        "HAVING COUNT(DISTINCT …) > 3"
    );
}

/// `WHERE` compiles onto the routes' predicate with SQL's meaning: each condition holds for the
/// records it should and no others.
#[test]
fn where_conditions_hold_for_the_records_sql_means() {
    use eddy::Value::{Int, Null, Str};
    use eddy::job::Selection;
    let cases: &[(&str, &[(&str, i64)])] = &[
        ("amount > 50 AND country <> 'US'", &[("DE", 60), ("FR", 70)]),
        ("amount BETWEEN 10 AND 60", &[("US", 10), ("DE", 60)]),
        ("amount NOT BETWEEN 10 AND 60", &[("FR", 70), ("UK", 5)]),
        (
            "country IN ('DE', 'FR') OR amount < 0",
            &[("DE", 60), ("FR", 70)],
        ),
        ("country NOT IN ('DE', 'FR')", &[("US", 10), ("UK", 5)]),
        ("country LIKE 'U%'", &[("US", 10), ("UK", 5)]),
        ("country LIKE '%R'", &[("FR", 70)]),
        ("NOT (country = 'US')", &[("DE", 60), ("FR", 70), ("UK", 5)]),
        ("amount * 2 + 1 > 100.5", &[("DE", 60), ("FR", 70)]),
        ("amount / 10 = 7", &[("FR", 70)]),
        ("amount % 2 = 1", &[("UK", 5)]),
        (
            "(country = 'US') = TRUE OR -amount < -65",
            &[("US", 10), ("FR", 70)],
        ),
        ("merchant IS NULL", &[("UK", 5)]),
        (
            "merchant IS NOT NULL AND amount >= 60",
            &[("DE", 60), ("FR", 70)],
        ),
        (
            "CASE WHEN country = 'US' THEN 'domestic' ELSE 'foreign' END = 'foreign'",
            &[("DE", 60), ("FR", 70), ("UK", 5)],
        ),
        (
            "CASE country WHEN 'DE' THEN amount * 2 WHEN 'FR' THEN 0 ELSE amount END > 50",
            &[("DE", 60)],
        ),
        (
            "CASE WHEN merchant = 'm' THEN FALSE ELSE TRUE END",
            &[("UK", 5)],
        ),
        (
            "CHAR_LENGTH(country) = 2 AND ABS(amount - 60) <= 10",
            &[("DE", 60), ("FR", 70)],
        ),
        ("ABS(-amount) = 5", &[("UK", 5)]),
        (
            "CASE WHEN country = 'US' THEN amount END IS NULL",
            &[("DE", 60), ("FR", 70), ("UK", 5)],
        ),
        (
            "CASE WHEN amount > 50 THEN TRUE END",
            &[("DE", 60), ("FR", 70)],
        ),
        ("COALESCE(merchant, country) = 'UK'", &[("UK", 5)]),
        ("UPPER(merchant) IS NULL", &[("UK", 5)]),
        ("LOWER(country) IN ('us', 'uk')", &[("US", 10), ("UK", 5)]),
    ];
    let records = [("US", 10), ("DE", 60), ("FR", 70), ("UK", 5)];
    for (condition, expected) in cases {
        let text = format!(
            "CREATE TABLE t (country STRING, amount BIGINT, merchant STRING, ts BIGINT,
               rt AS TO_TIMESTAMP_LTZ(ts, 3), WATERMARK FOR rt AS rt)
             WITH ('connector' = 'filesystem', 'path' = 'in.jsonl', 'format' = 'json');
             CREATE TABLE o (country STRING, amount BIGINT, merchant STRING, ts BIGINT)
             WITH ('connector' = 'blackhole');
             INSERT INTO o SELECT * FROM t WHERE {condition};"
        );
        let job = eddy::sql::parse(Path::new("w.sql"), &text, &|_| None)
            .unwrap_or_else(|e| panic!("{condition}: {e}"));
        let Selection::When(predicate) = &job.routes[0].select else {
            panic!("{condition}: no predicate")
        };
        let held: Vec<(&str, i64)> = records
            .iter()
            .filter(|(country, amount)| {
                let merchant = if *country == "UK" {
                    Null
                } else {
                    Str("m".into())
                };
                predicate.holds(&[Str((*country).into()), Int(*amount), merchant, Int(0)])
            })
            .copied()
            .collect();
        assert_eq!(&held, expected, "{condition}");
    }
}

/// `'eddy.late-sink'` on a source table sends the records that came too late for their windows
/// to a table, as a TOML metric's `late_sink` does.
#[test]
fn late_records_go_to_the_table_the_source_names() {
    let dir = tempfile::tempdir().unwrap();
    let input = transactions(dir.path());
    let toml = dir.path().join("late.toml");
    std::fs::write(
        &toml,
        r#"
[job]
name = "late"

[[sources]]
name = "transactions"
kind = "file"
paths = ["${EDDY_INPUT}"]
event_time = "ts"
out_of_orderness = "2s"
schema = { account_id = "int", amount_cents = "int", ts = "timestamp" }

[[metrics]]
name = "counts"
source = "transactions"
group_by = ["account_id"]
window = { kind = "tumbling", size = "10s" }
aggregates = { n = "count" }
sinks = ["counts"]
late_sink = "late"

[[sinks]]
name = "counts"
kind = "discard"

[[sinks]]
name = "late"
kind = "file"
path = "${EDDY_OUTPUT}"
columns = ["account_id", "ts"]
"#,
    )
    .unwrap();
    let sql = dir.path().join("late.sql");
    std::fs::write(
        &sql,
        r#"
CREATE TABLE transactions (
  account_id BIGINT,
  amount_cents BIGINT,
  ts BIGINT,
  rt AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rt AS rt - INTERVAL '2' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${EDDY_INPUT}', 'format' = 'json',
        'eddy.late-sink' = 'late');
CREATE TABLE counts (account_id BIGINT, n BIGINT) WITH ('connector' = 'blackhole');
CREATE TABLE late (account_id BIGINT, ts BIGINT)
WITH ('connector' = 'filesystem', 'path' = '${EDDY_OUTPUT}', 'format' = 'json');
INSERT INTO counts SELECT account_id, COUNT(*)
FROM TABLE(TUMBLE(TABLE transactions, DESCRIPTOR(rt), INTERVAL '10' SECOND))
GROUP BY window_start, window_end, account_id;
"#,
    )
    .unwrap();
    let mut got = Vec::new();
    for job in [&toml, &sql] {
        let output = dir.path().join("late.jsonl");
        run(
            job,
            2,
            &[],
            &[
                ("EDDY_INPUT", input.as_os_str()),
                ("EDDY_OUTPUT", output.as_os_str()),
            ],
        );
        let text = std::fs::read_to_string(&output).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort_unstable();
        got.push(lines);
    }
    assert!(got[0].len() >= 50, "too few late records: {}", got[0].len());
    assert_eq!(got[0], got[1], "TOML and SQL late records differ");
}

/// A TOML metric's `when` filters the records before the windows, as `WHERE` does in
/// `tests/sql/run/windowed-where.sql`: of the two records that come after the watermark passed
/// their window, the one `when` drops (w6) is not late, and without `when` it is.
#[test]
fn a_metric_when_filters_before_the_windows_so_what_it_drops_is_never_late() {
    let dir = tempfile::tempdir().unwrap();
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql/run/windows.jsonl");
    let job = |when: &str| {
        format!(
            r#"
[job]
name = "filtered"

[[sources]]
name = "payments"
kind = "file"
paths = ["{input}"]
event_time = "ts"
out_of_orderness = "2s"
schema = {{ txn_id = "string", account_id = "int", amount_cents = "int", ts = "timestamp" }}

[[metrics]]
name = "counts"
source = "payments"
{when}
group_by = ["account_id"]
window = {{ kind = "tumbling", size = "10s" }}
aggregates = {{ n = "count", total = "sum(amount_cents)" }}
sinks = ["counts"]
late_sink = "late"

[[sinks]]
name = "counts"
kind = "file"
path = "${{EDDY_OUTPUT}}/counts.csv"
format = "csv"

[[sinks]]
name = "late"
kind = "file"
path = "${{EDDY_OUTPUT}}/late.jsonl"
columns = ["txn_id"]
"#,
            input = input.display()
        )
    };
    let written = |name: &str, when: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, job(when)).unwrap();
        written_by(&path, 2)
    };
    assert_eq!(
        written("filtered", "when = \"amount_cents > 100\""),
        "== counts.csv\n\
         1,100000,110000,1,500\n\
         1,110000,120000,1,900\n\
         1,120000,130000,1,300\n\
         2,100000,110000,1,700\n\
         account_id,window_start,window_end,n,total\n\
         == late.jsonl\n\
         {\"txn_id\":\"w7\"}\n"
    );
    let unfiltered = written("unfiltered", "");
    assert!(
        unfiltered.ends_with("== late.jsonl\n{\"txn_id\":\"w6\"}\n{\"txn_id\":\"w7\"}\n"),
        "{unfiltered}"
    );
}

/// A TOML route's `select` computes the columns it writes: the route of `tiers` in
/// `tests/sql/run/projections.sql`, written in TOML, writes what that SQL writes.
#[test]
fn a_route_select_writes_the_columns_the_sql_projection_writes() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql/run");
    let toml = dir.path().join("tiers.toml");
    std::fs::write(
        &toml,
        format!(
            r#"
[job]
name = "tiers"

[[sources]]
name = "payments"
kind = "file"
paths = ["{input}"]
event_time = "ts"
out_of_orderness = "2s"
schema = {{ txn_id = "string", account_id = "int", amount_cents = "int?", merchant = "string?", country = "string?", ts = "timestamp" }}

[[routes]]
name = "tiers"
source = "payments"
when = "account_id != 4"
select = {{ account_id = "account_id", doubled = "amount_cents * 2", tier = 'amount_cents > 1000 ? "big" : "small"', c = "upper(country)" }}
sinks = ["tiers"]

[[sinks]]
name = "tiers"
kind = "file"
path = "${{EDDY_OUTPUT}}/tiers.jsonl"
"#,
            input = run_dir.join("input.jsonl").display()
        ),
    )
    .unwrap();
    let golden = std::fs::read_to_string(run_dir.join("projections.expected")).unwrap();
    let sql = &golden[golden
        .find("== tiers.jsonl")
        .expect("the golden run of tiers")..];
    assert_eq!(written_by(&toml, 2), sql);
}

/// A windowed query over Kafka: the file job's source and sink become Kafka tables.
const OVER_KAFKA: &str = r#"
CREATE TABLE txns (
  account_id BIGINT,
  amount_cents BIGINT,
  ts BIGINT,
  rt AS TO_TIMESTAMP_LTZ(ts, 3),
  WATERMARK FOR rt AS rt - INTERVAL '2' SECOND
) WITH (
  'connector' = 'kafka',
  'topic' = 'txns',
  'properties.bootstrap.servers' = '${BROKERS}',
  'properties.group.id' = 'eddy-sql',
  'properties.fetch.queue.backoff.ms' = '5',
  'scan.startup.mode' = 'group-offsets',
  'format' = 'json'
);
CREATE TABLE totals (account_id BIGINT, window_start BIGINT, n BIGINT, total BIGINT) WITH (
  'connector' = 'kafka',
  'topic' = 'totals',
  'properties.bootstrap.servers' = '${BROKERS}',
  'key.fields' = 'account_id',
  'format' = 'json'
);
INSERT INTO totals
SELECT account_id,
  CAST(TIMESTAMPDIFF(SECOND, TIMESTAMP '1970-01-01 00:00:00', window_start) AS BIGINT) * 1000,
  COUNT(*), SUM(amount_cents)
FROM TABLE(TUMBLE(TABLE txns, DESCRIPTOR(rt), INTERVAL '10' SECOND))
GROUP BY window_start, window_end, account_id;
"#;

/// The same SQL job through Kafka (librdkafka's mock cluster, in this process) writes the rows
/// it writes from a file to a file.
#[test]
fn a_sql_job_over_kafka_writes_what_it_writes_over_files() {
    use common::kafka::{Cluster, Input, Payload, Tier, read_topic};
    let dir = tempfile::tempdir().unwrap();
    // In order but for 1.5 s of disorder, so no record is late on any reading of it.
    let events = common::transactions(20_000, 50, 1_500, 0, 0);
    let lines: Vec<String> = events
        .iter()
        .map(|(account, ts, amount)| {
            format!(r#"{{"account_id":{account},"amount_cents":{amount},"ts":{ts}}}"#)
        })
        .collect();
    let input = dir.path().join("txns.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();

    let over_files = OVER_KAFKA
        .replace(
            "'connector' = 'kafka',\n  'topic' = 'txns',",
            "'connector' = 'filesystem', 'path' = '${INPUT}',",
        )
        .replace(
            "'connector' = 'kafka',\n  'topic' = 'totals',",
            "'connector' = 'filesystem', 'path' = '${OUTPUT}',",
        )
        .lines()
        .filter(|l| !l.contains("'properties.") && !l.contains("'scan.") && !l.contains("'key."))
        .collect::<Vec<_>>()
        .join("\n");
    let file_job = dir.path().join("files.sql");
    std::fs::write(&file_job, &over_files).unwrap();
    let output = dir.path().join("totals.jsonl");
    run(
        &file_job,
        2,
        &[],
        &[("INPUT", input.as_os_str()), ("OUTPUT", output.as_os_str())],
    );
    let mut expected: Vec<String> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    expected.sort_unstable();
    assert!(expected.len() > 100, "too few rows: {}", expected.len());

    let cluster = Cluster::start(Tier::Mock, "sql", &[("txns", 1), ("totals", 1)]).unwrap();
    let inputs: Vec<Input> = lines
        .into_iter()
        .map(|line| Input {
            key: None,
            partition: Some(0),
            timestamp: None,
            payload: Payload::Raw(line),
        })
        .collect();
    cluster.produce("txns", &inputs, None, &Default::default());
    let kafka_job = dir.path().join("kafka.sql");
    std::fs::write(&kafka_job, OVER_KAFKA).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(["run", kafka_job.to_str().unwrap(), "-w", "2"])
        .args(["--from", "earliest", "--until-end"])
        .env("BROKERS", cluster.brokers())
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .output()
        .expect("running eddy");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let messages = read_topic(cluster.brokers(), "totals");
    let mut got: Vec<String> = messages
        .iter()
        .map(|m| String::from_utf8(m.payload.clone()).unwrap())
        .collect();
    got.sort_unstable();
    assert_eq!(got, expected, "Kafka and file runs differ");
    assert!(
        messages
            .iter()
            .all(|m| m.key.as_deref().is_some_and(|k| !k.is_empty())),
        "every message is keyed by its account"
    );
}
