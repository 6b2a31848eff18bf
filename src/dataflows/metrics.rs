//! Windowed metrics of a job file: filter the events, group, window, aggregate, filter the rows,
//! and write each metric's rows (and its late events) to its sinks.

use std::sync::Arc;

use timely::dataflow::StreamVec;
use timely::dataflow::operators::vec::{Filter, Map};

use super::Progress;
use super::write_rows;
use crate::job::{Job, MetricSpec};
use crate::operators::aggregate::FieldAggregates;
use crate::operators::key::FieldKey;
use crate::operators::window::{WindowAggregate, WindowStreams, Windows};
use crate::record::{Event, Record, Value};
use crate::stats::{CountInto, Counter, MeasureLatency, Stats};

/// Builds one metric over `events`; returns the flushed streams of its sinks. Windows firing
/// before `emitted_before` were emitted by an earlier run (see [`Windows`]); the windows'
/// progress goes to `progress.fired`, judged against `progress.flushed`.
pub fn build_metric<'scope>(
    events: StreamVec<'scope, u64, Event<Record>>,
    emitted_before: u64,
    progress: &Progress<'scope>,
    job: &Job,
    metric: &MetricSpec,
    stats: &Arc<Stats>,
) -> anyhow::Result<Vec<StreamVec<'scope, u64, ()>>> {
    let aggregates = FieldAggregates(
        metric
            .aggregates
            .iter()
            .map(|a| (a.kind, a.field))
            .collect(),
    );
    // `when` drops records before the windows see them, as SQL's `WHERE` does: a dropped record
    // is never late.
    let events = match metric.when.clone() {
        Some(when) => events.filter(move |event| when.holds(&event.data)),
        None => events,
    };
    let windows = Windows {
        spec: metric.window,
        lateness: metric.lateness,
        emitted_before,
        delivery: Some(progress.delivery()),
        checkpoint: progress.section(&metric.name),
    };
    let WindowStreams {
        results,
        late,
        fired,
        settled,
    } = events.window_aggregate(windows, FieldKey(metric.group_by.clone()), aggregates);
    progress.track(fired, settled);
    let having = metric.having.clone();
    // Each row is laid out in one buffer and boxed only if it passes `having`: most windows of
    // a selective metric never cost an allocation.
    let mut row = Vec::new();
    let rows = results
        .flat_map(move |result| -> Option<Record> {
            row.clear();
            row.extend(result.key);
            row.push(Value::Int(result.start));
            row.push(Value::Int(result.end));
            row.extend(result.value);
            having
                .as_ref()
                .is_none_or(|having| having.holds(&row))
                .then(|| row.drain(..).collect())
        })
        .count_into(stats, Counter::WindowsOut);
    // The row is laid out as above: the keys, the window's start, then its end.
    let window_end = metric.group_by.len() + 1;
    let rows = rows.measure_latency(stats, window_end);
    let mut flushed = write_rows(
        &rows,
        job,
        &metric.sinks,
        &metric.columns,
        &metric.name,
        stats,
        progress.checkpoints.as_ref(),
    )?;
    let late = late.count_into(stats, Counter::Late);
    if let Some(sink) = metric.late_sink {
        let schema = &job.sources[metric.source].schema;
        let columns: Vec<String> = schema.fields().iter().map(|f| f.name.to_string()).collect();
        flushed.extend(write_rows(
            &late.map(|event| event.data),
            job,
            &[sink],
            &columns,
            &format!("{}.late", metric.name),
            stats,
            progress.checkpoints.as_ref(),
        )?);
    }
    Ok(flushed)
}
