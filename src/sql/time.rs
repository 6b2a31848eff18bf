//! Time in SQL: `INTERVAL 'n' unit` literals, and the epoch-millisecond conversion of window
//! bounds that Flink jobs write as
//! `CAST(TIMESTAMPDIFF(SECOND, TIMESTAMP '1970-01-01 00:00:00', window_start) AS BIGINT) * 1000`.

use sqlparser::ast::{Expr, Value};

/// The longest interval taken: 100 years, far below where event-time arithmetic overflows.
const MAX_INTERVAL_MS: f64 = 100.0 * 365.25 * 86_400_000.0;

/// The length of `INTERVAL 'n' unit` in milliseconds (units SECOND, MINUTE, HOUR, DAY; `n` may
/// have a fraction of a second).
pub(super) fn interval_millis(expr: &Expr) -> Result<u64, String> {
    let expected = || {
        format!(
            "expected an interval such as INTERVAL '2' SECOND (SECOND, MINUTE, HOUR or DAY), \
             found `{expr}`"
        )
    };
    let Expr::Interval(interval) = expr else {
        return Err(expected());
    };
    if interval.last_field.is_some() {
        return Err(expected());
    }
    let unit_ms = match interval
        .leading_field
        .as_ref()
        .map(|f| f.to_string().to_ascii_uppercase())
        .as_deref()
    {
        Some("SECOND") => 1_000.0,
        Some("MINUTE") => 60_000.0,
        Some("HOUR") => 3_600_000.0,
        Some("DAY") => 86_400_000.0,
        _ => return Err(expected()),
    };
    let Expr::Value(value) = &*interval.value else {
        return Err(expected());
    };
    let text = match &value.value {
        Value::SingleQuotedString(s) | Value::Number(s, _) => s.trim(),
        _ => return Err(expected()),
    };
    let n: f64 = text
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)
        .ok_or_else(|| format!("`{text}` is not a non-negative number in `{expr}`"))?;
    let ms = n * unit_ms;
    if ms > MAX_INTERVAL_MS {
        return Err(format!("`{expr}` is too long: at most 100 years"));
    }
    if ms.fract() != 0.0 {
        return Err(format!("`{expr}` is not a whole number of milliseconds"));
    }
    Ok(ms as u64)
}

/// Whether `expr` is `TIMESTAMP '1970-01-01 00:00:00'` (the epoch, with the job's time zone
/// UTC).
pub(super) fn is_epoch(expr: &Expr) -> bool {
    let text = expr.to_string().to_ascii_uppercase();
    let normal: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    matches!(
        normal.as_str(),
        "TIMESTAMP '1970-01-01 00:00:00'" | "TIMESTAMP '1970-01-01 00:00:00.000'"
    )
}
