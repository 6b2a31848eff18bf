//! The job file (TOML): what a job reads, computes and writes, validated into plain data with
//! errors that name the file, the line and the field.

mod checkpoints;
mod engagement;
mod enrich;
mod fraud;
mod notify;
mod raw;
mod routes;
mod views;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use crate::operators::aggregate::AggregateKind;
use crate::operators::command::CommandProcessor;
use crate::operators::fraud::{
    AmountSpike, CardTesting, ImpossibleTravel, SmallThenLarge, Velocity,
};
use crate::operators::orchestrate::Orchestrator;
use crate::operators::window::WindowSpec;
use crate::record::{Field, FieldType, Schema, Value};
use crate::sinks::file::FileTarget;
use crate::sinks::format::Format;
use crate::sinks::kafka::KafkaSinkConfig;
use crate::sinks::notify::config::NotifyConfig;
use crate::sinks::topic::TopicTemplate;
use crate::sources::generator::{self, GeneratorConfig};
use crate::sources::incidents::FraudMix;

pub use checkpoints::CheckpointsSpec;
pub use enrich::EnrichSpec;
pub use routes::{RouteSpec, Selection};
pub use views::{ColumnValue, DEFAULT_LISTEN, ServerSpec, ViewColumn, ViewInput, ViewSpec};

/// A validated job.
#[derive(Clone, Debug)]
pub struct Job {
    /// The job's name.
    pub name: String,
    /// Timely timestamps are event-time frontiers truncated to this many milliseconds.
    pub tick: u64,
    /// How often sources commit processed positions.
    pub commit_interval: Duration,
    /// Where undecodable input goes (a sink index); `None`: standard error.
    pub dead_letter: Option<usize>,
    /// The sources.
    pub sources: Vec<SourceSpec>,
    /// The windowed metrics.
    pub metrics: Vec<MetricSpec>,
    /// The fraud detectors.
    pub fraud: Vec<FraudSpec>,
    /// The command processors.
    pub commands: Vec<CommandsSpec>,
    /// The orchestrators.
    pub orchestrators: Vec<OrchestratorSpec>,
    /// The routes.
    pub routes: Vec<RouteSpec>,
    /// The views, served over HTTP.
    pub views: Vec<ViewSpec>,
    /// The enrichments: events joined with view rows.
    pub enrich: Vec<EnrichSpec>,
    /// Where the views, metrics and health are served, if anywhere: jobs with `[server]` or
    /// views.
    pub server: Option<ServerSpec>,
    /// The sinks.
    pub sinks: Vec<SinkSpec>,
    /// The notify sinks, with what feeds them.
    pub notifications: Vec<NotifySpec>,
    /// Where and how often its state is checkpointed, if it is.
    pub checkpoints: Option<CheckpointsSpec>,
}

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

/// A source of events.
#[derive(Clone, Debug)]
pub struct SourceSpec {
    /// Its name, for metrics to refer to.
    pub name: String,
    /// Where events come from.
    pub kind: SourceKind,
    /// The fields read from each event and its event-time field.
    pub schema: Arc<Schema>,
    /// D, the allowed out-of-orderness of event time.
    pub out_of_orderness: Duration,
    /// When a silent partition stops holding the watermark back.
    pub idle_timeout: Option<Duration>,
    /// How far, in event time, a worker's share of the source may run ahead of the slowest
    /// worker's before it waits; `None`: no bound.
    pub max_drift: Option<Duration>,
    /// A longer record (a Kafka message, a line of a file) is not decoded but dead-lettered,
    /// and a file source reads past the rest of such a line without holding it.
    pub max_record_bytes: usize,
}

impl SourceSpec {
    /// `max_record_bytes` when the job does not set it: 1 MiB, as Kafka's default message size.
    pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;
    /// The largest `max_record_bytes` a job may set: 1 GiB.
    pub const MAX_RECORD_BYTES_LIMIT: usize = 1 << 30;
}

/// The kinds of source.
#[derive(Clone, Debug)]
pub enum SourceKind {
    /// Kafka topics; `properties` holds every librdkafka setting, brokers and group included.
    Kafka {
        /// librdkafka properties.
        properties: Vec<(String, String)>,
        /// The topics.
        topics: Vec<String>,
    },
    /// JSON-lines files, each cut into `splits` partitions of interleaved stripes.
    File {
        /// The files.
        paths: Vec<PathBuf>,
        /// Partitions per file.
        splits: usize,
    },
    /// The built-in transaction generator, as `partitions` independent streams.
    Generator {
        /// What it generates.
        config: GeneratorConfig,
        /// Partitions, dealt to the workers.
        partitions: u64,
    },
}

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
    /// (output name, function, record index of its field).
    pub aggregates: Vec<(String, AggregateKind, usize)>,
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

/// Fraud rules over a source of card payments, with their alerts' sinks.
#[derive(Clone, Debug)]
pub struct FraudSpec {
    /// Its name (part of every alert id).
    pub name: String,
    /// The source index.
    pub source: usize,
    /// Record indexes of the payment id, account, amount, merchant and country.
    pub fields: PaymentFields,
    /// Matches of one rule on one account within this long of a reported one are merged into it
    /// (ms).
    pub suppression: u64,
    /// Rule 1, when on.
    pub velocity: Option<Velocity>,
    /// Rule 2, when on.
    pub small_then_large: Option<SmallThenLarge>,
    /// Rule 3, when on.
    pub amount_spike: Option<AmountSpike>,
    /// Rule 4, when on.
    pub impossible_travel: Option<ImpossibleTravel>,
    /// Rule 5, when on.
    pub card_testing: Option<CardTesting>,
    /// Sink indexes for the alerts.
    pub sinks: Vec<usize>,
    /// Sink index for late payments.
    pub late_sink: Option<usize>,
}

impl FraudSpec {
    /// The columns of its late rows: the payment's fields and event time, by their names in
    /// `schema` (its source's).
    pub fn late_columns(&self, schema: &Schema) -> Vec<String> {
        let f = self.fields;
        [
            f.id,
            f.account,
            f.amount,
            f.merchant,
            f.country,
            schema.time_index(),
        ]
        .iter()
        .map(|&i| schema.fields()[i].name.to_string())
        .collect()
    }
}

/// Record indexes of the parts of a payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PaymentFields {
    /// The payment id (string or int).
    pub id: usize,
    /// The card account (int or string).
    pub account: usize,
    /// The amount in minor units (int).
    pub amount: usize,
    /// The merchant (string or int).
    pub merchant: usize,
    /// The country (string).
    pub country: usize,
}

/// The columns of an alert row.
pub const ALERT_COLUMNS: [&str; 6] = [
    "alert_id",
    "rule",
    "account_id",
    "time",
    "evidence",
    "detail",
];

/// A command processor: commands from a source become events (or rejections) on its sinks.
#[derive(Clone, Debug)]
pub struct CommandsSpec {
    /// Its name.
    pub name: String,
    /// The source index.
    pub source: usize,
    /// Record indexes of the command id, user id and command type.
    pub id: usize,
    /// See `id`.
    pub user: usize,
    /// See `id`.
    pub kind: usize,
    /// The command types and dedup span.
    pub processor: CommandProcessor,
    /// Record indexes of the fields carried into the events (all but id, user, type and time).
    pub payload: Vec<usize>,
    /// The output columns: [`EVENT_COLUMNS`], then the payload fields.
    pub columns: Vec<String>,
    /// Sink indexes for the events.
    pub sinks: Vec<usize>,
}

/// The first columns of a command processor's events.
pub const EVENT_COLUMNS: [&str; 6] = [
    "event_id",
    "event",
    "command_id",
    "user_id",
    "time",
    "reason",
];

/// An orchestrator: user events (and alerts) become notification requests on its sinks.
#[derive(Clone, Debug)]
pub struct OrchestratorSpec {
    /// Its name.
    pub name: String,
    /// The source of user events, and the record indexes of `event_id`, `user_id` and `event`.
    pub events: (usize, [usize; 3]),
    /// The source of fraud alerts, and the record indexes of `alert_id` and `account_id` (the
    /// card account is the user id).
    pub alerts: Option<(usize, [usize; 2])>,
    /// Contacts and reactions.
    pub orchestrator: Orchestrator,
    /// Sink indexes for the requests.
    pub sinks: Vec<usize>,
}

/// The columns of a notification request.
pub const REQUEST_COLUMNS: [&str; 9] = [
    "request_id",
    "event",
    "user_id",
    "channel",
    "to",
    "subject",
    "text",
    "cause",
    "time",
];

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

/// The kinds of sink.
#[derive(Clone, Debug)]
pub enum SinkKind {
    /// A Kafka topic.
    Kafka(KafkaSinkConfig),
    /// A file or standard output.
    File(FileTarget),
    /// A CPaaS, through the notification adapter.
    Notify(NotifyConfig),
    /// Nowhere: rows are dropped (for benchmarks and dry runs).
    Discard,
}

/// One problem in a job file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// The dotted path of the field, e.g. `metrics[0].window.size`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.path.display(),
            self.line,
            self.field,
            self.message
        )
    }
}

/// Every problem found in a job file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct JobErrors(pub Vec<JobError>);

impl fmt::Display for JobErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl Job {
    /// Reads and validates the job file at `path`.
    pub fn load(path: &Path) -> Result<Job, JobErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            JobErrors(vec![JobError {
                path: path.into(),
                line: 0,
                field: "(file)".into(),
                message: e.to_string(),
            }])
        })?;
        Job::parse(path, &text)
    }

    /// Validates job-file text, taking `${VAR}` from the environment; `path` locates relative
    /// paths and names the file in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Job, JobErrors> {
        Job::parse_with(path, text, &|name| std::env::var(name).ok())
    }

    /// Validates job-file text, taking `${VAR}` from `vars`.
    pub fn parse_with(
        path: &Path,
        text: &str,
        vars: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Job, JobErrors> {
        let mut check = Checker {
            path,
            text,
            vars,
            errors: Vec::new(),
        };
        match toml::from_str::<raw::JobFile>(text) {
            Ok(file) => {
                let job = check.job(file);
                if check.errors.is_empty() {
                    Ok(job)
                } else {
                    Err(JobErrors(check.errors))
                }
            }
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                let message = e.message().to_string();
                let field = field_of_parse_error(text, &span);
                check.error(span, field, message);
                Err(JobErrors(check.errors))
            }
        }
    }
}

/// The key a TOML parse error points at (the text of its line up to `=`), for the message.
fn field_of_parse_error(text: &str, span: &Range<usize>) -> String {
    let start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("");
    match line.split_once('=') {
        Some((key, _)) => key.trim().to_string(),
        None => line.trim().to_string(),
    }
}

/// Everything a job computes, for checking what its sinks are given.
#[derive(Clone, Copy)]
struct Outputs<'a> {
    metrics: &'a [MetricSpec],
    fraud: &'a [FraudSpec],
    commands: &'a [CommandsSpec],
    orchestrators: &'a [OrchestratorSpec],
    routes: &'a [RouteSpec],
    enrich: &'a [EnrichSpec],
}

/// Collects errors while turning the raw file into a [`Job`].
struct Checker<'a> {
    path: &'a Path,
    text: &'a str,
    vars: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<JobError>,
}

impl Checker<'_> {
    fn error(&mut self, span: Range<usize>, field: impl Into<String>, message: impl Into<String>) {
        let line = self.text[..span.start.min(self.text.len())]
            .matches('\n')
            .count()
            + 1;
        self.errors.push(JobError {
            path: self.path.into(),
            line,
            field: field.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, text: &Option<raw::Text>, field: String, default: Duration) -> Duration {
        let Some(text) = text else { return default };
        match text.get_ref().parse::<jiff::SignedDuration>() {
            Ok(d) if !d.is_negative() => d.unsigned_abs(),
            Ok(_) => {
                self.error(text.span(), field, "must not be negative");
                default
            }
            Err(e) => {
                self.error(
                    text.span(),
                    field,
                    format!(
                        "`{}` is not a duration such as \"2s\" or \"10ms\": {e}",
                        text.get_ref()
                    ),
                );
                default
            }
        }
    }

    fn millis(&mut self, text: &Option<raw::Text>, field: String) -> Option<u64> {
        let t = text.as_ref()?;
        let d = self
            .duration(text, field.clone(), Duration::ZERO)
            .as_millis() as u64;
        if d == 0 {
            self.error(t.span(), field, "must be at least 1ms");
            return None;
        }
        Some(d)
    }

    fn positive(&mut self, value: &Option<Spanned<i64>>, field: String, default: u64) -> u64 {
        match value {
            None => default,
            Some(v) if *v.get_ref() > 0 => *v.get_ref() as u64,
            Some(v) => {
                self.error(v.span(), field, "must be a positive integer");
                default
            }
        }
    }

    /// Substitutes `${VAR}` from the environment.
    fn expand(&mut self, text: &raw::Text, field: String) -> String {
        let mut out = String::new();
        let mut rest = text.get_ref().as_str();
        while let Some(at) = rest.find("${") {
            out.push_str(&rest[..at]);
            let Some(end) = rest[at..].find('}') else {
                self.error(text.span(), field, "unclosed `${`");
                return out;
            };
            let name = &rest[at + 2..at + end];
            match (self.vars)(name) {
                Some(v) => out.push_str(&v),
                None => {
                    self.error(
                        text.span(),
                        field.clone(),
                        format!("environment variable `{name}` is not set"),
                    );
                }
            }
            rest = &rest[at + end + 1..];
        }
        out.push_str(rest);
        out
    }

    /// The librdkafka properties of a Kafka source or sink: `bootstrap.servers` from `brokers`,
    /// then its `properties` verbatim, with `${VAR}` expanded.
    fn kafka_properties(
        &mut self,
        kind: &raw::Text,
        brokers: &Option<raw::Text>,
        properties: &indexmap::IndexMap<String, raw::Text>,
        field: &str,
    ) -> Vec<(String, String)> {
        let mut all = Vec::new();
        match brokers {
            Some(b) => all.push((
                "bootstrap.servers".into(),
                self.expand(b, format!("{field}.brokers")),
            )),
            None => self.error(
                kind.span(),
                format!("{field}.brokers"),
                "a kafka source or sink needs `brokers`",
            ),
        }
        for (k, v) in properties {
            let value = self.expand(v, format!("{field}.properties.{k}"));
            all.push((k.clone(), value));
        }
        all
    }

    fn job(&mut self, file: raw::JobFile) -> Job {
        let section = file.job.get_ref();
        let tick = self.millis(&section.tick, "job.tick".into()).unwrap_or(10);
        let commit_interval = self.duration(
            &section.commit_interval,
            "job.commit_interval".into(),
            Duration::from_secs(1),
        );
        let sinks: Vec<SinkSpec> = file
            .sinks
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.sink(s.get_ref(), i))
            .collect();
        let sources: Vec<SourceSpec> = file
            .sources
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.source(s.get_ref(), i))
            .collect();
        let sink_index = |this: &mut Self, name: &raw::Text, field: String| {
            let found = sinks.iter().position(|s| s.name == *name.get_ref());
            if found.is_none() {
                this.error(
                    name.span(),
                    field,
                    format!("no sink named `{}`", name.get_ref()),
                );
            }
            found
        };
        let dead_letter = section
            .dead_letter
            .as_ref()
            .and_then(|name| sink_index(self, name, "job.dead_letter".into()));
        let mut metrics = Vec::new();
        for (i, m) in file.metrics.iter().enumerate() {
            let m = m.get_ref();
            let field = format!("metrics[{i}]");
            let Some(source) = self.source_index(&sources, &m.source, format!("{field}.source"))
            else {
                continue;
            };
            let sinks_of = m
                .sinks
                .iter()
                .filter_map(|s| sink_index(self, s, format!("{field}.sinks")))
                .collect();
            let late_sink = m
                .late_sink
                .as_ref()
                .and_then(|s| sink_index(self, s, format!("{field}.late_sink")));
            if let Some(metric) = self.metric(
                m,
                &field,
                source,
                &sources[source].schema,
                sinks_of,
                late_sink,
            ) {
                metrics.push(metric);
            }
        }
        let mut fraud = Vec::new();
        for (i, f) in file.fraud.iter().enumerate() {
            let f = f.get_ref();
            let field = format!("fraud[{i}]");
            let Some(source) = self.source_index(&sources, &f.source, format!("{field}.source"))
            else {
                continue;
            };
            let sinks_of = f
                .sinks
                .iter()
                .filter_map(|s| sink_index(self, s, format!("{field}.sinks")))
                .collect();
            let late_sink = f
                .late_sink
                .as_ref()
                .and_then(|s| sink_index(self, s, format!("{field}.late_sink")));
            if let Some(spec) = self.fraud(
                f,
                &field,
                source,
                &sources[source].schema,
                sinks_of,
                late_sink,
            ) {
                fraud.push(spec);
            }
        }
        let mut commands = Vec::new();
        for (i, c) in file.commands.iter().enumerate() {
            let c = c.get_ref();
            let field = format!("commands[{i}]");
            let source = self.source_index(&sources, &c.source, format!("{field}.source"));
            let sinks_of = c
                .sinks
                .iter()
                .filter_map(|s| sink_index(self, s, format!("{field}.sinks")))
                .collect();
            if let Some(source) = source
                && let Some(spec) =
                    self.commands(c, &field, source, &sources[source].schema, sinks_of)
            {
                commands.push(spec);
            }
        }
        let mut orchestrators = Vec::new();
        for (i, o) in file.orchestrators.iter().enumerate() {
            let o = o.get_ref();
            let field = format!("orchestrators[{i}]");
            let events = self.source_index(&sources, &o.events, format!("{field}.events"));
            let alerts = o
                .alerts
                .as_ref()
                .map(|a| self.source_index(&sources, a, format!("{field}.alerts")));
            let sinks_of = o
                .sinks
                .iter()
                .filter_map(|s| sink_index(self, s, format!("{field}.sinks")))
                .collect();
            if let (Some(events), Some(alerts)) = (events, alerts.unwrap_or(Some(usize::MAX)))
                && let Some(spec) = self.orchestrator(
                    o,
                    &field,
                    events,
                    (alerts != usize::MAX).then_some(alerts),
                    &sources,
                    sinks_of,
                )
            {
                orchestrators.push(spec);
            }
        }
        let notifications = self.notifications(&file, &sinks, &sources);
        let routes = self.routes(&file.routes, &sources, &sink_index);
        let views = self.views(&file.views, &sources);
        let enrich = self.enrich(&file.enrich, &sources, &views, &sink_index);
        let server = self.server(&file.server, &views);
        let checkpoints = self.checkpoints(&file.checkpoints);
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
                .any(|s| s.get_ref().kind.get_ref() == "notify")
        {
            self.error(
                file.job.span(),
                "metrics",
                "the job computes nothing: add a [[metrics]], [[fraud]], [[commands]], \
                 [[orchestrators]], [[routes]], [[views]] or [[enrich]] section, or a notify \
                 sink",
            );
        }
        let outputs = Outputs {
            metrics: &metrics,
            fraud: &fraud,
            commands: &commands,
            orchestrators: &orchestrators,
            routes: &routes,
            enrich: &enrich,
        };
        self.check_sink_columns(
            &file,
            &sinks,
            &outputs,
            &sources,
            dead_letter,
            &notifications,
        );
        Job {
            name: section.name.get_ref().clone(),
            tick,
            commit_interval,
            dead_letter,
            sources,
            metrics,
            fraud,
            commands,
            orchestrators,
            routes,
            views,
            enrich,
            server,
            sinks,
            notifications,
            checkpoints,
        }
    }

    /// The index of the source `name` names, or an error at `field`.
    fn source_index(
        &mut self,
        sources: &[SourceSpec],
        name: &raw::Text,
        field: String,
    ) -> Option<usize> {
        let found = sources.iter().position(|s| s.name == *name.get_ref());
        if found.is_none() {
            self.error(
                name.span(),
                field,
                format!("no source named `{}`", name.get_ref()),
            );
        }
        found
    }

    fn source(&mut self, s: &raw::SourceSection, i: usize) -> Option<SourceSpec> {
        let field = format!("sources[{i}]");
        if let Some(format) = &s.format
            && format.get_ref() != "json"
        {
            self.error(
                format.span(),
                format!("{field}.format"),
                "only `json` is supported",
            );
        }
        let mut fields = Vec::new();
        for (name, written_ty) in s.schema.get_ref() {
            let span = written_ty.span();
            // `type?`: the field may be absent or null.
            let (written, required) = match written_ty.get_ref().strip_suffix('?') {
                Some(base) => (base, false),
                None => (written_ty.get_ref().as_str(), true),
            };
            let ty = match written {
                "int" => FieldType::Int,
                "float" => FieldType::Float,
                "string" => FieldType::String,
                "bool" => FieldType::Bool,
                "timestamp" => FieldType::Timestamp,
                other => {
                    self.error(
                        span.clone(),
                        format!("{field}.schema.{name}"),
                        format!(
                            "unknown type `{other}`: expected int, float, string, bool or \
                             timestamp, with `?` if the field may be absent"
                        ),
                    );
                    continue;
                }
            };
            if !required && *name == *s.event_time.get_ref() {
                self.error(
                    span.clone(),
                    format!("{field}.schema.{name}"),
                    "the event-time field cannot be optional",
                );
            }
            fields.push(Field {
                name: name.as_str().into(),
                ty,
                required,
            });
        }
        let schema = match Schema::new(fields, s.event_time.get_ref()) {
            Ok(schema) => Arc::new(schema),
            Err(message) => {
                self.error(s.event_time.span(), format!("{field}.event_time"), message);
                return None;
            }
        };
        let out_of_orderness = self.duration(
            &s.out_of_orderness,
            format!("{field}.out_of_orderness"),
            Duration::ZERO,
        );
        let idle_timeout = s.idle_timeout.as_ref().map(|_| {
            self.duration(
                &s.idle_timeout,
                format!("{field}.idle_timeout"),
                Duration::ZERO,
            )
        });
        let max_drift = s
            .max_drift
            .as_ref()
            .map(|_| self.duration(&s.max_drift, format!("{field}.max_drift"), Duration::ZERO));
        let max_record_bytes = match &s.max_record_bytes {
            None => SourceSpec::DEFAULT_MAX_RECORD_BYTES,
            Some(n) => match usize::try_from(*n.get_ref()) {
                Ok(n @ 1..=SourceSpec::MAX_RECORD_BYTES_LIMIT) => n,
                _ => {
                    self.error(
                        n.span(),
                        format!("{field}.max_record_bytes"),
                        format!(
                            "must be a byte count from 1 to {} (1 GiB)",
                            SourceSpec::MAX_RECORD_BYTES_LIMIT
                        ),
                    );
                    SourceSpec::DEFAULT_MAX_RECORD_BYTES
                }
            },
        };
        let kind = match s.kind.get_ref().as_str() {
            "kafka" => {
                let mut properties =
                    self.kafka_properties(&s.kind, &s.brokers, &s.properties, &field);
                match &s.group {
                    Some(g) => properties.push(("group.id".into(), g.get_ref().clone())),
                    None => self.error(
                        s.kind.span(),
                        format!("{field}.group"),
                        "a kafka source needs a consumer `group`",
                    ),
                }
                let topics = match &s.topics {
                    Some(t) if !t.get_ref().is_empty() => {
                        t.get_ref().iter().map(|t| t.get_ref().clone()).collect()
                    }
                    _ => {
                        self.error(
                            s.kind.span(),
                            format!("{field}.topics"),
                            "a kafka source needs at least one topic",
                        );
                        Vec::new()
                    }
                };
                SourceKind::Kafka { properties, topics }
            }
            "file" => {
                let paths = match &s.paths {
                    Some(p) if !p.get_ref().is_empty() => {
                        let field = format!("{field}.paths");
                        p.get_ref()
                            .iter()
                            .map(|p| {
                                let path = self.expand(p, field.clone());
                                self.relative(&path)
                            })
                            .collect()
                    }
                    _ => {
                        self.error(
                            s.kind.span(),
                            format!("{field}.paths"),
                            "a file source needs at least one path",
                        );
                        Vec::new()
                    }
                };
                let splits = self.positive(&s.splits, format!("{field}.splits"), 1) as usize;
                SourceKind::File { paths, splits }
            }
            "generator" => {
                if let Some(n) = &s.max_record_bytes {
                    self.error(
                        n.span(),
                        format!("{field}.max_record_bytes"),
                        "the generator reads no records: only kafka and file sources take it",
                    );
                }
                for f in schema.fields() {
                    if !generator::FIELDS.contains(&f.name.as_str()) {
                        self.error(
                            s.schema.span(),
                            format!("{field}.schema.{}", f.name),
                            format!(
                                "the generator has no field `{}`: it makes {}",
                                f.name,
                                generator::FIELDS.join(", ")
                            ),
                        );
                    }
                }
                let disorder =
                    self.duration(&s.disorder, format!("{field}.disorder"), Duration::ZERO);
                SourceKind::Generator {
                    config: GeneratorConfig {
                        seed: s.seed.as_ref().map_or(42, |v| *v.get_ref() as u64),
                        count: s
                            .count
                            .as_ref()
                            .map(|_| self.positive(&s.count, format!("{field}.count"), 1)),
                        rate: self.positive(&s.rate, format!("{field}.rate"), 10_000),
                        accounts: self.positive(&s.accounts, format!("{field}.accounts"), 100_000),
                        merchants: self.positive(&s.merchants, format!("{field}.merchants"), 5_000),
                        disorder_ms: disorder.as_millis() as u64,
                        start_ms: 1_700_000_000_000,
                        paced: s.paced.unwrap_or(false),
                        fraud: s.fraud.as_ref().map(|mix| {
                            let mix = mix.get_ref();
                            FraudMix {
                                every: self.positive(
                                    &Some(mix.every.clone()),
                                    format!("{field}.fraud.every"),
                                    1,
                                ),
                                within_ms: self
                                    .millis(
                                        &Some(mix.within.clone()),
                                        format!("{field}.fraud.within"),
                                    )
                                    .unwrap_or(1),
                            }
                        }),
                    },
                    partitions: self.positive(&s.partitions, format!("{field}.partitions"), 1),
                }
            }
            other => {
                self.error(
                    s.kind.span(),
                    format!("{field}.kind"),
                    format!("unknown source kind `{other}`: expected kafka, file or generator"),
                );
                return None;
            }
        };
        Some(SourceSpec {
            name: s.name.get_ref().clone(),
            kind,
            schema,
            out_of_orderness,
            idle_timeout,
            max_drift,
            max_record_bytes,
        })
    }

    /// Paths in a job file are relative to the file's directory.
    fn relative(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        match self.path.parent() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }

    fn sink(&mut self, s: &raw::SinkSection, i: usize) -> Option<SinkSpec> {
        let field = format!("sinks[{i}]");
        let format = match s.format.as_ref().map(|f| f.get_ref().as_str()) {
            None | Some("json") => Format::Json,
            Some("csv") => Format::Csv,
            Some(other) => {
                let span = s.format.as_ref().unwrap().span();
                self.error(
                    span,
                    format!("{field}.format"),
                    format!("unknown format `{other}`: expected json or csv"),
                );
                Format::Json
            }
        };
        let kind = match s.kind.get_ref().as_str() {
            "kafka" => {
                let properties = self.kafka_properties(&s.kind, &s.brokers, &s.properties, &field);
                let topic = match &s.topic {
                    Some(t) => {
                        let topic = self.expand(t, format!("{field}.topic"));
                        if let Err(message) = TopicTemplate::parse(&topic) {
                            self.error(t.span(), format!("{field}.topic"), message);
                        }
                        topic
                    }
                    None => {
                        self.error(
                            s.kind.span(),
                            format!("{field}.topic"),
                            "a kafka sink needs a `topic`",
                        );
                        String::new()
                    }
                };
                if let Some(first) = s.order_by.first() {
                    self.error(
                        first.span(),
                        format!("{field}.order_by"),
                        "only file sinks can order their output",
                    );
                }
                SinkKind::Kafka(KafkaSinkConfig { properties, topic })
            }
            "file" => match &s.path {
                Some(p) => {
                    let path = self.expand(p, format!("{field}.path"));
                    SinkKind::File(FileTarget::Path(self.relative(&path)))
                }
                None => {
                    self.error(
                        s.kind.span(),
                        format!("{field}.path"),
                        "a file sink needs a `path`",
                    );
                    return None;
                }
            },
            "stdout" => SinkKind::File(FileTarget::Stdout),
            "notify" => SinkKind::Notify(self.notify_config(s, &field)),
            "discard" => SinkKind::Discard,
            other => {
                self.error(
                    s.kind.span(),
                    format!("{field}.kind"),
                    format!(
                        "unknown sink kind `{other}`: expected kafka, file, stdout, notify or \
                         discard"
                    ),
                );
                return None;
            }
        };
        Some(SinkSpec {
            name: s.name.get_ref().clone(),
            kind,
            format,
            key: s.key.as_ref().map(|k| k.get_ref().clone()),
            columns: s
                .columns
                .as_ref()
                .map(|c| c.get_ref().iter().map(|c| c.get_ref().clone()).collect()),
            order_by: s.order_by.iter().map(|c| c.get_ref().clone()).collect(),
        })
    }

    fn metric(
        &mut self,
        m: &raw::MetricSection,
        field: &str,
        source: usize,
        schema: &Schema,
        sinks: Vec<usize>,
        late_sink: Option<usize>,
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
            columns.push(g.get_ref().clone());
        }
        columns.extend(["window_start".to_string(), "window_end".to_string()]);
        let w = m.window.get_ref();
        let wfield = format!("{field}.window");
        let need = |this: &mut Self, value: &Option<raw::Text>, name: &str| {
            let got = this.millis(value, format!("{wfield}.{name}"));
            if value.is_none() {
                this.error(
                    w.kind.span(),
                    format!("{wfield}.{name}"),
                    format!("a {} window needs `{name}`", w.kind.get_ref()),
                );
            }
            got.unwrap_or(1)
        };
        let window = match w.kind.get_ref().as_str() {
            "tumbling" => WindowSpec::Tumbling {
                size: need(self, &w.size, "size"),
            },
            "hopping" => {
                let size = need(self, &w.size, "size");
                let slide = need(self, &w.slide, "slide");
                if slide > size {
                    self.error(
                        w.slide.as_ref().unwrap().span(),
                        format!("{wfield}.slide"),
                        "the slide must not exceed the size",
                    );
                }
                WindowSpec::Hopping { size, slide }
            }
            "session" => WindowSpec::Session {
                gap: need(self, &w.gap, "gap"),
            },
            other => {
                self.error(
                    w.kind.span(),
                    format!("{wfield}.kind"),
                    format!("unknown window kind `{other}`: expected tumbling, hopping or session"),
                );
                WindowSpec::Tumbling { size: 1 }
            }
        };
        let lateness = self
            .duration(
                &m.allowed_lateness,
                format!("{field}.allowed_lateness"),
                Duration::ZERO,
            )
            .as_millis() as u64;
        let mut aggregates = Vec::new();
        for (name, spec) in m.aggregates.get_ref() {
            let afield = format!("{field}.aggregates.{name}");
            match parse_aggregate(spec.get_ref()) {
                Ok((kind, arg)) => {
                    let index = match (kind, arg) {
                        (AggregateKind::Count, None) => schema.time_index(),
                        (_, Some(arg)) => match schema.index_of(arg) {
                            Some(i) => {
                                let numeric = matches!(
                                    schema.fields()[i].ty,
                                    FieldType::Int | FieldType::Float
                                );
                                if matches!(kind, AggregateKind::Sum | AggregateKind::Avg)
                                    && !numeric
                                {
                                    self.error(
                                        spec.span(),
                                        afield.clone(),
                                        format!("`{arg}` is not numeric"),
                                    );
                                }
                                i
                            }
                            None => {
                                self.error(
                                    spec.span(),
                                    afield.clone(),
                                    format!("`{arg}` is not a field of the source schema"),
                                );
                                0
                            }
                        },
                        (_, None) => {
                            self.error(
                                spec.span(),
                                afield.clone(),
                                "this function needs a field, e.g. sum(amount)",
                            );
                            0
                        }
                    };
                    aggregates.push((name.clone(), kind, index));
                }
                Err(message) => self.error(spec.span(), afield, message),
            }
            columns.push(name.clone());
        }
        if aggregates.is_empty() && m.aggregates.get_ref().is_empty() {
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
            source,
            group_by,
            window,
            lateness,
            aggregates,
            having,
            sinks,
            late_sink,
            columns,
        })
    }

    /// Sinks may only name columns their inputs have; a file is written by one output only; a
    /// notify sink takes notification requests from its source only.
    fn check_sink_columns(
        &mut self,
        file: &raw::JobFile,
        sinks: &[SinkSpec],
        outputs: &Outputs,
        sources: &[SourceSpec],
        dead_letter: Option<usize>,
        notifications: &[NotifySpec],
    ) {
        let Outputs {
            metrics,
            fraud,
            commands,
            orchestrators,
            routes,
            enrich,
        } = *outputs;
        let mut writers = vec![Vec::<String>::new(); sinks.len()];
        for n in notifications {
            writers[n.outcomes].push(format!("the outcomes of `{}`", sinks[n.sink].name));
        }
        let names = |columns: &[&str]| columns.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        let schema_columns = |source: usize| -> Vec<String> {
            let fields = sources[source].schema.fields();
            fields.iter().map(|f| f.name.to_string()).collect()
        };
        // (what, its columns, its sinks, its late sink with the late events' columns, source)
        let mut all = Vec::new();
        for m in metrics {
            let late = m.late_sink.map(|s| (s, schema_columns(m.source)));
            all.push((
                format!("metric `{}`", m.name),
                m.columns.clone(),
                &m.sinks,
                late,
                m.source,
            ));
        }
        for f in fraud {
            let late = f
                .late_sink
                .map(|s| (s, f.late_columns(&sources[f.source].schema)));
            all.push((
                format!("fraud `{}`", f.name),
                names(&ALERT_COLUMNS),
                &f.sinks,
                late,
                f.source,
            ));
        }
        for c in commands {
            all.push((
                format!("commands `{}`", c.name),
                c.columns.clone(),
                &c.sinks,
                None,
                c.source,
            ));
        }
        for r in routes {
            let what = format!("route `{}`", r.name);
            all.push((what, schema_columns(r.source), &r.sinks, None, r.source));
        }
        for e in enrich {
            let what = format!("enrichment `{}`", e.name);
            all.push((what, e.columns.clone(), &e.sinks, None, e.source));
        }
        for o in orchestrators {
            let what = format!("orchestrator `{}`", o.name);
            all.push((what, names(&REQUEST_COLUMNS), &o.sinks, None, o.events.0));
        }
        for (what, columns, output_sinks, late, source) in all {
            for &s in output_sinks {
                writers[s].push(what.clone());
                self.check_columns(file, &sinks[s], &columns, &format!("the results of {what}"));
            }
            if let Some((s, late_columns)) = late {
                writers[s].push(format!("the late events of {what}"));
                self.check_columns(
                    file,
                    &sinks[s],
                    &late_columns,
                    &format!("the late events of `{}`", sources[source].name),
                );
            }
        }
        if let Some(s) = dead_letter {
            writers[s].push("dead letters".into());
            self.check_columns(file, &sinks[s], &[], "dead letters");
        }
        for (i, (sink, writers)) in sinks.iter().zip(&writers).enumerate() {
            let span = file
                .sinks
                .iter()
                .find(|s| *s.get_ref().name.get_ref() == sink.name)
                .map_or(0..0, |s| s.span());
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

    fn check_columns(
        &mut self,
        file: &raw::JobFile,
        sink: &SinkSpec,
        available: &[String],
        what: &str,
    ) {
        let raw = file
            .sinks
            .iter()
            .enumerate()
            .find(|(_, s)| *s.get_ref().name.get_ref() == sink.name);
        let Some((i, raw)) = raw else { return };
        let raw = raw.get_ref();
        let listed = match available {
            [] => "they have none".to_string(),
            _ => available.join(", "),
        };
        let named = raw
            .columns
            .iter()
            .flat_map(|c| c.get_ref().iter())
            .chain(raw.key.iter())
            .chain(raw.order_by.iter());
        for column in named {
            if !available.contains(column.get_ref()) {
                self.error(
                    column.span(),
                    format!("sinks[{i}]"),
                    format!("`{}` is not a column of {what}: {listed}", column.get_ref()),
                );
            }
        }
        if let (SinkKind::Kafka(config), Some(span)) =
            (&sink.kind, raw.topic.as_ref().map(Spanned::span))
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
