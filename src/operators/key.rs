//! Group-by keys as the window operator reads them: [`GroupKey`], and [`FieldKey`], the key of
//! record fields that job files group by.
//!
//! The operator needs a datum's key as a value only when the key is new to it: to route a datum
//! to its worker it needs the key's hash, and to find the key's state, the hash and whether the
//! datum's key equals a kept one. [`FieldKey`] answers both from the record's fields, without
//! making the key, which for most data would be built only to be hashed, compared and dropped.

use std::hash::{BuildHasher, Hash, Hasher};

use rustc_hash::{FxBuildHasher, FxHasher};

use crate::record::{Key, Record};

/// The group-by key of a datum. Any `Fn(&D) -> K` is one, which makes the key to hash and
/// compare it.
pub trait GroupKey<D>: 'static {
    /// The key, as the operator keeps it.
    type Key: Hash + Eq + Clone + 'static;
    /// The datum's key.
    fn key(&self, datum: &D) -> Self::Key;
    /// A hash of the datum's key: equal for data of equal keys.
    fn hash(&self, datum: &D) -> u64 {
        FxBuildHasher.hash_one(self.key(datum))
    }
    /// Whether the datum's key is `key`.
    fn matches(&self, datum: &D, key: &Self::Key) -> bool {
        self.key(datum) == *key
    }
    /// The hash of a kept key: what [`GroupKey::hash`] gives for data of that key. Checkpoints
    /// store it, as the worker that owns the key.
    fn key_hash(&self, key: &Self::Key) -> u64 {
        FxBuildHasher.hash_one(key)
    }
}

impl<D, K, F> GroupKey<D> for F
where
    K: Hash + Eq + Clone + 'static,
    F: Fn(&D) -> K + 'static,
{
    type Key = K;

    fn key(&self, datum: &D) -> K {
        self(datum)
    }
}

/// The values of some fields of a record, in the order given: the key of a job's `group_by`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldKey(pub Vec<usize>);

impl GroupKey<Record> for FieldKey {
    type Key = Key;

    fn key(&self, record: &Record) -> Key {
        self.0.iter().map(|&field| record[field].clone()).collect()
    }

    #[inline]
    fn hash(&self, record: &Record) -> u64 {
        let mut hasher = FxHasher::default();
        for &field in &self.0 {
            record[field].hash(&mut hasher);
        }
        hasher.finish()
    }

    fn key_hash(&self, key: &Key) -> u64 {
        let mut hasher = FxHasher::default();
        key.iter().for_each(|value| value.hash(&mut hasher));
        hasher.finish()
    }

    #[inline]
    fn matches(&self, record: &Record, key: &Key) -> bool {
        key.len() == self.0.len() && self.0.iter().zip(key).all(|(&f, v)| record[f] == *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Value;

    /// A field key agrees with the key it makes: equal keys hash alike and match, others do not
    /// match, and it matches a key made by a closure over the same fields.
    #[test]
    fn a_field_key_hashes_and_matches_as_the_key_it_makes() {
        let by = FieldKey(vec![2, 0]);
        let record = |a: i64, c: &str| -> Record {
            vec![Value::Int(a), Value::Null, Value::Str(c.into())].into()
        };
        let (one, same, other) = (record(1, "x"), record(1, "x"), record(2, "x"));
        assert_eq!(by.key(&one)[..], [Value::Str("x".into()), Value::Int(1)]);
        assert_eq!(by.hash(&one), by.hash(&same));
        assert_eq!(by.key_hash(&by.key(&one)), by.hash(&one));
        assert!(by.matches(&same, &by.key(&one)));
        assert!(!by.matches(&other, &by.key(&one)));
        assert!(!by.matches(&one, &Key::from_elem(Value::Int(1), 1)));
        let closure = |r: &Record| -> Key { [2, 0].iter().map(|&f| r[f].clone()).collect() };
        assert_eq!(GroupKey::key(&closure, &one), by.key(&one));
        assert!(closure.matches(&one, &by.key(&same)));
    }
}
