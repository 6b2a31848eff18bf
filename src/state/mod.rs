//! Durable state: checkpoints of a job's operator state and source positions, in a local
//! directory or S3.
//!
//! A checkpoint is aligned on a timely frontier time T. Each worker hands off a
//! [`WorkerSnapshot`] (its sections' state for times before T, its sources' positions at T) to
//! the [`Writer`], which encodes and writes it off the dataflow's threads and, once every worker's
//! part is in, writes the [`Manifest`] last, in one atomic put: only then is the checkpoint
//! complete. [`CheckpointStore::restore`] reads the newest complete checkpoint whose files all
//! pass their checks ([`format`]: versioned, CRC32C-checksummed), and reports the newer ones it
//! passed over and why; [`Restored::section`] gives each worker its share of a section's state.
//!
//! **Incremental state.** A section is stored as a chain of runs per checkpoint and worker: the
//! whole state once, then in each later checkpoint only the entries that changed (upserts and
//! removals), so the cost of a checkpoint follows the change since the last one, not the size of
//! the state. Per-key-range files rewritten when dirty were the alternative, but a 1 % change
//! spread over the keys dirties every range; a change log does not care where the changes fall.
//! When a chain's changes outweigh its whole-state runs (or it spans [`MAX_CHAIN`] checkpoints),
//! the [`Plan`] asks that section for its whole state again, so the store holds and a restore
//! reads at most about twice the state. Manifests name runs of earlier checkpoints; retention
//! (`keep`) deletes only manifests outside the kept history and files no kept manifest names.
//!
//! **Rescaling.** Entries carry the key hash their operator exchanges them by; a worker `i` of
//! `peers` restores the entries with `hash % peers == i` ([`owner`]), reading only the runs that
//! can hold them ([`shard`]).

mod checkpointing;
pub mod format;
mod listing;
mod location;
mod manifest;
mod restore;
pub mod shard;
mod snapshot;
mod store;
mod writer;

#[cfg(test)]
mod tests;

pub use checkpointing::{
    Checkpointing, Part, SectionCheckpoint, SourceCheckpoint, WorkerCheckpoint,
};
pub use listing::listing;
pub use location::Location;
pub use manifest::{
    CheckpointId, MAX_CHAIN, Manifest, Plan, Position, Positions, Run, SectionPart,
    SectionSettings, WorkerPart, commit,
};
pub use restore::{Restore, Restored, Skipped};
pub use shard::owner;
pub use snapshot::{Entries, WorkerSnapshot};
pub use store::{CheckpointStore, Listed};
pub use writer::{PartResult, Report, Status, Summary, Writer, WriterConfig, WriterHandle};
