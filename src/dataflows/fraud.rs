//! Fraud detection of a job file: card payments from a source, the rules the job turns on, run
//! per account in event time in one pattern operator, one alert per incident to the sinks.

use std::sync::Arc;

use compact_str::{CompactString, format_compact};
use timely::dataflow::StreamVec;
use timely::dataflow::operators::vec::Map;

use super::{Progress, column, write_rows};
use crate::domain::fraud::{CardPayment, RuleMatch};
use crate::job::{ALERT_COLUMNS, FraudSpec, Job, PaymentFields};
use crate::operators::pattern::{
    DetectPattern, Detected, Detection, Late, PatternStreams, Suppressed,
};
use crate::record::{Event, Id, Record, Value};
use crate::stats::{CountInto, Counter, MeasureLatency, Stats};

/// Builds one fraud detector over `events`; returns the flushed streams of its sinks. Alerts
/// before `emitted_before` were emitted by an earlier run; the detector's progress goes to
/// `progress.fired`, judged against `progress.flushed`.
pub fn build_fraud<'scope>(
    events: StreamVec<'scope, u64, Event<Record>>,
    emitted_before: u64,
    progress: &Progress<'scope>,
    job: &Job,
    spec: &FraudSpec,
    stats: &Arc<Stats>,
) -> anyhow::Result<Vec<StreamVec<'scope, u64, ()>>> {
    let fields = spec.fields;
    let payments = events.map(move |event| Event {
        time: event.time,
        frontier: event.frontier,
        data: payment(&event.data, &fields),
    });
    let period = spec.suppression;
    fn suppressed<P: Clone>(rule: &Option<P>, period: u64) -> Option<Suppressed<P>> {
        rule.clone().map(|pattern| Suppressed { pattern, period })
    }
    let rules = (
        suppressed(&spec.velocity, period),
        suppressed(&spec.small_then_large, period),
        suppressed(&spec.amount_spike, period),
        suppressed(&spec.impossible_travel, period),
        suppressed(&spec.card_testing, period),
    );
    let detection = Detection {
        emitted_before,
        delivery: Some(progress.delivery()),
        late: Late::Output,
        checkpoint: progress.section(&spec.name),
    };
    let PatternStreams {
        matches,
        late,
        fired,
        settled,
    } = payments.detect(
        detection,
        |payment: &CardPayment| payment.account.clone(),
        rules,
    );
    progress.track(fired, settled);
    let name = spec.name.clone();
    let alerts = matches
        .map(move |alert| alert_row(&name, alert))
        .count_into(stats, Counter::Alerts)
        .measure_latency(stats, column(&ALERT_COLUMNS, "time"));
    let columns: Vec<String> = ALERT_COLUMNS.iter().map(|c| c.to_string()).collect();
    let checkpoints = progress.checkpoints.as_ref();
    let mut flushed = write_rows(
        &alerts,
        job,
        &spec.sinks,
        &columns,
        &spec.name,
        stats,
        checkpoints,
    )?;
    let late = late.count_into(stats, Counter::Late);
    if let Some(sink) = spec.late_sink {
        flushed.extend(write_rows(
            &late.map(late_row),
            job,
            &[sink],
            &spec.late_columns(&job.sources[spec.source].schema),
            &format!("{}.late", spec.name),
            stats,
            checkpoints,
        )?);
    }
    Ok(flushed)
}

fn late_row(event: Event<CardPayment>) -> Record {
    let p = event.data;
    Box::new([
        Value::Str(p.id),
        p.account.to_value(),
        Value::Int(p.amount),
        Value::Str(p.merchant),
        Value::Str(p.country),
        Value::Int(event.time as i64),
    ])
}

/// The payment in `record`, whose types the job loader has checked.
fn payment(record: &Record, fields: &PaymentFields) -> CardPayment {
    let text = |i: usize| match &record[i] {
        Value::Str(s) => s.clone(),
        Value::Int(n) => format_compact!("{n}"),
        other => unreachable!("checked by the job loader: {other:?}"),
    };
    CardPayment {
        id: text(fields.id),
        account: Id::of(&record[fields.account]).expect("checked by the job loader"),
        amount: match record[fields.amount] {
            Value::Int(n) => n,
            ref other => unreachable!("checked by the job loader: {other:?}"),
        },
        merchant: text(fields.merchant),
        country: text(fields.country),
    }
}

/// An alert row (see [`ALERT_COLUMNS`]); its id is the detector, rule, account and event time,
/// so a replay gives the same id.
fn alert_row(detector: &str, alert: Detected<Id, RuleMatch>) -> Record {
    let account = alert.key.to_value();
    let mut id = CompactString::default();
    id.push_str(detector);
    id.push(':');
    id.push_str(alert.value.rule);
    id.push(':');
    match &alert.key {
        Id::Int(n) => id.push_str(itoa::Buffer::new().format(*n)),
        Id::Str(s) => id.push_str(s),
    }
    id.push(':');
    id.push_str(itoa::Buffer::new().format(alert.time));
    Box::new([
        Value::Str(id),
        Value::Str(alert.value.rule.into()),
        account,
        Value::Int(alert.time as i64),
        Value::Str(alert.value.evidence.join(",").into()),
        Value::Str(alert.value.detail.into()),
    ])
}
