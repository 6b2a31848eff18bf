//! Validation of `[[sinks]]`: how each encodes rows, and, through its kind's
//! [`Settings`](crate::sinks::Settings), where it writes.

use toml::Spanned;

use super::{Checker, raw};
use crate::sinks::SinkKind;
use crate::sinks::format::Format;

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
        let kind = s.kind.get_ref().check(self, s.kind.span(), field)?;
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
