//! Durable state: checkpoints of a job's operator state and source positions.

mod location;

pub use location::Location;
