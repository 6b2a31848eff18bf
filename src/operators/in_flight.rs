//! Data in flight at a checkpoint: records sent before a checkpoint's frontier T whose own time
//! is at or past T (a view's update happens at the end of its tick). The operators downstream
//! hold such data until their frontier passes its time, so their state at T does not hold it,
//! and the sources' positions at T say it was read: this operator keeps it for the checkpoint,
//! and emits it again on restore.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;
use timely::ExchangeData;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use super::aside::Aside;
use crate::failure::fail;
use crate::state::SectionCheckpoint;

/// Keeps the data in flight at each checkpoint.
///
/// # Examples
///
/// Without checkpoints the stream passes through:
///
/// ```
/// use eddy::operators::in_flight::HoldInFlight;
/// use timely::dataflow::operators::capture::Extract;
/// use timely::dataflow::operators::{Capture, ToStream};
///
/// // (cell, the time the update happens at)
/// let updates = timely::example(|scope| {
///     [("a".to_string(), 1_999u64), ("b".to_string(), 3_999)]
///         .to_stream(scope)
///         .container::<Vec<_>>()
///         .in_flight(|(_, at)| *at, None)
///         .capture()
/// });
/// let updates: Vec<_> = updates.extract().into_iter().flat_map(|(_, u)| u).collect();
/// assert_eq!(updates, [("a".to_string(), 1_999), ("b".to_string(), 3_999)]);
/// ```
pub trait HoldInFlight<'scope, D> {
    /// Passes the stream on unchanged. With `checkpoint`, it takes part in the job's checkpoints
    /// as [`SectionCheckpoint`] says: it keeps each item until its input frontier passes the
    /// item's time (`time_of`), and at a checkpoint at T hands off the items at or past T that
    /// came before T; restored items go out at timely time 0, before anything else.
    fn in_flight(
        self,
        time_of: impl Fn(&D) -> u64 + 'static,
        checkpoint: Option<SectionCheckpoint>,
    ) -> StreamVec<'scope, u64, D>;
}

impl<'scope, D> HoldInFlight<'scope, D> for StreamVec<'scope, u64, D>
where
    D: ExchangeData + Clone + Serialize + DeserializeOwned,
{
    fn in_flight(
        self,
        time_of: impl Fn(&D) -> u64 + 'static,
        checkpoint: Option<SectionCheckpoint>,
    ) -> StreamVec<'scope, u64, D> {
        let Some(mut checkpoint) = checkpoint else {
            return self;
        };
        let (worker, peers) = (self.scope().index() as u64, self.scope().peers());
        self.unary_frontier::<CapacityContainerBuilder<Vec<D>>, _, _, _>(
            Pipeline,
            "InFlight",
            move |cap, _info| {
                let restored = checkpoint
                    .restore::<(u64, u64), D>(peers)
                    .unwrap_or_else(|e| fail(e));
                let mut restored = (!restored.is_empty()).then_some((cap, restored));
                // The items passed on whose time the input frontier has not passed, by time.
                let mut held = BTreeMap::<u64, Vec<D>>::new();
                let mut aside = Aside::<D, 1>::default();
                move |(input, frontier), output| {
                    let hold = |held: &mut BTreeMap<u64, Vec<D>>, items: &[D]| {
                        for item in items {
                            held.entry(time_of(item)).or_default().push(item.clone());
                        }
                    };
                    if let Some((cap, items)) = restored.take() {
                        let mut items: Vec<D> = items.into_iter().map(|(_, _, d)| d).collect();
                        hold(&mut held, &items);
                        output.session(&cap).give_container(&mut items);
                    }
                    let plan = checkpoint.pending();
                    input.for_each(|cap, data| {
                        let Some(&time) = cap.least() else { return };
                        if checkpoint.keeps_aside(time) {
                            aside.keep(&cap, time, data);
                            return;
                        }
                        hold(&mut held, data);
                        output.session(&cap).give_container(data);
                    });
                    if let Some(at) = plan
                        && !frontier.less_than(&at)
                    {
                        let entries = held
                            .range(at..)
                            .flat_map(|(_, items)| items)
                            .enumerate()
                            .map(|(i, item)| {
                                let hash = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                                (hash, (worker, i as u64), item.clone())
                            })
                            .collect::<Vec<_>>();
                        checkpoint.hand_off(entries);
                        for ([cap], mut data) in aside.take_before(None) {
                            hold(&mut held, &data);
                            output.session(&cap).give_container(&mut data);
                        }
                    }
                    // Nothing before the input frontier is in flight any more, and, while a
                    // checkpoint is pending, nothing at or past its frontier may be forgotten.
                    let passed = frontier.frontier().first().copied().unwrap_or(u64::MAX);
                    let floor = checkpoint.pending().map_or(passed, |at| at.min(passed));
                    held = held.split_off(&floor);
                }
            },
        )
    }
}
