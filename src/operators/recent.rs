//! The most recent values per key: for each key, the `n` values with the latest event times,
//! as a whole list at every time the list changes.
//!
//! Each value comes with the time it counts at (no earlier than the timely time it arrives at).
//! The operator holds values until the input frontier passes that time, then merges a time's
//! values at once, in time order, so the lists depend only on the data, never on arrival order,
//! batching or the number of workers. It keeps `n` values per key, not the whole history: the
//! list is the upsert a differential arrangement turns into retractions of the previous one.

use std::collections::HashMap;
use std::hash::Hash;

use differential_dataflow::Hashable;
use timely::ExchangeData;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use serde::de::DeserializeOwned;

use super::Stash;
use crate::failure::fail;
use crate::state::SectionCheckpoint;

/// A value with its event time, as kept and listed.
pub type Timed<V> = (u64, V);

/// Keeps the most recent values per key.
///
/// # Examples
///
/// The two latest alerts per user:
///
/// ```
/// use eddy::KeepRecent;
/// use timely::dataflow::operators::capture::Extract;
/// use timely::dataflow::operators::{Capture, ToStream};
///
/// // (user, (event time, alert), timely time)
/// let alerts = [("ann", (10, "a1"), 0), ("ann", (30, "a3"), 0), ("ann", (20, "a2"), 0)];
/// let lists = timely::example(move |scope| {
///     alerts
///         .map(|(user, alert, time)| (user.to_string(), (alert.0, alert.1.to_string()), time))
///         .to_stream(scope)
///         .container::<Vec<_>>()
///         .keep_recent(|_| 2, None)
///         .capture()
/// });
/// let lists: Vec<_> = lists.extract().into_iter().flat_map(|(_, lists)| lists).collect();
/// assert_eq!(
///     lists,
///     [("ann".to_string(), vec![(30, "a3".to_string()), (20, "a2".to_string())], 0)]
/// );
/// ```
pub trait KeepRecent<'scope, K, V> {
    /// For input `(key, (event time, value), time)`, emits `(key, list, time)` at each time a
    /// key's list changes: its `limit(key)` values with the greatest event times, newest first
    /// (ties: the greater value first), over every value at that time or before.
    ///
    /// With `checkpoint`, the lists take part in the job's checkpoints as
    /// [`SectionCheckpoint`] says: a time at or past a pending checkpoint's frontier is merged
    /// only once the lists of the times before it are handed off. Restored lists are emitted at
    /// time 0, as if they had just changed.
    fn keep_recent(
        self,
        limit: impl Fn(&K) -> usize + 'static,
        checkpoint: Option<SectionCheckpoint>,
    ) -> StreamVec<'scope, u64, (K, Vec<Timed<V>>, u64)>;
}

impl<'scope, K, V> KeepRecent<'scope, K, V> for StreamVec<'scope, u64, (K, Timed<V>, u64)>
where
    K: ExchangeData + Clone + Hash + Ord + DeserializeOwned,
    V: ExchangeData + Clone + Ord + DeserializeOwned,
{
    fn keep_recent(
        self,
        limit: impl Fn(&K) -> usize + 'static,
        mut checkpoint: Option<SectionCheckpoint>,
    ) -> StreamVec<'scope, u64, (K, Vec<Timed<V>>, u64)> {
        let peers = self.scope().peers();
        self.unary_frontier::<CapacityContainerBuilder<Vec<_>>, _, _, _>(
            Exchange::new(|(key, _, _): &(K, Timed<V>, u64)| key.hashed()),
            "KeepRecent",
            move |cap, _info| {
                // Values by the time they count at.
                let mut pending = Stash::default();
                // Per key, its list, newest first.
                let mut kept = HashMap::<K, Vec<Timed<V>>>::new();
                let restored = checkpoint.as_ref().map(|c| {
                    c.restore::<K, Vec<Timed<V>>>(peers)
                        .unwrap_or_else(|e| fail(e))
                });
                let mut restored = restored.filter(|r| !r.is_empty()).map(|r| (cap, r));
                let mut changed = Vec::new();
                move |(input, frontier), output| {
                    if let Some((cap, lists)) = restored.take() {
                        let mut session = output.session(&cap);
                        for (_, key, list) in lists {
                            kept.insert(key.clone(), list.clone());
                            session.give((key, list, 0));
                        }
                    }
                    let plan = checkpoint.as_mut().and_then(SectionCheckpoint::pending);
                    input.for_each(|cap, data| {
                        for (key, value, time) in data.drain(..) {
                            pending.push(time, (key, value), || cap.delayed(&time, 0));
                        }
                    });
                    let mut merge = |kept: &mut HashMap<K, Vec<Timed<V>>>, before: Option<u64>| {
                        while let Some((time, cap, values)) = pending.pop_done(|t| {
                            !frontier.less_equal(&t) && before.is_none_or(|before| t < before)
                        }) {
                            for (key, value) in values {
                                let n = limit(&key);
                                let list = kept.entry(key.clone()).or_default();
                                // Newest first: the place after every value at least as recent.
                                let at = list.partition_point(|kept| *kept >= value);
                                if at < n {
                                    list.insert(at, value);
                                    list.truncate(n);
                                    changed.push(key);
                                }
                            }
                            changed.sort();
                            changed.dedup();
                            let mut session = output.session(&cap);
                            for key in changed.drain(..) {
                                let list = kept[&key].clone();
                                session.give((key, list, time));
                            }
                        }
                    };
                    merge(&mut kept, plan);
                    if let Some(frontier_t) = plan
                        && !frontier.less_than(&frontier_t)
                        && let Some(c) = checkpoint.as_mut()
                    {
                        let lists = kept
                            .iter()
                            .map(|(key, list)| (key.hashed(), key.clone(), list.clone()))
                            .collect();
                        c.hand_off(lists);
                        merge(&mut kept, None);
                    }
                }
            },
        )
    }
}
