//! Validation of `[[fraud]]` sections: the payment fields and the rules' settings.

use toml::Spanned;

use super::outputs::Wiring;
use super::values::Limit;
use super::{Checker, raw};
use crate::domain::fraud::{AmountSpike, CardTesting, ImpossibleTravel, SmallThenLarge, Velocity};
use crate::record::{FieldType, Schema};

/// The most payments a velocity rule counts: it keeps each account's payments within its span.
const PAYMENTS: Limit = Limit {
    max: 1_000_000,
    why: "the rule keeps each account's payments until it fires",
};

/// The most amounts an amount-spike rule keeps per account.
const HISTORY: Limit = Limit {
    max: 1000,
    why: "the rule keeps that many amounts of each account",
};

/// The most distinct merchants a card-testing rule waits for.
const MERCHANTS: Limit = Limit {
    max: 1000,
    why: "the rule keeps each account's small payments until it fires",
};

/// The largest amount threshold: the largest int.
const AMOUNT: Limit = Limit {
    max: i64::MAX as u64,
    why: "amounts are 64-bit ints",
};

/// Fraud rules over a source of card payments, with their alerts' sinks.
#[derive(Clone, Debug)]
pub struct FraudSpec {
    /// Its name (part of every alert id).
    pub name: String,
    /// The source index.
    pub source: usize,
    /// Record indexes of the payment id, account, amount, merchant and country.
    pub fields: PaymentFields,
    /// Matches of one rule on one account within this long of a reported one are merged into it
    /// (ms).
    pub suppression: u64,
    /// Rule 1, when on.
    pub velocity: Option<Velocity>,
    /// Rule 2, when on.
    pub small_then_large: Option<SmallThenLarge>,
    /// Rule 3, when on.
    pub amount_spike: Option<AmountSpike>,
    /// Rule 4, when on.
    pub impossible_travel: Option<ImpossibleTravel>,
    /// Rule 5, when on.
    pub card_testing: Option<CardTesting>,
    /// Sink indexes for the alerts.
    pub sinks: Vec<usize>,
    /// Sink index for late payments.
    pub late_sink: Option<usize>,
}

impl FraudSpec {
    /// The columns of its late rows: the payment's fields and event time, by their names in
    /// `schema` (its source's).
    pub fn late_columns(&self, schema: &Schema) -> Vec<String> {
        let f = self.fields;
        [
            f.id,
            f.account,
            f.amount,
            f.merchant,
            f.country,
            schema.time_index(),
        ]
        .iter()
        .map(|&i| schema.fields()[i].name.to_string())
        .collect()
    }
}

/// Record indexes of the parts of a payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaymentFields {
    /// The payment id (string or int).
    pub id: usize,
    /// The card account (int or string).
    pub account: usize,
    /// The amount in minor units (int).
    pub amount: usize,
    /// The merchant (string or int).
    pub merchant: usize,
    /// The country (string).
    pub country: usize,
}

/// The columns of an alert row.
pub const ALERT_COLUMNS: [&str; 6] = [
    "alert_id",
    "rule",
    "account_id",
    "time",
    "evidence",
    "detail",
];

/// The default schema field of each part of a payment, its name in `fields`, and the types it may
/// have.
const PARTS: [(&str, &str, &[FieldType]); 5] = [
    ("id", "txn_id", &[FieldType::String, FieldType::Int]),
    (
        "account",
        "account_id",
        &[FieldType::Int, FieldType::String],
    ),
    ("amount", "amount_cents", &[FieldType::Int]),
    ("merchant", "merchant", &[FieldType::String, FieldType::Int]),
    ("country", "country", &[FieldType::String]),
];

impl Checker<'_> {
    pub(super) fn fraud(
        &mut self,
        f: &raw::FraudSection,
        field: &str,
        schema: &Schema,
        wiring: Wiring,
    ) -> Option<FraudSpec> {
        let errors_before = self.errors.len();
        let named = f.fields.as_ref().map(|n| {
            let n = n.get_ref();
            [&n.id, &n.account, &n.amount, &n.merchant, &n.country]
        });
        let mut index = [0; 5];
        for (i, (part, default, types)) in PARTS.iter().enumerate() {
            let given = named.and_then(|n| n[i].as_ref());
            let name = given.map_or(*default, |t| t.get_ref().as_str());
            let span = given.map_or_else(|| f.source.span(), |t| t.span());
            let at = format!("{field}.fields.{part}");
            match schema.index_of(name) {
                Some(j) if types.contains(&schema.fields()[j].ty) => index[i] = j,
                Some(j) => self.error(
                    span,
                    at,
                    format!(
                        "field `{name}` is of type {:?}, but a payment's {part} must be {}",
                        schema.fields()[j].ty,
                        types
                            .iter()
                            .map(|t| format!("{t:?}").to_lowercase())
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                ),
                None => self.error(
                    span,
                    at,
                    format!(
                        "the source schema has no field `{name}` for a payment's {part} (name it in `{field}.fields.{part}`)"
                    ),
                ),
            }
        }
        let suppression = self.millis_or_zero(&f.suppression, format!("{field}.suppression"));
        let velocity = f.velocity.as_ref().map(|v| {
            let at = format!("{field}.velocity");
            let r = v.get_ref();
            if r.count.is_none() && r.amount.is_none() {
                self.error(v.span(), at.clone(), "set `count`, `amount` or both");
            }
            Velocity {
                count: r
                    .count
                    .as_ref()
                    .map(|_| self.count(&r.count, format!("{at}.count"), 1, PAYMENTS)),
                amount: r
                    .amount
                    .as_ref()
                    .map(|a| self.amount(a, format!("{at}.amount"))),
                within: self.span_of(&r.within, format!("{at}.within")),
            }
        });
        let small_then_large = f.small_then_large.as_ref().map(|v| {
            let at = format!("{field}.small_then_large");
            let r = v.get_ref();
            let rule = SmallThenLarge {
                small_below: self.amount(&r.small_below, format!("{at}.small_below")),
                large_above: self.amount(&r.large_above, format!("{at}.large_above")),
                within: self.span_of(&r.within, format!("{at}.within")),
            };
            if rule.large_above < rule.small_below {
                self.error(
                    r.large_above.span(),
                    format!("{at}.large_above"),
                    "must not be below `small_below`",
                );
            }
            rule
        });
        let amount_spike = f.amount_spike.as_ref().map(|v| {
            let at = format!("{field}.amount_spike");
            let r = v.get_ref();
            let factor = *r.factor.get_ref();
            if !(factor.is_finite() && factor > 1.0) {
                self.error(
                    r.factor.span(),
                    format!("{at}.factor"),
                    "must be a number above 1",
                );
            }
            let history = self.count(&r.history, format!("{at}.history"), 20, HISTORY);
            let min_history = self.count(&r.min_history, format!("{at}.min_history"), 5, HISTORY);
            if min_history > history {
                let span = r.min_history.as_ref().map_or(v.span(), Spanned::span);
                self.error(
                    span,
                    format!("{at}.min_history"),
                    format!("must not exceed `history` ({history})"),
                );
            }
            AmountSpike {
                factor,
                history,
                min_history,
            }
        });
        let impossible_travel = f.impossible_travel.as_ref().map(|v| ImpossibleTravel {
            within: self.span_of(
                &v.get_ref().within,
                format!("{field}.impossible_travel.within"),
            ),
        });
        let card_testing = f.card_testing.as_ref().map(|v| {
            let at = format!("{field}.card_testing");
            let r = v.get_ref();
            CardTesting {
                merchants: self.count(
                    &Some(r.merchants.clone()),
                    format!("{at}.merchants"),
                    1,
                    MERCHANTS,
                ),
                small_below: self.amount(&r.small_below, format!("{at}.small_below")),
                within: self.span_of(&r.within, format!("{at}.within")),
            }
        });
        let rules = [
            velocity.is_some(),
            small_then_large.is_some(),
            amount_spike.is_some(),
            impossible_travel.is_some(),
            card_testing.is_some(),
        ];
        if !rules.contains(&true) {
            self.error(
                f.name.span(),
                field.to_string(),
                "no rule is on: add a table such as `velocity`, `small_then_large`, \
                 `amount_spike`, `impossible_travel` or `card_testing`",
            );
        }
        (self.errors.len() == errors_before).then(|| FraudSpec {
            name: f.name.get_ref().clone(),
            source: wiring.source,
            fields: PaymentFields {
                id: index[0],
                account: index[1],
                amount: index[2],
                merchant: index[3],
                country: index[4],
            },
            suppression,
            velocity,
            small_then_large,
            amount_spike,
            impossible_travel,
            card_testing,
            sinks: wiring.sinks,
            late_sink: wiring.late_sink,
        })
    }

    /// A rule's span: a duration of at least 1 ms.
    fn span_of(&mut self, text: &raw::Text, field: String) -> u64 {
        self.millis(&Some(text.clone()), field).unwrap_or(1)
    }

    /// An amount threshold in minor units: a positive integer.
    fn amount(&mut self, value: &Spanned<i64>, field: String) -> i64 {
        self.count(&Some(value.clone()), field, 1, AMOUNT)
    }
}
