//! Validation of `[[routes]]` sections: the source, the CEL predicate (compiled here, so a bad one
//! is an `eddy check` error with its column), `otherwise` (at most one per source, never with
//! `when`), the computed columns (`select`, CEL expressions compiled the same way) and the
//! sinks.

use indexmap::IndexMap;
use toml::Spanned;

use super::outputs::Names;
use super::{Checker, SourceSpec, raw};
use crate::expr::{Expression, Predicate};
use crate::record::Schema;

/// A route: which events of a source go to its sinks, as rows of the source's fields or of the
/// columns it computes.
#[derive(Clone, Debug)]
pub struct RouteSpec {
    /// Its name (the `eddy.output` header of its Kafka messages).
    pub name: String,
    /// The source index.
    pub source: usize,
    /// Which of the source's events it takes.
    pub select: Selection,
    /// The columns it writes, each computed from an event (`select`); `None`: the source's
    /// fields as they are.
    pub projection: Option<Vec<(String, Expression)>>,
    /// Sink indexes.
    pub sinks: Vec<usize>,
}

impl RouteSpec {
    /// The names of the columns it writes, from a source of `schema`.
    pub fn columns(&self, schema: &Schema) -> Vec<String> {
        match &self.projection {
            Some(projection) => projection.iter().map(|(name, _)| name.clone()).collect(),
            None => schema.fields().iter().map(|f| f.name.to_string()).collect(),
        }
    }
}

/// Which events a route takes.
#[derive(Clone, Debug)]
pub enum Selection {
    /// Every event of the source (no `when`).
    Every,
    /// The events the predicate holds for.
    When(Predicate),
    /// The events for which no `When` route of the same source holds.
    Otherwise,
}

impl Checker<'_> {
    pub(super) fn routes(
        &mut self,
        sections: &[Spanned<raw::RouteSection>],
        names: &Names,
        sources: &[SourceSpec],
    ) -> Vec<RouteSpec> {
        let mut routes = Vec::new();
        // Per source: the first `otherwise` route's name, and whether it has a `when` route.
        let mut otherwise = vec![None::<&str>; sources.len()];
        let mut has_when = vec![false; sources.len()];
        let mut otherwise_spans = Vec::new();
        for (i, r) in sections.iter().enumerate() {
            let r = r.get_ref();
            let field = format!("routes[{i}]");
            let errors_before = self.errors.len();
            let source = self.source_index(names, &r.source, format!("{field}.source"));
            let sinks = self.sink_indexes(names, &r.sinks, format!("{field}.sinks"));
            if r.sinks.is_empty() {
                self.error(
                    r.name.span(),
                    format!("{field}.sinks"),
                    "the events go nowhere: name at least one sink",
                );
            }
            let is_otherwise = r.otherwise.as_ref().is_some_and(|o| *o.get_ref());
            let select = match (&r.when, is_otherwise) {
                (Some(_), true) => {
                    self.error(
                        r.otherwise.as_ref().expect("set").span(),
                        format!("{field}.otherwise"),
                        "a route takes either `when` or `otherwise = true`, not both",
                    );
                    None
                }
                (None, true) => {
                    let span = r.otherwise.as_ref().expect("set").span();
                    if let Some(s) = source {
                        match otherwise[s] {
                            Some(first) => self.error(
                                span,
                                format!("{field}.otherwise"),
                                format!(
                                    "source `{}` already has an otherwise route, `{first}`",
                                    sources[s].name
                                ),
                            ),
                            None => {
                                otherwise[s] = Some(r.name.get_ref());
                                otherwise_spans.push((s, span, field.clone()));
                            }
                        }
                    }
                    Some(Selection::Otherwise)
                }
                (Some(when), false) => source.and_then(|s| {
                    has_when[s] = true;
                    match Predicate::compile(when.get_ref(), &sources[s].schema) {
                        Ok(predicate) => Some(Selection::When(predicate)),
                        Err(e) => {
                            self.error(when.span(), format!("{field}.when"), e.to_string());
                            None
                        }
                    }
                }),
                (None, false) => Some(Selection::Every),
            };
            let projection = match (&r.select, source) {
                (Some(select), Some(s)) => {
                    self.projection(select, &sources[s].schema, &format!("{field}.select"))
                }
                _ => None,
            };
            if let (Some(source), Some(select), true) =
                (source, select, self.errors.len() == errors_before)
            {
                routes.push(RouteSpec {
                    name: r.name.get_ref().clone(),
                    source,
                    select,
                    projection,
                    sinks,
                });
            }
        }
        for (s, span, field) in otherwise_spans {
            if !has_when[s] {
                self.error(
                    span,
                    format!("{field}.otherwise"),
                    format!(
                        "source `{}` has no route with `when`, so this route would take every \
                         event: drop `otherwise`",
                        sources[s].name
                    ),
                );
            }
        }
        routes
    }

    /// The columns `select` computes, each a CEL expression over the fields of `schema`, at
    /// `field`.
    fn projection(
        &mut self,
        select: &Spanned<IndexMap<String, raw::Text>>,
        schema: &Schema,
        field: &str,
    ) -> Option<Vec<(String, Expression)>> {
        if select.get_ref().is_empty() {
            self.error(
                select.span(),
                field.to_string(),
                "name at least one column, e.g. select = { doubled = \"amount * 2\" }",
            );
        }
        let mut columns = Vec::new();
        for (name, text) in select.get_ref() {
            match Expression::compile_in(text.get_ref(), schema) {
                Ok(value) => columns.push((name.clone(), value)),
                Err(e) => self.error(text.span(), format!("{field}.{name}"), e.to_string()),
            }
        }
        Some(columns)
    }
}
