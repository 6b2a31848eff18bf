//! The operands of compiled expressions: record fields read in place, constants, and closures
//! over them, with CEL's evaluation errors as `None`.

use std::borrow::Cow;

use crate::record::Value;

/// A closure evaluating a sub-expression; `None` is a CEL evaluation error.
type Eval<T> = Box<dyn Fn(&[Value]) -> Option<T> + Send + Sync>;

/// A value of a compiled expression: a record field read in place, a constant, or computed.
/// Keeping fields and constants apart from computed values spares a call per operand in the
/// common `field op literal` comparison.
pub(super) enum Operand<T> {
    Field(usize),
    Const(T),
    Computed(Eval<T>),
}

/// A scalar type an operand can have, read from a record value.
pub(super) trait Scalar: Copy + Send + Sync + 'static {
    /// The value as this type, if it is of it.
    fn read(value: &Value) -> Option<Self>;
}

impl Scalar for bool {
    fn read(value: &Value) -> Option<bool> {
        match value {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

impl Scalar for i64 {
    fn read(value: &Value) -> Option<i64> {
        match value {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

impl Scalar for f64 {
    fn read(value: &Value) -> Option<f64> {
        value.as_f64()
    }
}

impl<T: Scalar> Operand<T> {
    /// The operand's value in `record`; `None` is an evaluation error.
    #[inline]
    pub(super) fn get(&self, record: &[Value]) -> Option<T> {
        match self {
            Operand::Field(i) => T::read(&record[*i]),
            Operand::Const(c) => Some(*c),
            Operand::Computed(f) => f(record),
        }
    }
}

/// A string operand: a field, a literal, null, one of two strings chosen by a condition, the
/// first string of two, or a string with its letters' case changed. Only a case change
/// builds a string: reading any other borrows it. Literals are plain boxed strings: reading one
/// needs no decoding.
pub(super) enum Text {
    Field(usize),
    Const(Box<str>),
    /// `null` where a string may be: never a string.
    Null,
    Choice(Box<Choice<Text>>),
    /// `coalesce(a, b)`: `a` if it is a string, else `b`.
    Or(Box<[Text; 2]>),
    /// `upper(s)` or `lower(s)`: `s` mapped by the function.
    Mapped(Box<Text>, fn(&str) -> String),
}

/// `condition ? then : otherwise`, where a condition that errs counts as false, as a predicate
/// that errs does not hold.
pub(super) struct Choice<T> {
    pub(super) condition: Operand<bool>,
    pub(super) then: T,
    pub(super) otherwise: T,
}

impl<T> Choice<T> {
    /// The branch the condition picks in `record`.
    #[inline]
    pub(super) fn pick(&self, record: &[Value]) -> &T {
        if self.condition.get(record) == Some(true) {
            &self.then
        } else {
            &self.otherwise
        }
    }
}

impl Text {
    /// The string in `record`; `None` when the field is not a string (it is null).
    #[inline]
    pub(super) fn get<'r>(&'r self, record: &'r [Value]) -> Option<Cow<'r, str>> {
        match self {
            Text::Field(i) => match &record[*i] {
                Value::Str(s) => Some(Cow::Borrowed(s)),
                _ => None,
            },
            Text::Const(s) => Some(Cow::Borrowed(s)),
            Text::Null => None,
            Text::Choice(choice) => choice.pick(record).get(record),
            Text::Or(pair) => pair[0].get(record).or_else(|| pair[1].get(record)),
            Text::Mapped(text, map) => Some(Cow::Owned(map(&text.get(record)?))),
        }
    }
}

/// String equality without a call to `memcmp`, which costs more than the comparison itself for
/// the short strings (codes, types, countries) that predicates compare.
#[inline]
pub(super) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| x == y)
}

/// An operand computed by `f`.
pub(super) fn computed<T>(f: impl Fn(&[Value]) -> Option<T> + Send + Sync + 'static) -> Operand<T> {
    Operand::Computed(Box::new(f))
}

/// `a && b` (`and`) or `a || b`, with CEL's error absorption: a deciding operand wins over an
/// error, whichever side the error is on.
pub(super) fn logical(and: bool, a: Operand<bool>, b: Operand<bool>) -> Operand<bool> {
    computed(move |r| match a.get(r) {
        Some(x) if x != and => Some(x),
        first => match b.get(r) {
            Some(y) if y != and => Some(y),
            // `first` is the neutral value or an error, which the result then is.
            Some(_) => first,
            None => None,
        },
    })
}
