//! Validation of `[[sources]]`: the schema, event time and watermark settings every source has,
//! and the settings of its kind.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use toml::Spanned;

use super::values::Limit;
use super::{Checker, raw};
use crate::record::{Field, FieldType, Schema};
use crate::sources::generator::{self, GeneratorConfig};
use crate::sources::incidents::FraudMix;

/// A source of events.
#[derive(Clone, Debug)]
pub struct SourceSpec {
    /// Its name, for metrics to refer to.
    pub name: String,
    /// Where events come from.
    pub kind: SourceKind,
    /// The fields read from each event and its event-time field.
    pub schema: Arc<Schema>,
    /// D, the allowed out-of-orderness of event time.
    pub out_of_orderness: Duration,
    /// When a silent partition stops holding the watermark back.
    pub idle_timeout: Option<Duration>,
    /// How far, in event time, a worker's share of the source may run ahead of the slowest
    /// worker's before it waits; `None`: no bound.
    pub max_drift: Option<Duration>,
    /// A longer record (a Kafka message, a line of a file) is not decoded but dead-lettered,
    /// and a file source reads past the rest of such a line without holding it.
    pub max_record_bytes: usize,
}

impl SourceSpec {
    /// `max_record_bytes` when the job does not set it: 1 MiB, as Kafka's default message size.
    pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;
    /// The largest `max_record_bytes` a job may set: 1 GiB.
    pub const MAX_RECORD_BYTES_LIMIT: usize = 1 << 30;
}

/// The kinds of source.
#[derive(Clone, Debug)]
pub enum SourceKind {
    /// Kafka topics; `properties` holds every librdkafka setting, brokers and group included.
    Kafka {
        /// librdkafka properties.
        properties: Vec<(String, String)>,
        /// The topics.
        topics: Vec<String>,
    },
    /// JSON-lines files, each cut into `splits` partitions of interleaved stripes.
    File {
        /// The files.
        paths: Vec<PathBuf>,
        /// Partitions per file.
        splits: usize,
    },
    /// The built-in transaction generator, as `partitions` independent streams.
    Generator {
        /// What it generates.
        config: GeneratorConfig,
        /// Partitions, dealt to the workers.
        partitions: u64,
    },
}

/// The most splits of one file: each is a partition with its own watermark and an open file.
const SPLITS: Limit = Limit {
    max: 1024,
    why: "each split is a partition with its own open file",
};

/// The most splits of a file source, over all its paths.
const MAX_OPEN_SPLITS: usize = 1024;

/// The most transactions a generator makes (and every how many it places an incident): event
/// times and sequence numbers stay far inside their 64 bits.
const GENERATED: Limit = Limit {
    max: 1_000_000_000_000,
    why: "a generator makes at most a trillion transactions",
};

/// The most transactions per second of event time a generator makes.
const GENERATOR_RATE: Limit = Limit {
    max: 1_000_000_000,
    why: "a generator makes at most a billion transactions per second",
};

/// The most distinct accounts or merchants a generator draws from.
const IDS: Limit = Limit {
    max: 1_000_000_000,
    why: "a generator draws from at most a billion accounts or merchants",
};

/// The most partitions of a generator.
const GENERATOR_PARTITIONS: Limit = Limit {
    max: 1024,
    why: "each partition is a stream with its own watermark",
};

impl Checker<'_> {
    /// The sources that validate (those whose schema or kind is unusable are left out, and
    /// references to them reported as unknown).
    pub(super) fn sources(&mut self, sections: &[Spanned<raw::SourceSection>]) -> Vec<SourceSpec> {
        sections
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.source(s.get_ref(), &format!("sources[{i}]")))
            .collect()
    }

    fn source(&mut self, s: &raw::SourceSection, field: &str) -> Option<SourceSpec> {
        if let Some(format) = &s.format
            && format.get_ref() != "json"
        {
            self.error(
                format.span(),
                format!("{field}.format"),
                "only `json` is supported",
            );
        }
        let schema = self.schema(s, field)?;
        let out_of_orderness = self.duration(
            &s.out_of_orderness,
            format!("{field}.out_of_orderness"),
            Duration::ZERO,
        );
        let optional = |this: &mut Self, text: &Option<raw::Text>, name: &str| {
            text.as_ref()
                .map(|_| this.duration(text, format!("{field}.{name}"), Duration::ZERO))
        };
        let idle_timeout = optional(self, &s.idle_timeout, "idle_timeout");
        let max_drift = optional(self, &s.max_drift, "max_drift");
        let max_record_bytes = self.count(
            &s.max_record_bytes,
            format!("{field}.max_record_bytes"),
            SourceSpec::DEFAULT_MAX_RECORD_BYTES,
            Limit {
                max: SourceSpec::MAX_RECORD_BYTES_LIMIT as u64,
                why: "a record is held in memory whole (1 GiB at most)",
            },
        );
        let kind_span = s.kind.span();
        let kind = match s.kind.get_ref() {
            raw::SourceKind::Kafka(k) => self.kafka_source(k, kind_span, field),
            raw::SourceKind::File(f) => self.file_source(f, kind_span, field),
            raw::SourceKind::Generator(g) => {
                if let Some(n) = &s.max_record_bytes {
                    self.error(
                        n.span(),
                        format!("{field}.max_record_bytes"),
                        "the generator reads no records: only kafka and file sources take it",
                    );
                }
                self.generator(g, &s.schema, &schema, field)
            }
        };
        Some(SourceSpec {
            name: s.name.get_ref().clone(),
            kind,
            schema,
            out_of_orderness,
            idle_timeout,
            max_drift,
            max_record_bytes,
        })
    }

    /// The schema, with `?` for fields that may be absent; `None` when it is unusable.
    fn schema(&mut self, s: &raw::SourceSection, field: &str) -> Option<Arc<Schema>> {
        let mut fields = Vec::new();
        for (name, written_ty) in s.schema.get_ref() {
            let span = written_ty.span();
            // `type?`: the field may be absent or null.
            let (written, required) = match written_ty.get_ref().strip_suffix('?') {
                Some(base) => (base, false),
                None => (written_ty.get_ref().as_str(), true),
            };
            let ty = match written {
                "int" => FieldType::Int,
                "float" => FieldType::Float,
                "string" => FieldType::String,
                "bool" => FieldType::Bool,
                "timestamp" => FieldType::Timestamp,
                other => {
                    self.error(
                        span.clone(),
                        format!("{field}.schema.{name}"),
                        format!(
                            "unknown type `{other}`: expected int, float, string, bool or \
                             timestamp, with `?` if the field may be absent"
                        ),
                    );
                    continue;
                }
            };
            if !required && *name == *s.event_time.get_ref() {
                self.error(
                    span.clone(),
                    format!("{field}.schema.{name}"),
                    "the event-time field cannot be optional",
                );
            }
            fields.push(Field {
                name: name.as_str().into(),
                ty,
                required,
            });
        }
        match Schema::new(fields, s.event_time.get_ref()) {
            Ok(schema) => Some(Arc::new(schema)),
            Err(message) => {
                self.error(s.event_time.span(), format!("{field}.event_time"), message);
                None
            }
        }
    }

    fn kafka_source(
        &mut self,
        k: &raw::KafkaSource,
        kind: std::ops::Range<usize>,
        field: &str,
    ) -> SourceKind {
        let mut properties = self.kafka_properties(kind.clone(), &k.brokers, &k.properties, field);
        match &k.group {
            Some(g) => properties.push(("group.id".into(), g.get_ref().clone())),
            None => self.error(
                kind.clone(),
                format!("{field}.group"),
                "a kafka source needs a consumer `group`",
            ),
        }
        let topics = match &k.topics {
            Some(t) if !t.get_ref().is_empty() => {
                t.get_ref().iter().map(|t| t.get_ref().clone()).collect()
            }
            _ => {
                self.error(
                    kind,
                    format!("{field}.topics"),
                    "a kafka source needs at least one topic",
                );
                Vec::new()
            }
        };
        SourceKind::Kafka { properties, topics }
    }

    fn file_source(
        &mut self,
        f: &raw::FileSource,
        kind: std::ops::Range<usize>,
        field: &str,
    ) -> SourceKind {
        let paths = match &f.paths {
            Some(p) if !p.get_ref().is_empty() => {
                let field = format!("{field}.paths");
                p.get_ref()
                    .iter()
                    .map(|p| self.path(p, field.clone()))
                    .collect()
            }
            _ => {
                self.error(
                    kind,
                    format!("{field}.paths"),
                    "a file source needs at least one path",
                );
                Vec::new()
            }
        };
        let splits = self.count(&f.splits, format!("{field}.splits"), 1, SPLITS);
        if let Some(written) = &f.splits
            && paths.len() * splits > MAX_OPEN_SPLITS
        {
            self.error(
                written.span(),
                format!("{field}.splits"),
                format!(
                    "{} paths of {splits} splits each make {} splits: a file source reads at most \
                     {MAX_OPEN_SPLITS} in all, each an open file",
                    paths.len(),
                    paths.len() * splits
                ),
            );
        }
        SourceKind::File { paths, splits }
    }

    fn generator(
        &mut self,
        g: &raw::GeneratorSource,
        written: &Spanned<IndexMap<String, raw::Text>>,
        schema: &Schema,
        field: &str,
    ) -> SourceKind {
        for f in schema.fields() {
            if !generator::FIELDS.contains(&f.name.as_str()) {
                self.error(
                    written.span(),
                    format!("{field}.schema.{}", f.name),
                    format!(
                        "the generator has no field `{}`: it makes {}",
                        f.name,
                        generator::FIELDS.join(", ")
                    ),
                );
            }
        }
        let disorder_ms = self.millis_or_zero(&g.disorder, format!("{field}.disorder"));
        SourceKind::Generator {
            config: GeneratorConfig {
                seed: g.seed.as_ref().map_or(42, |v| *v.get_ref() as u64),
                count: g
                    .count
                    .as_ref()
                    .map(|_| self.count(&g.count, format!("{field}.count"), 1, GENERATED)),
                rate: self.count(&g.rate, format!("{field}.rate"), 10_000, GENERATOR_RATE),
                accounts: self.count(&g.accounts, format!("{field}.accounts"), 100_000, IDS),
                merchants: self.count(&g.merchants, format!("{field}.merchants"), 5_000, IDS),
                disorder_ms,
                start_ms: 1_700_000_000_000,
                paced: g.paced.unwrap_or(false),
                fraud: g.fraud.as_ref().map(|mix| {
                    let mix = mix.get_ref();
                    FraudMix {
                        every: self.count(
                            &Some(mix.every.clone()),
                            format!("{field}.fraud.every"),
                            1,
                            GENERATED,
                        ),
                        within_ms: self
                            .millis(&Some(mix.within.clone()), format!("{field}.fraud.within"))
                            .unwrap_or(1),
                    }
                }),
            },
            partitions: self.count(
                &g.partitions,
                format!("{field}.partitions"),
                1,
                GENERATOR_PARTITIONS,
            ),
        }
    }

    /// The librdkafka properties of a Kafka source or sink: `bootstrap.servers` from `brokers`,
    /// then its `properties` verbatim, with `${VAR}` expanded.
    pub(super) fn kafka_properties(
        &mut self,
        kind: std::ops::Range<usize>,
        brokers: &Option<raw::Text>,
        properties: &IndexMap<String, raw::Text>,
        field: &str,
    ) -> Vec<(String, String)> {
        let mut all = Vec::new();
        match brokers {
            Some(b) => {
                if let Err(message) = check_brokers(b.get_ref()) {
                    self.error(b.span(), format!("{field}.brokers"), message);
                }
                all.push(("bootstrap.servers".into(), b.get_ref().clone()));
            }
            None => self.error(
                kind,
                format!("{field}.brokers"),
                "a kafka source or sink needs `brokers`",
            ),
        }
        for (k, v) in properties {
            let value = v.get_ref().clone();
            all.push((k.clone(), value));
        }
        all
    }
}

/// A broker list is `host[:port]` entries separated by commas, each optionally prefixed by a
/// `protocol://` as librdkafka allows; a port is 1 to 65535.
fn check_brokers(list: &str) -> Result<(), String> {
    if list.trim().is_empty() {
        return Err("the broker list is empty: expected host:port, separated by commas".into());
    }
    for broker in list.split(',').map(str::trim) {
        if broker.is_empty() {
            return Err(format!("`{list}` has an empty entry"));
        }
        let address = broker.split_once("://").map_or(broker, |(_, rest)| rest);
        let (host, port) = match address.rsplit_once(':') {
            // An IPv6 address without a port: `[::1]`.
            Some((host, port)) if !port.ends_with(']') => (host, Some(port)),
            _ => (address, None),
        };
        if host.is_empty() {
            return Err(format!("`{broker}` names no host: expected host:port"));
        }
        if let Some(port) = port
            && !matches!(port.parse::<u16>(), Ok(1..))
        {
            return Err(format!(
                "`{port}` in `{broker}` is not a port: expected 1 to 65535"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_brokers;

    #[test]
    fn broker_lists_need_hosts_and_ports_in_range() {
        for good in [
            "127.0.0.1:9092",
            "a:1, b:65535",
            "kafka",
            "SSL://k:9093",
            "[::1]:9092",
        ] {
            assert_eq!(check_brokers(good), Ok(()), "{good}");
        }
        for (bad, says) in [
            ("", "empty"),
            (" ", "empty"),
            (
                "127.0.0.1:notaport",
                "`notaport` in `127.0.0.1:notaport` is not a port",
            ),
            ("k:0", "is not a port"),
            ("k:65536", "is not a port"),
            ("a:1,", "`a:1,` has an empty entry"),
            (":9092", "names no host"),
        ] {
            let message = check_brokers(bad).unwrap_err();
            assert!(message.contains(says), "{bad}: {message}");
        }
    }
}
