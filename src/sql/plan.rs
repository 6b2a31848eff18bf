//! Planning: each `INSERT INTO sink SELECT …` becomes a windowed metric (a query over a window
//! table function) or a route (a filter and projection without a window), reading a source
//! table and writing a sink table; then the tables in use become the job's sources and sinks.

use std::time::Duration;

use sqlparser::ast::{
    Expr, Function, GroupByExpr, ObjectName, Query, Select, SelectItem, SetExpr, Spanned as _,
    TableFactor,
};
use sqlparser::tokenizer::Span;

use super::catalog::{ColumnRef, Connector, Table};
use super::error::Problem;
use super::expr::Translator;
use super::parse::{Insert, call_args};
use super::time::interval_millis;
use super::types::SqlType;
use super::window::{Item, Unit, Windowed};
use crate::expr::{Expression, Predicate, Scope};
use crate::job::{
    AggregateSpec, MAX_PANES, MetricSpec, RouteSpec, Selection, SinkSpec, SourceKind, SourceSpec,
};
use crate::operators::aggregate::AggregateKind;
use crate::operators::window::WindowSpec;
use crate::record::{Field, FieldType, Schema};
use crate::sinks::SinkKind;
use crate::sinks::discard::DiscardSink;
use crate::sinks::file::FileTarget;
use crate::sinks::format::Format;
use crate::sinks::kafka::KafkaSinkConfig;

/// File sources are read as this many interleaved splits per file, as the TOML examples do, so
/// that two workers share a file.
const FILE_SPLITS: usize = 2;
/// A worker whose share of a file source is this far ahead in event time waits for the others.
const FILE_MAX_DRIFT: Duration = Duration::from_secs(5);

/// What the job's statements compute, before the sources' schemas are known.
pub(super) struct Planner<'a> {
    tables: &'a [Table],
    /// Tables whose declaration failed: statements naming them are skipped, not reported again.
    broken: &'a [String],
    /// The problems found.
    pub problems: Vec<Problem>,
    sources: Vec<SourceUse>,
    sinks: Vec<SinkUse>,
    metrics: Vec<MetricPlan>,
    routes: Vec<RoutePlan>,
}

/// The columns of a window's result row, named `c0`, `c1`, … by position, for HAVING.
struct RowScope(Vec<FieldType>);

impl Scope for RowScope {
    fn column(&self, name: &str) -> Result<(usize, FieldType), String> {
        name.strip_prefix('c')
            .and_then(|i| i.parse::<usize>().ok())
            .and_then(|i| Some((i, *self.0.get(i)?)))
            .ok_or_else(|| format!("no result column `{name}`"))
    }
}

/// What the statements compute, as the job's specs.
pub(super) struct Planned {
    /// The sources.
    pub sources: Vec<SourceSpec>,
    /// The windowed metrics.
    pub metrics: Vec<MetricSpec>,
    /// The routes.
    pub routes: Vec<RouteSpec>,
    /// The sinks.
    pub sinks: Vec<SinkSpec>,
    /// The problems found, in order.
    pub problems: Vec<Problem>,
}

/// A table read by the job, with the physical columns its queries read.
struct SourceUse {
    table: usize,
    used: Vec<usize>,
}

/// A table written by the job.
struct SinkUse {
    table: usize,
    /// How many statements write it.
    writers: usize,
}

/// A windowed aggregate, with table column indexes.
struct MetricPlan {
    name: String,
    source: usize,
    /// The `WHERE`, as CEL text, and its span.
    when: Option<(String, Span)>,
    group_by: Vec<usize>,
    window: WindowSpec,
    /// Each aggregate, over a physical column (`None`: `COUNT(*)`).
    aggregates: Vec<(AggregateKind, Option<usize>)>,
    having: Option<Predicate>,
    sink: usize,
    /// The sink of the late records, if the source table names one.
    late_sink: Option<usize>,
    columns: Vec<String>,
}

/// A filter without a window.
struct RoutePlan {
    name: String,
    source: usize,
    when: Option<(String, Span)>,
    /// When a SELECT item is computed, every sink column: its name, its value as CEL text, and
    /// the item's span.
    projection: Option<Vec<(String, String, Span)>>,
    sink: usize,
}

/// A SELECT item of a query without a window.
enum Selected {
    /// A physical column of the table, as it is.
    Column(usize),
    /// A value computed from the record: CEL text and its type.
    Computed(String, SqlType),
}

impl<'a> Planner<'a> {
    /// A planner over the declared `tables`.
    pub(super) fn new(tables: &'a [Table], broken: &'a [String]) -> Self {
        Planner {
            tables,
            broken,
            problems: Vec::new(),
            sources: Vec::new(),
            sinks: Vec::new(),
            metrics: Vec::new(),
            routes: Vec::new(),
        }
    }

    /// Plans one `INSERT`.
    pub(super) fn insert(&mut self, insert: &Insert) {
        if let Err(p) = self.try_insert(insert) {
            self.problems.push(p);
        }
    }

    /// The table `name` names; `Ok(None)` when its declaration failed.
    fn table(&self, name: &ObjectName, construct: &str) -> Result<Option<usize>, Problem> {
        let text = name.to_string().replace('`', "");
        if let Some(i) = self.tables.iter().position(|t| t.name == text) {
            return Ok(Some(i));
        }
        if self.broken.contains(&text) {
            return Ok(None);
        }
        Err(Problem::new(
            name.span(),
            construct,
            format!("no table named `{text}`: declare it with CREATE TABLE first"),
        ))
    }

    fn try_insert(&mut self, insert: &Insert) -> Result<(), Problem> {
        let construct = format!("INSERT INTO {}", insert.sink);
        let Some(sink_table) = self.table(&insert.sink, &construct)? else {
            return Ok(());
        };
        let select = select_of(&insert.query, &construct)?;
        let extras = [
            (
                matches!(select.group_by, GroupByExpr::All(_)),
                "GROUP BY ALL",
            ),
            (select.qualify.is_some(), "QUALIFY"),
            (!select.named_window.is_empty(), "WINDOW clauses"),
            (select.top.is_some(), "TOP"),
            (select.into.is_some(), "SELECT INTO"),
            (select.prewhere.is_some(), "PREWHERE"),
            (!select.lateral_views.is_empty(), "LATERAL VIEW"),
            (
                !select.sort_by.is_empty()
                    || !select.cluster_by.is_empty()
                    || !select.distribute_by.is_empty(),
                "SORT, CLUSTER and DISTRIBUTE BY",
            ),
        ];
        if let Some((_, what)) = extras.iter().find(|(present, _)| *present) {
            return Err(Problem::new(
                select.select_token.0.span,
                &construct,
                format!("{what} is not supported"),
            ));
        }
        if select.from.is_empty() {
            return Err(Problem::new(
                select.select_token.0.span,
                &construct,
                "a query reads a table: SELECT … FROM t, or FROM TABLE(TUMBLE(TABLE t, …))",
            ));
        }
        if select.from.len() != 1 || !select.from[0].joins.is_empty() {
            return Err(Problem::new(
                select.select_token.0.span,
                &construct,
                "joins are not supported: a query reads one table or one window of it",
            ));
        }
        if select.distinct.is_some() {
            return Err(Problem::new(
                select.select_token.0.span,
                &construct,
                "SELECT DISTINCT is not supported",
            ));
        }
        match &select.from[0].relation {
            TableFactor::Table {
                name,
                alias,
                args: None,
                version: None,
                with_hints,
                partitions,
                sample,
                with_ordinality,
                json_path,
                ..
            } => {
                if alias.is_some()
                    || !with_hints.is_empty()
                    || !partitions.is_empty()
                    || sample.is_some()
                    || *with_ordinality
                    || json_path.is_some()
                {
                    return Err(Problem::new(
                        name.span(),
                        &construct,
                        "a table is read by its name alone: aliases, hints, partitions and \
                         samples are not supported",
                    ));
                }
                let Some(source) = self.table(name, &construct)? else {
                    return Ok(());
                };
                self.route(insert, select, source, sink_table, construct)
            }
            TableFactor::Table { name, .. } => Err(Problem::new(
                name.span(),
                &construct,
                "temporal joins and table arguments (FOR SYSTEM_TIME AS OF) are not supported",
            )),
            TableFactor::TableFunction {
                expr: Expr::Function(f),
                ..
            } => self.windowed(insert, select, f, sink_table, construct),
            other => Err(Problem::new(
                other.span(),
                &construct,
                "a query reads a table or TABLE(TUMBLE|HOP|SESSION(TABLE t, DESCRIPTOR(rt), …))",
            )),
        }
    }

    /// The index of the source reading `table`, checked on first use.
    fn source(&mut self, table: usize, at: Span, construct: &str) -> Result<usize, Problem> {
        if let Some(i) = self.sources.iter().position(|s| s.table == table) {
            return Ok(i);
        }
        let t = &self.tables[table];
        if self.sinks.iter().any(|s| s.table == table) {
            return Err(Problem::new(
                at,
                construct,
                format!("table `{}` is both written and read: not supported", t.name),
            ));
        }
        match &t.connector {
            Connector::Filesystem {
                format: Format::Csv,
                format_at,
                ..
            } => {
                return Err(Problem::new(
                    *format_at,
                    format!("CREATE TABLE {}", t.name),
                    "a filesystem source reads format 'json' only",
                ));
            }
            Connector::Kafka {
                format: Format::Csv,
                ..
            } => {
                return Err(Problem::new(
                    t.at,
                    format!("CREATE TABLE {}", t.name),
                    "a kafka source reads format 'json' only",
                ));
            }
            Connector::Kafka {
                has_group: false, ..
            } => {
                return Err(Problem::new(
                    t.at,
                    format!("CREATE TABLE {}", t.name),
                    "a kafka source needs 'properties.group.id': it commits its offsets there",
                ));
            }
            Connector::Print { .. } | Connector::Blackhole => {
                return Err(Problem::new(
                    at,
                    construct,
                    format!(
                        "table `{}` is a print or blackhole sink: it cannot be read",
                        t.name
                    ),
                ));
            }
            _ => {}
        }
        let Some(watermark) = &t.watermark else {
            return Err(Problem::new(
                at,
                construct,
                format!(
                    "table `{}` has no WATERMARK: Eddy reads every source in event time; declare \
                     one, e.g. `rt AS TO_TIMESTAMP_LTZ(ts, 3), WATERMARK FOR rt AS rt - INTERVAL \
                     '2' SECOND`",
                    t.name
                ),
            ));
        };
        self.sources.push(SourceUse {
            table,
            used: vec![watermark.field],
        });
        Ok(self.sources.len() - 1)
    }

    /// The index of the sink writing `table`, checked on first use.
    fn sink(&mut self, table: usize, at: Span, construct: &str) -> Result<usize, Problem> {
        let t = &self.tables[table];
        if self.sources.iter().any(|s| s.table == table) {
            return Err(Problem::new(
                at,
                construct,
                format!("table `{}` is both read and written: not supported", t.name),
            ));
        }
        if let Some(i) = self.sinks.iter().position(|s| s.table == table) {
            if matches!(t.connector, Connector::Filesystem { .. }) {
                return Err(Problem::new(
                    at,
                    construct,
                    format!(
                        "filesystem table `{}` is written by an earlier INSERT: a file takes one query",
                        t.name
                    ),
                ));
            }
            self.sinks[i].writers += 1;
            return Ok(i);
        }
        if let Connector::Filesystem { path, .. } = &t.connector
            && (path.as_os_str().to_string_lossy().ends_with('/') || path.is_dir())
        {
            return Err(Problem::new(
                t.at,
                format!("CREATE TABLE {}", t.name),
                format!(
                    "'path' {} is a directory: Eddy's filesystem sink writes one file, so name \
                     the file",
                    path.display()
                ),
            ));
        }
        self.sinks.push(SinkUse { table, writers: 1 });
        Ok(self.sinks.len() - 1)
    }

    /// Checks that the query's `types` fit the sink's columns, in order.
    fn fit(
        &self,
        sink: &Table,
        types: &[(SqlType, Span)],
        at: Span,
        construct: &str,
    ) -> Result<(), Problem> {
        if sink.columns.len() != types.len() || !sink.computed.is_empty() {
            return Err(Problem::new(
                at,
                construct,
                format!(
                    "table `{}` has {} columns but the query gives {}",
                    sink.name,
                    sink.columns.len() + sink.computed.len(),
                    types.len()
                ),
            ));
        }
        for (column, (ty, span)) in sink.columns.iter().zip(types) {
            if !ty.fits(column.ty) {
                let hint = if matches!(ty, SqlType::Timestamp | SqlType::TimestampLtz) {
                    ": Eddy writes times as epoch milliseconds, e.g. CAST(TIMESTAMPDIFF(SECOND, \
                     TIMESTAMP '1970-01-01 00:00:00', window_start) AS BIGINT) * 1000"
                } else {
                    ""
                };
                return Err(Problem::new(
                    *span,
                    construct,
                    format!(
                        "type mismatch: column `{}` of `{}` is {}, but the query gives {ty}{hint}",
                        column.name, sink.name, column.ty
                    ),
                ));
            }
        }
        Ok(())
    }

    fn route(
        &mut self,
        insert: &Insert,
        select: &Select,
        source_table: usize,
        sink_table: usize,
        construct: String,
    ) -> Result<(), Problem> {
        let table = &self.tables[source_table];
        let sink = &self.tables[sink_table];
        if let Some(e) = group_by_exprs(&select.group_by).first() {
            return Err(Problem::new(
                e.span(),
                &construct,
                "GROUP BY without a window is not supported: aggregate over TUMBLE, HOP or \
                 SESSION",
            ));
        }
        if let Some(h) = &select.having {
            return Err(Problem::new(
                h.span(),
                &construct,
                "HAVING needs GROUP BY over a window",
            ));
        }
        let source = self.source(source_table, select.from[0].relation.span(), &construct)?;
        let mut translator = Translator {
            table,
            construct: &construct,
            used: Vec::new(),
        };
        let mut items: Vec<(Selected, Span)> = Vec::new();
        for item in &select.projection {
            match item {
                SelectItem::Wildcard(_) => items
                    .extend((0..table.columns.len()).map(|i| (Selected::Column(i), item.span()))),
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                    items.push((selected(&mut translator, e)?, e.span()))
                }
                other => {
                    return Err(Problem::new(
                        other.span(),
                        &construct,
                        format!("`{other}` is not supported"),
                    ));
                }
            }
        }
        let types: Vec<(SqlType, Span)> = items
            .iter()
            .map(|(item, span)| match item {
                Selected::Column(i) => (table.columns[*i].ty, *span),
                Selected::Computed(_, ty) => (*ty, *span),
            })
            .collect();
        self.fit(sink, &types, insert.at, &construct)?;
        // A route writes the source's columns under their own names; a computed item, or a
        // column the sink names otherwise (Flink inserts by position), needs a projection.
        let computes = sink
            .columns
            .iter()
            .zip(&items)
            .any(|(column, (item, _))| match item {
                Selected::Column(i) => column.name != table.columns[*i].name,
                Selected::Computed(..) => true,
            });
        let projection = computes.then(|| {
            sink.columns
                .iter()
                .zip(&items)
                .map(|(column, (item, span))| {
                    let text = match item {
                        Selected::Column(i) => table.columns[*i].name.clone(),
                        Selected::Computed(text, _) => text.clone(),
                    };
                    (column.name.clone(), text, *span)
                })
                .collect()
        });
        let when = match &select.selection {
            Some(e) => Some((translator.condition(e)?, e.span())),
            None => None,
        };
        let mut used = translator.used;
        used.extend(items.iter().filter_map(|(item, _)| match item {
            Selected::Column(i) => Some(*i),
            Selected::Computed(..) => None,
        }));
        let sink = self.sink(sink_table, insert.at, &construct)?;
        self.use_columns(source, &used);
        self.routes.push(RoutePlan {
            name: self.tables[sink_table].name.clone(),
            source,
            when,
            projection,
            sink,
        });
        Ok(())
    }

    /// A file is read or written by one table at a time: a sink on a file a source reads, or on
    /// a file another sink writes, is a problem (paths compared as the files they name).
    fn check_files(&mut self) {
        let tables = self.tables;
        let file = |table: usize| match &tables[table].connector {
            Connector::Filesystem { path, .. } => Some(crate::job::file_identity(path)),
            _ => None,
        };
        let mut seen: Vec<(std::path::PathBuf, usize)> = self
            .sources
            .iter()
            .filter_map(|s| Some((file(s.table)?, s.table)))
            .collect();
        for s in &self.sinks {
            let Some(path) = file(s.table) else { continue };
            if let Some((_, other)) = seen.iter().find(|(p, _)| *p == path) {
                let t = &tables[s.table];
                self.problems.push(Problem::new(
                    t.at,
                    format!("CREATE TABLE {}", t.name),
                    format!(
                        "table `{}` names the file {} that table `{}` also uses: a file is read \
                         or written by one table",
                        t.name,
                        path.display(),
                        tables[*other].name
                    ),
                ));
            }
            seen.push((path, s.table));
        }
    }

    fn use_columns(&mut self, source: usize, columns: &[usize]) {
        let used = &mut self.sources[source].used;
        for &c in columns {
            if !used.contains(&c) {
                used.push(c);
            }
        }
    }

    fn windowed(
        &mut self,
        insert: &Insert,
        select: &Select,
        tvf: &Function,
        sink_table: usize,
        construct: String,
    ) -> Result<(), Problem> {
        let problem = |at: Span, message: String| Problem::new(at, &construct, message);
        let kind = tvf.name.to_string().to_ascii_uppercase();
        let args = call_args(&tvf.args)
            .ok_or_else(|| problem(tvf.span(), format!("`{tvf}`: unexpected arguments")))?;
        let expected = match kind.as_str() {
            "TUMBLE" => "TUMBLE(TABLE t, DESCRIPTOR(rt), INTERVAL 'size' unit)",
            "HOP" => "HOP(TABLE t, DESCRIPTOR(rt), INTERVAL 'slide' unit, INTERVAL 'size' unit)",
            "SESSION" => "SESSION(TABLE t, DESCRIPTOR(rt), INTERVAL 'gap' unit)",
            "CUMULATE" => {
                return Err(problem(
                    tvf.span(),
                    "CUMULATE windows are not supported: use TUMBLE, HOP or SESSION".into(),
                ));
            }
            other => {
                return Err(problem(
                    tvf.span(),
                    format!(
                        "table function `{other}` is not supported: use TUMBLE, HOP or SESSION"
                    ),
                ));
            }
        };
        let intervals = if kind == "HOP" { 2 } else { 1 };
        if args.len() > 2 + intervals {
            return Err(problem(
                args[2 + intervals].span(),
                "window offsets are not supported".into(),
            ));
        }
        let [table_arg, descriptor, ..] = args.as_slice() else {
            return Err(problem(tvf.span(), format!("expected {expected}")));
        };
        if args.len() != 2 + intervals {
            return Err(problem(tvf.span(), format!("expected {expected}")));
        }
        let table_name = single_call_arg(table_arg, "TABLE")
            .and_then(|e| match e {
                Expr::Identifier(id) => Some(ObjectName::from(vec![id.clone()])),
                _ => None,
            })
            .ok_or_else(|| problem(table_arg.span(), format!("expected {expected}")))?;
        let Some(source_table) = self.table(&table_name, &construct)? else {
            return Ok(());
        };
        let table = &self.tables[source_table];
        let time = single_call_arg(descriptor, "DESCRIPTOR")
            .ok_or_else(|| problem(descriptor.span(), format!("expected {expected}")))?;
        let lengths: Vec<u64> = args[2..]
            .iter()
            .map(|e| match interval_millis(e) {
                Ok(0) => Err(problem(e.span(), "a window length must be positive".into())),
                Ok(ms) if ms % 1000 != 0 => Err(problem(
                    e.span(),
                    "window lengths are whole seconds (so window bounds are)".into(),
                )),
                Ok(ms) => Ok(ms),
                Err(m) => Err(problem(e.span(), m)),
            })
            .collect::<Result<_, _>>()?;
        let window = match (kind.as_str(), lengths.as_slice()) {
            ("TUMBLE", &[size]) => WindowSpec::Tumbling { size },
            ("HOP", &[slide, size]) => {
                if slide > size {
                    return Err(problem(
                        args[2].span(),
                        "a HOP window's slide must not exceed its size".into(),
                    ));
                }
                let panes = WindowSpec::Hopping { size, slide }.panes();
                if panes > MAX_PANES {
                    return Err(problem(
                        args[2].span(),
                        format!(
                            "a HOP window of {size} ms sliding by {slide} ms is made of {panes} \
                             panes of {} ms (their greatest common divisor), and a window has at \
                             most {MAX_PANES}: make the slide a larger divisor of the size",
                            size / panes
                        ),
                    ));
                }
                WindowSpec::Hopping { size, slide }
            }
            (_, &[gap]) => WindowSpec::Session { gap },
            _ => unreachable!("the argument count is checked above"),
        };
        let source = self.source(source_table, table_arg.span(), &construct)?;
        let time_name = self.tables[source_table]
            .watermark
            .as_ref()
            .map(|w| w.name.clone())
            .expect("a source has a watermark");
        match time {
            Expr::Identifier(id) if id.value == time_name => {}
            other => {
                return Err(problem(
                    other.span(),
                    format!(
                        "windows are over the table's time attribute `{time_name}` (its \
                         WATERMARK), not `{other}`"
                    ),
                ));
            }
        }
        let mut translator = Translator {
            table,
            construct: &construct,
            used: Vec::new(),
        };
        let when = match &select.selection {
            Some(e) => Some((translator.condition(e)?, e.span())),
            None => None,
        };
        let filtered = translator.used;
        let mut plan = Windowed {
            table,
            construct: construct.clone(),
            keys: Vec::new(),
            aggregates: Vec::new(),
        };
        let group = group_by_exprs(&select.group_by);
        let mut bounds = [false, false];
        for e in &group {
            match e {
                Expr::Identifier(id) if id.value == "window_start" => bounds[0] = true,
                Expr::Identifier(id) if id.value == "window_end" => bounds[1] = true,
                Expr::Identifier(id) => match table.column(&id.value) {
                    Some(ColumnRef::Physical(i)) => plan.keys.push(i),
                    Some(ColumnRef::Computed(_)) => {
                        return Err(problem(
                            e.span(),
                            format!(
                                "grouping by the time attribute `{}` is not supported",
                                id.value
                            ),
                        ));
                    }
                    None => return Err(problem(e.span(), table.unknown_column(&id.value))),
                },
                other => {
                    return Err(problem(
                        other.span(),
                        format!("GROUP BY takes columns, not `{other}`"),
                    ));
                }
            }
        }
        if bounds != [true, true] {
            let at = group
                .first()
                .map_or(select.select_token.0.span, |e| e.span());
            return Err(problem(
                at,
                "a windowed query groups by window_start and window_end (and its keys)".into(),
            ));
        }
        let mut items = Vec::new();
        for item in &select.projection {
            match item {
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                    items.push((plan.item(e)?, e.span()))
                }
                other => {
                    return Err(problem(
                        other.span(),
                        format!("`{other}` is not supported in a windowed query: name the columns"),
                    ));
                }
            }
        }
        let having = match &select.having {
            Some(h) => plan.having(h)?,
            None => Vec::new(),
        };
        let k = plan.keys.len();
        let position = |item: Item| match item {
            Item::Key(i) => i,
            Item::Bound { end, .. } => k + usize::from(end),
            Item::Aggregate(i) => k + 2 + i,
        };
        let mut types = Vec::new();
        for &((item, ty), span) in &items {
            if matches!(item, Item::Bound { .. }) && matches!(window, WindowSpec::Session { .. }) {
                return Err(problem(
                    span,
                    "selecting the bounds of SESSION windows is not supported: they are not \
                     whole seconds, which TIMESTAMPDIFF(SECOND, …) would truncate"
                        .into(),
                ));
            }
            if let Item::Bound {
                unit: Unit::Seconds,
                ..
            } = item
            {
                return Err(problem(
                    span,
                    "window bounds in epoch seconds are not supported: multiply by 1000 for \
                     epoch milliseconds"
                        .into(),
                ));
            }
            types.push((ty, span));
        }
        let sink = &self.tables[sink_table];
        self.fit(sink, &types, insert.at, &construct)?;
        let width = k + 2 + plan.aggregates.len();
        let mut names: Vec<Option<String>> = vec![None; width];
        for (column, &((item, _), span)) in sink.columns.iter().zip(&items) {
            let p = position(item);
            if names[p].is_some() {
                return Err(problem(
                    span,
                    "selecting the same value twice is not supported".into(),
                ));
            }
            names[p] = Some(column.name.clone());
        }
        let mut columns: Vec<String> = Vec::with_capacity(width);
        for (p, name) in names.into_iter().enumerate() {
            let name = name.unwrap_or_else(|| {
                let mut unselected = format!("#{p}");
                while sink.columns.iter().any(|c| c.name == unselected) {
                    unselected.push('#');
                }
                unselected
            });
            columns.push(name);
        }
        let having = if having.is_empty() {
            None
        } else {
            let mut types: Vec<FieldType> = plan
                .keys
                .iter()
                .map(|&k| table.columns[k].ty.field_type())
                .collect();
            types.extend([FieldType::Int, FieldType::Int]);
            types.extend(plan.aggregates.iter().map(|a| a.2.field_type()));
            let text: Vec<String> = having
                .iter()
                .map(|(item, op, literal)| format!("c{} {op} {literal}", position(*item)))
                .collect();
            let at = select.having.as_ref().map_or(insert.at, |h| h.span());
            let predicate = Predicate::compile_in(&text.join(" && "), &RowScope(types))
                .map_err(|e| problem(at, format!("HAVING does not compile: {}", e.message)))?;
            Some(predicate)
        };
        let name = sink.name.clone();
        let Windowed {
            keys, aggregates, ..
        } = plan;
        let mut used: Vec<usize> = keys.clone();
        used.extend(aggregates.iter().filter_map(|a| a.1));
        used.extend(filtered);
        let sink = self.sink(sink_table, insert.at, &construct)?;
        self.use_columns(source, &used);
        let late_sink = self.late_sink(source_table, source, &construct)?;
        self.metrics.push(MetricPlan {
            name,
            source,
            when,
            group_by: keys,
            window,
            aggregates: aggregates.into_iter().map(|(k, f, _)| (k, f)).collect(),
            having,
            sink,
            late_sink,
            columns,
        });
        Ok(())
    }

    /// The sink of the late records of windows over `table` (read as `source`), if its
    /// `'eddy.late-sink'` names one: a table whose columns are columns of `table`.
    fn late_sink(
        &mut self,
        table: usize,
        source: usize,
        construct: &str,
    ) -> Result<Option<usize>, Problem> {
        let t = &self.tables[table];
        let Some((name, at)) = &t.late_sink else {
            return Ok(None);
        };
        let option = format!("CREATE TABLE {}", t.name);
        let Some(late) = self.tables.iter().position(|l| l.name == *name) else {
            return Err(Problem::new(
                *at,
                option,
                format!("no table named `{name}`: declare the late records' table"),
            ));
        };
        let mut columns = Vec::new();
        for c in &self.tables[late].columns {
            match t.column(&c.name) {
                Some(ColumnRef::Physical(i)) if t.columns[i].ty == c.ty => columns.push(i),
                _ => {
                    return Err(Problem::new(
                        *at,
                        option,
                        format!(
                            "the late records' table `{name}` has column `{} {}`, which `{}` \
                             has not: it takes columns of the records as they are",
                            c.name, c.ty, t.name
                        ),
                    ));
                }
            }
        }
        let sink = self.sink(late, *at, construct)?;
        self.use_columns(source, &columns);
        Ok(Some(sink))
    }

    /// The sources, metrics, routes and sinks planned, with every problem found.
    pub(super) fn finish(mut self) -> Planned {
        self.check_files();
        let mut sources = Vec::new();
        let mut record_index: Vec<Vec<Option<usize>>> = Vec::new();
        for s in &self.sources {
            let table = &self.tables[s.table];
            let watermark = table.watermark.as_ref().expect("a source has a watermark");
            let mut index = vec![None; table.columns.len()];
            let mut fields = Vec::new();
            for (i, c) in table.columns.iter().enumerate() {
                if s.used.contains(&i) {
                    index[i] = Some(fields.len());
                    fields.push(Field {
                        name: c.name.as_str().into(),
                        ty: c.ty.field_type(),
                        required: c.required || i == watermark.field,
                    });
                }
            }
            let schema = Schema::new(fields, &table.columns[watermark.field].name)
                .expect("the watermark's column is an integer or timestamp field");
            let (kind, max_drift) = match &table.connector {
                Connector::Filesystem { path, .. } => (
                    SourceKind::File {
                        paths: vec![path.clone()],
                        splits: FILE_SPLITS,
                    },
                    Some(FILE_MAX_DRIFT),
                ),
                Connector::Kafka {
                    topic, properties, ..
                } => (
                    SourceKind::Kafka {
                        properties: properties.clone(),
                        topics: vec![topic.clone()],
                    },
                    None,
                ),
                Connector::Print { .. } | Connector::Blackhole => {
                    unreachable!("checked when the source was first used")
                }
            };
            sources.push(SourceSpec {
                name: table.name.clone(),
                kind,
                schema: std::sync::Arc::new(schema),
                out_of_orderness: Duration::from_millis(watermark.delay_ms),
                idle_timeout: None,
                max_drift,
                max_record_bytes: SourceSpec::DEFAULT_MAX_RECORD_BYTES,
            });
            record_index.push(index);
        }
        let field = |source: usize, column: usize| {
            record_index[source][column].expect("every column a query reads is in its schema")
        };
        let mut metrics = Vec::new();
        for m in &self.metrics {
            let when = match filter(m.when.as_ref(), &sources[m.source].schema, &m.name) {
                Ok(when) => when,
                Err(p) => {
                    self.problems.push(p);
                    continue;
                }
            };
            metrics.push(MetricSpec {
                name: m.name.clone(),
                source: m.source,
                when,
                group_by: m.group_by.iter().map(|&c| field(m.source, c)).collect(),
                window: m.window,
                lateness: 0,
                aggregates: m
                    .aggregates
                    .iter()
                    .enumerate()
                    .map(|(i, &(kind, column))| AggregateSpec {
                        name: m.columns[m.group_by.len() + 2 + i].clone(),
                        kind,
                        field: column.map_or(sources[m.source].schema.time_index(), |c| {
                            field(m.source, c)
                        }),
                    })
                    .collect(),
                having: m.having.clone(),
                sinks: vec![m.sink],
                late_sink: m.late_sink,
                columns: m.columns.clone(),
            });
        }
        let mut routes = Vec::new();
        for r in &self.routes {
            let select = match filter(r.when.as_ref(), &sources[r.source].schema, &r.name) {
                Ok(None) => Selection::Every,
                Ok(Some(p)) => Selection::When(p),
                Err(p) => {
                    self.problems.push(p);
                    continue;
                }
            };
            let projection =
                match project(r.projection.as_deref(), &sources[r.source].schema, &r.name) {
                    Ok(projection) => projection,
                    Err(p) => {
                        self.problems.push(p);
                        continue;
                    }
                };
            routes.push(RouteSpec {
                name: r.name.clone(),
                source: r.source,
                select,
                projection,
                sinks: vec![r.sink],
            });
        }
        let sinks = self
            .sinks
            .iter()
            .map(|s| {
                let table = &self.tables[s.table];
                let (kind, format, key) = match &table.connector {
                    Connector::Filesystem { path, format, .. } => (
                        SinkKind::File(FileTarget::Path(path.clone())),
                        *format,
                        None,
                    ),
                    Connector::Kafka {
                        topic,
                        properties,
                        format,
                        key,
                        ..
                    } => (
                        SinkKind::Kafka(KafkaSinkConfig {
                            properties: properties.clone(),
                            topic: topic.clone(),
                            delivery: None,
                        }),
                        *format,
                        key.clone(),
                    ),
                    Connector::Print { stderr } => (
                        SinkKind::File(if *stderr {
                            FileTarget::Stderr
                        } else {
                            FileTarget::Stdout
                        }),
                        Format::Json,
                        None,
                    ),
                    Connector::Blackhole => (SinkKind::Discard(DiscardSink {}), Format::Json, None),
                };
                SinkSpec {
                    name: table.name.clone(),
                    kind,
                    format,
                    key,
                    columns: Some(table.columns.iter().map(|c| c.name.clone()).collect()),
                    order_by: Vec::new(),
                }
            })
            .collect();
        Planned {
            sources,
            metrics,
            routes,
            sinks,
            problems: self.problems,
        }
    }
}

/// The query's SELECT, refusing what a streaming job cannot run.
fn select_of<'q>(query: &'q Query, construct: &str) -> Result<&'q Select, Problem> {
    if let Some(with) = &query.with {
        return Err(Problem::new(
            with.span(),
            construct,
            "WITH (common table expressions) is not supported",
        ));
    }
    if let Some(order) = &query.order_by {
        return Err(Problem::new(
            order.span(),
            construct,
            "ORDER BY is not supported in a streaming query",
        ));
    }
    if let Some(limit) = &query.limit_clause {
        return Err(Problem::new(
            limit.span(),
            construct,
            "LIMIT is not supported in a streaming query",
        ));
    }
    if query.fetch.is_some() || !query.locks.is_empty() || query.for_clause.is_some() {
        return Err(Problem::new(
            query.body.span(),
            construct,
            "FETCH, FOR UPDATE and FOR XML/JSON are not supported in a streaming query",
        ));
    }
    match &*query.body {
        SetExpr::Select(select) => Ok(select),
        other => Err(Problem::new(
            other.span(),
            construct,
            "UNION, INTERSECT, EXCEPT and VALUES are not supported: write one SELECT",
        )),
    }
}

/// The predicate of a query's `WHERE` (its CEL text and span) over the records of `schema`; a
/// text that does not compile is a problem of `INSERT INTO sink`.
fn filter(
    when: Option<&(String, Span)>,
    schema: &Schema,
    sink: &str,
) -> Result<Option<Predicate>, Problem> {
    let Some((text, at)) = when else {
        return Ok(None);
    };
    Predicate::compile(text, schema).map(Some).map_err(|e| {
        Problem::new(
            *at,
            format!("INSERT INTO {sink}"),
            format!("the filter does not compile: {}", e.message),
        )
    })
}

/// The columns a route computes (each sink column's name, CEL text and span) over the records of
/// `schema`; a text that does not compile is a problem of `INSERT INTO sink`.
fn project(
    projection: Option<&[(String, String, Span)]>,
    schema: &Schema,
    sink: &str,
) -> Result<Option<Vec<(String, Expression)>>, Problem> {
    let Some(projection) = projection else {
        return Ok(None);
    };
    let compiled = projection.iter().map(|(name, text, at)| {
        let value = Expression::compile_in(text, schema).map_err(|e| {
            Problem::new(
                *at,
                format!("INSERT INTO {sink}"),
                format!("the column does not compile: {}", e.message),
            )
        })?;
        Ok((name.clone(), value))
    });
    compiled.collect::<Result<_, _>>().map(Some)
}

/// What the SELECT item `e` of a query without a window takes from the record: a physical column
/// as it is, or a value it computes.
fn selected(translator: &mut Translator, e: &Expr) -> Result<Selected, Problem> {
    let (table, construct) = (translator.table, translator.construct);
    match e {
        Expr::Identifier(id) => match table.column(&id.value) {
            Some(ColumnRef::Physical(i)) => Ok(Selected::Column(i)),
            Some(ColumnRef::Computed(_)) => Err(Problem::new(
                e.span(),
                construct,
                format!(
                    "writing the time attribute `{}` is not supported: select the column it is \
                     computed from",
                    id.value
                ),
            )),
            None => Err(Problem::new(
                e.span(),
                construct,
                table.unknown_column(&id.value),
            )),
        },
        _ => {
            let (text, ty) = translator.value(e)?;
            Ok(Selected::Computed(text, ty))
        }
    }
}

/// The expressions of `GROUP BY` (`GROUP BY ALL` is refused before).
fn group_by_exprs(group_by: &GroupByExpr) -> Vec<&Expr> {
    match group_by {
        GroupByExpr::Expressions(exprs, _) => exprs.iter().collect(),
        GroupByExpr::All(_) => Vec::new(),
    }
}

/// The single argument of `NAME(arg)`.
fn single_call_arg<'e>(expr: &'e Expr, name: &str) -> Option<&'e Expr> {
    let Expr::Function(f) = expr else { return None };
    if !f.name.to_string().eq_ignore_ascii_case(name) {
        return None;
    }
    match call_args(&f.args)?.as_slice() {
        [only] => Some(only),
        _ => None,
    }
}
