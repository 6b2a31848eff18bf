//! Compiling a parsed CEL expression: each sub-expression is typed and turned into an operand,
//! so that type errors are found before any record is seen.

use std::cmp::Ordering;

use cel::common::ast::{CallExpr, Expr, LiteralValue, SourceInfo, operators};
use cel::parser::Parser;

use super::eval::{Choice, Operand, Scalar, Text, computed, logical, same};
use super::{PredicateError, Scope};
use crate::record::{FieldType, Value};

/// A compiled sub-expression, by its CEL type.
pub(super) enum Typed {
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

    /// The value in `record`; an evaluation error is null, as SQL's NULL (a list, never a
    /// value, is refused when compiling).
    pub(super) fn value(&self, record: &[Value]) -> Value {
        let value = match self {
            Typed::Bool(b) => b.get(record).map(Value::Bool),
            Typed::Int(i) => i.get(record).map(Value::Int),
            Typed::Double(d) => d.get(record).map(Value::Float),
            Typed::Str(t) => t.get(record).map(|s| Value::Str(s.as_ref().into())),
            Typed::Null | Typed::List(_) => None,
        };
        value.unwrap_or(Value::Null)
    }

    /// A null of this expression's type: what `c ? a : null` is where `c` does not hold.
    fn null_like(&self) -> Typed {
        match self {
            Typed::Bool(_) => Typed::Bool(computed(|_| None)),
            Typed::Int(_) => Typed::Int(computed(|_| None)),
            Typed::Double(_) => Typed::Double(computed(|_| None)),
            Typed::Str(_) => Typed::Str(Text::Null),
            Typed::Null | Typed::List(_) => Typed::Null,
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

/// Parses `text` and compiles it against `scope` into a bool operand, on the calling thread's
/// stack.
pub(super) fn predicate(text: &str, scope: &dyn Scope) -> Result<Operand<bool>, PredicateError> {
    root(text, scope, |compiler, id, typed| match typed {
        Typed::Bool(test) => Ok(test),
        other => Err(compiler.error(
            id,
            format!(
                "a predicate must be a bool, but this expression is of type {}",
                other.type_name()
            ),
        )),
    })
}

/// Parses `text` and compiles it against `scope` into a value of any type but a list, on the
/// calling thread's stack.
pub(super) fn value(text: &str, scope: &dyn Scope) -> Result<Typed, PredicateError> {
    root(text, scope, |compiler, id, typed| match typed {
        Typed::List(_) => Err(compiler.error(
            id,
            "a value must be a bool, int, double, string or null, but this expression is a list",
        )),
        value => Ok(value),
    })
}

/// Parses `text`, compiles it against `scope` and hands the result, with the root's id, to
/// `take`, which checks its type.
fn root<T>(
    text: &str,
    scope: &dyn Scope,
    take: impl FnOnce(&Compiler, u64, Typed) -> Result<T, PredicateError>,
) -> Result<T, PredicateError> {
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
        scope,
        info: &info,
        text,
    };
    let typed = compiler.compile(&expr)?;
    take(&compiler, expr.id, typed)
}

/// Compiles a parsed expression against a scope.
struct Compiler<'a> {
    scope: &'a dyn Scope,
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
        PredicateError::at(self.text, offset, message)
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
        let (index, ty) = self
            .scope
            .column(name)
            .map_err(|message| self.error(id, message))?;
        Ok(match ty {
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
            operators::CONDITIONAL => self.conditional(&args[0], &args[1], &args[2]),
            "size" => self.size(id, args),
            "upper" => self.case_mapped(id, name, args, str::to_uppercase),
            "lower" => self.case_mapped(id, name, args, str::to_lowercase),
            "coalesce" => self.coalesce(id, args),
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

    /// `condition ? then : otherwise`: both branches of one type, and a condition that errs
    /// picks `otherwise`. A `null` branch takes the other's type (SQL's `CASE` without `ELSE`).
    fn conditional(
        &self,
        condition: &cel::IdedExpr,
        then: &cel::IdedExpr,
        otherwise: &cel::IdedExpr,
    ) -> Result<Typed, PredicateError> {
        let condition = self.boolean(condition, operators::CONDITIONAL)?;
        let branches = match (self.compile(then)?, self.compile(otherwise)?) {
            (Typed::Null, b) => (b.null_like(), b),
            (a, Typed::Null) => {
                let null = a.null_like();
                (a, null)
            }
            both => both,
        };
        Ok(match branches {
            (Typed::Null, Typed::Null) => Typed::Null,
            (Typed::Bool(a), Typed::Bool(b)) => Typed::Bool(choose(condition, a, b)),
            (Typed::Int(a), Typed::Int(b)) => Typed::Int(choose(condition, a, b)),
            (Typed::Double(a), Typed::Double(b)) => Typed::Double(choose(condition, a, b)),
            (Typed::Str(then), Typed::Str(otherwise)) => {
                Typed::Str(Text::Choice(Box::new(Choice {
                    condition,
                    then,
                    otherwise,
                })))
            }
            (a, b) => {
                return Err(self.error(
                    otherwise.id,
                    format!(
                        "the branches of `? :` must have one type, but they are {} and {}",
                        a.type_name(),
                        b.type_name()
                    ),
                ));
            }
        })
    }

    /// `size(s)`: the number of characters of a string.
    fn size(&self, id: u64, args: &[cel::IdedExpr]) -> Result<Typed, PredicateError> {
        let [arg] = args else {
            return Err(self.error(id, "`size` takes one string argument"));
        };
        match self.compile(arg)? {
            Typed::Str(s) => Ok(Typed::Int(computed(move |r| {
                i64::try_from(s.get(r)?.chars().count()).ok()
            }))),
            other => Err(self.error(
                arg.id,
                format!(
                    "`size` takes a string, but this is of type {}",
                    other.type_name()
                ),
            )),
        }
    }

    /// `upper(s)` or `lower(s)` (`name`): the string with its letters' case changed by `map`,
    /// Unicode's full mapping (`"ß"` is `"SS"` upper-cased).
    fn case_mapped(
        &self,
        id: u64,
        name: &str,
        args: &[cel::IdedExpr],
        map: fn(&str) -> String,
    ) -> Result<Typed, PredicateError> {
        let [arg] = args else {
            return Err(self.error(id, format!("`{name}` takes one string argument")));
        };
        match self.compile(arg)? {
            Typed::Str(s) => Ok(Typed::Str(Text::Mapped(Box::new(s), map))),
            other => Err(self.error(
                arg.id,
                format!(
                    "`{name}` takes a string, but this is of type {}",
                    other.type_name()
                ),
            )),
        }
    }

    /// `coalesce(a, b, …)`: the first argument that is not null (nor errs), all of one type;
    /// `null` arguments are left out.
    fn coalesce(&self, id: u64, args: &[cel::IdedExpr]) -> Result<Typed, PredicateError> {
        let Some((last, rest)) = args.split_last() else {
            return Err(self.error(id, "`coalesce` takes at least one argument"));
        };
        let mut first = self.compile(last)?;
        for arg in rest.iter().rev() {
            first = match (self.compile(arg)?, first) {
                (Typed::Null, b) => b,
                (a, Typed::Null) => a,
                (Typed::Bool(a), Typed::Bool(b)) => Typed::Bool(or(a, b)),
                (Typed::Int(a), Typed::Int(b)) => Typed::Int(or(a, b)),
                (Typed::Double(a), Typed::Double(b)) => Typed::Double(or(a, b)),
                (Typed::Str(a), Typed::Str(b)) => Typed::Str(Text::Or(Box::new([a, b]))),
                (a, b) => {
                    return Err(self.error(
                        arg.id,
                        format!(
                            "the arguments of `coalesce` must have one type, but this is of \
                             type {} and a later one {}",
                            a.type_name(),
                            b.type_name()
                        ),
                    ));
                }
            };
        }
        Ok(first)
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
            Some(test(&s.get(r)?, &p.get(r)?))
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
                computed(move |r| Some(same(&a.get(r)?, &b.get(r)?) == equal))
            }
            (Typed::Str(a), Typed::Str(b)) => {
                computed(move |r| Some(op.test(Some(a.get(r)?.cmp(&b.get(r)?)))))
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
                    Some(strings.iter().any(|x| same(x, &s)))
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

/// A scalar operand that is `then` or `otherwise`, as `condition` picks.
fn choose<T: Scalar>(
    condition: Operand<bool>,
    then: Operand<T>,
    otherwise: Operand<T>,
) -> Operand<T> {
    let choice = Choice {
        condition,
        then,
        otherwise,
    };
    computed(move |r| choice.pick(r).get(r))
}

/// A number literal, as a double.
fn number(element: &Typed) -> Option<f64> {
    match element {
        Typed::Int(Operand::Const(i)) => Some(*i as f64),
        Typed::Double(Operand::Const(d)) => Some(*d),
        _ => None,
    }
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

/// `x == null` (`is_null`) or `x != null`: true for a null field, and for a computed value
/// that is null (an operand is null, no branch of a conditional holds) or errs, as SQL's
/// `IS NULL` holds for an expression over a NULL; a literal is never null.
fn null_test(is_null: bool, x: Typed) -> Operand<bool> {
    match x {
        Typed::Bool(a) => scalar_null_test(is_null, a),
        Typed::Int(a) => scalar_null_test(is_null, a),
        Typed::Double(a) => scalar_null_test(is_null, a),
        Typed::Str(Text::Field(i)) => field_null_test(is_null, i),
        Typed::Str(Text::Const(_)) => Operand::Const(!is_null),
        Typed::Str(t) => computed(move |r| Some(t.get(r).is_none() == is_null)),
        Typed::Null => Operand::Const(is_null),
        Typed::List(_) => Operand::Const(!is_null),
    }
}

/// [`null_test`] of a scalar operand.
fn scalar_null_test<T: Scalar>(is_null: bool, a: Operand<T>) -> Operand<bool> {
    match a {
        Operand::Field(i) => field_null_test(is_null, i),
        Operand::Const(_) => Operand::Const(!is_null),
        computed_value => computed(move |r| Some(computed_value.get(r).is_none() == is_null)),
    }
}

/// [`null_test`] of the field at index `field`.
fn field_null_test(is_null: bool, field: usize) -> Operand<bool> {
    computed(move |r| Some(matches!(r[field], Value::Null) == is_null))
}

/// `a`, or `b` where `a` is null or errs.
fn or<T: Scalar>(a: Operand<T>, b: Operand<T>) -> Operand<T> {
    computed(move |r| a.get(r).or_else(|| b.get(r)))
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

/// The operator a CEL function name stands for, for messages.
fn symbol(function: &str) -> &str {
    function.trim_matches(|c| c == '_' || c == '@')
}

fn unsupported(function: &str) -> String {
    match function {
        operators::INDEX | operators::OPT_INDEX => "indexing is not supported".into(),
        _ => format!(
            "unsupported function `{}`: predicates use && || ! == != < <= > >= in + - * / % ? :, \
             size, upper, lower, coalesce and the string methods startsWith, endsWith and \
             contains",
            symbol(function)
        ),
    }
}
