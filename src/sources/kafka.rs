//! Kafka topics as a source: a statically assigned consumer per worker (each partition of each
//! topic belongs to exactly one worker of all processes), batched polling, schema-driven decoding,
//! and offsets committed only once the sinks have flushed what was derived from them.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use backon::{BlockingRetryable, ExponentialBuilder};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::{Checkpoint, Positioned, ReadBatch, ReadStatus, Reader, too_long};
use crate::kafka::{OffsetsOffer, TransactionOffsets, client_config};
use crate::record::{DeadLetter, Payload, Record, Schema};
use crate::state::Position;
use crate::stats::Stats;

const BATCH: usize = 8192;
const TIMEOUT: Duration = Duration::from_secs(10);

/// Where a source starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartFrom {
    /// The job's latest complete checkpoint, when its file has `[checkpoints]` and the store
    /// holds one; otherwise as [`StartFrom::Committed`].
    Checkpoint,
    /// The consumer group's committed offsets (the earliest offset where none is committed).
    Committed,
    /// The beginning of each partition.
    Earliest,
    /// The end of each partition: only new messages.
    Latest,
    /// The first message at or after this event time (epoch ms, by the message timestamp).
    Time(i64),
}

impl std::str::FromStr for StartFrom {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "checkpoint" => StartFrom::Checkpoint,
            "committed" => StartFrom::Committed,
            "earliest" => StartFrom::Earliest,
            "latest" => StartFrom::Latest,
            time => StartFrom::Time(
                time.parse::<jiff::Timestamp>()
                    .map_err(|e| {
                        format!(
                            "expected checkpoint, committed, earliest, latest or an RFC 3339 \
                             time: {e}"
                        )
                    })?
                    .as_millisecond(),
            ),
        })
    }
}

/// What a Kafka source reads and how.
#[derive(Clone, Debug)]
pub struct KafkaSourceConfig {
    /// librdkafka properties, passed verbatim (`bootstrap.servers`, `group.id`, TLS, SASL, …).
    pub properties: Vec<(String, String)>,
    /// The topics to read.
    pub topics: Vec<String>,
    /// Where to start.
    pub start: StartFrom,
    /// Stop at the end offsets seen at start-up instead of following the topics.
    pub until_end: bool,
    /// A longer message is dead-lettered without being decoded.
    pub max_record_bytes: usize,
}

/// Forwards librdkafka's statistics into the job's [`Stats`]: the consumer lag, as messages
/// between what the source has read and the end of its partitions, in total, per source and per
/// partition.
pub struct LagContext {
    stats: Arc<Stats>,
    /// The source's name, the `source` label of its partitions' lag.
    source: String,
    last: std::sync::atomic::AtomicI64,
}

impl LagContext {
    /// Reports `lag` messages behind the end of partition `partition` of `topic`.
    fn set_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.stats
            .partition_lag(&self.source, topic, partition)
            .set(lag);
    }
}

impl ClientContext for LagContext {
    fn stats(&self, statistics: Statistics) {
        let mut lag = 0;
        for topic in statistics.topics.values() {
            for p in topic.partitions.values() {
                if p.partition >= 0 && p.hi_offset >= 0 && p.app_offset >= 0 {
                    let behind = (p.hi_offset - p.app_offset).max(0);
                    self.set_lag(&topic.topic, p.partition, behind);
                    lag += behind;
                }
            }
        }
        let previous = self.last.swap(lag, Ordering::Relaxed);
        self.stats
            .consumer_lag
            .fetch_add(lag - previous, Ordering::Relaxed);
        self.stats.source_lag(&self.source).inc_by(lag - previous);
    }
}

impl ConsumerContext for LagContext {}

/// One worker's consumer and the partitions it owns.
pub struct KafkaReader {
    consumer: BaseConsumer<LagContext>,
    schema: Arc<Schema>,
    max_record_bytes: usize,
    /// (topic, partition) per local partition index.
    partitions: Vec<(String, i32)>,
    /// Next offset to read per partition.
    positions: Vec<i64>,
    /// The offset each partition started at.
    started: Vec<i64>,
    committed: Vec<i64>,
    /// End offsets when reading `until_end`.
    ends: Option<Vec<i64>>,
    /// The checkpoint committed with the offsets this reader resumed from.
    restored: Option<Checkpoint>,
    finished: Vec<bool>,
    /// Where the offsets handed off for a checkpoint are offered to the worker's transactional
    /// sinks, under the source's name (see [`KafkaReader::offer_offsets`]).
    offers: Option<(String, Rc<TransactionOffsets>)>,
}

impl KafkaReader {
    /// Connects worker `index` of `peers` of source `source` and assigns it its share of the
    /// topics' partitions.
    /// With `resume` (a checkpoint's positions of the source, by [`Reader::partition_name`]),
    /// each partition starts at its checkpointed offset with its clock, and one the checkpoint
    /// does not name (added to the topic since) at its earliest; the consumer group's offsets are
    /// not read.
    /// While the brokers cannot be reached (or the topics are not there yet), it retries with
    /// exponential backoff and says so in the log, until `stop` is set.
    pub fn open(
        source: &str,
        config: &KafkaSourceConfig,
        schema: Arc<Schema>,
        (index, peers): (usize, usize),
        resume: Option<&BTreeMap<String, Position>>,
        stats: Arc<Stats>,
        stop: &AtomicBool,
    ) -> anyhow::Result<KafkaReader> {
        let consumer: BaseConsumer<LagContext> = client_config(
            &[
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "earliest"),
                ("fetch.queue.backoff.ms", "5"),
                ("statistics.interval.ms", "1000"),
            ],
            &config.properties,
        )
        .create_with_context(LagContext {
            stats,
            source: source.to_string(),
            last: Default::default(),
        })
        .context("creating the Kafka consumer")?;
        let (partitions, positions, ends, restored) =
            (|| assign(&consumer, config, (index, peers), resume))
                .retry(
                    ExponentialBuilder::default()
                        .with_max_delay(Duration::from_secs(30))
                        .without_max_times(),
                )
                .sleep(std::thread::sleep)
                .when(|_| !stop.load(Ordering::Relaxed))
                .notify(|e, delay| tracing::warn!("Kafka source: {e:#}; retrying in {delay:?}"))
                .call()?;
        tracing::info!(
            worker = index,
            ?partitions,
            ?positions,
            "Kafka source assigned"
        );
        Ok(KafkaReader {
            consumer,
            schema,
            max_record_bytes: config.max_record_bytes,
            committed: positions.clone(),
            started: positions.clone(),
            finished: vec![false; positions.len()],
            positions,
            partitions,
            ends,
            restored,
            offers: None,
        })
    }

    /// Offers the offsets this reader hands off for each checkpoint, as source `source`, to
    /// `offers`: the transactional sinks of the same worker commit them with their output.
    pub fn offer_offsets(mut self, source: &str, offers: Rc<TransactionOffsets>) -> Self {
        self.offers = Some((source.to_string(), offers));
        self
    }
}

/// How a checkpoint is kept in the commit metadata of each partition.
const CHECKPOINT_PREFIX: &str = "eddy1";

fn checkpoint_metadata(clock: u64, emitted_before: u64) -> String {
    format!("{CHECKPOINT_PREFIX} {clock} {emitted_before}")
}

/// (clock, emitted_before) from a partition's commit metadata; `None` if it is not ours.
fn parse_checkpoint(metadata: &str) -> Option<(u64, u64)> {
    let mut parts = metadata.split(' ');
    (parts.next()? == CHECKPOINT_PREFIX).then_some(())?;
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The partitions a worker owns, their start offsets, (reading `until_end`) their end offsets,
/// and the checkpoint resumed from; assigned to `consumer`, whose context reports each
/// partition's lag from its start.
type Assignment = (
    Vec<(String, i32)>,
    Vec<i64>,
    Option<Vec<i64>>,
    Option<Checkpoint>,
);

/// Looks up the topics, picks worker `index`'s partitions, resolves where each starts (from
/// `resume`, a checkpoint's positions, if given), and assigns them.
fn assign(
    consumer: &BaseConsumer<LagContext>,
    config: &KafkaSourceConfig,
    (index, peers): (usize, usize),
    resume: Option<&BTreeMap<String, Position>>,
) -> anyhow::Result<Assignment> {
    let mut all = Vec::new();
    for topic in &config.topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), TIMEOUT)
            .with_context(|| format!("reading the metadata of topic `{topic}`"))?;
        let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
            bail!("topic `{topic}` not found");
        };
        if let Some(err) = t.error() {
            bail!("topic `{topic}`: {:?}", err);
        }
        let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
        ids.sort();
        all.extend(ids.into_iter().map(|p| (topic.clone(), p)));
    }
    let partitions: Vec<(String, i32)> = super::owned_partitions(all.len(), index, peers)
        .map(|i| all[i].clone())
        .collect();

    let mut bounds = Vec::new();
    for (topic, p) in &partitions {
        bounds.push(
            consumer
                .fetch_watermarks(topic, *p, TIMEOUT)
                .with_context(|| format!("reading the offsets of {topic}/{p}"))?,
        );
    }
    let mut tpl = TopicPartitionList::new();
    for (topic, p) in &partitions {
        tpl.add_partition(topic, *p);
    }
    let mut restored = None;
    let resolved = match (config.start, resume) {
        (StartFrom::Checkpoint, Some(resume)) => {
            let (resolved, checkpoint) = checkpointed(&partitions, resume)?;
            restored = Some(checkpoint);
            resolved
        }
        (StartFrom::Checkpoint | StartFrom::Committed, _) => {
            // Every partition's checkpoint: windows any of them says were emitted are done.
            let mut everything = TopicPartitionList::new();
            for (topic, p) in &all {
                everything.add_partition(topic, *p);
            }
            let committed = consumer
                .committed_offsets(everything, TIMEOUT)
                .context("reading the committed offsets")?;
            let checkpoint = |topic: &str, p: i32| {
                committed
                    .find_partition(topic, p)
                    .and_then(|e| parse_checkpoint(e.metadata()))
            };
            let emitted_before = all
                .iter()
                .filter_map(|(t, p)| checkpoint(t, *p))
                .map(|c| c.1)
                .max();
            restored = emitted_before.map(|emitted_before| Checkpoint {
                clocks: partitions
                    .iter()
                    .map(|(t, p)| checkpoint(t, *p).map_or(0, |c| c.0))
                    .collect(),
                emitted_before,
            });
            committed
        }
        (StartFrom::Time(ms), _) => {
            let mut times = TopicPartitionList::new();
            for (topic, p) in &partitions {
                times.add_partition_offset(topic, *p, Offset::Offset(ms))?;
            }
            consumer
                .offsets_for_times(times, TIMEOUT)
                .context("looking up offsets for the start time")?
        }
        (StartFrom::Earliest | StartFrom::Latest, _) => tpl,
    };
    let latest_on_reset = config.properties.iter().any(|(k, v)| {
        k == "auto.offset.reset" && matches!(v.as_str(), "latest" | "largest" | "end")
    });
    let mut assignment = TopicPartitionList::new();
    let mut positions = Vec::new();
    for (i, (topic, p)) in partitions.iter().enumerate() {
        let (low, high) = bounds[i];
        let found = resolved.find_partition(topic, *p).map(|e| e.offset());
        let start = match (config.start, found) {
            (StartFrom::Earliest, _) => low,
            (StartFrom::Latest, _) => high,
            (_, Some(Offset::Offset(n))) if n < low && restored.is_some() => {
                tracing::warn!(
                    "{topic}/{p}: the checkpoint's offset {n} is no longer in the partition, \
                     which starts at {low}: messages {n}..{low} are lost to retention"
                );
                low
            }
            (_, Some(Offset::Offset(n))) => n.clamp(low, high),
            (StartFrom::Checkpoint, _) if resume.is_some() => low,
            (StartFrom::Time(ms), _) => {
                tracing::warn!(
                    "{topic}/{p}: the broker found no message at or after {} (epoch ms \
                         {ms}); starting at the partition's end",
                    jiff::Timestamp::from_millisecond(ms).map_or(ms.to_string(), |t| t.to_string())
                );
                high
            }
            (_, _) if latest_on_reset => high,
            _ => low,
        };
        assignment.add_partition_offset(topic, *p, Offset::Offset(start))?;
        consumer.context().set_lag(topic, *p, high - start);
        positions.push(start);
    }
    consumer
        .assign(&assignment)
        .context("assigning partitions")?;
    let ends = config
        .until_end
        .then(|| bounds.iter().map(|(_, high)| *high).collect::<Vec<_>>());
    Ok((partitions, positions, ends, restored))
}

/// Where each of `partitions` starts from a checkpoint's `positions`, and the clocks it restores.
fn checkpointed(
    partitions: &[(String, i32)],
    positions: &BTreeMap<String, Position>,
) -> anyhow::Result<(TopicPartitionList, Checkpoint)> {
    let mut resolved = TopicPartitionList::new();
    let mut clocks = Vec::with_capacity(partitions.len());
    for (topic, p) in partitions {
        let name = partition_name(topic, *p);
        let Some(position) = positions.get(&name) else {
            tracing::info!("{name} is not in the checkpoint: it starts at its earliest offset");
            clocks.push(0);
            continue;
        };
        let (next, clock) = super::restored_position(position)
            .map_err(|e| anyhow::anyhow!("partition {name}: checkpoint: {e}"))?;
        resolved.add_partition_offset(topic, *p, Offset::Offset(next))?;
        clocks.push(clock);
    }
    let checkpoint = Checkpoint {
        clocks,
        emitted_before: 0,
    };
    Ok((resolved, checkpoint))
}

/// A partition's name in checkpoints and logs.
fn partition_name(topic: &str, partition: i32) -> String {
    format!("{topic}/{partition}")
}

impl Reader<Record> for KafkaReader {
    /// The next offset of each partition.
    fn partitions(&self) -> usize {
        self.partitions.len()
    }

    fn read(&mut self, batch: &mut ReadBatch<Record>) -> ReadStatus {
        let mut status = ReadStatus::Waiting;
        while batch.events.len() + batch.dead.len() < BATCH {
            let message = match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Err(e)) => {
                    tracing::warn!("Kafka consumer: {e}; retrying");
                    break;
                }
                Some(Ok(message)) => message,
            };
            status = ReadStatus::Ready;
            // A worker owns a handful of partitions: a scan, with no allocation per message.
            let (topic, partition) = (message.topic(), message.partition());
            let Some(p) = self
                .partitions
                .iter()
                .position(|(t, id)| *id == partition && t == topic)
            else {
                continue;
            };
            let offset = message.offset();
            if self.finished[p] || offset < self.positions[p] {
                continue;
            }
            self.positions[p] = offset + 1;
            let payload = message.payload().unwrap_or_default();
            let next = offset + 1;
            let decoded = if payload.is_empty() {
                Err("empty payload".to_string())
            } else if payload.len() > self.max_record_bytes {
                Err(too_long(payload.len() as u64, self.max_record_bytes))
            } else {
                self.schema.decode(payload).map_err(|e| e.0)
            };
            match decoded {
                Ok(item) => batch.events.push(Positioned {
                    partition: p,
                    next,
                    item,
                }),
                Err(error) => batch.dead.push(Positioned {
                    partition: p,
                    next,
                    item: DeadLetter {
                        error,
                        topic: topic.to_owned(),
                        partition,
                        offset,
                        payload: Payload::of(payload),
                    },
                }),
            }
        }
        // Partitions that started at their end are reported here on the first read.
        if let Some(ends) = &self.ends {
            for (p, done) in self.finished.iter_mut().enumerate() {
                if !*done && self.positions[p] >= ends[p] {
                    *done = true;
                    batch.finished.push(p);
                    // Read to the end it was asked to read: nothing left behind.
                    let (topic, partition) = &self.partitions[p];
                    self.consumer.context().set_lag(topic, *partition, 0);
                }
            }
            if self.finished.iter().all(|d| *d) {
                return ReadStatus::Done;
            }
        }
        status
    }

    fn checkpointed(&self, positions: &[Option<i64>]) {
        let Some((source, offers)) = &self.offers else {
            return;
        };
        let Some(group) = self.consumer.group_metadata() else {
            return;
        };
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), next) in self.partitions.iter().zip(positions) {
            if let Some(next) = next.filter(|n| *n >= 0) {
                offsets
                    .add_partition_offset(topic, *partition, Offset::Offset(next))
                    .expect("a valid offset");
            }
        }
        offers.offer(OffsetsOffer {
            source: source.clone(),
            group,
            offsets,
        });
    }

    /// The topic and the partition's number.
    fn partition_name(&self, partition: usize) -> String {
        let (topic, number) = &self.partitions[partition];
        partition_name(topic, *number)
    }

    fn restored(&self) -> Option<&Checkpoint> {
        self.restored.as_ref()
    }

    /// The offset the partition started at, however it was found: a checkpoint taken before
    /// anything of it was read resumes there.
    fn resumed(&self, partition: usize) -> Option<i64> {
        Some(self.started[partition])
    }

    fn commit(&mut self, positions: &[i64], checkpoint: &Checkpoint, last: bool) {
        let mut tpl = TopicPartitionList::new();
        for (p, (topic, partition)) in self.partitions.iter().enumerate() {
            if positions[p] > self.committed[p] {
                tpl.add_partition_offset(topic, *partition, Offset::Offset(positions[p]))
                    .expect("a valid offset");
                let mut elem = tpl.find_partition(topic, *partition).expect("just added");
                elem.set_metadata(checkpoint_metadata(
                    checkpoint.clocks[p],
                    checkpoint.emitted_before,
                ));
            }
        }
        if tpl.count() == 0 {
            return;
        }
        let mode = if last {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        match self.consumer.commit(&tpl, mode) {
            Ok(()) => {
                for (committed, &position) in self.committed.iter_mut().zip(positions) {
                    *committed = (*committed).max(position);
                }
            }
            Err(e) => tracing::warn!("committing offsets failed (will retry): {e}"),
        }
    }
}
