//! A Kafka topic as a sink. Messages are encoded where their rows are made, then written by an
//! idempotent, batching producer per worker, in one of three deliveries ([`Guarantee`]):
//! at-least-once, each worker writing what it has as it comes; exactly-once, each partition
//! written by one worker in a deterministic order and a restored sink skipping what the
//! partition already holds (see [`exactly_once`]); or transactional, exactly-once with each
//! checkpoint's output in one Kafka transaction (see [`transaction`]). The sink holds a capability for every time
//! with messages not yet acknowledged by the broker, so its flushed stream only passes a time
//! once the broker has them all, and it hands off its (empty) part of a checkpoint at T only
//! once every message before T is acknowledged: a complete checkpoint never follows output
//! that could still be lost.

pub mod exactly_once;
pub mod message;
pub mod producer;
pub mod transaction;

use std::collections::BTreeMap;
use std::ops::Range;
use std::rc::Rc;
use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;
use timely::ExchangeData;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::{Exchange, ParallelizationContract, Pipeline};
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;
use toml::Spanned;

use super::Encode;
use super::file::Order;
use super::format::RowEncoder;
use super::registry::{Rows, Settings, Sink, SinkKind};
use super::topic::TopicTemplate;
use crate::settings::{Check, Text};
use crate::state::SectionCheckpoint;
use exactly_once::{Identity, Ordered};
use message::{EncodeMessages, Outbound, Partitions};
use producer::{SinkProducer, in_flight, send, serve};
use transaction::Transaction;

/// `kind = "kafka"`: a Kafka sink's settings, as the job file writes them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// `brokers`: the bootstrap servers.
    pub brokers: Option<Text>,
    /// `topic`: the topic written (see [`KafkaSinkConfig::topic`]).
    pub topic: Option<Text>,
    /// `properties`: librdkafka properties, passed verbatim.
    #[serde(default)]
    pub properties: IndexMap<String, Text>,
    /// `format`: how rows are encoded.
    pub format: Option<Text>,
    /// `key`: the column used as message key.
    pub key: Option<Text>,
    /// `columns`: the columns written.
    pub columns: Option<Spanned<Vec<Text>>>,
    /// `delivery`: `"exactly-once"`, `"at-least-once"` or `"transactional"` (see
    /// [`Guarantee`]).
    pub delivery: Option<Text>,
}

impl Settings for KafkaSettings {
    fn rows(&self) -> Rows<'_> {
        Rows {
            format: self.format.as_ref(),
            key: self.key.as_ref(),
            columns: self.columns.as_ref(),
            order_by: &[],
        }
    }

    fn check<C: Check>(&self, check: &mut C, kind: Range<usize>, field: &str) -> Option<SinkKind> {
        let properties =
            check.kafka_properties(kind.clone(), &self.brokers, &self.properties, field);
        if let Some((key, value)) = self.properties.get_key_value("transactional.id") {
            check.error(
                value.span(),
                format!("{field}.properties.{key}"),
                "a sink's transactional.id is Eddy's to choose: with delivery = \"transactional\" \
                 each worker's producer gets its own (job, sink and worker)"
                    .into(),
            );
        }
        let topic = match &self.topic {
            Some(t) => {
                let topic = t.get_ref().clone();
                if let Err(message) = TopicTemplate::parse(&topic) {
                    check.error(t.span(), format!("{field}.topic"), message);
                }
                topic
            }
            None => {
                check.error(
                    kind,
                    format!("{field}.topic"),
                    "a kafka sink needs a `topic`".into(),
                );
                String::new()
            }
        };
        let delivery = self.delivery.as_ref().and_then(|d| {
            Guarantee::parse(d.get_ref())
                .map_err(|message| check.error(d.span(), format!("{field}.delivery"), message))
                .ok()
        });
        Some(SinkKind::Kafka(KafkaSinkConfig {
            properties,
            topic,
            delivery,
        }))
    }

    /// Exactly-once and transactional delivery rest on restoring checkpoints.
    fn checkpoints_conflict(
        &self,
        checkpoints: bool,
        _kind: Range<usize>,
    ) -> Option<(Range<usize>, &'static str, String)> {
        let delivery = self.delivery.as_ref()?;
        let guarantee = Guarantee::parse(delivery.get_ref()).ok()?;
        (!checkpoints && guarantee != Guarantee::AtLeastOnce).then(|| {
            (
                delivery.span(),
                "delivery",
                format!(
                    "{} delivery needs [checkpoints]: without them a restart reads again from \
                     the consumer group's offsets and cannot tell what was written",
                    guarantee.name()
                ),
            )
        })
    }
}

/// What a Kafka sink promises about the messages it writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guarantee {
    /// Every result at least once: after a crash, what followed the restored checkpoint (or
    /// the consumer group's offsets) may be written again. Messages go as soon as they come.
    AtLeastOnce,
    /// Every result exactly once across crashes and restores, for any consumer: messages of a
    /// time go once the time is complete, in a deterministic order, and a restored sink skips
    /// what its partitions already hold (see [`exactly_once`]). Needs checkpoints.
    ExactlyOnce,
    /// Exactly-once, with each checkpoint's output committed in one Kafka transaction, with
    /// the sources' offsets (see [`transaction`]): a `read_committed` consumer sees only output
    /// before a checkpoint, once. Needs checkpoints, and brokers with transactions.
    Transactional,
}

impl Guarantee {
    /// Reads a `delivery` setting.
    pub fn parse(text: &str) -> Result<Guarantee, String> {
        match text {
            "at-least-once" => Ok(Guarantee::AtLeastOnce),
            "exactly-once" => Ok(Guarantee::ExactlyOnce),
            "transactional" => Ok(Guarantee::Transactional),
            other => Err(format!(
                "unknown delivery `{other}`: expected \"exactly-once\", \"at-least-once\" or \
                 \"transactional\""
            )),
        }
    }

    /// The setting's text.
    pub fn name(self) -> &'static str {
        match self {
            Guarantee::AtLeastOnce => "at-least-once",
            Guarantee::ExactlyOnce => "exactly-once",
            Guarantee::Transactional => "transactional",
        }
    }
}

/// What a Kafka sink writes to.
#[derive(Clone, Debug)]
pub struct KafkaSinkConfig {
    /// librdkafka properties, passed verbatim (`bootstrap.servers`, TLS, SASL, …).
    pub properties: Vec<(String, String)>,
    /// The topic written; it may name columns in braces, filled per row (see [`super::topic`]).
    pub topic: String,
    /// The delivery asked for; `None`: exactly-once in a job with checkpoints, at-least-once
    /// in one without.
    pub delivery: Option<Guarantee>,
}

impl Sink for KafkaSinkConfig {
    fn headers(&self) -> bool {
        true
    }

    /// Rows go to the topic their columns fill in.
    fn row_encoder(&self, encoder: RowEncoder, columns: &[String]) -> anyhow::Result<RowEncoder> {
        let topic = TopicTemplate::parse(&self.topic)
            .and_then(|t| t.for_rows(|name| columns.iter().position(|c| c == name)))
            .map_err(anyhow::Error::msg)?;
        Ok(encoder.with_topic(topic))
    }

    fn checkpointed(&self) -> bool {
        true
    }

    fn write<'scope, D: ExchangeData, E: Encode<D>>(
        &self,
        stream: StreamVec<'scope, u64, D>,
        encoder: E,
        _order: Option<Order<D>>,
        checkpoint: Option<SectionCheckpoint>,
    ) -> anyhow::Result<StreamVec<'scope, u64, ()>> {
        stream.write_kafka(self, encoder, checkpoint)
    }
}

/// Writes a stream to a Kafka topic.
pub trait WriteKafka<'scope, D> {
    /// Produces every item as one message of `config.topic` (or of the topic the encoder
    /// chooses for it), with the delivery `config` asks for; `checkpoint`, in a job that takes
    /// checkpoints, is the sink's part of them. The returned stream's frontier passes a time
    /// once the broker has acknowledged every message of that time.
    ///
    /// # Examples
    ///
    /// ```
    /// use eddy::sinks::kafka::{Guarantee, KafkaSinkConfig, WriteKafka};
    /// use eddy::sinks::Encode;
    /// use rdkafka::mocking::MockCluster;
    /// use timely::dataflow::operators::{Probe, ToStream};
    ///
    /// struct Text;
    /// impl Encode<String> for Text {
    ///     fn value(&self, item: &String, out: &mut Vec<u8>) {
    ///         out.extend_from_slice(item.as_bytes());
    ///     }
    /// }
    ///
    /// let cluster = MockCluster::new(1).unwrap();
    /// cluster.create_topic("greetings", 2, 1).unwrap();
    /// let config = KafkaSinkConfig {
    ///     properties: vec![("bootstrap.servers".into(), cluster.bootstrap_servers())],
    ///     topic: "greetings".into(),
    ///     delivery: Some(Guarantee::AtLeastOnce),
    /// };
    /// timely::execute_directly(move |worker| {
    ///     let probe = worker.dataflow::<u64, _, _>(|scope| {
    ///         let words = vec!["hello".to_string(), "world".to_string()].to_stream(scope);
    ///         words.write_kafka(&config, Text, None).unwrap().probe().0
    ///     });
    ///     // The probe passes once the broker has acknowledged both messages.
    ///     while !probe.done() {
    ///         worker.step();
    ///     }
    /// });
    /// ```
    fn write_kafka<E: Encode<D>>(
        self,
        config: &KafkaSinkConfig,
        encoder: E,
        checkpoint: Option<SectionCheckpoint>,
    ) -> anyhow::Result<StreamVec<'scope, u64, ()>>;
}

impl<'scope, D: ExchangeData> WriteKafka<'scope, D> for StreamVec<'scope, u64, D> {
    fn write_kafka<E: Encode<D>>(
        self,
        config: &KafkaSinkConfig,
        encoder: E,
        checkpoint: Option<SectionCheckpoint>,
    ) -> anyhow::Result<StreamVec<'scope, u64, ()>> {
        let topic = config.topic.clone();
        let delivery = match (config.delivery, &checkpoint) {
            (Some(delivery), _) => delivery,
            (None, Some(_)) => Guarantee::ExactlyOnce,
            (None, None) => Guarantee::AtLeastOnce,
        };
        if delivery == Guarantee::AtLeastOnce {
            let producer = Rc::new(producer::producer(config, None)?);
            let messages = self.encode_messages(encoder, None);
            return Ok(write_messages(
                messages,
                Pipeline,
                (producer, topic),
                (None, None),
                checkpoint,
            ));
        }
        let Some(part) = &checkpoint else {
            anyhow::bail!("{} delivery needs [checkpoints]", delivery.name());
        };
        let checkpointing = part.part.checkpointing();
        let identity = Identity {
            job: checkpointing.job().to_string(),
            sink: part.name.clone(),
            history: format!("{:016x}", checkpointing.history()),
        };
        let (producer, transaction) = if delivery == Guarantee::Transactional {
            let (worker, peers) = (part.part.worker().index(), self.scope().peers());
            let timeout = transaction::transaction_timeout(checkpointing.interval());
            let id = transaction::transactional_id(&identity, worker);
            let producer = producer::producer(config, Some((&id, timeout)))?;
            // The ids of a former run's workers beyond this run's that this worker takes over.
            let former = checkpointing.restored().map_or(0, |r| r.manifest().peers);
            let taken_over: Vec<String> = (peers..former)
                .filter(|w| w % peers == worker)
                .map(|w| transaction::transactional_id(&identity, w))
                .collect();
            let offers = part.part.worker().shared();
            let transaction =
                Transaction::begin(&producer, (config, timeout), &taken_over, offers)?;
            (producer, Some(transaction))
        } else {
            (producer::producer(config, None)?, None)
        };
        let producer = Rc::new(producer);
        let restored = checkpointing.restored().is_some();
        let ordered = Ordered::new(identity, &topic, &config.properties, restored)?;
        let partitions = Partitions::new(Rc::clone(&producer), &topic);
        let messages = self.encode_messages(encoder, Some(partitions));
        Ok(write_messages(
            messages,
            Exchange::new(Outbound::route),
            (producer, topic),
            (Some(ordered), transaction),
            checkpoint,
        ))
    }
}

/// The writing operator: sends each message through `producer` to `topic` (unless it names
/// its own) as it comes, or, with `ordered`, once its time is complete and in order, and with
/// `transaction` in transactions committed at each checkpoint. It holds a capability for each
/// time with messages waiting, unacknowledged or uncommitted, and hands off to a checkpoint at
/// T once its input has passed T and every message before T is acknowledged (and committed).
fn write_messages<'scope, P>(
    messages: StreamVec<'scope, u64, Outbound>,
    pact: P,
    (producer, topic): (Rc<SinkProducer>, String),
    (mut ordered, mut transaction): (Option<Ordered>, Option<Transaction>),
    mut checkpoint: Option<SectionCheckpoint>,
) -> StreamVec<'scope, u64, ()>
where
    P: ParallelizationContract<u64, Vec<Outbound>>,
{
    let scope = messages.scope();
    messages.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
        pact,
        "KafkaSink",
        move |_cap, info| {
            let activator = scope.activator_for(info.address);
            let mut held = BTreeMap::<u64, Capability<u64>>::new();
            // With `ordered`: the messages of each time not complete yet.
            let mut waiting = BTreeMap::<u64, Vec<Outbound>>::new();
            move |(input, frontier), _output| {
                let plan = checkpoint.as_mut().and_then(SectionCheckpoint::pending);
                input.for_each(|cap, data| {
                    let Some(time) = cap.least().copied() else {
                        return;
                    };
                    held.entry(time).or_insert_with(|| cap.delayed(&time, 0));
                    if ordered.is_some() {
                        waiting.entry(time).or_default().append(data);
                    } else {
                        for message in data.drain(..) {
                            send(&producer, &topic, &message, &[], time);
                        }
                    }
                });
                if let Some(ordered) = ordered.as_mut() {
                    while let Some(entry) = waiting.first_entry()
                        && !frontier.less_equal(entry.key())
                    {
                        let (time, messages) = entry.remove_entry();
                        if let Some(transaction) = transaction.as_mut() {
                            transaction.wrote(time);
                        }
                        ordered.write(time, messages, |message, headers| {
                            send(&producer, &topic, message, headers, time)
                        });
                    }
                }
                let passed = |at: u64| frontier.frontier().iter().all(|t| *t >= at);
                if let Some(transaction) = transaction.as_mut()
                    && (plan.is_some_and(passed) || frontier.is_empty())
                {
                    transaction.commit(&producer, &topic);
                }
                serve(&producer, &topic);
                let unacknowledged = in_flight(&producer);
                held.retain(|time, _| {
                    waiting.contains_key(time)
                        || unacknowledged.contains_key(time)
                        || transaction.as_ref().is_some_and(|t| t.holds(*time))
                });
                drop(unacknowledged);
                if let (Some(at), Some(checkpoint)) = (plan, checkpoint.as_mut())
                    && passed(at)
                    && held.keys().next().is_none_or(|t| *t >= at)
                {
                    checkpoint.hand_off::<(), ()>(Vec::new());
                }
                if !held.is_empty() {
                    activator.activate_after(Duration::from_millis(1));
                }
            }
        },
    )
}
