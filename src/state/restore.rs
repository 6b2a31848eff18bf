//! Restoring: the newest checkpoint whose every file checks out, and each worker's share of its
//! sections' state.

use std::collections::HashMap;
use std::hash::Hash;

use anyhow::{Result, anyhow};
use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;

use super::format::{self, FormatError, Kind};
use super::manifest::{CheckpointId, Manifest, Positions, Run};
use super::shard::{may_hold, owner};
use super::snapshot::{Entries, decode_run};
use super::store::CheckpointStore;

/// A checkpoint that failed its checks, passed over for an older one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// Its id.
    pub id: CheckpointId,
    /// What was wrong, naming the file (for the log).
    pub reason: String,
}

/// What a restore found: the checkpoint restored, if any, and the newer ones skipped.
pub struct Restore {
    /// The newest checkpoint that checked out.
    pub restored: Option<Restored>,
    /// The newer checkpoints that did not, newest first.
    pub skipped: Vec<Skipped>,
}

/// A checkpoint read back and checked: every file's length and checksum. Shared by the workers
/// of a process, each of which takes its share of every section.
pub struct Restored {
    manifest: Manifest,
    /// Run key → the run's body.
    bodies: HashMap<String, Vec<u8>>,
}

impl CheckpointStore {
    /// Reads back the newest complete checkpoint whose manifest and runs all check out, passing
    /// over (and reporting) newer ones that do not. Every run is checked, not only those this
    /// process's workers own, so every process of a job picks the same checkpoint. Errors are
    /// those of the store itself (it cannot be listed), not of a checkpoint.
    ///
    /// # Examples
    ///
    /// ```
    /// use eddy::state::{CheckpointStore, Location};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = CheckpointStore::open(&Location::Dir(dir.path().into())).unwrap();
    /// let restore = store.restore().unwrap();
    /// assert!(restore.restored.is_none() && restore.skipped.is_empty());
    /// ```
    pub fn restore(&self) -> Result<Restore> {
        let mut skipped = Vec::new();
        for id in self.manifest_ids()?.into_iter().rev() {
            match self.read_checkpoint(id) {
                Ok(restored) => {
                    return Ok(Restore {
                        restored: Some(restored),
                        skipped,
                    });
                }
                Err(e) => skipped.push(Skipped {
                    id,
                    reason: format!("{e:#}"),
                }),
            }
        }
        Ok(Restore {
            restored: None,
            skipped,
        })
    }

    /// Checkpoint `id` with every run read and checked.
    fn read_checkpoint(&self, id: CheckpointId) -> Result<Restored> {
        let manifest = self.manifest(id)?;
        let runs: Vec<&Run> = manifest.runs().collect();
        let reads: Vec<_> = runs
            .iter()
            .map(|run| self.spawn(self.get_future(run.path.clone())))
            .collect();
        let mut bodies = HashMap::new();
        for (run, read) in runs.iter().zip(reads) {
            let mut file = self.block_on(read)??;
            let body = format::open(Kind::Run, &file)
                .map_err(|e| anyhow!("`{}`: {e}", run.path))?
                .len();
            if file.len() as u64 != run.bytes {
                return Err(anyhow!(
                    "`{}` has {} bytes where the manifest says {}: another file",
                    run.path,
                    file.len(),
                    run.bytes
                ));
            }
            file.drain(..file.len() - body);
            bodies.insert(run.path.clone(), file);
        }
        Ok(Restored { manifest, bodies })
    }
}

impl Restored {
    /// Forgets the state of section `name` (with its parts `name/…`, and of the sinks'
    /// sections `… → name`), which then restores empty; says whether it had any.
    pub fn forget(&mut self, name: &str) -> bool {
        let before = self.manifest.sections.len();
        let (suffix, prefix) = (format!(" → {name}"), format!("{name}/"));
        self.manifest.sections.retain(|section, _| {
            section != name && !section.ends_with(&suffix) && !section.starts_with(&prefix)
        });
        self.manifest.sections.len() < before
    }

    /// The checkpoint's manifest: id, frontier, sections.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Where every source's partitions stood.
    pub fn positions(&self) -> &Positions {
        &self.manifest.positions
    }

    /// Worker `worker` of `peers`'s share of section `name`: the entries whose key hash it owns
    /// ([`owner`]), its chain applied oldest first. `None` when the checkpoint has no such
    /// section; a decoding error when the section's state is not of types `K` and `V`. The order
    /// of the entries is the same for the same checkpoint, worker and worker count.
    ///
    /// # Examples
    ///
    /// ```
    /// # use eddy::state::{CheckpointStore, Location, Writer, WriterConfig, WorkerSnapshot};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let store = CheckpointStore::open(&Location::Dir(dir.path().into())).unwrap();
    /// # let writer = Writer::start(store.clone(), WriterConfig::new("job", 1, 3), None).unwrap();
    /// # let plan = writer.handle().begin(100).unwrap();
    /// # let mut snapshot = WorkerSnapshot::new(&plan, 0);
    /// # snapshot.whole("counts", vec![(2u64, "b".to_string(), 1u64), (3, "c".to_string(), 2)]);
    /// # writer.handle().submit(snapshot);
    /// # writer.finish();
    /// let restored = store.restore().unwrap().restored.unwrap();
    /// // Restored on two workers: hash 2 belongs to worker 0, hash 3 to worker 1.
    /// let mine = restored.section::<String, u64>("counts", 1, 2).unwrap().unwrap();
    /// assert_eq!(mine, vec![(3, "c".to_string(), 2)]);
    /// ```
    pub fn section<K, V>(
        &self,
        name: &str,
        worker: usize,
        peers: usize,
    ) -> Option<Result<Entries<K, V>, FormatError>>
    where
        K: DeserializeOwned + Hash + Eq,
        V: DeserializeOwned,
    {
        let chain = self.manifest.sections.get(name)?;
        Some(self.apply(chain, worker, peers))
    }

    fn apply<K, V>(
        &self,
        chain: &[Run],
        worker: usize,
        peers: usize,
    ) -> Result<Entries<K, V>, FormatError>
    where
        K: DeserializeOwned + Hash + Eq,
        V: DeserializeOwned,
    {
        let runs: Vec<&Run> = chain
            .iter()
            .filter(|run| !run.aligned || may_hold(run.worker, run.peers, worker, peers))
            .collect();
        let mine = |hash: u64| owner(hash, peers) == worker;
        // The common case, one run of whole state that is all this worker's: no map needed.
        if let [run] = runs[..]
            && run.full
            && run.aligned
            && run.peers == peers
        {
            return Ok(decode_run(&self.bodies[&run.path])?.0);
        }
        let mut state: FxHashMap<K, (u64, V)> = FxHashMap::default();
        for run in runs {
            let (upserts, removals) = decode_run::<K, V>(&self.bodies[&run.path])?;
            for (hash, key, value) in upserts {
                if mine(hash) {
                    state.insert(key, (hash, value));
                }
            }
            for (hash, key) in removals {
                if mine(hash) {
                    state.remove(&key);
                }
            }
        }
        Ok(state
            .into_iter()
            .map(|(key, (hash, value))| (hash, key, value))
            .collect())
    }
}
