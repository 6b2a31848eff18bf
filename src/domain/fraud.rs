//! Fraud rules on card payments, each a [`Pattern`] over one account's payments in event time, so
//! each runs alone (`stream.detect(detection, account, Velocity { .. })`) or with others in one
//! operator (a tuple of patterns).
//!
//! "Within T" means a span of T milliseconds ending at the current payment: times in `(t − T, t]`.
//! Payments at the same millisecond are simultaneous: each counts as before the other.

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::operators::pattern::Pattern;
use crate::record::Id;

/// What the rules read of a payment.
pub trait Payment {
    /// The payment's id, reported as evidence.
    fn id(&self) -> &str;
    /// Amount in minor units (cents).
    fn amount(&self) -> i64;
    /// The merchant.
    fn merchant(&self) -> &str;
    /// Where it was made (e.g. an ISO country code).
    fn country(&self) -> &str;
}

/// A card payment, as the fraud rules read it. Ordered by id first, which orders simultaneous
/// payments of an account deterministically.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CardPayment {
    /// The payment (transaction) id.
    pub id: CompactString,
    /// The card account.
    pub account: Id,
    /// Amount in minor units.
    pub amount: i64,
    /// The merchant.
    pub merchant: CompactString,
    /// Where it was made.
    pub country: CompactString,
}

impl Payment for CardPayment {
    fn id(&self) -> &str {
        &self.id
    }
    fn amount(&self) -> i64 {
        self.amount
    }
    fn merchant(&self) -> &str {
        &self.merchant
    }
    fn country(&self) -> &str {
        &self.country
    }
}

/// A rule's match: which rule, the ids of the payments that are its evidence, and a sentence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleMatch {
    /// The rule's name.
    pub rule: &'static str,
    /// Ids of the payments that make the match, oldest first (at most [`MAX_EVIDENCE`]).
    pub evidence: Vec<CompactString>,
    /// What was seen, in words.
    pub detail: String,
}

/// At most this many payment ids are reported as a match's evidence (the most recent).
pub const MAX_EVIDENCE: usize = 16;

/// The ids of the last [`MAX_EVIDENCE`] of `ids`.
fn evidence<'a>(ids: impl DoubleEndedIterator<Item = &'a CompactString>) -> Vec<CompactString> {
    let mut last: Vec<CompactString> = ids.rev().take(MAX_EVIDENCE).cloned().collect();
    last.reverse();
    last
}

/// Whether an entry at `at` has left the span of `within` ending at `now`.
fn outside(at: u64, within: u64, now: u64) -> bool {
    at.saturating_add(within) <= now
}

/// Drops the entries of `queue` (oldest first, each at time `.0`) that have left the span of
/// `within` ending at `now`, handing each to `gone`.
fn evict<A: smallvec::Array>(
    queue: &mut SmallVec<A>,
    within: u64,
    now: u64,
    gone: impl FnMut(A::Item),
) where
    A::Item: Timed,
{
    let left = queue
        .iter()
        .take_while(|r| outside(r.at(), within, now))
        .count();
    queue.drain(..left).for_each(gone);
}

/// Whether every entry of `queue` (oldest first) has left the span of `within` ending at `now`.
fn all_outside<T: Timed>(queue: &[T], within: u64, now: u64) -> bool {
    queue.last().is_none_or(|r| outside(r.at(), within, now))
}

/// A remembered payment, by the time it was made.
trait Timed {
    fn at(&self) -> u64;
}

impl<A, B> Timed for (u64, A, B) {
    fn at(&self) -> u64 {
        self.0
    }
}

impl<A> Timed for (u64, A) {
    fn at(&self) -> u64 {
        self.0
    }
}

/// Rule 1: at least `count` payments, or a total of at least `amount`, within `within`.
#[derive(Clone, Debug, PartialEq)]
pub struct Velocity {
    /// Payments that make a burst, if counted.
    pub count: Option<usize>,
    /// Total amount that makes a burst, if summed.
    pub amount: Option<i64>,
    /// The span (ms).
    pub within: u64,
}

/// The payments of an account within the span, and their total. Kept inline up to two: most
/// accounts have no more within a span, and state that needs no second memory access is what
/// makes the rule fast over many accounts.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct VelocityState {
    recent: SmallVec<[(u64, i64, CompactString); 2]>,
    total: i64,
}

impl<D: Payment> Pattern<D> for Velocity {
    type State = VelocityState;
    type Match = RuleMatch;

    fn advance(
        &self,
        s: &mut VelocityState,
        time: u64,
        events: &[D],
        emit: &mut impl FnMut(RuleMatch),
    ) {
        evict(&mut s.recent, self.within, time, |r| s.total -= r.1);
        for e in events {
            s.recent
                .push((time, e.amount(), CompactString::from(e.id())));
            s.total += e.amount();
        }
        let n = s.recent.len();
        if self.count.is_some_and(|c| n >= c) || self.amount.is_some_and(|a| s.total >= a) {
            emit(RuleMatch {
                rule: "velocity",
                evidence: evidence(s.recent.iter().map(|r| &r.2)),
                detail: format!(
                    "{n} payments totalling {} within {} ms",
                    s.total, self.within
                ),
            });
        }
    }

    fn horizon(&self) -> u64 {
        self.within
    }

    fn expired(&self, s: &VelocityState, frontier: u64) -> bool {
        all_outside(&s.recent, self.within, frontier)
    }
}

/// Rule 2: a payment below `small_below` followed within `within` by one above `large_above`.
#[derive(Clone, Debug, PartialEq)]
pub struct SmallThenLarge {
    /// A small payment is below this amount.
    pub small_below: i64,
    /// A large payment is above this amount.
    pub large_above: i64,
    /// The span (ms).
    pub within: u64,
}

/// The small payments of an account within the span.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SmallThenLargeState {
    smalls: SmallVec<[(u64, CompactString); 1]>,
}

impl<D: Payment> Pattern<D> for SmallThenLarge {
    type State = SmallThenLargeState;
    type Match = RuleMatch;

    fn advance(
        &self,
        s: &mut SmallThenLargeState,
        time: u64,
        events: &[D],
        emit: &mut impl FnMut(RuleMatch),
    ) {
        evict(&mut s.smalls, self.within, time, drop);
        for e in events.iter().filter(|e| e.amount() < self.small_below) {
            s.smalls.push((time, CompactString::from(e.id())));
        }
        let large = events.iter().find(|e| e.amount() > self.large_above);
        if let (Some(large), Some((at, small))) = (large, s.smalls.last()) {
            emit(RuleMatch {
                rule: "small_then_large",
                evidence: vec![small.clone(), CompactString::from(large.id())],
                detail: format!(
                    "{} after a payment below {} {} ms before",
                    large.amount(),
                    self.small_below,
                    time - at
                ),
            });
        }
    }

    fn horizon(&self) -> u64 {
        self.within
    }

    fn expired(&self, s: &SmallThenLargeState, frontier: u64) -> bool {
        all_outside(&s.smalls, self.within, frontier)
    }
}

/// Rule 3: an amount above `factor` × the mean of the account's last `history` payments, once it
/// has at least `min_history` of them.
///
/// The history is not bounded in time, so a restarted job rebuilds it only from the payments it
/// replays (its horizon is 0): until `min_history` payments are seen again the rule stays quiet.
#[derive(Clone, Debug, PartialEq)]
pub struct AmountSpike {
    /// How many times the mean makes a spike.
    pub factor: f64,
    /// How many recent payments the mean is over.
    pub history: usize,
    /// How many payments an account needs before the rule may fire.
    pub min_history: usize,
}

/// An account's recent amounts (inline up to 16, the usual history) and their sum.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AmountSpikeState {
    amounts: SmallVec<[i64; 16]>,
    sum: i64,
}

impl<D: Payment> Pattern<D> for AmountSpike {
    type State = AmountSpikeState;
    type Match = RuleMatch;

    fn advance(
        &self,
        s: &mut AmountSpikeState,
        _: u64,
        events: &[D],
        emit: &mut impl FnMut(RuleMatch),
    ) {
        let n = s.amounts.len();
        if n >= self.min_history.max(1) {
            let mean = s.sum as f64 / n as f64;
            if let Some(spike) = events
                .iter()
                .find(|e| e.amount() as f64 > self.factor * mean)
            {
                emit(RuleMatch {
                    rule: "amount_spike",
                    evidence: vec![CompactString::from(spike.id())],
                    detail: format!(
                        "{} is above {} × the mean {mean:.0} of the last {n} payments",
                        spike.amount(),
                        self.factor
                    ),
                });
            }
        }
        for e in events {
            s.amounts.push(e.amount());
            s.sum += e.amount();
            if s.amounts.len() > self.history {
                s.sum -= s.amounts.remove(0);
            }
        }
    }

    fn horizon(&self) -> u64 {
        0
    }

    fn expired(&self, s: &AmountSpikeState, _: u64) -> bool {
        s.amounts.is_empty()
    }
}

/// Rule 4: payments from two different countries within `within`.
#[derive(Clone, Debug, PartialEq)]
pub struct ImpossibleTravel {
    /// The span (ms).
    pub within: u64,
}

/// Per country seen within the span, the last payment there: (country, time, id).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ImpossibleTravelState {
    seen: SmallVec<[(CompactString, u64, CompactString); 1]>,
}

impl<D: Payment> Pattern<D> for ImpossibleTravel {
    type State = ImpossibleTravelState;
    type Match = RuleMatch;

    fn advance(
        &self,
        s: &mut ImpossibleTravelState,
        time: u64,
        events: &[D],
        emit: &mut impl FnMut(RuleMatch),
    ) {
        s.seen.retain(|(_, at, _)| !outside(*at, self.within, time));
        let mut found = None;
        for e in events {
            if found.is_none()
                && let Some((country, at, id)) = s.seen.iter().find(|(c, ..)| c != e.country())
            {
                found = Some(RuleMatch {
                    rule: "impossible_travel",
                    evidence: vec![id.clone(), CompactString::from(e.id())],
                    detail: format!("{country} then {} {} ms later", e.country(), time - at),
                });
            }
            match s.seen.iter_mut().find(|(c, ..)| c == e.country()) {
                Some(entry) => (entry.1, entry.2) = (time, CompactString::from(e.id())),
                None => s.seen.push((
                    CompactString::from(e.country()),
                    time,
                    CompactString::from(e.id()),
                )),
            }
        }
        if let Some(m) = found {
            emit(m);
        }
    }

    fn horizon(&self) -> u64 {
        self.within
    }

    fn expired(&self, s: &ImpossibleTravelState, frontier: u64) -> bool {
        s.seen
            .iter()
            .all(|(_, at, _)| outside(*at, self.within, frontier))
    }
}

/// Rule 5: payments below `small_below` at `merchants` or more distinct merchants within
/// `within` (a stolen card being tried out).
#[derive(Clone, Debug, PartialEq)]
pub struct CardTesting {
    /// Distinct merchants that make the pattern.
    pub merchants: usize,
    /// A probing payment is below this amount.
    pub small_below: i64,
    /// The span (ms).
    pub within: u64,
}

/// The small payments of an account within the span: (time, merchant, id).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CardTestingState {
    smalls: SmallVec<[(u64, CompactString, CompactString); 1]>,
}

impl<D: Payment> Pattern<D> for CardTesting {
    type State = CardTestingState;
    type Match = RuleMatch;

    fn advance(
        &self,
        s: &mut CardTestingState,
        time: u64,
        events: &[D],
        emit: &mut impl FnMut(RuleMatch),
    ) {
        evict(&mut s.smalls, self.within, time, drop);
        let before = s.smalls.len();
        for e in events.iter().filter(|e| e.amount() < self.small_below) {
            s.smalls.push((
                time,
                CompactString::from(e.merchant()),
                CompactString::from(e.id()),
            ));
        }
        if s.smalls.len() == before || s.smalls.len() < self.merchants {
            return;
        }
        let mut merchants: SmallVec<[&str; 8]> = s.smalls.iter().map(|r| r.1.as_str()).collect();
        merchants.sort_unstable();
        merchants.dedup();
        if merchants.len() >= self.merchants {
            emit(RuleMatch {
                rule: "card_testing",
                evidence: evidence(s.smalls.iter().map(|r| &r.2)),
                detail: format!(
                    "{} payments below {} at {} merchants within {} ms",
                    s.smalls.len(),
                    self.small_below,
                    merchants.len(),
                    self.within
                ),
            });
        }
    }

    fn horizon(&self) -> u64 {
        self.within
    }

    fn expired(&self, s: &CardTestingState, frontier: u64) -> bool {
        all_outside(&s.smalls, self.within, frontier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct P(&'static str, i64, &'static str, &'static str);

    impl Payment for P {
        fn id(&self) -> &str {
            self.0
        }
        fn amount(&self) -> i64 {
            self.1
        }
        fn merchant(&self) -> &str {
            self.2
        }
        fn country(&self) -> &str {
            self.3
        }
    }

    /// Feeds `(time, payment)` in order, one call per payment; returns the match times.
    fn run<R: Pattern<P, Match = RuleMatch>>(
        rule: &R,
        payments: Vec<(u64, P)>,
    ) -> Vec<(u64, RuleMatch)> {
        let mut state = R::State::default();
        let mut out = Vec::new();
        for (t, p) in payments {
            rule.advance(&mut state, t, std::slice::from_ref(&p), &mut |m| {
                out.push((t, m))
            });
        }
        out
    }

    #[test]
    fn velocity_counts_a_sliding_span() {
        let rule = Velocity {
            count: Some(3),
            amount: None,
            within: 1000,
        };
        let m = run(
            &rule,
            vec![
                (0, P("a", 1, "m", "US")),
                (500, P("b", 1, "m", "US")),
                (1000, P("c", 1, "m", "US")),
                (1400, P("d", 1, "m", "US")),
            ],
        );
        // At 1000 the payment at 0 has left the span (1000 − 1000 is not inside (0, 1000]).
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].0, 1400);
        assert_eq!(m[0].1.evidence, ["b", "c", "d"]);
    }

    #[test]
    fn small_then_large_needs_the_small_one_first_or_simultaneous() {
        let rule = SmallThenLarge {
            small_below: 100,
            large_above: 50_000,
            within: 60_000,
        };
        let large_first = run(
            &rule,
            vec![(0, P("l", 60_000, "m", "US")), (10, P("s", 50, "m", "US"))],
        );
        assert!(large_first.is_empty());
        let m = run(
            &rule,
            vec![
                (0, P("s", 50, "m", "US")),
                (59_999, P("l", 60_000, "m", "US")),
            ],
        );
        assert_eq!(m[0].1.evidence, ["s", "l"]);
        let too_late = run(
            &rule,
            vec![
                (0, P("s", 50, "m", "US")),
                (60_000, P("l", 60_000, "m", "US")),
            ],
        );
        assert!(too_late.is_empty());
        let mut state = SmallThenLargeState::default();
        let mut out = Vec::new();
        rule.advance(
            &mut state,
            5,
            &[P("l", 60_000, "m", "US"), P("s", 50, "m", "US")],
            &mut |m| out.push(m),
        );
        assert_eq!(
            out.len(),
            1,
            "simultaneous payments count as before each other"
        );
    }

    #[test]
    fn spike_needs_history() {
        let rule = AmountSpike {
            factor: 5.0,
            history: 3,
            min_history: 2,
        };
        let m = run(
            &rule,
            vec![
                (0, P("a", 100, "m", "US")),
                (1, P("b", 1000, "m", "US")),
                (2, P("c", 100, "m", "US")),
                (3, P("d", 100, "m", "US")),
                (4, P("e", 100, "m", "US")),
                (5, P("f", 600, "m", "US")),
            ],
        );
        // Only one payment of history at `b`; at `f` the mean of the last three is 100.
        assert_eq!(m.iter().map(|(t, _)| *t).collect::<Vec<_>>(), [5]);
    }

    #[test]
    fn travel_and_card_testing() {
        let travel = ImpossibleTravel { within: 100 };
        let m = run(
            &travel,
            vec![
                (0, P("a", 1, "m", "US")),
                (50, P("b", 1, "m", "US")),
                (120, P("c", 1, "m", "JP")),
                (300, P("d", 1, "m", "US")),
            ],
        );
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].1.evidence, ["b", "c"]);
        let testing = CardTesting {
            merchants: 3,
            small_below: 100,
            within: 100,
        };
        let m = run(
            &testing,
            vec![
                (0, P("a", 50, "m1", "US")),
                (10, P("b", 50, "m1", "US")),
                (20, P("c", 500, "m2", "US")),
                (30, P("d", 50, "m2", "US")),
                (40, P("e", 50, "m3", "US")),
            ],
        );
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].1.evidence, ["a", "b", "d", "e"]);
    }
}
