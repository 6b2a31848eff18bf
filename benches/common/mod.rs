//! What the benchmarks share: the generator's payments, the ten content routes of the routing
//! benchmarks, and the command feed of the command-processor benchmarks.

use eddy::sources::generator::GeneratorConfig;
use eddy::sources::incidents::FraudMix;

/// `count` of the generator's payments as the benchmarks read them (100 000 accounts, 5 000
/// merchants, 10 000 per second of event time, 1 s of disorder), drawn from `seed`; with
/// `fraud`, an incident every 1 000 transactions, laid out for the fraud rules' 10 s spans.
pub fn payments(seed: u64, count: u64, fraud: bool) -> GeneratorConfig {
    GeneratorConfig {
        seed,
        count: Some(count),
        rate: 10_000,
        accounts: 100_000,
        merchants: 5_000,
        disorder_ms: 1_000,
        start_ms: 1_700_000_000_000,
        paced: false,
        fraud: fraud.then_some(FraudMix {
            every: 1_000,
            within_ms: 10_000,
        }),
    }
}

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

/// `count` commands as JSON lines, 10 000 per second of event time: every user registers, then
/// purchases and preference changes for registered users, one in ten invalid.
pub fn command_lines(count: u64) -> Vec<String> {
    let users = count / 10;
    (0..count)
        .map(|i| {
            let ts = 1_700_000_000_000 + i / 10;
            if i < users {
                format!(
                    r#"{{"command_id":"c{i}","user_id":{i},"type":"RegisterUser","ts":{ts},"name":"U{i}","phone":"+4479{i:08}","email":"u{i}@example.com","channel":"sms"}}"#
                )
            } else {
                let user = i * 7919 % users;
                match i % 10 {
                    0 => format!(
                        r#"{{"command_id":"c{i}","user_id":{user},"type":"InitiatePurchase","ts":{ts},"amount_cents":-1,"item":"x"}}"#
                    ),
                    1 => format!(
                        r#"{{"command_id":"c{i}","user_id":{user},"type":"UpdatePreferences","ts":{ts},"channel":"email"}}"#
                    ),
                    _ => format!(
                        r#"{{"command_id":"c{i}","user_id":{user},"type":"InitiatePurchase","ts":{ts},"amount_cents":1500,"item":"ticket"}}"#
                    ),
                }
            }
        })
        .collect()
}
