//! Views of a job file: differential collections of view cells, one per source section, merged
//! into one store per view.
//!
//! `last(f)` columns are upserts keyed by `(key, column)`, arranged by differential's upsert
//! operator, which turns each new value into a retraction of the old one; `recent(f, n)` columns
//! are upserts too, of the list the [`KeepRecent`] operator keeps (n values per cell, where a
//! differential `reduce` would hold and rescan every value ever seen); `count` and `sum(f)`
//! columns are updates whose differences add up (`count_total`). Every update happens at the end
//! of the view tick holding its event time (or its stamp, when later), so a view changes a tick
//! of event time at a time and only ever shows what all events before a frontier made of it.

use std::sync::Arc;

use differential_dataflow::operators::CountTotal;
use differential_dataflow::operators::arrange::upsert::arrange_from_upsert;
use differential_dataflow::trace::implementations::{ValBuilder, ValSpine};
use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concat, ToStream};
use timely::dataflow::{Scope, StreamVec};

use super::Progress;
use crate::job::{ColumnValue, ViewInput, ViewSpec};
use crate::operators::enrich::Table;
use crate::operators::in_flight::HoldInFlight;
use crate::operators::recent::KeepRecent;
use crate::record::{Event, Record, Value};
use crate::sinks::view::{Cell, Row};

/// A cell of a view: `(key, column)`.
type CellKey = (String, usize);

/// A `last(f)` value or `recent(f, n)` list: the (newest) event time it is from and its JSON
/// text.
type Latest = (u64, String);

/// A view's rows as a differential arrangement: `(key, (column, JSON text))` cells by row key,
/// for joins with streams.
pub type ViewTable<'scope> = Table<'scope, String, (usize, String)>;

/// The cells of view `spec` over the streams of the job's sources: what its store is written
/// from (with [`crate::sinks::view::WriteView::write_view`]) and, arranged by key, what
/// enrichments join with.
///
/// A restored view starts from `restored`, this worker's share of the rows a checkpoint holds
/// (key, row as JSON text): each `last` value is upserted and each `count` and `sum` added at
/// time 0, into the input that writes the column; `recent` lists come back with the
/// [`KeepRecent`] operators' own sections, `VIEW/recent N` for input N; and the updates in
/// flight at the checkpoint with `VIEW/last N`, `VIEW/recent values N` and `VIEW/counts N`.
pub fn view_cells<'scope>(
    scope: Scope<'scope, u64>,
    sources: &[StreamVec<'scope, u64, Event<Record>>],
    spec: &ViewSpec,
    restored: &[(u64, String, String)],
    progress: &Progress<'scope>,
) -> anyhow::Result<VecCollection<'scope, u64, Cell>> {
    let mut cells = Vec::new();
    // How many values each column keeps, for its `recent` lists.
    let mut limits = vec![0; spec.columns.len()];
    for input in &spec.inputs {
        for c in &input.columns {
            if let ColumnValue::Recent { n, .. } = c.value {
                limits[c.index] = n;
            }
        }
    }
    let limits: Arc<[usize]> = limits.into();
    let mut restored = Restored::of(spec, restored)?;
    for (i, input) in spec.inputs.iter().enumerate() {
        // Key, filter and time each event once; every kind of column reads the result.
        let (tick, keyed) = (spec.tick, input.clone());
        let updates = sources[input.source].clone().flat_map(move |event| {
            key_of(&keyed, &event.data).map(|key| Update {
                key,
                at: update_time(&event, tick),
                event,
            })
        });
        // Each input's updates that happen at or past a checkpoint's frontier but were read
        // before it are kept by the checkpoint (see `HoldInFlight`), in these sections.
        let in_flight = |what: &str| progress.section(&format!("{}/{what} {i}", spec.name));
        let upserts = input.clone();
        let mut latest = updates
            .clone()
            .flat_map(move |update| kept_values(&upserts, &update, Kept::Last))
            .map(|(cell, value, at)| (cell, Some(value), at))
            .in_flight(|(_, _, at)| *at, in_flight("last"))
            .concat(std::mem::take(&mut restored.latest[i]).to_stream(scope));
        if input
            .columns
            .iter()
            .any(|c| matches!(c.value, ColumnValue::Recent { .. }))
        {
            let (listed, limits) = (input.clone(), Arc::clone(&limits));
            let recent = updates
                .clone()
                .flat_map(move |update| kept_values(&listed, &update, Kept::Recent))
                .in_flight(|(_, _, at)| *at, in_flight("recent values"))
                .keep_recent(
                    move |(_, column): &CellKey| limits[*column],
                    in_flight("recent"),
                )
                .map(|(cell, list, at)| (cell, Some(json_list(&list)), at));
            latest = latest.concat(recent);
        }
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
                .in_flight(|(_, at, _)| *at, in_flight("counts"))
                .concat(std::mem::take(&mut restored.counts[i]).to_stream(scope))
                .as_collection()
                .count_total()
                .map(|((key, column), total)| (key, (column, total.to_string()))),
        );
    }
    Ok(differential_dataflow::collection::concatenate(scope, cells))
}

/// A restored view's `last` values and totals, per input: the updates that put them back.
struct Restored {
    latest: Vec<Vec<(CellKey, Option<Latest>, u64)>>,
    counts: Vec<Vec<(CellKey, u64, isize)>>,
}

impl Restored {
    /// The updates of `rows` (key hash, key, row as JSON text) by the input that writes each
    /// column (the first, where several do); an error names the view and the row that does not
    /// read back.
    fn of(spec: &ViewSpec, rows: &[(u64, String, String)]) -> anyhow::Result<Restored> {
        let mut restored = Restored {
            latest: vec![Vec::new(); spec.inputs.len()],
            counts: vec![Vec::new(); spec.inputs.len()],
        };
        let mut writer = vec![None; spec.columns.len()];
        for (i, input) in spec.inputs.iter().enumerate().rev() {
            for c in &input.columns {
                writer[c.index] = Some((i, c.value));
            }
        }
        for (_, key, json) in rows {
            let row: Row = serde_json::from_str(json).map_err(|e| {
                anyhow::anyhow!(
                    "view `{}`: the checkpoint's row `{key}` does not read back: {e}",
                    spec.name
                )
            })?;
            for (name, value) in row {
                let Some(column) = spec.columns.iter().position(|c| *c == name) else {
                    continue;
                };
                let Some((input, kind)) = writer[column] else {
                    continue;
                };
                let cell = (key.clone(), column);
                match kind {
                    ColumnValue::Last(_) => {
                        restored.latest[input].push((cell, Some((0, value.to_string())), 0));
                    }
                    ColumnValue::Count | ColumnValue::Sum(_) => {
                        let total = value.as_i64().ok_or_else(|| {
                            anyhow::anyhow!(
                                "view `{}`: the checkpoint's `{name}` of `{key}` is {value}, not a \
                                 total",
                                spec.name
                            )
                        })?;
                        restored.counts[input].push((cell, 0, total as isize));
                    }
                    ColumnValue::Recent { .. } => {}
                }
            }
        }
        Ok(restored)
    }
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

/// Which columns [`kept_values`] reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kept {
    /// `last(f)`: upserts of the value.
    Last,
    /// `recent(f, n)`: values for the lists.
    Recent,
}

/// The values an on-time event gives the columns of kind `kept` it sets (`last(f)` or
/// `recent(f, n)`), each with its event time: of two values in one tick the later one wins
/// (`last`) or comes first (`recent`).
fn kept_values(input: &ViewInput, update: &Update, kept: Kept) -> Vec<(CellKey, Latest, u64)> {
    let Update { key, at, event } = update;
    if event.time < event.frontier {
        return Vec::new();
    }
    input
        .columns
        .iter()
        .filter_map(|c| match (c.value, kept) {
            (ColumnValue::Last(field), Kept::Last)
            | (ColumnValue::Recent { field, .. }, Kept::Recent)
                if !matches!(event.data[field], Value::Null) =>
            {
                Some((c, field))
            }
            _ => None,
        })
        .filter(|(c, _)| c.when.as_ref().is_none_or(|w| w.holds(&event.data)))
        .map(|(c, field)| {
            let mut json = Vec::new();
            event.data[field].write_json(&mut json);
            let json = String::from_utf8(json).expect("JSON is UTF-8");
            ((key.clone(), c.index), (event.time, json), *at)
        })
        .collect()
}

/// A `recent` list (newest first) as the upsert of its cell: the newest event time and the
/// values as a JSON array.
fn json_list(list: &[Latest]) -> Latest {
    let values: Vec<&str> = list.iter().map(|(_, json)| json.as_str()).collect();
    let newest = list.first().map_or(0, |(time, _)| *time);
    (newest, format!("[{}]", values.join(",")))
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
                ColumnValue::Last(_) | ColumnValue::Recent { .. } => return None,
            };
            Some((c, diff))
        })
        .filter(|(c, _)| c.when.as_ref().is_none_or(|w| w.holds(&event.data)))
        .map(|(c, diff)| ((key.clone(), c.index), at, diff))
        .collect()
}
