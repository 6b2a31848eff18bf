//! The messages a Kafka sink writes, encoded on the worker that made their rows, and the
//! partition each goes to when the sink decides partitions itself (exactly-once delivery: each
//! partition is then written by one worker).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::time::{Duration, Instant};

use rdkafka::producer::Producer;
use serde::{Deserialize, Serialize};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;

use super::producer::SinkProducer;
use crate::failure::fail;
use crate::sinks::Encode;

/// One message of a Kafka sink. Its derived order (topic, partition, key, value, headers) is
/// the total order in which an exactly-once sink writes the messages of one timely time.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Outbound {
    /// The topic, when the row chose one; `None`: the sink's.
    pub topic: Option<String>,
    /// The partition, when the sink decides it; `None`: the producer's partitioner does.
    pub partition: Option<i32>,
    /// The message key.
    pub key: Option<Vec<u8>>,
    /// The message value.
    pub value: Vec<u8>,
    /// The encoder's headers.
    pub headers: Vec<(String, String)>,
}

impl Outbound {
    /// The key messages are exchanged between workers by: every message of one topic
    /// partition goes to the same worker, in every process.
    pub fn route(&self) -> u64 {
        let mut hasher = rustc_hash::FxHasher::default();
        self.topic.hash(&mut hasher);
        hasher
            .finish()
            .wrapping_add(self.partition.unwrap_or(0) as u64)
    }
}

/// Kafka's default partitioner: the murmur2 hash of `bytes` (the key, as the Java client and
/// librdkafka's `murmur2` partitioner hash it) over `partitions`.
pub fn partition_for(bytes: &[u8], partitions: i32) -> i32 {
    let hash = murmur2::murmur2(bytes, murmur2::KAFKA_SEED) & 0x7fff_ffff;
    (hash % partitions.max(1) as u32) as i32
}

/// The partition counts of the topics a sink writes, each read from the broker once.
pub struct Partitions {
    producer: Rc<SinkProducer>,
    /// The sink's own topic.
    topic: String,
    counts: HashMap<Option<String>, i32>,
}

/// How long a topic's metadata is waited for (it may be created on first use).
const METADATA_WAIT: Duration = Duration::from_secs(30);

impl Partitions {
    /// The partition counts of the topics written through `producer`, `topic` unless a row
    /// names its own.
    pub fn new(producer: Rc<SinkProducer>, topic: &str) -> Partitions {
        Partitions {
            producer,
            topic: topic.to_string(),
            counts: HashMap::new(),
        }
    }

    /// The partition `message` goes to: by its key, or, without one, by its value, so that the
    /// partition follows from the message alone.
    pub fn of(&mut self, message: &Outbound) -> i32 {
        let partitions = match self.counts.get(&message.topic) {
            Some(&n) => n,
            None => {
                let n = self.count(message.topic.as_deref().unwrap_or(&self.topic));
                self.counts.insert(message.topic.clone(), n);
                n
            }
        };
        partition_for(message.key.as_ref().unwrap_or(&message.value), partitions)
    }

    /// Reads `topic`'s partition count, waiting while the broker creates it.
    fn count(&self, topic: &str) -> i32 {
        let start = Instant::now();
        loop {
            let problem = match self
                .producer
                .client()
                .fetch_metadata(Some(topic), Duration::from_secs(5))
            {
                Ok(metadata) => match metadata.topics().first() {
                    Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                        return t.partitions().len() as i32;
                    }
                    Some(t) => format!("{:?}", t.error()),
                    None => "no such topic".to_string(),
                },
                Err(e) => e.to_string(),
            };
            if start.elapsed() > METADATA_WAIT {
                fail(format!(
                    "Kafka sink: the partitions of topic `{topic}` are unknown after {}s: \
                     {problem}",
                    METADATA_WAIT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Encodes a stream's items as the messages of a Kafka sink.
pub trait EncodeMessages<'scope, D> {
    /// Each item as the message `encoder` makes of it, with its partition when `partitions`
    /// is given.
    fn encode_messages<E: Encode<D>>(
        self,
        encoder: E,
        partitions: Option<Partitions>,
    ) -> StreamVec<'scope, u64, Outbound>;
}

impl<'scope, D: 'static> EncodeMessages<'scope, D> for StreamVec<'scope, u64, D> {
    fn encode_messages<E: Encode<D>>(
        self,
        encoder: E,
        mut partitions: Option<Partitions>,
    ) -> StreamVec<'scope, u64, Outbound> {
        let mut topic = String::new();
        self.unary(Pipeline, "KafkaEncode", move |_, _| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let mut session = output.session(&cap);
                    for item in data.drain(..) {
                        let mut key = Vec::new();
                        let mut value = Vec::new();
                        let has_key = encoder.key(&item, &mut key);
                        encoder.value(&item, &mut value);
                        topic.clear();
                        let mut message = Outbound {
                            topic: encoder.topic(&item, &mut topic).then(|| topic.clone()),
                            partition: None,
                            key: has_key.then_some(key),
                            value,
                            headers: encoder
                                .headers(&item)
                                .into_iter()
                                .map(|(k, v)| (k.to_string(), v))
                                .collect(),
                        };
                        if let Some(partitions) = partitions.as_mut() {
                            message.partition = Some(partitions.of(&message));
                        }
                        session.give(message);
                    }
                });
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The partitions librdkafka's own `murmur2` partitioner (the Java client's default) picks.
    #[test]
    fn keys_go_to_the_partitions_librdkafka_picks() {
        for i in 0..1_000u32 {
            let key = format!("account-{i}").into_bytes();
            for partitions in [1, 3, 4, 12] {
                // SAFETY: the partitioner reads `key` and uses neither the topic nor the
                // opaques, which may be null.
                let theirs = unsafe {
                    rdkafka::bindings::rd_kafka_msg_partitioner_murmur2(
                        std::ptr::null(),
                        key.as_ptr().cast(),
                        key.len(),
                        partitions,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                    )
                };
                assert_eq!(partition_for(&key, partitions), theirs, "key {i}");
            }
        }
    }
}
