//! Validation of `[[sinks]]`: where each writes, and how it encodes rows.

use toml::Spanned;

use super::{Checker, raw};
use crate::sinks::SinkKind;
use crate::sinks::discard::DiscardSink;
use crate::sinks::file::FileTarget;
use crate::sinks::format::Format;
use crate::sinks::kafka::KafkaSinkConfig;
use crate::sinks::topic::TopicTemplate;

/// A sink.
#[derive(Clone, Debug)]
pub struct SinkSpec {
    /// Its name.
    pub name: String,
    /// Where it writes.
    pub kind: SinkKind,
    /// How rows are encoded.
    pub format: Format,
    /// The column used as message key.
    pub key: Option<String>,
    /// The columns written (all, when `None`).
    pub columns: Option<Vec<String>>,
    /// For file sinks of bounded jobs: write everything at the end, sorted by these columns.
    pub order_by: Vec<String>,
}

impl Checker<'_> {
    /// The sinks that validate, each with the index of its section.
    pub(super) fn sinks(
        &mut self,
        sections: &[Spanned<raw::SinkSection>],
    ) -> Vec<(usize, SinkSpec)> {
        sections
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i, self.sink(s.get_ref(), &format!("sinks[{i}]"))?)))
            .collect()
    }

    fn sink(&mut self, s: &raw::SinkSection, field: &str) -> Option<SinkSpec> {
        let rows = s.kind.get_ref().rows();
        let format = match rows.format.map(|f| f.get_ref().as_str()) {
            None | Some("json") => Format::Json,
            Some("csv") => Format::Csv,
            Some(other) => {
                let span = rows.format.expect("matched").span();
                self.error(
                    span,
                    format!("{field}.format"),
                    format!("unknown format `{other}`: expected json or csv"),
                );
                Format::Json
            }
        };
        let kind_span = s.kind.span();
        let kind = match s.kind.get_ref() {
            raw::SinkKind::Kafka(k) => {
                let properties =
                    self.kafka_properties(kind_span.clone(), &k.brokers, &k.properties, field);
                let topic = match &k.topic {
                    Some(t) => {
                        let topic = t.get_ref().clone();
                        if let Err(message) = TopicTemplate::parse(&topic) {
                            self.error(t.span(), format!("{field}.topic"), message);
                        }
                        topic
                    }
                    None => {
                        self.error(
                            kind_span,
                            format!("{field}.topic"),
                            "a kafka sink needs a `topic`",
                        );
                        String::new()
                    }
                };
                SinkKind::Kafka(KafkaSinkConfig { properties, topic })
            }
            raw::SinkKind::File(f) => match &f.path {
                Some(p) => SinkKind::File(FileTarget::Path(self.path(p, format!("{field}.path")))),
                None => {
                    self.error(
                        kind_span,
                        format!("{field}.path"),
                        "a file sink needs a `path`",
                    );
                    return None;
                }
            },
            raw::SinkKind::Stdout(_) => SinkKind::File(FileTarget::Stdout),
            raw::SinkKind::Notify(n) => SinkKind::Notify(self.notify_config(n, kind_span, field)),
            raw::SinkKind::Discard(_) => SinkKind::Discard(DiscardSink),
        };
        let names = |columns: &[raw::Text]| columns.iter().map(|c| c.get_ref().clone()).collect();
        Some(SinkSpec {
            name: s.name.get_ref().clone(),
            kind,
            format,
            key: rows.key.map(|k| k.get_ref().clone()),
            columns: rows.columns.map(|c| names(c.get_ref())),
            order_by: names(rows.order_by),
        })
    }
}
