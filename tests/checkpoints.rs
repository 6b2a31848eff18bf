//! The checkpoint store against the outside: an S3-compatible server (moto, on the loopback) and
//! the `eddy checkpoints` listing.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use eddy::state::{
    CheckpointId, CheckpointStore, Location, Position, Report, Restored, Summary, WorkerSnapshot,
    Writer, WriterConfig, owner,
};

type Model = BTreeMap<u64, u64>;

fn hash(key: u64) -> u64 {
    key.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// One checkpoint of `peers` workers, each handing off its share of `upserts` and `removals`,
/// as changes against `since` or (`None`) whole.
fn checkpoint(
    writer: &Writer,
    peers: usize,
    since: Option<CheckpointId>,
    upserts: &Model,
    removals: &[u64],
) -> Summary {
    let plan = writer.handle().begin(1_700_000_000_000).unwrap();
    let share = |worker| move |key: &u64| owner(hash(*key), peers) == worker;
    for worker in 0..peers {
        let mine = share(worker);
        let mut snapshot = WorkerSnapshot::new(&plan, worker);
        let entries = Vec::from_iter(
            upserts
                .iter()
                .filter(|e| mine(e.0))
                .map(|(&k, &v)| (hash(k), k, v)),
        );
        let gone = Vec::from_iter(removals.iter().filter(|k| mine(k)).map(|&k| (hash(k), k)));
        if let Some(since) = since {
            snapshot.changes("counts", since, entries, gone);
        } else {
            snapshot.whole("counts", entries);
        }
        snapshot.position("payments", &worker.to_string(), Position::at(plan.id * 100));
        writer.handle().submit(snapshot);
    }
    let Report::Complete(summary) = writer.reports().recv().unwrap() else {
        panic!("checkpoint {} did not complete", plan.id);
    };
    summary
}

fn restore_all(restored: &Restored, peers: usize) -> Model {
    (0..peers)
        .flat_map(|worker| {
            let share = restored.section::<u64, u64>("counts", worker, peers);
            share.unwrap().unwrap()
        })
        .map(|(_, k, v)| (k, v))
        .collect()
}

/// Writes three checkpoints on two workers (whole, then two changes), keeping two, and checks
/// what is listed and what restores on one and three workers; gives the final state.
fn write_three(store: &CheckpointStore) -> (Model, Vec<Summary>) {
    let writer = Writer::start(store.clone(), WriterConfig::new("q1", 2, 2), None).unwrap();
    let mut state: Model = (0..2_000).map(|k| (k, k)).collect();
    let c1 = checkpoint(&writer, 2, None, &state, &[]);
    let changed: Model = (0..20).map(|k| (k, 7)).collect();
    let c2 = checkpoint(&writer, 2, Some(c1.id), &changed, &[1_999]);
    let c3 = checkpoint(&writer, 2, Some(c2.id), &changed, &[1_998]);
    writer.finish();
    state.extend(changed);
    state.remove(&1_999);
    state.remove(&1_998);
    let ids: Vec<_> = store.checkpoints().unwrap().iter().map(|c| c.0).collect();
    assert_eq!(ids, [c3.id, c2.id]);
    let restored = store.restore().unwrap().restored.unwrap();
    assert_eq!(restored.manifest().id, c3.id);
    assert_eq!(restore_all(&restored, 1), state);
    assert_eq!(restore_all(&restored, 3), state);
    (state, vec![c1, c2, c3])
}

/// Replaces object `key` of `bucket` by its first half.
fn truncate_object(moto: &common::moto::Moto, bucket: &str, key: &str) {
    use object_store::{ObjectStoreExt, aws::AmazonS3Builder, path::Path};
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_allow_http(true);
    for (k, v) in moto.env() {
        builder = builder.with_config(k.to_ascii_lowercase().parse().unwrap(), v);
    }
    let s3 = builder.build().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let path = Path::parse(key).unwrap();
    runtime.block_on(async {
        let file = s3.get(&path).await.unwrap().bytes().await.unwrap();
        let half = file.slice(..file.len() / 2);
        s3.put(&path, half.into()).await.unwrap();
    });
}

fn eddy_checkpoints(job: &Path, env: &[(String, String)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eddy"))
        .arg("checkpoints")
        .arg(job)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("running eddy")
}

fn job_file(dir: &Path, store: &str) -> std::path::PathBuf {
    let path = dir.join("job.toml");
    let text = format!(
        r#"[job]
name = "q1"

[[sources]]
name = "payments"
kind = "file"
paths = ["in.jsonl"]
event_time = "ts"
schema = {{ k = "int", ts = "timestamp" }}

[[routes]]
name = "all"
source = "payments"
sinks = ["out"]

[[sinks]]
name = "out"
kind = "stdout"

[checkpoints]
store = "{store}"
keep = 2
"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn eddy_checkpoints_lists_a_directory_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(&Location::Dir(dir.path().join("state"))).unwrap();
    let (_, summaries) = write_three(&store);
    let output = eddy_checkpoints(&job_file(dir.path(), "state"), &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    let newest = format!(
        "checkpoint {}: frontier 2023-11-14T22:13:20Z",
        summaries[2].id
    );
    assert!(lines[0].starts_with(&newest), "{stdout}");
    assert!(lines[0].ends_with("2 workers"), "{stdout}");
    let id = summaries[2].id * 100;
    assert_eq!(lines[1], format!("  payments: 0={id} 1={id}"));

    // A job without the section is told so.
    let text = std::fs::read_to_string(dir.path().join("job.toml")).unwrap();
    let cut = text.find("[checkpoints]").unwrap();
    std::fs::write(dir.path().join("plain.toml"), &text[..cut]).unwrap();
    let output = eddy_checkpoints(&dir.path().join("plain.toml"), &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no [checkpoints] section"), "{stderr}");
}

#[test]
fn the_s3_store_checkpoints_restores_falls_back_and_retires_as_a_directory_does() {
    let Some(moto) = common::moto::moto("the_s3_store_checkpoints_restores_falls_back_and_retires")
    else {
        return;
    };
    moto.create_bucket("eddy");
    let location = Location::parse("s3://eddy/jobs/q1").unwrap();
    let store = CheckpointStore::open_with_env(&location, moto.env()).unwrap();
    let (_, summaries) = write_three(&store);

    // Truncate the newest checkpoint's run of worker 1 (through a client of its own): the
    // restore takes the one before.
    let key = format!("jobs/q1/data/{:020}/counts/1-of-2", summaries[2].id);
    truncate_object(&moto, "eddy", &key);
    let restore = store.restore().unwrap();
    assert_eq!(restore.restored.unwrap().manifest().id, summaries[1].id);
    assert_eq!(restore.skipped.len(), 1);
    let reason = &restore.skipped[0].reason;
    assert!(
        reason.contains("truncated") && reason.contains("1-of-2"),
        "{reason}"
    );

    // The listing reads the same store with the same settings from the environment.
    let dir = tempfile::tempdir().unwrap();
    let output = eddy_checkpoints(&job_file(dir.path(), "s3://eddy/jobs/q1"), &moto.env());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("checkpoint"))
            .count(),
        2
    );
    assert!(
        !stdout.contains("testing"),
        "credentials are never shown: {stdout}"
    );
}
