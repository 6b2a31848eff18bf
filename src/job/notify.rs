//! Notify sinks in the job file: what feeds each and where its outcomes go (the adapter's own
//! settings are the sink kind's, in [`crate::sinks::notify::settings`]).

use super::outputs::Names;
use super::{Checker, SinkSpec, SourceSpec, raw};
use crate::record::FieldType;
use crate::sinks::notify::request::{REQUIRED_FIELDS, RequestFields};
use crate::sinks::{SinkKind, SinkSettings};

/// A notify sink, the source of its requests and the sink of its outcomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotifySpec {
    /// The notify sink's index.
    pub sink: usize,
    /// The source index of the notification requests.
    pub source: usize,
    /// The sink index of the outcome events.
    pub outcomes: usize,
}

impl Checker<'_> {
    /// Wires each notify sink to the source of its requests and the sink of its outcomes.
    pub(super) fn notifications(
        &mut self,
        file: &raw::JobFile,
        names: &Names,
        sinks: &[SinkSpec],
        sources: &[SourceSpec],
    ) -> Vec<NotifySpec> {
        let mut notifications = Vec::new();
        for (sink, spec) in sinks.iter().enumerate() {
            let i = names.section_of_sink(sink);
            let section = file.sinks[i].get_ref();
            let (SinkKind::Notify(_), SinkSettings::Notify(raw)) =
                (&spec.kind, section.kind.get_ref())
            else {
                continue;
            };
            let kind = section.kind.span();
            let field = format!("sinks[{i}]");
            let source = match &raw.source {
                None => {
                    self.error(
                        kind.clone(),
                        format!("{field}.source"),
                        "a notify sink needs the `source` of its notification requests",
                    );
                    None
                }
                Some(name) => {
                    let found = self.source_index(names, name, format!("{field}.source"));
                    if let Some(found) = found {
                        self.request_schema(&sources[found], name, &field);
                    }
                    found
                }
            };
            let outcomes = match &raw.outcomes {
                None => {
                    self.error(
                        kind,
                        format!("{field}.outcomes"),
                        "a notify sink needs an `outcomes` sink for NotificationSent and \
                         NotificationFailed events",
                    );
                    None
                }
                Some(name) => {
                    let found = self.sink_index(names, name, format!("{field}.outcomes"));
                    match found.map(|o| &sinks[o]) {
                        None => {}
                        Some(out) if matches!(out.kind, SinkKind::Notify(_)) => self.error(
                            name.span(),
                            format!("{field}.outcomes"),
                            format!("`{}` is a notify sink: name a kafka or file sink", out.name),
                        ),
                        Some(out) if out.columns.is_some() || out.key.is_some() => self.error(
                            name.span(),
                            format!("{field}.outcomes"),
                            format!(
                                "outcome events are JSON keyed by request id: sink `{}` must \
                                 not set `columns` or `key`",
                                out.name
                            ),
                        ),
                        Some(_) => {}
                    }
                    found
                }
            };
            if let (Some(source), Some(outcomes)) = (source, outcomes) {
                notifications.push(NotifySpec {
                    sink,
                    source,
                    outcomes,
                });
            }
        }
        notifications
    }

    /// The source of notification requests must have their fields, as strings.
    fn request_schema(&mut self, source: &SourceSpec, name: &raw::Text, field: &str) {
        if let Err(message) = RequestFields::new(&source.schema) {
            self.error(name.span(), format!("{field}.source"), message);
            return;
        }
        for f in source.schema.fields() {
            let wanted = REQUIRED_FIELDS.contains(&f.name.as_str()) || f.name == "subject";
            if wanted && f.ty != FieldType::String {
                self.error(
                    name.span(),
                    format!("{field}.source"),
                    format!(
                        "field `{}` of source `{}` must be a string",
                        f.name, source.name
                    ),
                );
            }
        }
    }
}
