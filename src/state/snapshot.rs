//! What a worker hands off for a checkpoint: each section's entries, whole or as changes, and its
//! sources' positions. The handoff moves the entries; encoding and writing happen on the store's
//! writer thread, so the worker goes on at once.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::format::{self, FormatError, Frame};
use super::manifest::{CheckpointId, Plan, Position, Positions};
use super::shard::owner;

/// A section's entries: (key hash, key, value).
pub type Entries<K, V> = Vec<(u64, K, V)>;

/// One worker's handoff for one checkpoint.
///
/// # Examples
///
/// ```
/// use eddy::state::{Plan, Position, WorkerSnapshot};
///
/// let plan = Plan { id: 1, frontier: 1_000, base: None, rewrite: Default::default() };
/// let mut snapshot = WorkerSnapshot::new(&plan, 0);
/// // (key hash, key, value): the hash is the one the operator exchanges the key by.
/// snapshot.whole("counts", vec![(17u64, "alice".to_string(), 3i64)]);
/// snapshot.position("payments", "payments/0", Position::at(42));
/// ```
pub struct WorkerSnapshot {
    pub(super) checkpoint: CheckpointId,
    pub(super) worker: usize,
    pub(super) sections: Vec<SectionSnapshot>,
    pub(super) positions: Positions,
}

/// One section of a handoff.
pub(super) struct SectionSnapshot {
    pub(super) name: String,
    pub(super) since: Option<CheckpointId>,
    pub(super) entries: Box<dyn Encode>,
}

impl WorkerSnapshot {
    /// An empty handoff of worker `worker` for checkpoint `plan`.
    pub fn new(plan: &Plan, worker: usize) -> WorkerSnapshot {
        WorkerSnapshot {
            checkpoint: plan.id,
            worker,
            sections: Vec::new(),
            positions: Positions::new(),
        }
    }

    /// The checkpoint it is for.
    pub fn checkpoint(&self) -> CheckpointId {
        self.checkpoint
    }

    /// Hands off section `name`'s whole state on this worker: (key hash, key, value) entries,
    /// each key once.
    pub fn whole<K, V>(&mut self, name: &str, entries: Vec<(u64, K, V)>)
    where
        K: Serialize + Send + 'static,
        V: Serialize + Send + 'static,
    {
        self.push(name, None, entries, Vec::new());
    }

    /// Hands off what changed in section `name` on this worker since checkpoint `since` (which
    /// [`Plan::delta_base`] gives): entries upserted, and (key hash, key) of those removed.
    pub fn changes<K, V>(
        &mut self,
        name: &str,
        since: CheckpointId,
        upserts: Vec<(u64, K, V)>,
        removals: Vec<(u64, K)>,
    ) where
        K: Serialize + Send + 'static,
        V: Serialize + Send + 'static,
    {
        self.push(name, Some(since), upserts, removals);
    }

    /// Records where partition `partition` of source `source` stood at the checkpoint's frontier.
    pub fn position(&mut self, source: &str, partition: &str, position: Position) {
        self.positions
            .entry(source.into())
            .or_default()
            .insert(partition.into(), position);
    }

    fn push<K, V>(
        &mut self,
        name: &str,
        since: Option<CheckpointId>,
        upserts: Vec<(u64, K, V)>,
        removals: Vec<(u64, K)>,
    ) where
        K: Serialize + Send + 'static,
        V: Serialize + Send + 'static,
    {
        self.sections.push(SectionSnapshot {
            name: name.into(),
            since,
            entries: Box::new(Changes { upserts, removals }),
        });
    }
}

/// Entries that can be written as a run's body, whatever their types.
pub(super) trait Encode: Send {
    /// Upserts plus removals.
    fn len(&self) -> u64;
    /// Whether every entry's hash is owned by `worker` of `peers`.
    fn aligned(&self, worker: usize, peers: usize) -> bool;
    /// Appends the body to `frame`.
    fn encode(&self, frame: &mut Frame) -> Result<(), FormatError>;
}

struct Changes<K, V> {
    upserts: Vec<(u64, K, V)>,
    removals: Vec<(u64, K)>,
}

impl<K: Serialize + Send, V: Serialize + Send> Encode for Changes<K, V> {
    fn len(&self) -> u64 {
        (self.upserts.len() + self.removals.len()) as u64
    }

    fn aligned(&self, worker: usize, peers: usize) -> bool {
        let hashes = self.upserts.iter().map(|e| e.0);
        hashes
            .chain(self.removals.iter().map(|e| e.0))
            .all(|hash| owner(hash, peers) == worker)
    }

    fn encode(&self, frame: &mut Frame) -> Result<(), FormatError> {
        frame.encode(&(&self.upserts, &self.removals))
    }
}

/// A run's body read back: its upserts and removals.
pub(super) type RunBody<K, V> = (Vec<(u64, K, V)>, Vec<(u64, K)>);

/// Decodes a run's body (as [`format::open`] gave it).
pub(super) fn decode_run<K: DeserializeOwned, V: DeserializeOwned>(
    body: &[u8],
) -> Result<RunBody<K, V>, FormatError> {
    format::decode(body)
}
