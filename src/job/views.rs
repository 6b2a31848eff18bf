//! Validation of `[[views]]` sections (sections with one name make one view, each section adding
//! the columns one source keeps) and of `[server]`, which serves them.

use std::net::SocketAddr;

use indexmap::IndexMap;
use toml::Spanned;

use super::outputs::Names;
use super::{Checker, SourceSpec, raw};
use crate::expr::Predicate;
use crate::record::{FieldType, Schema};

/// A view: rows by key, each column kept current from the events of one source.
#[derive(Clone, Debug)]
pub struct ViewSpec {
    /// Its name, the `{view}` of its HTTP routes.
    pub name: String,
    /// Changes become visible a tick of event time at a time (coarser ticks: cheaper updates).
    pub tick: u64,
    /// Column names in declaration order over all sections.
    pub columns: Vec<String>,
    /// One per section: which source feeds which columns.
    pub inputs: Vec<ViewInput>,
}

/// What one source adds to a view.
#[derive(Clone, Debug)]
pub struct ViewInput {
    /// The source index.
    pub source: usize,
    /// The field whose value (as text) is the row key.
    pub key: usize,
    /// Only events this holds for count.
    pub when: Option<Predicate>,
    /// The columns this source keeps.
    pub columns: Vec<ViewColumn>,
}

/// One column kept from one source.
#[derive(Clone, Debug)]
pub struct ViewColumn {
    /// Its index in [`ViewSpec::columns`].
    pub index: usize,
    /// How events change it.
    pub value: ColumnValue,
    /// Only events this holds for change it.
    pub when: Option<Predicate>,
}

/// How events change a column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnValue {
    /// The number of events.
    Count,
    /// The sum of an integer field.
    Sum(usize),
    /// The field's value in the latest event (by event time) where it is not null.
    Last(usize),
    /// The field's `n` latest non-null values (by event time), newest first, as a JSON array.
    Recent {
        /// The field.
        field: usize,
        /// How many values the column keeps.
        n: usize,
    },
}

/// The most values a `recent(field, n)` column keeps: each row holds its `n` values in memory.
pub const MAX_RECENT: usize = 1000;

/// Where the HTTP server listens and what guards it.
#[derive(Clone)]
pub struct ServerSpec {
    /// The address; 127.0.0.1:8080 unless `[server] listen` says otherwise (port 0: any free
    /// port).
    pub listen: SocketAddr,
    /// A bearer token every request must carry, read from the variable `token_env` names.
    pub token: Option<String>,
}

/// Shows whether a token is set, never the token itself.
impl std::fmt::Debug for ServerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSpec")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The default `[server] listen`: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

impl Checker<'_> {
    pub(super) fn views(
        &mut self,
        sections: &[Spanned<raw::ViewSection>],
        names: &Names,
        sources: &[SourceSpec],
    ) -> Vec<ViewSpec> {
        let mut views = IndexMap::<String, ViewSpec>::new();
        for (i, v) in sections.iter().enumerate() {
            let v = v.get_ref();
            let field = format!("views[{i}]");
            let errors_before = self.errors.len();
            let Some(source) = self.source_index(names, &v.source, format!("{field}.source"))
            else {
                continue;
            };
            let schema = &sources[source].schema;
            let field_of = |this: &mut Self, name: &raw::Text, at: String| {
                let found = schema.index_of(name.get_ref());
                if found.is_none() {
                    this.error(
                        name.span(),
                        at,
                        format!("`{}` is not a field of the source schema", name.get_ref()),
                    );
                }
                found
            };
            let key = field_of(self, &v.key, format!("{field}.key"));
            let predicate =
                |this: &mut Self, text: Option<&str>, span: std::ops::Range<usize>, at: String| {
                    match Predicate::compile(text?, schema) {
                        Ok(p) => Some(p),
                        Err(e) => {
                            this.error(span, at, e.to_string());
                            None
                        }
                    }
                };
            let when = v.when.as_ref().and_then(|w| {
                predicate(self, Some(w.get_ref()), w.span(), format!("{field}.when"))
            });
            let tick = self.millis(&v.tick, format!("{field}.tick")).unwrap_or(100);
            let view = views
                .entry(v.name.get_ref().clone())
                .or_insert_with(|| ViewSpec {
                    name: v.name.get_ref().clone(),
                    tick,
                    columns: Vec::new(),
                    inputs: Vec::new(),
                });
            if let Some(text) = v.tick.as_ref().filter(|_| view.tick != tick) {
                self.error(
                    text.span(),
                    format!("{field}.tick"),
                    format!(
                        "view `{}` already has tick {} ms: its sections must agree",
                        view.name, view.tick
                    ),
                );
            }
            let mut columns = Vec::new();
            if v.columns.get_ref().is_empty() {
                self.error(
                    v.columns.span(),
                    format!("{field}.columns"),
                    "declare at least one column",
                );
            }
            for (name, spec) in v.columns.get_ref() {
                let at = format!("{field}.columns.{name}");
                if view.columns.contains(name) {
                    self.error(
                        spec.span(),
                        at.clone(),
                        format!("view `{}` already has a column `{name}`", view.name),
                    );
                    continue;
                }
                let (text, column_when) = match spec.get_ref() {
                    raw::ColumnSection::Value(text) => (text.as_str(), None),
                    raw::ColumnSection::Table { value, when } => (
                        value.as_str(),
                        predicate(self, when.as_deref(), spec.span(), format!("{at}.when")),
                    ),
                };
                let value = match parse_column(text) {
                    Ok(("recent", Some(arg))) => match recent_column(arg, schema) {
                        Ok(value) => Some(value),
                        Err(message) => {
                            self.error(spec.span(), at.clone(), message);
                            None
                        }
                    },
                    Ok((kind, arg)) => {
                        let index = arg.map(|arg| schema.index_of(arg).ok_or(arg));
                        match (kind, index) {
                            ("count", None) => Some(ColumnValue::Count),
                            ("sum", Some(Ok(i))) if schema.fields()[i].ty == FieldType::Int => {
                                Some(ColumnValue::Sum(i))
                            }
                            ("sum", Some(Ok(i))) => {
                                let name = &schema.fields()[i].name;
                                self.error(
                                    spec.span(),
                                    at.clone(),
                                    format!(
                                        "`{name}` is not an integer field: a view sums integers"
                                    ),
                                );
                                None
                            }
                            ("last", Some(Ok(i))) => Some(ColumnValue::Last(i)),
                            (_, Some(Err(arg))) => {
                                self.error(
                                    spec.span(),
                                    at.clone(),
                                    format!("`{arg}` is not a field of the source schema"),
                                );
                                None
                            }
                            _ => {
                                self.error(
                                    spec.span(),
                                    at.clone(),
                                    format!("`{text}`: {EXPECTED_COLUMN}"),
                                );
                                None
                            }
                        }
                    }
                    Err(message) => {
                        self.error(spec.span(), at.clone(), message);
                        None
                    }
                };
                view.columns.push(name.clone());
                if let Some(value) = value {
                    columns.push(ViewColumn {
                        index: view.columns.len() - 1,
                        value,
                        when: column_when,
                    });
                }
            }
            if let (Some(key), true) = (key, self.errors.len() == errors_before) {
                view.inputs.push(ViewInput {
                    source,
                    key,
                    when,
                    columns,
                });
            }
        }
        views.into_values().collect()
    }

    /// The server of a job with `[server]` or views (on [`DEFAULT_LISTEN`] unless it says).
    pub(super) fn server(
        &mut self,
        section: &Option<Spanned<raw::ServerSection>>,
        views: &[ViewSpec],
    ) -> Option<ServerSpec> {
        let Some(section) = section.as_ref().map(Spanned::get_ref) else {
            return (!views.is_empty()).then(|| ServerSpec {
                listen: DEFAULT_LISTEN.parse().expect("a valid address"),
                token: None,
            });
        };
        let listen = match &section.listen {
            None => DEFAULT_LISTEN.parse().expect("a valid address"),
            Some(text) => {
                let expanded = text.get_ref().clone();
                expanded.parse().unwrap_or_else(|e| {
                    self.error(
                        text.span(),
                        "server.listen",
                        format!("`{expanded}` is not an address such as {DEFAULT_LISTEN}: {e}"),
                    );
                    DEFAULT_LISTEN.parse().expect("a valid address")
                })
            }
        };
        let token = section.token_env.as_ref().and_then(|name| {
            let token = (self.vars)(name.get_ref());
            let problem = match &token {
                None => "is not set",
                Some(t) if t.trim().is_empty() => "is empty",
                Some(_) => return token,
            };
            self.error(
                name.span(),
                "server.token_env",
                format!(
                    "the environment variable `{}` {problem}: it holds the bearer token",
                    name.get_ref()
                ),
            );
            None
        });
        Some(ServerSpec { listen, token })
    }
}

/// What a column's value may be, for messages.
const EXPECTED_COLUMN: &str = "expected count, sum(field), last(field) or recent(field, n)";

/// Splits `count`, `sum(field)`, `last(field)` or `recent(field, n)` into the function and the
/// text between its parentheses.
fn parse_column(text: &str) -> Result<(&str, Option<&str>), String> {
    let text = text.trim();
    match text.split_once('(') {
        None => Ok((text, None)),
        Some((function, rest)) => match rest.strip_suffix(')') {
            Some(arg) if !arg.trim().is_empty() => Ok((function.trim(), Some(arg.trim()))),
            _ => Err(format!("`{text}`: {EXPECTED_COLUMN}")),
        },
    }
}

/// The column `recent(field, n)` whose parenthesized text is `arg`.
fn recent_column(arg: &str, schema: &Schema) -> Result<ColumnValue, String> {
    let Some((name, n)) = arg.split_once(',') else {
        return Err(format!(
            "`recent({arg})`: expected recent(field, n), n the number of values to keep"
        ));
    };
    let (name, n) = (name.trim(), n.trim());
    let field = schema
        .index_of(name)
        .ok_or_else(|| format!("`{name}` is not a field of the source schema"))?;
    match n.parse::<usize>() {
        Ok(n) if (1..=MAX_RECENT).contains(&n) => Ok(ColumnValue::Recent { field, n }),
        _ => Err(format!(
            "`{n}` in recent({name}, {n}): n must be an integer from 1 to {MAX_RECENT}"
        )),
    }
}
