//! The load generator: writes generated card transactions into a Kafka topic as JSON, at a rate
//! or as fast as the producer goes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::kafka::client_config;
use crate::sources::generator::{Generator, GeneratorConfig};

/// What to produce where.
#[derive(Clone, Debug)]
pub struct ProduceOptions {
    /// librdkafka properties (`bootstrap.servers` at least).
    pub properties: Vec<(String, String)>,
    /// The topic.
    pub topic: String,
    /// The transactions.
    pub generator: GeneratorConfig,
    /// Replace every n-th message by malformed JSON (to exercise dead-lettering).
    pub malformed_every: Option<u64>,
}

/// Produces until the generator ends or `stop` is set; counts messages in `produced`.
pub fn produce(
    options: &ProduceOptions,
    stop: &AtomicBool,
    produced: &AtomicU64,
) -> anyhow::Result<u64> {
    let producer: BaseProducer = client_config(
        &[
            ("linger.ms", "5"),
            ("batch.num.messages", "10000"),
            ("enable.idempotence", "true"),
        ],
        &options.properties,
    )
    .create()
    .context("creating the producer")?;
    let mut generator = Generator::new(options.generator.clone());
    let mut sent = 0u64;
    let (mut payload, mut key, mut batch) = (Vec::new(), Vec::new(), Vec::with_capacity(4096));
    while !generator.finished() && !stop.load(Ordering::Relaxed) {
        batch.clear();
        generator.take(4096, |txn| batch.push(txn));
        for txn in &batch {
            payload.clear();
            key.clear();
            sent += 1;
            if options
                .malformed_every
                .is_some_and(|n| sent.is_multiple_of(n))
            {
                payload.extend_from_slice(br#"{"txn_id":"broken","account_id":"#);
            } else {
                serde_json::to_writer(&mut payload, txn)?;
            }
            key.extend_from_slice(itoa::Buffer::new().format(txn.account_id).as_bytes());
            loop {
                let record = BaseRecord::to(&options.topic).payload(&payload).key(&key);
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        producer.poll(Duration::from_millis(5));
                    }
                    Err((e, _)) => return Err(e).context("producing"),
                }
            }
        }
        produced.fetch_add(batch.len() as u64, Ordering::Relaxed);
        producer.poll(Duration::ZERO);
        let wait = generator.wait();
        if !wait.is_zero() {
            producer.poll(wait.min(Duration::from_millis(50)));
        }
    }
    producer
        .flush(Duration::from_secs(30))
        .context("flushing the producer")?;
    Ok(sent)
}
