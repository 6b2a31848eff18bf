//! The job file as written: the TOML shape, with spans kept for error messages.

use indexmap::IndexMap;
use serde::Deserialize;
use toml::Spanned;

use crate::sinks::SinkSettings;

pub use crate::settings::Text;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    pub job: Spanned<JobSection>,
    #[serde(default)]
    pub sources: Vec<Spanned<SourceSection>>,
    #[serde(default)]
    pub metrics: Vec<Spanned<MetricSection>>,
    #[serde(default)]
    pub fraud: Vec<Spanned<FraudSection>>,
    #[serde(default)]
    pub commands: Vec<Spanned<CommandsSection>>,
    #[serde(default)]
    pub orchestrators: Vec<Spanned<OrchestratorSection>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RouteSection>>,
    #[serde(default)]
    pub views: Vec<Spanned<ViewSection>>,
    #[serde(default)]
    pub enrich: Vec<Spanned<EnrichSection>>,
    pub server: Option<Spanned<ServerSection>>,
    #[serde(default)]
    pub sinks: Vec<Spanned<SinkSection>>,
    pub checkpoints: Option<Spanned<super::checkpoints::CheckpointsSection>>,
}

/// `[job]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSection {
    pub name: Text,
    pub tick: Option<Text>,
    pub commit_interval: Option<Text>,
    pub dead_letter: Option<Text>,
}

/// One `[[sources]]`: the settings every source has, and those of its kind.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    pub name: Text,
    pub kind: Spanned<SourceKind>,
    pub format: Option<Text>,
    pub schema: Spanned<IndexMap<String, Text>>,
    pub event_time: Text,
    pub out_of_orderness: Option<Text>,
    pub idle_timeout: Option<Text>,
    pub max_drift: Option<Text>,
    pub max_record_bytes: Option<Spanned<i64>>,
}

/// The settings of each kind of source (see [`super::tagged`] for how `kind` selects them).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    Kafka(KafkaSource),
    File(FileSource),
    Generator(GeneratorSource),
}

/// `kind = "kafka"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSource {
    pub brokers: Option<Text>,
    pub topics: Option<Spanned<Vec<Text>>>,
    pub group: Option<Text>,
    #[serde(default)]
    pub properties: IndexMap<String, Text>,
}

/// `kind = "file"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSource {
    pub paths: Option<Spanned<Vec<Text>>>,
    pub splits: Option<Spanned<i64>>,
}

/// `kind = "generator"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorSource {
    pub seed: Option<Spanned<i64>>,
    pub count: Option<Spanned<i64>>,
    pub rate: Option<Spanned<i64>>,
    pub accounts: Option<Spanned<i64>>,
    pub merchants: Option<Spanned<i64>>,
    pub disorder: Option<Text>,
    pub partitions: Option<Spanned<i64>>,
    pub paced: Option<bool>,
    pub fraud: Option<Spanned<FraudMixSection>>,
}

/// A generator source's `fraud`: incidents mixed into traffic that fires no rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FraudMixSection {
    pub every: Spanned<i64>,
    pub within: Text,
}

/// One `[[metrics]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSection {
    pub name: Text,
    pub source: Text,
    pub when: Option<Text>,
    #[serde(default)]
    pub group_by: Vec<Text>,
    pub window: Spanned<WindowSection>,
    pub allowed_lateness: Option<Text>,
    pub aggregates: Spanned<IndexMap<String, Text>>,
    pub having: Option<Text>,
    #[serde(default)]
    pub sinks: Vec<Text>,
    pub late_sink: Option<Text>,
}

/// A metric's `window`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSection {
    pub kind: Spanned<WindowKind>,
}

/// The settings of each kind of window.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowKind {
    Tumbling(TumblingWindow),
    Hopping(HoppingWindow),
    Session(SessionWindow),
}

/// `kind = "tumbling"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TumblingWindow {
    pub size: Option<Text>,
}

/// `kind = "hopping"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoppingWindow {
    pub size: Option<Text>,
    pub slide: Option<Text>,
}

/// `kind = "session"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionWindow {
    pub gap: Option<Text>,
}

/// One `[[fraud]]`: rules on a source of card payments; a rule is on when its table is present.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FraudSection {
    pub name: Text,
    pub source: Text,
    pub fields: Option<Spanned<PaymentFieldsSection>>,
    pub suppression: Option<Text>,
    pub velocity: Option<Spanned<VelocitySection>>,
    pub small_then_large: Option<Spanned<SmallThenLargeSection>>,
    pub amount_spike: Option<Spanned<AmountSpikeSection>>,
    pub impossible_travel: Option<Spanned<ImpossibleTravelSection>>,
    pub card_testing: Option<Spanned<CardTestingSection>>,
    #[serde(default)]
    pub sinks: Vec<Text>,
    pub late_sink: Option<Text>,
}

/// Which schema fields hold a payment's parts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentFieldsSection {
    pub id: Option<Text>,
    pub account: Option<Text>,
    pub amount: Option<Text>,
    pub merchant: Option<Text>,
    pub country: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VelocitySection {
    pub count: Option<Spanned<i64>>,
    pub amount: Option<Spanned<i64>>,
    pub within: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmallThenLargeSection {
    pub small_below: Spanned<i64>,
    pub large_above: Spanned<i64>,
    pub within: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmountSpikeSection {
    pub factor: Spanned<f64>,
    pub history: Option<Spanned<i64>>,
    pub min_history: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImpossibleTravelSection {
    pub within: Text,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardTestingSection {
    pub merchants: Spanned<i64>,
    pub small_below: Spanned<i64>,
    pub within: Text,
}

/// One `[[routes]]`: the events of a source that meet `when` (every event without it; with
/// `otherwise = true`, those meeting no `when` of that source's routes) go to `sinks`, as the
/// columns `select` computes (the source's fields without it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    pub name: Text,
    pub source: Text,
    pub when: Option<Text>,
    pub otherwise: Option<Spanned<bool>>,
    pub select: Option<Spanned<IndexMap<String, Text>>>,
    #[serde(default)]
    pub sinks: Vec<Text>,
}

/// One `[[commands]]`: a command processor.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandsSection {
    pub name: Text,
    pub source: Text,
    pub fields: Option<Spanned<CommandFieldsSection>>,
    pub dedup_within: Option<Text>,
    pub types: Option<Spanned<IndexMap<String, Spanned<CommandTypeSection>>>>,
    #[serde(default)]
    pub sinks: Vec<Text>,
}

/// Which schema fields hold a command's id, user and type.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandFieldsSection {
    pub id: Option<Text>,
    pub user: Option<Text>,
    #[serde(rename = "type")]
    pub kind: Option<Text>,
}

/// One command type of a `[[commands]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandTypeSection {
    pub event: Text,
    pub user: Option<Text>,
    #[serde(default)]
    pub required: Vec<Text>,
    #[serde(default)]
    pub formats: IndexMap<String, Text>,
}

/// One `[[orchestrators]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrchestratorSection {
    pub name: Text,
    pub events: Text,
    pub alerts: Option<Text>,
    pub reactions: Spanned<IndexMap<String, Spanned<ReactionSection>>>,
    #[serde(default)]
    pub sinks: Vec<Text>,
}

/// How an orchestrator reacts to one event type (or `alert`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReactionSection {
    pub channel: Option<Text>,
    pub subject: Option<Text>,
    pub text: Text,
}

/// One `[[sinks]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSection {
    pub name: Text,
    pub kind: Spanned<SinkSettings>,
}

/// One `[[views]]`: columns of a view kept from one source; sections with the same `name` make
/// one view from several sources.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewSection {
    pub name: Text,
    pub source: Text,
    pub key: Text,
    pub when: Option<Text>,
    pub tick: Option<Text>,
    pub columns: Spanned<IndexMap<String, Spanned<ColumnSection>>>,
}

/// A view column: `"count"`, `"sum(f)"`, `"last(f)"`, or a table with that `value` and a `when`
/// (untagged, so without spans of their own: errors point at the column).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ColumnSection {
    Value(String),
    Table { value: String, when: Option<String> },
}

/// One `[[enrich]]`: the events of `source`, each with columns of the row of `view` whose key is
/// the event's `key` field, as the row stood at the event's time; `columns` maps output names to
/// view columns; with `inner = true`, events whose key has no row are dropped.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrichSection {
    pub name: Text,
    pub source: Text,
    pub view: Text,
    pub key: Text,
    pub columns: Spanned<IndexMap<String, Text>>,
    pub inner: Option<Spanned<bool>>,
    #[serde(default)]
    pub sinks: Vec<Text>,
}

/// `[server]`: the HTTP server of the views, metrics and health.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub listen: Option<Text>,
    pub token_env: Option<Text>,
}

/// A section that computes from one source and writes to sinks, by name.
pub trait Output {
    /// The source's name.
    fn source(&self) -> &Text;
    /// The sinks' names.
    fn sinks(&self) -> &[Text];
    /// The late events' sink, for sections that have one.
    fn late_sink(&self) -> Option<&Text> {
        None
    }
}

/// Implements [`Output`] for sections with `source` and `sinks` fields (and `late_sink`).
macro_rules! output {
    ($section:ty $(, $late:ident)?) => {
        impl Output for $section {
            fn source(&self) -> &Text {
                &self.source
            }
            fn sinks(&self) -> &[Text] {
                &self.sinks
            }
            $(fn late_sink(&self) -> Option<&Text> {
                self.$late.as_ref()
            })?
        }
    };
}

output!(MetricSection, late_sink);
output!(FraudSection, late_sink);
output!(CommandsSection);
output!(RouteSection);
output!(EnrichSection);
