//! What a checkpoint holds: its manifest (the sections' runs, the sources' positions), the plan a
//! checkpoint is taken by, and the parts each worker contributes.
//!
//! A section's state in a checkpoint is a *chain* of runs: a full run from each worker, then the
//! runs of the checkpoints since, each holding only the entries that changed (upserts and
//! removals). Restoring applies the chain in order. A checkpoint that changed 1 % of the keys
//! thus writes about 1 % of the state; the plan asks for the whole state again once a chain's
//! changes outweigh its full runs (or it grows past [`MAX_CHAIN`] checkpoints), which bounds both
//! the store's size and the restore's work to about twice the state.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A checkpoint's number: increasing over a store's life, across runs of the job.
pub type CheckpointId = u64;

/// At most this many checkpoints' runs in one chain before the plan asks for the whole state.
pub const MAX_CHAIN: usize = 32;

/// Where a source's partition stood at a checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Where to resume: a Kafka offset, a file's byte offset, a generator's count.
    pub offset: u64,
    /// Anything else the source keeps per partition (its watermark, say), opaque to the store.
    pub state: Vec<u8>,
}

impl Position {
    /// A position with only an offset.
    pub fn at(offset: u64) -> Position {
        Position {
            offset,
            state: Vec::new(),
        }
    }
}

/// Source name → partition name → position.
pub type Positions = BTreeMap<String, BTreeMap<String, Position>>;

/// The settings a stateful section's state depends on, by setting: a restore compares them with
/// the job's (see [`crate::job::Job::state_settings`]).
pub type SectionSettings = BTreeMap<String, String>;

/// One file of a section's state, as one worker wrote it in one checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// Its key under the store's root.
    pub path: String,
    /// The checkpoint that wrote it.
    pub checkpoint: CheckpointId,
    /// The worker that wrote it, of `peers`.
    pub worker: usize,
    /// The number of workers of the run that wrote it.
    pub peers: usize,
    /// Whether it holds the worker's whole state (else: the changes since the chain's previous
    /// checkpoint).
    pub full: bool,
    /// Whether every entry's key hash is owned by `worker` of `peers` (see
    /// [`owner`](super::owner)): a reader then reads only the runs that can hold its keys.
    pub aligned: bool,
    /// The file's length.
    pub bytes: u64,
    /// Upserted and removed entries.
    pub entries: u64,
}

/// A complete checkpoint. Written last, in one atomic put: a checkpoint exists only once its
/// manifest does, and everything it names was written before it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Its number.
    pub id: CheckpointId,
    /// The complete checkpoint its chains continue (the previous one of the same history).
    pub parent: Option<CheckpointId>,
    /// The job's name.
    pub job: String,
    /// The history it belongs to: a number drawn when the job starts afresh and kept by every
    /// checkpoint restored from it, so that outputs written by an earlier, abandoned history are
    /// told apart from this one's (see [`crate::sinks::kafka`]).
    pub history: u64,
    /// The frontier time T: state is that of all times before T, positions those at T.
    pub frontier: u64,
    /// When it was taken (wall clock, ms since the Unix epoch).
    pub created_ms: u64,
    /// The number of workers that wrote it.
    pub peers: usize,
    /// Section name → its chain of runs, oldest first.
    pub sections: BTreeMap<String, Vec<Run>>,
    /// The sources' positions.
    pub positions: Positions,
    /// The state-relevant settings of the job's stateful sections when it was taken, by section
    /// (`metrics.NAME`, `sinks.NAME`, …).
    pub settings: BTreeMap<String, SectionSettings>,
}

impl Manifest {
    /// The bytes a restore reads: every run of every chain.
    pub fn size(&self) -> u64 {
        self.runs().map(|run| run.bytes).sum()
    }

    /// The bytes this checkpoint wrote itself (its runs; the rest it shares with earlier ones).
    pub fn written(&self) -> u64 {
        self.runs()
            .filter(|run| run.checkpoint == self.id)
            .map(|run| run.bytes)
            .sum()
    }

    /// Every run it names.
    pub fn runs(&self) -> impl Iterator<Item = &Run> {
        self.sections.values().flatten()
    }

    /// The sections whose next handoff should be whole: their changes since the last full runs
    /// outweigh those runs, or their chain spans more than [`MAX_CHAIN`] checkpoints.
    pub fn rewrites(&self) -> BTreeSet<String> {
        self.sections
            .iter()
            .filter(|(_, chain)| {
                let (full, changes) = chain.iter().fold((0, 0), |(f, c), run| {
                    if run.full {
                        (f + run.bytes, c)
                    } else {
                        (f, c + run.bytes)
                    }
                });
                let span = chain.last().map_or(0, |r| r.checkpoint)
                    - chain.first().map_or(0, |r| r.checkpoint);
                changes > full || span as usize >= MAX_CHAIN
            })
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// A checkpoint about to be taken: every worker hands off its state for times before `frontier`
/// and its sources' positions at it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The checkpoint's number.
    pub id: CheckpointId,
    /// The frontier time T.
    pub frontier: u64,
    /// The last complete checkpoint, which changes are taken against; `None`: there is none, and
    /// every section hands off its whole state.
    pub base: Option<CheckpointId>,
    /// Sections that must hand off their whole state even so (see [`Manifest::rewrites`]).
    pub rewrite: BTreeSet<String>,
}

impl Plan {
    /// The checkpoint a section may hand off its changes against, given the checkpoint of its
    /// previous handoff: `Some(base)` when that handoff made the plan's base and the section is
    /// not to be rewritten; `None` when it must hand off its whole state.
    ///
    /// # Examples
    ///
    /// ```
    /// use eddy::state::Plan;
    ///
    /// let plan = Plan { id: 5, frontier: 1000, base: Some(4), rewrite: ["q2".into()].into() };
    /// assert_eq!(plan.delta_base("q1", Some(4)), Some(4));
    /// assert_eq!(plan.delta_base("q1", Some(3)), None); // 4 failed or came from elsewhere
    /// assert_eq!(plan.delta_base("q2", Some(4)), None); // asked for in full
    /// ```
    pub fn delta_base(
        &self,
        section: &str,
        previous: Option<CheckpointId>,
    ) -> Option<CheckpointId> {
        (self.base.is_some() && previous == self.base && !self.rewrite.contains(section))
            .then_some(self.base)
            .flatten()
    }
}

/// One section's handoff by one worker, as written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectionPart {
    /// The checkpoint its changes are against; `None`: it is the worker's whole state.
    pub since: Option<CheckpointId>,
    /// Its run; `None` when it held no entry (nothing to write).
    pub run: Option<Run>,
}

/// What one worker wrote for a checkpoint. A checkpoint can be committed once every worker's part
/// is in; parts written in another process travel as data (they are `Serialize`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerPart {
    /// The checkpoint.
    pub checkpoint: CheckpointId,
    /// The worker.
    pub worker: usize,
    /// Section name → what the worker wrote of it.
    pub sections: BTreeMap<String, SectionPart>,
    /// The positions of the partitions the worker reads.
    pub positions: Positions,
}

/// The manifest of checkpoint `plan` from every worker's part (`parts`, one from each of the
/// `peers` workers), continuing the chains of `base` (the manifest of `plan.base`).
///
/// Every worker must hand off every section; a section's handoffs are either all whole or all
/// changes against `plan.base`; a partition's position comes from one worker. Sections that `base`
/// has and no worker handed off are dropped. The settings are left empty, for the writer to
/// record its job's.
pub fn commit(
    plan: &Plan,
    job: &str,
    created_ms: u64,
    base: Option<&Manifest>,
    peers: usize,
    parts: &[WorkerPart],
) -> Result<Manifest, String> {
    let mut workers: Vec<usize> = parts.iter().map(|p| p.worker).collect();
    workers.sort_unstable();
    if workers != (0..peers).collect::<Vec<_>>() {
        return Err(format!("parts of workers {workers:?}, expected 0..{peers}"));
    }
    if let Some(part) = parts.iter().find(|p| p.checkpoint != plan.id) {
        return Err(format!(
            "worker {}'s part is of checkpoint {}, not {}",
            part.worker, part.checkpoint, plan.id
        ));
    }
    if base.map(|b| b.id) != plan.base {
        return Err(format!(
            "the base manifest is {:?}, the plan's {:?}",
            base.map(|b| b.id),
            plan.base
        ));
    }
    let names: BTreeSet<&String> = parts.iter().flat_map(|p| p.sections.keys()).collect();
    let mut sections = BTreeMap::new();
    for name in names {
        let handoffs: Vec<&SectionPart> =
            parts.iter().filter_map(|p| p.sections.get(name)).collect();
        if handoffs.len() != peers {
            return Err(format!(
                "section `{name}` was handed off by {} of {peers} workers",
                handoffs.len()
            ));
        }
        let runs = handoffs.iter().filter_map(|h| h.run.clone());
        let mut chain = if handoffs.iter().all(|h| h.since.is_none()) {
            Vec::new()
        } else if handoffs
            .iter()
            .all(|h| h.since.is_some() && h.since == plan.base)
        {
            match base.and_then(|b| b.sections.get(name)) {
                Some(chain) => chain.clone(),
                None => {
                    return Err(format!(
                        "section `{name}` handed off changes, but checkpoint {:?} has no such \
                         section",
                        plan.base
                    ));
                }
            }
        } else {
            return Err(format!(
                "section `{name}`: its handoffs are against {:?}, but must all be whole or all \
                 against the base {:?}",
                handoffs.iter().map(|h| h.since).collect::<Vec<_>>(),
                plan.base
            ));
        };
        chain.extend(runs);
        sections.insert(name.clone(), chain);
    }
    let mut positions = Positions::new();
    let mut owners = BTreeMap::new();
    for part in parts {
        for (source, partitions) in &part.positions {
            for (partition, position) in partitions {
                if let Some(other) = owners.insert((source, partition), part.worker) {
                    return Err(format!(
                        "the position of `{source}` partition `{partition}` came from workers \
                         {other} and {}",
                        part.worker
                    ));
                }
                positions
                    .entry(source.clone())
                    .or_default()
                    .insert(partition.clone(), position.clone());
            }
        }
    }
    Ok(Manifest {
        id: plan.id,
        parent: plan.base,
        job: job.into(),
        history: 0,
        frontier: plan.frontier,
        created_ms,
        peers,
        sections,
        positions,
        settings: BTreeMap::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(checkpoint: CheckpointId, worker: usize, full: bool, bytes: u64) -> Run {
        Run {
            path: format!("data/{checkpoint}/s/{worker}"),
            checkpoint,
            worker,
            peers: 2,
            full,
            aligned: true,
            bytes,
            entries: 1,
        }
    }

    fn part(checkpoint: CheckpointId, worker: usize, since: Option<CheckpointId>) -> WorkerPart {
        let run = run(checkpoint, worker, since.is_none(), 10);
        WorkerPart {
            checkpoint,
            worker,
            sections: [(
                "s".to_string(),
                SectionPart {
                    since,
                    run: Some(run),
                },
            )]
            .into(),
            positions: [(
                "src".to_string(),
                [(worker.to_string(), Position::at(checkpoint))].into(),
            )]
            .into(),
        }
    }

    fn plan(id: CheckpointId, base: Option<CheckpointId>) -> Plan {
        Plan {
            id,
            frontier: id * 100,
            base,
            rewrite: BTreeSet::new(),
        }
    }

    #[test]
    fn changes_extend_the_base_chain_and_whole_state_starts_a_new_one() {
        let first = commit(
            &plan(1, None),
            "j",
            0,
            None,
            2,
            &[part(1, 1, None), part(1, 0, None)],
        )
        .unwrap();
        assert_eq!(first.sections["s"].len(), 2);
        assert_eq!(first.positions["src"].len(), 2);
        let second = commit(
            &plan(2, Some(1)),
            "j",
            0,
            Some(&first),
            2,
            &[part(2, 0, Some(1)), part(2, 1, Some(1))],
        )
        .unwrap();
        let chain: Vec<_> = second.sections["s"].iter().map(|r| r.checkpoint).collect();
        assert_eq!(chain, [1, 1, 2, 2]);
        assert_eq!((second.size(), second.written()), (40, 20));
        assert_eq!(second.parent, Some(1));
        let third = commit(
            &plan(3, Some(2)),
            "j",
            0,
            Some(&second),
            2,
            &[part(3, 0, None), part(3, 1, None)],
        )
        .unwrap();
        assert_eq!(third.size(), 20);
    }

    #[test]
    fn inconsistent_handoffs_are_refused_with_the_reason() {
        let first = commit(
            &plan(1, None),
            "j",
            0,
            None,
            2,
            &[part(1, 0, None), part(1, 1, None)],
        )
        .unwrap();
        let mixed = commit(
            &plan(2, Some(1)),
            "j",
            0,
            Some(&first),
            2,
            &[part(2, 0, Some(1)), part(2, 1, None)],
        );
        assert!(mixed.unwrap_err().contains("all be whole or all against"));
        let stale = commit(
            &plan(3, Some(1)),
            "j",
            0,
            Some(&first),
            2,
            &[part(3, 0, Some(2)), part(3, 1, Some(2))],
        );
        assert!(stale.unwrap_err().contains("against"));
        let missing = commit(
            &plan(2, Some(1)),
            "j",
            0,
            Some(&first),
            2,
            &[part(2, 0, Some(1))],
        );
        assert!(missing.unwrap_err().contains("expected 0..2"));
        let mut twice = part(2, 1, None);
        twice.positions = part(2, 0, None).positions;
        let error = commit(&plan(2, None), "j", 0, None, 2, &[part(2, 0, None), twice]);
        assert!(error.unwrap_err().contains("came from workers 0 and 1"));
    }

    #[test]
    fn chains_heavy_with_changes_or_long_are_rewritten() {
        let mut manifest = commit(
            &plan(1, None),
            "j",
            0,
            None,
            2,
            &[part(1, 0, None), part(1, 1, None)],
        )
        .unwrap();
        assert!(manifest.rewrites().is_empty());
        let chain = manifest.sections.get_mut("s").unwrap();
        chain.push(run(2, 0, false, 15));
        assert!(manifest.rewrites().is_empty());
        manifest
            .sections
            .get_mut("s")
            .unwrap()
            .push(run(3, 0, false, 6));
        assert_eq!(manifest.rewrites(), ["s".to_string()].into());
        let long = manifest.sections.get_mut("s").unwrap();
        long.truncate(2);
        long.push(run(1 + MAX_CHAIN as u64, 0, false, 0));
        assert_eq!(manifest.rewrites(), ["s".to_string()].into());
    }
}
