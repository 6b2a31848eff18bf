//! The kinds of sink. Each kind's module implements [`Settings`] (how its `[[sinks]]` section
//! reads and what it checks) and [`Sink`] (the operator it builds), and the two lists at the end
//! of this file register it: [`SinkSettings`], what the job loader reads, and [`SinkKind`], what
//! the dataflows write to. The job loader and the dataflows name no kind; they go through
//! [`SinkSettings::check`] and [`SinkKind::write`].

use std::ops::Range;

use anyhow::Context as _;
use serde::Deserialize;
use timely::ExchangeData;
use timely::dataflow::StreamVec;
use toml::Spanned;

use super::Encode;
use super::file::Order;
use super::format::RowEncoder;
use crate::settings::{Check, Text};
use crate::state::{SectionCheckpoint, WorkerCheckpoint};

/// What a sink writes of the rows it is given, as far as its kind lets the job say.
#[derive(Default)]
pub struct Rows<'a> {
    /// `format`: json or csv.
    pub format: Option<&'a Text>,
    /// `key`: the column used as message key.
    pub key: Option<&'a Text>,
    /// `columns`: the columns written.
    pub columns: Option<&'a Spanned<Vec<Text>>>,
    /// `order_by`: the columns a bounded job's output is sorted by.
    pub order_by: &'a [Text],
}

/// A kind of sink's own settings, as its `[[sinks]]` section writes them beside `kind`.
pub trait Settings {
    /// Its row settings (none, unless the kind takes rows).
    fn rows(&self) -> Rows<'_> {
        Rows::default()
    }

    /// The sink these settings make, the problems reported to `check` under `field` (the
    /// section's `kind` standing at `kind`); `None` when there is no sink to speak of.
    fn check<C: Check>(&self, check: &mut C, kind: Range<usize>, field: &str) -> Option<SinkKind>;

    /// What these settings cannot do in a job with `checkpoints` (or without): the span, the
    /// field (under the section) and why, the section's `kind` standing at `kind`. `None`: they
    /// work either way.
    fn checkpoints_conflict(
        &self,
        _checkpoints: bool,
        _kind: Range<usize>,
    ) -> Option<(Range<usize>, &'static str, String)> {
        None
    }
}

/// A kind of sink, from its checked settings: an operator that writes any stream whose items
/// an [`Encode`] turns into bytes, and returns its flushed stream (see [`crate::sinks`]).
pub trait Sink {
    /// Whether the messages it writes carry headers: a dead letter then goes as the input it
    /// was, its error and origin in headers, rather than as a JSON object holding them.
    fn headers(&self) -> bool {
        false
    }

    /// The encoder of rows with the columns `columns` for this sink, from the one every sink
    /// kind shares (a Kafka sink picks each row's topic).
    fn row_encoder(&self, encoder: RowEncoder, _columns: &[String]) -> anyhow::Result<RowEncoder> {
        Ok(encoder)
    }

    /// Whether the sink takes part in the job's checkpoints, so that a restored job writes the
    /// rows after its checkpoint once (a file it can cut back). A sink that does not writes
    /// them again after a restore (at-least-once).
    fn checkpointed(&self) -> bool {
        false
    }

    /// Writes every item of `stream` as `encoder` encodes it, and, where the kind keeps an
    /// order (a file), sorted by `order` once the input ends. `checkpoint` is given when the
    /// job takes checkpoints and [`Sink::checkpointed`] says the sink takes part.
    fn write<'scope, D: ExchangeData, E: Encode<D>>(
        &self,
        stream: StreamVec<'scope, u64, D>,
        encoder: E,
        order: Option<Order<D>>,
        checkpoint: Option<SectionCheckpoint>,
    ) -> anyhow::Result<StreamVec<'scope, u64, ()>>;
}

/// Declares [`SinkKind`], one variant per kind of sink holding its [`Sink`], and its dispatch.
macro_rules! sink_kinds {
    ($($(#[$doc:meta])* $kind:ident($sink:ty),)*) => {
        /// Every kind of sink, each with its checked settings.
        #[derive(Clone, Debug)]
        pub enum SinkKind {
            $($(#[$doc])* $kind($sink),)*
        }

        impl SinkKind {
            /// See [`Sink::headers`].
            pub fn headers(&self) -> bool {
                match self {
                    $(SinkKind::$kind(sink) => sink.headers(),)*
                }
            }

            /// See [`Sink::row_encoder`]; errors name the sink, `name`.
            pub fn row_encoder(
                &self,
                name: &str,
                encoder: RowEncoder,
                columns: &[String],
            ) -> anyhow::Result<RowEncoder> {
                match self {
                    $(SinkKind::$kind(sink) => sink.row_encoder(encoder, columns),)*
                }
                .with_context(|| format!("sink `{name}`"))
            }

            /// See [`Sink::write`]; errors name the sink, `name`. With `checkpoints` (the
            /// worker's, in a job that takes them), a sink that takes part does so as section
            /// `output → name`.
            pub fn write<'scope, D: ExchangeData, E: Encode<D>>(
                &self,
                name: &str,
                output: &str,
                stream: StreamVec<'scope, u64, D>,
                encoder: E,
                order: Option<Order<D>>,
                checkpoints: Option<&WorkerCheckpoint>,
            ) -> anyhow::Result<StreamVec<'scope, u64, ()>> {
                match self {
                    $(SinkKind::$kind(sink) => {
                        let checkpoint = checkpoints
                            .filter(|_| sink.checkpointed())
                            .map(|w| SectionCheckpoint::new(w, format!("{output} → {name}")));
                        sink.write(stream, encoder, order, checkpoint)
                    })*
                }
                .with_context(|| format!("sink `{name}`"))
            }
        }
    };
}

/// Declares [`SinkSettings`], one variant per `kind = "…"` holding that kind's [`Settings`],
/// and its dispatch.
macro_rules! sink_settings {
    ($($(#[$doc:meta])* $kind:ident($settings:ty),)*) => {
        /// The settings of every kind of sink, by the `kind` that names it (in lower case).
        #[derive(Debug, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum SinkSettings {
            $($(#[$doc])* $kind($settings),)*
        }

        impl SinkSettings {
            /// See [`Settings::rows`].
            pub fn rows(&self) -> Rows<'_> {
                match self {
                    $(SinkSettings::$kind(settings) => settings.rows(),)*
                }
            }

            /// See [`Settings::checkpoints_conflict`].
            pub fn checkpoints_conflict(
                &self,
                checkpoints: bool,
                kind: Range<usize>,
            ) -> Option<(Range<usize>, &'static str, String)> {
                match self {
                    $(SinkSettings::$kind(settings) => {
                        settings.checkpoints_conflict(checkpoints, kind)
                    })*
                }
            }

            /// See [`Settings::check`].
            pub fn check(
                &self,
                check: &mut impl Check,
                kind: Range<usize>,
                field: &str,
            ) -> Option<SinkKind> {
                match self {
                    $(SinkSettings::$kind(settings) => settings.check(check, kind, field),)*
                }
            }
        }
    };
}

sink_settings! {
    /// `kind = "kafka"`.
    Kafka(super::kafka::KafkaSettings),
    /// `kind = "file"`.
    File(super::file::FileSettings),
    /// `kind = "stdout"`.
    Stdout(super::file::StdoutSettings),
    /// `kind = "notify"`: the notification adapter.
    Notify(Box<super::notify::settings::NotifySettings>),
    /// `kind = "discard"`.
    Discard(super::discard::DiscardSink),
}

sink_kinds! {
    /// A Kafka topic.
    Kafka(super::kafka::KafkaSinkConfig),
    /// A file or standard output.
    File(super::file::FileTarget),
    /// A CPaaS, through the notification adapter.
    Notify(super::notify::config::NotifyConfig),
    /// Nowhere: rows are dropped (for benchmarks and dry runs).
    Discard(super::discard::DiscardSink),
}
