//! Operators: reusable dataflow building blocks, as extension traits on timely streams. They
//! know nothing of sources or sinks.

pub mod aggregate;
pub mod command;
pub mod decode;
pub mod enrich;
pub mod fraud;
pub mod orchestrate;
pub mod pattern;
pub mod predicate;
pub mod recent;
pub mod route;
pub mod watermark;
pub mod window;

use timely::dataflow::operators::Capability;

/// Moves `cap` to the least of `times` (which must not be before it), or drops it when there
/// are none: how the window and pattern operators hold their `settled` output.
fn hold_at_least(cap: &mut Option<Capability<u64>>, times: impl IntoIterator<Item = u64>) {
    if let Some(held) = cap.as_mut() {
        match times.into_iter().min() {
            Some(t) => held.downgrade(&t),
            None => *cap = None,
        }
    }
}
