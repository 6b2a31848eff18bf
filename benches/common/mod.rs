//! What the benchmarks share: the ten content routes of the routing benchmarks.

/// Ten routes over the generator's payments (name, CEL predicate), as a routing job might
/// declare them: comparisons, `in` lists, string methods, arithmetic, `&&` and `||`. Together
/// they take about two thirds of the events, some more than once; the rest go to a default route.
pub const ROUTES: [(&str, &str); 10] = [
    (
        "large_foreign",
        r#"amount_cents > 50000 && country != "US""#,
    ),
    (
        "euro_area",
        r#"country in ["DE", "FR", "IT", "ES", "NL", "BE", "AT", "IE", "PT", "FI"]"#,
    ),
    ("micro", "amount_cents < 200"),
    (
        "nordic_large",
        r#"country in ["SE", "NO", "DK", "FI"] && amount_cents >= 10000"#,
    ),
    ("round_amount", "amount_cents % 100 == 0"),
    ("merchant_7", r#"merchant.endsWith("7")"#),
    (
        "uk_mid",
        r#"country == "GB" && amount_cents >= 2000 && amount_cents < 20000"#,
    ),
    ("low_accounts", "account_id < 1000"),
    ("apac", r#"country == "JP" || country == "AU""#),
    (
        "scaled",
        r#"amount_cents * 3 > 400000 || (country.startsWith("C") && amount_cents > 30000)"#,
    ),
];
