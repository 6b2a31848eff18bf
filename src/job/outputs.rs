//! How the computing sections connect: names of sources and sinks resolved to indexes, and what
//! each sink is given (its columns, and a file's single writer).

use std::collections::HashMap;

use toml::Spanned;

use super::{
    ALERT_COLUMNS, Checker, CommandsSpec, EnrichSpec, FraudSpec, MetricSpec, NotifySpec,
    OrchestratorSpec, REQUEST_COLUMNS, RouteSpec, SinkSpec, SourceSpec, raw,
};
use crate::sinks::topic::TopicTemplate;
use crate::sinks::{SinkKind, SinkSettings};

/// The indexes of the sources and sinks that validated, by name.
pub(super) struct Names {
    sources: HashMap<String, usize>,
    sinks: HashMap<String, usize>,
    /// The section index of each sink.
    sink_sections: Vec<usize>,
}

impl Names {
    /// The names of `sources` and `sinks`, each sink from the section of the same index in
    /// `sink_sections`.
    pub(super) fn new(
        sources: &[SourceSpec],
        sinks: &[SinkSpec],
        sink_sections: Vec<usize>,
    ) -> Self {
        let index = |names: &mut dyn Iterator<Item = &String>| {
            let mut map = HashMap::new();
            for (i, name) in names.enumerate() {
                map.entry(name.clone()).or_insert(i);
            }
            map
        };
        Names {
            sources: index(&mut sources.iter().map(|s| &s.name)),
            sinks: index(&mut sinks.iter().map(|s| &s.name)),
            sink_sections,
        }
    }

    /// The index in the file's `[[sinks]]` of the section of sink `sink`.
    pub(super) fn section_of_sink(&self, sink: usize) -> usize {
        self.sink_sections[sink]
    }
}

/// Where a computing section reads and writes.
pub(super) struct Wiring {
    /// The source index.
    pub source: usize,
    /// Sink indexes for the results.
    pub sinks: Vec<usize>,
    /// Sink index for late events.
    pub late_sink: Option<usize>,
}

impl Checker<'_> {
    /// The index of the source `name` names, or an error at `field`.
    pub(super) fn source_index(
        &mut self,
        names: &Names,
        name: &raw::Text,
        field: String,
    ) -> Option<usize> {
        self.lookup(&names.sources, "source", name, field)
    }

    /// The index of the sink `name` names, or an error at `field`.
    pub(super) fn sink_index(
        &mut self,
        names: &Names,
        name: &raw::Text,
        field: String,
    ) -> Option<usize> {
        self.lookup(&names.sinks, "sink", name, field)
    }

    fn lookup(
        &mut self,
        names: &HashMap<String, usize>,
        what: &str,
        name: &raw::Text,
        field: String,
    ) -> Option<usize> {
        let found = names.get(name.get_ref()).copied();
        if found.is_none() {
            self.error(
                name.span(),
                field,
                format!("no {what} named `{}`", name.get_ref()),
            );
        }
        found
    }

    /// The sink indexes of `sinks`, each unknown one reported at `field`.
    pub(super) fn sink_indexes(
        &mut self,
        names: &Names,
        sinks: &[raw::Text],
        field: String,
    ) -> Vec<usize> {
        sinks
            .iter()
            .filter_map(|s| self.sink_index(names, s, field.clone()))
            .collect()
    }

    /// Validates each section of `sections` (the array `key` of the file) with `build`, given
    /// its field path and its wiring; sections whose source is unknown are reported and left
    /// out.
    pub(super) fn each<S: raw::Output, T>(
        &mut self,
        sections: &[Spanned<S>],
        key: &str,
        names: &Names,
        mut build: impl FnMut(&mut Self, &S, &str, Wiring) -> Option<T>,
    ) -> Vec<T> {
        let mut specs = Vec::new();
        for (i, section) in sections.iter().enumerate() {
            let section = section.get_ref();
            let field = format!("{key}[{i}]");
            let source = self.source_index(names, section.source(), format!("{field}.source"));
            let sinks = self.sink_indexes(names, section.sinks(), format!("{field}.sinks"));
            let late_sink = section
                .late_sink()
                .and_then(|s| self.sink_index(names, s, format!("{field}.late_sink")));
            if let Some(source) = source {
                let wiring = Wiring {
                    source,
                    sinks,
                    late_sink,
                };
                specs.extend(build(self, section, &field, wiring));
            }
        }
        specs
    }

    /// A job must compute something.
    pub(super) fn computes_something(&mut self, file: &raw::JobFile) {
        if file.metrics.is_empty()
            && file.fraud.is_empty()
            && file.commands.is_empty()
            && file.orchestrators.is_empty()
            && file.routes.is_empty()
            && file.views.is_empty()
            && file.enrich.is_empty()
            && !file
                .sinks
                .iter()
                .any(|s| matches!(s.get_ref().kind.get_ref(), SinkSettings::Notify(_)))
        {
            self.error(
                file.job.span(),
                "metrics",
                "the job computes nothing: add a [[metrics]], [[fraud]], [[commands]], \
                 [[orchestrators]], [[routes]], [[views]] or [[enrich]] section, or a notify \
                 sink",
            );
        }
    }
}

/// Everything a job computes, for checking what its sinks are given.
#[derive(Clone, Copy)]
pub(super) struct Outputs<'a> {
    pub metrics: &'a [MetricSpec],
    pub fraud: &'a [FraudSpec],
    pub commands: &'a [CommandsSpec],
    pub orchestrators: &'a [OrchestratorSpec],
    pub routes: &'a [RouteSpec],
    pub enrich: &'a [EnrichSpec],
}

/// One output of the job: what it is, its columns, its sinks, and its late sink with the late
/// events' columns.
struct Writer<'a> {
    what: String,
    columns: Vec<String>,
    sinks: &'a [usize],
    late: Option<(usize, Vec<String>)>,
    source: usize,
}

impl<'a> Outputs<'a> {
    /// Every output, as a [`Writer`].
    fn writers(&self, sources: &[SourceSpec]) -> Vec<Writer<'a>> {
        let names = |columns: &[&str]| columns.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        let schema_columns = |source: usize| -> Vec<String> {
            let fields = sources[source].schema.fields();
            fields.iter().map(|f| f.name.to_string()).collect()
        };
        let plain = |what: String, columns, sinks, source| Writer {
            what,
            columns,
            sinks,
            late: None,
            source,
        };
        let mut all = Vec::new();
        for m in self.metrics {
            all.push(Writer {
                late: m.late_sink.map(|s| (s, schema_columns(m.source))),
                ..plain(
                    format!("metric `{}`", m.name),
                    m.columns.clone(),
                    &m.sinks,
                    m.source,
                )
            });
        }
        for f in self.fraud {
            let late_columns = f.late_columns(&sources[f.source].schema);
            all.push(Writer {
                late: f.late_sink.map(|s| (s, late_columns)),
                ..plain(
                    format!("fraud `{}`", f.name),
                    names(&ALERT_COLUMNS),
                    &f.sinks,
                    f.source,
                )
            });
        }
        for c in self.commands {
            let what = format!("commands `{}`", c.name);
            all.push(plain(what, c.columns.clone(), &c.sinks, c.source));
        }
        for r in self.routes {
            let what = format!("route `{}`", r.name);
            let columns = r.columns(&sources[r.source].schema);
            all.push(plain(what, columns, &r.sinks, r.source));
        }
        for e in self.enrich {
            let what = format!("enrichment `{}`", e.name);
            all.push(plain(what, e.columns.clone(), &e.sinks, e.source));
        }
        for o in self.orchestrators {
            let what = format!("orchestrator `{}`", o.name);
            let source = o.events.source;
            all.push(plain(what, names(&REQUEST_COLUMNS), &o.sinks, source));
        }
        all
    }
}

impl Checker<'_> {
    /// Sinks may only name columns their inputs have; a file is written by one output only; a
    /// notify sink takes notification requests from its source only.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn check_sink_columns(
        &mut self,
        file: &raw::JobFile,
        names: &Names,
        sinks: &[SinkSpec],
        outputs: &Outputs,
        sources: &[SourceSpec],
        dead_letter: Option<usize>,
        notifications: &[NotifySpec],
    ) {
        let mut writers = vec![Vec::<String>::new(); sinks.len()];
        for n in notifications {
            writers[n.outcomes].push(format!("the outcomes of `{}`", sinks[n.sink].name));
        }
        let section = |s: usize| {
            (
                names.section_of_sink(s),
                &file.sinks[names.section_of_sink(s)],
            )
        };
        for w in outputs.writers(sources) {
            for &s in w.sinks {
                writers[s].push(w.what.clone());
                let (i, raw) = section(s);
                self.check_columns(
                    i,
                    raw,
                    &sinks[s],
                    &w.columns,
                    &format!("the results of {}", w.what),
                );
            }
            if let Some((s, late_columns)) = w.late {
                writers[s].push(format!("the late events of {}", w.what));
                let (i, raw) = section(s);
                self.check_columns(
                    i,
                    raw,
                    &sinks[s],
                    &late_columns,
                    &format!("the late events of `{}`", sources[w.source].name),
                );
            }
        }
        if let Some(s) = dead_letter {
            writers[s].push("dead letters".into());
            let (i, raw) = section(s);
            self.check_columns(i, raw, &sinks[s], &[], "dead letters");
        }
        for (s, (sink, writers)) in sinks.iter().zip(&writers).enumerate() {
            let (i, raw) = section(s);
            let span = raw.span();
            if matches!(sink.kind, SinkKind::Notify(_)) && !writers.is_empty() {
                self.error(
                    span.clone(),
                    format!("sinks[{i}]"),
                    format!(
                        "a notify sink takes notification requests from its `source`, but {} \
                         write to it",
                        writers.join(" and ")
                    ),
                );
            }
            if matches!(sink.kind, SinkKind::File(_)) && writers.len() > 1 {
                self.error(
                    span,
                    format!("sinks[{i}]"),
                    format!(
                        "a file sink takes one output, but {} write to it",
                        writers.join(" and ")
                    ),
                );
            }
        }
    }

    /// The columns, key, order and topic placeholders that the section `i`, `raw`, of `sink`
    /// names must be among `available`, the columns of `what`.
    fn check_columns(
        &mut self,
        i: usize,
        raw: &Spanned<raw::SinkSection>,
        sink: &SinkSpec,
        available: &[String],
        what: &str,
    ) {
        let kind = raw.get_ref().kind.get_ref();
        let rows = kind.rows();
        let listed = match available {
            [] => "they have none".to_string(),
            _ => available.join(", "),
        };
        let named = rows
            .columns
            .iter()
            .flat_map(|c| c.get_ref().iter())
            .chain(rows.key)
            .chain(rows.order_by);
        for column in named {
            if !available.contains(column.get_ref()) {
                self.error(
                    column.span(),
                    format!("sinks[{i}]"),
                    format!("`{}` is not a column of {what}: {listed}", column.get_ref()),
                );
            }
        }
        if let (SinkKind::Kafka(config), SinkSettings::Kafka(k)) = (&sink.kind, kind)
            && let Some(span) = k.topic.as_ref().map(Spanned::span)
        {
            let placeholders = TopicTemplate::parse(&config.topic)
                .map_or(Vec::new(), |t| t.columns().map(str::to_string).collect());
            for column in placeholders.iter().filter(|c| !available.contains(c)) {
                self.error(
                    span.clone(),
                    format!("sinks[{i}].topic"),
                    format!("`{{{column}}}` is not a column of {what}: {listed}"),
                );
            }
        }
    }
}
