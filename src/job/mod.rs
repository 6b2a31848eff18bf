//! The job file (TOML): what a job reads, computes and writes, validated into plain data with
//! errors that name the file, the line and the field.
//!
//! [`raw`] is the file's shape, with spans; [`tagged`] lets a section's `kind` choose its
//! settings; each other module validates one kind of section into its spec.

mod checkpoints;
mod clashes;
mod engagement;
mod enrich;
mod expand;
mod fraud;
mod metrics;
mod notify;
mod outputs;
mod raw;
mod routes;
mod sinks;
mod sources;
mod state;
mod tagged;
mod values;
mod views;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sha2::Digest as _;

use crate::sinks::view::Views;

pub use checkpoints::CheckpointsSpec;
pub use engagement::{
    AlertFields, CommandsSpec, EVENT_COLUMNS, EventFields, OrchestratorSpec, REQUEST_COLUMNS,
};
pub use enrich::EnrichSpec;
pub use fraud::{ALERT_COLUMNS, FraudSpec, PaymentFields};
pub use metrics::{AggregateSpec, MAX_PANES, MetricSpec};
pub use notify::NotifySpec;
pub use routes::{RouteSpec, Selection};
pub use sinks::SinkSpec;
pub use sources::{SourceKind, SourceSpec};
pub use state::{StateChange, section_name, state_changes};
pub use values::MAX_DURATION;
pub use views::{ColumnValue, DEFAULT_LISTEN, ServerSpec, ViewColumn, ViewInput, ViewSpec};

pub(crate) use clashes::identity as file_identity;
pub(crate) use expand::expand as expand_vars;
pub(crate) use values::relative_to;

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
    /// The SHA-256 of the job file's text (before `${VAR}` expansion, so hosts that set their
    /// own paths still agree): the processes of a cluster check that they run the same job.
    pub digest: [u8; 32],
}

/// One problem in a job file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line; 0 when the problem is the whole file's (it cannot be read).
    pub line: usize,
    /// 1-based column, where the loader knows it (SQL jobs); 0 otherwise.
    pub column: usize,
    /// The dotted path of the field, e.g. `metrics[0].window.size`; in a SQL job, the construct,
    /// e.g. `INSERT INTO q1`; empty when the problem is no field's.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
            if self.column > 0 {
                write!(f, ":{}", self.column)?;
            }
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a job file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct JobErrors(pub Vec<JobError>);

impl JobErrors {
    /// How many errors are shown, one per line; a count stands for the rest.
    pub const SHOWN: usize = 100;
}

impl fmt::Display for JobErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().take(Self::SHOWN).enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        if let Some(path) = self.0.get(Self::SHOWN).map(|e| &e.path) {
            let rest = self.0.len() - Self::SHOWN;
            let s = if rest == 1 { "" } else { "s" };
            write!(f, "\n{}: {rest} more error{s}", path.display())?;
        }
        Ok(())
    }
}

impl Job {
    /// Empty stores for the job's views, to run it with and serve them from.
    pub fn view_stores(&self) -> Views {
        Views::new(self.views.iter().map(|v| v.name.as_str()))
    }

    /// Reads and validates the job file at `path`: SQL statements when its name ends in `.sql`
    /// (see [`crate::sql`]), TOML otherwise.
    pub fn load(path: &Path) -> Result<Job, JobErrors> {
        let error = |line, field, message| {
            JobErrors(vec![JobError {
                path: path.into(),
                line,
                column: 0,
                field,
                message,
            }])
        };
        let bytes = std::fs::read(path)
            .map_err(|e| error(0, String::new(), format!("cannot read: {e}")))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let at = e.utf8_error().valid_up_to();
            let bytes = e.as_bytes();
            let line_start = bytes[..at]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            let text = String::from_utf8_lossy(bytes);
            let line = 1 + bytes[..at].iter().filter(|&&b| b == b'\n').count();
            let column = 1 + String::from_utf8_lossy(&bytes[line_start..at])
                .chars()
                .count();
            error(
                line,
                field_of_parse_error(&text, &(line_start..line_start)),
                format!(
                    "not UTF-8: byte {:#04x} at column {column} (a job file is UTF-8 text)",
                    bytes[at]
                ),
            )
        })?;
        if path.extension().is_some_and(|e| e == "sql") {
            return crate::sql::parse(path, &text, &|name| std::env::var(name).ok());
        }
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
            line_starts: std::iter::once(0)
                .chain(text.match_indices('\n').map(|(at, _)| at + 1))
                .collect(),
            vars,
            errors: Vec::new(),
        };
        let job = match raw_file(text, vars) {
            Ok((file, problems)) => {
                check.problems(problems);
                Some(check.job(file))
            }
            Err(problems) => {
                check.problems(problems);
                None
            }
        };
        match job {
            Some(job) if check.errors.is_empty() => Ok(job),
            _ => Err(JobErrors(check.errors)),
        }
    }
}

/// The file as written, its `${VAR}` expanded from `vars` (see [`expand`]) and its tagged
/// sections rewritten (see [`tagged`]), with the problems these found; or every problem, when it
/// cannot be read: a TOML syntax error, a section of an unknown kind, a field serde does not know.
fn raw_file(
    text: &str,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<(raw::JobFile, Vec<tagged::Problem>), Vec<tagged::Problem>> {
    let parse_error = |e: toml::de::Error| {
        // The parser's nesting limit is reported without a position: find it.
        let too_deep = e.message() == "recursion limit";
        let span = e
            .span()
            .or_else(|| too_deep.then(|| too_deep_toml(text)).flatten())
            .unwrap_or(0..0);
        let message = match too_deep {
            true => format!(
                "keys, arrays or tables nested {TOML_NESTING} levels deep or more: the TOML \
                 parser reads fewer"
            ),
            false => e.message().to_string(),
        };
        let field = match message
            .strip_prefix("missing field `")
            .and_then(|m| m.split_once('`'))
        {
            // A missing field is named by the message, not by the line the error points at.
            Some((missing, _)) => missing.to_string(),
            None => field_of_parse_error(text, &span),
        };
        (span, field, message)
    };
    let mut doc = toml::de::DeTable::parse(text).map_err(|e| vec![parse_error(e)])?;
    let mut problems = Vec::new();
    expand::expand_strings(doc.get_mut(), vars, &mut problems);
    let mut rewrite = tagged::nest_kinds(doc.get_mut());
    problems.append(&mut rewrite.problems);
    rewrite.problems = problems;
    if rewrite.unreadable {
        return Err(rewrite.problems);
    }
    match raw::JobFile::deserialize(toml::de::Deserializer::from(doc)) {
        Ok(file) => Ok((file, rewrite.problems)),
        Err(e) => {
            rewrite.problems.push(parse_error(e));
            Err(rewrite.problems)
        }
    }
}

/// The key a TOML parse error points at (the text of its line up to `=`, its first 60
/// characters), for the message; empty on a blank or comment line.
fn field_of_parse_error(text: &str, span: &Range<usize>) -> String {
    let start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[start..].lines().next().unwrap_or("").trim();
    if line.starts_with('#') {
        return String::new();
    }
    let key = line.split_once('=').map_or(line, |(key, _)| key).trim();
    match key.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &key[..cut]),
        None => key.to_string(),
    }
}

/// How deep the TOML parser nests keys, arrays and tables at most (its `recursion limit`).
const TOML_NESTING: usize = 80;

/// The first line that nests deeper than [`TOML_NESTING`]: a key of as many dotted parts, or
/// arrays and inline tables as deep (counted without regard to strings: this only locates an
/// error the parser found).
fn too_deep_toml(text: &str) -> Option<Range<usize>> {
    let mut depth = 0usize;
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let key = line.split_once('=').map_or(line, |(key, _)| key);
        let mut deepest = key.matches('.').count() + 1;
        for c in line.chars() {
            match c {
                '[' | '{' => depth += 1,
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
            deepest = deepest.max(depth);
        }
        if deepest >= TOML_NESTING {
            return Some(start..start + line.len());
        }
        start += line.len();
    }
    None
}

/// Collects errors while turning the raw file into a [`Job`].
struct Checker<'a> {
    path: &'a Path,
    text: &'a str,
    /// The offset of each line's first byte, to find an error's line in time logarithmic in
    /// the file's length.
    line_starts: Vec<usize>,
    vars: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<JobError>,
}

impl Checker<'_> {
    fn error(&mut self, span: Range<usize>, field: impl Into<String>, message: impl Into<String>) {
        let line = self
            .line_starts
            .partition_point(|&start| start <= span.start);
        self.errors.push(JobError {
            path: self.path.into(),
            line,
            column: 0,
            field: field.into(),
            message: message.into(),
        });
    }

    fn problems(&mut self, problems: Vec<tagged::Problem>) {
        for (span, field, message) in problems {
            self.error(span, field, message);
        }
    }

    fn job(&mut self, file: raw::JobFile) -> Job {
        let section = file.job.get_ref();
        let tick = self.millis(&section.tick, "job.tick".into()).unwrap_or(10);
        let commit_interval = self.duration(
            &section.commit_interval,
            "job.commit_interval".into(),
            Duration::from_secs(1),
        );
        let (sink_sections, sinks): (Vec<usize>, Vec<SinkSpec>) =
            self.sinks(&file.sinks).into_iter().unzip();
        let sources = self.sources(&file.sources);
        let names = outputs::Names::new(&sources, &sinks, sink_sections);
        let dead_letter = section
            .dead_letter
            .as_ref()
            .and_then(|name| self.sink_index(&names, name, "job.dead_letter".into()));
        let metrics = self.each(
            &file.metrics,
            "metrics",
            &names,
            |this, m, field, wiring| this.metric(m, field, &sources[wiring.source].schema, wiring),
        );
        let fraud = self.each(&file.fraud, "fraud", &names, |this, f, field, wiring| {
            this.fraud(f, field, &sources[wiring.source].schema, wiring)
        });
        let commands = self.each(
            &file.commands,
            "commands",
            &names,
            |this, c, field, wiring| {
                this.commands(c, field, &sources[wiring.source].schema, wiring)
            },
        );
        let orchestrators = self.orchestrators(&file.orchestrators, &names, &sources);
        let notifications = self.notifications(&file, &names, &sinks, &sources);
        let routes = self.routes(&file.routes, &names, &sources);
        let views = self.views(&file.views, &names, &sources);
        let enrich = self.enrich(&file.enrich, &names, &sources, &views);
        let server = self.server(&file.server, &views);
        let checkpoints = self.checkpoints(&file.checkpoints);
        self.checkpoint_conflicts(&file);
        self.computes_something(&file);
        self.unique_names(&file);
        self.distinct_files(&file);
        let outputs = outputs::Outputs {
            metrics: &metrics,
            fraud: &fraud,
            commands: &commands,
            orchestrators: &orchestrators,
            routes: &routes,
            enrich: &enrich,
        };
        self.check_sink_columns(
            &file,
            &names,
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
            digest: sha2::Sha256::digest(self.text.as_bytes()).into(),
        }
    }
}
