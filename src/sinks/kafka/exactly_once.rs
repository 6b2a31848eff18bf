//! Exactly-once delivery to Kafka without transactions.
//!
//! A job's outputs are deterministic: restored from a checkpoint at frontier T, it makes again
//! exactly the messages it made at times T and later, at the same timely times. So each
//! partition is written by one worker, the messages of a time once that time is complete, in
//! their total order ([`Outbound`]'s), each carrying its place: headers `eddy.time` (the timely
//! time) and `eddy.seq` (its index among that partition's messages of that time), beside
//! `eddy.job`, `eddy.sink` and `eddy.history`, which say who wrote it. A restored sink reads
//! the tail of each partition it writes back to the last message of its own (another producer
//! may write there too), and skips every message up to that place: what the crashed run wrote
//! is not written again, and what it did not is. A plain consumer sees each result once.
//!
//! The history (see [`crate::state::Manifest::history`]) keeps a job started afresh from
//! skipping by the places of an abandoned history's messages.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::Message as _;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{Offset, TopicPartitionList};

use super::message::Outbound;
use crate::failure::fail;
use crate::kafka::client_config;

/// The header naming the job that wrote a message (the rows' provenance carries it already).
pub const JOB: &str = "eddy.job";
/// The header naming the output and sink (`output → sink`) that wrote a message.
pub const SINK: &str = "eddy.sink";
/// The header naming the history of checkpoints the writing run belongs to.
pub const HISTORY: &str = "eddy.history";
/// The header holding a message's timely time.
pub const TIME: &str = "eddy.time";
/// The header holding a message's index among its partition's messages of its time.
pub const SEQ: &str = "eddy.seq";

/// A message's place in its partition: its timely time, then its index among that partition's
/// messages of that time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    /// The timely time.
    pub time: u64,
    /// The index within the time.
    pub seq: u64,
}

/// Who writes a sink's messages: one output of one job, in one history.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The job's name.
    pub job: String,
    /// The sink's section, `output → sink`.
    pub sink: String,
    /// The history, in hexadecimal.
    pub history: String,
}

impl Identity {
    /// The place of `message` if this identity wrote it.
    fn place_of(&self, message: &BorrowedMessage<'_>) -> Option<Place> {
        let headers = message.headers()?;
        let mut ours = [false; 3];
        let (mut time, mut seq) = (None, None);
        let number = |v: Option<&[u8]>| std::str::from_utf8(v?).ok()?.parse::<u64>().ok();
        for header in headers.iter() {
            let value = header.value;
            match header.key {
                JOB => ours[0] = value == Some(self.job.as_bytes()),
                SINK => ours[1] = value == Some(self.sink.as_bytes()),
                HISTORY => ours[2] = value == Some(self.history.as_bytes()),
                TIME => time = number(value),
                SEQ => seq = number(value),
                _ => {}
            }
        }
        Some(Place {
            time: time?,
            seq: seq?,
        })
        .filter(|_| ours.iter().all(|&o| o))
    }
}

/// How long the broker may leave a read of a partition's tail unanswered.
const TAIL_WAIT: Duration = Duration::from_secs(60);
/// The messages read back from a partition's end first; each further step reads four times as
/// many.
const FIRST_STEP: i64 = 256;

/// What an exactly-once sink's worker knows of its partitions: where each left off before the
/// restore.
pub struct Ordered {
    identity: Identity,
    /// The sink's own topic.
    topic: String,
    /// The consumer that reads partitions' tails; `None` when the job starts afresh, so that
    /// nothing is skipped.
    tails: Option<BaseConsumer>,
    /// Per topic (`None`: the sink's) and partition, the last place written before the restore.
    written: HashMap<(Option<String>, i32), Option<Place>>,
    /// Messages skipped as already written.
    skipped: u64,
}

impl Ordered {
    /// The ordered writing of `identity`'s messages to `topic` (unless a message names its
    /// own); `restored`: the job resumes from a checkpoint, and reads its partitions' tails
    /// with a consumer of `properties`.
    pub fn new(
        identity: Identity,
        topic: &str,
        properties: &[(String, String)],
        restored: bool,
    ) -> anyhow::Result<Ordered> {
        let tails = restored
            .then(|| {
                client_config(
                    &[
                        ("group.id", "eddy-sink-tail"),
                        ("enable.auto.commit", "false"),
                        ("enable.partition.eof", "true"),
                        // Only committed messages were written (transactional delivery): an
                        // aborted transaction's are to be written again.
                        ("isolation.level", "read_committed"),
                        ("fetch.queue.backoff.ms", "5"),
                    ],
                    properties,
                )
                .create::<BaseConsumer>()
            })
            .transpose()?;
        Ok(Ordered {
            identity,
            topic: topic.to_string(),
            tails,
            written: HashMap::new(),
            skipped: 0,
        })
    }

    /// Writes `messages`, all of time `time` (which is complete), in their total order: each
    /// goes to `send` with its headers of place and identity, unless its partition already
    /// holds it.
    pub fn write(
        &mut self,
        time: u64,
        mut messages: Vec<Outbound>,
        mut send: impl FnMut(&Outbound, &[(&str, &[u8])]),
    ) {
        messages.sort_unstable();
        let time_text = time.to_string();
        // Per run of one partition's messages: the next index, and where it left off before.
        let (mut seq, mut last) = (0u64, None);
        for (i, message) in messages.iter().enumerate() {
            let first = i == 0 || {
                let before = &messages[i - 1];
                (&before.topic, before.partition) != (&message.topic, message.partition)
            };
            if first {
                seq = 0;
                last = self.last_written(&message.topic, message.partition.unwrap_or(0));
            }
            let place = Place { time, seq };
            seq += 1;
            if last.is_some_and(|last| place <= last) {
                self.skipped += 1;
                continue;
            }
            let seq_text = place.seq.to_string();
            let headers = [
                (JOB, self.identity.job.as_bytes()),
                (SINK, self.identity.sink.as_bytes()),
                (HISTORY, self.identity.history.as_bytes()),
                (TIME, time_text.as_bytes()),
                (SEQ, seq_text.as_bytes()),
            ];
            let has_job = message.headers.iter().any(|(k, _)| k == JOB);
            send(message, &headers[usize::from(has_job)..]);
        }
    }

    /// The last place this sink wrote to `topic`/`partition` before the restore, read from the
    /// partition's tail the first time it is asked for.
    fn last_written(&mut self, topic: &Option<String>, partition: i32) -> Option<Place> {
        let Some(tails) = &self.tails else {
            return None;
        };
        if let Some(&place) = self.written.get(&(topic.clone(), partition)) {
            return place;
        }
        let name = topic.as_deref().unwrap_or(&self.topic);
        let place = last_place(tails, name, partition, &self.identity).unwrap_or_else(|e| {
            fail(format!(
                "Kafka sink: reading the end of {name}/{partition} to find where it left off: {e}"
            ))
        });
        tracing::info!(
            topic = name,
            partition,
            ?place,
            "exactly-once sink resumes after its last message"
        );
        self.written.insert((topic.clone(), partition), place);
        place
    }
}

impl Drop for Ordered {
    fn drop(&mut self) {
        if self.skipped > 0 {
            tracing::info!(
                skipped = self.skipped,
                sink = self.identity.sink,
                "messages already written before the restore were not written again"
            );
        }
    }
}

/// The place of `identity`'s last message in `topic`/`partition`: the partition is read back
/// from its end in growing steps until one holds a message of `identity`'s, or its start is
/// reached.
pub fn last_place(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    identity: &Identity,
) -> anyhow::Result<Option<Place>> {
    let (low, high) = consumer.fetch_watermarks(topic, partition, TAIL_WAIT)?;
    let (mut end, mut step) = (high, FIRST_STEP);
    while end > low {
        let start = (end - step).max(low);
        if let Some(place) = last_in(consumer, (topic, partition), start..end, identity)? {
            return Ok(Some(place));
        }
        end = start;
        step = step.saturating_mul(4);
    }
    Ok(None)
}

/// The place of `identity`'s last message among the offsets `range` of `topic`/`partition`.
fn last_in(
    consumer: &BaseConsumer,
    (topic, partition): (&str, i32),
    range: std::ops::Range<i64>,
    identity: &Identity,
) -> anyhow::Result<Option<Place>> {
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(range.start))?;
    consumer.assign(&assignment)?;
    let mut last = None;
    let since = Instant::now();
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                if message.offset() >= range.end {
                    break;
                }
                if let Some(place) = identity.place_of(&message) {
                    last = Some(place);
                }
                if message.offset() == range.end - 1 {
                    break;
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => return Err(e.into()),
            None if since.elapsed() > TAIL_WAIT => {
                anyhow::bail!(
                    "offsets {range:?} were not read within {}s",
                    TAIL_WAIT.as_secs()
                )
            }
            None => {}
        }
    }
    Ok(last)
}
