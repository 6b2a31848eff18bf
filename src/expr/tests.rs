//! The expression compiler's behaviour: what compiles, what it evaluates to, and where errors are.

use super::*;

fn schema() -> Schema {
    Schema::of(
        &[
            ("type", FieldType::String, true),
            ("amount_cents", FieldType::Int, true),
            ("country", FieldType::String, true),
            ("score", FieldType::Float, true),
            ("vip", FieldType::Bool, true),
            ("ts", FieldType::Timestamp, true),
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
        ("int(type) > 3", "unsupported function `int`"),
        ("size(amount_cents) > 3", "`size` takes a string"),
        ("type.matches(\"a\")", "unsupported method `matches`"),
        ("(vip ? 1 : \"a\") == 1", "must have one type"),
        ("(amount_cents ? 1 : 2) == 1", "needs bool operands"),
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
fn conditionals_pick_a_branch_and_take_the_other_when_the_condition_errs() {
    let r = record("purchase", 60_000, "FR", 0.5, true);
    assert!(holds(
        r#"(country == "US" ? "domestic" : "foreign") == "foreign""#,
        &r
    ));
    assert!(holds(r#"(vip ? amount_cents * 2 : 0) == 120000"#, &r));
    assert!(holds(r#"(vip ? score : 1.0) < 1.0"#, &r));
    assert!(holds(r#"vip ? type == "purchase" : false"#, &r));
    let mut unknown = r.clone();
    unknown[2] = Value::Null;
    assert!(holds(
        r#"(country == "US" ? "domestic" : "foreign") == "foreign""#,
        &unknown
    ));
}

#[test]
fn size_counts_characters() {
    let r = record("é€x", 1, "FR", 0.5, false);
    assert!(holds("size(type) == 3", &r));
    assert!(holds("size(country) + size(type) == 5", &r));
}

#[test]
fn columns_count_characters() {
    let e = error(r#"type == "é€" && nope"#);
    assert_eq!(e.column, 17, "{e}");
    let e = error(r#"type == "é€" &&"#);
    assert_eq!(e.column, 16, "{e}");
}

#[test]
fn a_null_branch_takes_the_other_branch_type() {
    let r = record("purchase", 60_000, "FR", 0.5, false);
    assert!(holds("(vip ? 1 : null) == null", &r));
    assert!(!holds("(vip ? 1 : null) < 2", &r));
    assert!(!holds("!((vip ? 1 : null) < 2)", &r));
    assert!(holds("(vip ? null : amount_cents) == 60000", &r));
    assert!(holds(
        r#"(vip ? "a" : null) == null && (!vip ? "a" : null) != null"#,
        &r
    ));
    assert!(holds("(vip ? null : null) == null", &r));
}

#[test]
fn computed_values_are_null_where_an_operand_is() {
    let mut r = record("purchase", 500, "FR", 2.5, true);
    assert!(holds(
        "(amount_cents + 1) != null && size(country) != null",
        &r
    ));
    r[1] = Value::Null;
    r[2] = Value::Null;
    assert!(holds(
        "(amount_cents + 1) == null && size(country) == null",
        &r
    ));
    assert!(holds("upper(country) == null && 1 != null", &r));
}

#[test]
fn upper_and_lower_map_letters_case() {
    let r = record("Straße", 1, "fr", 0.5, false);
    assert!(holds(
        r#"upper(country) == "FR" && lower(upper(country)) == "fr""#,
        &r
    ));
    assert!(holds(
        r#"upper(type) == "STRASSE" && lower(type) == "straße""#,
        &r
    ));
    assert!(holds(
        r#"upper(country) in ["DE", "FR"] && upper(type).startsWith("STR")"#,
        &r
    ));
    let e = error("upper(amount_cents) == \"1\"");
    assert!(e.message.contains("`upper` takes a string"), "{e}");
}

#[test]
fn coalesce_takes_the_first_argument_that_is_not_null() {
    let mut r = record("purchase", 500, "FR", 2.5, true);
    r[1] = Value::Null;
    r[2] = Value::Null;
    assert!(holds("coalesce(amount_cents, 7) == 7", &r));
    assert!(holds("coalesce(null, amount_cents, 10 / 0, 8) == 8", &r));
    assert!(holds(r#"coalesce(country, type) == "purchase""#, &r));
    assert!(holds("coalesce(amount_cents) == null", &r));
    assert!(holds("coalesce(score, 1.0) == 2.5", &r));
    let e = error(r#"coalesce(amount_cents, "x") == 1"#);
    assert!(e.message.contains("must have one type"), "{e}");
    let e = error("coalesce() == 1");
    assert!(e.message.contains("at least one argument"), "{e}");
}

fn value(text: &str, record: &[Value]) -> Value {
    Expression::compile_in(text, &schema())
        .unwrap_or_else(|e| panic!("`{text}`: {e}"))
        .value(record)
}

#[test]
fn expressions_compute_values_of_every_type_and_null_where_evaluation_errs() {
    let r = record("purchase", 1_500, "fr", 0.5, true);
    let int = |text| match value(text, &r) {
        Value::Int(i) => i,
        other => panic!("`{text}`: {other:?}"),
    };
    let string = |text| match value(text, &r) {
        Value::Str(s) => s.to_string(),
        other => panic!("`{text}`: {other:?}"),
    };
    assert_eq!(int("amount_cents * 2"), 3_000);
    assert_eq!(int("ts"), 1_700_000_000_000);
    assert_eq!(string(r#"amount_cents > 1000 ? "big" : "small""#), "big");
    assert_eq!(string("upper(country)"), "FR");
    assert!(matches!(value("score * 2.0", &r), Value::Float(f) if f == 1.0));
    assert!(matches!(value("!vip", &r), Value::Bool(false)));
    assert!(matches!(value("amount_cents / 0", &r), Value::Null));
    assert!(matches!(value(r#"vip ? null : "x""#, &r), Value::Null));
    assert!(matches!(value("null", &r), Value::Null));
    let nulls = [
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Null,
        Value::Int(0),
    ];
    assert!(matches!(value("amount_cents + 1", &nulls), Value::Null));
    assert!(matches!(value("upper(country)", &nulls), Value::Null));
}

#[test]
fn an_expression_is_not_a_list_and_its_errors_have_their_columns() {
    let e = Expression::compile_in("[1, 2]", &schema()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "a value must be a bool, int, double, string or null, but this expression is a list at \
         column 1 of the expression"
    );
    let e = Expression::compile_in("amount_cents + country", &schema()).unwrap_err();
    assert_eq!(e.column, 14, "{e}");
}
