//! Stream–table join (enrichment): each datum of a stream, at its time `t`, joined with the
//! values a differential arrangement holds for its key as of `t`.
//!
//! This is a half join, an as-of lookup: the stream is never arranged and a change to the table
//! never re-emits past data. The operator holds each datum until the arrangement's frontier has
//! passed `t` (every table update at `t` or before is in the trace), then reads the key in the
//! trace with a cursor, adding up the updates at times `<= t`. Data are exchanged by the hash
//! the arrangement partitions its keys by, so each worker looks up only keys it holds and the
//! result does not depend on the number of workers. The operator holds the trace's compaction
//! back to the earliest time it may still look up.

use std::hash::Hash;
use std::rc::Rc;

use differential_dataflow::Hashable;
use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::trace::cursor::cursor_list;
use differential_dataflow::trace::implementations::ValSpine;
use differential_dataflow::trace::{Cursor, TraceReader};
use timely::ExchangeData;
use timely::PartialOrder;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::progress::Antichain;

use super::Stash;

/// A table to enrich with: `(key, value)` pairs arranged by key.
pub type Table<'scope, K, V> = Arranged<'scope, TraceAgent<ValSpine<K, V, u64, isize>>>;

/// Joins a stream with a table as of each datum's time.
///
/// # Examples
///
/// Payments joined with the account holder's name as it stood at each payment's time:
///
/// ```
/// use differential_dataflow::AsCollection;
/// use eddy::Enrich;
/// use timely::dataflow::operators::capture::Extract;
/// use timely::dataflow::operators::{Capture, ToStream};
///
/// let joined = timely::example(|scope| {
///     // The holder of account 7 is Ann from time 0 and Bob from time 100.
///     let names = [((7u64, "Ann".to_string()), 0u64, 1isize), ((7, "Ann".into()), 100, -1)];
///     let names = names.into_iter().chain([((7, "Bob".into()), 100, 1)]);
///     let table = names.to_stream(scope).container::<Vec<_>>().as_collection().arrange_by_key();
///     // (account, payment time)
///     [(7u64, 50u64), (7, 150), (8, 60)]
///         .to_stream(scope)
///         .container::<Vec<_>>()
///         .enrich_with(
///             table,
///             |payment: &(u64, u64)| Some(payment.0),
///             |payment: &(u64, u64)| payment.1,
///             |payment, names: &[(String, isize)]| {
///                 Some((payment.1, names.first().map(|(name, _)| name.clone())))
///             },
///         )
///         .capture()
/// });
/// let mut joined: Vec<_> = joined.extract().into_iter().flat_map(|(_, d)| d).collect();
/// joined.sort();
/// assert_eq!(joined, [(50, Some("Ann".into())), (60, None), (150, Some("Bob".into()))]);
/// ```
pub trait Enrich<'scope, D> {
    /// Passes each datum to `logic` once, with the values of `table` at its key (and their
    /// counts) as of `max(time(datum), its timely time)`, none when `key` gives none; emits
    /// what `logic` returns at that time.
    fn enrich_with<K, V, O>(
        self,
        table: Table<'scope, K, V>,
        key: impl Fn(&D) -> Option<K> + 'static,
        time: impl Fn(&D) -> u64 + 'static,
        logic: impl FnMut(D, &[(V, isize)]) -> Option<O> + 'static,
    ) -> StreamVec<'scope, u64, O>
    where
        K: differential_dataflow::ExchangeData + Hash,
        V: differential_dataflow::ExchangeData,
        O: Clone + 'static;
}

impl<'scope, D: ExchangeData> Enrich<'scope, D> for StreamVec<'scope, u64, D> {
    fn enrich_with<K, V, O>(
        self,
        table: Table<'scope, K, V>,
        key: impl Fn(&D) -> Option<K> + 'static,
        time: impl Fn(&D) -> u64 + 'static,
        mut logic: impl FnMut(D, &[(V, isize)]) -> Option<O> + 'static,
    ) -> StreamVec<'scope, u64, O>
    where
        K: differential_dataflow::ExchangeData + Hash,
        V: differential_dataflow::ExchangeData,
        O: Clone + 'static,
    {
        let key = Rc::new(key);
        let route = {
            let key = Rc::clone(&key);
            // The hash `arrange_by_key` exchanges by; data without a key go to worker 0.
            move |datum: &D| key(datum).map_or(0, |k| k.hashed())
        };
        let mut trace = table.trace;
        self.binary_frontier::<_, CapacityContainerBuilder<Vec<O>>, _, _, _, _>(
            table.stream,
            Exchange::new(route),
            Pipeline,
            "Enrich",
            move |_cap, _info| {
                // Data by the time they look up.
                let mut pending = Stash::default();
                // The trace holds every table update before this frontier.
                let mut acknowledged = Antichain::from_elem(0u64);
                let mut row = Vec::new();
                move |(data, data_frontier), (spans, _), output| {
                    data.for_each(|cap, data| {
                        let Some(&since) = cap.least() else { return };
                        for datum in data.drain(..) {
                            let t = time(&datum).max(since);
                            pending.push(t, datum, || cap.delayed(&t, 0));
                        }
                    });
                    spans.for_each(|_, spans| {
                        for span in spans.drain(..) {
                            if PartialOrder::less_equal(&acknowledged, span.lower()) {
                                acknowledged.clone_from(span.upper());
                            }
                        }
                    });
                    trace.advance_upper(&mut acknowledged);
                    let ready = |t: u64| !acknowledged.less_equal(&t);
                    if pending.first_time().is_some_and(ready) {
                        let batches = trace
                            .batches_through(acknowledged.borrow())
                            .expect("the trace is compacted no further than acknowledged");
                        let (mut cursor, storage) = cursor_list(batches);
                        while let Some((t, cap, data)) = pending.pop_done(ready) {
                            // By key, for one forward pass of the cursor.
                            let mut keyed: Vec<(Option<K>, D)> =
                                data.into_iter().map(|d| (key(&d), d)).collect();
                            keyed.sort_by(|(a, _), (b, _)| a.cmp(b));
                            cursor.rewind_keys(&storage);
                            let mut session = output.session(&cap);
                            for (k, datum) in keyed {
                                row.clear();
                                if let Some(k) = &k {
                                    cursor.seek_key(&storage, k);
                                    if cursor.get_key(&storage) == Some(k) {
                                        cursor.rewind_vals(&storage);
                                        while let Some(value) = cursor.get_val(&storage) {
                                            let mut count = 0;
                                            cursor.map_times(&storage, |at, diff| {
                                                if *at <= t {
                                                    count += *diff;
                                                }
                                            });
                                            if count != 0 {
                                                row.push((value.clone(), count));
                                            }
                                            cursor.step_val(&storage);
                                        }
                                    }
                                }
                                if let Some(out) = logic(datum, &row) {
                                    session.give(out);
                                }
                            }
                        }
                    }
                    // Later lookups are at pending times or at the data frontier and beyond.
                    let mut lookups = data_frontier.frontier().to_owned();
                    if let Some(t) = pending.first_time() {
                        lookups.insert(t);
                    }
                    trace.set_logical_compaction(lookups.borrow());
                    trace.set_physical_compaction(acknowledged.borrow());
                }
            },
        )
    }
}
