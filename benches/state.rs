//! What checkpointing a large state costs: 1 M keys of window-like state (per account and window
//! start, a count, a sum and a maximum), handed off by two workers. Measures the first
//! checkpoint (everything is new), a checkpoint after 1 % of the keys changed (written as its
//! changes, [`WorkerSnapshot::state`]) against the same written whole
//! ([`WorkerSnapshot::whole`]), and the restore of the newest checkpoint on two workers and on
//! one. Alternating runs, medians reported.
//!
//!   cargo bench --bench state [-- KEYS RUNS]      (default 1000000 keys, 3 runs)

use std::time::{Duration, Instant};

use eddy::state::{
    CheckpointStore, Location, Report, Summary, WorkerSnapshot, Writer, WriterConfig, owner,
};

const PEERS: usize = 2;

/// (account, window start) → (count, sum, max).
type Entry = (u64, (i64, i64), (u64, i64, i64));

fn state(keys: u64, version: u64, changed_every: u64) -> Vec<Entry> {
    (0..keys)
        .map(|k| {
            let key = ((k / 8) as i64, 1_700_000_000_000 + (k % 8) as i64 * 10_000);
            let hash = k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let bump = if k % changed_every == 0 { version } else { 0 };
            (
                hash,
                key,
                (k % 97 + bump, (k * 31) as i64, (k % 1000) as i64),
            )
        })
        .collect()
}

/// One checkpoint of `entries`, each worker handing off its share, `whole` or as a state; its
/// summary and the wall time from the first handoff to the report.
fn checkpoint(writer: &Writer, entries: &[Entry], whole: bool) -> (Summary, Duration) {
    let plan = writer.handle().begin(1).expect("none in flight");
    let start = Instant::now();
    for worker in 0..PEERS {
        let mine: Vec<Entry> = entries
            .iter()
            .filter(|e| owner(e.0, PEERS) == worker)
            .cloned()
            .collect();
        let mut snapshot = WorkerSnapshot::new(&plan, worker);
        if whole {
            snapshot.whole("windows", mine);
        } else {
            snapshot.state("windows", mine);
        }
        writer.handle().submit(snapshot);
    }
    match writer.reports().recv().unwrap() {
        Report::Complete(summary) => (summary, start.elapsed()),
        other => panic!("{other:?}"),
    }
}

fn restore(store: &CheckpointStore, peers: usize) -> (usize, Duration) {
    let start = Instant::now();
    let restored = store.restore().unwrap().restored.unwrap();
    let mut keys = 0;
    for worker in 0..peers {
        keys += restored
            .section::<(i64, i64), (u64, i64, i64)>("windows", worker, peers)
            .unwrap()
            .unwrap()
            .len();
    }
    (keys, start.elapsed())
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let keys: u64 = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let runs: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let first_state = state(keys, 0, 100);
    let changed = state(keys, 1, 100);
    let (mut first, mut diffed, mut whole) = (Vec::new(), Vec::new(), Vec::new());
    let (mut restore_two, mut restore_one) = (Vec::new(), Vec::new());
    let mut sizes = (0, 0, 0);
    for _ in 0..runs {
        for as_whole in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let store = CheckpointStore::open(&Location::Dir(dir.path().into())).unwrap();
            let writer =
                Writer::start(store.clone(), WriterConfig::new("bench", PEERS, 3), None).unwrap();
            let (summary, took) = checkpoint(&writer, &first_state, as_whole);
            first.push(took);
            sizes.0 = summary.written;
            let (summary, took) = checkpoint(&writer, &changed, as_whole);
            writer.finish();
            if as_whole {
                whole.push(took);
                sizes.2 = summary.written;
            } else {
                diffed.push(took);
                sizes.1 = summary.written;
                let (restored, took) = restore(&store, PEERS);
                assert_eq!(restored as u64, keys);
                restore_two.push(took);
                let (restored, took) = restore(&store, 1);
                assert_eq!(restored as u64, keys);
                restore_one.push(took);
            }
        }
    }
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    println!("{keys} keys, {PEERS} workers, median of {runs}:");
    println!(
        "  first checkpoint: {:.1} MiB written in {:?}",
        mib(sizes.0),
        median(first)
    );
    println!(
        "  1 % of the keys changed, as changes: {:.2} MiB in {:?}; whole: {:.1} MiB in {:?}",
        mib(sizes.1),
        median(diffed),
        mib(sizes.2),
        median(whole)
    );
    println!(
        "  restore (the full runs and the changes): {:?} on {PEERS} workers, {:?} on 1",
        median(restore_two),
        median(restore_one)
    );
}
