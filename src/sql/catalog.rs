//! Tables: what `CREATE TABLE` declares (columns, event time and watermark, connector), checked,
//! with `${VAR}` expanded in the options.

use std::path::{Path, PathBuf};

use sqlparser::ast::{Expr, Ident, Spanned as _};
use sqlparser::tokenizer::Span;

use super::error::Problem;
use super::parse::{TableDef, TableOption, call_args};
use super::time::interval_millis;
use super::types::SqlType;
use crate::sinks::format::Format;

/// The option of a source table naming the table its late records go to (Eddy's own, so
/// that a job stays Flink SQL apart from it).
const LATE_SINK: &str = "eddy.late-sink";

/// A declared table.
pub(super) struct Table {
    /// Its name.
    pub name: String,
    /// Where its name is written.
    pub at: Span,
    /// Physical columns, in order.
    pub columns: Vec<Column>,
    /// Computed columns: `name AS TO_TIMESTAMP_LTZ(column, 3)`, with the physical column's index.
    pub computed: Vec<(String, usize)>,
    /// The event time and its watermark, if the table declares one.
    pub watermark: Option<Watermark>,
    /// Where it reads or writes.
    pub connector: Connector,
    /// `'eddy.late-sink'`: the table that the late records of windows over this one go to, and
    /// where the option is written.
    pub late_sink: Option<(String, Span)>,
}

/// A physical column.
pub(super) struct Column {
    /// Its name (the JSON member read or written).
    pub name: String,
    /// Its type.
    pub ty: SqlType,
    /// `NOT NULL`: a record without it is dead-lettered rather than read as NULL.
    pub required: bool,
}

/// `WATERMARK FOR name AS name - INTERVAL …`.
pub(super) struct Watermark {
    /// The time attribute's name (a computed or physical column).
    pub name: String,
    /// The physical column holding event time.
    pub field: usize,
    /// The allowed out-of-orderness, ms.
    pub delay_ms: u64,
}

/// A column a query names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ColumnRef {
    /// A physical column, by index.
    Physical(usize),
    /// A computed timestamp over the physical column of that index.
    Computed(usize),
}

/// Where a table reads or writes.
pub(super) enum Connector {
    /// `'connector' = 'filesystem'`.
    Filesystem {
        /// The file.
        path: PathBuf,
        /// Its format.
        format: Format,
        /// Where `'format'` is written.
        format_at: Span,
    },
    /// `'connector' = 'kafka'`.
    Kafka {
        /// The topic.
        topic: String,
        /// librdkafka properties.
        properties: Vec<(String, String)>,
        /// The format.
        format: Format,
        /// `'key.fields'`: the message key column of a sink.
        key: Option<String>,
        /// Whether `properties.group.id` is set (a source needs it).
        has_group: bool,
    },
    /// `'connector' = 'print'`: JSON lines on standard output (or standard error).
    Print {
        /// `'standard-error' = 'true'`.
        stderr: bool,
    },
    /// `'connector' = 'blackhole'`: rows are dropped.
    Blackhole,
}

impl Table {
    /// The column `name` names.
    pub(super) fn column(&self, name: &str) -> Option<ColumnRef> {
        if let Some(i) = self.columns.iter().position(|c| c.name == name) {
            return Some(ColumnRef::Physical(i));
        }
        self.computed
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, field)| ColumnRef::Computed(field))
    }

    /// The type of a column.
    pub(super) fn type_of(&self, column: ColumnRef) -> SqlType {
        match column {
            ColumnRef::Physical(i) => self.columns[i].ty,
            ColumnRef::Computed(_) => SqlType::TimestampLtz,
        }
    }

    /// The names of every column, for messages.
    pub(super) fn column_names(&self) -> String {
        let names: Vec<&str> = self
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .chain(self.computed.iter().map(|(n, _)| n.as_str()))
            .collect();
        names.join(", ")
    }

    /// The message for a name that is not a column.
    pub(super) fn unknown_column(&self, name: &str) -> String {
        format!(
            "unknown column `{name}`: table `{}` has {}",
            self.name,
            self.column_names()
        )
    }
}

/// What a table declaration needs from its surroundings: the job file (relative paths) and the
/// environment (`${VAR}`).
pub(super) struct Context<'a> {
    /// The job file.
    pub path: &'a Path,
    /// The environment.
    pub vars: &'a dyn Fn(&str) -> Option<String>,
}

impl Context<'_> {
    /// `text` with each `${VAR}` replaced from the environment; an unset variable or an unclosed
    /// `${` is a problem at `at`.
    pub(super) fn expand(&self, text: &str, at: Span, construct: &str) -> Result<String, Problem> {
        crate::job::expand_vars(text, self.vars).map_err(|m| Problem::new(at, construct, m))
    }

    /// A path written in an option: a plain path or a `file://` URI, relative to the job file's
    /// directory.
    fn file_path(&self, written: &str) -> PathBuf {
        crate::job::relative_to(
            self.path,
            written.strip_prefix("file://").unwrap_or(written),
        )
    }
}

/// The table `def` declares, or its problems.
pub(super) fn table(def: &TableDef, context: &Context) -> Result<Table, Vec<Problem>> {
    let construct = format!("CREATE TABLE {}", def.name.value);
    let mut problems = Vec::new();
    let mut columns: Vec<Column> = Vec::new();
    for c in &def.columns {
        if columns.iter().any(|d| d.name == c.name.value) {
            problems.push(Problem::new(
                c.name.span,
                &construct,
                format!("column `{}` is declared twice", c.name.value),
            ));
        }
        match SqlType::of(&c.ty) {
            Ok(ty) => columns.push(Column {
                name: c.name.value.clone(),
                ty,
                required: c.not_null,
            }),
            Err(message) => problems.push(Problem::new(c.ty_at, &construct, message)),
        }
    }
    let mut computed = Vec::new();
    for (name, expr) in &def.computed {
        match timestamp_of(expr, &columns) {
            Ok(field) => computed.push((name.value.clone(), field)),
            Err(message) => problems.push(Problem::new(expr.span(), &construct, message)),
        }
    }
    let mut table = Table {
        name: def.name.value.clone(),
        at: def.name.span,
        columns,
        computed,
        watermark: None,
        connector: Connector::Blackhole,
        late_sink: def
            .options
            .iter()
            .find(|o| o.key == LATE_SINK)
            .map(|o| (o.value.clone(), o.value_at)),
    };
    if let Some((column, expr)) = &def.watermark {
        match watermark(&table, column, expr) {
            Ok(w) => table.watermark = Some(w),
            Err(p) => problems.push(p),
        }
    }
    match connector(&def.options, &def.name, context, &table) {
        Ok(c) => table.connector = c,
        Err(mut p) => problems.append(&mut p),
    }
    if problems.is_empty() {
        Ok(table)
    } else {
        Err(problems)
    }
}

/// The physical column a computed `TO_TIMESTAMP_LTZ(column, 3)` reads.
fn timestamp_of(expr: &Expr, columns: &[Column]) -> Result<usize, String> {
    let unsupported = || {
        "computed columns are supported as `TO_TIMESTAMP_LTZ(column, 3)` over a BIGINT column of \
         epoch milliseconds only"
            .to_string()
    };
    let Expr::Function(f) = expr else {
        return Err(unsupported());
    };
    if !f.name.to_string().eq_ignore_ascii_case("TO_TIMESTAMP_LTZ") {
        return Err(unsupported());
    }
    let args = call_args(&f.args).ok_or_else(unsupported)?;
    match args.as_slice() {
        [Expr::Identifier(column), precision] => {
            if precision.to_string() != "3" {
                return Err(format!(
                    "TO_TIMESTAMP_LTZ({column}, {precision}): only precision 3 (epoch \
                     milliseconds) is supported"
                ));
            }
            let i = columns
                .iter()
                .position(|c| c.name == column.value)
                .ok_or_else(|| format!("unknown column `{}`", column.value))?;
            if !columns[i].ty.is_integer() {
                return Err(format!(
                    "TO_TIMESTAMP_LTZ takes a BIGINT of epoch milliseconds, but `{}` is {}",
                    column.value, columns[i].ty
                ));
            }
            Ok(i)
        }
        _ => Err(unsupported()),
    }
}

/// `WATERMARK FOR column AS column [- INTERVAL 'n' unit]`.
fn watermark(table: &Table, column: &Ident, expr: &Expr) -> Result<Watermark, Problem> {
    let construct = format!("CREATE TABLE {}", table.name);
    let field = match table.column(&column.value) {
        Some(ColumnRef::Computed(field)) => field,
        Some(ColumnRef::Physical(i))
            if matches!(
                table.columns[i].ty,
                SqlType::Timestamp | SqlType::TimestampLtz
            ) =>
        {
            i
        }
        Some(ColumnRef::Physical(i)) => {
            return Err(Problem::new(
                column.span,
                construct,
                format!(
                    "the watermark's column `{}` is {}: declare a TIMESTAMP_LTZ(3) column, e.g. \
                     `rt AS TO_TIMESTAMP_LTZ({}, 3)`",
                    column.value, table.columns[i].ty, column.value
                ),
            ));
        }
        None => {
            return Err(Problem::new(
                column.span,
                construct,
                table.unknown_column(&column.value),
            ));
        }
    };
    let bound = || {
        Problem::new(
            expr.span(),
            &construct,
            format!(
                "a watermark is `{0}` or `{0} - INTERVAL 'n' SECOND`: a bounded delay behind the \
                 highest event time",
                column.value
            ),
        )
    };
    let delay_ms = match expr {
        Expr::Identifier(id) if id.value == column.value => 0,
        Expr::BinaryOp { left, op, right }
            if matches!(**left, Expr::Identifier(ref id) if id.value == column.value)
                && *op == sqlparser::ast::BinaryOperator::Minus =>
        {
            interval_millis(right).map_err(|m| Problem::new(right.span(), &construct, m))?
        }
        _ => return Err(bound()),
    };
    Ok(Watermark {
        name: column.value.clone(),
        field,
        delay_ms,
    })
}

/// The connector the `WITH` options describe.
fn connector(
    options: &[TableOption],
    name: &Ident,
    context: &Context,
    table: &Table,
) -> Result<Connector, Vec<Problem>> {
    let construct = format!("CREATE TABLE {}", name.value);
    let mut problems = Vec::new();
    let mut values: Vec<(&TableOption, String)> = Vec::new();
    for o in options {
        if values.iter().any(|(p, _)| p.key == o.key) {
            problems.push(Problem::new(
                o.key_at,
                &construct,
                format!("option '{}' is set twice", o.key),
            ));
        }
        // A value that does not expand is reported once, and kept as written.
        let value = context.expand(&o.value, o.value_at, &construct);
        values.push((
            o,
            value.unwrap_or_else(|p| {
                problems.push(p);
                o.value.clone()
            }),
        ));
    }
    let get = |key: &str| values.iter().find(|(o, _)| o.key == key);
    let Some((connector_option, kind)) = get("connector") else {
        problems.push(Problem::new(
            name.span,
            &construct,
            "a table needs 'connector': filesystem, kafka, print or blackhole",
        ));
        return Err(problems);
    };
    let known: &[&str] = match kind.as_str() {
        "filesystem" => &["connector", "path", "format", LATE_SINK],
        "kafka" => &[
            "connector",
            LATE_SINK,
            "topic",
            "format",
            "key.fields",
            "scan.startup.mode",
            "sink.delivery-guarantee",
        ],
        "print" => &["connector", "standard-error"],
        "blackhole" => &["connector"],
        other => {
            problems.push(Problem::new(
                connector_option.value_at,
                &construct,
                format!(
                    "connector '{other}' is not supported: use filesystem, kafka, print or \
                     blackhole"
                ),
            ));
            return Err(problems);
        }
    };
    for (o, _) in &values {
        let passed_on = kind == "kafka" && o.key.starts_with("properties.");
        if !known.contains(&o.key.as_str()) && !passed_on {
            problems.push(Problem::new(
                o.key_at,
                &construct,
                format!(
                    "unknown option '{}' for the {kind} connector: it takes {}{}",
                    o.key,
                    known.join(", "),
                    if kind == "kafka" {
                        ", properties.*"
                    } else {
                        ""
                    }
                ),
            ));
        }
    }
    let required = |problems: &mut Vec<Problem>, key: &str| match get(key) {
        Some((o, v)) => Some((*o, v.clone())),
        None => {
            problems.push(Problem::new(
                connector_option.value_at,
                &construct,
                format!("the {kind} connector needs '{key}'"),
            ));
            None
        }
    };
    let format = |problems: &mut Vec<Problem>| {
        let (o, v) = required(problems, "format")?;
        match v.as_str() {
            "json" => Some((Format::Json, o.value_at)),
            "csv" => Some((Format::Csv, o.value_at)),
            other => {
                problems.push(Problem::new(
                    o.value_at,
                    &construct,
                    format!("format '{other}' is not supported: use json or csv"),
                ));
                None
            }
        }
    };
    let connector = match kind.as_str() {
        "filesystem" => {
            let path = required(&mut problems, "path");
            let format = format(&mut problems);
            match (path, format) {
                (Some((o, path)), _) if path.trim().is_empty() => {
                    problems.push(Problem::new(o.value_at, &construct, "the path is empty"));
                    None
                }
                (Some((_, path)), Some((format, format_at))) => Some(Connector::Filesystem {
                    path: context.file_path(&path),
                    format,
                    format_at,
                }),
                _ => None,
            }
        }
        "kafka" => {
            let topic = required(&mut problems, "topic");
            let servers = required(&mut problems, "properties.bootstrap.servers");
            let format = format(&mut problems);
            if let Some((o, v)) = get("scan.startup.mode")
                && v != "group-offsets"
            {
                problems.push(Problem::new(
                    o.value_at,
                    &construct,
                    format!(
                        "scan.startup.mode '{v}' is not supported: a job starts from the group's \
                         committed offsets ('group-offsets'); choose another start with `eddy \
                         run --from earliest|latest|TIME`"
                    ),
                ));
            }
            if let Some((o, v)) = get("sink.delivery-guarantee")
                && v != "at-least-once"
            {
                problems.push(Problem::new(
                    o.value_at,
                    &construct,
                    format!("sink.delivery-guarantee '{v}' is not supported: use 'at-least-once'"),
                ));
            }
            let key = get("key.fields").map(|(o, v)| (v.clone(), o.value_at));
            if let Some((fields, at)) = &key
                && (fields.contains(';') || table.column(fields).is_none())
            {
                problems.push(Problem::new(
                    *at,
                    &construct,
                    format!("'key.fields' names one column of the table, not `{fields}`"),
                ));
            }
            let properties: Vec<(String, String)> = values
                .iter()
                .filter_map(|(o, v)| {
                    Some((o.key.strip_prefix("properties.")?.to_string(), v.clone()))
                })
                .collect();
            let has_group = properties.iter().any(|(k, _)| k == "group.id");
            match (topic, servers, format) {
                (Some((_, topic)), Some(_), Some((format, _))) => Some(Connector::Kafka {
                    topic,
                    properties,
                    format,
                    key: key.map(|(k, _)| k),
                    has_group,
                }),
                _ => None,
            }
        }
        "print" => {
            let stderr = match get("standard-error") {
                None => false,
                Some((_, v)) if v == "false" => false,
                Some((_, v)) if v == "true" => true,
                Some((o, v)) => {
                    problems.push(Problem::new(
                        o.value_at,
                        &construct,
                        format!("'standard-error' is 'true' or 'false', not '{v}'"),
                    ));
                    false
                }
            };
            Some(Connector::Print { stderr })
        }
        _ => Some(Connector::Blackhole),
    };
    match connector {
        Some(c) if problems.is_empty() => Ok(c),
        _ => Err(problems),
    }
}
