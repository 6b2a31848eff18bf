//! The SQL front end: a job written as Flink SQL (`CREATE TABLE`, `INSERT INTO … SELECT`, `SET`,
//! `EXECUTE STATEMENT SET`) is parsed with `sqlparser` ([`parse`]), its tables checked
//! ([`catalog`]) and its queries planned ([`plan`]) onto the same [`Job`] a TOML file gives, so
//! it runs on the same operators. Errors name the file, line, column and construct. See
//! `docs/sql.md` for what is supported.

mod catalog;
mod error;
mod expr;
mod parse;
mod plan;
mod time;
mod types;
mod window;

use std::path::Path;
use std::time::Duration;

use sha2::Digest as _;

use crate::job::{Job, JobErrors};
use catalog::Context;
use error::{Problem, job_errors};
use parse::{Statement, TableOption};

/// The only time zone a job runs in: window bounds and `TIMESTAMP` literals are UTC.
const TIME_ZONE: &str = "UTC";

/// Validates SQL job text, taking `${VAR}` from `vars`; `path` locates relative paths and names
/// the file in messages.
pub fn parse(
    path: &Path,
    text: &str,
    vars: &dyn Fn(&str) -> Option<String>,
) -> Result<Job, JobErrors> {
    let statements = parse::statements(text).map_err(|p| job_errors(path, vec![p]))?;
    let context = Context { path, vars };
    let mut problems = Vec::new();
    let mut tables: Vec<catalog::Table> = Vec::new();
    let mut broken = Vec::new();
    let mut inserts = Vec::new();
    let mut name = None;
    for statement in statements {
        match statement {
            Statement::CreateTable(def) => {
                let table_name = def.name.value.clone();
                if tables.iter().any(|t| t.name == table_name) || broken.contains(&table_name) {
                    problems.push(Problem::new(
                        def.name.span,
                        format!("CREATE TABLE {table_name}"),
                        format!("table `{table_name}` is declared twice"),
                    ));
                    continue;
                }
                match catalog::table(&def, &context) {
                    Ok(table) => tables.push(table),
                    Err(mut p) => {
                        problems.append(&mut p);
                        broken.push(table_name);
                    }
                }
            }
            Statement::Insert(insert) => inserts.push(insert),
            Statement::Set(option) => match setting(&option, &context) {
                Ok(Some(n)) => name = Some(n),
                Ok(None) => {}
                Err(p) => problems.push(p),
            },
        }
    }
    let mut planner = plan::Planner::new(&tables, &broken);
    for insert in &inserts {
        planner.insert(insert);
    }
    let mut planned = planner.finish();
    problems.append(&mut planned.problems);
    if inserts.is_empty() && problems.is_empty() {
        let end = text.lines().count().max(1) as u64;
        let at = sqlparser::tokenizer::Location::new(end, 1);
        problems.push(Problem::new(
            sqlparser::tokenizer::Span::new(at, at),
            "INSERT",
            "the job computes nothing: add an INSERT INTO … SELECT …",
        ));
    }
    if !problems.is_empty() {
        return Err(job_errors(path, problems));
    }
    let name = name.unwrap_or_else(|| {
        path.file_stem()
            .map_or("sql".into(), |s| s.to_string_lossy().into_owned())
    });
    Ok(Job {
        name,
        tick: 10,
        commit_interval: Duration::from_secs(1),
        dead_letter: None,
        sources: planned.sources,
        metrics: planned.metrics,
        fraud: Vec::new(),
        commands: Vec::new(),
        orchestrators: Vec::new(),
        routes: planned.routes,
        views: Vec::new(),
        enrich: Vec::new(),
        server: None,
        sinks: planned.sinks,
        notifications: Vec::new(),
        checkpoints: None,
        digest: sha2::Sha256::digest(text.as_bytes()).into(),
    })
}

/// `SET 'key' = 'value'`: the time zone (UTC only) or the job's name (`Some`).
fn setting(option: &TableOption, context: &Context) -> Result<Option<String>, Problem> {
    let value = context.expand(&option.value, option.value_at, "SET")?;
    match option.key.as_str() {
        "table.local-time-zone" if value == TIME_ZONE => Ok(None),
        "table.local-time-zone" => Err(Problem::new(
            option.value_at,
            "SET 'table.local-time-zone'",
            format!("time zone '{value}' is not supported: jobs run in 'UTC'"),
        )),
        "pipeline.name" => Ok(Some(value)),
        "parallelism.default" => Err(Problem::new(
            option.key_at,
            "SET 'parallelism.default'",
            "parallelism is not a job setting: run with `-w` (threads) and `-n` (processes)",
        )),
        other => Err(Problem::new(
            option.key_at,
            format!("SET '{other}'"),
            format!(
                "setting '{other}' is not supported: a job takes 'table.local-time-zone' (UTC) \
                 and 'pipeline.name'"
            ),
        )),
    }
}
