//! `[checkpoints]`: where a job's state is checkpointed, how often, and how many complete
//! checkpoints are kept.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::values::Limit;
use super::{Checker, raw};
use crate::state::Location;

/// `[checkpoints]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointsSection {
    store: raw::Text,
    interval: Option<raw::Text>,
    keep: Option<Spanned<i64>>,
}

/// The most complete checkpoints kept.
const KEEP: Limit = Limit {
    max: 1000,
    why: "complete checkpoints kept in the store",
};

/// A job's checkpoint settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointsSpec {
    /// Where checkpoints are written; a relative directory is taken from the job file's.
    pub store: Location,
    /// Wall-clock time from the start of one checkpoint to the start of the next (a checkpoint
    /// still being written when it is due delays the next).
    pub interval: Duration,
    /// Complete checkpoints kept; older ones are deleted.
    pub keep: usize,
}

impl CheckpointsSpec {
    /// The interval when the job file gives none.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
    /// The number of checkpoints kept when the job file gives none.
    pub const DEFAULT_KEEP: usize = 3;
}

impl Checker<'_> {
    /// Validates `[checkpoints]`, if the job has one.
    pub(super) fn checkpoints(
        &mut self,
        section: &Option<Spanned<CheckpointsSection>>,
    ) -> Option<CheckpointsSpec> {
        let section = section.as_ref()?.get_ref();
        let text = section.store.get_ref().clone();
        let store = match Location::parse(&text) {
            Ok(Location::Dir(dir)) => Location::Dir(self.relative(&dir.to_string_lossy())),
            Ok(s3) => s3,
            Err(e) => {
                self.error(section.store.span(), "checkpoints.store", e);
                return None;
            }
        };
        let interval = self.duration(
            &section.interval,
            "checkpoints.interval".into(),
            CheckpointsSpec::DEFAULT_INTERVAL,
        );
        if interval.is_zero() {
            let span = section.interval.as_ref().map_or(0..0, Spanned::span);
            self.error(span, "checkpoints.interval", "must be longer than 0");
        }
        let keep = self.count(
            &section.keep,
            "checkpoints.keep".into(),
            CheckpointsSpec::DEFAULT_KEEP,
            KEEP,
        );
        Some(CheckpointsSpec {
            store,
            interval,
            keep,
        })
    }
}

impl Checker<'_> {
    /// Refuses the sink settings that cannot work with (or without) `[checkpoints]`, naming
    /// them: with them, what checkpoints cannot restore yet (a restore would otherwise come back
    /// with part of the job's state and a source read from a position its state does not follow
    /// from); without them, what needs a restore.
    pub(super) fn checkpoint_conflicts(&mut self, file: &raw::JobFile) {
        let checkpoints = file.checkpoints.is_some();
        for (i, sink) in file.sinks.iter().enumerate() {
            let kind = &sink.get_ref().kind;
            if let Some((span, field, message)) = kind
                .get_ref()
                .checkpoints_conflict(checkpoints, kind.span())
            {
                self.error(span, format!("sinks[{i}].{field}"), message);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::job::Job;

    const JOB: &str = r#"
[job]
name = "j"

[[sources]]
name = "in"
kind = "file"
paths = ["in.jsonl"]
event_time = "ts"
schema = { k = "int", ts = "timestamp" }

[[routes]]
name = "all"
source = "in"
sinks = ["out"]

[[sinks]]
name = "out"
kind = "stdout"
"#;

    fn parse(section: &str) -> Result<Job, String> {
        let text = format!("{JOB}\n{section}");
        let vars = |name: &str| (name == "BUCKET").then(|| "b".to_string());
        Job::parse_with(Path::new("/jobs/j.toml"), &text, &vars).map_err(|e| e.to_string())
    }

    #[test]
    fn the_section_is_optional_and_its_settings_have_defaults() {
        assert_eq!(parse("").unwrap().checkpoints, None);
        let job = parse("[checkpoints]\nstore = \"state\"").unwrap();
        assert_eq!(
            job.checkpoints,
            Some(CheckpointsSpec {
                store: Location::Dir("/jobs/state".into()),
                interval: CheckpointsSpec::DEFAULT_INTERVAL,
                keep: CheckpointsSpec::DEFAULT_KEEP,
            })
        );
    }

    #[test]
    fn s3_stores_expand_variables_and_take_the_settings_given() {
        let job =
            parse("[checkpoints]\nstore = \"s3://${BUCKET}/p\"\ninterval = \"20ms\"\nkeep = 1")
                .unwrap();
        assert_eq!(
            job.checkpoints,
            Some(CheckpointsSpec {
                store: Location::S3 {
                    bucket: "b".into(),
                    prefix: "p".into()
                },
                interval: Duration::from_millis(20),
                keep: 1,
            })
        );
    }

    #[test]
    fn bad_settings_are_errors_naming_the_field() {
        let errors = parse("[checkpoints]\nstore = \"gs://b\"").unwrap_err();
        assert!(errors.contains("checkpoints.store"), "{errors}");
        let errors = parse("[checkpoints]\nstore = \"d\"\ninterval = \"0s\"").unwrap_err();
        assert!(errors.contains("checkpoints.interval"), "{errors}");
        let errors = parse("[checkpoints]\nstore = \"d\"\nkeep = 0").unwrap_err();
        assert!(errors.contains("checkpoints.keep"), "{errors}");
        let errors = parse("[checkpoints]\nstore = \"d\"\nevery = \"1s\"").unwrap_err();
        assert!(errors.contains("every"), "{errors}");
    }
}
