//! The values a job file writes as text or numbers: durations, counts, `${VAR}` expansion and
//! paths relative to the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::{Checker, raw};

impl Checker<'_> {
    /// A duration such as `"2s"` or `"10ms"`, `default` when absent.
    pub(super) fn duration(
        &mut self,
        text: &Option<raw::Text>,
        field: String,
        default: Duration,
    ) -> Duration {
        let Some(text) = text else { return default };
        match text.get_ref().parse::<jiff::SignedDuration>() {
            Ok(d) if !d.is_negative() => d.unsigned_abs(),
            Ok(_) => {
                self.error(text.span(), field, "must not be negative");
                default
            }
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

    /// A duration of at least 1 ms, in ms; `None` when absent.
    pub(super) fn millis(&mut self, text: &Option<raw::Text>, field: String) -> Option<u64> {
        let t = text.as_ref()?;
        let d = self
            .duration(text, field.clone(), Duration::ZERO)
            .as_millis() as u64;
        if d == 0 {
            self.error(t.span(), field, "must be at least 1ms");
            return None;
        }
        Some(d)
    }

    /// A positive integer, `default` when absent.
    pub(super) fn positive(
        &mut self,
        value: &Option<Spanned<i64>>,
        field: String,
        default: u64,
    ) -> u64 {
        match value {
            None => default,
            Some(v) if *v.get_ref() > 0 => *v.get_ref() as u64,
            Some(v) => {
                self.error(v.span(), field, "must be a positive integer");
                default
            }
        }
    }

    /// Substitutes `${VAR}` from the environment.
    pub(super) fn expand(&mut self, text: &raw::Text, field: String) -> String {
        let mut out = String::new();
        let mut rest = text.get_ref().as_str();
        while let Some(at) = rest.find("${") {
            out.push_str(&rest[..at]);
            let Some(end) = rest[at..].find('}') else {
                self.error(text.span(), field, "unclosed `${`");
                return out;
            };
            let name = &rest[at + 2..at + end];
            match (self.vars)(name) {
                Some(v) => out.push_str(&v),
                None => {
                    self.error(
                        text.span(),
                        field.clone(),
                        format!("environment variable `{name}` is not set"),
                    );
                }
            }
            rest = &rest[at + end + 1..];
        }
        out.push_str(rest);
        out
    }

    /// Paths in a job file are relative to the file's directory.
    pub(super) fn relative(&self, path: &str) -> PathBuf {
        let path = Path::new(path);
        match self.path.parent() {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        }
    }
}
