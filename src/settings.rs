//! What a connector needs to read its settings from a job file and check them: text that knows
//! its place in the file, the limits on counts, and [`Check`], the checks the job loader
//! offers, which report every problem as `file:line: field: message`. Connectors depend on
//! this module, and the job loader implements it, so neither imports the other's internals.

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;
use toml::Spanned;

/// A string of the job file, with where it stands.
pub type Text = Spanned<String>;

/// The largest value a count of the job file may take, and why it is there.
#[derive(Clone, Copy, Debug)]
pub struct Limit {
    /// The largest value.
    pub max: u64,
    /// Why, for the message.
    pub why: &'static str,
}

/// The job loader's checks of a section's values. Each reports what is wrong and returns a
/// value all the same (a default, when the setting is wrong), so that the rest of the file is
/// still checked.
pub trait Check {
    /// Reports that the field `field`, at `span` in the file, is wrong, and why.
    fn error(&mut self, span: Range<usize>, field: String, message: String);

    /// A duration such as `"2s"` or `"10ms"`; `default` when absent or wrong.
    fn duration(&mut self, text: &Option<Text>, field: String, default: Duration) -> Duration;

    /// A count from 1 to `limit.max`; `default` when absent or wrong.
    fn count<T: TryFrom<u64>>(
        &mut self,
        value: &Option<Spanned<i64>>,
        field: String,
        default: T,
        limit: Limit,
    ) -> T;

    /// The path `text` names, relative to the job file's directory unless absolute.
    fn path(&mut self, text: &Text, field: String) -> PathBuf;

    /// The librdkafka properties of a Kafka connector whose `kind` stands at `kind`:
    /// `bootstrap.servers` from `brokers`, then its `properties` verbatim.
    fn kafka_properties(
        &mut self,
        kind: Range<usize>,
        brokers: &Option<Text>,
        properties: &IndexMap<String, Text>,
        field: &str,
    ) -> Vec<(String, String)>;
}
