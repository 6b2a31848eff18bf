//! The [`NotificationAdapter`]: delivery off the dataflow's threads. Requests arrive through a
//! bounded queue per channel (a full queue refuses them, which slows the dataflow down); a
//! dispatcher per channel groups what is waiting into calls (up to the channel's batch size),
//! within its concurrency and rate limits; each call is retried with exponential backoff and
//! jitter while its error is transient. Every decided request is written to the sent-record
//! before its outcome is reported, and a request whose id is already recorded, or being sent, is
//! not sent again: it gets the recorded outcome.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak, mpsc as std_mpsc};
use std::time::Duration;

use anyhow::Context as _;
use backon::{ExponentialBuilder, Retryable};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{Semaphore, mpsc, watch};

use super::client::{CallError, CpaasClient, MessageResult};
use super::config::NotifyConfig;
use super::outcome::{Delivery, Outcome};
use super::request::{Channel, NotificationRequest};
use super::sent_record::SentRecord;
use crate::stats::{Counter, Stats};

/// A request handed to the adapter, with where its outcome goes.
#[derive(Debug)]
pub struct Submission {
    /// The request.
    pub request: NotificationRequest,
    /// Returned with the outcome, untouched (the notify operator numbers its submissions).
    pub tag: u64,
    /// Where the outcome is sent.
    pub reply: std_mpsc::Sender<Completion>,
}

/// The outcome of a submission, or why the adapter cannot go on.
#[derive(Debug)]
pub struct Completion {
    /// The submission's tag.
    pub tag: u64,
    /// The outcome; an error when the sent-record cannot be written, which stops the job
    /// before anything past it is committed.
    pub outcome: Result<Outcome, String>,
}

/// Delivers notification requests to a CPaaS. One per process and sent-record: the workers of a
/// process share it (see [`NotificationAdapter::shared`]).
pub struct NotificationAdapter {
    queues: Vec<(Channel, mpsc::Sender<Submission>)>,
    /// Per channel, its call slots: all free again once its calls in flight have ended.
    slots: Vec<(Arc<Semaphore>, u32)>,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// How long a stopping adapter waits for its calls in flight to end and be recorded.
const STOP_PATIENCE: Duration = Duration::from_secs(10);

/// What the delivery tasks share.
struct Shared {
    client: CpaasClient,
    config: NotifyConfig,
    store: SentRecord,
    /// Requests being delivered, by id, with the duplicates that wait for their outcome.
    in_flight: Mutex<HashMap<String, Vec<Submission>>>,
    stats: Arc<Stats>,
    /// Set when the adapter stops: no new call or retry starts, and waits for the rate limit or
    /// a retry's backoff end at once.
    stopping: watch::Sender<bool>,
}

/// The adapters running in this process, by sent-record path.
static RUNNING: Mutex<Vec<(PathBuf, Weak<NotificationAdapter>)>> = Mutex::new(Vec::new());

impl NotificationAdapter {
    /// The adapter of `config.sent_record` in this process: started by the first worker that
    /// asks, shared by the others, and stopped when the last one lets go. One adapter per store
    /// keeps one sent-record, one connection pool and one set of limits for the whole process.
    pub fn shared(
        config: &NotifyConfig,
        stats: &Arc<Stats>,
    ) -> anyhow::Result<Arc<NotificationAdapter>> {
        let mut running = RUNNING.lock().unwrap();
        running.retain(|(_, adapter)| adapter.strong_count() > 0);
        if let Some(adapter) = running
            .iter()
            .find(|(path, _)| *path == config.sent_record)
            .and_then(|(_, adapter)| adapter.upgrade())
        {
            return Ok(adapter);
        }
        let adapter = Arc::new(NotificationAdapter::start(config, stats)?);
        running.push((config.sent_record.clone(), Arc::downgrade(&adapter)));
        Ok(adapter)
    }

    /// Starts an adapter of its own: its runtime, store and dispatchers. Fails, saying which,
    /// when a limit is out of the bounds of [`NotifyConfig::check_limits`].
    pub fn start(config: &NotifyConfig, stats: &Arc<Stats>) -> anyhow::Result<NotificationAdapter> {
        config.check_limits().map_err(anyhow::Error::msg)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("eddy-notify")
            .enable_all()
            .build()
            .context("starting the notification adapter's runtime")?;
        let shared = Arc::new(Shared {
            client: CpaasClient::new(config)?,
            config: config.clone(),
            store: SentRecord::open(&config.sent_record)?,
            in_flight: Mutex::new(HashMap::new()),
            stats: Arc::clone(stats),
            stopping: watch::Sender::new(false),
        });
        let mut queues = Vec::new();
        let mut slots = Vec::new();
        for channel in Channel::ALL {
            let (sender, receiver) = mpsc::channel(config.queue);
            let concurrency = config.limits(channel).concurrency;
            let permits = Arc::new(Semaphore::new(concurrency));
            runtime.spawn(dispatch(
                channel,
                receiver,
                Arc::clone(&permits),
                Arc::clone(&shared),
            ));
            queues.push((channel, sender));
            let concurrency = u32::try_from(concurrency).expect("within MAX_CONCURRENCY");
            slots.push((permits, concurrency));
        }
        Ok(NotificationAdapter {
            queues,
            slots,
            shared,
            runtime: Some(runtime),
        })
    }

    /// Hands a request over without waiting; gives it back when its channel's queue is full.
    pub fn offer(&self, submission: Submission) -> Option<Submission> {
        let (_, queue) = self
            .queues
            .iter()
            .find(|(c, _)| *c == submission.request.channel)
            .expect("a queue per channel");
        match queue.try_send(submission) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(s) | mpsc::error::TrySendError::Closed(s)) => {
                Some(s)
            }
        }
    }
}

impl Drop for NotificationAdapter {
    fn drop(&mut self) {
        // No new call or retry starts; the calls on the wire end and are recorded (for a while),
        // so that a restart, which delivers every request without a reported outcome again,
        // finds them in the sent-record. Requests still queued, or waiting to be retried, stay
        // undecided.
        self.shared.stopping.send_replace(true);
        self.queues.clear();
        if let Some(runtime) = self.runtime.take() {
            let slots = std::mem::take(&mut self.slots);
            let drained = runtime.block_on(async {
                let all = async {
                    for (permits, n) in &slots {
                        let _ = permits.acquire_many(*n).await;
                    }
                };
                tokio::time::timeout(STOP_PATIENCE, all).await
            });
            if drained.is_err() {
                tracing::warn!(
                    "notification adapter: calls still in flight after {STOP_PATIENCE:?}; \
                     abandoning them (a restart sends them again with the same message ids)"
                );
            }
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// Takes `channel`'s requests off its queue, in calls of up to its batch size, each within its
/// concurrency and rate limits.
async fn dispatch(
    channel: Channel,
    mut queue: mpsc::Receiver<Submission>,
    permits: Arc<Semaphore>,
    shared: Arc<Shared>,
) {
    let limits = shared.config.limits(channel);
    let batch = u32::try_from(limits.batch).expect("within MAX_BATCH");
    let burst = NonZeroU32::new(batch).expect("a batch of at least one");
    let quota = Quota::per_second(NonZeroU32::new(limits.rate).expect("a positive rate"))
        .allow_burst(burst.max(NonZeroU32::new(limits.rate / 100).unwrap_or(burst)));
    let limiter: DefaultDirectRateLimiter = RateLimiter::direct(quota);
    while let Some(first) = queue.recv().await {
        // Waiting for a free slot lets the next call fill up.
        let permit = Arc::clone(&permits)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let mut batch = vec![first];
        while batch.len() < limits.batch {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let n = NonZeroU32::new(batch.len() as u32).expect("not empty");
        let ready = shared.unless_stopping(limiter.until_n_ready(n)).await;
        if ready.is_none() {
            return;
        }
        ready
            .expect("stopping is handled above")
            .expect("a batch is within the burst");
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            shared.deliver(channel, batch).await;
            drop(permit);
        });
    }
}

impl Shared {
    /// `wait`'s result, or `None` once the adapter is stopping (at once if it already is).
    async fn unless_stopping<T>(&self, wait: impl Future<Output = T>) -> Option<T> {
        unless_stopping(self.stopping.subscribe(), wait).await
    }

    fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Delivers a batch of one channel: each request id once. A delivery the stop cuts short
    /// decides nothing: its requests get no outcome, so their positions are not committed, and
    /// the next run delivers them again (the sent-record keeps any it already sent from going
    /// out twice).
    async fn deliver(&self, channel: Channel, batch: Vec<Submission>) {
        let leaders = self.claim(batch);
        if leaders.is_empty() {
            return;
        }
        let recorded = match self
            .store
            .lookup(leaders.iter().map(|s| s.request.request_id.as_str()))
        {
            Ok(recorded) => recorded,
            Err(e) => return self.abandon(leaders, &format!("reading the sent-record: {e:#}")),
        };
        let mut decided = Vec::new();
        let mut to_send = Vec::new();
        for (leader, found) in leaders.into_iter().zip(recorded) {
            match found {
                Some(outcome) => decided.push((
                    leader,
                    Outcome {
                        attempts: 0,
                        deduplicated: true,
                        ..outcome
                    },
                )),
                None => to_send.push(leader),
            }
        }
        for (leader, outcome) in decided {
            self.finish(leader, Ok(outcome));
        }
        if to_send.is_empty() {
            return;
        }
        let outcomes = match channel {
            Channel::Sms => self.send_sms(&to_send).await,
            Channel::Email => {
                let mut outcomes = Vec::with_capacity(to_send.len());
                for s in &to_send {
                    let Some(mut outcome) = self.send_each(&[s]).await else {
                        return;
                    };
                    outcomes.push(outcome.remove(0));
                }
                Some(outcomes)
            }
        };
        let Some(outcomes) = outcomes else {
            return;
        };
        match self.store.record(outcomes).await {
            Ok(outcomes) => {
                for (leader, outcome) in to_send.into_iter().zip(outcomes) {
                    self.count(&outcome);
                    self.finish(leader, Ok(outcome));
                }
            }
            Err(e) => self.abandon(to_send, &format!("{e:#}")),
        }
    }

    /// Registers the batch's requests as in flight; returns those not already in flight (a
    /// duplicate of one in flight waits for its outcome instead).
    fn claim(&self, batch: Vec<Submission>) -> Vec<Submission> {
        let mut in_flight = self.in_flight.lock().unwrap();
        let mut leaders = Vec::with_capacity(batch.len());
        for s in batch {
            match in_flight.get_mut(&s.request.request_id) {
                Some(waiting) => waiting.push(s),
                None => {
                    in_flight.insert(s.request.request_id.clone(), Vec::new());
                    leaders.push(s);
                }
            }
        }
        leaders
    }

    /// Reports a decided request, and to the duplicates waiting for it.
    fn finish(&self, leader: Submission, outcome: Result<Outcome, String>) {
        let waiting = self
            .in_flight
            .lock()
            .unwrap()
            .remove(&leader.request.request_id)
            .unwrap_or_default();
        for duplicate in waiting {
            let outcome = outcome.clone().map(|o| Outcome {
                request: duplicate.request,
                attempts: 0,
                deduplicated: true,
                ..o
            });
            if outcome.as_ref().is_ok_and(|o| o.deduplicated) {
                self.stats.add(Counter::NotificationsDeduplicated, 1);
            }
            let _ = duplicate.reply.send(Completion {
                tag: duplicate.tag,
                outcome,
            });
        }
        if outcome.as_ref().is_ok_and(|o| o.deduplicated) {
            self.stats.add(Counter::NotificationsDeduplicated, 1);
        }
        let _ = leader.reply.send(Completion {
            tag: leader.tag,
            outcome,
        });
    }

    /// Reports that the requests cannot be decided because the sent-record failed.
    fn abandon(&self, submissions: Vec<Submission>, error: &str) {
        for s in submissions {
            self.finish(s, Err(error.to_string()));
        }
    }

    fn count(&self, outcome: &Outcome) {
        let counter = match outcome.delivery {
            Delivery::Sent { .. } => Counter::NotificationsSent,
            Delivery::Failed { .. } => Counter::NotificationsFailed,
        };
        self.stats.add(counter, 1);
    }

    /// Sends SMS requests in one call. If the CPaaS refuses the call as a whole (one bad
    /// message fails its batch), each half is sent again as a batch of its own, down to single
    /// messages: a bad message fails alone after about log2(n) refused calls, and the others
    /// still go out in large calls rather than one call each, which would hold a call slot for
    /// n calls' time. `None`: the stop cut the delivery short.
    fn send_sms<'a>(
        &'a self,
        batch: &'a [Submission],
    ) -> Pin<Box<dyn Future<Output = Option<Vec<Outcome>>> + Send + 'a>> {
        Box::pin(async move {
            if batch.len() == 1 {
                return self.send_each(&[&batch[0]]).await;
            }
            let requests: Vec<&NotificationRequest> = batch.iter().map(|s| &s.request).collect();
            let (result, attempts) = self
                .with_retries(batch.len(), || self.client.send_sms(&requests))
                .await?;
            Some(match result {
                Err(CallError::Permanent { .. }) => {
                    let (first, second) = batch.split_at(batch.len() / 2);
                    let mut outcomes = self.send_sms(first).await?;
                    outcomes.extend(self.send_sms(second).await?);
                    for outcome in &mut outcomes {
                        outcome.attempts += attempts;
                    }
                    outcomes
                }
                result => outcomes(batch, result, attempts),
            })
        })
    }

    /// Sends one request per call; `None`: the stop cut the delivery short.
    async fn send_each(&self, one: &[&Submission]) -> Option<Vec<Outcome>> {
        let request = &one[0].request;
        let requests = [request];
        let (result, attempts) = match request.channel {
            Channel::Sms => {
                self.with_retries(1, || self.client.send_sms(&requests))
                    .await
            }
            Channel::Email => {
                self.with_retries(1, || self.client.send_email(request))
                    .await
            }
        }?;
        Some(outcomes(one, result, attempts))
    }

    /// Makes a call, again while it fails transiently, up to the retry policy's attempts,
    /// waiting as the server's `Retry-After` says or else with exponential backoff and jitter.
    /// `None` when the adapter stops while the call still fails transiently: a stop waits for
    /// no retry, and the request stays undecided.
    async fn with_retries<F, Fut>(
        &self,
        messages: usize,
        call: F,
    ) -> Option<(Result<Vec<MessageResult>, CallError>, u32)>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Vec<MessageResult>, CallError>>,
    {
        let policy = self.config.retry;
        let stopping = self.stopping.subscribe();
        let attempts = AtomicU32::new(0);
        let mut call = call;
        let result = (|| {
            // A retry whose backoff the stop cut short makes no call.
            let call = (!self.is_stopping()).then(|| {
                attempts.fetch_add(1, Ordering::Relaxed);
                call()
            });
            async move {
                match call {
                    Some(call) => call.await,
                    None => Err(CallError::Transient {
                        reason: "the adapter is stopping".into(),
                        retry_after: None,
                    }),
                }
            }
        })
        .retry(
            ExponentialBuilder::default()
                .with_jitter()
                .with_min_delay(policy.min_delay)
                .with_max_delay(policy.max_delay)
                .with_max_times(policy.max_attempts.saturating_sub(1) as usize),
        )
        .sleep(move |delay| {
            let stopping = stopping.clone();
            async move {
                unless_stopping(stopping, tokio::time::sleep(delay)).await;
            }
        })
        .when(|e| e.is_transient() && !self.is_stopping())
        .adjust(|e: &CallError, delay| delay.map(|d| e.retry_after().unwrap_or(d)))
        .notify(|e: &CallError, delay| {
            self.stats.add(Counter::NotificationRetries, messages);
            tracing::debug!("CPaaS call: {}; retrying in {delay:?}", e.reason());
        })
        .await;
        if self.is_stopping() && result.as_ref().is_err_and(CallError::is_transient) {
            return None;
        }
        Some((result, attempts.into_inner()))
    }
}

/// `wait`'s result, or `None` once `stopping` is true (at once if it already is).
async fn unless_stopping<T>(
    mut stopping: watch::Receiver<bool>,
    wait: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        _ = stopping.wait_for(|stopping| *stopping) => None,
        value = wait => Some(value),
    }
}

/// The outcome of each submission from the result of their call.
fn outcomes<S: std::borrow::Borrow<Submission>>(
    batch: &[S],
    result: Result<Vec<MessageResult>, CallError>,
    attempts: u32,
) -> Vec<Outcome> {
    let request = |s: &S| s.borrow().request.clone();
    match result {
        Ok(results) => batch
            .iter()
            .zip(results)
            .map(|(s, result)| match result {
                Ok(accepted) => Outcome {
                    request: request(s),
                    delivery: Delivery::Sent {
                        message_id: accepted.message_id,
                        status: accepted.status,
                    },
                    attempts,
                    deduplicated: false,
                },
                Err(reason) => Outcome::failed(request(s), reason, attempts),
            })
            .collect(),
        Err(e) => {
            let reason = if e.is_transient() {
                format!("gave up after {attempts} attempts: {}", e.reason())
            } else {
                e.reason().to_string()
            };
            batch
                .iter()
                .map(|s| Outcome::failed(request(s), reason.clone(), attempts))
                .collect()
        }
    }
}
