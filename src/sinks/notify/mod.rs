//! The notification adapter: `NotificationRequested` records in, SMS and e-mails out through a
//! CPaaS over HTTP (Infobip's API shape), exactly once per request id, and an outcome event for
//! every request (`NotificationSent` / `NotificationFailed`).
//!
//! - [`request`]: the request read from a record; [`outcome`]: what became of it.
//! - [`client`]: one HTTP call and what its answer means; [`adapter`]: queues, batching, limits,
//!   retries and duplicates, on a tokio runtime off the dataflow's threads; [`sent_record`]: the
//!   durable record of decided request ids.
//! - This module: the timely operator between the dataflow and the adapter. It never blocks its
//!   worker: it hands requests to the adapter's bounded queue and keeps those refused (counting
//!   them in a [`Backlog`] the source watches, so the source stops reading); it holds a
//!   capability for every time with requests undecided, so the outcomes stream (and hence the
//!   source's commits, behind the sinks' flushed probe) only passes a time once every request
//!   of it has its outcome.

pub mod adapter;
pub mod client;
pub mod config;
pub mod outcome;
pub mod request;
pub mod sent_record;
pub mod settings;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use super::Encode;
use super::file::Order;
use super::registry::Sink;
use crate::backlog::Backlog;
use crate::record::{DeadLetter, Event, Payload, Record};
use crate::state::SectionCheckpoint;
use adapter::{Completion, NotificationAdapter, Submission};
use config::NotifyConfig;
use outcome::{Rejection, RequestContext, Resolved};
use request::RequestFields;

/// A notify sink is fed by its `source` (see [`DeliverNotifications`]), never written to: the
/// job loader refuses a job that writes to one.
impl Sink for NotifyConfig {
    fn write<'scope, D: timely::ExchangeData, E: Encode<D>>(
        &self,
        _stream: StreamVec<'scope, u64, D>,
        _encoder: E,
        _order: Option<Order<D>>,
        _checkpoint: Option<SectionCheckpoint>,
    ) -> anyhow::Result<StreamVec<'scope, u64, ()>> {
        anyhow::bail!("a notify sink takes its notification requests from its `source` only")
    }
}

/// Delivers a stream of notification requests.
pub trait DeliverNotifications<'scope> {
    /// Reads a request from each record (at `fields`), has `adapter` deliver it, and emits its
    /// outcome, with the record's user and event time, at the time the record came in. A record
    /// that is no valid request fails at once: a [`Rejection`] if it names a request id, and a
    /// dead letter with the reason, attributed to `source`. Requests the adapter's queue refuses
    /// are held and counted in `backlog`.
    fn deliver_notifications(
        self,
        adapter: Arc<NotificationAdapter>,
        fields: RequestFields,
        source: String,
        backlog: Backlog,
    ) -> StreamVec<'scope, u64, Resolved>;
}

impl<'scope> DeliverNotifications<'scope> for StreamVec<'scope, u64, Event<Record>> {
    fn deliver_notifications(
        self,
        adapter: Arc<NotificationAdapter>,
        fields: RequestFields,
        source: String,
        backlog: Backlog,
    ) -> StreamVec<'scope, u64, Resolved> {
        let scope = self.scope();
        self.unary_frontier::<CapacityContainerBuilder<Vec<Resolved>>, _, _, _>(
            Pipeline,
            "Notify",
            move |_cap, info| {
                let activator = scope.activator_for(info.address);
                let (reply, completions) = mpsc::channel::<Completion>();
                // Per time with undecided requests: its capability and how many are undecided.
                let mut undecided = BTreeMap::<u64, (Capability<u64>, usize)>::new();
                // Per request handed over, by its submission tag (a sequence number): the time
                // it came in at, and its record's user and event time for the outcome event.
                let mut submitted = HashMap::<u64, (u64, RequestContext)>::new();
                let mut next_tag = 0u64;
                // Requests the adapter's queue refused, oldest first.
                let mut refused = VecDeque::<Submission>::new();
                let mut invalid = Vec::new();
                move |(input, _frontier), output| {
                    input.for_each(|cap, data| {
                        let Some(time) = cap.least().copied() else {
                            return;
                        };
                        let entry = undecided
                            .entry(time)
                            .or_insert_with(|| (cap.delayed(&time, 0), 0));
                        for event in data.drain(..) {
                            match fields.read(&event.data) {
                                Ok(request) => {
                                    entry.1 += 1;
                                    submitted.insert(next_tag, (time, fields.context(&event.data)));
                                    refused.push_back(Submission {
                                        request,
                                        tag: next_tag,
                                        reply: reply.clone(),
                                    });
                                    next_tag += 1;
                                    backlog.hold(1);
                                }
                                Err(reason) => invalid.push(Resolved::Invalid {
                                    letter: DeadLetter {
                                        error: format!("not a notification request: {reason}"),
                                        topic: source.clone(),
                                        partition: -1,
                                        offset: -1,
                                        payload: Payload::of(&fields.to_json(&event.data)),
                                    },
                                    rejection: fields.identity(&event.data).map(
                                        |(request_id, channel, to)| Rejection {
                                            request_id,
                                            channel,
                                            to,
                                            reason,
                                            context: fields.context(&event.data),
                                        },
                                    ),
                                }),
                            }
                        }
                        if !invalid.is_empty() {
                            output.session(&entry.0).give_container(&mut invalid);
                        }
                    });
                    while let Some(submission) = refused.pop_front() {
                        if let Some(submission) = adapter.offer(submission) {
                            refused.push_front(submission);
                            break;
                        }
                        backlog.release(1);
                    }
                    for completion in completions.try_iter() {
                        let outcome = completion.outcome.unwrap_or_else(|e| {
                            panic!(
                                "notification adapter: {e}; stopping before any offset past \
                                 the request is committed"
                            )
                        });
                        let (time, context) = submitted
                            .remove(&completion.tag)
                            .expect("a completion for a submitted request");
                        let (cap, left) = undecided
                            .get_mut(&time)
                            .expect("a completion for a held time");
                        output
                            .session(&*cap)
                            .give(Resolved::Outcome(outcome, context));
                        *left -= 1;
                    }
                    undecided.retain(|_, (_, left)| *left > 0);
                    if !undecided.is_empty() {
                        activator.activate_after(Duration::from_millis(1));
                    }
                }
            },
        )
    }
}
