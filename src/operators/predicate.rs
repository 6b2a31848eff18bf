//! Predicates over records, written in [CEL](https://cel.dev) (`amount_cents > 50000 && country
//! != "US"`), parsed by the `cel` crate and compiled once, against the source's [`Schema`], into
//! closures over field indexes: evaluating one reads the record's values in place, with no
//! interpreter, no name lookups and no allocation.
//!
//! The subset compiled is what routing needs: `&&`, `||`, `!`, parentheses; `==`, `!=`, `<`, `<=`,
//! `>`, `>=` between numbers (int and double compare numerically, as in CEL), strings, bools, and
//! `== null` / `!= null`; `x in [literals]`; the string methods `startsWith`, `endsWith` and
//! `contains`; arithmetic `+ - * / %` on ints and `+ - * /` on doubles. Types are checked when
//! compiling: comparing a string field with a number is an error, as in CEL's type checker.
//! Anything else is rejected with its position in the expression.
//!
//! Evaluation follows CEL: an error (a null or mistyped value where a number is needed, integer
//! overflow, division by zero) makes the predicate not hold, but `&&` and `||` absorb it when
//! their other side decides (`false && error` is false, `true || error` is true).

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use cel::common::ast::{CallExpr, Expr, LiteralValue, SourceInfo, operators};
use cel::parser::Parser;

use crate::record::{FieldType, Schema, Value};

/// A compiled predicate; cheap to clone and shareable between workers.
#[derive(Clone)]
pub struct Predicate {
    text: Arc<str>,
    test: Arc<Operand<bool>>,
}

/// The longest predicate, in bytes.
pub const MAX_LENGTH: usize = 4096;

/// The deepest nesting of a predicate: parentheses, brackets and braces inside each other, and
/// conditionals `? :`.
pub const MAX_NESTING: usize = 32;

/// The stack of the thread that parses and compiles a predicate. CEL's parser recurses per level
/// of nesting and its syntax tree is as deep as the longest chain of operators, so parsing
/// needs a stack that grows with both; within [`MAX_LENGTH`] and [`MAX_NESTING`] this one is
/// ample, whatever the thread that compiles.
const COMPILE_STACK: usize = 64 << 20;

impl Predicate {
    /// Parses `text` as CEL and compiles it against `schema`, whose field names are the
    /// expression's variables. A text longer than [`MAX_LENGTH`] or nested deeper than
    /// [`MAX_NESTING`] is an error, before any parsing.
    pub fn compile(text: &str, schema: &Schema) -> Result<Predicate, PredicateError> {
        let error_at = |at: usize, message: String| {
            let before = &text[..at];
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            PredicateError {
                line: 1 + before.matches('\n').count(),
                column: 1 + before[line_start..].chars().count(),
                message,
            }
        };
        if text.len() > MAX_LENGTH {
            let at = (0..=MAX_LENGTH)
                .rev()
                .find(|&at| text.is_char_boundary(at))
                .unwrap_or(0);
            return Err(error_at(
                at,
                format!(
                    "the expression is {} bytes long, and a predicate has at most {MAX_LENGTH}: \
                     it goes beyond",
                    text.len()
                ),
            ));
        }
        if let Some(at) = too_deep(text) {
            return Err(error_at(
                at,
                format!(
                    "nested deeper than {MAX_NESTING} levels (parentheses, brackets and \
                     conditionals)"
                ),
            ));
        }
        std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("predicate".into())
                .stack_size(COMPILE_STACK)
                .spawn_scoped(scope, || Predicate::compile_here(text, schema))
                .expect("a thread to compile the predicate on")
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// [`Predicate::compile`], on the calling thread's stack.
    fn compile_here(text: &str, schema: &Schema) -> Result<Predicate, PredicateError> {
        let (expr, info) = Parser::new()
            .parse_with_source_info(text)
            .map_err(|errors| {
                let first = errors.errors.first();
                let (line, column) = first.map_or((1, 1), |e| (e.pos.0.max(1), e.pos.1.max(1)));
                PredicateError {
                    line: line as usize,
                    column: column as usize,
                    message: first.map_or_else(|| "does not parse".into(), |e| syntax(&e.msg)),
                }
            })?;
        let compiler = Compiler {
            schema,
            info: &info,
            text,
        };
        match compiler.compile(&expr)? {
            Typed::Bool(test) => Ok(Predicate {
                text: text.into(),
                test: Arc::new(test),
            }),
            other => Err(compiler.error(
                expr.id,
                format!(
                    "a predicate must be a bool, but this expression is of type {}",
                    other.type_name()
                ),
            )),
        }
    }

    /// Whether the predicate holds for `record` (a record of the schema it was compiled against).
    /// An evaluation error counts as not holding.
    pub fn holds(&self, record: &[Value]) -> bool {
        self.test.get(record) == Some(true)
    }
}

impl fmt::Debug for Predicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Predicate").field(&self.text).finish()
    }
}

/// Why an expression is not a valid predicate, and where (1-based, in characters).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct PredicateError {
    /// The line within the expression.
    pub line: usize,
    /// The column within that line.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for PredicateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 1 {
            write!(
                f,
                "{} at line {}, column {} of the expression",
                self.message, self.line, self.column
            )
        } else {
            write!(
                f,
                "{} at column {} of the expression",
                self.message, self.column
            )
        }
    }
}

/// A closure evaluating a sub-expression; `None` is a CEL evaluation error.
type Eval<T> = Box<dyn Fn(&[Value]) -> Option<T> + Send + Sync>;

/// A value of a compiled expression: a record field read in place, a constant, or computed.
/// Keeping fields and constants apart from computed values spares a call per operand in the
/// common `field op literal` comparison.
enum Operand<T> {
    Field(usize),
    Const(T),
    Computed(Eval<T>),
}

/// A scalar type an operand can have, read from a record value.
trait Scalar: Copy + Send + Sync + 'static {
    fn read(value: &Value) -> Option<Self>;
}

impl Scalar for bool {
    fn read(value: &Value) -> Option<bool> {
        match value {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

impl Scalar for i64 {
    fn read(value: &Value) -> Option<i64> {
        match value {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

impl Scalar for f64 {
    fn read(value: &Value) -> Option<f64> {
        value.as_f64()
    }
}

impl<T: Scalar> Operand<T> {
    #[inline]
    fn get(&self, record: &[Value]) -> Option<T> {
        match self {
            Operand::Field(i) => T::read(&record[*i]),
            Operand::Const(c) => Some(*c),
            Operand::Computed(f) => f(record),
        }
    }
}

/// A string operand: a field or a literal (strings are never computed, so reading one never
/// allocates). Literals are plain boxed strings: reading one needs no decoding.
#[derive(Clone)]
enum Text {
    Field(usize),
    Const(Box<str>),
}

impl Text {
    #[inline]
    fn get<'r>(&'r self, record: &'r [Value]) -> Option<&'r str> {
        match self {
            Text::Field(i) => match &record[*i] {
                Value::Str(s) => Some(s),
                _ => None,
            },
            Text::Const(s) => Some(s),
        }
    }
}

/// A compiled sub-expression, by its CEL type.
enum Typed {
    Bool(Operand<bool>),
    Int(Operand<i64>),
    Double(Operand<f64>),
    Str(Text),
    Null,
    /// A list literal: its elements, with their expression ids for messages.
    List(Vec<(u64, Typed)>),
}

impl Typed {
    fn type_name(&self) -> &'static str {
        match self {
            Typed::Bool(_) => "bool",
            Typed::Int(_) => "int",
            Typed::Double(_) => "double",
            Typed::Str(_) => "string",
            Typed::Null => "null",
            Typed::List(_) => "list",
        }
    }
}

/// A comparison operator.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Comparison {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Comparison {
    fn of(function: &str) -> Option<Comparison> {
        Some(match function {
            operators::EQUALS => Comparison::Eq,
            operators::NOT_EQUALS => Comparison::Ne,
            operators::LESS => Comparison::Lt,
            operators::LESS_EQUALS => Comparison::Le,
            operators::GREATER => Comparison::Gt,
            operators::GREATER_EQUALS => Comparison::Ge,
            _ => return None,
        })
    }

    /// Whether two values in `order` compare so; unordered values (NaN) are only unequal.
    #[inline]
    fn test(self, order: Option<Ordering>) -> bool {
        let Some(order) = order else {
            return self == Comparison::Ne;
        };
        match self {
            Comparison::Eq => order.is_eq(),
            Comparison::Ne => order.is_ne(),
            Comparison::Lt => order.is_lt(),
            Comparison::Le => order.is_le(),
            Comparison::Gt => order.is_gt(),
            Comparison::Ge => order.is_ge(),
        }
    }
}

/// An arithmetic operator.
#[derive(Clone, Copy)]
enum Arithmetic {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl Arithmetic {
    fn of(function: &str) -> Option<Arithmetic> {
        Some(match function {
            operators::ADD => Arithmetic::Add,
            operators::SUBSTRACT => Arithmetic::Sub,
            operators::MULTIPLY => Arithmetic::Mul,
            operators::DIVIDE => Arithmetic::Div,
            operators::MODULO => Arithmetic::Rem,
            _ => return None,
        })
    }

    /// CEL's int arithmetic: overflow and division by zero are errors.
    fn ints(self) -> fn(i64, i64) -> Option<i64> {
        match self {
            Arithmetic::Add => i64::checked_add,
            Arithmetic::Sub => i64::checked_sub,
            Arithmetic::Mul => i64::checked_mul,
            Arithmetic::Div => i64::checked_div,
            Arithmetic::Rem => i64::checked_rem,
        }
    }

    /// IEEE double arithmetic; CEL has no `%` on doubles.
    fn doubles(self) -> Option<fn(f64, f64) -> Option<f64>> {
        Some(match self {
            Arithmetic::Add => |a, b| Some(a + b),
            Arithmetic::Sub => |a, b| Some(a - b),
            Arithmetic::Mul => |a, b| Some(a * b),
            Arithmetic::Div => |a, b| Some(a / b),
            Arithmetic::Rem => return None,
        })
    }
}

/// A string method.
fn string_method(name: &str) -> Option<fn(&str, &str) -> bool> {
    Some(match name {
        "startsWith" => |s, p| s.starts_with(p),
        "endsWith" => |s, p| s.ends_with(p),
        "contains" => |s, p| s.contains(p),
        _ => return None,
    })
}

/// Compiles a parsed expression against a schema.
struct Compiler<'a> {
    schema: &'a Schema,
    info: &'a SourceInfo,
    text: &'a str,
}

impl Compiler<'_> {
    /// An error at the expression with id `id`.
    fn error(&self, id: u64, message: impl Into<String>) -> PredicateError {
        // The parser's offsets count bytes; messages count characters.
        let offset = self
            .info
            .offset_for(id)
            .map_or(0, |(start, _)| start as usize);
        let before = self.text.get(..offset).unwrap_or(self.text);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        PredicateError {
            line: 1 + before.matches('\n').count(),
            column: 1 + before[line_start..].chars().count(),
            message: message.into(),
        }
    }

    fn compile(&self, expr: &cel::IdedExpr) -> Result<Typed, PredicateError> {
        let id = expr.id;
        match &expr.expr {
            Expr::Literal(literal) => self.literal(id, literal),
            Expr::Ident(name) => self.field(id, name),
            Expr::List(list) => {
                if !list.optional_indices.is_empty() {
                    return Err(self.error(id, "optional list elements are not supported"));
                }
                let elements = list
                    .elements
                    .iter()
                    .map(|e| Ok((e.id, self.compile(e)?)))
                    .collect::<Result<_, PredicateError>>()?;
                Ok(Typed::List(elements))
            }
            Expr::Call(call) => self.call(id, call),
            Expr::Select(select) if select.test => {
                Err(self.error(id, "`has()` is not supported: records have every field"))
            }
            Expr::Select(select) => Err(self.error(
                id,
                format!(
                    "`.{}`: records are flat, so fields have no fields to select",
                    select.field
                ),
            )),
            Expr::Comprehension(_) => Err(self.error(
                id,
                "macros (all, exists, exists_one, map, filter) are not supported",
            )),
            Expr::Map(_) => Err(self.error(id, "map literals are not supported")),
            Expr::Struct(_) => Err(self.error(id, "message literals are not supported")),
            Expr::Unspecified => Err(self.error(id, "incomplete expression")),
        }
    }

    fn literal(&self, id: u64, literal: &LiteralValue) -> Result<Typed, PredicateError> {
        Ok(match literal {
            LiteralValue::Boolean(b) => Typed::Bool(Operand::Const(*b.inner())),
            LiteralValue::Int(i) => Typed::Int(Operand::Const(*i.inner())),
            LiteralValue::UInt(u) => match i64::try_from(*u.inner()) {
                Ok(i) => Typed::Int(Operand::Const(i)),
                Err(_) => return Err(self.error(id, "this uint is beyond the int range")),
            },
            LiteralValue::Double(d) => Typed::Double(Operand::Const(*d.inner())),
            LiteralValue::String(s) => Typed::Str(Text::Const(s.inner().into())),
            LiteralValue::Null => Typed::Null,
            LiteralValue::Bytes(_) => return Err(self.error(id, "bytes are not supported")),
        })
    }

    fn field(&self, id: u64, name: &str) -> Result<Typed, PredicateError> {
        let Some(index) = self.schema.index_of(name) else {
            let names: Vec<&str> = self.schema.fields().iter().map(|f| &*f.name).collect();
            return Err(self.error(
                id,
                format!(
                    "unknown field `{name}`: the source has {}",
                    names.join(", ")
                ),
            ));
        };
        Ok(match self.schema.fields()[index].ty {
            FieldType::Int | FieldType::Timestamp => Typed::Int(Operand::Field(index)),
            FieldType::Float => Typed::Double(Operand::Field(index)),
            FieldType::String => Typed::Str(Text::Field(index)),
            FieldType::Bool => Typed::Bool(Operand::Field(index)),
        })
    }

    fn call(&self, id: u64, call: &CallExpr) -> Result<Typed, PredicateError> {
        let name = call.func_name.as_str();
        if let Some(target) = &call.target {
            return self.method(id, name, target, &call.args);
        }
        let args = &call.args;
        match name {
            operators::LOGICAL_AND | operators::LOGICAL_OR => {
                let a = self.boolean(&args[0], name)?;
                let b = self.boolean(&args[1], name)?;
                Ok(Typed::Bool(logical(name == operators::LOGICAL_AND, a, b)))
            }
            operators::LOGICAL_NOT => {
                let operand = self.boolean(&args[0], name)?;
                Ok(Typed::Bool(Operand::Computed(Box::new(move |r| {
                    operand.get(r).map(|b| !b)
                }))))
            }
            operators::NEGATE => match self.compile(&args[0])? {
                Typed::Int(a) => Ok(Typed::Int(computed(move |r| a.get(r)?.checked_neg()))),
                Typed::Double(a) => Ok(Typed::Double(computed(move |r| Some(-a.get(r)?)))),
                other => {
                    Err(self.error(args[0].id, format!("cannot negate a {}", other.type_name())))
                }
            },
            operators::IN => self.membership(id, &args[0], &args[1]),
            _ => {
                if let Some(op) = Comparison::of(name) {
                    let (a, b) = (self.compile(&args[0])?, self.compile(&args[1])?);
                    return self.comparison(id, op, a, b);
                }
                if let Some(op) = Arithmetic::of(name) {
                    let (a, b) = (self.compile(&args[0])?, self.compile(&args[1])?);
                    return self.arithmetic(id, op, a, b);
                }
                Err(self.error(id, unsupported(name)))
            }
        }
    }

    /// A sub-expression that must be a bool, as an operand of `op`.
    fn boolean(&self, expr: &cel::IdedExpr, op: &str) -> Result<Operand<bool>, PredicateError> {
        match self.compile(expr)? {
            Typed::Bool(b) => Ok(b),
            other => Err(self.error(
                expr.id,
                format!(
                    "`{}` needs bool operands, but this is of type {}",
                    symbol(op),
                    other.type_name()
                ),
            )),
        }
    }

    fn method(
        &self,
        id: u64,
        name: &str,
        target: &cel::IdedExpr,
        args: &[cel::IdedExpr],
    ) -> Result<Typed, PredicateError> {
        let Some(test) = string_method(name) else {
            return Err(self.error(
                id,
                format!(
                    "unsupported method `{name}`: the methods are startsWith, endsWith and contains"
                ),
            ));
        };
        let [arg] = args else {
            return Err(self.error(id, format!("`{name}` takes one string argument")));
        };
        let text = |e: &cel::IdedExpr| match self.compile(e)? {
            Typed::Str(t) => Ok(t),
            other => Err(self.error(
                e.id,
                format!(
                    "`{name}` works on strings, but this is of type {}",
                    other.type_name()
                ),
            )),
        };
        let (s, p) = (text(target)?, text(arg)?);
        Ok(Typed::Bool(computed(move |r| {
            Some(test(s.get(r)?, p.get(r)?))
        })))
    }

    fn comparison(
        &self,
        id: u64,
        op: Comparison,
        a: Typed,
        b: Typed,
    ) -> Result<Typed, PredicateError> {
        let test = match (a, b) {
            (Typed::Int(a), Typed::Int(b)) => compare(op, a, b, |a, b| Some(a.cmp(&b))),
            (Typed::Int(a), Typed::Double(b)) => {
                compare(op, a, b, |a, b| (a as f64).partial_cmp(&b))
            }
            (Typed::Double(a), Typed::Int(b)) => {
                compare(op, a, b, |a, b| a.partial_cmp(&(b as f64)))
            }
            (Typed::Double(a), Typed::Double(b)) => compare(op, a, b, |a, b| a.partial_cmp(&b)),
            (Typed::Bool(a), Typed::Bool(b)) => compare(op, a, b, |a, b| Some(a.cmp(&b))),
            // Equality tests lengths first: cheaper than ordering the strings.
            (Typed::Str(a), Typed::Str(b)) if matches!(op, Comparison::Eq | Comparison::Ne) => {
                let equal = op == Comparison::Eq;
                computed(move |r| Some(same(a.get(r)?, b.get(r)?) == equal))
            }
            (Typed::Str(a), Typed::Str(b)) => {
                computed(move |r| Some(op.test(Some(a.get(r)?.cmp(b.get(r)?)))))
            }
            (Typed::Null, Typed::Null) if matches!(op, Comparison::Eq | Comparison::Ne) => {
                Operand::Const(op == Comparison::Eq)
            }
            (x, Typed::Null) | (Typed::Null, x)
                if matches!(op, Comparison::Eq | Comparison::Ne) =>
            {
                null_test(op == Comparison::Eq, x)
            }
            (a, b) => {
                return Err(self.error(
                    id,
                    format!(
                        "cannot compare {} with {}{}",
                        a.type_name(),
                        b.type_name(),
                        if matches!(a, Typed::Null) || matches!(b, Typed::Null) {
                            " (null compares only with == and !=)"
                        } else {
                            ""
                        }
                    ),
                ));
            }
        };
        Ok(Typed::Bool(test))
    }

    fn arithmetic(
        &self,
        id: u64,
        op: Arithmetic,
        a: Typed,
        b: Typed,
    ) -> Result<Typed, PredicateError> {
        match (a, b) {
            (Typed::Int(a), Typed::Int(b)) => {
                let f = op.ints();
                Ok(Typed::Int(computed(move |r| f(a.get(r)?, b.get(r)?))))
            }
            (Typed::Double(a), Typed::Double(b)) => {
                let Some(f) = op.doubles() else {
                    return Err(self.error(id, "`%` works on ints only"));
                };
                Ok(Typed::Double(computed(move |r| f(a.get(r)?, b.get(r)?))))
            }
            (a @ (Typed::Int(_) | Typed::Double(_)), b @ (Typed::Int(_) | Typed::Double(_))) => {
                Err(self.error(
                    id,
                    format!(
                        "CEL does not mix int and double in arithmetic ({} and {}): write the \
                         int literal as a double, e.g. 2.0",
                        a.type_name(),
                        b.type_name()
                    ),
                ))
            }
            (a, b) => Err(self.error(
                id,
                format!(
                    "arithmetic works on numbers, not on {} and {}",
                    a.type_name(),
                    b.type_name()
                ),
            )),
        }
    }

    /// `item in [literal, …]`.
    fn membership(
        &self,
        id: u64,
        item: &cel::IdedExpr,
        list: &cel::IdedExpr,
    ) -> Result<Typed, PredicateError> {
        let item = self.compile(item)?;
        let Typed::List(elements) = self.compile(list)? else {
            return Err(self.error(
                list.id,
                "`in` needs a list literal on its right, e.g. [\"US\", \"CA\"]",
            ));
        };
        let kind = item.type_name();
        let test = match item {
            Typed::Str(item) => {
                let strings = self.literals(kind, &elements, |e| match e {
                    Typed::Str(Text::Const(s)) => Some(s.clone()),
                    _ => None,
                })?;
                computed(move |r| {
                    let s = item.get(r)?;
                    Some(strings.iter().any(|x| same(x, s)))
                })
            }
            Typed::Int(item) => {
                let numbers = self.literals(kind, &elements, number)?;
                if numbers.iter().all(|n| n.fract() == 0.0) {
                    let ints: Vec<i64> = numbers.iter().map(|n| *n as i64).collect();
                    computed(move |r| Some(ints.contains(&item.get(r)?)))
                } else {
                    computed(move |r| Some(numbers.contains(&(item.get(r)? as f64))))
                }
            }
            Typed::Double(item) => {
                let numbers = self.literals(kind, &elements, number)?;
                computed(move |r| Some(numbers.contains(&item.get(r)?)))
            }
            Typed::Bool(item) => {
                let bools = self.literals(kind, &elements, |e| match e {
                    Typed::Bool(Operand::Const(b)) => Some(*b),
                    _ => None,
                })?;
                computed(move |r| Some(bools.contains(&item.get(r)?)))
            }
            Typed::Null | Typed::List(_) => {
                return Err(self.error(id, format!("`in` is not supported for a {kind}")));
            }
        };
        Ok(Typed::Bool(test))
    }

    /// The elements of a list literal, read by `literal`, for an item of type `kind`.
    fn literals<T>(
        &self,
        kind: &str,
        elements: &[(u64, Typed)],
        literal: impl Fn(&Typed) -> Option<T>,
    ) -> Result<Vec<T>, PredicateError> {
        let numeric = |name: &str| matches!(name, "int" | "double");
        elements
            .iter()
            .map(|(id, element)| {
                literal(element).ok_or_else(|| {
                    let name = element.type_name();
                    if name == kind || (numeric(name) && numeric(kind)) {
                        self.error(*id, "list elements must be literals")
                    } else {
                        self.error(*id, format!("a {kind} cannot be in a list with a {name}"))
                    }
                })
            })
            .collect()
    }
}

/// A number literal, as a double.
fn number(element: &Typed) -> Option<f64> {
    match element {
        Typed::Int(Operand::Const(i)) => Some(*i as f64),
        Typed::Double(Operand::Const(d)) => Some(*d),
        _ => None,
    }
}

/// String equality without a call to `memcmp`, which costs more than the comparison itself for
/// the short strings (codes, types, countries) that predicates compare.
#[inline]
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| x == y)
}

fn computed<T>(f: impl Fn(&[Value]) -> Option<T> + Send + Sync + 'static) -> Operand<T> {
    Operand::Computed(Box::new(f))
}

/// `a op b`, ordering the operands' values with `order`.
fn compare<A: Scalar, B: Scalar>(
    op: Comparison,
    a: Operand<A>,
    b: Operand<B>,
    order: fn(A, B) -> Option<Ordering>,
) -> Operand<bool> {
    computed(move |r| Some(op.test(order(a.get(r)?, b.get(r)?))))
}

/// `x == null` (`is_null`) or `x != null`: true only for a null field.
fn null_test(is_null: bool, x: Typed) -> Operand<bool> {
    let field = match x {
        Typed::Bool(Operand::Field(i))
        | Typed::Int(Operand::Field(i))
        | Typed::Double(Operand::Field(i))
        | Typed::Str(Text::Field(i)) => i,
        _ => return Operand::Const(!is_null),
    };
    computed(move |r| Some(matches!(r[field], Value::Null) == is_null))
}

/// `a && b` (`and`) or `a || b`, with CEL's error absorption: a deciding operand wins over an
/// error, whichever side the error is on.
fn logical(and: bool, a: Operand<bool>, b: Operand<bool>) -> Operand<bool> {
    computed(move |r| match a.get(r) {
        Some(x) if x != and => Some(x),
        first => match b.get(r) {
            Some(y) if y != and => Some(y),
            // `first` is the neutral value or an error, which the result then is.
            Some(_) => first,
            None => None,
        },
    })
}

/// A parser message, shortened where ANTLR lists every token that may start an operand.
fn syntax(message: &str) -> String {
    let message = message.replacen("Syntax error", "syntax error", 1);
    match message.split_once(" expecting {") {
        Some((head, expected)) if expected.contains("IDENTIFIER") => {
            format!("{head} where a field, a literal or `(` should be")
        }
        _ => message,
    }
}

/// The byte offset where `text` first nests deeper than [`MAX_NESTING`], if it does: each `(`,
/// `[` and `{` opens a level and its match closes it, each `?` opens one for good; string
/// literals are skipped as CEL's lexer reads them (quoted with `"` or `'`, or tripled; with
/// escapes, unless raw: prefixed with `r` or `R`, alone or beside `b` or `B`).
fn too_deep(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let (mut depth, mut conditionals, mut i) = (0usize, 0usize, 0);
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'"' | b'\'') => {
                let prefix = bytes[..i]
                    .iter()
                    .rev()
                    .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                    .collect::<Vec<_>>();
                let raw = prefix.len() <= 2
                    && prefix.iter().all(|b| b"bBrR".contains(b))
                    && prefix.iter().any(|b| b"rR".contains(b));
                let triple = bytes[i..].starts_with(&[quote; 3]);
                i += if triple { 3 } else { 1 };
                while i < bytes.len() {
                    if !raw && bytes[i] == b'\\' {
                        i += 2;
                    } else if triple && bytes[i..].starts_with(&[quote; 3]) {
                        i += 3;
                        break;
                    } else if !triple && (bytes[i] == quote || bytes[i] == b'\n') {
                        i += 1;
                        break;
                    } else {
                        i += 1;
                    }
                }
                continue;
            }
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b'?' => conditionals += 1,
            _ => {}
        }
        if depth + conditionals > MAX_NESTING {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// The operator a CEL function name stands for, for messages.
fn symbol(function: &str) -> &str {
    function.trim_matches(|c| c == '_' || c == '@')
}

fn unsupported(function: &str) -> String {
    match function {
        operators::CONDITIONAL => "the conditional `? :` is not supported".into(),
        operators::INDEX | operators::OPT_INDEX => "indexing is not supported".into(),
        _ => format!(
            "unsupported function `{}`: predicates use && || ! == != < <= > >= in + - * / % and \
             the string methods startsWith, endsWith and contains",
            symbol(function)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Field;

    fn schema() -> Schema {
        let field = |name: &str, ty| Field {
            name: name.into(),
            ty,
            required: true,
        };
        Schema::new(
            vec![
                field("type", FieldType::String),
                field("amount_cents", FieldType::Int),
                field("country", FieldType::String),
                field("score", FieldType::Float),
                field("vip", FieldType::Bool),
                field("ts", FieldType::Timestamp),
            ],
            "ts",
        )
        .unwrap()
    }

    fn record(kind: &str, amount: i64, country: &str, score: f64, vip: bool) -> Vec<Value> {
        vec![
            Value::Str(kind.into()),
            Value::Int(amount),
            Value::Str(country.into()),
            Value::Float(score),
            Value::Bool(vip),
            Value::Int(1_700_000_000_000),
        ]
    }

    fn holds(text: &str, record: &[Value]) -> bool {
        Predicate::compile(text, &schema())
            .unwrap_or_else(|e| panic!("`{text}`: {e}"))
            .holds(record)
    }

    fn error(text: &str) -> PredicateError {
        match Predicate::compile(text, &schema()) {
            Ok(p) => panic!("`{text}` compiled: {p:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn compares_fields_with_literals() {
        let r = record("purchase", 60_000, "FR", 0.5, false);
        assert!(holds(r#"amount_cents > 50000 && country != "US""#, &r));
        assert!(!holds(r#"amount_cents > 50000 && country == "US""#, &r));
        assert!(holds(r#"amount_cents <= 60000 || type == "x""#, &r));
        assert!(holds(r#"!(amount_cents < 60000)"#, &r));
        assert!(holds(r#"type >= "p" && type < "q""#, &r));
        assert!(holds("!vip && vip == false", &r));
        assert!(holds("ts >= 1700000000000", &r));
        assert!(holds("true", &r));
        assert!(!holds("false", &r));
    }

    #[test]
    fn compares_ints_with_doubles_numerically() {
        let r = record("purchase", 500, "FR", 2.0, false);
        assert!(holds("amount_cents > 499.5", &r));
        assert!(holds("score == 2", &r));
        assert!(holds("score < amount_cents", &r));
        assert!(!holds("score != 2", &r));
    }

    #[test]
    fn arithmetic() {
        let r = record("purchase", 500, "FR", 2.5, false);
        assert!(holds("amount_cents * 2 - 1 == 999", &r));
        assert!(holds(
            "amount_cents / 3 == 166 && amount_cents % 3 == 2",
            &r
        ));
        assert!(holds("score * 2.0 == 5.0", &r));
        assert!(holds("-amount_cents < 0", &r));
        // Division by zero is an error: the predicate does not hold, and neither does its
        // negation; a deciding side of && or || absorbs the error.
        assert!(!holds("amount_cents / 0 == 1", &r));
        assert!(!holds("!(amount_cents / 0 == 1)", &r));
        assert!(holds("amount_cents / 0 == 1 || true", &r));
        assert!(!holds("amount_cents / 0 == 1 && false", &r));
        assert!(holds("false || amount_cents / 0 == 1 || true", &r));
        assert!(!holds("true && amount_cents / 0 == 1 && true", &r));
        assert!(!holds("!(true && amount_cents / 0 == 1 && true)", &r));
        assert!(!holds("9223372036854775807 + amount_cents > 0", &r));
    }

    #[test]
    fn membership_and_string_methods() {
        let r = record("purchase.card", 500, "FR", 2.5, true);
        assert!(holds(r#"country in ["FR", "DE"]"#, &r));
        assert!(!holds(r#"country in ["US"]"#, &r));
        assert!(holds("amount_cents in [1, 500]", &r));
        assert!(holds("score in [2.5]", &r));
        assert!(holds(
            r#"type.startsWith("purchase.") && type.endsWith("card")"#,
            &r
        ));
        assert!(holds(
            r#"type.contains("se.ca") && !country.contains("U")"#,
            &r
        ));
        assert!(holds("vip in [true]", &r));
    }

    #[test]
    fn null_fields() {
        let mut r = record("purchase", 500, "FR", 2.5, true);
        r[2] = Value::Null;
        assert!(holds("country == null", &r));
        assert!(!holds("country != null", &r));
        assert!(!holds(r#"country == "FR""#, &r));
        assert!(holds(r#"country == "FR" || amount_cents == 500"#, &r));
        assert!(holds("amount_cents != null", &r));
    }

    #[test]
    fn unknown_fields_are_errors_at_their_column() {
        let e = error(r#"amount_cents > 5 && contry != "US""#);
        assert_eq!((e.line, e.column), (1, 21), "{e}");
        assert!(e.message.contains("unknown field `contry`"), "{e}");
        assert!(
            e.to_string().ends_with("at column 21 of the expression"),
            "{e}"
        );
    }

    #[test]
    fn type_errors_are_errors_at_their_operator() {
        let e = error("country > 5");
        assert_eq!(e.column, 9, "{e}");
        assert!(e.message.contains("cannot compare string with int"), "{e}");
        let e = error(r#"type.startsWith(5)"#);
        assert_eq!(e.column, 17, "{e}");
        let e = error("amount_cents + 1.5 > 2.0");
        assert!(e.message.contains("does not mix int and double"), "{e}");
        let e = error("amount_cents");
        assert!(e.message.contains("must be a bool"), "{e}");
        let e = error("amount_cents > 1 && 5");
        assert_eq!(e.column, 21, "{e}");
        let e = error("country < null");
        assert!(e.message.contains("null compares only"), "{e}");
    }

    #[test]
    fn syntax_errors_carry_their_position() {
        let e = error("amount_cents > ");
        assert_eq!(e.line, 1);
        assert_eq!(e.column, 16, "{e}");
        let e = error("amount_cents >\n  && x");
        assert_eq!(e.line, 2, "{e}");
        assert!(e.to_string().contains("at line 2, column"), "{e}");
    }

    #[test]
    fn long_or_deep_expressions_are_errors_before_parsing() {
        let e = error(&format!("amount_cents{} > 0", "-1".repeat(20_000)));
        assert!(e.message.contains("40016 bytes long"), "{e}");
        let deep = |n| format!("{}amount_cents > 0{}", "(".repeat(n), ")".repeat(n));
        let e = error(&deep(MAX_NESTING + 1));
        assert_eq!(e.column, MAX_NESTING + 1, "{e}");
        assert!(e.message.contains("nested deeper than 32"), "{e}");
        let e = error(&format!(
            "amount_cents in {}1{}",
            "[".repeat(40),
            "]".repeat(40)
        ));
        assert!(e.message.contains("nested deeper"), "{e}");
        let e = error(&"vip ? true : ".repeat(40));
        assert!(e.message.contains("nested deeper"), "{e}");
        // Brackets in strings do not count, as CEL's lexer reads them.
        let r = record("purchase", 60_000, "FR", 0.5, false);
        assert!(!holds(&format!(r#"type == "{}""#, "(".repeat(100)), &r));
        assert!(!holds(
            &format!(r#"type == r'\' || type == '{}'"#, "[".repeat(100)),
            &r
        ));
        assert!(!holds(
            &format!(r#"type == """{}\"""" "#, ")".repeat(50)),
            &r
        ));
        let e = error(&format!(
            r#"type == "\"{0}" && {1}vip{2}"#,
            ")".repeat(40),
            "(".repeat(40),
            ")".repeat(40)
        ));
        assert!(e.message.contains("nested deeper"), "{e}");
        // At the limits, an expression compiles and evaluates on an ordinary thread's stack.
        assert!(holds(&deep(MAX_NESTING), &r));
        let chain = format!("amount_cents{} > 0", "-1".repeat((MAX_LENGTH - 16) / 2));
        assert!(chain.len() <= MAX_LENGTH);
        assert!(holds(&chain, &r));
    }

    #[test]
    fn rejects_what_it_does_not_compile() {
        for (text, says) in [
            ("size(type) > 3", "unsupported function `size`"),
            ("type.matches(\"a\")", "unsupported method `matches`"),
            ("vip ? true : false", "conditional"),
            ("type.x == 1", "records are flat"),
            ("[1, 2].all(x, x > 0)", "macros"),
            (r#"country in [type]"#, "must be literals"),
            (r#"country in ["US", 1]"#, "cannot be in a list"),
            ("country in type", "list literal"),
        ] {
            let e = error(text);
            assert!(e.message.contains(says), "`{text}`: {e}");
        }
    }

    #[test]
    fn columns_count_characters() {
        let e = error(r#"type == "é€" && nope"#);
        assert_eq!(e.column, 17, "{e}");
        let e = error(r#"type == "é€" &&"#);
        assert_eq!(e.column, 16, "{e}");
    }
}
