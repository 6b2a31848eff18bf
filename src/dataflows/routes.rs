//! Routes of a job file: each source's events, as rows of the source's fields or of the columns
//! a route computes, to the sinks of every route that takes them. All `when` routes of a source
//! share one route operator; a route without `when` takes the source's stream as it is, and the
//! `otherwise` route the operator's unmatched output.

use timely::dataflow::StreamVec;
use timely::dataflow::operators::vec::Map;

use super::write_rows;
use crate::job::{Job, Selection};
use crate::operators::route::{Route, Routed};
use crate::record::{Event, Record};
use crate::state::WorkerCheckpoint;
use crate::stats::Stats;

/// Builds the routes of source `source` over its `events`; returns the flushed streams of their
/// sinks.
pub fn build_routes<'scope>(
    events: StreamVec<'scope, u64, Event<Record>>,
    source: usize,
    job: &Job,
    stats: &Stats,
    checkpoints: Option<&WorkerCheckpoint>,
) -> anyhow::Result<Vec<StreamVec<'scope, u64, ()>>> {
    let routes: Vec<_> = job.routes.iter().filter(|r| r.source == source).collect();
    if routes.is_empty() {
        return Ok(Vec::new());
    }
    let rows = events.map(|event| event.data);
    let predicates: Vec<_> = routes
        .iter()
        .filter_map(|r| match &r.select {
            Selection::When(predicate) => {
                let predicate = predicate.clone();
                Some(move |row: &Record| predicate.holds(row))
            }
            Selection::Every | Selection::Otherwise => None,
        })
        .collect();
    // The route operator runs when some route has `when` (the loader allows `otherwise` only
    // then).
    let (mut matched, unmatched) = if predicates.is_empty() {
        (Vec::new().into_iter(), None)
    } else {
        let Routed { matched, unmatched } =
            rows.clone().route(&job.sources[source].name, predicates);
        (matched.into_iter(), Some(unmatched))
    };
    let schema = &job.sources[source].schema;
    let mut flushed = Vec::new();
    for route in routes {
        let taken = match route.select {
            Selection::Every => rows.clone(),
            Selection::When(_) => matched.next().expect("an output per `when` route"),
            Selection::Otherwise => unmatched.clone().expect("a route operator"),
        };
        let taken = match route.projection.clone() {
            Some(projection) => taken.map(move |row| -> Record {
                projection.iter().map(|(_, e)| e.value(&row)).collect()
            }),
            None => taken,
        };
        flushed.extend(write_rows(
            &taken,
            job,
            &route.sinks,
            &route.columns(schema),
            &route.name,
            stats,
            checkpoints,
        )?);
    }
    Ok(flushed)
}
