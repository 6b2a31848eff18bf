//! A sink that drops what it receives, as Flink's `blackhole` connector does: for measuring a
//! dataflow without the cost of writing its output, and for dry runs.

use std::ops::Range;

use serde::Deserialize;
use timely::ExchangeData;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use super::Encode;
use super::file::Order;
use super::registry::{Settings, Sink, SinkKind};
use crate::settings::Check;
use crate::state::SectionCheckpoint;

/// Drops a stream.
///
/// # Examples
///
/// ```
/// use eddy::sinks::discard::Discard;
/// use timely::dataflow::operators::capture::Extract;
/// use timely::dataflow::operators::{Capture, ToStream};
///
/// let flushed = timely::example(|scope| {
///     (0..1_000u64).to_stream(scope).container::<Vec<_>>().discard().capture()
/// });
/// // Nothing comes through, and the flushed stream ends with the input.
/// assert!(flushed.extract().is_empty());
/// ```
pub trait Discard<'scope> {
    /// Drops every item on arrival; the returned stream's frontier follows the input's, as a
    /// sink's flushed stream does.
    fn discard(self) -> StreamVec<'scope, u64, ()>;
}

impl<'scope, D: 'static> Discard<'scope> for StreamVec<'scope, u64, D> {
    fn discard(self) -> StreamVec<'scope, u64, ()> {
        self.unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(Pipeline, "Discard", |_, _| {
            |input, _output| input.for_each(|_, data| data.clear())
        })
    }
}

/// `kind = "discard"`: a sink that drops what it is given; it has no settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscardSink {}

impl Settings for DiscardSink {
    fn check<C: Check>(&self, _: &mut C, _: Range<usize>, _: &str) -> Option<SinkKind> {
        Some(SinkKind::Discard(*self))
    }
}

impl Sink for DiscardSink {
    fn write<'scope, D: ExchangeData, E: Encode<D>>(
        &self,
        stream: StreamVec<'scope, u64, D>,
        _encoder: E,
        _order: Option<Order<D>>,
        _checkpoint: Option<SectionCheckpoint>,
    ) -> anyhow::Result<StreamVec<'scope, u64, ()>> {
        Ok(stream.discard())
    }
}
