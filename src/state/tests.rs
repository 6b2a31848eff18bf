//! The store on a temporary directory, end to end: writer, manifests, retention and restore.

use std::collections::BTreeMap;
use std::path::Path;

use super::*;

/// Key → value, the state a test expects back.
type Model = BTreeMap<u64, u64>;

/// A key's hash, as an operator would exchange it by (any fixed mixing of the key).
fn hash(key: u64) -> u64 {
    key.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

struct Fixture {
    dir: tempfile::TempDir,
    store: CheckpointStore,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(&Location::Dir(dir.path().into())).unwrap();
        Fixture { dir, store }
    }

    fn writer(&self, peers: usize, keep: usize, base: Option<&Restored>) -> Writer {
        let base = base.map(|r| r.manifest().clone());
        Writer::start(
            self.store.clone(),
            WriterConfig::new("job", peers, keep),
            base,
        )
        .unwrap()
    }

    fn path(&self, key: &str) -> std::path::PathBuf {
        self.dir.path().join(key)
    }

    fn restored(&self) -> Restored {
        self.store
            .restore()
            .unwrap()
            .restored
            .expect("a checkpoint")
    }

    /// The checkpoint ids of the files under `data/`.
    fn data_ids(&self) -> Vec<CheckpointId> {
        let mut ids: Vec<_> = self.store.data().unwrap().iter().map(|d| d.1).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// Takes one checkpoint: each of `peers` workers hands off the entries of `upserts` and
/// `removals` it owns, as changes against `since` or (`None`) whole; gives the report.
fn checkpoint(
    writer: &Writer,
    peers: usize,
    since: Option<CheckpointId>,
    upserts: &Model,
    removals: &[u64],
) -> Report {
    let plan = writer.handle().begin(100).expect("no checkpoint in flight");
    for worker in 0..peers {
        let mine = |key: &u64| owner(hash(*key), peers) == worker;
        let entries: Vec<_> = upserts
            .iter()
            .filter(|(k, _)| mine(k))
            .map(|(&k, &v)| (hash(k), k, v))
            .collect();
        let mut snapshot = WorkerSnapshot::new(&plan, worker);
        match since {
            None => snapshot.whole("counts", entries),
            Some(since) => {
                let gone = removals.iter().filter(|k| mine(k)).map(|&k| (hash(k), k));
                snapshot.changes("counts", since, entries, gone.collect());
            }
        }
        snapshot.position("in", &worker.to_string(), Position::at(plan.id * 10));
        writer.handle().submit(snapshot);
    }
    writer.reports().recv().unwrap()
}

fn complete(report: Report) -> Summary {
    match report {
        Report::Complete(summary) => summary,
        other => panic!("not complete: {other:?}"),
    }
}

/// Every worker's share of `counts`, checking that each holds only keys it owns.
fn restore_all(restored: &Restored, peers: usize) -> Model {
    let mut all = Model::new();
    for worker in 0..peers {
        let share = restored
            .section::<u64, u64>("counts", worker, peers)
            .unwrap()
            .unwrap();
        for (h, k, v) in share {
            assert_eq!((h, owner(h, peers)), (hash(k), worker), "key {k}");
            assert!(all.insert(k, v).is_none(), "key {k} restored twice");
        }
    }
    all
}

fn model(keys: std::ops::Range<u64>, value: u64) -> Model {
    keys.map(|k| (k, k * value)).collect()
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn changes_restore_to_the_state_they_describe_and_cost_only_what_changed() {
    let f = Fixture::new();
    let writer = f.writer(1, 3, None);
    let mut state = model(0..10_000, 3);
    let first = complete(checkpoint(&writer, 1, None, &state, &[]));
    // 1 % of the keys change: 50 updated, 50 removed, and 10 new ones.
    let mut changed = Model::new();
    for k in (0..5_000).step_by(100) {
        changed.insert(k, 7);
    }
    changed.extend(model(20_000..20_010, 1));
    let removed: Vec<u64> = (5_000..10_000).step_by(100).collect();
    let second = complete(checkpoint(&writer, 1, Some(first.id), &changed, &removed));
    state.extend(changed.clone());
    for k in &removed {
        state.remove(k);
    }
    assert!(
        second.written * 50 < first.written,
        "the change of 1 % wrote {} bytes, the whole state {}",
        second.written,
        first.written
    );
    assert_eq!(second.size, first.written + second.written);
    writer.finish();
    let restored = f.restored();
    assert_eq!(restored.manifest().id, second.id);
    assert_eq!(restore_all(&restored, 1), state);
    assert_eq!(
        restored.positions()["in"]["0"],
        Position::at(second.id * 10)
    );
}

#[test]
fn a_checkpoint_without_its_manifest_is_not_restored_and_its_files_are_removed() {
    let f = Fixture::new();
    let writer = f.writer(2, 3, None);
    let state = model(0..100, 1);
    let first = complete(checkpoint(&writer, 2, None, &state, &[]));
    // The second checkpoint gets worker 0's snapshot only, as if the job died meanwhile.
    let plan = writer.handle().begin(200).unwrap();
    let mut snapshot = WorkerSnapshot::new(&plan, 0);
    snapshot.whole("counts", vec![(hash(0), 0u64, 99u64)]);
    writer.handle().submit(snapshot);
    assert!(writer.finish().is_empty());
    assert_eq!(
        f.data_ids(),
        [first.id, plan.id],
        "worker 0's run was written"
    );
    assert_eq!(f.store.checkpoints().unwrap().len(), 1);
    let restored = f.restored();
    assert_eq!(restored.manifest().id, first.id);
    assert_eq!(restore_all(&restored, 2), state);
    // The next run of the job continues from the first and clears the leftover.
    let writer = f.writer(2, 3, Some(&restored));
    let third = complete(checkpoint(&writer, 2, Some(first.id), &Model::new(), &[]));
    assert!(third.id > plan.id);
    assert_eq!(f.data_ids(), [first.id]);
    writer.finish();
    assert_eq!(restore_all(&f.restored(), 2), state);
}

#[test]
fn a_truncated_or_corrupt_checkpoint_falls_back_to_the_previous_one_with_the_reason() {
    let f = Fixture::new();
    let writer = f.writer(1, 5, None);
    let old = model(0..100, 1);
    let first = complete(checkpoint(&writer, 1, None, &old, &[]));
    let second = complete(checkpoint(
        &writer,
        1,
        Some(first.id),
        &model(0..10, 5),
        &[],
    ));
    let third = complete(checkpoint(
        &writer,
        1,
        Some(second.id),
        &model(0..10, 6),
        &[],
    ));
    writer.finish();
    let run = |id| f.path(&format!("data/{id:020}/counts/0-of-1"));
    let manifest = |id| f.path(&format!("manifests/{id:020}"));

    // Truncate the newest checkpoint's run: the restore takes the second.
    let bytes = std::fs::read(run(third.id)).unwrap();
    std::fs::write(run(third.id), &bytes[..bytes.len() - 3]).unwrap();
    let restore = f.store.restore().unwrap();
    assert_eq!(restore.restored.unwrap().manifest().id, second.id);
    assert_eq!(restore.skipped.len(), 1);
    assert_eq!(restore.skipped[0].id, third.id);
    let reason = &restore.skipped[0].reason;
    assert!(
        reason.contains("truncated") && reason.contains("counts"),
        "{reason}"
    );

    // Flip a byte in the second's manifest: the restore takes the first, saying why for each.
    flip_byte(&manifest(second.id), 30);
    let restore = f.store.restore().unwrap();
    let restored = restore.restored.unwrap();
    assert_eq!(restored.manifest().id, first.id);
    assert_eq!(restore_all(&restored, 1), old);
    let ids: Vec<_> = restore.skipped.iter().map(|s| s.id).collect();
    assert_eq!(ids, [third.id, second.id]);
    assert!(
        restore.skipped[1].reason.contains("checksum"),
        "{:?}",
        restore.skipped
    );

    // A flipped byte in the first's run, which every later checkpoint also names: none is left.
    flip_byte(&run(first.id), 40);
    let restore = f.store.restore().unwrap();
    assert!(restore.restored.is_none());
    assert_eq!(restore.skipped.len(), 3);
    assert!(
        restore.skipped[2].reason.contains("checksum"),
        "{:?}",
        restore.skipped
    );
    // The listing still shows the manifests that read, and why one does not.
    let listed = f.store.checkpoints().unwrap();
    assert_eq!(listed.len(), 3);
    assert!(listed[1].1.as_ref().unwrap_err().contains("checksum"));
}

#[test]
fn retention_keeps_the_newest_checkpoints_and_every_file_they_name() {
    let f = Fixture::new();
    let writer = f.writer(1, 2, None);
    let state = model(0..50, 2);
    let c1 = complete(checkpoint(&writer, 1, None, &state, &[]));
    let c2 = complete(checkpoint(&writer, 1, Some(c1.id), &model(0..1, 9), &[]));
    let c3 = complete(checkpoint(&writer, 1, Some(c2.id), &model(1..2, 9), &[]));
    assert_eq!(c3.retired, [c1.id]);
    let ids: Vec<_> = f.store.checkpoints().unwrap().iter().map(|c| c.0).collect();
    assert_eq!(ids, [c3.id, c2.id]);
    // The first checkpoint's run is the base of both chains kept.
    assert_eq!(f.data_ids(), [c1.id, c2.id, c3.id]);
    let c4 = complete(checkpoint(&writer, 1, None, &state, &[]));
    assert_eq!(
        f.data_ids(),
        [c1.id, c2.id, c3.id, c4.id],
        "c3 still names them"
    );
    let c5 = complete(checkpoint(&writer, 1, Some(c4.id), &model(2..3, 9), &[]));
    assert_eq!(c5.retired, [c3.id]);
    assert_eq!(f.data_ids(), [c4.id, c5.id]);
    writer.finish();
}

#[test]
fn a_restore_with_another_worker_count_redistributes_state_by_key_hash() {
    let f = Fixture::new();
    let writer = f.writer(2, 3, None);
    let mut state = model(0..1_000, 1);
    let c1 = complete(checkpoint(&writer, 2, None, &state, &[]));
    let changed = model(0..100, 4);
    let removed: Vec<u64> = (900..1_000).collect();
    complete(checkpoint(&writer, 2, Some(c1.id), &changed, &removed));
    writer.finish();
    state.extend(changed);
    state.retain(|k, _| *k < 900);
    let restored = f.restored();
    for peers in [1, 2, 3, 4] {
        assert_eq!(restore_all(&restored, peers), state, "{peers} workers");
    }
    // Three workers go on from there, with changes against the two workers' chain.
    let writer = f.writer(3, 3, Some(&restored));
    let since = restored.manifest().id;
    let changed = model(1_000..1_100, 1);
    complete(checkpoint(&writer, 3, Some(since), &changed, &[0, 1, 2]));
    writer.finish();
    state.extend(changed);
    for k in [0, 1, 2] {
        state.remove(&k);
    }
    let restored = f.restored();
    assert_eq!(restore_all(&restored, 2), state);
    assert_eq!(restore_all(&restored, 5), state);
}

#[test]
fn a_failed_checkpoint_is_reported_and_removed_and_the_next_takes_whole_state() {
    let f = Fixture::new();
    let writer = f.writer(1, 3, None);
    let c1 = complete(checkpoint(&writer, 1, None, &model(0..10, 1), &[]));
    // A section handed off twice by one worker fails the checkpoint.
    let plan = writer.handle().begin(200).unwrap();
    let mut snapshot = WorkerSnapshot::new(&plan, 0);
    snapshot.whole("other", vec![(0u64, 0u64, 0u64)]);
    snapshot.whole("counts", vec![(0u64, 0u64, 0u64)]);
    snapshot.whole("counts", vec![(0u64, 0u64, 0u64)]);
    writer.handle().submit(snapshot);
    match writer.reports().recv().unwrap() {
        Report::Failed { id, reason } => {
            assert_eq!(id, plan.id);
            assert!(reason.contains("twice"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        f.data_ids(),
        [c1.id],
        "the failed checkpoint's files are removed"
    );
    // The base stays the first checkpoint; a section whose last handoff was the failed one must
    // hand off its whole state, which the plan says.
    let next = writer.handle().begin(300).unwrap();
    assert_eq!(next.base, Some(c1.id));
    assert_eq!(next.delta_base("counts", Some(plan.id)), None);
    assert_eq!(next.delta_base("counts", Some(c1.id)), Some(c1.id));
    // Changes against a checkpoint other than the base fail the commit, naming the section.
    let mut snapshot = WorkerSnapshot::new(&next, 0);
    snapshot.changes(
        "counts",
        plan.id,
        vec![(0u64, 0u64, 0u64)],
        Vec::<(u64, u64)>::new(),
    );
    writer.handle().submit(snapshot);
    match writer.reports().recv().unwrap() {
        Report::Failed { reason, .. } => assert!(reason.contains("`counts`"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(f.data_ids(), [c1.id]);
    writer.finish();
}

#[test]
fn a_section_no_worker_hands_off_is_dropped() {
    let f = Fixture::new();
    let writer = f.writer(1, 3, None);
    let plan = writer.handle().begin(100).unwrap();
    let mut snapshot = WorkerSnapshot::new(&plan, 0);
    snapshot.whole("kept", vec![(1u64, 1u64, 1u64)]);
    snapshot.whole("removed", vec![(1u64, 1u64, 1u64)]);
    writer.handle().submit(snapshot);
    let c1 = complete(writer.reports().recv().unwrap());
    let plan = writer.handle().begin(200).unwrap();
    let mut snapshot = WorkerSnapshot::new(&plan, 0);
    snapshot.changes("kept", c1.id, Vec::<(u64, u64, u64)>::new(), vec![]);
    writer.handle().submit(snapshot);
    let c2 = complete(writer.reports().recv().unwrap());
    assert_eq!(c2.dropped, ["removed"]);
    assert_eq!(c2.written, 0, "no change, no file");
    writer.finish();
    let restored = f.restored();
    assert!(restored.section::<u64, u64>("removed", 0, 1).is_none());
    let kept = restored.section::<u64, u64>("kept", 0, 1).unwrap().unwrap();
    assert_eq!(kept, [(1, 1, 1)]);
    // State of other types is refused, not misread.
    assert!(
        restored
            .section::<String, u64>("kept", 0, 1)
            .unwrap()
            .is_err()
    );
}

#[test]
fn checkpoints_a_restore_passed_over_are_retired_by_the_next_one() {
    let f = Fixture::new();
    let writer = f.writer(1, 3, None);
    let c1 = complete(checkpoint(&writer, 1, None, &model(0..10, 1), &[]));
    let c2 = complete(checkpoint(&writer, 1, Some(c1.id), &model(0..1, 2), &[]));
    writer.finish();
    flip_byte(&f.path(&format!("manifests/{:020}", c2.id)), 30);
    let restore = f.store.restore().unwrap();
    assert_eq!(restore.skipped[0].id, c2.id);
    let restored = restore.restored.unwrap();
    let writer = f.writer(1, 3, Some(&restored));
    let c3 = complete(checkpoint(&writer, 1, Some(c1.id), &model(5..6, 2), &[]));
    writer.finish();
    assert_eq!(c3.retired, [c2.id]);
    let ids: Vec<_> = f.store.checkpoints().unwrap().iter().map(|c| c.0).collect();
    assert_eq!(ids, [c3.id, c1.id]);
    assert_eq!(f.data_ids(), [c1.id, c3.id]);
}

/// Each of `peers` workers hands off its share of `state` whole, for the writer to diff.
fn hand_off_state(writer: &Writer, peers: usize, state: &Model) -> Report {
    let plan = writer.handle().begin(100).expect("no checkpoint in flight");
    for worker in 0..peers {
        let entries: Vec<_> = state
            .iter()
            .filter(|(k, _)| owner(hash(**k), peers) == worker)
            .map(|(&k, &v)| (hash(k), k, v))
            .collect();
        let mut snapshot = WorkerSnapshot::new(&plan, worker);
        snapshot.state("counts", entries);
        writer.handle().submit(snapshot);
    }
    writer.reports().recv().unwrap()
}

#[test]
fn a_state_handed_off_whole_is_written_as_its_changes() {
    let f = Fixture::new();
    let writer = f.writer(2, 3, None);
    let mut state = model(0..10_000, 3);
    let first = complete(hand_off_state(&writer, 2, &state));
    // 1 % of the keys change: 50 updated, 40 removed, and 10 new ones.
    for k in 0..50 {
        state.insert(k, 7);
    }
    for k in 100..140 {
        state.remove(&k);
    }
    state.extend(model(20_000..20_010, 1));
    let second = complete(hand_off_state(&writer, 2, &state));
    assert!(
        second.written * 20 < first.written,
        "{} bytes for 1 % of the keys, {} for all",
        second.written,
        first.written
    );
    let third = complete(hand_off_state(&writer, 2, &state));
    assert_eq!(third.written, 0, "nothing changed, nothing written");
    writer.finish();
    let restored = f.restored();
    let chain = &restored.manifest().sections["counts"];
    assert_eq!(
        chain.len(),
        4,
        "two full runs, then the changes of one checkpoint"
    );
    assert_eq!(chain.iter().map(|r| r.entries).sum::<u64>(), 10_000 + 100);
    assert_eq!(restore_all(&restored, 2), state);
    assert_eq!(restore_all(&restored, 3), state, "redistributed by key");
}

#[test]
fn a_failed_checkpoint_leaves_the_base_to_diff_against_and_a_restore_writes_whole() {
    let f = Fixture::new();
    let writer = f.writer(1, 3, None);
    let state = model(0..100, 2);
    complete(hand_off_state(&writer, 1, &state));
    // A failed checkpoint: the section handed off twice.
    let plan = writer.handle().begin(200).unwrap();
    let mut snapshot = WorkerSnapshot::new(&plan, 0);
    snapshot.state("counts", vec![(hash(1), 1u64, 5u64)]);
    snapshot.state("counts", vec![(hash(1), 1u64, 5u64)]);
    writer.handle().submit(snapshot);
    assert!(matches!(
        writer.reports().recv().unwrap(),
        Report::Failed { .. }
    ));
    // Its digests are dropped: the next one diffs against the first, still the base.
    let next = complete(hand_off_state(&writer, 1, &state));
    assert_eq!(next.written, 0, "nothing changed since the base");
    writer.finish();
    let restored = f.restored();
    let writer = f.writer(1, 3, Some(&restored));
    let after = complete(hand_off_state(&writer, 1, &state));
    assert!(after.written > 0, "written whole after the restore");
    assert_eq!(after.written, after.size);
    writer.finish();
    assert_eq!(restore_all(&f.restored(), 1), state);
}
