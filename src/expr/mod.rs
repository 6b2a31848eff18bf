//! The expression language: predicates over records, written in [CEL](https://cel.dev)
//! (`amount_cents > 50000 && country != "US"`), parsed by the `cel` crate and compiled once,
//! against the names and types of the record's columns (a [`Scope`]: a source's [`Schema`], or
//! the output columns of a metric), into closures over column indexes: evaluating one reads the
//! record's values in place, with no interpreter, no name lookups and no allocation. Routes,
//! views and metrics filter with it (`when`), metrics filter their rows with it (`having`), and
//! routes compute their columns with it (`select`: an [`Expression`], of any type).
//!
//! The subset compiled is what filtering needs: `&&`, `||`, `!`, parentheses; `==`, `!=`, `<`,
//! `<=`, `>`, `>=` between numbers (int and double compare numerically, as in CEL), strings,
//! bools, and `== null` / `!= null`; `x in [literals]`; the string methods `startsWith`,
//! `endsWith` and `contains`; `size(string)` (its characters); arithmetic `+ - * / %` on ints and
//! `+ - * /` on doubles; the conditional `c ? a : b`, whose branches have one type (or one is
//! `null`). Types are checked when compiling: comparing a string field with a number is an
//! error, as in CEL's type checker. Anything else is rejected with its position in the
//! expression. Three functions are Eddy's, not CEL's, for SQL's: `upper(s)` and `lower(s)`
//! (Unicode case mapping) and `coalesce(a, b, …)` (the first argument that is not null).
//!
//! Evaluation follows CEL: an error (a null or mistyped value where a number is needed, integer
//! overflow, division by zero) makes the predicate not hold, but `&&` and `||` absorb it when
//! their other side decides (`false && error` is false, `true || error` is true). Where SQL's
//! NULL semantics need it, an error counts as null instead: a conditional whose condition errs
//! takes its second branch, as SQL's `CASE` does with an unknown condition (CEL would make the
//! whole conditional an error); `coalesce` passes over an argument that errs; and
//! `x == null` holds for a computed `x` that errs (a null operand), as SQL's `IS NULL` does.
//!
//! The module is in three parts: `limits` bounds what is parsed, `compile` types the syntax
//! tree and builds the closures, `eval` holds the closures' operands.

mod compile;
mod eval;
mod limits;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use crate::record::{FieldType, Schema, Value};
use eval::Operand;
pub use limits::{MAX_LENGTH, MAX_NESTING};

/// A compiled predicate; cheap to clone and shareable between workers.
#[derive(Clone)]
pub struct Predicate {
    text: Arc<str>,
    test: Arc<Operand<bool>>,
}

/// A compiled expression of any type but a list: a computed column; cheap to clone and
/// shareable between workers.
#[derive(Clone)]
pub struct Expression {
    text: Arc<str>,
    value: Arc<compile::Typed>,
}

/// The variables an expression may name: the columns of the records it is evaluated on.
pub trait Scope {
    /// The record index and type of the column `name`, or, when there is none, what to say.
    fn column(&self, name: &str) -> Result<(usize, FieldType), String>;
}

/// A source's records: the schema's fields are the variables.
impl Scope for Schema {
    fn column(&self, name: &str) -> Result<(usize, FieldType), String> {
        match self.index_of(name) {
            Some(index) => Ok((index, self.fields()[index].ty)),
            None => {
                let names: Vec<&str> = self.fields().iter().map(|f| &*f.name).collect();
                Err(format!(
                    "unknown field `{name}`: the source has {}",
                    names.join(", ")
                ))
            }
        }
    }
}

impl Predicate {
    /// Parses `text` as CEL and compiles it against `schema`, whose field names are the
    /// expression's variables. A text longer than [`MAX_LENGTH`] or nested deeper than
    /// [`MAX_NESTING`] is an error, before any parsing.
    pub fn compile(text: &str, schema: &Schema) -> Result<Predicate, PredicateError> {
        Predicate::compile_in(text, schema)
    }

    /// [`Predicate::compile`] against any `scope`: the expression's variables are its columns.
    pub fn compile_in(text: &str, scope: &(dyn Scope + Sync)) -> Result<Predicate, PredicateError> {
        limits::check(text)?;
        let test = limits::on_compile_stack(|| compile::predicate(text, scope))?;
        Ok(Predicate {
            text: text.into(),
            test: Arc::new(test),
        })
    }

    /// The text it was compiled from.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether the predicate holds for `record` (a record of the scope it was compiled against).
    /// An evaluation error counts as not holding.
    pub fn holds(&self, record: &[Value]) -> bool {
        self.test.get(record) == Some(true)
    }
}

impl Expression {
    /// Parses `text` as CEL and compiles it against `scope`, as [`Predicate::compile_in`] does,
    /// into an expression of any type but a list.
    pub fn compile_in(
        text: &str,
        scope: &(dyn Scope + Sync),
    ) -> Result<Expression, PredicateError> {
        limits::check(text)?;
        let value = limits::on_compile_stack(|| compile::value(text, scope))?;
        Ok(Expression {
            text: text.into(),
            value: Arc::new(value),
        })
    }

    /// Its value in `record` (a record of the scope it was compiled against). An evaluation
    /// error (a null operand, overflow, division by zero) is null, as SQL's NULL.
    pub fn value(&self, record: &[Value]) -> Value {
        self.value.value(record)
    }
}

impl fmt::Debug for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Expression").field(&self.text).finish()
    }
}

impl fmt::Debug for Predicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Predicate").field(&self.text).finish()
    }
}

/// Why an expression is not a valid predicate, and where (1-based, in characters).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct PredicateError {
    /// The line within the expression.
    pub line: usize,
    /// The column within that line.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl PredicateError {
    /// `message`, about the part of `text` that starts at byte `offset` (the end, if `offset` is
    /// beyond it); lines and columns count characters.
    fn at(text: &str, offset: usize, message: impl Into<String>) -> PredicateError {
        let before = text.get(..offset).unwrap_or(text);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        PredicateError {
            line: 1 + before.matches('\n').count(),
            column: 1 + before[line_start..].chars().count(),
            message: message.into(),
        }
    }
}

impl fmt::Display for PredicateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 1 {
            write!(
                f,
                "{} at line {}, column {} of the expression",
                self.message, self.line, self.column
            )
        } else {
            write!(
                f,
                "{} at column {} of the expression",
                self.message, self.column
            )
        }
    }
}
