//! Incremental aggregates over window contents: the [`Aggregate`] trait that the window operator
//! folds records with, and [`FieldAggregates`], the count/sum/min/max/avg/distinct-count over
//! record fields that job files declare.

use std::cmp::Ordering;
use std::ops::Range;

use compact_str::CompactString;
use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::record::{Record, Value};

/// Folds data into a mergeable state and reads a result from it.
///
/// A state is [`Aggregate::width`] cells, so that the window operator keeps the states of a pane
/// flat, side by side, with no allocation or length of their own. `merge` lets it keep one state
/// per pane and combine panes into overlapping hopping windows, so each record is folded once
/// however many windows contain it.
pub trait Aggregate<D>: 'static {
    /// One cell of running state; the default is a placeholder that `init` overwrites.
    type Cell: Default + 'static;
    /// What a fired window reports.
    type Output;
    /// How many cells a state takes.
    fn width(&self) -> usize;
    /// Makes `state` (of `width` cells) empty.
    fn init(&self, state: &mut [Self::Cell]);
    /// Folds one datum in.
    fn add(&self, state: &mut [Self::Cell], datum: &D);
    /// Folds another state in.
    fn merge(&self, into: &mut [Self::Cell], from: &[Self::Cell]);
    /// The result of a state.
    fn finish(&self, state: &[Self::Cell]) -> Self::Output;
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

impl AggregateKind {
    /// How many cells its state takes: a mean keeps a sum and a count, the others one value.
    fn width(self) -> usize {
        match self {
            AggregateKind::Avg => 2,
            _ => 1,
        }
    }
}

/// One cell of the running state of [`FieldAggregates`]: a count, a sum, a least or greatest
/// value, or a set of values seen. Two words: strings and sets, rare in aggregates, are boxed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum AggregateCell {
    /// No value yet (a min or max before its first value).
    #[default]
    Null,
    /// A boolean min or max.
    Bool(bool),
    /// A count, an integer sum, or an integer min or max.
    Int(i64),
    /// A float sum, or a float min or max.
    Float(f64),
    /// A string min or max.
    Str(Box<CompactString>),
    /// The values a distinct count has seen.
    Distinct(Box<FxHashSet<Value>>),
}

impl AggregateCell {
    /// The cell holding `value`, as a min or max.
    fn of(value: &Value) -> Self {
        match value {
            Value::Null => AggregateCell::Null,
            Value::Bool(b) => AggregateCell::Bool(*b),
            Value::Int(i) => AggregateCell::Int(*i),
            Value::Float(f) => AggregateCell::Float(*f),
            Value::Str(s) => AggregateCell::Str(Box::new(s.clone())),
        }
    }

    /// The value a min or max reports.
    fn value(&self) -> Value {
        match self {
            AggregateCell::Null | AggregateCell::Distinct(_) => Value::Null,
            AggregateCell::Bool(b) => Value::Bool(*b),
            AggregateCell::Int(i) => Value::Int(*i),
            AggregateCell::Float(f) => Value::Float(*f),
            AggregateCell::Str(s) => Value::Str((**s).clone()),
        }
    }

    /// How `value` compares with the value held, as [`Value`]s compare.
    fn compare(&self, value: &Value) -> Option<Ordering> {
        match (value, self) {
            (Value::Int(a), AggregateCell::Int(b)) => a.partial_cmp(b),
            (Value::Str(a), AggregateCell::Str(b)) => a.partial_cmp(&**b),
            (Value::Bool(a), AggregateCell::Bool(b)) => a.partial_cmp(b),
            (Value::Float(a), AggregateCell::Float(b)) => a.partial_cmp(b),
            (Value::Int(a), AggregateCell::Float(b)) => (*a as f64).partial_cmp(b),
            (Value::Float(a), AggregateCell::Int(b)) => a.partial_cmp(&(*b as f64)),
            _ => None,
        }
    }
}

/// Aggregate functions over record fields: `(function, field index)` pairs; the field of `Count`
/// is ignored.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldAggregates(pub Vec<(AggregateKind, usize)>);

impl FieldAggregates {
    /// Each function with its field and where its cells lie in a state.
    fn spans(&self) -> impl Iterator<Item = (AggregateKind, usize, Range<usize>)> + '_ {
        self.0.iter().scan(0, |at, &(kind, field)| {
            let start = *at;
            *at += kind.width();
            Some((kind, field, start..*at))
        })
    }

    /// Folds one value into a function's cells.
    fn fold(kind: AggregateKind, cells: &mut [AggregateCell], value: &Value) {
        use AggregateCell::*;
        if matches!(value, Value::Null) && kind != AggregateKind::Count {
            return;
        }
        match (kind, cells) {
            (AggregateKind::Count, [Int(n)]) => *n += 1,
            (AggregateKind::Sum, [sum]) => match (&mut *sum, value) {
                (Int(s), Value::Int(v)) => *s = s.wrapping_add(*v),
                (Int(s), v) => *sum = Float(*s as f64 + v.as_f64().unwrap_or(0.0)),
                (Float(s), v) => *s += v.as_f64().unwrap_or(0.0),
                (cell, _) => unreachable!("a sum in {cell:?}"),
            },
            (AggregateKind::Min | AggregateKind::Max, [extreme]) => {
                let wanted = if kind == AggregateKind::Min {
                    Ordering::Less
                } else {
                    Ordering::Greater
                };
                if matches!(extreme, Null) || extreme.compare(value) == Some(wanted) {
                    *extreme = AggregateCell::of(value);
                }
            }
            (AggregateKind::Avg, [Float(sum), Int(n)]) => {
                if let Some(x) = value.as_f64() {
                    *sum += x;
                    *n += 1;
                }
            }
            (AggregateKind::DistinctCount, [Distinct(set)]) => {
                if !set.contains(value) {
                    set.insert(value.clone());
                }
            }
            (kind, cells) => unreachable!("{kind:?} in {cells:?}"),
        }
    }
}

/// The results of a job's aggregates, inline for up to three, so that a fired window costs no
/// allocation of its own.
pub type AggregateValues = SmallVec<[Value; 3]>;

impl Aggregate<Record> for FieldAggregates {
    type Cell = AggregateCell;
    type Output = AggregateValues;

    fn width(&self) -> usize {
        self.0.iter().map(|(kind, _)| kind.width()).sum()
    }

    fn init(&self, state: &mut [AggregateCell]) {
        for (kind, _, cells) in self.spans() {
            match (kind, &mut state[cells]) {
                (AggregateKind::Count | AggregateKind::Sum, [cell]) => {
                    *cell = AggregateCell::Int(0)
                }
                (AggregateKind::Min | AggregateKind::Max, [cell]) => *cell = AggregateCell::Null,
                (AggregateKind::Avg, [sum, n]) => {
                    *sum = AggregateCell::Float(0.0);
                    *n = AggregateCell::Int(0);
                }
                (AggregateKind::DistinctCount, [cell]) => {
                    *cell = AggregateCell::Distinct(Default::default())
                }
                (kind, cells) => unreachable!("{kind:?} in {} cells", cells.len()),
            }
        }
    }

    #[inline]
    fn add(&self, state: &mut [AggregateCell], record: &Record) {
        for (kind, field, cells) in self.spans() {
            Self::fold(kind, &mut state[cells], &record[field]);
        }
    }

    fn merge(&self, into: &mut [AggregateCell], from: &[AggregateCell]) {
        use AggregateCell::*;
        for (kind, _, cells) in self.spans() {
            match (kind, &mut into[cells.clone()], &from[cells]) {
                (AggregateKind::Count, [Int(x)], [Int(y)]) => *x = x.wrapping_add(*y),
                (AggregateKind::Sum, a, [Int(y)]) => Self::fold(kind, a, &Value::Int(*y)),
                (AggregateKind::Sum, a, [Float(y)]) => Self::fold(kind, a, &Value::Float(*y)),
                (AggregateKind::Min | AggregateKind::Max, a, [b]) => {
                    Self::fold(kind, a, &b.value())
                }
                (AggregateKind::Avg, [Float(s), Int(n)], [Float(t), Int(m)]) => {
                    *s += t;
                    *n += m;
                }
                (AggregateKind::DistinctCount, [Distinct(x)], [Distinct(y)]) => {
                    x.extend(y.iter().cloned())
                }
                (kind, a, b) => unreachable!("{kind:?} merging {a:?} and {b:?}"),
            }
        }
    }

    fn finish(&self, state: &[AggregateCell]) -> AggregateValues {
        self.spans()
            .map(|(kind, _, cells)| match (kind, &state[cells]) {
                (AggregateKind::Avg, [_, AggregateCell::Int(0)]) => Value::Null,
                (AggregateKind::Avg, [AggregateCell::Float(s), AggregateCell::Int(n)]) => {
                    Value::Float(s / *n as f64)
                }
                (AggregateKind::DistinctCount, [AggregateCell::Distinct(set)]) => {
                    Value::Int(set.len() as i64)
                }
                (_, [cell]) => cell.value(),
                (kind, cells) => unreachable!("{kind:?} in {cells:?}"),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AggregateKind::*;

    /// Every function, over integers, floats, strings and nulls, folded record by record and
    /// merged from two halves, gives the same results; a state is `width` cells.
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
            (Min, 2),
            (Max, 2),
            (Max, 1),
        ]);
        assert_eq!(aggs.width(), 11);
        let rec = |a: Value, b: f64, c: &str| -> Record {
            vec![a, Value::Float(b), Value::Str(c.into())].into()
        };
        let records = [
            rec(Value::Int(3), 0.5, "pear"),
            rec(Value::Int(1), 1.0, "apple"),
            rec(Value::Null, 2.0, "quince"),
            rec(Value::Int(3), 0.25, "fig"),
        ];
        let empty = || {
            let mut state = vec![AggregateCell::default(); aggs.width()];
            aggs.init(&mut state);
            state
        };
        let mut whole = empty();
        records.iter().for_each(|r| aggs.add(&mut whole, r));
        let (mut left, mut right) = (empty(), empty());
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
            Value::Str("apple".into()),
            Value::Str("quince".into()),
            Value::Float(2.0),
        ];
        assert_eq!(aggs.finish(&whole)[..], expected);
        assert_eq!(aggs.finish(&left)[..], expected);
        // A state made empty again reports as one never used.
        aggs.init(&mut whole);
        assert_eq!(aggs.finish(&whole)[..], aggs.finish(&empty())[..]);
        assert_eq!(aggs.finish(&whole)[2], Value::Null);
    }

    /// A sum of integers turns into a float sum at its first float, folded or merged.
    #[test]
    fn an_integer_sum_turns_float_at_the_first_float() {
        let aggs = FieldAggregates(vec![(Sum, 0)]);
        let mut ints = vec![AggregateCell::default()];
        aggs.init(&mut ints);
        aggs.add(&mut ints, &vec![Value::Int(2)].into());
        assert_eq!(aggs.finish(&ints)[..], [Value::Int(2)]);
        let mut floats = vec![AggregateCell::default()];
        aggs.init(&mut floats);
        aggs.add(&mut floats, &vec![Value::Float(0.5)].into());
        aggs.merge(&mut ints, &floats);
        assert_eq!(aggs.finish(&ints)[..], [Value::Float(2.5)]);
    }

    /// A cell is two words: a state of three functions fits in a cache line.
    #[test]
    fn a_cell_is_two_words() {
        assert_eq!(size_of::<AggregateCell>(), 16);
    }
}
