//! Sinks: where results go. Every sink is an operator that returns a *flushed* stream, whose
//! frontier passes a time only once everything the sink received at that time is durable; the
//! sources commit their positions behind a probe on those streams (at-least-once).

pub mod discard;
pub mod file;
pub mod format;
pub mod kafka;
pub mod notify;
pub mod registry;
pub mod topic;
pub mod view;

pub use registry::{Settings, Sink, SinkKind, SinkSettings};

/// How a sink turns an item into bytes.
pub trait Encode<D>: 'static {
    /// Writes `item` as one message or line (without a newline).
    fn value(&self, item: &D, out: &mut Vec<u8>);
    /// Writes the message key of `item`; returns false when it has none.
    fn key(&self, _item: &D, _out: &mut Vec<u8>) -> bool {
        false
    }
    /// Writes the Kafka topic of `item` into `out` when the encoder chooses topics per item;
    /// false: the sink's own topic.
    fn topic(&self, _item: &D, _out: &mut String) -> bool {
        false
    }
    /// Message headers of `item`.
    fn headers(&self, _item: &D) -> Vec<(&'static str, String)> {
        Vec::new()
    }
    /// A first line for files, such as a CSV header.
    fn preamble(&self) -> Option<String> {
        None
    }
}
