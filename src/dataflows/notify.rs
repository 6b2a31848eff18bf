//! Notify sinks of a job file: a source's records, as notification requests, through the
//! process's [`NotificationAdapter`]; outcome events to the outcomes sink, failed and invalid
//! requests to the dead letters.

use std::sync::Arc;

use anyhow::{Context as _, bail};
use timely::dataflow::StreamVec;
use timely::dataflow::operators::Inspect;
use timely::dataflow::operators::vec::{Filter, Map};

use crate::backlog::Backlog;
use crate::job::{Job, NotifySpec, SourceKind};
use crate::record::{DeadLetter, Event, Record};
use crate::sinks::SinkKind;
use crate::sinks::notify::DeliverNotifications;
use crate::sinks::notify::adapter::NotificationAdapter;
use crate::sinks::notify::outcome::{OutcomeEncoder, Resolved};
use crate::sinks::notify::request::RequestFields;
use crate::stats::{CountInto, Counter, Stats};

/// A notify sink's adapter and the backlog its source watches, made before the sources are
/// built.
pub struct NotifyPlan {
    /// What it wires.
    pub spec: NotifySpec,
    /// The adapter, shared by the process's workers.
    pub adapter: Arc<NotificationAdapter>,
    /// Requests this worker's operator holds because the adapter's queue is full.
    pub backlog: Backlog,
}

/// Starts (or joins) the adapter of each notify sink of `job`.
pub fn plan(job: &Job, stats: &Arc<Stats>) -> anyhow::Result<Vec<NotifyPlan>> {
    job.notifications
        .iter()
        .map(|spec| {
            let sink = &job.sinks[spec.sink];
            let SinkKind::Notify(config) = &sink.kind else {
                bail!("sink `{}` is not a notify sink", sink.name);
            };
            let adapter = NotificationAdapter::shared(config, stats)
                .with_context(|| format!("notify sink `{}`", sink.name))?;
            Ok(NotifyPlan {
                spec: *spec,
                adapter,
                backlog: Backlog::default(),
            })
        })
        .collect()
}

/// Builds one notify sink over `requests`; returns the flushed stream of its outcomes sink and
/// its dead letters.
pub fn build_notify<'scope>(
    requests: StreamVec<'scope, u64, Event<Record>>,
    plan: &NotifyPlan,
    job: &Job,
    stats: &Arc<Stats>,
) -> anyhow::Result<(
    StreamVec<'scope, u64, ()>,
    StreamVec<'scope, u64, DeadLetter>,
)> {
    let source = &job.sources[plan.spec.source];
    let fields = RequestFields::new(&source.schema).map_err(anyhow::Error::msg)?;
    let origin = match &source.kind {
        SourceKind::Kafka { topics, .. } => topics.join(","),
        _ => source.name.clone(),
    };
    let notify = &job.sinks[plan.spec.sink];
    let resolved = requests
        .count_in(stats.sink_counter(&notify.name))
        .deliver_notifications(
            Arc::clone(&plan.adapter),
            fields,
            origin.clone(),
            plan.backlog.clone(),
        );
    let invalid = Arc::clone(stats);
    let resolved = resolved.inspect(move |r| {
        if matches!(r, Resolved::Invalid { .. }) {
            invalid.add(Counter::NotificationsInvalid, 1);
        }
    });
    let dead = resolved
        .clone()
        .flat_map(move |r: Resolved| r.dead_letter(&origin));
    let sink = &job.sinks[plan.spec.outcomes];
    let outcomes = resolved
        .filter(Resolved::has_event)
        .count_in(stats.sink_counter(&sink.name));
    let encoder = OutcomeEncoder {
        provenance: vec![
            ("eddy.job", job.name.clone()),
            ("eddy.output", notify.name.clone()),
        ],
    };
    let flushed = sink
        .kind
        .write(&sink.name, "outcomes", outcomes, encoder, None, None)?;
    Ok((flushed, dead))
}
