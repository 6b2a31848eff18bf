//! Notify sinks in the job file: the adapter's settings, and what feeds it and where its
//! outcomes go.

use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::outputs::Names;
use super::values::Limit;
use super::{Checker, SinkSpec, SourceSpec, raw};
use crate::record::FieldType;
use crate::sinks::SinkKind;
use crate::sinks::notify::config::{ApiKey, ChannelLimits, NotifyConfig, RetryPolicy};
use crate::sinks::notify::request::{Channel, REQUIRED_FIELDS, RequestFields};

/// The most times a request is tried.
const ATTEMPTS: Limit = Limit {
    max: 1000,
    why: "the number of times a request is tried",
};

/// The most requests queued for the adapter: each is held in memory.
const QUEUE: Limit = Limit {
    max: 1 << 20,
    why: "each queued request is held in memory",
};

/// The most messages per second on one channel.
const RATE: Limit = Limit {
    max: 1_000_000,
    why: "messages per second on one channel",
};

/// The most HTTP calls in flight on one channel: each holds a connection.
const CONCURRENCY: Limit = Limit {
    max: 1024,
    why: "each call in flight holds a connection",
};

/// The most messages in one call.
const BATCH: Limit = Limit {
    max: 10_000,
    why: "messages in one call to the CPaaS",
};

/// A notify sink, the source of its requests and the sink of its outcomes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotifySpec {
    /// The notify sink's index.
    pub sink: usize,
    /// The source index of the notification requests.
    pub source: usize,
    /// The sink index of the outcome events.
    pub outcomes: usize,
}

impl Checker<'_> {
    /// The settings of a `kind = "notify"` sink, whose `kind` stands at `kind`.
    pub(super) fn notify_config(
        &mut self,
        s: &raw::NotifySink,
        kind: std::ops::Range<usize>,
        field: &str,
    ) -> NotifyConfig {
        let required = |this: &mut Self, value: &'_ Option<raw::Text>, name: &str, what: &str| {
            if value.is_none() {
                this.error(
                    kind.clone(),
                    format!("{field}.{name}"),
                    format!("a notify sink needs `{name}`: {what}"),
                );
            }
            value
                .as_ref()
                .map_or_else(String::new, |v| v.get_ref().clone())
        };
        let base_url = required(self, &s.base_url, "base_url", "the CPaaS base URL");
        if let Some(span) = s.base_url.as_ref().map(Spanned::span)
            && !base_url.is_empty()
        {
            match reqwest::Url::parse(&base_url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                Ok(url) => self.error(
                    span,
                    format!("{field}.base_url"),
                    format!("`{}` is not an http or https URL", url.scheme()),
                ),
                Err(e) => self.error(span, format!("{field}.base_url"), format!("not a URL: {e}")),
            }
        }
        let api_key = required(
            self,
            &s.api_key,
            "api_key",
            "the CPaaS API key, e.g. \"${EDDY_CPAAS_KEY}\"",
        );
        if let Some(span) = s.api_key.as_ref().map(Spanned::span) {
            let problem = if api_key.trim().is_empty() {
                Some("the API key is empty")
            } else if reqwest::header::HeaderValue::from_str(&api_key).is_err() {
                Some("the API key holds a character an HTTP header cannot carry, such as a newline")
            } else {
                None
            };
            if let Some(problem) = problem {
                self.error(span, format!("{field}.api_key"), problem);
            }
        }
        let sent_record_what = "a file recording what was sent, so that nothing is sent twice";
        required(self, &s.sent_record, "sent_record", sent_record_what);
        let sent_record = s.sent_record.as_ref().map_or_else(PathBuf::new, |p| {
            self.path(p, format!("{field}.sent_record"))
        });
        let sender = match &s.sender {
            Some(v) => v.get_ref().clone(),
            None => "Eddy".into(),
        };
        let retry = RetryPolicy::default();
        let timeout = self.duration(
            &s.timeout,
            format!("{field}.timeout"),
            Duration::from_secs(10),
        );
        if timeout.is_zero() {
            let span = s.timeout.as_ref().map_or(0..0, Spanned::span);
            self.error(span, format!("{field}.timeout"), "must be longer than 0");
        }
        let mut config = NotifyConfig::new(&base_url, ApiKey::new(api_key), &sender, sent_record);
        config.timeout = timeout;
        config.retry = RetryPolicy {
            max_attempts: self.count(
                &s.max_attempts,
                format!("{field}.max_attempts"),
                retry.max_attempts,
                ATTEMPTS,
            ),
            min_delay: self.duration(
                &s.min_backoff,
                format!("{field}.min_backoff"),
                retry.min_delay,
            ),
            max_delay: self.duration(
                &s.max_backoff,
                format!("{field}.max_backoff"),
                retry.max_delay,
            ),
        };
        config.queue = self.count(&s.queue, format!("{field}.queue"), config.queue, QUEUE);
        config.sms = self.channel_limits(&s.sms, Channel::Sms, field);
        config.email = self.channel_limits(&s.email, Channel::Email, field);
        config
    }

    fn channel_limits(
        &mut self,
        section: &Option<Spanned<raw::ChannelSection>>,
        channel: Channel,
        field: &str,
    ) -> ChannelLimits {
        let defaults = ChannelLimits::default_for(channel);
        let Some(section) = section else {
            return defaults;
        };
        let field = format!("{field}.{channel}");
        let c = section.get_ref();
        if channel == Channel::Email
            && let Some(batch) = &c.batch
        {
            self.error(
                batch.span(),
                format!("{field}.batch"),
                "the e-mail API takes one message per call: remove `batch`",
            );
        }
        ChannelLimits {
            rate: self.count(&c.rate, format!("{field}.rate"), defaults.rate, RATE),
            concurrency: self.count(
                &c.concurrency,
                format!("{field}.concurrency"),
                defaults.concurrency,
                CONCURRENCY,
            ),
            batch: self.count(&c.batch, format!("{field}.batch"), defaults.batch, BATCH),
        }
    }

    /// Wires each notify sink to the source of its requests and the sink of its outcomes.
    pub(super) fn notifications(
        &mut self,
        file: &raw::JobFile,
        names: &Names,
        sinks: &[SinkSpec],
        sources: &[SourceSpec],
    ) -> Vec<NotifySpec> {
        let mut notifications = Vec::new();
        for (sink, spec) in sinks.iter().enumerate() {
            let i = names.section_of_sink(sink);
            let section = file.sinks[i].get_ref();
            let (SinkKind::Notify(_), raw::SinkKind::Notify(raw)) =
                (&spec.kind, section.kind.get_ref())
            else {
                continue;
            };
            let kind = section.kind.span();
            let field = format!("sinks[{i}]");
            let source = match &raw.source {
                None => {
                    self.error(
                        kind.clone(),
                        format!("{field}.source"),
                        "a notify sink needs the `source` of its notification requests",
                    );
                    None
                }
                Some(name) => {
                    let found = self.source_index(names, name, format!("{field}.source"));
                    if let Some(found) = found {
                        self.request_schema(&sources[found], name, &field);
                    }
                    found
                }
            };
            let outcomes = match &raw.outcomes {
                None => {
                    self.error(
                        kind,
                        format!("{field}.outcomes"),
                        "a notify sink needs an `outcomes` sink for NotificationSent and \
                         NotificationFailed events",
                    );
                    None
                }
                Some(name) => {
                    let found = self.sink_index(names, name, format!("{field}.outcomes"));
                    match found.map(|o| &sinks[o]) {
                        None => {}
                        Some(out) if matches!(out.kind, SinkKind::Notify(_)) => self.error(
                            name.span(),
                            format!("{field}.outcomes"),
                            format!("`{}` is a notify sink: name a kafka or file sink", out.name),
                        ),
                        Some(out) if out.columns.is_some() || out.key.is_some() => self.error(
                            name.span(),
                            format!("{field}.outcomes"),
                            format!(
                                "outcome events are JSON keyed by request id: sink `{}` must \
                                 not set `columns` or `key`",
                                out.name
                            ),
                        ),
                        Some(_) => {}
                    }
                    found
                }
            };
            if let (Some(source), Some(outcomes)) = (source, outcomes) {
                notifications.push(NotifySpec {
                    sink,
                    source,
                    outcomes,
                });
            }
        }
        notifications
    }

    /// The source of notification requests must have their fields, as strings.
    fn request_schema(&mut self, source: &SourceSpec, name: &raw::Text, field: &str) {
        if let Err(message) = RequestFields::new(&source.schema) {
            self.error(name.span(), format!("{field}.source"), message);
            return;
        }
        for f in source.schema.fields() {
            let wanted = REQUIRED_FIELDS.contains(&f.name.as_str()) || f.name == "subject";
            if wanted && f.ty != FieldType::String {
                self.error(
                    name.span(),
                    format!("{field}.source"),
                    format!(
                        "field `{}` of source `{}` must be a string",
                        f.name, source.name
                    ),
                );
            }
        }
    }
}
