//! The settings each stateful section's checkpointed state depends on, and how a job's differ
//! from those a checkpoint was taken with: a restore keeps a section's state only while they are
//! the same.

use std::collections::BTreeMap;
use std::fmt;

use super::{ColumnValue, Job};
use crate::record::Schema;
use crate::sinks::SinkKind;
use crate::sinks::file::FileTarget;
use crate::state::SectionSettings;

impl Job {
    /// Per stateful section (`metrics.NAME`, `fraud.NAME`, `commands.NAME`,
    /// `orchestrators.NAME`, `views.NAME`, `sinks.NAME`), the settings its state depends on: what it is keyed
    /// by and what each key's state holds (a metric's `when`: which records its panes hold). A
    /// change of any other setting (a sink added, a command type's rules, a `having`) keeps the
    /// state.
    pub fn state_settings(&self) -> BTreeMap<String, SectionSettings> {
        let fields = |source: usize, indexes: &[usize]| -> String {
            let schema: &Schema = &self.sources[source].schema;
            let names: Vec<&str> = indexes
                .iter()
                .map(|&i| schema.fields()[i].name.as_str())
                .collect();
            format!("{names:?}")
        };
        let mut all = BTreeMap::new();
        let mut section = |kind: &str, name: &str, settings: Vec<(&str, String)>| {
            let settings = settings
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            all.insert(format!("{kind}.{name}"), settings);
        };
        for m in &self.metrics {
            let aggregates: Vec<String> = m
                .aggregates
                .iter()
                .map(|a| {
                    let field = &self.sources[m.source].schema.fields()[a.field].name;
                    format!("{} = {:?}({field})", a.name, a.kind)
                })
                .collect();
            section(
                "metrics",
                &m.name,
                vec![
                    (
                        "when",
                        m.when
                            .as_ref()
                            .map_or("(none)".to_string(), |w| format!("{:?}", w.text())),
                    ),
                    ("group_by", fields(m.source, &m.group_by)),
                    ("window", format!("{:?}", m.window)),
                    ("aggregates", format!("{aggregates:?}")),
                ],
            );
        }
        for f in &self.fraud {
            let rules = [
                ("velocity", format!("{:?}", f.velocity)),
                ("small_then_large", format!("{:?}", f.small_then_large)),
                ("amount_spike", format!("{:?}", f.amount_spike)),
                ("impossible_travel", format!("{:?}", f.impossible_travel)),
                ("card_testing", format!("{:?}", f.card_testing)),
            ];
            section("fraud", &f.name, rules.into());
        }
        for c in &self.commands {
            section(
                "commands",
                &c.name,
                vec![("user", fields(c.source, &[c.user]))],
            );
        }
        for o in &self.orchestrators {
            let user = fields(o.events.source, &[o.events.user_id]);
            section("orchestrators", &o.name, vec![("user", user)]);
        }
        for v in &self.views {
            let mut columns = Vec::new();
            for input in &v.inputs {
                let source = &self.sources[input.source];
                let name = |field: usize| source.schema.fields()[field].name.as_str();
                for c in &input.columns {
                    let value = match c.value {
                        ColumnValue::Count => "count".to_string(),
                        ColumnValue::Sum(f) => format!("sum({})", name(f)),
                        ColumnValue::Last(f) => format!("last({})", name(f)),
                        ColumnValue::Recent { field, n } => format!("recent({}, {n})", name(field)),
                    };
                    let by = format!("{value} by {} of {}", name(input.key), source.name);
                    columns.push((v.columns[c.index].clone(), by));
                }
            }
            let settings = columns
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            section("views", &v.name, settings);
        }
        for s in &self.sinks {
            if let SinkKind::File(FileTarget::Path(path)) = &s.kind {
                let settings = vec![
                    ("path", path.display().to_string()),
                    ("format", format!("{:?}", s.format)),
                    ("columns", format!("{:?}", s.columns)),
                    ("order_by", format!("{:?}", s.order_by)),
                ];
                section("sinks", &s.name, settings);
            }
        }
        all
    }
}

/// How a stateful section of a job differs from the one a checkpoint was taken with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateChange {
    /// The checkpoint has state of a section the job no longer has.
    Removed(String),
    /// A setting the section's state depends on is not what it was.
    Changed {
        /// The section, `kind.NAME`.
        section: String,
        /// The setting.
        setting: String,
        /// Its value when the checkpoint was taken.
        was: String,
        /// Its value now.
        now: String,
    },
}

impl StateChange {
    /// The section's name as the job file gives it (after `kind.`).
    pub fn name(&self) -> &str {
        let section = match self {
            StateChange::Removed(section) | StateChange::Changed { section, .. } => section,
        };
        section_name(section)
    }
}

/// The name a section key of [`Job::state_settings`] (`kind.NAME`) has in the job file.
pub fn section_name(key: &str) -> &str {
    key.split_once('.').map_or(key, |(_, name)| name)
}

impl fmt::Display for StateChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateChange::Removed(section) => write!(
                f,
                "the checkpoint has state of {section}, which the job no longer has: it is dropped"
            ),
            StateChange::Changed {
                section,
                setting,
                was,
                now,
            } => write!(
                f,
                "{section}: its state was checkpointed with {setting} = {was}, and the job now \
                 has {setting} = {now}, which that state cannot follow; run with --reset-state {} \
                 to start its state empty",
                self.name()
            ),
        }
    }
}

/// How the sections of `now` (a job's [`Job::state_settings`]) differ from `was` (a
/// checkpoint's): sections removed, and the settings changed of those in both. A section new in
/// `now` is no change: it starts empty.
pub fn state_changes(
    was: &BTreeMap<String, SectionSettings>,
    now: &BTreeMap<String, SectionSettings>,
) -> Vec<StateChange> {
    let mut changes = Vec::new();
    for (section, before) in was {
        let Some(after) = now.get(section) else {
            changes.push(StateChange::Removed(section.clone()));
            continue;
        };
        for (setting, value) in before {
            let current = after.get(setting).map_or("(none)", String::as_str);
            if current != value {
                changes.push(StateChange::Changed {
                    section: section.clone(),
                    setting: setting.clone(),
                    was: value.clone(),
                    now: current.to_string(),
                });
            }
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const JOB: &str = r#"
[job]
name = "j"

[[sources]]
name = "in"
kind = "file"
paths = ["in.jsonl"]
event_time = "ts"
schema = { k = "int", c = "string", amount = "int", ts = "timestamp" }

[[metrics]]
name = "per-key"
source = "in"
group_by = ["k"]
window = { kind = "tumbling", size = "10s" }
aggregates = { n = "count", total = "sum(amount)" }
sinks = ["out"]

[[sinks]]
name = "out"
kind = "file"
path = "out.csv"
format = "csv"
"#;

    fn settings(text: &str) -> BTreeMap<String, SectionSettings> {
        Job::parse_with(Path::new("/jobs/j.toml"), text, &|_| None)
            .unwrap_or_else(|e| panic!("{e}"))
            .state_settings()
    }

    #[test]
    fn an_unchanged_job_or_one_with_other_settings_changed_keeps_its_state() {
        let was = settings(JOB);
        assert_eq!(state_changes(&was, &settings(JOB)), []);
        let filtered = JOB.replace("sinks = [\"out\"]", "having = \"n > 1\"\nsinks = [\"out\"]");
        assert_eq!(state_changes(&was, &settings(&filtered)), []);
    }

    #[test]
    fn a_changed_group_by_names_the_section_the_setting_and_the_way_out() {
        let was = settings(JOB);
        let now = settings(&JOB.replace("group_by = [\"k\"]", "group_by = [\"c\"]"));
        let changes = state_changes(&was, &now);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(changes[0].name(), "per-key");
        assert_eq!(
            changes[0].to_string(),
            "metrics.per-key: its state was checkpointed with group_by = [\"k\"], and the job \
             now has group_by = [\"c\"], which that state cannot follow; run with --reset-state \
             per-key to start its state empty"
        );
    }

    #[test]
    fn a_changed_or_added_metric_when_changes_what_the_panes_hold() {
        let filtered = |when: &str| {
            settings(&JOB.replace(
                "group_by = [\"k\"]",
                &format!("when = {when:?}\ngroup_by = [\"k\"]"),
            ))
        };
        let changes = state_changes(&settings(JOB), &filtered("amount > 1"));
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert_eq!(
            changes[0].to_string(),
            "metrics.per-key: its state was checkpointed with when = (none), and the job now has \
             when = \"amount > 1\", which that state cannot follow; run with --reset-state \
             per-key to start its state empty"
        );
        let was = filtered("amount > 1");
        assert_eq!(state_changes(&was, &filtered("amount > 1")), []);
        assert_eq!(state_changes(&was, &filtered("amount > 2")).len(), 1);
        assert_eq!(state_changes(&was, &settings(JOB)).len(), 1);
    }

    #[test]
    fn a_removed_section_is_reported() {
        let was = settings(JOB);
        let text = JOB.replace("[[metrics]]", "[[nothing]]");
        let cut = text.find("[[nothing]]").unwrap();
        let end = text.find("[[sinks]]").unwrap();
        let routed = format!(
            "{}[[routes]]\nname = \"all\"\nsource = \"in\"\nsinks = [\"out\"]\n\n{}",
            &text[..cut],
            &text[end..]
        );
        let changes = state_changes(&was, &settings(&routed));
        assert!(
            changes.contains(&StateChange::Removed("metrics.per-key".into())),
            "{changes:?}"
        );
    }
}
