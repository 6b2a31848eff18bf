//! Incremental aggregates over window contents: the [`Aggregate`] trait that the window operator
//! folds records with, and [`FieldAggregates`], the count/sum/min/max/avg/distinct-count over
//! record fields that job files declare.

use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::record::{Record, Value};

/// Folds data into a mergeable state and reads a result from it.
///
/// `merge` lets the window operator keep one state per pane and combine panes into overlapping
/// hopping windows, so each record is folded once however many windows contain it.
pub trait Aggregate<D>: 'static {
    /// The running state of one key in one window (or pane).
    type State: 'static;
    /// What a fired window reports.
    type Output;
    /// An empty state.
    fn init(&self) -> Self::State;
    /// Folds one datum in.
    fn add(&self, state: &mut Self::State, datum: &D);
    /// Folds another state in.
    fn merge(&self, into: &mut Self::State, from: &Self::State);
    /// The result of a state.
    fn finish(&self, state: &Self::State) -> Self::Output;
}

/// The aggregate functions a job may declare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregateKind {
    /// Number of records.
    Count,
    /// Sum of the non-null values (integer if every value is an integer).
    Sum,
    /// Least non-null value.
    Min,
    /// Greatest non-null value.
    Max,
    /// Mean of the non-null numeric values, as a float.
    Avg,
    /// Number of distinct non-null values.
    DistinctCount,
}

/// The running state of one aggregate function.
#[derive(Clone, Debug)]
pub enum AggregateState {
    /// Count.
    Count(i64),
    /// Integer sum; becomes `FloatSum` at the first float.
    IntSum(i64),
    /// Float sum.
    FloatSum(f64),
    /// Min or max so far.
    Extreme(Value),
    /// Sum and count of the values seen.
    Mean(f64, i64),
    /// The values seen (boxed: the other states are a few words).
    Distinct(Box<FxHashSet<Value>>),
}

/// Aggregate functions over record fields: `(function, field index)` pairs; the field of `Count`
/// is ignored.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldAggregates(pub Vec<(AggregateKind, usize)>);

impl FieldAggregates {
    fn fold(kind: AggregateKind, state: &mut AggregateState, value: &Value) {
        use AggregateState::*;
        if matches!(value, Value::Null) && kind != AggregateKind::Count {
            return;
        }
        match (state, value) {
            (Count(n), _) => *n += 1,
            (IntSum(s), Value::Int(v)) => *s = s.wrapping_add(*v),
            (state @ IntSum(_), v) => {
                let IntSum(s) = *state else { unreachable!() };
                *state = FloatSum(s as f64 + v.as_f64().unwrap_or(0.0));
            }
            (FloatSum(s), v) => *s += v.as_f64().unwrap_or(0.0),
            (Extreme(current), v) => {
                let replace = matches!(current, Value::Null)
                    || match kind {
                        AggregateKind::Min => v < current,
                        _ => v > current,
                    };
                if replace {
                    *current = v.clone();
                }
            }
            (Mean(sum, n), v) => {
                if let Some(x) = v.as_f64() {
                    *sum += x;
                    *n += 1;
                }
            }
            (Distinct(set), v) => {
                if !set.contains(v) {
                    set.insert(v.clone());
                }
            }
        }
    }
}

/// The states of a job's aggregates, inline for up to three so that a window's state is one
/// allocation-free value in its hash map.
pub type AggregateStates = SmallVec<[AggregateState; 3]>;

/// The results of a job's aggregates, inline for up to three, so that a fired window costs no
/// allocation of its own.
pub type AggregateValues = SmallVec<[Value; 3]>;

impl Aggregate<Record> for FieldAggregates {
    type State = AggregateStates;
    type Output = AggregateValues;

    fn init(&self) -> Self::State {
        self.0
            .iter()
            .map(|(kind, _)| match kind {
                AggregateKind::Count => AggregateState::Count(0),
                AggregateKind::Sum => AggregateState::IntSum(0),
                AggregateKind::Min | AggregateKind::Max => AggregateState::Extreme(Value::Null),
                AggregateKind::Avg => AggregateState::Mean(0.0, 0),
                AggregateKind::DistinctCount => AggregateState::Distinct(Default::default()),
            })
            .collect()
    }

    #[inline]
    fn add(&self, state: &mut Self::State, record: &Record) {
        for ((kind, field), s) in self.0.iter().zip(state.iter_mut()) {
            Self::fold(*kind, s, &record[*field]);
        }
    }

    fn merge(&self, into: &mut Self::State, from: &Self::State) {
        use AggregateState::*;
        for ((kind, _), (a, b)) in self.0.iter().zip(into.iter_mut().zip(from)) {
            match (a, b) {
                (Count(x), Count(y)) | (IntSum(x), IntSum(y)) => *x = x.wrapping_add(*y),
                (FloatSum(x), FloatSum(y)) => *x += y,
                (Mean(s, n), Mean(t, m)) => {
                    *s += t;
                    *n += m;
                }
                (Distinct(x), Distinct(y)) => x.extend(y.iter().cloned()),
                (a @ FloatSum(_), IntSum(y)) => Self::fold(*kind, a, &Value::Int(*y)),
                (a @ IntSum(_), FloatSum(y)) => Self::fold(*kind, a, &Value::Float(*y)),
                (a @ Extreme(_), Extreme(v)) => Self::fold(*kind, a, v),
                (a, b) => unreachable!("mismatched aggregate states {a:?} and {b:?}"),
            }
        }
    }

    fn finish(&self, state: &Self::State) -> AggregateValues {
        state
            .iter()
            .map(|s| match s {
                AggregateState::Count(n) => Value::Int(*n),
                AggregateState::IntSum(s) => Value::Int(*s),
                AggregateState::FloatSum(s) => Value::Float(*s),
                AggregateState::Extreme(v) => v.clone(),
                AggregateState::Mean(_, 0) => Value::Null,
                AggregateState::Mean(s, n) => Value::Float(s / *n as f64),
                AggregateState::Distinct(set) => Value::Int(set.len() as i64),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AggregateKind::*;

    #[test]
    fn every_function_folds_and_merges_alike() {
        let aggs = FieldAggregates(vec![
            (Count, 0),
            (Sum, 0),
            (Min, 0),
            (Max, 0),
            (Avg, 0),
            (DistinctCount, 0),
            (Sum, 1),
        ]);
        let rec = |a: Value, b: f64| -> Record { vec![a, Value::Float(b)].into() };
        let records = [
            rec(Value::Int(3), 0.5),
            rec(Value::Int(1), 1.0),
            rec(Value::Null, 2.0),
            rec(Value::Int(3), 0.25),
        ];
        let mut whole = aggs.init();
        records.iter().for_each(|r| aggs.add(&mut whole, r));
        let (mut left, mut right) = (aggs.init(), aggs.init());
        records[..1].iter().for_each(|r| aggs.add(&mut left, r));
        records[1..].iter().for_each(|r| aggs.add(&mut right, r));
        aggs.merge(&mut left, &right);
        let expected = [
            Value::Int(4),
            Value::Int(7),
            Value::Int(1),
            Value::Int(3),
            Value::Float(7.0 / 3.0),
            Value::Int(2),
            Value::Float(3.75),
        ];
        assert_eq!(aggs.finish(&whole)[..], expected);
        assert_eq!(aggs.finish(&left)[..], expected);
    }
}
