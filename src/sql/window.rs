//! The result of a windowed query: what each SELECT item and HAVING condition of a query over a
//! window table function takes from the window's result row (its keys, bounds and aggregates),
//! with its type.

use sqlparser::ast::{BinaryOperator, Expr, Function, Spanned as _, Value as SqlValue};

use super::catalog::{ColumnRef, Table};
use super::error::Problem;
use super::parse::call_args;
use super::time::is_epoch;
use super::types::SqlType;
use crate::operators::aggregate::AggregateKind;

/// Where a value of a windowed query's result row comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Item {
    /// The group-by key of this position.
    Key(usize),
    /// A window bound (`end`: window_end), as a timestamp, epoch seconds or epoch ms.
    Bound { end: bool, unit: Unit },
    /// The aggregate of this index.
    Aggregate(usize),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Unit {
    Timestamp,
    Seconds,
    Millis,
}

/// The parts of a windowed query being planned.
pub(super) struct Windowed<'a> {
    /// The table windowed.
    pub table: &'a Table,
    /// The construct, for messages.
    pub construct: String,
    /// The group-by keys: physical columns.
    pub keys: Vec<usize>,
    /// The aggregates: function, physical column (`None`: `COUNT(*)`), result type.
    pub aggregates: Vec<(AggregateKind, Option<usize>, SqlType)>,
}

impl Windowed<'_> {
    fn problem(&self, expr: &Expr, message: impl Into<String>) -> Problem {
        Problem::new(expr.span(), &self.construct, message)
    }

    /// What a SELECT item of a windowed query is, and its type.
    pub(super) fn item(&mut self, expr: &Expr) -> Result<(Item, SqlType), Problem> {
        match expr {
            Expr::Nested(inner) => self.item(inner),
            Expr::Identifier(id) if id.value == "window_start" || id.value == "window_end" => Ok((
                Item::Bound {
                    end: id.value == "window_end",
                    unit: Unit::Timestamp,
                },
                SqlType::Timestamp,
            )),
            Expr::Identifier(id) => match self.table.column(&id.value) {
                Some(ColumnRef::Physical(i)) => match self.keys.iter().position(|&k| k == i) {
                    Some(p) => Ok((Item::Key(p), self.table.columns[i].ty)),
                    None => Err(self.problem(
                        expr,
                        format!(
                            "column `{}` is neither grouped nor aggregated: add it to GROUP BY \
                             or aggregate it",
                            id.value
                        ),
                    )),
                },
                Some(ColumnRef::Computed(_)) => Err(self.problem(
                    expr,
                    format!(
                        "the time attribute `{}` is not a column of a window's result: select \
                         window_start or window_end",
                        id.value
                    ),
                )),
                None => Err(self.problem(expr, self.table.unknown_column(&id.value))),
            },
            Expr::Function(f) if f.over.is_some() => {
                Err(self.problem(expr, "OVER windows are not supported"))
            }
            Expr::Function(f) => {
                let name = f.name.to_string().to_ascii_uppercase();
                if name == "TIMESTAMPDIFF" {
                    return self.timestampdiff(expr, f);
                }
                let i = self.aggregate(expr, f, &name)?;
                Ok((Item::Aggregate(i), self.aggregates[i].2))
            }
            Expr::Cast {
                expr: inner,
                data_type,
                ..
            } => {
                let (item, ty) = self.item(inner)?;
                let to = SqlType::of(data_type).map_err(|m| self.problem(expr, m))?;
                let seconds = matches!(
                    item,
                    Item::Bound {
                        unit: Unit::Seconds,
                        ..
                    }
                );
                if to == ty || (ty.is_integer() && to.is_integer()) || seconds && to.is_integer() {
                    Ok((item, to))
                } else {
                    Err(self.problem(
                        expr,
                        format!("CAST from {ty} to {to} is not supported here"),
                    ))
                }
            }
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Multiply,
                right,
            } => {
                let (factor, other) = if is_thousand(right) {
                    (right, left)
                } else {
                    (left, right)
                };
                let (item, _) = self.item(other)?;
                match item {
                    Item::Bound {
                        end,
                        unit: Unit::Seconds,
                    } if is_thousand(factor) => Ok((
                        Item::Bound {
                            end,
                            unit: Unit::Millis,
                        },
                        SqlType::BigInt,
                    )),
                    _ => Err(self.unsupported_arithmetic(expr)),
                }
            }
            Expr::BinaryOp { .. } | Expr::UnaryOp { .. } => Err(self.unsupported_arithmetic(expr)),
            Expr::Value(_) => Err(self.problem(
                expr,
                "constant columns are not supported in a windowed query",
            )),
            _ => Err(self.problem(
                expr,
                format!("`{expr}` is not supported in a windowed query"),
            )),
        }
    }

    fn unsupported_arithmetic(&self, expr: &Expr) -> Problem {
        self.problem(
            expr,
            format!(
                "`{expr}`: the only arithmetic on a window's result is epoch seconds * 1000 \
                 (epoch milliseconds)"
            ),
        )
    }

    /// `TIMESTAMPDIFF(SECOND, TIMESTAMP '1970-01-01 00:00:00', window_start|window_end)`.
    fn timestampdiff(&mut self, expr: &Expr, f: &Function) -> Result<(Item, SqlType), Problem> {
        let args = call_args(&f.args).unwrap_or_default();
        let expected = "TIMESTAMPDIFF is supported as TIMESTAMPDIFF(SECOND, TIMESTAMP \
                        '1970-01-01 00:00:00', window_start or window_end): epoch seconds";
        let [unit, epoch, bound] = args.as_slice() else {
            return Err(self.problem(expr, expected));
        };
        if !unit.to_string().eq_ignore_ascii_case("SECOND") || !is_epoch(epoch) {
            return Err(self.problem(expr, expected));
        }
        match self.item(bound)? {
            (
                Item::Bound {
                    end,
                    unit: Unit::Timestamp,
                },
                _,
            ) => Ok((
                Item::Bound {
                    end,
                    unit: Unit::Seconds,
                },
                SqlType::Int,
            )),
            _ => Err(self.problem(bound, expected)),
        }
    }

    /// The index of the aggregate `f` computes, added if new.
    fn aggregate(&mut self, expr: &Expr, f: &Function, name: &str) -> Result<usize, Problem> {
        let list = argument_list(f);
        if f.filter.is_some() || !f.within_group.is_empty() {
            return Err(self.problem(expr, "FILTER and WITHIN GROUP are not supported"));
        }
        let distinct = matches!(
            list.as_ref().and_then(|l| l.duplicate_treatment),
            Some(sqlparser::ast::DuplicateTreatment::Distinct)
        );
        let args = list.map(|l| l.args.as_slice()).unwrap_or_default();
        let star = matches!(
            args,
            [sqlparser::ast::FunctionArg::Unnamed(
                sqlparser::ast::FunctionArgExpr::Wildcard
            )]
        );
        let column = match args {
            [sqlparser::ast::FunctionArg::Unnamed(sqlparser::ast::FunctionArgExpr::Expr(e))] => {
                Some(e)
            }
            _ => None,
        };
        let known = ["COUNT", "SUM", "MIN", "MAX", "AVG"];
        if !known.contains(&name) {
            return Err(self.problem(
                expr,
                format!(
                    "function `{name}` is not supported in a windowed query: the aggregates are \
                     COUNT(*), COUNT(DISTINCT x), SUM, MIN, MAX and AVG"
                ),
            ));
        }
        let (kind, field, ty) = match (name, star, column, distinct) {
            ("COUNT", true, _, false) => (AggregateKind::Count, None, SqlType::BigInt),
            (_, false, Some(e), _) => {
                let i = match e {
                    Expr::Identifier(id) => match self.table.column(&id.value) {
                        Some(ColumnRef::Physical(i)) => i,
                        Some(ColumnRef::Computed(_)) => {
                            return Err(self.problem(
                                e,
                                format!(
                                    "aggregating the time attribute `{}` is not supported",
                                    id.value
                                ),
                            ));
                        }
                        None => return Err(self.problem(e, self.table.unknown_column(&id.value))),
                    },
                    _ => {
                        return Err(self.problem(e, format!("{name} takes a column, not `{e}`")));
                    }
                };
                let ty = self.table.columns[i].ty;
                let kind = match (name, distinct) {
                    ("COUNT", true) => AggregateKind::DistinctCount,
                    ("COUNT", false) if self.table.columns[i].required => AggregateKind::Count,
                    ("COUNT", false) => {
                        return Err(self.problem(
                            expr,
                            "COUNT(column) of a nullable column is not supported: use COUNT(*) \
                             or COUNT(DISTINCT column)",
                        ));
                    }
                    (_, true) => {
                        return Err(
                            self.problem(expr, format!("{name}(DISTINCT …) is not supported"))
                        );
                    }
                    ("SUM", _) => AggregateKind::Sum,
                    ("MIN", _) => AggregateKind::Min,
                    ("MAX", _) => AggregateKind::Max,
                    _ => AggregateKind::Avg,
                };
                let numeric_only =
                    !matches!(kind, AggregateKind::Count | AggregateKind::DistinctCount);
                if numeric_only && !ty.is_numeric() {
                    return Err(self.problem(
                        expr,
                        format!("type mismatch: {name} takes a number, but `{e}` is {ty}"),
                    ));
                }
                let result = match kind {
                    AggregateKind::Count | AggregateKind::DistinctCount => SqlType::BigInt,
                    AggregateKind::Avg => SqlType::Double,
                    AggregateKind::Sum if ty.is_integer() => SqlType::BigInt,
                    _ => ty,
                };
                (kind, Some(i), result)
            }
            _ => {
                return Err(
                    self.problem(expr, format!("`{expr}`: write COUNT(*) or {name}(column)"))
                );
            }
        };
        if let Some(i) = self
            .aggregates
            .iter()
            .position(|&(k, c, _)| k == kind && c == field)
        {
            return Ok(i);
        }
        self.aggregates.push((kind, field, ty));
        Ok(self.aggregates.len() - 1)
    }

    /// `HAVING a op literal [AND …]` as conditions on result items.
    pub(super) fn having(
        &mut self,
        expr: &Expr,
    ) -> Result<Vec<(Item, &'static str, String)>, Problem> {
        match expr {
            Expr::Nested(inner) => self.having(inner),
            Expr::BinaryOp {
                left,
                op: BinaryOperator::And,
                right,
            } => {
                let mut all = self.having(left)?;
                all.extend(self.having(right)?);
                Ok(all)
            }
            Expr::BinaryOp { left, op, right } => {
                let op = comparison(op).ok_or_else(|| {
                    self.problem(
                        expr,
                        "HAVING takes comparisons of a result with a number or string, joined by \
                         AND",
                    )
                })?;
                let (item_expr, written, op) = match literal(right) {
                    Some(_) => (left, right, op),
                    None => (right, left, flip(op)),
                };
                let Some((value, value_ty)) = literal(written) else {
                    return Err(
                        self.problem(expr, "HAVING compares a result with a number or a string")
                    );
                };
                let (item, ty) = self.item(item_expr)?;
                if matches!(item, Item::Bound { .. }) || !ty.compares_with(value_ty) {
                    return Err(self.problem(
                        expr,
                        format!(
                            "type mismatch: `{item_expr}` is {ty} and `{written}` is {value_ty}"
                        ),
                    ));
                }
                Ok(vec![(item, op, value)])
            }
            _ => Err(self.problem(
                expr,
                "HAVING takes comparisons of a result with a number or string, joined by AND",
            )),
        }
    }
}

/// The argument list of a function call (`None` when written without parentheses).
fn argument_list(f: &Function) -> Option<&sqlparser::ast::FunctionArgumentList> {
    match &f.args {
        sqlparser::ast::FunctionArguments::List(list) => Some(list),
        _ => None,
    }
}

/// Whether `expr` is the literal `1000` (seconds to milliseconds).
fn is_thousand(expr: &Expr) -> bool {
    matches!(expr, Expr::Value(v) if matches!(&v.value, SqlValue::Number(n, _) if n == "1000"))
}

/// The comparison `op` is, if it is one.
fn comparison(op: &BinaryOperator) -> Option<&'static str> {
    Some(match op {
        BinaryOperator::Eq => "==",
        BinaryOperator::NotEq => "!=",
        BinaryOperator::Lt => "<",
        BinaryOperator::LtEq => "<=",
        BinaryOperator::Gt => ">",
        BinaryOperator::GtEq => ">=",
        _ => return None,
    })
}

/// `a op b` as `b op' a`.
fn flip(op: &'static str) -> &'static str {
    match op {
        "<" => ">",
        "<=" => ">=",
        ">" => "<",
        ">=" => "<=",
        other => other,
    }
}

/// A number or string literal, as CEL text and its type.
fn literal(expr: &Expr) -> Option<(String, SqlType)> {
    let (negative, expr) = match expr {
        Expr::UnaryOp {
            op: sqlparser::ast::UnaryOperator::Minus,
            expr,
        } => (true, &**expr),
        other => (false, other),
    };
    let Expr::Value(v) = expr else { return None };
    match &v.value {
        SqlValue::Number(n, _) => {
            let n = if negative { format!("-{n}") } else { n.clone() };
            match n.parse::<i64>() {
                Ok(i) => Some((i.to_string(), SqlType::BigInt)),
                Err(_) => n
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .map(|f| (format!("{f:?}"), SqlType::Double)),
            }
        }
        SqlValue::SingleQuotedString(s) if !negative => Some((
            serde_json::to_string(s).expect("a string encodes"),
            SqlType::String,
        )),
        _ => None,
    }
}
