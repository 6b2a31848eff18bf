//! A Kafka topic as a sink: an idempotent, batching producer per worker. The sink holds a
//! capability for every time with messages not yet acknowledged by the broker, so its flushed
//! stream only passes a time once the broker has them all.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use indexmap::IndexMap;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use serde::Deserialize;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;
use toml::Spanned;

use super::Encode;
use super::file::Order;
use super::format::RowEncoder;
use super::registry::{Rows, Settings, Sink, SinkKind};
use super::topic::TopicTemplate;
use crate::kafka::client_config;
use crate::settings::{Check, Text};
use crate::state::SectionCheckpoint;

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
        Some(SinkKind::Kafka(KafkaSinkConfig { properties, topic }))
    }
}

/// What a Kafka sink writes to.
#[derive(Clone, Debug)]
pub struct KafkaSinkConfig {
    /// librdkafka properties, passed verbatim (`bootstrap.servers`, TLS, SASL, …).
    pub properties: Vec<(String, String)>,
    /// The topic written; it may name columns in braces, filled per row (see [`super::topic`]).
    pub topic: String,
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

    fn write<'scope, D: timely::ExchangeData, E: Encode<D>>(
        &self,
        stream: StreamVec<'scope, u64, D>,
        encoder: E,
        _order: Option<Order<D>>,
        _checkpoint: Option<SectionCheckpoint>,
    ) -> anyhow::Result<StreamVec<'scope, u64, ()>> {
        stream.write_kafka(self, encoder)
    }
}

/// Counts unacknowledged messages per timely time; delivery reports arrive on `poll`.
#[derive(Default)]
pub struct DeliveryTracker {
    in_flight: Mutex<BTreeMap<u64, usize>>,
    failures: Mutex<Vec<String>>,
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, time: usize) {
        if let Err((e, _)) = result {
            self.failures.lock().unwrap().push(e.to_string());
        }
        let mut in_flight = self.in_flight.lock().unwrap();
        if let Some(n) = in_flight.get_mut(&(time as u64)) {
            *n -= 1;
            if *n == 0 {
                in_flight.remove(&(time as u64));
            }
        }
    }
}

/// Creates the idempotent producer a Kafka sink uses.
pub fn producer(config: &KafkaSinkConfig) -> anyhow::Result<BaseProducer<DeliveryTracker>> {
    client_config(
        &[
            ("enable.idempotence", "true"),
            ("linger.ms", "5"),
            ("batch.num.messages", "10000"),
            ("queue.buffering.max.messages", "500000"),
        ],
        &config.properties,
    )
    .create_with_context(DeliveryTracker::default())
    .with_context(|| format!("creating the producer for topic `{}`", config.topic))
}

/// Writes a stream to a Kafka topic.
pub trait WriteKafka<'scope, D> {
    /// Produces every item as one message of `config.topic` (or of the topic the encoder
    /// chooses for it); the returned stream's frontier
    /// passes a time once the broker has acknowledged every message of that time.
    fn write_kafka<E: Encode<D>>(
        self,
        config: &KafkaSinkConfig,
        encoder: E,
    ) -> anyhow::Result<StreamVec<'scope, u64, ()>>;
}

impl<'scope, D: 'static> WriteKafka<'scope, D> for StreamVec<'scope, u64, D> {
    fn write_kafka<E: Encode<D>>(
        self,
        config: &KafkaSinkConfig,
        encoder: E,
    ) -> anyhow::Result<StreamVec<'scope, u64, ()>> {
        let producer = producer(config)?;
        let topic = config.topic.clone();
        let scope = self.scope();
        Ok(self.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Pipeline,
            "KafkaSink",
            move |_cap, info| {
                let activator = scope.activator_for(info.address);
                let mut held = BTreeMap::<u64, Capability<u64>>::new();
                let (mut key, mut value, mut item_topic) = (Vec::new(), Vec::new(), String::new());
                move |(input, _frontier), _output| {
                    input.for_each(|cap, data| {
                        let Some(time) = cap.least().copied() else {
                            return;
                        };
                        held.entry(time).or_insert_with(|| cap.delayed(&time, 0));
                        *producer
                            .context()
                            .in_flight
                            .lock()
                            .unwrap()
                            .entry(time)
                            .or_default() += data.len();
                        for item in data.drain(..) {
                            key.clear();
                            value.clear();
                            let has_key = encoder.key(&item, &mut key);
                            encoder.value(&item, &mut value);
                            let headers = encoder.headers(&item);
                            let topic = if encoder.topic(&item, &mut item_topic) {
                                &item_topic
                            } else {
                                &topic
                            };
                            send(&producer, topic, has_key.then_some(&key[..]), &value, &headers, time);
                        }
                    });
                    producer.poll(Duration::ZERO);
                    if let Some(failure) = producer.context().failures.lock().unwrap().first() {
                        panic!(
                            "Kafka sink: delivery to `{topic}` failed after retries: {failure}; \
                             stopping before any offset past it is committed"
                        );
                    }
                    let in_flight = producer.context().in_flight.lock().unwrap();
                    held.retain(|time, _| in_flight.contains_key(time));
                    if !held.is_empty() {
                        activator.activate_after(Duration::from_millis(1));
                    }
                }
            },
        ))
    }
}

/// Sends one message, waiting (while serving delivery reports) when the local queue is full.
fn send(
    producer: &BaseProducer<DeliveryTracker>,
    topic: &str,
    key: Option<&[u8]>,
    value: &[u8],
    headers: &[(&str, String)],
    time: u64,
) {
    loop {
        let mut record = BaseRecord::with_opaque_to(topic, time as usize).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        if !headers.is_empty() {
            let mut owned = OwnedHeaders::new_with_capacity(headers.len());
            for (name, v) in headers {
                owned = owned.insert(Header {
                    key: name,
                    value: Some(v.as_bytes()),
                });
            }
            record = record.headers(owned);
        }
        match producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(5));
            }
            Err((e, _)) => panic!("Kafka sink: producing to `{topic}` failed: {e}"),
        }
    }
}
