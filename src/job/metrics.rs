//! Validation of `[[metrics]]`: the input filter `when`, group-by fields, the window, aggregates
//! and `having`.

use super::outputs::Wiring;
use super::{Checker, raw};
use crate::expr::{Predicate, Scope};
use crate::operators::aggregate::AggregateKind;
use crate::operators::window::WindowSpec;
use crate::record::{FieldType, Schema};

/// A windowed metric: filter, group, window, aggregate, filter, write.
#[derive(Clone, Debug)]
pub struct MetricSpec {
    /// Its name.
    pub name: String,
    /// The source index.
    pub source: usize,
    /// The condition on the source's records that a record must meet to enter the windows
    /// (`when`): applied before them, as SQL's `WHERE`, so a record it drops is never late.
    pub when: Option<Predicate>,
    /// Record indexes of the group-by fields.
    pub group_by: Vec<usize>,
    /// The windows.
    pub window: WindowSpec,
    /// Allowed lateness in ms: windows fire this much after their end.
    pub lateness: u64,
    /// The aggregates, in column order.
    pub aggregates: Vec<AggregateSpec>,
    /// The condition on the output columns that a row must meet to be written (`having`).
    pub having: Option<Predicate>,
    /// Sink indexes for the results.
    pub sinks: Vec<usize>,
    /// Sink index for late events.
    pub late_sink: Option<usize>,
    /// The names of the output row's columns: group-by fields, `window_start`, `window_end`, then
    /// the aggregates (in a SQL job, each position is named by the sink column it feeds).
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

impl AggregateSpec {
    /// The type of the aggregate's values, over records of `schema`: counts are ints, averages
    /// floats, and sums, minimums and maximums of the field's type.
    fn output_type(&self, schema: &Schema) -> FieldType {
        match self.kind {
            AggregateKind::Count | AggregateKind::DistinctCount => FieldType::Int,
            AggregateKind::Avg => FieldType::Float,
            AggregateKind::Sum | AggregateKind::Min | AggregateKind::Max => {
                schema.fields()[self.field].ty
            }
        }
    }
}

/// The output columns of a metric, the variables of its `having`; a column whose definition is
/// in error (an unknown field, a bad aggregate) has no type.
struct OutputColumns<'a> {
    names: &'a [String],
    types: &'a [Option<FieldType>],
}

impl Scope for OutputColumns<'_> {
    fn column(&self, name: &str) -> Result<(usize, FieldType), String> {
        let Some(index) = self.names.iter().position(|c| c == name) else {
            return Err(format!(
                "`{name}` is not an output column: {}",
                self.names.join(", ")
            ));
        };
        self.types[index]
            .map(|ty| (index, ty))
            .ok_or_else(|| format!("`{name}` cannot be used: its definition is in error"))
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
        let when = m.when.as_ref().and_then(|text| {
            Predicate::compile(text.get_ref(), schema)
                .map_err(|e| self.error(text.span(), format!("{field}.when"), e.to_string()))
                .ok()
        });
        let mut columns = Vec::new();
        let mut types = Vec::new();
        let mut group_by = Vec::new();
        for g in &m.group_by {
            let index = schema.index_of(g.get_ref());
            types.push(index.map(|i| schema.fields()[i].ty));
            match index {
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
        types.extend([Some(FieldType::Int); 2]);
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
            let aggregate = self.aggregate(name, spec, schema, at);
            types.push(aggregate.as_ref().map(|a| a.output_type(schema)));
            aggregates.extend(aggregate);
            columns.push(name.clone());
        }
        if m.aggregates.get_ref().is_empty() {
            self.error(
                m.aggregates.span(),
                format!("{field}.aggregates"),
                "declare at least one aggregate",
            );
        }
        let outputs = OutputColumns {
            names: &columns,
            types: &types,
        };
        let having = m.having.as_ref().and_then(|text| {
            Predicate::compile_in(text.get_ref(), &outputs)
                .map_err(|e| self.error(text.span(), format!("{field}.having"), e.to_string()))
                .ok()
        });
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
            when,
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
