//! Fraud incidents the generator mixes into its transactions, with ground-truth labels.
//!
//! In fraud mode the ordinary traffic is shaped to fire no rule of [`FraudMix`]'s rule set: each
//! account pays in turn (round robin, so an account pays every `accounts / rate` seconds), always
//! in its home country, amounts between 20.00 and 80.00. Every `every` transactions an incident
//! starts on an account of its own (ids from `accounts` up), laid out in fractions of the rules'
//! span `T` = `within_ms`. With the rules below each incident makes exactly one alert, provided
//! ordinary accounts pay less often than three times per `T` (`accounts >= rate × T / 3`) and the
//! suppression period is at least `T`:
//!
//! | incident | payments | rule |
//! |---|---|---|
//! | burst | 6 × 50.00 within 0.75 T | velocity, `count = 5` |
//! | burst at one instant | 6 × 50.00 at the same millisecond | velocity, `count = 5` |
//! | big spender | 3 × 400.00 within 0.4 T | velocity, `amount = 100000` |
//! | small then large | 0.50, then 600.00 after 0.5 T | small_then_large, `small_below = 100`, `large_above = 50000` |
//! | spike | 5 × 50.00 every 0.5 T, then 450.00 | amount_spike, `factor = 5`, `min_history = 4` |
//! | travel | 50.00 at home, 50.00 abroad after 0.5 T | impossible_travel |
//! | card testing | 0.50–0.90 at 3 merchants within 0.4 T | card_testing, `merchants = 3`, `small_below = 100` |
//!
//! Incident payments keep their exact event times, which may be up to `8000 / rate` ms behind
//! their place in the sequence: a job's out-of-orderness should cover that beside the disorder.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::generator::{COUNTRIES, GeneratorConfig, Transaction};

/// How fraud incidents are mixed into generated traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FraudMix {
    /// One incident starts every this many transactions.
    pub every: u64,
    /// The rules' span `T` (ms); incidents are laid out in fractions of it.
    pub within_ms: u64,
}

/// One injected incident: the rule that must alert on it, once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incident {
    /// The rule that must alert.
    pub rule: &'static str,
    /// Its account (used by no other transaction).
    pub account: i64,
    /// Its payments, in sequence order.
    pub payments: Vec<Transaction>,
}

/// A payment of an incident: offset in thousandths of T, amount in cents, and whether it is made
/// abroad.
type Step = (u64, i64, bool);

/// The kinds of incident, dealt in turn: the rule that must alert, and the payments.
const KINDS: [(&str, &[Step]); 7] = [
    (
        "velocity",
        &[
            (0, 5000, false),
            (150, 5000, false),
            (300, 5000, false),
            (450, 5000, false),
            (600, 5000, false),
            (750, 5000, false),
        ],
    ),
    ("small_then_large", &[(0, 50, false), (500, 60_000, false)]),
    (
        "amount_spike",
        &[
            (0, 5000, false),
            (500, 5000, false),
            (1000, 5000, false),
            (1500, 5000, false),
            (2000, 5000, false),
            (2500, 45_000, false),
        ],
    ),
    ("impossible_travel", &[(0, 5000, false), (500, 5000, true)]),
    (
        "card_testing",
        &[(0, 50, false), (200, 70, false), (400, 90, false)],
    ),
    ("velocity", &[(0, 5000, false); 6]),
    (
        "velocity",
        &[
            (0, 40_000, false),
            (200, 40_000, false),
            (400, 40_000, false),
        ],
    ),
];

/// Places incidents in the transaction sequence, the same way in every partition of a generator.
pub struct IncidentSchedule {
    config: GeneratorConfig,
    mix: FraudMix,
    /// The next incident to place.
    next: u64,
    /// Placed payments by sequence number, from the start of the next incident on.
    slots: BTreeMap<u64, Transaction>,
}

impl IncidentSchedule {
    /// The schedule of `config`, which must have a fraud mix.
    pub fn new(config: GeneratorConfig, mix: FraudMix) -> Self {
        IncidentSchedule {
            config,
            mix,
            next: 0,
            slots: BTreeMap::new(),
        }
    }

    fn start(&self, incident: u64) -> u64 {
        incident * self.mix.every.max(1)
    }

    fn nominal(&self, seq: u64) -> u64 {
        self.config.start_ms + seq * 1000 / self.config.rate.max(1)
    }

    /// Places every incident that starts at or before `seq` and returns the payment placed at
    /// `seq`, if any. Calls must come with increasing `seq`.
    pub fn at(&mut self, seq: u64) -> Option<Transaction> {
        while self.start(self.next) <= seq {
            self.place();
        }
        let first_open = self.start(self.next);
        let found = self.slots.remove(&seq);
        // Slots before the next incident's start can no longer collide with a new placement.
        while self
            .slots
            .first_key_value()
            .is_some_and(|(s, _)| *s < seq.min(first_open))
        {
            self.slots.pop_first();
        }
        found
    }

    /// Places the next incident; returns it unless it would not end within the sequence.
    fn place(&mut self) -> Option<Incident> {
        let i = self.next;
        self.next += 1;
        let (rule, shape) = KINDS[(i % KINDS.len() as u64) as usize];
        let account = (self.config.accounts + i) as i64;
        let home = (account as usize) % COUNTRIES.len();
        let start = self.start(i);
        let base = self.nominal(start);
        let rate = self.config.rate.max(1);
        let mut payments = Vec::with_capacity(shape.len());
        for (k, &(offset, amount, abroad)) in shape.iter().enumerate() {
            let offset_ms = offset * self.mix.within_ms / 1000;
            // In 128 bits: a long span at a high rate is more sequence numbers than 64 bits
            // hold, and such an incident ends within no sequence.
            let after = (u128::from(offset_ms) * u128::from(rate)).div_ceil(1000);
            let mut seq = u64::try_from(after).ok()?.checked_add(start)?;
            while self.slots.contains_key(&seq)
                || payments.iter().any(|p: &Transaction| p.seq == seq)
            {
                seq += 1;
            }
            payments.push(Transaction {
                seq,
                account_id: account,
                amount_cents: amount,
                merchant: ((i * 7 + k as u64) % self.config.merchants.max(1)) as u32,
                country: COUNTRIES[if abroad {
                    (home + 7) % COUNTRIES.len()
                } else {
                    home
                }],
                ts: base + offset_ms,
            });
        }
        if self
            .config
            .count
            .is_some_and(|c| payments.iter().any(|p| p.seq >= c))
        {
            return None;
        }
        self.slots.extend(payments.iter().map(|p| (p.seq, *p)));
        Some(Incident {
            rule,
            account,
            payments,
        })
    }
}

/// The incidents a generator with this (bounded) config produces, in order: the ground truth.
pub fn incidents(config: &GeneratorConfig) -> Vec<Incident> {
    let (Some(mix), Some(count)) = (config.fraud, config.count) else {
        return Vec::new();
    };
    let mut schedule = IncidentSchedule::new(config.clone(), mix);
    let mut all = Vec::new();
    while schedule.start(schedule.next) < count {
        all.extend(schedule.place());
    }
    all
}
