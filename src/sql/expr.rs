//! Row expressions of `WHERE` and of computed SELECT items: type-checked against the table and
//! written as the CEL text that [`crate::expr::Predicate`] and [`crate::expr::Expression`]
//! compile, so SQL filters and projections run on the same machinery as the TOML jobs' `when`
//! and `select`.

use sqlparser::ast::{
    BinaryOperator, CaseWhen, Expr, Function, InTarget, Spanned as _, UnaryOperator, Value,
};

use super::catalog::{ColumnRef, Table};
use super::error::Problem;
use super::parse::call_args;
use super::types::SqlType;

/// Translates expressions over one table, noting which of its physical columns they read.
pub(super) struct Translator<'a> {
    /// The table the expressions read.
    pub table: &'a Table,
    /// The construct, for messages.
    pub construct: &'a str,
    /// Physical columns read so far.
    pub used: Vec<usize>,
}

/// A translated expression: CEL text and its SQL type (`None` for a bare NULL).
type Translated = (String, Option<SqlType>);

impl Translator<'_> {
    fn problem(&self, expr: &Expr, message: impl Into<String>) -> Problem {
        Problem::new(expr.span(), self.construct, message)
    }

    /// `expr` as a CEL condition; it must be BOOLEAN.
    pub(super) fn condition(&mut self, expr: &Expr) -> Result<String, Problem> {
        let (text, ty) = self.cel(expr)?;
        match ty {
            Some(SqlType::Boolean) => Ok(text),
            other => Err(self.problem(
                expr,
                format!(
                    "type mismatch: a condition must be BOOLEAN, but `{expr}` is {}",
                    other.map_or("NULL".to_string(), |t| t.to_string())
                ),
            )),
        }
    }

    /// `expr` as a CEL value, with its type; a bare NULL, which has none, is refused.
    pub(super) fn value(&mut self, expr: &Expr) -> Result<(String, SqlType), Problem> {
        match self.cel(expr)? {
            (text, Some(ty)) => Ok((text, ty)),
            (_, None) => Err(self.problem(
                expr,
                "a column of NULL has no type: write a value of the sink column's type",
            )),
        }
    }

    fn cel(&mut self, expr: &Expr) -> Result<Translated, Problem> {
        match expr {
            Expr::Identifier(id) => self.column(expr, &id.value),
            Expr::CompoundIdentifier(ids) if ids.len() == 2 && ids[0].value == self.table.name => {
                self.column(expr, &ids[1].value)
            }
            Expr::Nested(inner) => {
                let (text, ty) = self.cel(inner)?;
                Ok((format!("({text})"), ty))
            }
            Expr::Value(v) => self.literal(expr, &v.value),
            Expr::UnaryOp { op, expr: inner } => {
                let (text, ty) = self.cel(inner)?;
                match (op, ty) {
                    (UnaryOperator::Not, Some(SqlType::Boolean)) => Ok((format!("!({text})"), ty)),
                    (UnaryOperator::Minus, Some(t)) if t.is_numeric() => {
                        Ok((format!("-({text})"), ty))
                    }
                    (UnaryOperator::Plus, Some(t)) if t.is_numeric() => Ok((text, ty)),
                    _ => Err(self.problem(
                        expr,
                        format!("type mismatch: `{op}` does not apply to `{inner}`"),
                    )),
                }
            }
            Expr::BinaryOp { left, op, right } => self.binary(expr, left, op, right),
            Expr::IsNull(inner) | Expr::IsNotNull(inner) => {
                let (text, _) = self.cel(inner)?;
                let op = if matches!(expr, Expr::IsNull(_)) {
                    "=="
                } else {
                    "!="
                };
                Ok((format!("({text} {op} null)"), Some(SqlType::Boolean)))
            }
            Expr::In {
                expr: inner,
                target: InTarget::List(list),
                negated,
                global: false,
            } => {
                let (text, ty) = self.cel(inner)?;
                let mut items = Vec::new();
                for item in list {
                    let (item_text, item_ty) = self.cel(item)?;
                    self.comparable(expr, ty, item_ty)?;
                    items.push((item_text, item_ty));
                }
                let items: Vec<String> = items.into_iter().map(|(t, _)| t).collect();
                let test = format!("{text} in [{}]", items.join(", "));
                Ok((
                    if *negated {
                        format!("!({test})")
                    } else {
                        format!("({test})")
                    },
                    Some(SqlType::Boolean),
                ))
            }
            Expr::Between {
                expr: inner,
                negated,
                low,
                high,
            } => {
                let ge = self.compare(expr, inner, ">=", low)?;
                let le = self.compare(expr, inner, "<=", high)?;
                let test = format!("({ge} && {le})");
                Ok((
                    if *negated { format!("!{test}") } else { test },
                    Some(SqlType::Boolean),
                ))
            }
            Expr::Like {
                negated,
                any: false,
                expr: inner,
                pattern,
                escape_char: None,
            } => self.like(expr, inner, pattern, *negated),
            Expr::Case {
                operand,
                conditions,
                else_result,
                ..
            } => self.case(expr, operand.as_deref(), conditions, else_result.as_deref()),
            Expr::Function(f) if f.over.is_some() => {
                Err(self.problem(expr, "OVER windows are not supported"))
            }
            Expr::Function(f) => self.function(expr, f),
            Expr::Subquery(_) | Expr::In { .. } | Expr::Exists { .. } => {
                Err(self.problem(expr, "subqueries are not supported"))
            }
            _ => Err(self.problem(expr, format!("`{expr}` is not supported in a filter"))),
        }
    }

    /// `CASE [operand] WHEN … THEN … [ELSE …] END` as nested CEL conditionals. Every result
    /// has one type (integers together), the `ELSE`'s if it has one; without `ELSE` the CASE is
    /// NULL where no condition holds, as in Flink.
    fn case(
        &mut self,
        expr: &Expr,
        operand: Option<&Expr>,
        conditions: &[CaseWhen],
        else_result: Option<&Expr>,
    ) -> Result<Translated, Problem> {
        let mut branches = Vec::new();
        for when in conditions {
            let test = match operand {
                Some(operand) => self.compare(expr, operand, "==", &when.condition)?,
                None => self.condition(&when.condition)?,
            };
            let (then, ty) = self.cel(&when.result)?;
            branches.push((test, then, ty, &when.result));
        }
        let (mut text, else_ty) = match else_result {
            Some(e) => self.cel(e)?,
            None => ("null".to_string(), None),
        };
        let typed = else_result.zip(else_ty).or_else(|| {
            branches
                .iter()
                .find_map(|(_, _, ty, result)| Some((*result, (*ty)?)))
        });
        let Some((first, ty)) = typed else {
            return Err(self.problem(expr, "every result of this CASE is NULL"));
        };
        for (test, then, then_ty, result) in branches.into_iter().rev() {
            self.same_type(result, then_ty, first, ty, "the results of a CASE")?;
            text = format!("({test} ? {then} : {text})");
        }
        Ok((text, Some(ty)))
    }

    /// Checks that `expr`, of type `ty` (`None`: NULL, which has any type), has the type `of`
    /// that `first` has, among the values of `what`.
    fn same_type(
        &self,
        expr: &Expr,
        ty: Option<SqlType>,
        first: &Expr,
        of: SqlType,
        what: &str,
    ) -> Result<(), Problem> {
        match ty {
            Some(t) if t != of && !(t.is_integer() && of.is_integer()) => Err(self.problem(
                expr,
                format!(
                    "type mismatch: {what} have one type, but `{expr}` is {t} and `{first}` is \
                     {of}"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// `COALESCE(a, b, …)`: the first argument that is not NULL, all of one type (integers
    /// together).
    fn coalesce(&mut self, expr: &Expr, args: &[&Expr]) -> Result<Translated, Problem> {
        let mut translated = Vec::new();
        for arg in args {
            translated.push(self.cel(arg)?);
        }
        let typed = args
            .iter()
            .zip(&translated)
            .find_map(|(arg, (_, ty))| Some((*arg, (*ty)?)));
        let Some((first, ty)) = typed else {
            return Err(self.problem(expr, "COALESCE needs an argument that is not NULL"));
        };
        for (arg, (_, arg_ty)) in args.iter().zip(&translated) {
            self.same_type(arg, *arg_ty, first, ty, "the arguments of COALESCE")?;
        }
        let texts: Vec<String> = translated.into_iter().map(|(t, _)| t).collect();
        let ty = if ty.is_integer() { SqlType::BigInt } else { ty };
        Ok((format!("coalesce({})", texts.join(", ")), Some(ty)))
    }

    /// The scalar functions: `CHAR_LENGTH` (`CHARACTER_LENGTH`), `UPPER` and `LOWER` of a
    /// STRING, `ABS` of a number, and `COALESCE`. Each but `COALESCE` is NULL where its argument
    /// is.
    fn function(&mut self, expr: &Expr, f: &Function) -> Result<Translated, Problem> {
        let name = f.name.to_string().to_uppercase();
        let args = call_args(&f.args).unwrap_or_default();
        if name == "COALESCE" {
            if args.is_empty() {
                return Err(self.problem(expr, "COALESCE takes at least one argument"));
            }
            return self.coalesce(expr, &args);
        }
        let one_argument = ["CHAR_LENGTH", "CHARACTER_LENGTH", "UPPER", "LOWER", "ABS"];
        let [arg] = args.as_slice() else {
            return Err(if one_argument.contains(&name.as_str()) {
                self.problem(expr, format!("{name} takes one argument"))
            } else {
                self.unknown_function(expr, f)
            });
        };
        let (text, ty) = self.cel(arg)?;
        match (name.as_str(), ty) {
            ("CHAR_LENGTH" | "CHARACTER_LENGTH", Some(SqlType::String)) => {
                Ok((format!("size({text})"), Some(SqlType::BigInt)))
            }
            ("UPPER" | "LOWER", Some(SqlType::String)) => Ok((
                format!("{}({text})", name.to_lowercase()),
                Some(SqlType::String),
            )),
            ("ABS", Some(t)) if t.is_numeric() => {
                let ty = if t.is_integer() { SqlType::BigInt } else { t };
                Ok((format!("({text} < 0 ? -({text}) : {text})"), Some(ty)))
            }
            (known, _) if one_argument.contains(&known) => Err(self.problem(
                expr,
                format!(
                    "type mismatch: {name} takes a {}, but `{arg}` is {}",
                    if name == "ABS" { "number" } else { "STRING" },
                    ty.map_or("NULL".to_string(), |t| t.to_string())
                ),
            )),
            _ => Err(self.unknown_function(expr, f)),
        }
    }

    fn unknown_function(&self, expr: &Expr, f: &Function) -> Problem {
        self.problem(
            expr,
            format!(
                "function `{}` is not supported in a filter: the functions are CHAR_LENGTH, \
                 UPPER, LOWER, COALESCE and ABS (aggregates need a window TVF)",
                f.name
            ),
        )
    }

    fn column(&mut self, expr: &Expr, name: &str) -> Result<Translated, Problem> {
        match self.table.column(name) {
            Some(column @ ColumnRef::Physical(i)) => {
                if !self.used.contains(&i) {
                    self.used.push(i);
                }
                Ok((name.to_string(), Some(self.table.type_of(column))))
            }
            Some(ColumnRef::Computed(_)) => Err(self.problem(
                expr,
                format!(
                    "filters on the time attribute `{name}` are not supported: filter on the \
                     column it is computed from"
                ),
            )),
            None => Err(self.problem(expr, self.table.unknown_column(name))),
        }
    }

    fn literal(&self, expr: &Expr, value: &Value) -> Result<Translated, Problem> {
        Ok(match value {
            Value::Number(n, _) if n.parse::<i64>().is_ok() => (n.clone(), Some(SqlType::BigInt)),
            Value::Number(n, _) if n.parse::<f64>().is_ok() => {
                let text = if n.contains(['.', 'e', 'E']) {
                    n.clone()
                } else {
                    format!("{n}.0")
                };
                (text, Some(SqlType::Double))
            }
            Value::SingleQuotedString(s) => (
                serde_json::to_string(s).expect("a string encodes"),
                Some(SqlType::String),
            ),
            Value::Boolean(b) => (b.to_string(), Some(SqlType::Boolean)),
            Value::Null => ("null".into(), None),
            _ => return Err(self.problem(expr, format!("literal `{value}` is not supported"))),
        })
    }

    fn binary(
        &mut self,
        expr: &Expr,
        left: &Expr,
        op: &BinaryOperator,
        right: &Expr,
    ) -> Result<Translated, Problem> {
        use BinaryOperator::*;
        let comparison = match op {
            Eq => Some("=="),
            NotEq => Some("!="),
            Lt => Some("<"),
            LtEq => Some("<="),
            Gt => Some(">"),
            GtEq => Some(">="),
            _ => None,
        };
        if let Some(symbol) = comparison {
            return Ok((
                self.compare(expr, left, symbol, right)?,
                Some(SqlType::Boolean),
            ));
        }
        let (l, lt) = self.cel(left)?;
        let (r, rt) = self.cel(right)?;
        match op {
            And | Or => {
                for (side, ty) in [(left, lt), (right, rt)] {
                    if ty != Some(SqlType::Boolean) {
                        return Err(self.problem(
                            side,
                            format!(
                                "type mismatch: `{op}` takes BOOLEAN operands, but `{side}` is {}",
                                ty.map_or("NULL".to_string(), |t| t.to_string())
                            ),
                        ));
                    }
                }
                let symbol = if *op == And { "&&" } else { "||" };
                Ok((format!("({l} {symbol} {r})"), Some(SqlType::Boolean)))
            }
            Plus | Minus | Multiply | Divide | Modulo => {
                let (Some(a), Some(b)) = (lt, rt) else {
                    return Err(self.problem(expr, "arithmetic on NULL is not supported"));
                };
                if !a.is_numeric() || !b.is_numeric() {
                    return Err(self.problem(
                        expr,
                        format!(
                            "type mismatch: `{op}` takes numbers, but `{left}` is {a} and \
                             `{right}` is {b}"
                        ),
                    ));
                }
                if a.is_integer() != b.is_integer() {
                    return Err(self.problem(
                        expr,
                        format!(
                            "arithmetic mixing integers and DOUBLE is not supported: `{left}` is \
                             {a} and `{right}` is {b}"
                        ),
                    ));
                }
                if *op == Modulo && !a.is_integer() {
                    return Err(self.problem(expr, "`%` takes integers"));
                }
                let ty = if a.is_integer() { SqlType::BigInt } else { a };
                Ok((format!("({l} {op} {r})"), Some(ty)))
            }
            _ => Err(self.problem(expr, format!("operator `{op}` is not supported"))),
        }
    }

    /// `left symbol right`, both sides of types that compare.
    fn compare(
        &mut self,
        expr: &Expr,
        left: &Expr,
        symbol: &str,
        right: &Expr,
    ) -> Result<String, Problem> {
        let (l, lt) = self.cel(left)?;
        let (r, rt) = self.cel(right)?;
        if lt.is_none() || rt.is_none() {
            return Err(self.problem(
                expr,
                "a comparison with NULL is never true: write `IS NULL` or `IS NOT NULL`",
            ));
        }
        self.comparable(expr, lt, rt)?;
        Ok(format!("{l} {symbol} {r}"))
    }

    fn comparable(
        &self,
        expr: &Expr,
        a: Option<SqlType>,
        b: Option<SqlType>,
    ) -> Result<(), Problem> {
        match (a, b) {
            (Some(a), Some(b)) if !a.compares_with(b) => Err(self.problem(
                expr,
                format!("type mismatch: {a} and {b} do not compare in `{expr}`"),
            )),
            _ => Ok(()),
        }
    }

    /// `x LIKE 'pattern'` for patterns CEL's string functions express: `abc`, `abc%`, `%abc`,
    /// `%abc%`.
    fn like(
        &mut self,
        expr: &Expr,
        inner: &Expr,
        pattern: &Expr,
        negated: bool,
    ) -> Result<Translated, Problem> {
        let (text, ty) = self.cel(inner)?;
        if ty != Some(SqlType::String) {
            return Err(self.problem(
                expr,
                format!("type mismatch: LIKE takes a STRING, but `{inner}` is not one"),
            ));
        }
        let Expr::Value(v) = pattern else {
            return Err(self.problem(pattern, "LIKE takes a quoted pattern"));
        };
        let Value::SingleQuotedString(p) = &v.value else {
            return Err(self.problem(pattern, "LIKE takes a quoted pattern"));
        };
        let starts = p.starts_with('%');
        let ends = p.ends_with('%') && p.len() > 1;
        let core = &p[usize::from(starts)..p.len() - usize::from(ends)];
        if core.contains(['%', '_']) {
            return Err(self.problem(
                pattern,
                "LIKE patterns other than 'abc', 'abc%', '%abc' and '%abc%' are not supported",
            ));
        }
        let lit = serde_json::to_string(core).expect("a string encodes");
        let test = match (starts, ends) {
            (false, false) => format!("{text} == {lit}"),
            (false, true) => format!("{text}.startsWith({lit})"),
            (true, false) => format!("{text}.endsWith({lit})"),
            (true, true) => format!("{text}.contains({lit})"),
        };
        Ok((
            if negated {
                format!("!({test})")
            } else {
                format!("({test})")
            },
            Some(SqlType::Boolean),
        ))
    }
}
