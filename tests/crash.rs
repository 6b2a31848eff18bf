//! Crash and replay tests of the `eddy` binary against Kafka.
//!
//! The test process hosts librdkafka's mock cluster (its bootstrap address is a real TCP listener
//! on 127.0.0.1) and runs `eddy run` as a child process: killed with SIGKILL at several points
//! while a feed is live and restarted from its committed offsets, it must still write every
//! window with exactly the values computed here from the generated transactions.
//!
//! The replay test (`--from <time>`) needs a broker that looks offsets up by timestamp, which the
//! mock cluster does not (librdkafka's `rdkafka_mock_handlers.c` answers every ListOffsets-by-time
//! request with offset -1, "FIXME: by timestamp"): it is ignored by default and runs against the
//! broker named by `EDDY_TEST_BROKERS` (e.g. a local `tansu broker`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Wake};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::kafka::{
    self, At, GroupOffsets, Msg, OUT_OF_ORDERNESS_MS, PATIENCE, RATE, Row, START_MS, Transaction,
    assert_rows_equal, generate, generator, high_watermarks, job_text, late_txns, mock_cluster,
    output_rows, output_rows_at, read_topic, reference,
};
use eddy::sources::generator::Transaction as Generated;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const PARTITIONS: i32 = 4;
/// Upper bound for a run with `--until-end` to drain its input and exit.
const RUN_PATIENCE: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// The cluster, input and output.

/// Creates topics on a real broker with the admin API.
fn create_topics(brokers: &str, topics: &[(&str, i32)]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("creating an admin client");
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(PATIENCE));
    let results = block_on(admin.create_topics(&new, &options)).expect("creating topics");
    for result in results {
        if let Err((topic, e)) = result {
            panic!("creating topic `{topic}` on {brokers}: {e}");
        }
    }
}

/// Drives a future on this thread (rdkafka's admin client completes it from its own thread).
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        assert!(
            Instant::now() < deadline,
            "an admin request did not complete in {PATIENCE:?}"
        );
        thread::park_timeout(Duration::from_millis(100));
    }
}

/// The time a transaction is nominally generated at (its event time before the disorder): used
/// as the message timestamp, like a producer's wall clock, while the event time lags it.
fn nominal_ms(t: &Generated) -> i64 {
    (START_MS + t.seq * 1000 / RATE) as i64
}

/// Sends `txns` to `topic` keyed by account, `per_second` messages per wall-clock second (all at
/// once when `None`), with the nominal time as message timestamp when `timestamps` is set;
/// counts what it has handed to the producer in `produced`.
fn produce_txns(
    brokers: &str,
    topic: &str,
    txns: &[Generated],
    per_second: Option<u64>,
    timestamps: bool,
    produced: &AtomicU64,
) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .create()
        .expect("creating the producer");
    let started = Instant::now();
    let mut sent = 0;
    while sent < txns.len() {
        let due = match per_second {
            None => txns.len(),
            Some(rate) => ((started.elapsed().as_secs_f64() * rate as f64) as usize)
                .clamp(sent + 1, txns.len()),
        };
        for t in &txns[sent..due] {
            let payload = serde_json::to_vec(t).expect("serializing a transaction");
            let key = t.account_id.to_string();
            loop {
                let mut record = BaseRecord::to(topic).key(&key).payload(&payload);
                if timestamps {
                    record = record.timestamp(nominal_ms(t));
                }
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        producer.poll(Duration::from_millis(5));
                    }
                    Err((e, _)) => panic!("producing into `{topic}`: {e}"),
                }
            }
        }
        sent = due;
        produced.store(sent as u64, Ordering::Relaxed);
        producer.poll(Duration::ZERO);
        if per_second.is_some() && sent < txns.len() {
            thread::sleep(Duration::from_millis(10));
        }
    }
    producer.flush(PATIENCE).expect("flushing the producer");
}

/// The group's committed offsets once two reads 200 ms apart agree (a killed child's last commit
/// request may still be in the broker's socket buffer when the child is reaped).
fn settled(offsets: &GroupOffsets) -> Vec<i64> {
    settle(|| offsets.get())
}

/// Sum of committed offsets, counting "none" as 0: messages a restart would skip.
fn total(offsets: &[i64]) -> u64 {
    offsets.iter().map(|&o| o.max(0) as u64).sum()
}

/// `read()` once two reads 200 ms apart agree.
fn settle<T: PartialEq + std::fmt::Debug>(read: impl Fn() -> T) -> T {
    let deadline = Instant::now() + PATIENCE;
    let mut last = read();
    loop {
        thread::sleep(Duration::from_millis(200));
        let now = read();
        if now == last {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "still changing after {PATIENCE:?}: {last:?} then {now:?}"
        );
        last = now;
    }
}

// ---------------------------------------------------------------------------------------------
// The job and the `eddy` child process.

/// A running `eddy run`, its stdout and stderr going to a log file. Killed when dropped, so a
/// failing test leaves no process behind.
struct Eddy {
    child: Child,
    log: PathBuf,
    what: String,
}

impl Eddy {
    fn start(job: &Path, brokers: &str, args: &[&str], log: PathBuf, what: &str) -> Eddy {
        let file = File::create(&log).expect("creating a log file");
        let child = Command::new(env!("CARGO_BIN_EXE_eddy"))
            .arg("run")
            .arg(job)
            .args(["-w", "2"])
            .args(args)
            .env("BROKERS", brokers)
            .env("RUST_LOG", "eddy=info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("sharing the log file"))
            .stderr(file)
            .spawn()
            .expect("starting `eddy run`");
        Eddy {
            child,
            log,
            what: what.into(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails if the child has exited (it should be running until killed).
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("polling the child") {
            panic!(
                "{} exited by itself with {status}; its log:\n{}",
                self.what,
                self.log()
            );
        }
    }

    /// SIGKILL, then reap.
    fn kill(&mut self) {
        self.assert_running();
        self.child.kill().expect("killing the child");
        self.child.wait().expect("reaping the child");
    }

    /// Waits for the child to exit by itself.
    fn wait(&mut self, patience: Duration) -> ExitStatus {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(status) = self.child.try_wait().expect("polling the child") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} had not exited after {patience:?} (killed); its log:\n{}",
                    self.what,
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Eddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The start offset of each partition, as the sources' `Kafka source assigned` log lines give
/// them.
fn start_positions(log: &str) -> BTreeMap<i32, i64> {
    let mut starts = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains("Kafka source assigned")) {
        let line = strip_ansi(line);
        let list = |field: &str| -> &str {
            let from = line
                .find(&format!("{field}=["))
                .unwrap_or_else(|| panic!("no `{field}=[` in the log line `{line}`"))
                + field.len()
                + 2;
            let len = line[from..]
                .find(']')
                .unwrap_or_else(|| panic!("unterminated `{field}` in `{line}`"));
            &line[from..from + len]
        };
        let numbers = |items: Vec<&str>| -> Vec<i64> {
            items
                .into_iter()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse()
                        .unwrap_or_else(|e| panic!("{s:?} in `{line}`: {e}"))
                })
                .collect()
        };
        // partitions=[("transactions", 0), ("transactions", 2)] positions=[17, 0]
        let partitions: Vec<i32> = numbers(
            list("partitions")
                .split(')')
                .filter_map(|tuple| tuple.rsplit(',').next())
                .collect(),
        )
        .into_iter()
        .map(|p| i32::try_from(p).expect("a partition number"))
        .collect();
        let positions = numbers(list("positions").split(',').collect());
        assert_eq!(partitions.len(), positions.len(), "in `{line}`");
        starts.extend(partitions.into_iter().zip(positions));
    }
    starts
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The events count of the closing `eddy: done: N events, …` line.
fn events_done(log: &str) -> u64 {
    let line = log
        .lines()
        .find_map(|l| l.strip_prefix("eddy: done: "))
        .unwrap_or_else(|| panic!("no `eddy: done:` line in the log:\n{log}"));
    line.split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no event count in `eddy: done: {line}`"))
}

// ---------------------------------------------------------------------------------------------
// ---------------------------------------------------------------------------------------------
// Expected results, computed here.

fn decode(m: &Msg) -> Transaction {
    let t: Transaction = serde_json::from_slice(&m.payload).unwrap_or_else(|e| {
        panic!(
            "input {}@{} is not a transaction: {e}: {}",
            m.partition,
            m.offset,
            String::from_utf8_lossy(&m.payload)
        )
    });
    assert_eq!(
        m.key.as_deref(),
        Some(t.account_id.to_string().as_bytes()),
        "input {}@{}: the key is not the account id",
        m.partition,
        m.offset
    );
    t
}

/// Checks that the input messages are exactly `expected`, once each, and all transactions keyed
/// by their account.
fn check_input(input: &[Msg], expected: &[Generated]) {
    for m in input {
        decode(m);
    }
    let expected: Vec<Transaction> = expected.iter().map(Transaction::from).collect();
    let undecodable = kafka::check_input(input, &expected);
    assert!(
        undecodable.is_empty(),
        "input messages that are not transactions: {undecodable:?}"
    );
}

/// A small xorshift for the kill points: a seed from `EDDY_CRASH_SEED` or the clock, printed so
/// a failure can be repeated.
struct Dice(u64);

impl Dice {
    fn new() -> Dice {
        let seed = std::env::var("EDDY_CRASH_SEED")
            .ok()
            .map(|s| s.parse().expect("EDDY_CRASH_SEED is a number"))
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .expect("a clock after 1970")
                    .as_nanos() as u64
            });
        eprintln!("kill points from seed {seed} (set EDDY_CRASH_SEED={seed} to repeat)");
        Dice(seed | 1)
    }

    /// A number in `range`.
    fn pick(&mut self, range: std::ops::Range<u64>) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        range.start + self.0 % (range.end - range.start)
    }
}

// ---------------------------------------------------------------------------------------------
// The tests.

/// When a killed run is killed.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// Once the group's committed offsets add up to at least this many messages (and this run
    /// has committed some), plus a random delay of up to 200 ms.
    Committed(u64),
    /// This long after the start, whatever the run has done by then (maybe nothing yet).
    After(Duration),
}

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    /// The group's committed offsets when it started.
    committed_before: Vec<i64>,
    /// Where its sources started, from its log.
    started_at: BTreeMap<i32, i64>,
    /// The output topic's end offsets once it had stopped: its rows lie before these.
    output_ends: BTreeMap<i32, i64>,
    how: String,
}

/// A live feed into a 4-partition topic; `eddy run` is killed with SIGKILL three times at random
/// points (by committed offsets, or after a random delay) and restarted from the committed
/// offsets, then run with `--until-end` once the feed has finished. Every reference window must
/// be in the output with exactly its reference values (no record is missing). A complete row may
/// be written twice (at-least-once); a row with other values is tolerated only if a killed run
/// wrote it and a later run wrote the reference row: the checkpoint committed with the offsets
/// keeps a restarted job from emitting a window again with only its replayed records.
#[test]
fn killed_and_restarted_from_committed_offsets_no_record_missing() {
    const INPUT: &str = "transactions";
    const OUTPUT: &str = "per-account";
    const GROUP: &str = "crash";
    const COUNT: u64 = 24_000;
    /// Messages per wall-clock second: the feed lasts 8 s.
    const FEED_RATE: u64 = 3_000;

    let test_started = Instant::now();
    let (_mock, brokers) = mock_cluster(&[(INPUT, PARTITIONS), (OUTPUT, 3)]);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let job = dir.path().join("job.toml");
    std::fs::write(&job, job_text("crash-test", INPUT, GROUP, OUTPUT, false))
        .expect("writing the job file");

    let txns = Arc::new(generate(&generator(41, COUNT, START_MS)));
    let produced = Arc::new(AtomicU64::new(0));
    let feed = {
        let (brokers, txns, produced) = (brokers.clone(), Arc::clone(&txns), Arc::clone(&produced));
        thread::spawn(move || {
            produce_txns(&brokers, INPUT, &txns, Some(FEED_RATE), false, &produced)
        })
    };

    let mut dice = Dice::new();
    let kills = [
        KillAt::Committed(dice.pick(COUNT / 10..COUNT / 4)),
        KillAt::After(Duration::from_millis(dice.pick(300..1500))),
        KillAt::Committed(dice.pick(COUNT * 45 / 100..COUNT * 70 / 100)),
    ];
    let offsets = GroupOffsets::new(&brokers, GROUP, INPUT, PARTITIONS);
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .expect("creating a consumer for watermarks");
    let output_ends = || -> BTreeMap<i32, i64> {
        high_watermarks(&reader, OUTPUT)
            .into_iter()
            .map(|(p, (_, high))| (p, high))
            .collect()
    };

    let mut runs = Vec::new();
    for (i, kill) in kills.iter().enumerate() {
        let committed_before = settled(&offsets);
        let what = format!("run {i} (to be killed at {kill:?})");
        let log = dir.path().join(format!("run-{i}.log"));
        let mut child = Eddy::start(&job, &brokers, &[], log, &what);
        let started = Instant::now();
        match *kill {
            KillAt::Committed(target) => {
                let deadline = started + PATIENCE;
                loop {
                    child.assert_running();
                    let now = offsets.get();
                    if total(&now) >= target && total(&now) > total(&committed_before) {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{what}: after {PATIENCE:?} the group has committed {now:?} (from \
                         {committed_before:?}), short of {target}; {} of {COUNT} produced; log:\n{}",
                        produced.load(Ordering::Relaxed),
                        child.log()
                    );
                    thread::sleep(Duration::from_millis(20));
                }
                thread::sleep(Duration::from_millis(dice.pick(0..200)));
            }
            KillAt::After(delay) => {
                while started.elapsed() < delay {
                    child.assert_running();
                    thread::sleep(Duration::from_millis(20));
                }
            }
        }
        child.kill();
        let ends = settle(output_ends);
        let run = Run {
            started_at: start_positions(&child.log()),
            committed_before,
            output_ends: ends,
            how: format!(
                "{what}, killed after {:?} with {} of {COUNT} produced",
                started.elapsed(),
                produced.load(Ordering::Relaxed)
            ),
        };
        eprintln!("{run:?}");
        runs.push(run);
    }

    feed.join().expect("the feed thread");
    let committed_before = settled(&offsets);
    let what = "the final run (--until-end)".to_string();
    let mut last = Eddy::start(
        &job,
        &brokers,
        &["--until-end"],
        dir.path().join("final.log"),
        &what,
    );
    let started = Instant::now();
    let status = last.wait(RUN_PATIENCE);
    let log = last.log();
    assert!(
        status.success(),
        "{what} failed with {status}; its log:\n{log}"
    );
    let final_events = events_done(&log);
    runs.push(Run {
        started_at: start_positions(&log),
        committed_before,
        output_ends: output_ends(),
        how: format!("{what}, done after {:?}", started.elapsed()),
    });
    eprintln!("{:?}", runs.last());

    // The input, and the reference computed from it.
    let input = read_topic(&brokers, INPUT);
    check_input(&input, &txns);
    let late = late_txns(&input);
    let decoded: Vec<Transaction> = input.iter().map(decode).collect();
    let expected = reference(decoded.iter().filter(|t| !late.contains(&t.txn_id)));
    assert!(
        expected.len() > 1000,
        "the reference is too small to mean much: {}",
        expected.len()
    );

    // Every restart resumed where the group had committed, and some resumed past the beginning.
    for (i, run) in runs.iter().enumerate() {
        let committed: BTreeMap<i32, i64> = (0..PARTITIONS)
            .zip(run.committed_before.iter().map(|&o| o.max(0)))
            .collect();
        if !run.started_at.is_empty() {
            assert_eq!(
                run.started_at, committed,
                "run {i} did not start at the group's committed offsets ({})",
                run.how
            );
        }
    }
    let resumed = runs
        .iter()
        .skip(1)
        .filter(|r| total(&r.committed_before) > 0)
        .count();
    assert!(
        resumed > 0,
        "no restart found committed offsets to resume from: {runs:#?}"
    );
    let final_start = total(&runs[3].committed_before);
    assert!(final_start > 0, "the final run started from the beginning");
    assert_eq!(
        final_events,
        COUNT - final_start,
        "the final run should read exactly from the committed offsets {:?} to the end",
        runs[3].committed_before
    );

    // The rows, each attributed to the run that wrote it.
    let rows = output_rows_at(&brokers, OUTPUT);
    let run_of = |at: &At| {
        runs.iter()
            .position(|r| at.offset < r.output_ends[&at.partition])
            .expect("every row was written by some run")
    };
    let mut by_window = BTreeMap::<(i64, i64), Vec<(usize, At)>>::new();
    for at in &rows {
        by_window
            .entry(at.row.window())
            .or_default()
            .push((run_of(at), *at));
    }
    let describe = |window: &(i64, i64)| -> String {
        let written: Vec<String> = by_window.get(window).map_or(Vec::new(), |v| {
            v.iter()
                .map(|(run, at)| {
                    format!(
                        "    run {run} at {OUTPUT}/{}@{}: {:?}",
                        at.partition, at.offset, at.row
                    )
                })
                .collect()
        });
        format!(
            "  window {window:?}: expected {:?}\n{}",
            expected.get(window),
            written.join("\n")
        )
    };
    let missing: Vec<&(i64, i64)> = expected
        .iter()
        .filter(|(w, r)| {
            !by_window
                .get(w)
                .is_some_and(|v| v.iter().any(|(_, at)| at.row == **r))
        })
        .map(|(w, _)| w)
        .collect();
    let strays: Vec<&(i64, i64)> = by_window
        .keys()
        .filter(|w| !expected.contains_key(w))
        .collect();
    // Rows with other values than the reference, not followed by the reference row in a later run.
    // For the diagnosis: per run, the windows of the input records at or after where it started.
    let from_start: Vec<BTreeMap<(i64, i64), Row>> = runs
        .iter()
        .map(|run| {
            let suffix: Vec<Msg> = input
                .iter()
                .filter(|m| m.offset >= run.committed_before[m.partition as usize].max(0))
                .cloned()
                .collect();
            let late = late_txns(&suffix);
            let txns: Vec<Transaction> = suffix.iter().map(decode).collect();
            reference(txns.iter().filter(|t| !late.contains(&t.txn_id)))
        })
        .collect();
    let mut wrong = BTreeSet::new();
    let mut wrong_rows = 0;
    // Differing rows that hold exactly the window's records from the run's start offsets on, after
    // an earlier run wrote the complete row.
    let mut tails = 0;
    for (window, written) in &by_window {
        let Some(reference) = expected.get(window) else {
            continue;
        };
        for (run, at) in written {
            if at.row == *reference {
                continue;
            }
            wrong_rows += 1;
            if from_start[*run].get(window) == Some(&at.row)
                && written
                    .iter()
                    .any(|(earlier, other)| earlier < run && other.row == *reference)
            {
                tails += 1;
            }
            let superseded = *run + 1 < runs.len()
                && written
                    .iter()
                    .any(|(later, other)| later > run && other.row == *reference);
            if !superseded {
                wrong.insert(*window);
            }
        }
    }
    let per_run: Vec<usize> = (0..runs.len())
        .map(|i| rows.iter().filter(|at| run_of(at) == i).count())
        .collect();
    eprintln!(
        "{} rows ({per_run:?} per run), {} reference windows, {} late records, {wrong_rows} rows \
         differing from the reference, {} of them not superseded; {:?} in all",
        rows.len(),
        expected.len(),
        late.len(),
        wrong.len(),
        test_started.elapsed()
    );
    let examples = |windows: &[&(i64, i64)]| -> String {
        windows
            .iter()
            .take(4)
            .map(|w| describe(w))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let runs_summary: Vec<String> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            format!(
                "  run {i}: committed before {:?}, started at {:?}, output ends {:?}: {}",
                r.committed_before, r.started_at, r.output_ends, r.how
            )
        })
        .collect();
    let runs_summary = runs_summary.join("\n");
    assert!(
        missing.is_empty(),
        "{} of {} reference windows are missing from the output (no row with the reference values \
         in any run). Runs:\n{runs_summary}\nFor example:\n{}",
        missing.len(),
        expected.len(),
        examples(&missing)
    );
    assert!(
        strays.is_empty(),
        "{} rows for windows that have no transactions. Runs:\n{runs_summary}\nFor example:\n{}",
        strays.len(),
        examples(&strays)
    );
    let wrong: Vec<&(i64, i64)> = wrong.iter().collect();
    assert!(
        wrong.is_empty(),
        "{} windows have a row with other values than the reference that no later run \
         superseded with the reference row ({wrong_rows} differing rows in all; {tails} of them \
         hold exactly the window's records from the offsets their run restarted from, after an \
         earlier run had written the complete row: the restart checkpoint did not cover the \
         window). Runs:\n{runs_summary}\nFor example:\n{}",
        wrong.len(),
        examples(&wrong)
    );
}

/// `--from <time> --until-end` reprocesses exactly the messages from the first one at or after
/// that time (by message timestamp) in each partition: the output equals the reference computed
/// from them, and no window before them appears.
///
/// The mock cluster does not look offsets up by time, so this runs against a real broker:
/// `EDDY_TEST_BROKERS=127.0.0.1:9092 cargo test --test crash -- --ignored`.
#[test]
#[ignore = "needs a broker with offsets-for-times in EDDY_TEST_BROKERS (the mock cluster has none)"]
fn replay_from_a_time_reads_exactly_the_messages_from_then() {
    const COUNT: u64 = 8_000;
    let test_started = Instant::now();
    let suffix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis();
    let input = format!("replay-in-{suffix}");
    let output = format!("replay-out-{suffix}");
    let group = format!("replay-{suffix}");
    let topics = [(input.as_str(), PARTITIONS), (output.as_str(), 2)];
    let (_mock, brokers) = match std::env::var("EDDY_TEST_BROKERS") {
        Ok(brokers) => {
            create_topics(&brokers, &topics);
            (None, brokers)
        }
        Err(_) => {
            let (mock, brokers) = mock_cluster(&topics);
            (Some(mock), brokers)
        }
    };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let job = dir.path().join("job.toml");
    std::fs::write(&job, job_text("crash-test", &input, &group, &output, false))
        .expect("writing the job file");

    // Message timestamps are the nominal times (4 ms apart, increasing in every partition); the
    // event times in the payloads lag them by up to 2 s.
    let txns = generate(&generator(43, COUNT, START_MS));
    produce_txns(&brokers, &input, &txns, None, true, &AtomicU64::new(0));
    let messages = read_topic(&brokers, &input);
    check_input(&messages, &txns);

    // 14 s in: inside the second window, so the first is wholly before and the second straddles.
    let from_ms = START_MS as i64 + 14_000;
    let from = jiff::Timestamp::from_millisecond(from_ms)
        .expect("a valid time")
        .to_string();
    let mut first_at = BTreeMap::<i32, i64>::new();
    for m in &messages {
        let ts = m
            .timestamp
            .unwrap_or_else(|| panic!("{input}/{}@{} has no timestamp", m.partition, m.offset));
        assert_eq!(
            ts,
            nominal_ms(&txns[decode(m).txn_id[1..].parse::<usize>().expect("t<seq>")]),
            "{input}/{}@{} does not carry the timestamp it was produced with",
            m.partition,
            m.offset
        );
        if ts >= from_ms {
            first_at.entry(m.partition).or_insert(m.offset);
        }
    }
    let ends: BTreeMap<i32, i64> = (0..PARTITIONS)
        .map(|p| {
            (
                p,
                messages.iter().filter(|m| m.partition == p).count() as i64,
            )
        })
        .collect();
    let first_at: BTreeMap<i32, i64> = ends
        .iter()
        .map(|(&p, &end)| (p, first_at.get(&p).copied().unwrap_or(end)))
        .collect();

    // What the broker answers, checked first so a broker without the lookup fails plainly.
    let probe: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &group)
        .create()
        .expect("creating a consumer");
    let mut times = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        times
            .add_partition_offset(&input, p, Offset::Offset(from_ms))
            .expect("a valid offset");
    }
    let found = probe
        .offsets_for_times(times, PATIENCE)
        .expect("looking offsets up by time");
    let answered: BTreeMap<i32, Option<i64>> = (0..PARTITIONS)
        .map(|p| {
            let offset = found
                .find_partition(&input, p)
                .and_then(|e| match e.offset() {
                    Offset::Offset(n) => Some(n),
                    _ => None,
                });
            (p, offset)
        })
        .collect();
    assert!(
        answered.iter().all(|(p, o)| *o == Some(first_at[p])),
        "the broker at {brokers} looks up {from} as {answered:?}, not at the first messages at or \
         after it {first_at:?}: it does not support offsets for times (librdkafka's mock cluster \
         answers -1 to every such request); set EDDY_TEST_BROKERS to a broker that does"
    );

    let included: Vec<&Msg> = messages
        .iter()
        .filter(|m| m.offset >= first_at[&m.partition])
        .collect();
    let included_msgs: Vec<Msg> = included.iter().map(|m| (*m).clone()).collect();
    let late = late_txns(&included_msgs);
    let kept: Vec<Transaction> = included
        .iter()
        .map(|m| decode(m))
        .filter(|t| !late.contains(&t.txn_id))
        .collect();
    assert!(
        kept.iter().any(|t| (t.ts as i64) < from_ms),
        "no included event lags the start time: the test does not cover disorder"
    );
    let expected = reference(&kept);
    let everything = reference(&messages.iter().map(decode).collect::<Vec<_>>());
    let straddling = START_MS as i64 + 10_000;
    assert!(
        expected
            .values()
            .filter(|r| r.window_start == straddling)
            .any(|r| everything[&r.window()] != *r),
        "the window around the start time should have only part of its input"
    );

    let what = format!("eddy run --from {from} --until-end");
    let mut child = Eddy::start(
        &job,
        &brokers,
        &["--from", &from, "--until-end"],
        dir.path().join("replay.log"),
        &what,
    );
    let status = child.wait(RUN_PATIENCE);
    let log = child.log();
    assert!(
        status.success(),
        "{what} failed with {status}; its log:\n{log}"
    );
    let started_at = start_positions(&log);
    if !started_at.is_empty() {
        assert_eq!(started_at, first_at, "{what}: where the sources started");
    }
    assert_eq!(
        events_done(&log),
        included.len() as u64,
        "{what}: events read"
    );

    let rows = output_rows(&brokers, &output);
    let before: Vec<&Row> = rows
        .iter()
        .filter(|r| r.window_end <= from_ms - OUT_OF_ORDERNESS_MS as i64)
        .take(5)
        .collect();
    assert!(
        before.is_empty(),
        "{what}: rows for windows wholly before the earliest included event: {before:?}"
    );
    let want: BTreeSet<Row> = expected.values().copied().collect();
    assert_rows_equal(&what, &rows, &want);
    eprintln!(
        "replayed {} of {COUNT} messages into {} rows in {:?}",
        included.len(),
        rows.len(),
        test_started.elapsed()
    );
}
