//! Content-based routing: one operator sends each datum to every output whose predicate holds
//! for it (fan-out), and to an `unmatched` output when none does.
//!
//! All of a stream's predicates run in one pass over each batch, and a datum is cloned only for
//! its second and later matches: the last matching output takes the datum itself. Data keep their
//! timely time, so routing is stateless and holds no capability: progress passes straight
//! through.

use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

/// What [`Route::route`] produces.
pub struct Routed<'scope, D> {
    /// Per predicate, in the order given, the data it holds for.
    pub matched: Vec<StreamVec<'scope, u64, D>>,
    /// The data no predicate holds for.
    pub unmatched: StreamVec<'scope, u64, D>,
}

/// Routing of a stream by predicates.
///
/// # Examples
///
/// ```
/// use eddy::Route;
/// use timely::dataflow::operators::capture::Extract;
/// use timely::dataflow::operators::{Capture, ToStream};
///
/// let (even, large, rest) = timely::example(|scope| {
///     let routed = (1..=12u64)
///         .to_stream(scope)
///         .container::<Vec<_>>()
///         .route("numbers", vec![|n: &u64| n % 2 == 0, |n: &u64| *n > 9]);
///     let [even, large] = <[_; 2]>::try_from(routed.matched).ok().unwrap();
///     (even.capture(), large.capture(), routed.unmatched.capture())
/// });
/// let all = |captured: std::sync::mpsc::Receiver<_>| -> Vec<u64> {
///     let mut all: Vec<u64> = captured.extract().into_iter().flat_map(|(_, d)| d).collect();
///     all.sort();
///     all
/// };
/// // 10 and 12 go to both routes; what neither takes goes to `unmatched`.
/// assert_eq!(all(even), [2, 4, 6, 8, 10, 12]);
/// assert_eq!(all(large), [10, 11, 12]);
/// assert_eq!(all(rest), [1, 3, 5, 7, 9]);
/// ```
pub trait Route<'scope, D> {
    /// Sends each datum to the output of every predicate that holds for it, and to
    /// [`Routed::unmatched`] when none does.
    fn route<P>(self, name: &str, predicates: Vec<P>) -> Routed<'scope, D>
    where
        P: Fn(&D) -> bool + 'static;
}

impl<'scope, D: Clone + 'static> Route<'scope, D> for StreamVec<'scope, u64, D> {
    fn route<P>(self, name: &str, predicates: Vec<P>) -> Routed<'scope, D>
    where
        P: Fn(&D) -> bool + 'static,
    {
        let mut builder = OperatorBuilder::new(format!("Route({name})"), self.scope());
        let mut input = builder.new_input(self, Pipeline);
        // Outputs 0..n are the predicates', output n the unmatched.
        let (mut outputs, mut streams): (Vec<_>, Vec<_>) = (0..=predicates.len())
            .map(|_| {
                let (output, stream) = builder.new_output();
                (OutputBuilder::from(output), stream)
            })
            .unzip();
        builder.build(move |_initial_capabilities| {
            let mut batches: Vec<Vec<D>> = outputs.iter().map(|_| Vec::new()).collect();
            let unmatched = predicates.len();
            let mut matches = Vec::with_capacity(predicates.len());
            move |_frontiers| {
                let mut sending: Vec<_> = outputs.iter_mut().map(|o| o.activate()).collect();
                input.for_each(|cap, data| {
                    for datum in data.drain(..) {
                        matches.clear();
                        for (i, holds) in predicates.iter().enumerate() {
                            if holds(&datum) {
                                matches.push(i);
                            }
                        }
                        match matches.split_last() {
                            None => batches[unmatched].push(datum),
                            Some((&last, others)) => {
                                for &i in others {
                                    batches[i].push(datum.clone());
                                }
                                batches[last].push(datum);
                            }
                        }
                    }
                    for (output, batch) in sending.iter_mut().zip(&mut batches) {
                        if !batch.is_empty() {
                            output.session(&cap).give_container(batch);
                        }
                    }
                });
            }
        });
        let unmatched = streams.pop().expect("the unmatched output");
        Routed {
            matched: streams,
            unmatched,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use timely::dataflow::operators::ToStream;
    use timely::dataflow::operators::capture::{Capture, Extract};

    use super::*;

    /// Routes 0..100 by three predicates on one worker; returns each output's data, sorted.
    fn route_numbers() -> (Vec<Vec<u64>>, Vec<u64>) {
        let captured = Arc::new(Mutex::new(None));
        let out = Arc::clone(&captured);
        timely::execute_directly(move |worker| {
            let receivers = worker.dataflow::<u64, _, _>(|scope| {
                let numbers = (0..100u64).to_stream(scope).container::<Vec<_>>();
                let Routed { matched, unmatched } = numbers.route(
                    "numbers",
                    vec![
                        Box::new(|n: &u64| n.is_multiple_of(2)) as Box<dyn Fn(&u64) -> bool>,
                        Box::new(|n: &u64| n.is_multiple_of(3)),
                        Box::new(|n: &u64| *n >= 1000),
                    ],
                );
                let matched: Vec<_> = matched.into_iter().map(|s| s.capture()).collect();
                (matched, unmatched.capture())
            });
            *out.lock().unwrap() = Some(receivers);
        });
        let (matched, unmatched) = captured.lock().unwrap().take().unwrap();
        let sorted = |r: std::sync::mpsc::Receiver<_>| {
            let mut all: Vec<u64> = r.extract().into_iter().flat_map(|(_, d)| d).collect();
            all.sort();
            all
        };
        (matched.into_iter().map(sorted).collect(), sorted(unmatched))
    }

    #[test]
    fn every_datum_reaches_exactly_the_outputs_whose_predicates_hold() {
        let (matched, unmatched) = route_numbers();
        assert_eq!(
            matched[0],
            (0..100).filter(|n| n % 2 == 0).collect::<Vec<_>>()
        );
        assert_eq!(
            matched[1],
            (0..100).filter(|n| n % 3 == 0).collect::<Vec<_>>()
        );
        assert!(matched[2].is_empty());
        assert_eq!(
            unmatched,
            (0..100)
                .filter(|n| n % 2 != 0 && n % 3 != 0)
                .collect::<Vec<_>>()
        );
    }
}
