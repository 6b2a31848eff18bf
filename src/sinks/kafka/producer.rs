//! The producer a Kafka sink writes with: idempotent and batching, counting the messages of
//! each timely time the broker has not acknowledged yet.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use super::KafkaSinkConfig;
use super::message::Outbound;
use crate::failure::fail;
use crate::kafka::client_config;

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

/// A Kafka sink's producer.
pub type SinkProducer = BaseProducer<DeliveryTracker>;

/// Creates the idempotent producer a Kafka sink uses; with `transactional`, a transactional
/// one of that `transactional.id` and transaction timeout.
pub fn producer(
    config: &KafkaSinkConfig,
    transactional: Option<(&str, Duration)>,
) -> anyhow::Result<SinkProducer> {
    let mut client = client_config(
        &[
            ("enable.idempotence", "true"),
            ("linger.ms", "5"),
            ("batch.num.messages", "10000"),
            ("queue.buffering.max.messages", "500000"),
        ],
        &config.properties,
    );
    if let Some((id, timeout)) = transactional {
        client
            .set("transactional.id", id)
            .set("transaction.timeout.ms", timeout.as_millis().to_string());
    }
    client
        .create_with_context(DeliveryTracker::default())
        .with_context(|| format!("creating the producer for topic `{}`", config.topic))
}

/// Serves delivery reports, and ends the worker if a message could not be delivered: nothing
/// past it may be committed or checkpointed.
pub fn serve(producer: &SinkProducer, topic: &str) {
    producer.poll(Duration::ZERO);
    if let Some(failure) = producer.context().failures.lock().unwrap().first() {
        fail(format!(
            "Kafka sink: delivery to `{topic}` failed after retries: {failure}; stopping before \
             any position past it is committed"
        ));
    }
}

/// The times with messages still unacknowledged, and how many each.
pub fn in_flight(producer: &SinkProducer) -> MutexGuard<'_, BTreeMap<u64, usize>> {
    producer.context().in_flight.lock().unwrap()
}

/// Sends `message` (to `topic` unless it names its own) at timely time `time`, with `extra`
/// headers after its own, waiting (while serving delivery reports) when the local queue is
/// full.
pub fn send(
    producer: &SinkProducer,
    topic: &str,
    message: &Outbound,
    extra: &[(&str, &[u8])],
    time: u64,
) {
    *producer
        .context()
        .in_flight
        .lock()
        .unwrap()
        .entry(time)
        .or_default() += 1;
    let topic = message.topic.as_deref().unwrap_or(topic);
    let mut record = BaseRecord::with_opaque_to(topic, time as usize).payload(&message.value[..]);
    if let Some(key) = &message.key {
        record = record.key(&key[..]);
    }
    if let Some(partition) = message.partition {
        record = record.partition(partition);
    }
    let own = message
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()));
    let headers: Vec<(&str, &[u8])> = own.chain(extra.iter().copied()).collect();
    if !headers.is_empty() {
        let mut owned = OwnedHeaders::new_with_capacity(headers.len());
        for (key, value) in headers {
            owned = owned.insert(Header {
                key,
                value: Some(value),
            });
        }
        record = record.headers(owned);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(5));
            }
            Err((e, _)) => fail(format!("Kafka sink: producing to `{topic}` failed: {e}")),
        }
    }
}
