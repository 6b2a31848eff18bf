//! Transactional delivery to Kafka (`delivery = "transactional"`): the exactly-once writing of
//! [`super::exactly_once`], with each checkpoint's output committed in one Kafka transaction,
//! for consumers that read `isolation.level=read_committed`.
//!
//! Each worker's producer has its own `transactional.id` (job, sink, worker). For a checkpoint
//! at T, once the sink's input has passed T it commits the open transaction (everything it has
//! written, every time before T among it), with the offsets its worker's Kafka sources stood at
//! for T (`send_offsets_to_transaction`), then hands off its part and begins the next. The
//! transaction is committed before the checkpoint is complete: librdkafka cannot resume another
//! process's transaction, so one left open by a crash can only be aborted. A restore from an
//! earlier checkpoint then writes again what a committed transaction holds, and the place
//! headers skip it, as in exactly-once delivery: committed output is never repeated, and what
//! an aborted transaction held is written again.
//!
//! A starting sink first fences its `transactional.id` (`init_transactions`), which aborts the
//! transaction a crashed run left open (or waits for its commit to finish) before the partitions'
//! tails are read; after a restore with fewer workers it also fences the ids of the workers it
//! takes over.

use std::rc::Rc;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::producer::Producer;

use super::KafkaSinkConfig;
use super::exactly_once::Identity;
use super::producer::{self, SinkProducer};
use crate::failure::fail;
use crate::kafka::TransactionOffsets;

/// How long a transaction call may wait for the brokers.
const WAIT: Duration = Duration::from_secs(60);

/// The `transactional.id` of worker `worker`'s producer for the sink `identity` names.
pub fn transactional_id(identity: &Identity, worker: usize) -> String {
    format!("eddy:{}:{}:{worker}", identity.job, identity.sink)
}

/// How long the brokers let a transaction stay open: past two checkpoint intervals, within the
/// brokers' usual bounds (1 to 15 minutes).
pub fn transaction_timeout(interval: Duration) -> Duration {
    (interval * 3).clamp(Duration::from_secs(60), Duration::from_secs(900))
}

/// A transactional sink worker's open transaction.
pub struct Transaction {
    /// The offsets its worker's sources offer.
    offers: Rc<TransactionOffsets>,
    /// The least time written since the last commit, if anything was.
    open_since: Option<u64>,
}

impl Transaction {
    /// Fences `producer`'s `transactional.id`, and the ids `taken_over` (of a former run's
    /// workers, with transactions of `timeout`), then begins the first transaction.
    pub fn begin(
        producer: &SinkProducer,
        (config, timeout): (&KafkaSinkConfig, Duration),
        taken_over: &[String],
        offers: Rc<TransactionOffsets>,
    ) -> anyhow::Result<Transaction> {
        for id in taken_over {
            let abandoned = producer::producer(config, Some((id, timeout)))?;
            abandoned
                .init_transactions(WAIT)
                .with_context(|| format!("fencing the transactional id `{id}` of a former run"))?;
        }
        producer.init_transactions(WAIT).context(
            "initializing Kafka transactions (delivery = \"transactional\" needs brokers that \
             support them)",
        )?;
        producer
            .begin_transaction()
            .context("beginning a transaction")?;
        Ok(Transaction {
            offers,
            open_since: None,
        })
    }

    /// Notes that a message of time `time` went into the open transaction.
    pub fn wrote(&mut self, time: u64) {
        self.open_since.get_or_insert(time);
    }

    /// Whether messages of `time` wait for the open transaction's commit.
    pub fn holds(&self, time: u64) -> bool {
        self.open_since.is_some_and(|since| time >= since)
    }

    /// Commits the open transaction with the offsets offered since the last commit, and begins
    /// the next; does nothing when there is nothing to commit. A failure ends the worker:
    /// nothing past it may be checkpointed.
    pub fn commit(&mut self, producer: &SinkProducer, topic: &str) {
        let offers = self.offers.take();
        if self.open_since.is_none() && offers.is_empty() {
            return;
        }
        let committed = offers
            .iter()
            .try_for_each(|offer| {
                producer.send_offsets_to_transaction(&offer.offsets, &offer.group, WAIT)
            })
            .and_then(|()| producer.commit_transaction(WAIT))
            .and_then(|()| producer.begin_transaction());
        if let Err(e) = committed {
            fail(format!(
                "Kafka sink: committing the transaction of `{topic}` failed: {e}; stopping \
                 before the checkpoint, so a restore writes its output again"
            ));
        }
        self.open_since = None;
    }
}
