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
    pub(super) handoff: Handoff,
    pub(super) entries: Box<dyn Encode>,
}

/// How a section's entries relate to its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Handoff {
    /// The whole state, written whole.
    Whole,
    /// The whole state, written as what changed since the writer's last run of it where the plan
    /// allows (see [`Digest`]).
    State,
    /// What changed since this checkpoint.
    Changes(CheckpointId),
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
    /// each key once. It is written whole.
    pub fn whole<K, V>(&mut self, name: &str, entries: Vec<(u64, K, V)>)
    where
        K: Serialize + Send + 'static,
        V: Serialize + Send + 'static,
    {
        self.push(name, Handoff::Whole, entries, Vec::new());
    }

    /// Hands off section `name`'s whole state on this worker, as [`WorkerSnapshot::whole`]; the
    /// writer writes only the entries upserted and removed since its last run of the section on
    /// this worker, when that run is in the plan's base (see [`Plan::delta_base`]), and the whole
    /// state otherwise. What a checkpoint writes thus follows the change, not the state's size;
    /// the writer keeps a digest of each key's last value to tell (see [`Digest`]).
    pub fn state<K, V>(&mut self, name: &str, entries: Vec<(u64, K, V)>)
    where
        K: Serialize + Send + 'static,
        V: Serialize + Send + 'static,
    {
        self.push(name, Handoff::State, entries, Vec::new());
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
        self.push(name, Handoff::Changes(since), upserts, removals);
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
        handoff: Handoff,
        upserts: Vec<(u64, K, V)>,
        removals: Vec<(u64, K)>,
    ) where
        K: Serialize + Send + 'static,
        V: Serialize + Send + 'static,
    {
        self.sections.push(SectionSnapshot {
            name: name.into(),
            handoff,
            entries: Box::new(Changes { upserts, removals }),
        });
    }
}

/// Entries that can be written as a run's body, whatever their types.
pub(super) trait Encode: Send {
    /// Appends the body to `frame`: the upserts and removals as handed off or, against
    /// `previous` (the digest of the last state written), only the upserts whose value changed
    /// and the removals of the keys `previous` has and the upserts do not; then the digest of the
    /// upserts as a state.
    fn encode(
        &self,
        previous: Option<&Digest>,
        frame: &mut Frame,
        worker: (usize, usize),
    ) -> Result<Encoded, FormatError>;
}

/// What [`Encode::encode`] wrote.
pub(super) struct Encoded {
    /// Upserts plus removals written.
    pub(super) entries: u64,
    /// Whether every entry written has a hash owned by the worker.
    pub(super) aligned: bool,
    /// The digest of the upserts, taken as the section's whole state on the worker.
    pub(super) digest: Digest,
}

/// What a writer keeps of a section's state as it last wrote it on one worker: per key, its
/// encoding, its hash and a 64-bit SipHash of its value's encoding (see [`siphash`]). Comparing
/// the next state's values against it finds what changed; two values of one key taken as equal
/// when they differ would take a collision of the 64-bit hash. The keys' encodings lie one after
/// another in one buffer, indexed by a fast hash of them (and compared in full on lookup).
#[derive(Default)]
pub(super) struct Digest {
    index: rustc_hash::FxHashMap<u64, Kept>,
    keys: Vec<u8>,
    /// False when two keys of the state share their index hash: the digest cannot hold both,
    /// and the next state is written whole.
    pub(super) exact: bool,
}

/// A key in a [`Digest`].
#[derive(Clone, Copy)]
struct Kept {
    /// The entry's key hash.
    hash: u64,
    /// The SipHash of its value's encoding.
    value: u64,
    /// Where its encoding lies in the digest's buffer.
    at: usize,
    len: usize,
}

impl Digest {
    fn with_capacity(keys: usize) -> Digest {
        let mut index = rustc_hash::FxHashMap::default();
        index.reserve(keys);
        Digest {
            index,
            keys: Vec::new(),
            exact: true,
        }
    }

    /// The key encoded as `key`, whose index hash is `at` ([`index_hash`]), if the digest has it.
    fn get(&self, key: &[u8], at: u64) -> Option<Kept> {
        self.index
            .get(&at)
            .filter(|kept| &self.keys[kept.at..kept.at + kept.len] == key)
            .copied()
    }

    fn insert(&mut self, key: &[u8], at: u64, hash: u64, value: u64) {
        let kept = Kept {
            hash,
            value,
            at: self.keys.len(),
            len: key.len(),
        };
        self.keys.extend_from_slice(key);
        if self.index.insert(at, kept).is_some() {
            self.exact = false;
        }
    }

    /// Every key as (its encoding, its entry's hash).
    fn keys(&self) -> impl Iterator<Item = (&[u8], u64)> {
        self.index
            .values()
            .map(|kept| (&self.keys[kept.at..kept.at + kept.len], kept.hash))
    }
}

struct Changes<K, V> {
    upserts: Vec<(u64, K, V)>,
    removals: Vec<(u64, K)>,
}

impl<K: Serialize + Send, V: Serialize + Send> Encode for Changes<K, V> {
    fn encode(
        &self,
        previous: Option<&Digest>,
        frame: &mut Frame,
        (worker, peers): (usize, usize),
    ) -> Result<Encoded, FormatError> {
        let mut digest = Digest::with_capacity(self.upserts.len());
        // The body is bincode of (Vec<(u64, K, V)>, Vec<(u64, K)>): each vector a length, then its
        // elements' encodings one after another, so it can be put together from the parts.
        let (mut upserts, mut count) = (Vec::new(), 0u64);
        let mut aligned = true;
        // The entry's key, then its value.
        let mut entry = Vec::new();
        for (hash, key, value) in &self.upserts {
            entry.clear();
            format::encode_into(&mut entry, key)?;
            let key_len = entry.len();
            format::encode_into(&mut entry, value)?;
            let sum = siphash(&entry[key_len..]);
            let at = index_hash(&entry[..key_len]);
            let unchanged = previous
                .and_then(|p| p.get(&entry[..key_len], at))
                .is_some_and(|was| was.value == sum);
            if !unchanged {
                format::encode_into(&mut upserts, hash)?;
                upserts.extend_from_slice(&entry);
                count += 1;
                aligned &= owner(*hash, peers) == worker;
            }
            digest.insert(&entry[..key_len], at, *hash, sum);
        }
        let (mut removals, mut removed) = (Vec::new(), 0u64);
        let mut remove = |hash: u64, key: &[u8]| -> Result<(), FormatError> {
            format::encode_into(&mut removals, &hash)?;
            removals.extend_from_slice(key);
            removed += 1;
            aligned &= owner(hash, peers) == worker;
            Ok(())
        };
        for (hash, key) in &self.removals {
            entry.clear();
            format::encode_into(&mut entry, key)?;
            remove(*hash, &entry)?;
        }
        if let Some(previous) = previous {
            for (key, hash) in previous.keys() {
                if digest.get(key, index_hash(key)).is_none() {
                    remove(hash, key)?;
                }
            }
        }
        frame.encode(&count)?;
        frame.append(&upserts);
        frame.encode(&removed)?;
        frame.append(&removals);
        Ok(Encoded {
            entries: count + removed,
            aligned,
            digest,
        })
    }
}

/// Where a key's encoding is indexed in a [`Digest`]: a fast hash, as a lookup compares the
/// encoding in full.
fn index_hash(key: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut hasher = rustc_hash::FxHasher::default();
    hasher.write(key);
    hasher.finish()
}

/// A digest of `bytes`: the standard library's SipHash with its fixed keys, the same for the same
/// bytes throughout a process (digests are never stored).
fn siphash(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut hasher = std::hash::DefaultHasher::new();
    hasher.write(bytes);
    hasher.finish()
}

/// A run's body read back: its upserts and removals.
pub(super) type RunBody<K, V> = (Vec<(u64, K, V)>, Vec<(u64, K)>);

/// Decodes a run's body (as [`format::open`] gave it).
pub(super) fn decode_run<K: DeserializeOwned, V: DeserializeOwned>(
    body: &[u8],
) -> Result<RunBody<K, V>, FormatError> {
    format::decode(body)
}
