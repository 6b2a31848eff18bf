//! Views of a job file: differential collections of view cells, one per source section, merged
//! into one store per view.
//!
//! `last(f)` columns are upserts keyed by `(key, column)`, arranged by differential's upsert
//! operator, which turns each new value into a retraction of the old one; `count` and `sum(f)`
//! columns are updates whose differences add up (`count_total`). Every update happens at the end
//! of the view tick holding its event time (or its stamp, when later), so a view changes a tick
//! of event time at a time and only ever shows what all events before a frontier made of it.

use std::sync::Arc;

use differential_dataflow::AsCollection;
use differential_dataflow::operators::CountTotal;
use differential_dataflow::operators::arrange::upsert::arrange_from_upsert;
use differential_dataflow::trace::implementations::{ValBuilder, ValSpine};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::{Scope, StreamVec};

use crate::job::{ColumnValue, ViewInput, ViewSpec};
use crate::record::{Event, Record, Value};
use crate::sinks::view::{ViewStore, WriteView};

/// A cell of a view: `(key, column)`.
type CellKey = (String, usize);

/// A `last(f)` value: the event time it is from and its JSON text.
type Latest = (u64, String);

/// Builds view `spec` over the streams of the job's sources; returns the stream that says what
/// has been applied to `store`.
pub fn build_view<'scope>(
    scope: Scope<'scope, u64>,
    sources: &[StreamVec<'scope, u64, Event<Record>>],
    spec: &ViewSpec,
    store: Arc<ViewStore>,
) -> StreamVec<'scope, u64, ()> {
    let mut cells = Vec::new();
    for input in &spec.inputs {
        // Key, filter and time each event once; both kinds of column read the result.
        let (tick, keyed) = (spec.tick, input.clone());
        let updates = sources[input.source].clone().flat_map(move |event| {
            key_of(&keyed, &event.data).map(|key| Update {
                key,
                at: update_time(&event, tick),
                event,
            })
        });
        let upserts = input.clone();
        let latest = updates
            .clone()
            .flat_map(move |update| latest_values(&upserts, update));
        cells.push(
            arrange_from_upsert::<
                ValBuilder<CellKey, Latest, u64, isize>,
                ValSpine<CellKey, Latest, u64, isize>,
                CellKey,
                Latest,
            >(latest, "ViewLatest")
            .as_collection(|(key, column), (_, value)| (key.clone(), (*column, value.clone()))),
        );
        let counted = input.clone();
        cells.push(
            updates
                .flat_map(move |update| counts(&counted, update))
                .as_collection()
                .count_total()
                .map(|((key, column), total)| (key, (column, total.to_string()))),
        );
    }
    differential_dataflow::collection::concatenate(scope, cells)
        .write_view(store, spec.columns.clone().into())
}

/// The time an event's updates happen at: the last millisecond of the view tick holding its
/// event time, or its stamp when that is later (a late event never changes the past).
fn update_time(event: &Event<Record>, tick: u64) -> u64 {
    let t = event.time.max(event.frontier);
    t - t % tick + tick - 1
}

/// The row key of an event, unless its key field is null or the input's `when` rejects it.
fn key_of(input: &ViewInput, record: &Record) -> Option<String> {
    if matches!(record[input.key], Value::Null)
        || input.when.as_ref().is_some_and(|w| !w.holds(record))
    {
        return None;
    }
    Some(record[input.key].to_text().into())
}

/// An event of a view input with its row key and the time its updates happen at.
#[derive(Clone)]
struct Update {
    key: String,
    at: u64,
    event: Event<Record>,
}

/// The `last(f)` upserts of an on-time event: the value with its event time, so that of two
/// values in one tick the later one wins.
fn latest_values(input: &ViewInput, update: Update) -> Vec<(CellKey, Option<Latest>, u64)> {
    let Update { key, at, event } = update;
    if event.time < event.frontier {
        return Vec::new();
    }
    input
        .columns
        .iter()
        .filter_map(|c| match c.value {
            ColumnValue::Last(field) if !matches!(event.data[field], Value::Null) => {
                Some((c, field))
            }
            _ => None,
        })
        .filter(|(c, _)| c.when.as_ref().is_none_or(|w| w.holds(&event.data)))
        .map(|(c, field)| {
            let mut json = Vec::new();
            event.data[field].write_json(&mut json);
            let json = String::from_utf8(json).expect("JSON is UTF-8");
            ((key.clone(), c.index), Some((event.time, json)), at)
        })
        .collect()
}

/// The `count` and `sum(f)` updates of an event.
fn counts(input: &ViewInput, update: Update) -> Vec<(CellKey, u64, isize)> {
    let Update { key, at, event } = update;
    input
        .columns
        .iter()
        .filter_map(|c| {
            let diff = match c.value {
                ColumnValue::Count => 1,
                ColumnValue::Sum(field) => match event.data[field] {
                    Value::Int(n) if n != 0 => n as isize,
                    _ => return None,
                },
                ColumnValue::Last(_) => return None,
            };
            Some((c, diff))
        })
        .filter(|(c, _)| c.when.as_ref().is_none_or(|w| w.holds(&event.data)))
        .map(|(c, diff)| ((key.clone(), c.index), at, diff))
        .collect()
}
