//! Eddy: a stream-processing dataflow engine on timely dataflow.
//!
//! Events arrive from Kafka topics, files or the built-in generator ([`sources`]), are stamped
//! with event time and watermarks, flow through [`operators`] assembled by [`dataflows`], and
//! leave through [`sinks`]. A job is described by a TOML file ([`job`]) or by SQL ([`sql`]). The
//! demo, the CPaaS stand-in and the load generator are the CLI's and the tests' [`tools`], not the
//! engine's API.

#![deny(missing_docs)]

pub mod allocator;
pub mod backlog;
pub mod cluster;
pub mod dataflows;
pub mod domain;
pub mod expr;
pub mod failure;
pub mod job;
pub mod kafka;
pub mod operators;
pub mod progress;
pub mod record;
pub mod run;
pub mod server;
pub mod settings;
pub mod sinks;
pub mod sources;
pub mod sql;
pub mod state;
pub mod stats;
pub mod terminal;
pub mod tools;

pub use expr::{Predicate, PredicateError};
pub use operators::aggregate::{Aggregate, AggregateCell, AggregateKind, FieldAggregates};
pub use operators::enrich::{Enrich, Table};
pub use operators::key::{FieldKey, GroupKey};
pub use operators::recent::KeepRecent;
pub use operators::route::{Route, Routed};
pub use operators::window::{WindowAggregate, WindowResult, WindowSpec, WindowStreams, Windows};
pub use record::{DeadLetter, Event, Record, Schema, Value};
