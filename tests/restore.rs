//! Restoring from checkpoints: a job killed with SIGKILL at random points, restored each time
//! (on a different number of workers each time), and run to its end writes what an
//! uninterrupted run writes.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread;
use std::time::Duration;

use eddy::state::{CheckpointStore, Location, Manifest};

/// The input: 300 s of event time at 1000 transactions a second over 500 accounts, a little out
/// of order, with some records late.
fn input(dir: &Path) -> PathBuf {
    let path = dir.join("transactions.jsonl");
    let events = common::transactions(300_000, 500, 1_500, 1_000, 20_000);
    std::fs::write(&path, common::json_lines(&events)).unwrap();
    path
}

/// `job` with a `[checkpoints]` section taking a checkpoint as often as it can, into `store`.
fn with_checkpoints(job: &str, store: &Path, dir: &Path, name: &str) -> PathBuf {
    with_checkpoints_every(job, "20ms", store, dir, name)
}

/// `job` with a `[checkpoints]` section taking a checkpoint every `interval` into `store`.
fn with_checkpoints_every(
    job: &str,
    interval: &str,
    store: &Path,
    dir: &Path,
    name: &str,
) -> PathBuf {
    let text = format!(
        "{job}\n[checkpoints]\nstore = \"{}\"\ninterval = \"{interval}\"\nkeep = 2\n",
        store.display()
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The newest checkpoint's id in `store` (0 for none).
fn newest(store: &Path) -> u64 {
    CheckpointStore::open(&Location::Dir(store.into()))
        .and_then(|s| s.checkpoints())
        .map_or(0, |listed| {
            listed.iter().map(|(id, _)| *id).max().unwrap_or(0)
        })
}

/// A small deterministic generator for the kill points.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// What the last run of [`killed_and_restored`] restored and wrote.
struct LastRun {
    /// The checkpoint it restored: the newest in the store when it started.
    from: Manifest,
    /// Its output.
    output: String,
    /// Its standard error.
    log: String,
}

/// Runs `job` (with `args` and `env`, writing `output`) three times, each killed with SIGKILL
/// once the store holds a checkpoint newer than before and a random moment later, alternating
/// between one worker and two; then runs it to its end on two workers.
fn killed_and_restored(
    job: &Path,
    (args, env): (&[&str], &[(&str, &OsStr)]),
    output: &Path,
    store: &Path,
    seed: u64,
) -> LastRun {
    let mut rng = Rng(seed | 1);
    let env = writing(output, env);
    for round in 0..3 {
        let mut child = common::eddy_run(job, 1 + round % 2, args, &env)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting eddy");
        let target = newest(store) + 1 + rng.next(3);
        while child.try_wait().unwrap().is_none() && newest(store) < target {
            thread::sleep(Duration::from_millis(2));
        }
        thread::sleep(Duration::from_millis(rng.next(40)));
        let _ = child.kill();
        let _ = child.wait();
    }
    let from = CheckpointStore::open(&Location::Dir(store.into()))
        .and_then(|s| s.manifest(newest(store)))
        .expect("a checkpoint to restore");
    let last = common::run_job_file(job, 2, args, &env);
    let log = String::from_utf8_lossy(&last.stderr).into_owned();
    assert!(
        log.contains(&format!("eddy: restoring checkpoint {} ", from.id)),
        "the last run restores checkpoint {}: {log}",
        from.id
    );
    LastRun {
        from,
        output: std::fs::read_to_string(output).unwrap(),
        log,
    }
}

fn seed() -> u64 {
    let seed = std::env::var("EDDY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("seed {seed} (EDDY_TEST_SEED={seed} repeats this run)");
    seed
}

/// `env` with `EDDY_OUTPUT` set to `output`.
fn writing<'a>(output: &'a Path, env: &[(&'a str, &'a OsStr)]) -> Vec<(&'a str, &'a OsStr)> {
    [("EDDY_OUTPUT", output.as_os_str())]
        .into_iter()
        .chain(env.iter().copied())
        .collect()
}

/// A job killed three times and restored, each time on another number of workers, writes byte
/// for byte what it writes uninterrupted. `text` is the job, named `example`, run in `dir` with
/// `run`'s arguments and environment, and `EDDY_RUN` set to `plain` for the uninterrupted run
/// and to `restored` for the others (a Kafka job names its consumer group by it).
fn assert_restores_exactly(
    dir: &Path,
    example: &str,
    text: &str,
    run: (&[&str], &[(&str, &OsStr)]),
) -> LastRun {
    let (args, env) = run;
    let plain = dir.join(format!("plain-{example}"));
    std::fs::write(&plain, text).unwrap();
    let expected = dir.join("expected.csv");
    let plain_env: Vec<_> = [("EDDY_RUN", OsStr::new("plain"))]
        .into_iter()
        .chain(env.iter().copied())
        .collect();
    common::run_job_file(&plain, 2, args, &writing(&expected, &plain_env));
    let expected = std::fs::read_to_string(expected).unwrap();
    assert!(
        expected.lines().count() > 100,
        "{example}: a sizeable output"
    );
    let store = dir.join("store");
    let job = with_checkpoints(text, &store, dir, example);
    let output = dir.join("restored.csv");
    let env: Vec<_> = [("EDDY_RUN", OsStr::new("restored"))]
        .into_iter()
        .chain(env.iter().copied())
        .collect();
    let restored = killed_and_restored(&job, (args, &env), &output, &store, seed());
    if restored.output != expected {
        let restored = &restored.output;
        let first = restored
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b);
        panic!(
            "{example}: the restored run's output differs: {} lines where {} are expected; \
             the first that differs is line {first:?}: {:?} where {:?} is expected",
            restored.lines().count(),
            expected.lines().count(),
            first.and_then(|i| restored.lines().nth(i)),
            first.and_then(|i| expected.lines().nth(i)),
        );
    }
    restored
}

/// [`assert_restores_exactly`] for a job reading the JSON-lines file of [`input`] at
/// `EDDY_INPUT`.
fn assert_restores_exactly_over_the_input(example: &str, text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path());
    let env = [("EDDY_INPUT", input.as_os_str())];
    assert_restores_exactly(dir.path(), example, text, (&[], &env));
}

fn example(name: &str) -> String {
    std::fs::read_to_string(common::example(name)).unwrap()
}

#[test]
fn q1_tumbling_windows_restore_exactly() {
    assert_restores_exactly_over_the_input("q1.toml", &example("q1.toml"));
}

#[test]
fn q2_hopping_windows_restore_exactly() {
    assert_restores_exactly_over_the_input("q2.toml", &example("q2.toml"));
}

/// The fraud example with its alerts sorted into a file and its generator's `count` and `rate`
/// lines replaced by `generator`.
fn fraud_job(generator: &str) -> String {
    let stdout = "[[sinks]]\nname = \"alerts\"\nkind = \"stdout\"\n";
    let file = r#"[[sinks]]
name = "alerts"
kind = "file"
path = "${EDDY_OUTPUT}"
format = "csv"
columns = ["alert_id", "rule", "account_id", "time", "evidence", "detail"]
order_by = ["alert_id"]
"#;
    let settings = "count = 200000\nrate = 10000\n";
    let text = example("fraud.toml");
    assert!(
        text.contains(stdout) && text.contains(settings),
        "the example is as this test expects"
    );
    text.replace(stdout, file).replace(settings, generator)
}

/// The fraud example (all five rules, over its generator): the restored per-account states,
/// spike histories included, and the payments still waiting for the frontier give every alert
/// once.
#[test]
fn fraud_rules_restore_exactly() {
    // 600 000 payments: a few hundred incidents, each one alert.
    let text = fraud_job("count = 600000\nrate = 10000\n");
    let dir = tempfile::tempdir().unwrap();
    assert_restores_exactly(dir.path(), "fraud.toml", &text, (&[], &[]));
}

/// SIGTERM takes a final checkpoint before the job exits, though none was due: the next run
/// goes on from it, and the output is an uninterrupted run's.
#[test]
fn a_stop_takes_a_final_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    // Paced: 4 s of generated payments at 30 000 a second.
    let text = fraud_job("count = 120000\nrate = 30000\npaced = true\n");
    let plain = dir.path().join("plain.toml");
    std::fs::write(&plain, &text).unwrap();
    let expected = dir.path().join("expected.csv");
    common::run_job_file(&plain, 2, &[], &writing(&expected, &[]));
    let expected = std::fs::read_to_string(expected).unwrap();
    let alerts = expected.lines().count() - 1;
    assert!(alerts > 5, "some alerts: {alerts}");

    let store = dir.path().join("store");
    let job = with_checkpoints_every(&text, "1h", &store, dir.path(), "stopped.toml");
    let output = dir.path().join("restored.csv");
    let child = common::eddy_run(&job, 2, &[], &writing(&output, &[]))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting eddy");
    // Some way into the input (a delay, not a measurement: the checks below hold whenever the
    // signal comes after the first payments are read and before the last).
    thread::sleep(Duration::from_millis(1_500));
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let stopped = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&stopped.stderr);
    assert_eq!(stopped.status.code(), Some(130), "{said}");
    let store_handle = CheckpointStore::open(&Location::Dir(store.clone())).unwrap();
    let listed = store_handle.checkpoints().unwrap();
    assert_eq!(listed.len(), 1, "only the final checkpoint: {said}");
    let manifest = store_handle.manifest(newest(&store)).unwrap();
    // A generator partition's position is one past the sequence number it reached.
    let reached = manifest.positions["payments"]
        .values()
        .map(|p| p.offset)
        .max()
        .unwrap_or(0);
    assert!(
        reached > 0 && reached < 120_000,
        "the final checkpoint holds the progress made: up to payment {reached}"
    );

    let last = common::run_job_file(&job, 1, &[], &writing(&output, &[]));
    let said = String::from_utf8_lossy(&last.stderr);
    assert!(said.contains("eddy: restoring checkpoint"), "{said}");
    let restored = std::fs::read_to_string(output).unwrap();
    assert!(restored == expected, "the restored run's output differs");
}

/// Session windows written as they fire (no order): the file is cut back to the checkpoint's
/// length on restore, so every row is written once.
#[test]
fn session_windows_written_as_they_fire_restore_exactly() {
    let job = r#"
[job]
name = "sessions"

[[sources]]
name = "transactions"
kind = "file"
paths = ["${EDDY_INPUT}"]
splits = 2
event_time = "ts"
out_of_orderness = "2s"
schema = { account_id = "int", amount_cents = "int", ts = "timestamp" }

[[metrics]]
name = "sessions"
source = "transactions"
group_by = ["account_id"]
window = { kind = "session", gap = "1s" }
aggregates = { count = "count", sum = "sum(amount_cents)" }
sinks = ["csv"]

[[sinks]]
name = "csv"
kind = "file"
path = "${EDDY_OUTPUT}"
format = "csv"
columns = ["account_id", "window_start", "window_end", "count", "sum"]
"#;
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path());
    let plain = dir.path().join("plain.toml");
    std::fs::write(&plain, job).unwrap();
    let expected = dir.path().join("expected.csv");
    let env = [("EDDY_INPUT", input.as_os_str())];
    common::run_job_file(&plain, 2, &[], &writing(&expected, &env));
    let sorted = |text: String| {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    let expected = sorted(std::fs::read_to_string(expected).unwrap());
    assert!(expected.len() > 1_000);
    let store = dir.path().join("store");
    let job = with_checkpoints(job, &store, dir.path(), "sessions.toml");
    let output = dir.path().join("restored.csv");
    let restored = sorted(killed_and_restored(&job, (&[], &env), &output, &store, seed()).output);
    assert_eq!(restored.len(), expected.len(), "every row once");
    assert!(restored == expected, "the restored run's rows differ");
}

/// Commands of 2 000 users over `n / 200` s of event time, keyed by user: registrations (some
/// invalid), purchases and preference changes, repeated command ids, a second registration, and
/// purchases of users not registered yet. Their times are shuffled within half a second, inside
/// the source's out-of-orderness, and no two are equal.
fn commands(n: u64) -> Vec<common::kafka::Input> {
    use common::kafka::{Input, Payload};
    use serde_json::json;
    const T0: u64 = 1_700_000_000_000;
    const BLOCK: u64 = 100;
    let mut rng = Rng(0x5eed);
    let mut registered = vec![false; 2_001];
    let mut last_id = vec![String::new(); 2_001];
    let mut slots: Vec<u64> = Vec::new();
    let mut inputs = Vec::new();
    for i in 0..n {
        if i % BLOCK == 0 {
            slots = (i..i + BLOCK).collect();
            for j in (1..slots.len()).rev() {
                slots.swap(j, rng.next(j as u64 + 1) as usize);
            }
        }
        let user = 1 + rng.next(2_000) as usize;
        let ts = T0 + 5 * slots[(i % BLOCK) as usize];
        let id = format!("c{i}");
        let phone = if rng.next(10) == 0 {
            "12345"
        } else {
            "+4915112345678"
        };
        let command = match (registered[user], rng.next(20)) {
            (false, 0..15) => {
                registered[user] = phone != "12345";
                json!({"command_id": id, "user_id": user, "type": "RegisterUser", "ts": ts,
                       "name": format!("User {user}"), "phone": phone,
                       "email": format!("u{user}@example.com"), "channel": "sms"})
            }
            (true, 0) => json!({"command_id": last_id[user], "user_id": user,
                                "type": "UpdatePreferences", "ts": ts, "channel": "email"}),
            (true, 1) => json!({"command_id": id, "user_id": user, "type": "RegisterUser",
                                "ts": ts, "name": "Again", "phone": phone,
                                "email": "again@example.com", "channel": "sms"}),
            (true, 2..5) => json!({"command_id": id, "user_id": user,
                                   "type": "UpdatePreferences", "ts": ts,
                                   "channel": if rng.next(2) == 0 { "sms" } else { "email" }}),
            _ => json!({"command_id": id, "user_id": user, "type": "InitiatePurchase",
                        "ts": ts, "amount_cents": 1 + rng.next(10_000), "item": "book"}),
        };
        last_id[user] = command["command_id"].as_str().unwrap().to_string();
        inputs.push(Input {
            key: Some(user.to_string()),
            partition: None,
            timestamp: None,
            payload: Payload::Raw(command.to_string()),
        });
    }
    inputs
}

/// The command processor reading Kafka (the mock cluster, 4 partitions), killed and restored:
/// each run resumes at the checkpoint's offsets with the users and recent command ids it had, so
/// the registered users' purchases are accepted, a repeated id still causes nothing, and the
/// events are an uninterrupted run's. The consumer group's offsets advance meanwhile, for lag
/// monitoring.
#[test]
fn a_command_processor_over_kafka_restores_exactly() {
    use common::kafka::{Cluster, GroupOffsets, Tier};
    let cluster = Cluster::start(Tier::Mock, "restore", &[("commands", 4)])
        .expect("the mock cluster is never skipped");
    let inputs = commands(60_000);
    cluster.produce("commands", &inputs, None, &Default::default());
    let job = r#"
[job]
name = "commands"
dead_letter = "dlq"

[[sources]]
name = "commands"
kind = "kafka"
brokers = "${BROKERS}"
topics = ["commands"]
group = "commands-${EDDY_RUN}"
event_time = "ts"
out_of_orderness = "1s"
schema = { command_id = "string", user_id = "int", type = "string", ts = "timestamp", name = "string?", phone = "string?", email = "string?", channel = "string?", amount_cents = "int?", item = "string?" }

[[commands]]
name = "commands"
source = "commands"
dedup_within = "1h"
sinks = ["events"]

[[sinks]]
name = "events"
kind = "file"
path = "${EDDY_OUTPUT}"
order_by = ["event_id"]

[[sinks]]
name = "dlq"
kind = "discard"
"#;
    let dir = tempfile::tempdir().unwrap();
    let offsets = GroupOffsets::new(cluster.brokers(), "commands-restored", "commands", 4);
    let env = [("BROKERS", OsStr::new(cluster.brokers()))];
    let restored =
        assert_restores_exactly(dir.path(), "commands.toml", job, (&["--until-end"], &env));
    // Only what follows the checkpoint's offsets is read again.
    let checkpointed: u64 = restored.from.positions["commands"]
        .values()
        .map(|p| p.offset)
        .sum();
    assert!(checkpointed > 0, "the checkpoint holds offsets");
    assert_eq!(
        common::events_done(&restored.log),
        inputs.len() as u64 - checkpointed,
        "the restored run reads the messages after the checkpoint's offsets"
    );
    assert_eq!(
        offsets.get().iter().sum::<i64>(),
        inputs.len() as i64,
        "the consumer group has committed every offset"
    );
}
