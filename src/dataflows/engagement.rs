//! The customer-engagement flow of a job file: the command processor (commands become events or
//! rejections) and the orchestrator (events and alerts become notification requests).
//!
//! Both run per user in event time; a command or event behind the watermark is still processed,
//! on arrival (after what was already processed), rather than dropped.

use std::sync::Arc;

use compact_str::CompactString;
use timely::dataflow::operators::Concatenate;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::{Scope, StreamVec};

use super::{Progress, column, write_rows};
use crate::domain::command::{Command, Outcome, REJECTED};
use crate::domain::orchestrate::{Happening, NotificationRequest};
use crate::job::{CommandsSpec, EVENT_COLUMNS, Job, OrchestratorSpec, REQUEST_COLUMNS};
use crate::operators::pattern::{DetectPattern, Detected, Detection, Late, PatternStreams};
use crate::record::{Event, Id, Record, Value};
use crate::stats::{CountInto, Counter, MeasureLatency, Stats};

/// A source's events, with the time before which an earlier run emitted everything.
pub type Input<'scope> = (StreamVec<'scope, u64, Event<Record>>, u64);

/// Builds a command processor over `commands`; returns the flushed streams of its sinks.
pub fn build_commands<'scope>(
    (commands, emitted_before): Input<'scope>,
    progress: &Progress<'scope>,
    job: &Job,
    spec: &CommandsSpec,
    stats: &Arc<Stats>,
) -> anyhow::Result<Vec<StreamVec<'scope, u64, ()>>> {
    let fields = [spec.id, spec.user, spec.kind];
    let commands = commands.map(move |event| Event {
        time: event.time,
        frontier: event.frontier,
        data: Command::from_record(event.data, fields),
    });
    let PatternStreams {
        matches,
        fired,
        settled,
        ..
    } = commands.detect(
        detection(emitted_before, progress, &spec.name),
        |c: &Command| c.user.clone(),
        spec.processor.clone(),
    );
    progress.track(fired, settled);
    let payload = spec.payload.clone();
    let rows = matches
        .map(move |detected| event_row(detected, &payload))
        .count_into(stats, Counter::EventsOut)
        .measure_latency(stats, column(&EVENT_COLUMNS, "time"));
    write_rows(
        &rows,
        job,
        &spec.sinks,
        &spec.columns,
        &spec.name,
        stats,
        progress.checkpoints.as_ref(),
    )
}

/// Builds an orchestrator over user `events` and, if it has them, fraud `alerts`; returns the
/// flushed streams of its sinks.
pub fn build_orchestrator<'scope>(
    events: Input<'scope>,
    alerts: Option<Input<'scope>>,
    progress: &Progress<'scope>,
    job: &Job,
    spec: &OrchestratorSpec,
    stats: &Arc<Stats>,
) -> anyhow::Result<Vec<StreamVec<'scope, u64, ()>>> {
    let scope: Scope<'scope, u64> = events.0.scope();
    let fields = spec.events.indexes();
    let mut happenings = vec![events.0.map(move |e| Event {
        time: e.time,
        frontier: e.frontier,
        data: Happening::event(e.data, fields),
    })];
    let mut emitted_before = events.1;
    if let (Some((alerts, before)), Some(f)) = (alerts, spec.alerts) {
        let fields = f.indexes();
        emitted_before = emitted_before.min(before);
        happenings.push(alerts.map(move |e| Event {
            time: e.time,
            frontier: e.frontier,
            data: Happening::alert(e.data, fields),
        }));
    }
    let PatternStreams {
        matches,
        fired,
        settled,
        ..
    } = scope.concatenate(happenings).detect(
        detection(emitted_before, progress, &spec.name),
        |h: &Happening| h.user.clone(),
        spec.orchestrator.clone(),
    );
    progress.track(fired, settled);
    let rows = matches
        .map(request_row)
        .count_into(stats, Counter::NotificationsRequested)
        .measure_latency(stats, column(&REQUEST_COLUMNS, "time"));
    let columns: Vec<String> = REQUEST_COLUMNS.iter().map(|c| c.to_string()).collect();
    write_rows(
        &rows,
        job,
        &spec.sinks,
        &columns,
        &spec.name,
        stats,
        progress.checkpoints.as_ref(),
    )
}

/// Matches are emitted once (a restart skips those its checkpoint covers); late input is fed.
fn detection(emitted_before: u64, progress: &Progress<'_>, name: &str) -> Detection {
    Detection {
        emitted_before,
        delivery: Some(progress.delivery()),
        late: Late::Feed,
        checkpoint: progress.section(name),
    }
}

/// The event a command caused (see [`EVENT_COLUMNS`]), then the command's payload fields.
fn event_row(detected: Detected<Id, (Command, Outcome)>, payload: &[usize]) -> Record {
    let (command, outcome) = detected.value;
    let (event, reason) = match outcome {
        Outcome::Accepted(event) => (event, Value::Null),
        Outcome::Rejected(reason) => (REJECTED.into(), Value::Str(reason.into())),
    };
    let mut event_id = command.id.clone();
    event_id.push(':');
    event_id.push_str(&event);
    let mut row = Vec::with_capacity(EVENT_COLUMNS.len() + payload.len());
    row.extend([
        Value::Str(event_id),
        Value::Str(event),
        Value::Str(command.id),
        detected.key.to_value(),
        Value::Int(detected.time as i64),
        reason,
    ]);
    row.extend(payload.iter().map(|&i| command.record[i].clone()));
    row.into_boxed_slice()
}

/// A notification request (see [`REQUEST_COLUMNS`]).
fn request_row(detected: Detected<Id, NotificationRequest>) -> Record {
    let r = detected.value;
    let text = |s: Option<CompactString>| s.map_or(Value::Null, Value::Str);
    Box::new([
        Value::Str(r.request_id),
        Value::Str("NotificationRequested".into()),
        detected.key.to_value(),
        text(r.channel),
        text(r.to),
        text(r.subject.map(Into::into)),
        Value::Str(r.text.into()),
        Value::Str(r.cause),
        Value::Int(detected.time as i64),
    ])
}
