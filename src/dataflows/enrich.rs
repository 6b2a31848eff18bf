//! Enrichments of a job file: a source's events joined with the rows of a view (its arranged
//! cells) as of each event's time, written as the source's fields plus the chosen view columns.
//!
//! An event looks its key up at its event time, or at its stamp when that is later (a late event
//! sees the view as it is, never as it was): it sees every view change from a view tick that
//! ended at or before that time. View cells hold JSON text; an added column carries the value it
//! holds, a `recent` list as its JSON text.

use timely::dataflow::StreamVec;

use super::views::ViewTable;
use super::write_rows;
use crate::job::{EnrichSpec, Job};
use crate::operators::enrich::Enrich;
use crate::operators::in_flight::HoldInFlight;
use crate::record::{Event, Record, Value};
use crate::state::{SectionCheckpoint, WorkerCheckpoint};
use crate::stats::Stats;

/// Builds enrichment `spec` over its source's `events` and its view's `table`; returns the
/// flushed streams of its sinks.
pub fn build_enrich<'scope>(
    events: StreamVec<'scope, u64, Event<Record>>,
    table: ViewTable<'scope>,
    job: &Job,
    spec: &EnrichSpec,
    stats: &Stats,
    checkpoints: Option<&WorkerCheckpoint>,
) -> anyhow::Result<Vec<StreamVec<'scope, u64, ()>>> {
    let (key, added, inner) = (spec.key, spec.added.clone(), spec.inner);
    // The events read before a checkpoint that look the view up at or after its frontier are
    // kept by the checkpoint; the view comes back with its own sections.
    let in_flight =
        checkpoints.map(|w| SectionCheckpoint::new(w, format!("{}/in flight", spec.name)));
    let rows = events
        .in_flight(|e| e.time.max(e.frontier), in_flight)
        .enrich_with(
            table,
            move |event: &Event<Record>| {
                let value = &event.data[key];
                (!matches!(value, Value::Null)).then(|| value.to_text().into())
            },
            |event| event.time.max(event.frontier),
            move |event, cells: &[((usize, String), isize)]| {
                if inner && cells.is_empty() {
                    return None;
                }
                let mut record = event.data.into_vec();
                record.extend(added.iter().map(|column| {
                    cells
                        .iter()
                        .find(|((c, _), count)| c == column && *count > 0)
                        .map_or(Value::Null, |((_, json), _)| value_of_json(json))
                }));
                Some(record.into_boxed_slice())
            },
        );
    write_rows(
        &rows,
        job,
        &spec.sinks,
        &spec.columns,
        &spec.name,
        stats,
        checkpoints,
    )
}

/// The value a view cell's JSON text holds; a list (a `recent` column) stays JSON text.
fn value_of_json(json: &str) -> Value {
    match serde_json::from_str(json) {
        Ok(serde_json::Value::Bool(b)) => Value::Bool(b),
        Ok(serde_json::Value::Number(n)) => n
            .as_i64()
            .map(Value::Int)
            .or_else(|| n.as_f64().map(Value::Float))
            .unwrap_or(Value::Null),
        Ok(serde_json::Value::String(s)) => Value::Str(s.into()),
        Ok(serde_json::Value::Null) => Value::Null,
        _ => Value::Str(json.into()),
    }
}
