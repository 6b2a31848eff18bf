//! Validation of `[[metrics]]`: group-by fields, the window, aggregates and `having`.

use super::outputs::Wiring;
use super::{Checker, raw};
use crate::operators::aggregate::AggregateKind;
use crate::operators::window::WindowSpec;
use crate::record::{FieldType, Schema, Value};

/// A windowed metric: group, window, aggregate, filter, write.
#[derive(Clone, Debug)]
pub struct MetricSpec {
    /// Its name.
    pub name: String,
    /// The source index.
    pub source: usize,
    /// Record indexes of the group-by fields.
    pub group_by: Vec<usize>,
    /// The windows.
    pub window: WindowSpec,
    /// Allowed lateness in ms: windows fire this much after their end.
    pub lateness: u64,
    /// The aggregates, in column order.
    pub aggregates: Vec<AggregateSpec>,
    /// Conditions on output columns that a row must meet to be written.
    pub having: Vec<Condition>,
    /// Sink indexes for the results.
    pub sinks: Vec<usize>,
    /// Sink index for late events.
    pub late_sink: Option<usize>,
    /// The names of the output row's columns: group-by fields, `window_start`, `window_end`, then
    /// the aggregates.
    pub columns: Vec<String>,
}

/// One aggregate of a metric: an output column computed over a field of the source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AggregateSpec {
    /// The output column's name.
    pub name: String,
    /// The function.
    pub kind: AggregateKind,
    /// The record index of the field it aggregates (the event time's for `count`).
    pub field: usize,
}

/// `column op literal`, one conjunct of a `having` filter.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    /// Output column index.
    pub column: usize,
    /// The comparison.
    pub op: Comparison,
    /// The literal compared with.
    pub value: Value,
}

/// Comparison operators of `having`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparison {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Condition {
    /// Whether `row` meets the condition (never, when the values do not compare).
    pub fn holds(&self, row: &[Value]) -> bool {
        let Some(order) = row[self.column].partial_cmp(&self.value) else {
            return false;
        };
        use std::cmp::Ordering::*;
        match self.op {
            Comparison::Eq => order == Equal,
            Comparison::Ne => order != Equal,
            Comparison::Lt => order == Less,
            Comparison::Le => order != Greater,
            Comparison::Gt => order == Greater,
            Comparison::Ge => order != Less,
        }
    }
}

/// The most panes a hopping window is made of: each record is folded into one pane, and firing a
/// window merges its panes, so the cost of a window grows with their number.
pub const MAX_PANES: u64 = 1000;

impl Checker<'_> {
    pub(super) fn metric(
        &mut self,
        m: &raw::MetricSection,
        field: &str,
        schema: &Schema,
        wiring: Wiring,
    ) -> Option<MetricSpec> {
        let errors_before = self.errors.len();
        let mut columns = Vec::new();
        let mut group_by = Vec::new();
        for g in &m.group_by {
            match schema.index_of(g.get_ref()) {
                Some(i) => group_by.push(i),
                None => self.error(
                    g.span(),
                    format!("{field}.group_by"),
                    format!("`{}` is not a field of the source schema", g.get_ref()),
                ),
            }
            if columns.contains(g.get_ref()) {
                self.error(
                    g.span(),
                    format!("{field}.group_by"),
                    format!("`{}` is named twice", g.get_ref()),
                );
            }
            columns.push(g.get_ref().clone());
        }
        columns.extend(["window_start".to_string(), "window_end".to_string()]);
        let window = self.window(&m.window.get_ref().kind, &format!("{field}.window"));
        let lateness =
            self.millis_or_zero(&m.allowed_lateness, format!("{field}.allowed_lateness"));
        let mut aggregates = Vec::new();
        for (name, spec) in m.aggregates.get_ref() {
            let at = format!("{field}.aggregates.{name}");
            if columns.contains(name) {
                let what = if m.group_by.iter().any(|g| g.get_ref() == name) {
                    "a group-by field"
                } else {
                    "a window column"
                };
                self.error(
                    spec.span(),
                    at.clone(),
                    format!(
                        "`{name}` is already a column of the results ({what}): name the \
                         aggregate otherwise"
                    ),
                );
            }
            aggregates.extend(self.aggregate(name, spec, schema, at));
            columns.push(name.clone());
        }
        if m.aggregates.get_ref().is_empty() {
            self.error(
                m.aggregates.span(),
                format!("{field}.aggregates"),
                "declare at least one aggregate",
            );
        }
        let having = match &m.having {
            None => Vec::new(),
            Some(text) => match parse_having(text.get_ref(), &columns) {
                Ok(conditions) => conditions,
                Err(message) => {
                    self.error(text.span(), format!("{field}.having"), message);
                    Vec::new()
                }
            },
        };
        if m.sinks.is_empty() {
            self.error(
                m.name.span(),
                format!("{field}.sinks"),
                "the results go nowhere: name at least one sink",
            );
        }
        (self.errors.len() == errors_before).then(|| MetricSpec {
            name: m.name.get_ref().clone(),
            source: wiring.source,
            group_by,
            window,
            lateness,
            aggregates,
            having,
            sinks: wiring.sinks,
            late_sink: wiring.late_sink,
            columns,
        })
    }

    /// The aggregate `name = "function(field)"` written as `spec`, at `at`.
    fn aggregate(
        &mut self,
        name: &str,
        spec: &raw::Text,
        schema: &Schema,
        at: String,
    ) -> Option<AggregateSpec> {
        let (kind, arg) = parse_aggregate(spec.get_ref())
            .map_err(|message| self.error(spec.span(), at.clone(), message))
            .ok()?;
        let field = match (kind, arg) {
            (AggregateKind::Count, None) => schema.time_index(),
            (_, None) => {
                self.error(
                    spec.span(),
                    at,
                    "this function needs a field, e.g. sum(amount)",
                );
                return None;
            }
            (_, Some(arg)) => {
                let Some(i) = schema.index_of(arg) else {
                    self.error(
                        spec.span(),
                        at,
                        format!("`{arg}` is not a field of the source schema"),
                    );
                    return None;
                };
                let numeric = matches!(schema.fields()[i].ty, FieldType::Int | FieldType::Float);
                if matches!(kind, AggregateKind::Sum | AggregateKind::Avg) && !numeric {
                    self.error(spec.span(), at, format!("`{arg}` is not numeric"));
                }
                i
            }
        };
        Some(AggregateSpec {
            name: name.to_string(),
            kind,
            field,
        })
    }

    /// The window `kind` (with its settings) describes, at `field`.
    fn window(&mut self, kind: &toml::Spanned<raw::WindowKind>, field: &str) -> WindowSpec {
        let need = |this: &mut Self, value: &Option<raw::Text>, what: &str, name: &str| {
            let got = this.millis(value, format!("{field}.{name}"));
            if value.is_none() {
                this.error(
                    kind.span(),
                    format!("{field}.{name}"),
                    format!("a {what} window needs `{name}`"),
                );
            }
            got.unwrap_or(1)
        };
        match kind.get_ref() {
            raw::WindowKind::Tumbling(w) => WindowSpec::Tumbling {
                size: need(self, &w.size, "tumbling", "size"),
            },
            raw::WindowKind::Hopping(w) => {
                let size = need(self, &w.size, "hopping", "size");
                let slide = need(self, &w.slide, "hopping", "slide");
                if let Some(text) = &w.slide {
                    let panes = WindowSpec::Hopping { size, slide }.panes();
                    if slide > size {
                        self.error(
                            text.span(),
                            format!("{field}.slide"),
                            "the slide must not exceed the size",
                        );
                    } else if panes > MAX_PANES {
                        self.error(
                            text.span(),
                            format!("{field}.slide"),
                            format!(
                                "a window of {size} ms sliding by {slide} ms is made of {panes} \
                                 panes of {} ms (their greatest common divisor), and a window \
                                 has at most {MAX_PANES}: make the slide a larger divisor of \
                                 the size",
                                size / panes
                            ),
                        );
                    }
                }
                WindowSpec::Hopping { size, slide }
            }
            raw::WindowKind::Session(w) => WindowSpec::Session {
                gap: need(self, &w.gap, "session", "gap"),
            },
        }
    }
}

/// Parses `count`, `count()`, `sum(field)`, … into a function and its field.
fn parse_aggregate(spec: &str) -> Result<(AggregateKind, Option<&str>), String> {
    let spec = spec.trim();
    let (name, arg) = match spec.split_once('(') {
        Some((name, rest)) => {
            let Some(arg) = rest.strip_suffix(')') else {
                return Err(format!("`{spec}`: missing `)`"));
            };
            let arg = arg.trim();
            (name.trim(), (!arg.is_empty() && arg != "*").then_some(arg))
        }
        None => (spec, None),
    };
    let kind = match name {
        "count" => AggregateKind::Count,
        "sum" => AggregateKind::Sum,
        "min" => AggregateKind::Min,
        "max" => AggregateKind::Max,
        "avg" => AggregateKind::Avg,
        "distinct_count" => AggregateKind::DistinctCount,
        other => {
            return Err(format!(
                "unknown function `{other}`: expected count, sum, min, max, avg or distinct_count"
            ));
        }
    };
    Ok((kind, arg))
}

/// Parses `column op literal [&& column op literal]…`.
fn parse_having(text: &str, columns: &[String]) -> Result<Vec<Condition>, String> {
    let mut conditions = Vec::new();
    for (n, part) in text.split("&&").enumerate() {
        let part = part.trim();
        let ops = [
            (">=", Comparison::Ge),
            ("<=", Comparison::Le),
            ("==", Comparison::Eq),
            ("!=", Comparison::Ne),
            (">", Comparison::Gt),
            ("<", Comparison::Lt),
        ];
        let Some((at, symbol, op)) = ops
            .iter()
            .filter_map(|(s, op)| part.find(s).map(|at| (at, *s, *op)))
            .min_by_key(|(at, s, _)| (*at, std::cmp::Reverse(s.len())))
        else {
            return Err(format!(
                "condition {} `{part}` has no comparison (>=, <=, ==, !=, >, <)",
                n + 1
            ));
        };
        let name = part[..at].trim();
        let literal = part[at + symbol.len()..].trim();
        let column = columns
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| format!("`{name}` is not an output column: {}", columns.join(", ")))?;
        let value = if let Ok(i) = literal.parse::<i64>() {
            Value::Int(i)
        } else if let Ok(f) = literal.parse::<f64>() {
            Value::Float(f)
        } else if let Some(s) = literal.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            Value::Str(s.into())
        } else {
            return Err(format!("`{literal}` is not a number or a \"string\""));
        };
        conditions.push(Condition { column, op, value });
    }
    Ok(conditions)
}
