//! The built-in generator of card transactions: accounts, merchants, countries and log-normal
//! amounts, with bounded event-time disorder, deterministic for a seed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use compact_str::CompactString;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal};
use serde::{Deserialize, Serialize};

use super::incidents::{FraudMix, IncidentSchedule};
use super::{Checkpoint, Positioned, ReadBatch, ReadStatus, Reader};
use crate::record::{Record, Schema, Value};
use crate::state::Position;

/// Countries the generator draws from (ISO 3166 alpha-2).
pub const COUNTRIES: [&str; 20] = [
    "US", "GB", "DE", "FR", "IT", "ES", "NL", "BE", "SE", "PL", "CH", "AT", "IE", "PT", "DK", "NO",
    "FI", "CA", "JP", "AU",
];

/// The fields of a generated transaction, as a job's schema may name them.
pub const FIELDS: [&str; 6] = [
    "txn_id",
    "account_id",
    "amount_cents",
    "merchant",
    "country",
    "ts",
];

const BATCH: usize = 8192;

/// A card transaction. Identifiers are kept as numbers and rendered as `t<seq>` and `m<k>` only
/// when a field is read or the transaction is written as JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transaction {
    /// Sequence number (`txn_id` is `t<seq>`).
    pub seq: u64,
    /// The card account.
    pub account_id: i64,
    /// Amount in cents.
    pub amount_cents: i64,
    /// Merchant number (`merchant` is `m<k>`).
    pub merchant: u32,
    /// ISO 3166 alpha-2 country.
    pub country: &'static str,
    /// Event time, epoch milliseconds.
    pub ts: u64,
}

impl Transaction {
    /// The value of field `FIELDS[field]`.
    pub fn field(&self, field: usize) -> Value {
        match field {
            0 => Value::Str(prefixed("t", self.seq)),
            1 => Value::Int(self.account_id),
            2 => Value::Int(self.amount_cents),
            3 => Value::Str(prefixed("m", self.merchant.into())),
            4 => Value::Str(CompactString::const_new(self.country)),
            5 => Value::Int(self.ts as i64),
            _ => Value::Null,
        }
    }
}

/// `prefix` followed by `n` in decimal (an id such as `t42`), without the formatting machinery:
/// this runs for every generated record.
fn prefixed(prefix: &'static str, n: u64) -> CompactString {
    let mut id = CompactString::const_new(prefix);
    id.push_str(itoa::Buffer::new().format(n));
    id
}

impl Serialize for Transaction {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("Transaction", 6)?;
        s.serialize_field("txn_id", &prefixed("t", self.seq))?;
        s.serialize_field("account_id", &self.account_id)?;
        s.serialize_field("amount_cents", &self.amount_cents)?;
        s.serialize_field("merchant", &prefixed("m", self.merchant.into()))?;
        s.serialize_field("country", self.country)?;
        s.serialize_field("ts", &self.ts)?;
        s.end()
    }
}

/// Generator settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GeneratorConfig {
    /// Random seed: the same seed gives the same transactions.
    pub seed: u64,
    /// Number of transactions; `None` for no end.
    pub count: Option<u64>,
    /// Transactions per second of event time (and of wall time, when paced).
    pub rate: u64,
    /// Distinct accounts.
    pub accounts: u64,
    /// Distinct merchants.
    pub merchants: u64,
    /// Event times lag their nominal time by up to this many milliseconds.
    pub disorder_ms: u64,
    /// Event time of the first transaction, epoch ms.
    pub start_ms: u64,
    /// Whether to emit at `rate` in wall-clock time (a live feed) or as fast as possible.
    pub paced: bool,
    /// Fraud mode: ordinary traffic that fires no fraud rule, with incidents mixed in (see
    /// [`super::incidents`]).
    pub fraud: Option<FraudMix>,
}

/// The transactions of one partition: sequence numbers `partition, partition + partitions, …`,
/// each partition with its own random stream (partition 0 of 1 is the whole sequence).
pub struct Generator {
    config: GeneratorConfig,
    rng: ChaCha8Rng,
    amounts: LogNormal<f64>,
    /// The next sequence number.
    next: u64,
    step: u64,
    /// Transactions produced so far.
    produced: u64,
    started: Instant,
    /// In fraud mode, where the incidents go.
    incidents: Option<IncidentSchedule>,
}

impl Generator {
    /// The whole sequence `config` describes.
    pub fn new(config: GeneratorConfig) -> Generator {
        Generator::partition(config, 0, 1)
    }

    /// Partition `partition` of `partitions` of the sequence `config` describes.
    pub fn partition(config: GeneratorConfig, partition: u64, partitions: u64) -> Generator {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        rng.set_stream(partition);
        Generator {
            rng,
            amounts: LogNormal::new(3000f64.ln(), 1.1).expect("valid log-normal parameters"),
            incidents: config
                .fraud
                .map(|mix| IncidentSchedule::new(config.clone(), mix)),
            config,
            next: partition,
            step: partitions.max(1),
            produced: 0,
            started: Instant::now(),
        }
    }

    /// This partition's share of the transactions per second.
    fn rate(&self) -> f64 {
        self.config.rate as f64 / self.step as f64
    }

    /// How many transactions may be produced now: all remaining, or those due by wall time.
    fn due(&self) -> u64 {
        let remaining = self.config.count.map_or(u64::MAX, |c| {
            c.saturating_sub(self.next).div_ceil(self.step)
        });
        if !self.config.paced {
            return remaining;
        }
        let due = (self.started.elapsed().as_secs_f64() * self.rate()) as u64;
        due.saturating_sub(self.produced).min(remaining)
    }

    /// Whether every transaction has been produced.
    pub fn finished(&self) -> bool {
        self.config.count.is_some_and(|c| self.next >= c)
    }

    /// The wall time until the next transaction is due (zero when unpaced).
    pub fn wait(&self) -> Duration {
        if !self.config.paced {
            return Duration::ZERO;
        }
        let at = Duration::from_secs_f64((self.produced + 1) as f64 / self.rate());
        at.saturating_sub(self.started.elapsed())
    }

    /// Produces up to `max` transactions that are due.
    pub fn take(&mut self, max: usize, mut f: impl FnMut(Transaction)) {
        let n = self.due().min(max as u64);
        for _ in 0..n {
            self.produced += 1;
            f(self.generate());
        }
    }

    /// Moves on to the first of this partition's transactions at sequence number `seq` or later,
    /// without producing those before it (a resumed partition): the random stream is replayed,
    /// so skipping costs about what generating them would. Pacing starts afresh from here.
    pub fn skip_to(&mut self, seq: u64) {
        while self.next < seq && !self.finished() {
            self.generate();
        }
        self.started = Instant::now();
    }

    /// The next transaction of the sequence.
    fn generate(&mut self) -> Transaction {
        let seq = self.next;
        self.next += self.step;
        let nominal = self.config.start_ms + seq * 1000 / self.config.rate.max(1);
        let jitter = self.rng.random_range(0..=self.config.disorder_ms);
        let ts = nominal.saturating_sub(jitter);
        let merchant = self.rng.random_range(0..self.config.merchants.max(1)) as u32;
        let accounts = self.config.accounts.max(1);
        match self.incidents.as_mut() {
            None => Transaction {
                seq,
                account_id: self.rng.random_range(0..accounts) as i64,
                amount_cents: self.amounts.sample(&mut self.rng).clamp(100.0, 500_000.0) as i64,
                merchant,
                country: COUNTRIES[self.rng.random_range(0..COUNTRIES.len())],
                ts,
            },
            Some(incidents) => incidents.at(seq).unwrap_or_else(|| {
                let account = seq % accounts;
                Transaction {
                    seq,
                    account_id: account as i64,
                    amount_cents: self.rng.random_range(2000..=8000),
                    merchant,
                    country: COUNTRIES[account as usize % COUNTRIES.len()],
                    ts,
                }
            }),
        }
    }
}

/// The generator as a source of records shaped by a job's schema (no JSON on the way: this is the
/// engine's ceiling). Its partitions are dealt to the workers like a topic's.
pub struct GeneratorReader {
    generators: Vec<Generator>,
    /// The partition number of each generator.
    numbers: Vec<usize>,
    /// The generator field of each schema field.
    /// For each schema field, its index in [`FIELDS`].
    fields: Vec<usize>,
    /// Per partition, where it resumed from a checkpoint; and the clocks restored with them.
    resumed: Vec<Option<i64>>,
    restored: Option<Checkpoint>,
}

impl GeneratorReader {
    /// The partitions of `partitions` that worker `index` of `peers` owns. With `resume` (a
    /// checkpoint's positions of the source, by [`Reader::partition_name`]), each partition
    /// named there resumes after the transaction it had reached, with its clock; an error names
    /// a position that does not read back.
    pub fn new(
        config: GeneratorConfig,
        partitions: u64,
        schema: &Schema,
        (index, peers): (usize, usize),
        resume: Option<&BTreeMap<String, Position>>,
    ) -> Result<Self, String> {
        let numbers: Vec<usize> =
            super::owned_partitions(partitions as usize, index, peers).collect();
        let mut reader = GeneratorReader {
            generators: numbers
                .iter()
                .map(|&p| Generator::partition(config.clone(), p as u64, partitions))
                .collect(),
            fields: schema
                .fields()
                .iter()
                .map(|f| {
                    FIELDS
                        .iter()
                        .position(|name| f.name == *name)
                        .unwrap_or(usize::MAX)
                })
                .collect(),
            resumed: vec![None; numbers.len()],
            restored: None,
            numbers,
        };
        if let Some(resume) = resume {
            reader.resume(resume)?;
        }
        Ok(reader)
    }

    /// Moves each partition named in `positions` past the transactions it had sent, and
    /// restores its clock.
    fn resume(&mut self, positions: &BTreeMap<String, Position>) -> Result<(), String> {
        let mut clocks = vec![0; self.generators.len()];
        for (partition, restored_clock) in clocks.iter_mut().enumerate() {
            let name = self.partition_name(partition);
            let Some(position) = positions.get(&name) else {
                continue;
            };
            let (next, clock) = super::restored_position(position)
                .map_err(|e| format!("partition {name}: checkpoint: {e}"))?;
            // A position is one past the sequence number of the last transaction sent.
            self.generators[partition].skip_to(next.max(0) as u64);
            self.resumed[partition] = Some(next);
            *restored_clock = clock;
        }
        self.restored = Some(Checkpoint {
            clocks,
            emitted_before: 0,
        });
        Ok(())
    }
}

impl Reader<Record> for GeneratorReader {
    fn partitions(&self) -> usize {
        self.generators.len()
    }

    fn partition_name(&self, partition: usize) -> String {
        self.numbers[partition].to_string()
    }

    fn read(&mut self, batch: &mut ReadBatch<Record>) -> ReadStatus {
        let fields = &self.fields;
        let mut status = ReadStatus::Done;
        let share = BATCH / self.generators.len().max(1);
        for (partition, generator) in self.generators.iter_mut().enumerate() {
            if generator.finished() {
                continue;
            }
            generator.take(share, |txn| {
                let record: Record = fields.iter().map(|&f| txn.field(f)).collect();
                batch.events.push(Positioned {
                    partition,
                    next: txn.seq as i64 + 1,
                    item: (txn.ts, record),
                });
            });
            if generator.finished() {
                batch.finished.push(partition);
            } else if generator.wait() > Duration::ZERO {
                if status == ReadStatus::Done {
                    status = ReadStatus::Waiting;
                }
            } else {
                status = ReadStatus::Ready;
            }
        }
        status
    }

    /// The generator keeps no committed position: a job resumes in it only from a checkpoint.
    fn commit(&mut self, _positions: &[i64], _checkpoint: &Checkpoint, _last: bool) {}

    fn restored(&self) -> Option<&Checkpoint> {
        self.restored.as_ref()
    }

    fn resumed(&self, partition: usize) -> Option<i64> {
        self.resumed[partition]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GeneratorConfig {
        GeneratorConfig {
            seed: 7,
            count: Some(10_000),
            rate: 1000,
            accounts: 50,
            merchants: 10,
            disorder_ms: 500,
            start_ms: 1_700_000_000_000,
            paced: false,
            fraud: None,
        }
    }

    #[test]
    fn same_seed_same_transactions_with_bounded_disorder() {
        let collect = |config| {
            let mut all = Vec::new();
            let mut generator = Generator::new(config);
            while !generator.finished() {
                generator.take(999, |t| all.push(t));
            }
            all
        };
        let a = collect(config());
        assert_eq!(a.len(), 10_000);
        assert_eq!(a, collect(config()));
        assert_ne!(
            a,
            collect(GeneratorConfig {
                seed: 8,
                ..config()
            })
        );
        let mut max_seen = 0;
        for t in &a {
            assert!(t.ts + 500 >= max_seen, "disorder beyond the bound");
            assert!((100..=500_000).contains(&t.amount_cents));
            assert!((0..50).contains(&t.account_id));
            max_seen = max_seen.max(t.ts);
        }
    }
}
