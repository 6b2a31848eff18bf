//! The values a job file writes as text or numbers: durations, counts and paths relative to the
//! file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use toml::Spanned;

use super::{Checker, raw};
use crate::settings::Check;

/// The longest duration a job may set: 100 years. Event times (epoch milliseconds) plus a few
/// such durations stay far inside `i64` milliseconds, and wall-clock deadlines far inside what an
/// `Instant` holds, so no arithmetic on them overflows.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

/// [`MAX_DURATION`] as a job file writes it.
const MAX_DURATION_TEXT: &str = "876000h";

/// A duration the checker returned, in ms (sub-millisecond parts dropped).
pub(super) fn millis_of(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).expect("durations are bounded by MAX_DURATION")
}

pub(super) use crate::settings::Limit;

impl Checker<'_> {
    /// A duration such as `"2s"` or `"10ms"`, from 0 to [`MAX_DURATION`]; `default` when absent
    /// or wrong.
    pub(super) fn duration(
        &mut self,
        text: &Option<raw::Text>,
        field: String,
        default: Duration,
    ) -> Duration {
        let Some(text) = text else { return default };
        match text.get_ref().parse::<jiff::SignedDuration>() {
            Ok(d) if d.is_negative() => {
                self.error(text.span(), field, "must not be negative");
                default
            }
            Ok(d) if d.unsigned_abs() > MAX_DURATION => {
                self.error(
                    text.span(),
                    field,
                    format!(
                        "`{}` is too long: durations are at most {MAX_DURATION_TEXT} (100 years)",
                        text.get_ref()
                    ),
                );
                default
            }
            Ok(d) => d.unsigned_abs(),
            Err(e) => {
                self.error(
                    text.span(),
                    field,
                    format!(
                        "`{}` is not a duration such as \"2s\" or \"10ms\": {e}",
                        text.get_ref()
                    ),
                );
                default
            }
        }
    }

    /// A duration of at least 1 ms, in ms; `None` when absent or wrong.
    pub(super) fn millis(&mut self, text: &Option<raw::Text>, field: String) -> Option<u64> {
        let t = text.as_ref()?;
        let errors_before = self.errors.len();
        let d = self.millis_or_zero(text, field.clone());
        if self.errors.len() > errors_before {
            return None;
        }
        if d == 0 {
            self.error(t.span(), field, "must be at least 1ms");
            return None;
        }
        Some(d)
    }

    /// A duration in ms (sub-millisecond parts dropped), 0 when absent or wrong.
    pub(super) fn millis_or_zero(&mut self, text: &Option<raw::Text>, field: String) -> u64 {
        millis_of(self.duration(text, field, Duration::ZERO))
    }

    /// A count from 1 to `limit.max`, `default` when absent or wrong.
    pub(super) fn count<T: TryFrom<u64>>(
        &mut self,
        value: &Option<Spanned<i64>>,
        field: String,
        default: T,
        limit: Limit,
    ) -> T {
        let Some(v) = value else { return default };
        match u64::try_from(*v.get_ref()) {
            Ok(n @ 1..) if n <= limit.max => T::try_from(n)
                .unwrap_or_else(|_| panic!("the limit of {field} fits the type of its value")),
            _ => {
                self.error(
                    v.span(),
                    field,
                    format!("must be an integer from 1 to {}: {}", limit.max, limit.why),
                );
                default
            }
        }
    }

    /// The path `text` names, relative to the job file's directory unless absolute; an empty one
    /// (a `${VAR}` set to nothing, say) is an error at `field`.
    pub(super) fn path(&mut self, text: &raw::Text, field: String) -> PathBuf {
        if text.get_ref().trim().is_empty() {
            self.error(text.span(), field, "the path is empty");
        }
        self.relative(text.get_ref())
    }

    /// Paths in a job file are relative to the file's directory.
    pub(super) fn relative(&self, path: &str) -> PathBuf {
        relative_to(self.path, path)
    }
}

/// The checks connectors use on their settings, which are the loader's own.
impl Check for Checker<'_> {
    fn error(&mut self, span: std::ops::Range<usize>, field: String, message: String) {
        Checker::error(self, span, field, message);
    }

    fn duration(&mut self, text: &Option<raw::Text>, field: String, default: Duration) -> Duration {
        Checker::duration(self, text, field, default)
    }

    fn count<T: TryFrom<u64>>(
        &mut self,
        value: &Option<Spanned<i64>>,
        field: String,
        default: T,
        limit: Limit,
    ) -> T {
        Checker::count(self, value, field, default, limit)
    }

    fn path(&mut self, text: &raw::Text, field: String) -> PathBuf {
        Checker::path(self, text, field)
    }

    fn kafka_properties(
        &mut self,
        kind: std::ops::Range<usize>,
        brokers: &Option<raw::Text>,
        properties: &IndexMap<String, raw::Text>,
        field: &str,
    ) -> Vec<(String, String)> {
        Checker::kafka_properties(self, kind, brokers, properties, field)
    }
}

/// `path` as a job file at `job` means it: relative to the file's directory.
pub(crate) fn relative_to(job: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    match job.parent() {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    }
}
