//! How the window and pattern operators tell the sources which input they may commit.
//!
//! An operator's `fired` output says which windows (or matches) are emitted and flushed; its
//! `settled` output says which input times no longer matter to it. A source commits the input
//! sent before the settled frontier, with the fired frontier as the checkpoint's
//! `emitted_before`, so every window whose records it commits must already be counted there,
//! *as the committing worker sees it*. Workers fire a window at different moments, and see each
//! other's progress at different moments, so an operator keeps a fired window's input unsettled
//! until the [`Acknowledge`]d frontier has passed its fire time: until every worker has seen
//! the fired frontier pass it.

use std::collections::VecDeque;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{ProbeHandle, StreamVec};

/// The probes a window or pattern operator judges delivery by.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The sinks' flushed streams: a result emitted at time `t` is durable once this passes `t`.
    pub flushed: ProbeHandle<u64>,
    /// Every operator's fired streams, [`Acknowledge`]d: passes `t` once every worker has seen
    /// the fired frontier pass `t`.
    pub acknowledged: ProbeHandle<u64>,
}

/// Input an operator has turned into fired output, kept unsettled until the acknowledged
/// frontier passes the time that output fired at.
#[derive(Debug, Default)]
pub(crate) struct Unacknowledged {
    /// (earliest input time, fired time), in the order they were added.
    holds: VecDeque<(u64, u64)>,
}

impl Unacknowledged {
    /// Keeps input from `since` on unsettled until the acknowledged frontier passes `fired`.
    pub(crate) fn hold(&mut self, since: u64, fired: u64) {
        self.holds.push_back((since, fired));
    }

    /// Drops the holds `acknowledged` has passed, oldest first; says whether any remain.
    pub(crate) fn release(&mut self, acknowledged: &ProbeHandle<u64>) -> bool {
        while self
            .holds
            .front()
            .is_some_and(|&(_, fired)| !acknowledged.less_equal(&fired))
        {
            self.holds.pop_front();
        }
        !self.holds.is_empty()
    }

    /// The input times still held.
    pub(crate) fn times(&self) -> impl Iterator<Item = u64> + '_ {
        self.holds.iter().map(|&(since, _)| since)
    }
}

/// Moves `cap` to the least of `times` (which must not be before it), or drops it when there
/// are none: how the window and pattern operators hold their `settled` output.
pub(crate) fn hold_at_least(
    cap: &mut Option<Capability<u64>>,
    times: impl IntoIterator<Item = u64>,
) {
    if let Some(held) = cap.as_mut() {
        match times.into_iter().min() {
            Some(t) => held.downgrade(&t),
            None => *cap = None,
        }
    }
}

/// Follows a frontier as each worker sees it.
///
/// # Examples
///
/// ```
/// use eddy::operators::delivery::Acknowledge;
/// use timely::dataflow::ProbeHandle;
/// use timely::dataflow::operators::{Input, Probe};
///
/// timely::execute(timely::Config::process(2), |worker| {
///     let acknowledged = ProbeHandle::new();
///     let mut input = worker.dataflow::<u64, _, _>(|scope| {
///         let (input, stream) = scope.new_input::<Vec<()>>();
///         stream.acknowledge().probe_with(&acknowledged);
///         input
///     });
///     input.advance_to(5);
///     // Passes 5 only once both workers' inputs have.
///     while acknowledged.less_than(&5) {
///         worker.step();
///     }
/// })
/// .unwrap();
/// ```
pub trait Acknowledge<'scope> {
    /// A stream whose frontier passes `t` once every worker has seen this stream's frontier
    /// pass `t`: each worker holds a capability at the frontier it last saw. A probe on the
    /// fired streams can lag on one worker behind what another has seen; this cannot.
    fn acknowledge(self) -> StreamVec<'scope, u64, ()>;
}

impl<'scope> Acknowledge<'scope> for StreamVec<'scope, u64, ()> {
    fn acknowledge(self) -> StreamVec<'scope, u64, ()> {
        let mut builder = OperatorBuilder::new("Acknowledge".to_string(), self.scope());
        let mut input = builder.new_input(self, Pipeline);
        let (_output, stream) = builder.new_output::<Vec<()>>();
        builder.build(move |mut capabilities| {
            let mut seen = capabilities.pop();
            move |frontiers| {
                // The stream carries no data; this only keeps the channel drained.
                input.for_each(|_, _| {});
                let frontier = frontiers[0].frontier();
                match (frontier.first(), seen.as_mut()) {
                    (Some(t), Some(cap)) => cap.downgrade(t),
                    (None, _) => seen = None,
                    (Some(_), None) => unreachable!("held until the input ends"),
                }
            }
        });
        stream
    }
}
