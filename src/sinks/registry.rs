//! The kinds of sink: the [`Sink`] trait each kind implements in its own module, and
//! [`SinkKind`], the one list of them (one line per kind, at the end of this file). The
//! dataflows write rows, dead letters and notification outcomes to any sink through
//! [`SinkKind::write`], so they name no kind.

use anyhow::Context as _;
use timely::ExchangeData;
use timely::dataflow::StreamVec;

use super::Encode;
use super::file::Order;
use super::format::RowEncoder;

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
    fn rows(&self, encoder: RowEncoder, _columns: &[String]) -> anyhow::Result<RowEncoder> {
        Ok(encoder)
    }

    /// Writes every item of `stream` as `encoder` encodes it, and, where the kind keeps an
    /// order (a file), sorted by `order` once the input ends.
    fn write<'scope, D: ExchangeData, E: Encode<D>>(
        &self,
        stream: StreamVec<'scope, u64, D>,
        encoder: E,
        order: Option<Order<D>>,
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

            /// See [`Sink::rows`]; errors name the sink, `name`.
            pub fn rows(
                &self,
                name: &str,
                encoder: RowEncoder,
                columns: &[String],
            ) -> anyhow::Result<RowEncoder> {
                match self {
                    $(SinkKind::$kind(sink) => sink.rows(encoder, columns),)*
                }
                .with_context(|| format!("sink `{name}`"))
            }

            /// See [`Sink::write`]; errors name the sink, `name`.
            pub fn write<'scope, D: ExchangeData, E: Encode<D>>(
                &self,
                name: &str,
                stream: StreamVec<'scope, u64, D>,
                encoder: E,
                order: Option<Order<D>>,
            ) -> anyhow::Result<StreamVec<'scope, u64, ()>> {
                match self {
                    $(SinkKind::$kind(sink) => sink.write(stream, encoder, order),)*
                }
                .with_context(|| format!("sink `{name}`"))
            }
        }
    };
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
