//! Validation of `[[enrich]]` sections: a source's events joined with the row of a view for
//! their key, as of each event's time, written with the chosen view columns added.

use toml::Spanned;

use super::outputs::Names;
use super::{Checker, SourceSpec, ViewSpec, raw};

/// An enrichment: the events of a source, each with columns of one view row added.
#[derive(Clone, Debug)]
pub struct EnrichSpec {
    /// Its name (the `eddy.output` header of its Kafka messages).
    pub name: String,
    /// The source index.
    pub source: usize,
    /// The index of the view in [`super::Job::views`].
    pub view: usize,
    /// The record index of the field whose value (as text) is the view key.
    pub key: usize,
    /// The view's column indexes added to each event, in output order.
    pub added: Vec<usize>,
    /// Drop events whose key has no row instead of adding null columns.
    pub inner: bool,
    /// Sink indexes.
    pub sinks: Vec<usize>,
    /// The output columns: the source's fields, then the added columns' names.
    pub columns: Vec<String>,
}

impl Checker<'_> {
    pub(super) fn enrich(
        &mut self,
        sections: &[Spanned<raw::EnrichSection>],
        names: &Names,
        sources: &[SourceSpec],
        views: &[ViewSpec],
    ) -> Vec<EnrichSpec> {
        let mut specs = Vec::new();
        for (i, e) in sections.iter().enumerate() {
            let e = e.get_ref();
            let field = format!("enrich[{i}]");
            let errors_before = self.errors.len();
            let source = self.source_index(names, &e.source, format!("{field}.source"));
            let view = views.iter().position(|v| v.name == *e.view.get_ref());
            if view.is_none() {
                self.error(
                    e.view.span(),
                    format!("{field}.view"),
                    format!("no view named `{}`", e.view.get_ref()),
                );
            }
            let sinks = self.sink_indexes(names, &e.sinks, format!("{field}.sinks"));
            if e.sinks.is_empty() {
                self.error(
                    e.name.span(),
                    format!("{field}.sinks"),
                    "the events go nowhere: name at least one sink",
                );
            }
            if e.columns.get_ref().is_empty() {
                self.error(
                    e.columns.span(),
                    format!("{field}.columns"),
                    "add at least one view column",
                );
            }
            let Some(source) = source else { continue };
            let schema = &sources[source].schema;
            let key = schema.index_of(e.key.get_ref());
            if key.is_none() {
                self.error(
                    e.key.span(),
                    format!("{field}.key"),
                    format!(
                        "`{}` is not a field of source `{}`",
                        e.key.get_ref(),
                        sources[source].name
                    ),
                );
            }
            let mut columns: Vec<String> =
                schema.fields().iter().map(|f| f.name.to_string()).collect();
            let mut added = Vec::new();
            for (output, column) in e.columns.get_ref() {
                let at = format!("{field}.columns.{output}");
                if columns.contains(output) {
                    self.error(
                        column.span(),
                        at.clone(),
                        format!(
                            "`{output}` is already a field of source `{}`: name the added \
                             column otherwise",
                            sources[source].name
                        ),
                    );
                }
                columns.push(output.clone());
                let Some(view) = view.map(|v| &views[v]) else {
                    continue;
                };
                match view.columns.iter().position(|c| c == column.get_ref()) {
                    Some(index) => added.push(index),
                    None => self.error(
                        column.span(),
                        at,
                        format!(
                            "view `{}` has no column `{}`: it has {}",
                            view.name,
                            column.get_ref(),
                            view.columns.join(", ")
                        ),
                    ),
                }
            }
            if let (Some(view), Some(key), true) = (view, key, self.errors.len() == errors_before) {
                specs.push(EnrichSpec {
                    name: e.name.get_ref().clone(),
                    source,
                    view,
                    key,
                    added,
                    inner: e.inner.as_ref().is_some_and(|inner| *inner.get_ref()),
                    sinks,
                    columns,
                });
            }
        }
        specs
    }
}
