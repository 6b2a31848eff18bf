//! Statements of a SQL job file, parsed with `sqlparser`'s generic dialect. Flink's own syntax
//! that the dialect does not know is read here: `CREATE TABLE` with computed columns and
//! `WATERMARK FOR`, `SET 'key' = 'value'`, `EXECUTE STATEMENT SET BEGIN … END`, and the
//! `TABLE t` argument of window table functions.

use sqlparser::ast::{
    DataType, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, ObjectName, Query,
    Statement as SqlStatement,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Span, Token, TokenWithSpan, Tokenizer};

use super::error::Problem;

/// One statement of the file.
pub(super) enum Statement {
    /// `CREATE TABLE`.
    CreateTable(Box<TableDef>),
    /// `INSERT INTO sink SELECT …`.
    Insert(Insert),
    /// `SET 'key' = 'value'`.
    Set(TableOption),
}

/// `CREATE TABLE name (…) WITH (…)` as written.
pub(super) struct TableDef {
    /// The table's name.
    pub name: Ident,
    /// Physical columns, in order.
    pub columns: Vec<ColumnDecl>,
    /// Computed columns: `name AS expr`.
    pub computed: Vec<(Ident, Expr)>,
    /// `WATERMARK FOR column AS expr`.
    pub watermark: Option<(Ident, Expr)>,
    /// The `WITH` options.
    pub options: Vec<TableOption>,
}

/// A physical column: `name TYPE [NOT NULL]`.
pub(super) struct ColumnDecl {
    /// Its name.
    pub name: Ident,
    /// Its type as written.
    pub ty: DataType,
    /// Where the type is written.
    pub ty_at: Span,
    /// `NOT NULL`: a record without it is dead-lettered.
    pub not_null: bool,
}

/// `'key' = 'value'`, in `WITH (…)` or `SET`.
pub(super) struct TableOption {
    /// The key.
    pub key: String,
    /// The value, as written (before `${VAR}` expansion).
    pub value: String,
    /// Where the key is written.
    pub key_at: Span,
    /// Where the value is written.
    pub value_at: Span,
}

/// `INSERT INTO sink SELECT …`.
pub(super) struct Insert {
    /// The sink table.
    pub sink: ObjectName,
    /// Where `INSERT` is written.
    pub at: Span,
    /// The query.
    pub query: Box<Query>,
}

/// The statements of `text`, or the first syntax error.
pub(super) fn statements(text: &str) -> Result<Vec<Statement>, Problem> {
    let last_line = text.lines().count().max(1);
    let last_column = text.lines().last().map_or(0, |l| l.chars().count()) + 1;
    let end = Location::new(last_line as u64, last_column as u64);
    all_statements(text).map_err(|p| p.or_at(end))
}

fn all_statements(text: &str) -> Result<Vec<Statement>, Problem> {
    let dialect = GenericDialect {};
    let tokens = Tokenizer::new(&dialect, text)
        .tokenize_with_location()
        .map_err(|e| Problem::new(Span::new(e.location, e.location), "syntax", e.message))?;
    let mut parser = Parser::new(&dialect).with_tokens_with_locations(table_arguments(tokens));
    let mut all = Vec::new();
    loop {
        while parser.consume_token(&Token::SemiColon) {}
        if parser.peek_token().token == Token::EOF {
            return Ok(all);
        }
        if parser.parse_keywords(&[Keyword::EXECUTE, Keyword::STATEMENT, Keyword::SET]) {
            parser.expect_keyword(Keyword::BEGIN).map_err(syntax)?;
            loop {
                while parser.consume_token(&Token::SemiColon) {}
                if parser.parse_keyword(Keyword::END) {
                    break;
                }
                let at = parser.peek_token().span;
                match parser.parse_statement().map_err(syntax)? {
                    SqlStatement::Insert(insert) => all.push(insert_of(insert, at)?),
                    other => {
                        return Err(Problem::new(
                            at,
                            "EXECUTE STATEMENT SET",
                            format!("a statement set holds INSERT statements only, not `{other}`"),
                        ));
                    }
                }
                end_of_statement(&mut parser, true)?;
            }
        } else {
            all.push(statement(&mut parser)?);
        }
        end_of_statement(&mut parser, false)?;
    }
}

/// One statement other than a statement set.
fn statement(parser: &mut Parser) -> Result<Statement, Problem> {
    let at = parser.peek_token().span;
    if parser.parse_keywords(&[Keyword::CREATE, Keyword::TABLE]) {
        return create_table(parser).map(|t| Statement::CreateTable(Box::new(t)));
    }
    if parser.parse_keyword(Keyword::SET) {
        return set(parser).map(Statement::Set);
    }
    match parser.parse_statement().map_err(syntax)? {
        SqlStatement::Insert(insert) => insert_of(insert, at),
        SqlStatement::Query(_) => Err(Problem::new(
            at,
            "SELECT",
            "a query on its own writes nowhere: write `INSERT INTO sink SELECT …`",
        )),
        other => {
            let text = other.to_string();
            let first = text
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            Err(Problem::new(
                at,
                first.clone(),
                format!(
                    "`{first}` statements are not supported: a job holds CREATE TABLE, INSERT \
                     INTO, SET and EXECUTE STATEMENT SET"
                ),
            ))
        }
    }
}

/// A statement ends with `;` or the end of the file (or `END` in a statement set).
fn end_of_statement(parser: &mut Parser, in_set: bool) -> Result<(), Problem> {
    let next = parser.peek_token();
    match &next.token {
        Token::SemiColon | Token::EOF => Ok(()),
        Token::Word(w) if in_set && w.keyword == Keyword::END => Ok(()),
        other => Err(Problem::new(
            next.span,
            "syntax",
            format!("expected `;` at the end of the statement, found `{other}`"),
        )),
    }
}

fn insert_of(insert: sqlparser::ast::Insert, at: Span) -> Result<Statement, Problem> {
    let sqlparser::ast::TableObject::TableName(sink) = insert.table else {
        return Err(Problem::new(
            at,
            "INSERT",
            "insert into a table by its name",
        ));
    };
    let extras = insert.overwrite
        || insert.or.is_some()
        || insert.ignore
        || insert.table_alias.is_some()
        || insert.by_name
        || !insert.assignments.is_empty()
        || insert.partitioned.is_some()
        || insert.on.is_some()
        || insert.returning.is_some()
        || insert.replace_into;
    if extras {
        return Err(Problem::new(
            at,
            format!("INSERT INTO {sink}"),
            "only `INSERT INTO sink SELECT …` is supported (no OVERWRITE, PARTITION, ON \
             CONFLICT, RETURNING or aliases)",
        ));
    }
    if !insert.columns.is_empty() {
        return Err(Problem::new(
            at,
            format!("INSERT INTO {sink}"),
            "a column list after the sink table is not supported: select the sink's columns in \
             order",
        ));
    }
    let Some(query) = insert.source else {
        return Err(Problem::new(
            at,
            format!("INSERT INTO {sink}"),
            "only `INSERT INTO sink SELECT …` is supported",
        ));
    };
    Ok(Statement::Insert(Insert { sink, at, query }))
}

/// `SET 'key' = 'value'`, after `SET`.
fn set(parser: &mut Parser) -> Result<TableOption, Problem> {
    option(parser, "SET")
}

/// `'key' = 'value'`.
fn option(parser: &mut Parser, what: &str) -> Result<TableOption, Problem> {
    let (key, key_at) = quoted(parser, what, "a quoted key, e.g. 'connector'")?;
    parser.expect_token(&Token::Eq).map_err(syntax)?;
    let (value, value_at) = quoted(parser, what, "a quoted value")?;
    Ok(TableOption {
        key,
        value,
        key_at,
        value_at,
    })
}

/// A single-quoted string.
fn quoted(parser: &mut Parser, what: &str, expected: &str) -> Result<(String, Span), Problem> {
    let token = parser.next_token();
    match token.token {
        Token::SingleQuotedString(s) => Ok((s, token.span)),
        other => Err(Problem::new(
            token.span,
            what,
            format!("expected {expected}, found `{other}`"),
        )),
    }
}

/// `CREATE TABLE`, after those words.
fn create_table(parser: &mut Parser) -> Result<TableDef, Problem> {
    let _if_not_exists = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = parser.parse_identifier().map_err(syntax)?;
    let construct = format!("CREATE TABLE {name}");
    let mut table = TableDef {
        name,
        columns: Vec::new(),
        computed: Vec::new(),
        watermark: None,
        options: Vec::new(),
    };
    parser.expect_token(&Token::LParen).map_err(syntax)?;
    loop {
        let next = parser.peek_token();
        if word(parser, "WATERMARK") {
            parser.expect_keyword(Keyword::FOR).map_err(syntax)?;
            let column = parser.parse_identifier().map_err(syntax)?;
            parser.expect_keyword(Keyword::AS).map_err(syntax)?;
            let expr = parser.parse_expr().map_err(syntax)?;
            if table.watermark.is_some() {
                return Err(Problem::new(
                    next.span,
                    construct,
                    "a table takes one WATERMARK",
                ));
            }
            table.watermark = Some((column, expr));
        } else if parser.peek_keyword(Keyword::PRIMARY) || parser.peek_keyword(Keyword::CONSTRAINT)
        {
            return Err(Problem::new(
                next.span,
                construct,
                "PRIMARY KEY and constraints are not supported",
            ));
        } else {
            let name = parser.parse_identifier().map_err(syntax)?;
            if parser.parse_keyword(Keyword::AS) {
                let expr = parser.parse_expr().map_err(syntax)?;
                table.computed.push((name, expr));
            } else {
                let ty_at = parser.peek_token().span;
                let ty = parser.parse_data_type().map_err(syntax)?;
                let not_null = parser.parse_keywords(&[Keyword::NOT, Keyword::NULL]);
                let _nullable = !not_null && parser.parse_keyword(Keyword::NULL);
                if word(parser, "METADATA") {
                    return Err(Problem::new(
                        ty_at,
                        construct,
                        "METADATA columns are not supported",
                    ));
                }
                table.columns.push(ColumnDecl {
                    name,
                    ty,
                    ty_at,
                    not_null,
                });
            }
        }
        if parser.consume_token(&Token::RParen) {
            break;
        }
        parser.expect_token(&Token::Comma).map_err(syntax)?;
    }
    if parser.parse_keyword(Keyword::COMMENT) {
        quoted(parser, &construct, "a quoted comment")?;
    }
    let next = parser.peek_token();
    if parser.parse_keywords(&[Keyword::PARTITIONED, Keyword::BY]) {
        return Err(Problem::new(
            next.span,
            construct,
            "PARTITIONED BY is not supported",
        ));
    }
    if !parser.parse_keyword(Keyword::WITH) {
        return Err(Problem::new(
            next.span,
            construct,
            "a table needs its connector: WITH ('connector' = …)",
        ));
    }
    parser.expect_token(&Token::LParen).map_err(syntax)?;
    loop {
        table.options.push(option(parser, &construct)?);
        if parser.consume_token(&Token::RParen) {
            break;
        }
        parser.expect_token(&Token::Comma).map_err(syntax)?;
    }
    Ok(table)
}

/// Consumes the next token if it is the (unreserved) word `expected`, in any case.
fn word(parser: &mut Parser, expected: &str) -> bool {
    let is = matches!(&parser.peek_token().token, Token::Word(w)
        if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(expected));
    if is {
        parser.next_token();
    }
    is
}

/// A parser error as a problem at the location its message ends with.
fn syntax(e: ParserError) -> Problem {
    let message = match e {
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => m,
        ParserError::RecursionLimitExceeded => "the statement is nested too deeply".into(),
    };
    let (message, at) = match message.rsplit_once(" at Line: ") {
        Some((text, place)) => {
            let mut numbers = place
                .split(", Column: ")
                .map(|n| n.trim().parse::<u64>().unwrap_or(0));
            let line = numbers.next().unwrap_or(0);
            let column = numbers.next().unwrap_or(0);
            (text.to_string(), Location::new(line, column))
        }
        None => (message, Location::new(0, 0)),
    };
    // The generic dialect has no temporal joins: say what the construct is.
    if message.ends_with("found: SYSTEM_TIME") {
        return Problem::new(
            Span::new(at, at),
            "FOR SYSTEM_TIME AS OF",
            "temporal (lookup) joins are not supported",
        );
    }
    Problem::new(Span::new(at, at), "syntax", message)
}

/// Flink writes a window table function's table argument as `TABLE t`, which the generic
/// dialect does not parse: each `TABLE name` after `(` or `,` becomes `TABLE(name)`, a call the
/// planner reads as that argument.
fn table_arguments(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len());
    let mut pending_close: Option<Span> = None;
    for token in tokens {
        if let Some(span) = pending_close.take() {
            out.push(token_at(Token::RParen, span));
        }
        let significant = |t: &TokenWithSpan| !matches!(t.token, Token::Whitespace(_));
        let previous = out.iter().rev().find(|t| significant(t)).map(|t| &t.token);
        let after_table =
            previous.is_some_and(|t| matches!(t, Token::Word(w) if w.keyword == Keyword::TABLE));
        if after_table && matches!(token.token, Token::Word(_)) {
            let before_table = out
                .iter()
                .rev()
                .filter(|t| significant(t))
                .nth(1)
                .map(|t| &t.token);
            if matches!(before_table, Some(Token::LParen | Token::Comma)) {
                let span = token.span;
                out.push(token_at(Token::LParen, span));
                out.push(token);
                pending_close = Some(span);
                continue;
            }
        }
        out.push(token);
    }
    if let Some(span) = pending_close {
        out.push(token_at(Token::RParen, span));
    }
    out
}

fn token_at(token: Token, span: Span) -> TokenWithSpan {
    TokenWithSpan::new(token, span)
}

/// The `Expr` arguments of a call, or `None` if any is written otherwise (named, `*`).
pub(super) fn call_args(args: &FunctionArguments) -> Option<Vec<&Expr>> {
    match args {
        FunctionArguments::List(list) => list
            .args
            .iter()
            .map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
                _ => None,
            })
            .collect(),
        FunctionArguments::None => Some(Vec::new()),
        FunctionArguments::Subquery(_) => None,
    }
}
