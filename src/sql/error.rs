//! Problems found in a SQL job: where (a span of the file), in which construct, and what.

use std::path::Path;

use sqlparser::tokenizer::{Location, Span};

use crate::job::{JobError, JobErrors};

/// One problem: its place, the construct it is in (e.g. `INSERT INTO q1`), and what is wrong.
#[derive(Debug)]
pub(super) struct Problem {
    at: Span,
    construct: String,
    message: String,
}

impl Problem {
    /// A problem at `at`, in `construct`.
    pub(super) fn new(at: Span, construct: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            at,
            construct: construct.into(),
            message: message.into(),
        }
    }

    /// The problem, placed at `end` if it has no place (the parser's end of input has none).
    pub(super) fn or_at(mut self, end: Location) -> Self {
        if self.at.start.line == 0 {
            self.at = Span::new(end, end);
        }
        self
    }

    /// The problem as a job error of the file at `path`.
    pub(super) fn into_job_error(self, path: &Path) -> JobError {
        JobError {
            path: path.into(),
            line: self.at.start.line as usize,
            column: self.at.start.column as usize,
            field: self.construct,
            message: self.message,
        }
    }
}

/// The problems of a file, in the order they were found.
pub(super) fn job_errors(path: &Path, problems: Vec<Problem>) -> JobErrors {
    JobErrors(
        problems
            .into_iter()
            .map(|p| p.into_job_error(path))
            .collect(),
    )
}
