//! Restoring from checkpoints: a job killed with SIGKILL at random points, restored each time
//! (on a different number of workers each time), and run to its end writes what an
//! uninterrupted run writes.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use eddy::state::{CheckpointStore, Location, Manifest, Skipped};

/// The input: 300 s of event time at 1000 transactions a second over 500 accounts, a little out
/// of order, with some records late.
fn input(dir: &Path) -> PathBuf {
    let path = dir.join("transactions.jsonl");
    let events = common::transactions(300_000, 500, 1_500, 1_000, 20_000);
    std::fs::write(&path, common::json_lines(&events)).unwrap();
    path
}

/// Where a test's checkpoints go: a directory, or a bucket of the test's S3 server, with the
/// `AWS_*` settings a client of that needs.
struct Store {
    location: Location,
    env: Vec<(String, String)>,
    opened: CheckpointStore,
}

impl Store {
    fn dir(path: PathBuf) -> Store {
        Store::at(Location::Dir(path), Vec::new())
    }

    fn at(location: Location, env: Vec<(String, String)>) -> Store {
        let opened = CheckpointStore::open_with_env(&location, env.clone()).unwrap();
        Store {
            location,
            env,
            opened,
        }
    }

    /// The newest checkpoint's id (0 for none).
    fn newest(&self) -> u64 {
        self.opened.checkpoints().map_or(0, |listed| {
            listed.iter().map(|(id, _)| *id).max().unwrap_or(0)
        })
    }

    /// The directory of a directory store.
    fn path(&self) -> &Path {
        match &self.location {
            Location::Dir(path) => path,
            Location::S3 { .. } => panic!("an S3 store has no directory"),
        }
    }
}

/// `job` with a `[checkpoints]` section taking a checkpoint as often as it can, into `store`.
fn with_checkpoints(job: &str, store: &Store, dir: &Path, name: &str) -> PathBuf {
    with_checkpoints_every(job, "20ms", store, dir, name)
}

/// `job` with a `[checkpoints]` section taking a checkpoint every `interval` into `store`,
/// keeping three.
fn with_checkpoints_every(
    job: &str,
    interval: &str,
    store: &Store,
    dir: &Path,
    name: &str,
) -> PathBuf {
    let text = format!(
        "{job}\n[checkpoints]\nstore = \"{}\"\ninterval = \"{interval}\"\nkeep = 3\n",
        store.location
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
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
    /// The checkpoint it restored: the newest complete one that passes its checks.
    from: Manifest,
    /// The newer ones that do not, and why.
    skipped: Vec<Skipped>,
    /// Its output.
    output: String,
    /// Its standard error.
    log: String,
}

/// What a test does to the store (and beside it) before the last run.
type Damage<'a> = &'a dyn Fn(&Store);

/// Does nothing to a store.
fn intact(_: &Store) {}

/// A topic fed at a steady rate while a job is killed and restored (by a thread producing into
/// it): the killed runs follow the topic, and the last run drains it once the feed is done.
struct Feed {
    /// Everything has been produced.
    done: Arc<AtomicBool>,
    /// The kills are over: the rest goes at once.
    hurry: Arc<AtomicBool>,
    feeder: Mutex<Option<thread::JoinHandle<()>>>,
}

/// How often a [`Feed`] produces, and what share of its input each time.
const FEED_EVERY: Duration = Duration::from_millis(250);
const FEED_SHARE: usize = 100;

impl Feed {
    /// Feeds `inputs` into `topic` of `cluster`: a hundredth every quarter of a second, until
    /// [`Feed::join`] asks for the rest.
    fn start(
        cluster: &common::kafka::Cluster,
        topic: &str,
        inputs: Vec<common::kafka::Input>,
    ) -> Feed {
        let done = Arc::new(AtomicBool::new(false));
        let hurry = Arc::new(AtomicBool::new(false));
        let endpoint = (**cluster).clone();
        let topic = topic.to_string();
        let (finished, hurried) = (Arc::clone(&done), Arc::clone(&hurry));
        let feeder = thread::spawn(move || {
            let chunk = inputs.len().div_ceil(FEED_SHARE).max(1);
            let mut rest = &inputs[..];
            while !rest.is_empty() {
                let now = if hurried.load(Ordering::SeqCst) {
                    rest.len()
                } else {
                    chunk.min(rest.len())
                };
                endpoint.produce(&topic, &rest[..now], None, &Default::default());
                rest = &rest[now..];
                if !hurried.load(Ordering::SeqCst) {
                    thread::sleep(FEED_EVERY);
                }
            }
            finished.store(true, Ordering::SeqCst);
        });
        Feed {
            done,
            hurry,
            feeder: Mutex::new(Some(feeder)),
        }
    }

    fn done(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }

    /// Produces the rest at once, and waits until it is in.
    fn join(&self) {
        self.hurry.store(true, Ordering::SeqCst);
        if let Some(feeder) = self.feeder.lock().unwrap().take() {
            feeder.join().expect("the feed ends");
        }
    }
}

/// Runs `job` (with `args` and `env`, writing `output`, checkpointing into `store`) five
/// times, each killed with SIGKILL once the store holds a checkpoint newer than before and a
/// random moment later, alternating between one worker and two; then does `damage` to the
/// store, and runs the job to its end on two workers. With `feed`, the killed runs follow the
/// topic (without `--until-end`; one whose feed has ended is killed at once), and the last
/// starts once the feed is done.
fn killed_and_restored(
    job: &Path,
    (args, env): (&[&str], &[(&str, &OsStr)]),
    output: &Path,
    store: &Store,
    (seed, damage, feed): (u64, Damage, Option<&Feed>),
) -> LastRun {
    let mut rng = Rng(seed | 1);
    let mut env = writing(output, env);
    env.extend(store.env.iter().map(|(k, v)| (k.as_str(), OsStr::new(v))));
    let killed_args: Vec<&str> = match feed {
        Some(_) => args
            .iter()
            .copied()
            .filter(|a| *a != "--until-end")
            .collect(),
        None => args.to_vec(),
    };
    let fed = || feed.is_some_and(Feed::done);
    for round in 0..5 {
        let mut child = common::eddy_run(job, 1 + round % 2, &killed_args, &env)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting eddy");
        let target = store.newest() + 1 + rng.next(3);
        while child.try_wait().unwrap().is_none() && store.newest() < target && !fed() {
            thread::sleep(Duration::from_millis(5));
        }
        thread::sleep(Duration::from_millis(rng.next(40)));
        let _ = child.kill();
        let _ = child.wait();
    }
    if let Some(feed) = feed {
        feed.join();
    }
    damage(store);
    let restore = store.opened.restore().unwrap();
    let from = restore
        .restored
        .expect("a checkpoint to restore")
        .manifest()
        .clone();
    let last = common::run_job_file(job, 2, args, &env);
    let log = String::from_utf8_lossy(&last.stderr).into_owned();
    assert!(
        log.contains(&format!("eddy: restoring checkpoint {} ", from.id)),
        "the last run restores checkpoint {}: {log}",
        from.id
    );
    LastRun {
        from,
        skipped: restore.skipped,
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

/// A job killed five times and restored, each time on another number of workers, writes byte
/// for byte what it writes uninterrupted. `text` is the job, named `example`, run in `dir` with
/// `run`'s arguments and environment, and `EDDY_RUN` set to `plain` for the uninterrupted run
/// and to `restored` for the others (a Kafka job names its consumer group by it); the
/// checkpoints go to `store` (by default a directory in `dir`), which gets `damage` before the
/// last run; with `feed`, the input comes in meanwhile (see [`killed_and_restored`]). The
/// uninterrupted run comes last, with the whole input.
fn assert_restores_exactly(
    dir: &Path,
    example: &str,
    text: &str,
    run: (&[&str], &[(&str, &OsStr)]),
    (store, damage, feed): (Option<Store>, Damage, Option<&Feed>),
) -> LastRun {
    let (args, env) = run;
    let store = store.unwrap_or_else(|| Store::dir(dir.join("store")));
    let job = with_checkpoints(text, &store, dir, example);
    let output = dir.join("restored.csv");
    let restored_env: Vec<_> = [("EDDY_RUN", OsStr::new("restored"))]
        .into_iter()
        .chain(env.iter().copied())
        .collect();
    let restored = killed_and_restored(
        &job,
        (args, &restored_env),
        &output,
        &store,
        (seed(), damage, feed),
    );
    let plain = dir.join(format!("plain-{example}"));
    // Uninterrupted, without checkpoints: with the delivery a job without them has.
    let uninterrupted: String = text
        .lines()
        .filter(|line| !line.starts_with("delivery = "))
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(&plain, uninterrupted).unwrap();
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
fn assert_restores_exactly_over_the_input(
    example: &str,
    text: &str,
    store: (Option<Store>, Damage),
) -> LastRun {
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path());
    let env = [("EDDY_INPUT", input.as_os_str())];
    assert_restores_exactly(
        dir.path(),
        example,
        text,
        (&[], &env),
        (store.0, store.1, None),
    )
}

fn example(name: &str) -> String {
    std::fs::read_to_string(common::example(name)).unwrap()
}

#[test]
fn q1_tumbling_windows_restore_exactly() {
    assert_restores_exactly_over_the_input("q1.toml", &example("q1.toml"), (None, &intact));
}

#[test]
fn q2_hopping_windows_restore_exactly() {
    assert_restores_exactly_over_the_input("q2.toml", &example("q2.toml"), (None, &intact));
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
    assert_restores_exactly(
        dir.path(),
        "fraud.toml",
        &text,
        (&[], &[]),
        (None, &intact, None),
    );
}

/// Starts `eddy`, sends it SIGTERM after `delay`, and gives its standard error once it has
/// exited with the status of a stop after a signal (130).
fn stopped_after(mut eddy: std::process::Command, delay: Duration) -> String {
    let child = eddy
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting eddy");
    thread::sleep(delay);
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    let stopped = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&stopped.stderr).into_owned();
    assert_eq!(stopped.status.code(), Some(130), "{said}");
    said
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

    let store = Store::dir(dir.path().join("store"));
    let job = with_checkpoints_every(&text, "1h", &store, dir.path(), "stopped.toml");
    let output = dir.path().join("restored.csv");
    // Some way into the input (a delay, not a measurement: the checks below hold whenever the
    // signal comes after the first payments are read and before the last).
    let said = stopped_after(
        common::eddy_run(&job, 2, &[], &writing(&output, &[])),
        Duration::from_millis(1_500),
    );
    let listed = store.opened.checkpoints().unwrap();
    assert_eq!(listed.len(), 1, "only the final checkpoint: {said}");
    let manifest = store.opened.manifest(store.newest()).unwrap();
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
    let store = Store::dir(dir.path().join("store"));
    let job = with_checkpoints(job, &store, dir.path(), "sessions.toml");
    let output = dir.path().join("restored.csv");
    let run = (&[][..], &env[..]);
    let restored =
        sorted(killed_and_restored(&job, run, &output, &store, (seed(), &intact, None)).output);
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

/// A command processor over Kafka (`BROKERS`, group `commands-EDDY_RUN`), its events sorted into
/// a file.
const COMMANDS_JOB: &str = r#"
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
    let job = COMMANDS_JOB;
    let dir = tempfile::tempdir().unwrap();
    let offsets = GroupOffsets::new(cluster.brokers(), "commands-restored", "commands", 4);
    let env = [("BROKERS", OsStr::new(cluster.brokers()))];
    let restored = assert_restores_exactly(
        dir.path(),
        "commands.toml",
        job,
        (&["--until-end"], &env),
        (None, &intact, None),
    );
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

/// A Kafka sink `NAME-topic` writing topic `${TOPICS}NAME-${EDDY_RUN}` (keyed by `key`).
fn kafka_sink(name: &str, key: Option<&str>) -> String {
    let key = key.map(|k| format!("key = \"{k}\"\n")).unwrap_or_default();
    format!(
        "\n[[sinks]]\nname = \"{name}-topic\"\nkind = \"kafka\"\nbrokers = \"${{BROKERS}}\"\n\
         topic = \"${{TOPICS}}{name}-${{EDDY_RUN}}\"\n{key}"
    )
}

/// The topics of a job writing `outputs` (name, partitions) to Kafka: `NAME-plain` for the
/// uninterrupted run, `NAME-restored` for the restored ones.
fn run_topics(outputs: &[(&str, i32)]) -> Vec<(String, i32)> {
    outputs
        .iter()
        .flat_map(|&(name, partitions)| {
            ["plain", "restored"].map(|run| (format!("{name}-{run}"), partitions))
        })
        .collect()
}

/// What `got` holds more and less than `expected` (as multisets of key and value, which is all a
/// consumer of results looks at): the counts, and an example of each.
fn difference(got: &[common::kafka::Msg], expected: &[common::kafka::Msg]) -> String {
    let mut counts = std::collections::BTreeMap::<_, i64>::new();
    for m in got {
        *counts
            .entry((m.key.clone(), m.payload.clone()))
            .or_default() += 1;
    }
    for m in expected {
        *counts
            .entry((m.key.clone(), m.payload.clone()))
            .or_default() -= 1;
    }
    let text = |(key, value): &(Option<Vec<u8>>, Vec<u8>)| {
        format!(
            "{:?} {}",
            key.as_deref().map(String::from_utf8_lossy),
            String::from_utf8_lossy(value)
        )
    };
    let extra: Vec<_> = counts.iter().filter(|(_, n)| **n > 0).collect();
    let missing: Vec<_> = counts.iter().filter(|(_, n)| **n < 0).collect();
    if extra.is_empty() && missing.is_empty() {
        return String::new();
    }
    format!(
        "{} messages too many (e.g. {:?}), {} missing (e.g. {:?})",
        extra.iter().map(|(_, n)| **n).sum::<i64>(),
        extra.first().map(|(m, _)| text(m)),
        -missing.iter().map(|(_, n)| **n).sum::<i64>(),
        missing.first().map(|(m, _)| text(m)),
    )
}

/// The payload of another producer's messages in [`foreign_messages`].
const FOREIGN: &[u8] = b"{\"foreign\"";

/// Messages another producer writes into every partition of `topic`: more than a restored
/// sink reads back at first, so that it has to look further for its own last message.
fn foreign_messages(cluster: &common::kafka::Cluster, topic: &str, partitions: i32) {
    use common::kafka::{Input, Payload};
    let inputs: Vec<Input> = (0..partitions * 300)
        .map(|i| Input {
            key: None,
            partition: Some(i % partitions),
            timestamp: None,
            payload: Payload::Raw(format!("{{\"foreign\": {i}}}")),
        })
        .collect();
    cluster.produce(topic, &inputs, None, &Default::default());
}

/// [`assert_restores_exactly`] for a job that also writes `outputs` (name, partitions) through
/// [`kafka_sink`]s to `cluster` (whose topics [`run_topics`] made): then each restored topic
/// holds exactly the uninterrupted run's messages, each once, with increasing places in every
/// partition, as our client and the independent one (a plain consumer each) read them, beside
/// what another producer wrote (payloads starting with [`FOREIGN`]), `foreign` of them.
fn assert_kafka_outputs_once(
    cluster: &common::kafka::Cluster,
    (dir, example, text): (&Path, &str, &str),
    (args, env): (&[&str], &[(&str, &OsStr)]),
    outputs: &[(&str, i32)],
    (damage, foreign, feed): (Damage, usize, Option<&Feed>),
) {
    let topics = cluster.topic("");
    let env: Vec<_> = [
        ("BROKERS", OsStr::new(cluster.brokers())),
        ("TOPICS", OsStr::new(&topics)),
    ]
    .into_iter()
    .chain(env.iter().copied())
    .collect();
    assert_restores_exactly(dir, example, text, (args, &env), (None, damage, feed));
    let mut others_seen = 0;
    for &(name, _) in outputs {
        let plain =
            common::kafka::read_topic(cluster.brokers(), &cluster.topic(&format!("{name}-plain")));
        let topic = cluster.topic(&format!("{name}-restored"));
        let restored = common::kafka::read_topic(cluster.brokers(), &topic);
        let (others, own): (Vec<_>, Vec<_>) = restored
            .iter()
            .cloned()
            .partition(|m| m.payload.starts_with(FOREIGN));
        others_seen += others.len();
        assert!(
            !plain.is_empty(),
            "{name}: the uninterrupted run wrote some"
        );
        assert_eq!(
            difference(&own, &plain),
            "",
            "{name}: the restored runs write every message once"
        );
        let mut last = std::collections::BTreeMap::new();
        for m in &own {
            let jobs = m.headers.iter().filter(|(k, _)| k == "eddy.job").count();
            assert_eq!(jobs, 1, "{name}: one `eddy.job` header");
            let place: (u64, u64) = (
                m.header("eddy.time").unwrap().parse().unwrap(),
                m.header("eddy.seq").unwrap().parse().unwrap(),
            );
            if let Some(before) = last.insert(m.partition, place) {
                assert!(
                    before < place,
                    "{name}/{}: {place:?} after {before:?}",
                    m.partition
                );
            }
        }
        match common::python::available() {
            Ok(()) => {
                let theirs = common::python::read_topic(cluster.brokers(), &topic);
                let fields = |m: &common::kafka::Msg| {
                    (
                        m.partition,
                        m.offset,
                        m.key.clone(),
                        m.payload.clone(),
                        m.headers.clone(),
                    )
                };
                assert!(
                    theirs.iter().map(fields).eq(restored.iter().map(fields)),
                    "{name}: the independent client reads the same messages"
                );
            }
            Err(why) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "{example}: {why}; CI=true, where the independent client must run"
                );
                eprintln!("skipped: {example}: reading {name} with the independent client: {why}");
            }
        }
    }
    assert_eq!(others_seen, foreign, "the other producer's messages");
}

/// [`COMMANDS_JOB`] on topic `${TOPICS}commands`, with its outputs also written to Kafka: the
/// command processor's events, a route of the purchase commands, a count of the commands of
/// each type per second, and the dead letters.
fn commands_to_kafka() -> String {
    let job = COMMANDS_JOB
        .replace(
            r#"topics = ["commands"]"#,
            r#"topics = ["${TOPICS}commands"]"#,
        )
        .replace(
            r#"sinks = ["events"]"#,
            r#"sinks = ["events", "events-topic"]"#,
        )
        .replace(r#"dead_letter = "dlq""#, r#"dead_letter = "dlq-topic""#)
        .replace("[[sinks]]\nname = \"dlq\"\nkind = \"discard\"\n", "");
    format!(
        r#"{job}
[[routes]]
name = "purchases"
source = "commands"
when = 'type == "InitiatePurchase"'
sinks = ["purchases-topic"]

[[metrics]]
name = "per-type"
source = "commands"
group_by = ["type"]
window = {{ kind = "tumbling", size = "1s" }}
aggregates = {{ n = "count" }}
sinks = ["counts-topic"]
{}{}{}{}"#,
        kafka_sink("events", None),
        kafka_sink("purchases", Some("user_id")),
        kafka_sink("counts", Some("type")),
        kafka_sink("dlq", None),
    )
}

/// The topics [`commands_to_kafka`] writes, and their partitions.
const COMMAND_OUTPUTS: [(&str, i32); 4] =
    [("events", 3), ("purchases", 4), ("counts", 2), ("dlq", 1)];

/// `job` with every Kafka sink of [`kafka_sink`]'s writing with `delivery`.
fn with_delivery(job: &str, delivery: &str) -> String {
    let sink = "-topic\"\nkind = \"kafka\"\n";
    assert!(job.contains(sink), "the job has Kafka sinks");
    job.replace(sink, &format!("{sink}delivery = \"{delivery}\"\n"))
}

/// The command processor's events, a route, a windowed count and the dead letters, all written
/// to Kafka by a job reading Kafka (on `tier`) with `delivery`, killed five times while its
/// topic is fed at a steady rate, and restored: exactly once. Before the last run another
/// producer writes into every partition of the events topic, so the restored sink must look
/// back past those for its own last message.
fn commands_write_each_result_once(tier: common::kafka::Tier, delivery: &str) {
    use common::kafka::{Cluster, Payload};
    let mut topics = run_topics(&COMMAND_OUTPUTS);
    topics.push(("commands".to_string(), 4));
    let topics: Vec<(&str, i32)> = topics.iter().map(|(t, p)| (t.as_str(), *p)).collect();
    let Some(cluster) = Cluster::start(tier, "exactly-once", &topics) else {
        return;
    };
    let mut inputs = commands(tier.count(12_000));
    for i in (0..inputs.len()).step_by(500) {
        inputs[i].payload = Payload::Raw(format!("{{\"command_id\": \"bad{i}\""));
    }
    let feed = Feed::start(&cluster, &cluster.topic("commands"), inputs);
    let dir = tempfile::tempdir().unwrap();
    let events = cluster.topic("events-restored");
    let foreign = |_: &Store| foreign_messages(&cluster, &events, 3);
    assert_kafka_outputs_once(
        &cluster,
        (
            dir.path(),
            "commands.toml",
            &with_delivery(&commands_to_kafka(), delivery),
        ),
        (&["--until-end"], &[]),
        &COMMAND_OUTPUTS,
        (&foreign, 900, Some(&feed)),
    );
}

#[test]
fn kafka_sinks_write_each_result_once_across_kills() {
    commands_write_each_result_once(common::kafka::Tier::Mock, "exactly-once");
}

#[test]
fn tansu_kafka_sinks_write_each_result_once_across_kills() {
    commands_write_each_result_once(common::kafka::Tier::Tansu, "exactly-once");
}

/// Transactional delivery on the mock cluster, which commits transactions (but writes no
/// commit or abort markers, so its `read_committed` consumers see every message): each result
/// once, through the fencing and the commits of five killed runs.
#[test]
fn transactional_kafka_sinks_write_each_result_once_across_kills() {
    commands_write_each_result_once(common::kafka::Tier::Mock, "transactional");
}

/// tansu 0.6 has no transactions (no EndTxn): a transactional sink there stops the job with an
/// error that says so, before any checkpoint could follow output it could not commit.
#[test]
fn tansu_stops_a_transactional_sink_with_a_clear_error() {
    use common::kafka::{Cluster, Tier};
    let topics = [("events-restored", 3), ("commands", 4)];
    let Some(cluster) = Cluster::start(Tier::Tansu, "transactional", &topics) else {
        return;
    };
    cluster.produce(
        &cluster.topic("commands"),
        &commands(2_000),
        None,
        &Default::default(),
    );
    let dir = tempfile::tempdir().unwrap();
    let job = COMMANDS_JOB
        .replace(
            r#"topics = ["commands"]"#,
            r#"topics = ["${TOPICS}commands"]"#,
        )
        .replace(r#"sinks = ["events"]"#, r#"sinks = ["events-topic"]"#);
    let text = with_delivery(
        &format!("{job}{}", kafka_sink("events", None)),
        "transactional",
    );
    let store = Store::dir(dir.path().join("store"));
    let job = with_checkpoints(&text, &store, dir.path(), "commands.toml");
    let topics = cluster.topic("");
    let output = dir.path().join("unused.jsonl");
    let env = writing(
        &output,
        &[
            ("EDDY_RUN", OsStr::new("restored")),
            ("BROKERS", OsStr::new(cluster.brokers())),
            ("TOPICS", OsStr::new(&topics)),
        ],
    );
    let run = common::eddy_run(&job, 1, &["--until-end"], &env)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "the job fails: {said}");
    assert!(
        said.contains("transaction"),
        "the error names the transactions: {said}"
    );
    assert_eq!(store.newest(), 0, "no checkpoint completes: {said}");
}

/// Q1 (tumbling windows over a file, some records late) writing its rows and its late records
/// to Kafka, killed five times and restored: each row and each late record once.
#[test]
fn window_rows_and_late_records_are_written_to_kafka_once() {
    use common::kafka::{Cluster, Tier};
    let outputs = [("rows", 4), ("late", 2)];
    let topics = run_topics(&outputs);
    let topics: Vec<(&str, i32)> = topics.iter().map(|(t, p)| (t.as_str(), *p)).collect();
    let cluster = Cluster::start(Tier::Mock, "exactly-once-q1", &topics)
        .expect("the mock cluster is never skipped");
    let text = example("q1.toml").replace(
        r#"sinks = ["csv"]"#,
        r#"sinks = ["csv", "rows-topic"]
late_sink = "late-topic""#,
    );
    let text = format!(
        "{text}{}{}",
        kafka_sink("rows", Some("account_id")),
        kafka_sink("late", None)
    );
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path());
    let env = [("EDDY_INPUT", input.as_os_str())];
    assert_kafka_outputs_once(
        &cluster,
        (dir.path(), "q1.toml", &text),
        (&[], &env),
        &outputs,
        (&intact, 0, None),
    );
}

/// The fraud example's alerts written to Kafka by a job killed five times and restored: each
/// alert once.
#[test]
fn fraud_alerts_are_written_to_kafka_once() {
    use common::kafka::{Cluster, Tier};
    let outputs = [("alerts", 3)];
    let topics = run_topics(&outputs);
    let topics: Vec<(&str, i32)> = topics.iter().map(|(t, p)| (t.as_str(), *p)).collect();
    let cluster = Cluster::start(Tier::Mock, "exactly-once-fraud", &topics)
        .expect("the mock cluster is never skipped");
    let text = fraud_job("count = 300000\nrate = 10000\n").replace(
        r#"sinks = ["alerts"]"#,
        r#"sinks = ["alerts", "alerts-topic"]"#,
    );
    let text = format!("{text}{}", kafka_sink("alerts", Some("account_id")));
    let dir = tempfile::tempdir().unwrap();
    assert_kafka_outputs_once(
        &cluster,
        (dir.path(), "fraud.toml", &text),
        (&[], &[]),
        &outputs,
        (&intact, 0, None),
    );
}

/// Cuts the newest complete checkpoint's largest file to half its length, and flips a byte in
/// the middle of the largest file of the one before.
fn corrupt_the_newest_two(store: &Store) {
    let mut complete: Vec<Manifest> = store
        .opened
        .checkpoints()
        .unwrap()
        .into_iter()
        .filter_map(|(_, manifest)| manifest.ok())
        .collect();
    complete.sort_by_key(|m| std::cmp::Reverse(m.id));
    assert!(complete.len() >= 3, "three checkpoints kept");
    let largest = |manifest: &Manifest| {
        let run = manifest
            .runs()
            .filter(|run| run.checkpoint == manifest.id)
            .max_by_key(|run| run.bytes)
            .expect("a checkpoint with state");
        store.path().join(&run.path)
    };
    let newest = largest(&complete[0]);
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
    let before = largest(&complete[1]);
    let mut bytes = std::fs::read(&before).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&before, bytes).unwrap();
}

/// A truncated checkpoint and a corrupt one are passed over, each with its reason in the log,
/// and the one before them restores the job exactly.
#[test]
fn corrupt_checkpoints_are_passed_over_for_an_older_one() {
    let restored = assert_restores_exactly_over_the_input(
        "q1.toml",
        &example("q1.toml"),
        (None, &corrupt_the_newest_two),
    );
    assert_eq!(restored.skipped.len(), 2, "the two newest are skipped");
    for skipped in &restored.skipped {
        let said = format!("checkpoint {} in ", skipped.id);
        let line = restored
            .log
            .lines()
            .find(|l| l.contains(&said) && l.contains("is not used"))
            .unwrap_or_else(|| panic!("the log says why {said}is not used: {}", restored.log));
        assert!(line.contains(&skipped.reason), "{line}");
    }
    // The newest checkpoint's chain may also hold the runs of the one before: either damage
    // fails it.
    let [newest, before] = &restored.skipped[..] else {
        unreachable!()
    };
    assert!(
        ["truncated", "checksum"]
            .iter()
            .any(|why| newest.reason.contains(why)),
        "{newest:?}"
    );
    assert!(before.reason.contains("checksum"), "{before:?}");
}

/// The same restore with the checkpoints in a bucket of a local S3 server.
#[test]
fn a_job_restores_exactly_from_an_s3_store() {
    let Some(moto) = common::moto::moto("a_job_restores_exactly_from_an_s3_store") else {
        return;
    };
    moto.create_bucket("eddy");
    let store = Store::at(Location::parse("s3://eddy/jobs/q1").unwrap(), moto.env());
    let restored = assert_restores_exactly_over_the_input(
        "q1.toml",
        &example("q1.toml"),
        (Some(store), &intact),
    );
    assert!(
        restored.from.id > 1,
        "restored from a checkpoint in the bucket"
    );
    assert!(
        !restored.log.contains("testing"),
        "credentials are never logged"
    );
}

/// Runs `job` (with `args` and `env`) until the store holds a checkpoint newer than `before`,
/// and kills it.
fn killed_after_a_checkpoint(
    job: &Path,
    (args, env): (&[&str], &[(&str, &OsStr)]),
    store: &Store,
    before: u64,
) {
    let mut child = common::eddy_run(job, 2, args, env)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting eddy");
    while child.try_wait().unwrap().is_none() && store.newest() <= before {
        thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(store.newest() > before, "a checkpoint was taken");
}

/// A job file changed between runs: a change its state does not depend on (`having`) keeps the
/// state, and the output is an uninterrupted run's; a changed `group_by` is refused like a bad
/// job file, naming the section and the setting, until `--reset-state` starts those sections
/// empty.
#[test]
fn a_changed_job_keeps_the_state_it_can_and_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let input = input(dir.path());
    let q1 = example("q1.toml");
    let store = Store::dir(dir.path().join("store"));
    let expected = dir.path().join("expected.csv");
    let output = dir.path().join("restored.csv");
    let env = [("EDDY_INPUT", input.as_os_str())];
    let plain = dir.path().join("plain.toml");
    std::fs::write(&plain, &q1).unwrap();
    common::run_job_file(&plain, 2, &[], &writing(&expected, &env));

    let job = with_checkpoints(&q1, &store, dir.path(), "q1.toml");
    killed_after_a_checkpoint(&job, (&[], &writing(&output, &env)), &store, 0);
    let having = q1.replace(
        "sinks = [\"csv\"]",
        "having = \"count > 0\"\nsinks = [\"csv\"]",
    );
    let job = with_checkpoints(&having, &store, dir.path(), "having.toml");
    let kept = common::run_job_file(&job, 2, &[], &writing(&output, &env));
    assert!(String::from_utf8_lossy(&kept.stderr).contains("eddy: restoring checkpoint"));
    assert!(
        std::fs::read(&output).unwrap() == std::fs::read(&expected).unwrap(),
        "the state kept gives an uninterrupted run's output"
    );

    let regrouped = q1
        .replace(
            "group_by = [\"account_id\"]",
            "group_by = [\"amount_cents\"]",
        )
        .replace("columns = [\"account_id\"", "columns = [\"amount_cents\"")
        .replace("order_by = [\"account_id\"", "order_by = [\"amount_cents\"");
    let job = with_checkpoints(&q1, &store, dir.path(), "q1.toml");
    // Afresh (the last run ended past its last checkpoint): a checkpoint of this job soon.
    let afresh: &[&str] = &["--from", "earliest"];
    let before = store.newest();
    killed_after_a_checkpoint(&job, (afresh, &writing(&output, &env)), &store, before);
    let job = with_checkpoints(&regrouped, &store, dir.path(), "regrouped.toml");
    let refused = common::eddy_run(&job, 2, &[], &writing(&output, &env))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{said}");
    assert!(
        said.contains(
            "metrics.q1: its state was checkpointed with group_by = [\"account_id\"], and the \
             job now has group_by = [\"amount_cents\"], which that state cannot follow; run with \
             --reset-state q1 to start its state empty"
        ),
        "{said}"
    );
    assert!(
        said.contains("sinks.csv: its state was checkpointed with columns"),
        "{said}"
    );

    let args = ["--reset-state", "q1", "--reset-state", "csv"];
    let reset = common::run_job_file(&job, 2, &args, &writing(&output, &env));
    let said = String::from_utf8_lossy(&reset.stderr);
    assert!(said.contains("the state of `q1` starts empty"), "{said}");
    assert!(said.contains("the state of `csv` starts empty"), "{said}");
    let written = std::fs::read_to_string(&output).unwrap();
    assert!(
        written.starts_with("amount_cents,window_start"),
        "{written:.200}"
    );

    let unknown = common::eddy_run(&job, 2, &["--reset-state", "nope"], &writing(&output, &env))
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    let said = String::from_utf8_lossy(&unknown.stderr);
    assert!(said.contains("no stateful section named `nope`"), "{said}");
}

/// SIGTERM to a job whose Kafka source has read all there is: the checkpoint in flight cannot
/// complete until input comes, so the source stops at once instead of waiting for a final
/// checkpoint, and the job exits well within its stop timeout.
#[test]
fn a_stop_of_an_idle_kafka_job_does_not_wait_for_a_checkpoint() {
    use common::kafka::{Cluster, Tier};
    let cluster = Cluster::start(Tier::Mock, "idle", &[("commands", 2)])
        .expect("the mock cluster is never skipped");
    cluster.produce("commands", &commands(2_000), None, &Default::default());
    let dir = tempfile::tempdir().unwrap();
    let store = Store::dir(dir.path().join("store"));
    let job = with_checkpoints(COMMANDS_JOB, &store, dir.path(), "commands.toml");
    let output = dir.path().join("events.jsonl");
    let env = [
        ("BROKERS", OsStr::new(cluster.brokers())),
        ("EDDY_RUN", OsStr::new("idle")),
    ];
    // Until the source has read the topic and is idle (a delay, not a measurement).
    let said = stopped_after(
        common::eddy_run(&job, 2, &["--stop-timeout", "30s"], &writing(&output, &env)),
        Duration::from_secs(3),
    );
    assert!(
        !said.contains("did not finish within the stop timeout"),
        "{said}"
    );
}
