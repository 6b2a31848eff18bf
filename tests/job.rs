//! The `eddy` binary on job files: `check` reports every error with file, line and field; `run`
//! over a JSON-lines file gives the reference results, the same on 1 worker, 2 workers and 2
//! processes, with malformed lines dead-lettered and late records routed to their sink.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn eddy(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eddy"))
        .args(args)
        .current_dir(dir)
        .env("EDDY_BROKERS", "127.0.0.1:9")
        .env("EDDY_INPUT", "in.jsonl")
        .env("EDDY_OUTPUT", "out.csv")
        .env("EDDY_CPAAS_URL", "http://127.0.0.1:9")
        .env("EDDY_CPAAS_KEY", "key")
        .env("EDDY_STATE", "state")
        .env("EDDY_DEMO_OUT", "out")
        .output()
        .expect("running eddy")
}

#[test]
fn check_reports_every_error_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let job = r#"[job]
name = "bad"
tick = "ten"

[[sources]]
name = "in"
kind = "file"
paths = ["in.jsonl"]
event_time = "ts"
schema = { account_id = "int", ts = "timestamp", amount = "money" }

[[metrics]]
name = "m"
source = "in"
group_by = ["acount_id"]
window = { kind = "hopping", size = "10s" }
aggregates = { total = "sum(account_id)", x = "median(account_id)" }
having = "totl > 3"
sinks = ["nowhere"]
"#;
    std::fs::write(dir.path().join("bad.toml"), job).unwrap();
    let out = eddy(&["check", "bad.toml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "bad.toml:3: job.tick: `ten` is not a duration",
        "bad.toml:10: sources[0].schema.amount: unknown type `money`",
        "bad.toml:15: metrics[0].group_by: `acount_id` is not a field of the source schema",
        "bad.toml:16: metrics[0].window.slide: a hopping window needs `slide`",
        "bad.toml:17: metrics[0].aggregates.x: unknown function `median`",
        "bad.toml:18: metrics[0].having: `totl` is not an output column",
        "bad.toml:19: metrics[0].sinks: no sink named `nowhere`",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }

    std::fs::write(
        dir.path().join("syntax.toml"),
        "[job]\nname = \"x\"\n[[sources]]\nname = \n",
    )
    .unwrap();
    let out = eddy(&["check", "syntax.toml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("syntax.toml:4: name: "), "{stderr}");

    std::fs::write(
        dir.path().join("unknown.toml"),
        "[job]\nname = \"x\"\nspeed = 3\n",
    )
    .unwrap();
    let stderr =
        String::from_utf8_lossy(&eddy(&["check", "unknown.toml"], dir.path()).stderr).to_string();
    assert!(
        stderr.contains("unknown.toml:3: speed: unknown field `speed`"),
        "{stderr}"
    );
}

#[test]
fn shipped_examples_are_valid() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/jobs");
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        let out = eddy(&["check", path.to_str().unwrap()], &examples);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 3);
}

const JOB: &str = r#"[job]
name = "tumbling"
dead_letter = "dlq"

[[sources]]
name = "in"
kind = "file"
paths = ["in.jsonl"]
event_time = "ts"
out_of_orderness = "1500ms"
max_drift = "3s"
schema = { account_id = "int", ts = "timestamp", amount_cents = "int" }

[[metrics]]
name = "per_account"
source = "in"
group_by = ["account_id"]
window = { kind = "tumbling", size = "5s" }
aggregates = { count = "count", sum = "sum(amount_cents)", max = "max(amount_cents)" }
sinks = ["csv"]
late_sink = "late"

[[sinks]]
name = "csv"
kind = "file"
path = "out.csv"
format = "csv"
order_by = ["account_id", "window_start"]

[[sinks]]
name = "late"
kind = "file"
path = "late.jsonl"

[[sinks]]
name = "dlq"
kind = "file"
path = "dlq.jsonl"
"#;

/// Asserts equality, showing only the first differences.
fn assert_same_lines(got: &[String], expected: &[String], what: &str) {
    let missing: Vec<&String> = expected
        .iter()
        .filter(|l| !got.contains(l))
        .take(5)
        .collect();
    let extra: Vec<&String> = got
        .iter()
        .filter(|l| !expected.contains(l))
        .take(5)
        .collect();
    assert!(
        got == expected,
        "{what}: {} lines, expected {}; missing {missing:?}; unexpected {extra:?}",
        got.len(),
        expected.len()
    );
}

#[test]
fn having_is_a_predicate_over_the_output_columns() {
    let events = common::transactions(10_000, 50, 1_500, 101, 8_000);
    let (reference, _) = common::reference_windows(&events, 1_500, 5_000, 5_000, 0);
    let job = JOB.replace(
        "late_sink = \"late\"",
        "having = '(count >= 100 && max > 9000) || !(account_id != 7)'\nlate_sink = \"late\"",
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.jsonl"), common::json_lines(&events)).unwrap();
    std::fs::write(dir.path().join("job.toml"), job).unwrap();
    let out = eddy(&["run", "job.toml"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut expected = vec!["account_id,window_start,window_end,count,sum,max".to_string()];
    expected.extend(
        reference
            .iter()
            .filter(|((k, _), (c, _, max))| (*c >= 100 && *max > 9000) || *k == 7)
            .map(|((k, s), (c, sum, max))| format!("{k},{s},{},{c},{sum},{max}", s + 5_000)),
    );
    assert!(expected.len() > 2 && expected.len() < reference.len());
    let csv = std::fs::read_to_string(dir.path().join("out.csv")).unwrap();
    let lines: Vec<String> = csv.lines().map(String::from).collect();
    assert_same_lines(&lines, &expected, "rows that meet `having`");
}

#[test]
fn file_job_gives_the_reference_on_one_worker_two_workers_and_two_processes() {
    let events = common::transactions(30_000, 200, 1_500, 101, 8_000);
    let (reference, late) = common::reference_windows(&events, 1_500, 5_000, 5_000, 0);
    let mut expected = vec!["account_id,window_start,window_end,count,sum,max".to_string()];
    expected.extend(
        reference
            .iter()
            .map(|((k, s), (c, sum, max))| format!("{k},{s},{},{c},{sum},{max}", s + 5_000)),
    );
    let mut input = common::json_lines(&events);
    let middle = input[input.len() / 2..].find('\n').unwrap() + input.len() / 2 + 1;
    input.insert_str(middle, "{\"account_id\": 5, \"ts\": \"soon\"}\n");

    let runs: [&[&str]; 3] = [&["-w", "1"], &["-w", "2"], &["-n", "2"]];
    for args in runs {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("in.jsonl"), &input).unwrap();
        std::fs::write(dir.path().join("job.toml"), JOB).unwrap();
        if args[0] == "-n" {
            let hosts = format!(
                "127.0.0.1:{}\n127.0.0.1:{}\n",
                common::free_port(),
                common::free_port()
            );
            std::fs::write(dir.path().join("hosts"), hosts).unwrap();
            let spawn = |p: &str| {
                Command::new(env!("CARGO_BIN_EXE_eddy"))
                    .args(["run", "job.toml", "-n", "2", "-p", p, "-h", "hosts"])
                    .current_dir(dir.path())
                    .spawn()
                    .unwrap()
            };
            let children = [spawn("0"), spawn("1")];
            for mut child in children {
                assert!(
                    child.wait().unwrap().success(),
                    "a process of the cluster failed"
                );
            }
        } else {
            let mut cmd = vec!["run", "job.toml"];
            cmd.extend_from_slice(args);
            let out = eddy(&cmd, dir.path());
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let csv = std::fs::read_to_string(dir.path().join("out.csv")).unwrap();
        let lines: Vec<String> = csv.lines().map(String::from).collect();
        assert_same_lines(&lines, &expected, &format!("results with {args:?}"));
        let late_lines = std::fs::read_to_string(dir.path().join("late.jsonl")).unwrap();
        assert_eq!(
            late_lines.lines().count(),
            late,
            "late records with {args:?}"
        );
        assert!(late > 0);
        let dlq = std::fs::read_to_string(dir.path().join("dlq.jsonl")).unwrap();
        let letters: Vec<serde_json::Value> = dlq
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(letters.len(), 1, "dead letters with {args:?}");
        assert!(
            letters[0]["error"]
                .as_str()
                .unwrap()
                .starts_with("field `ts`: `soon` is not an RFC 3339 time")
        );
        assert_eq!(
            letters[0]["payload"],
            "{\"account_id\": 5, \"ts\": \"soon\"}"
        );
        assert_eq!(
            letters[0]["offset"],
            input.find("{\"account_id\": 5, \"ts\"").unwrap()
        );
    }
}

/// `max_record_bytes` is a byte count from 1 to 1 GiB, on sources that read records.
#[test]
fn check_bounds_max_record_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let source = |kind: &str, value: &str| {
        format!(
            "[[sources]]\nname = \"{kind}{value}\"\nkind = \"{kind}\"\npaths = [\"in.jsonl\"]\n\
             event_time = \"ts\"\nschema = {{ ts = \"timestamp\" }}\nmax_record_bytes = {value}\n"
        )
    };
    let job = [
        "[job]\nname = \"limits\"\n".to_string(),
        source("file", "0"),
        source("file", "1073741825"),
        source("file", "1073741824"),
        source("generator", "10"),
    ]
    .join("\n");
    std::fs::write(dir.path().join("limits.toml"), job).unwrap();
    let out = eddy(&["check", "limits.toml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let bound = "must be an integer from 1 to 1073741824: a record is held in memory whole (1 GiB \
                 at most)";
    for expected in [
        format!("limits.toml:10: sources[0].max_record_bytes: {bound}"),
        format!("limits.toml:18: sources[1].max_record_bytes: {bound}"),
        "limits.toml:34: sources[3].max_record_bytes: the generator reads no records: only \
         kafka and file sources take it"
            .to_string(),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(!stderr.contains("sources[2]"), "{stderr}");
}

/// Property tests of the job file's numbers: every duration and count that `check` accepts is
/// the value written, every other one is an error that states the bound, and a bounded job with
/// values at their bounds runs to its end.
mod bounds {
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use eddy::job::{Job, MAX_DURATION, SourceKind};
    use eddy::operators::window::WindowSpec;
    use eddy::sinks::SinkKind;
    use proptest::prelude::*;

    /// A job of one file source, whose source takes `source` and whose metric's window is
    /// `window`, with `sinks` beside its output.
    fn job(source: &str, window: &str, sinks: &str) -> String {
        format!(
            r#"[job]
name = "bounds"

[[sources]]
name = "in"
kind = "file"
paths = ["in.jsonl"]
event_time = "ts"
schema = {{ request_id = "string", channel = "string?", to = "string?", text = "string", ts = "timestamp" }}
{source}

[[metrics]]
name = "m"
source = "in"
window = {window}
aggregates = {{ n = "count" }}
sinks = ["out"]

[[sinks]]
name = "out"
kind = "discard"
{sinks}
"#
        )
    }

    fn parse(text: &str) -> Result<Job, String> {
        Job::parse_with(Path::new("/jobs/b.toml"), text, &|_| None).map_err(|e| e.to_string())
    }

    fn window(size: &str) -> String {
        format!(r#"{{ kind = "tumbling", size = "{size}" }}"#)
    }

    const MAX_MS: u64 = MAX_DURATION.as_millis() as u64;

    proptest! {
        /// A duration of up to the bound, in any unit, is its milliseconds; beyond it, an error
        /// naming the bound.
        #[test]
        fn durations_are_exact_up_to_the_bound(ms in 1..=MAX_MS, unit in 0..3usize) {
            let (text, exact) = match unit {
                0 => (format!("{ms}ms"), ms),
                1 => (format!("{}s", ms / 1000 + 1), (ms / 1000 + 1) * 1000),
                _ => (format!("{}h", ms / 3_600_000 + 1), (ms / 3_600_000 + 1) * 3_600_000),
            };
            let result = parse(&job("", &window(&text), ""));
            if exact <= MAX_MS {
                let job = result.unwrap();
                prop_assert_eq!(job.metrics[0].window, WindowSpec::Tumbling { size: exact });
            } else {
                let errors = result.unwrap_err();
                prop_assert!(errors.contains("durations are at most 876000h"), "{}", errors);
            }
        }

        /// Past the bound, however far, a duration is an error, never a wrapped number.
        #[test]
        fn durations_beyond_the_bound_are_errors(s in (MAX_MS / 1000 + 1)..=i64::MAX as u64) {
            let errors = parse(&job("", &window(&format!("{s}s")), "")).unwrap_err();
            prop_assert!(errors.contains("metrics[0].window.size"), "{}", errors);
        }

        /// Whatever the text, a duration is a value or an error, never a panic.
        #[test]
        fn any_duration_text_is_a_value_or_an_error(text in "[-+0-9a-zA-Z .:]{0,30}") {
            let text = text.replace('"', "");
            if let Ok(job) = parse(&job("", &window(&text), "")) {
                let WindowSpec::Tumbling { size } = job.metrics[0].window else {
                    panic!("a tumbling window")
                };
                prop_assert!((1..=MAX_MS).contains(&size));
            }
        }

        /// Each count is the value written from 1 to its bound, and an error stating the bound
        /// otherwise.
        #[test]
        fn counts_are_exact_up_to_their_bound(which in 0..COUNTS.len(), n in prop_oneof![
            Just(i64::MIN), -2..=2i64, 900..=1100i64, 1_048_570..=1_048_580i64,
            999_999_990..=1_000_000_010i64, Just(1_000_000_000_000), Just(1_000_000_000_001),
            Just(1 << 30), Just((1 << 30) + 1), Just(i64::MAX), any::<i64>(),
        ]) {
            let count = &COUNTS[which];
            let text = (count.job)(n);
            match parse(&text) {
                Ok(job) => {
                    prop_assert!((1..=count.max).contains(&n), "{} = {} accepted", count.field, n);
                    prop_assert_eq!((count.read)(&job), n as u64, "{}", count.field);
                }
                Err(errors) => {
                    prop_assert!(!(1..=count.max).contains(&n), "{} = {}: {}", count.field, n, errors);
                    let bound = format!("{}: must be an integer from 1 to {}", count.field, count.max);
                    prop_assert!(errors.contains(&bound), "{}", errors);
                }
            }
        }
    }

    /// A bounded count of the job file: where it stands, its bound, and how to read it back.
    struct Count {
        field: &'static str,
        max: i64,
        job: fn(i64) -> String,
        read: fn(&Job) -> u64,
    }

    fn generator(setting: &str, n: i64) -> String {
        job("", &window("1s"), "")
            .replace(r#"kind = "file""#, r#"kind = "generator""#)
            .replace(r#"paths = ["in.jsonl"]"#, &format!("{setting} = {n}"))
            .replace(
                r#"request_id = "string", channel = "string?", to = "string?", text = "string", "#,
                "",
            )
    }

    fn generated(job: &Job) -> (&eddy::sources::generator::GeneratorConfig, u64) {
        match &job.sources[0].kind {
            SourceKind::Generator { config, partitions } => (config, *partitions),
            other => panic!("a generator: {other:?}"),
        }
    }

    fn notify(setting: &str, n: i64) -> String {
        let sink = format!(
            "[[sinks]]\nname = \"cpaas\"\nkind = \"notify\"\nsource = \"in\"\n\
             base_url = \"http://127.0.0.1:9\"\napi_key = \"k\"\noutcomes = \"outcomes\"\n\
             sent_record = \"sent.redb\"\n{}\n\n[[sinks]]\nname = \"outcomes\"\n\
             kind = \"file\"\npath = \"outcomes.jsonl\"\n",
            setting.replace('#', &n.to_string())
        );
        job("", &window("1s"), &sink)
    }

    fn notify_config(job: &Job) -> &eddy::sinks::notify::config::NotifyConfig {
        match &job.sinks[1].kind {
            SinkKind::Notify(config) => config,
            other => panic!("a notify sink: {other:?}"),
        }
    }

    const COUNTS: [Count; 10] = [
        Count {
            field: "sources[0].splits",
            max: 1024,
            job: |n| job(&format!("splits = {n}"), &window("1s"), ""),
            read: |job| match &job.sources[0].kind {
                SourceKind::File { splits, .. } => *splits as u64,
                other => panic!("a file source: {other:?}"),
            },
        },
        Count {
            field: "sources[0].partitions",
            max: 1024,
            job: |n| generator("partitions", n),
            read: |job| generated(job).1,
        },
        Count {
            field: "sources[0].count",
            max: 1_000_000_000_000,
            job: |n| generator("count", n),
            read: |job| generated(job).0.count.unwrap(),
        },
        Count {
            field: "sources[0].rate",
            max: 1_000_000_000,
            job: |n| generator("rate", n),
            read: |job| generated(job).0.rate,
        },
        Count {
            field: "sources[0].max_record_bytes",
            max: 1 << 30,
            job: |n| job(&format!("max_record_bytes = {n}"), &window("1s"), ""),
            read: |job| job.sources[0].max_record_bytes as u64,
        },
        Count {
            field: "sinks[1].max_attempts",
            max: 1000,
            job: |n| notify("max_attempts = #", n),
            read: |job| notify_config(job).retry.max_attempts.into(),
        },
        Count {
            field: "sinks[1].queue",
            max: 1 << 20,
            job: |n| notify("queue = #", n),
            read: |job| notify_config(job).queue as u64,
        },
        Count {
            field: "sinks[1].sms.concurrency",
            max: 1024,
            job: |n| notify("sms = { concurrency = # }", n),
            read: |job| notify_config(job).sms.concurrency as u64,
        },
        Count {
            field: "sinks[1].sms.rate",
            max: 1_000_000,
            job: |n| notify("sms = { rate = # }", n),
            read: |job| notify_config(job).sms.rate.into(),
        },
        Count {
            field: "checkpoints.keep",
            max: 1000,
            job: |n| {
                let job = job("", &window("1s"), "");
                format!("{job}[checkpoints]\nstore = \"state\"\nkeep = {n}\n")
            },
            read: |job| job.checkpoints.as_ref().unwrap().keep as u64,
        },
    ];

    /// Waits for `child` with a generous deadline, killing it past that.
    fn wait(mut child: Child, what: &str) -> std::process::Output {
        let deadline = Instant::now() + Duration::from_secs(180);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("{what} did not end");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(6))]

        /// A bounded job whose durations and counts are anywhere up to their bounds (at them,
        /// most often) passes check and runs to its end: no overflow, no spin, no panic.
        #[test]
        fn bounded_jobs_at_the_bounds_end(
            ms in prop_oneof![Just(MAX_MS), 1..=MAX_MS],
            panes in prop_oneof![Just(1000u64), 1..=1000u64],
            partitions in prop_oneof![Just(1024i64), 1..=1024i64],
            rate in prop_oneof![Just(1_000_000_000i64), 1..=1_000_000_000i64],
            ids in prop_oneof![Just(1_000_000_000i64), 1..=1_000_000_000i64],
            every in prop_oneof![Just(1_000_000_000_000i64), 1..=1_000_000_000_000i64],
        ) {
            let d = format!("{ms}ms");
            let size = ms / panes * panes;
            let slide = format!("{}ms", size / panes);
            let size = format!("{}ms", size.max(1));
            let text = include_str!("job-extremes.toml")
                .replace("$D", &d)
                .replace("$SIZE", &size)
                .replace("$SLIDE", if slide == "0ms" { &size } else { &slide })
                .replace("$PARTITIONS", &partitions.to_string())
                .replace("$RATE", &rate.to_string())
                .replace("$IDS", &ids.to_string())
                .replace("$EVERY", &every.to_string());
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("x.toml"), &text).unwrap();
            let check = super::eddy(&["check", "x.toml"], dir.path());
            prop_assert!(check.status.success(), "{}\n{}", String::from_utf8_lossy(&check.stderr), text);
            let run = Command::new(env!("CARGO_BIN_EXE_eddy"))
                .args(["run", "x.toml"])
                .current_dir(dir.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let out = wait(run, "eddy run");
            let stderr = String::from_utf8_lossy(&out.stderr);
            prop_assert!(out.status.success(), "{}\n{}", stderr, text);
            prop_assert!(stderr.contains("done: 3000 events"), "{}", stderr);
        }
    }
}
