//! The Kafka client settings that sources and sinks (and the tools) share: one place for what
//! every librdkafka client of Eddy gets.

use std::cell::RefCell;

use rdkafka::TopicPartitionList;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::ConsumerGroupMetadata;

/// Builds a librdkafka configuration from verbatim properties over our defaults.
pub fn client_config(defaults: &[(&str, &str)], properties: &[(String, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    for (k, v) in defaults {
        config.set(*k, *v);
    }
    for (k, v) in properties {
        config.set(k, v);
    }
    config.set_log_level(RDKafkaLogLevel::Warning);
    config
}

/// The consumer-group offsets a worker's Kafka sources stood at when they handed off their part
/// of a checkpoint, offered to the transactional sinks of the same worker, which commit them in
/// the transaction that holds the output before that checkpoint (`send_offsets_to_transaction`).
/// Each source keeps only its latest offer; the first sink to commit takes them all.
#[derive(Default)]
pub struct TransactionOffsets {
    offers: RefCell<Vec<OffsetsOffer>>,
}

/// One source's offsets, and the consumer group they belong to.
pub struct OffsetsOffer {
    /// The source's name.
    pub source: String,
    /// The source consumer's group.
    pub group: ConsumerGroupMetadata,
    /// The next offset to read, per partition.
    pub offsets: TopicPartitionList,
}

impl TransactionOffsets {
    /// Offers `offer` in place of its source's earlier one.
    pub fn offer(&self, offer: OffsetsOffer) {
        let mut offers = self.offers.borrow_mut();
        offers.retain(|o| o.source != offer.source);
        offers.push(offer);
    }

    /// Takes every offer made since the last take.
    pub fn take(&self) -> Vec<OffsetsOffer> {
        std::mem::take(&mut self.offers.borrow_mut())
    }
}
