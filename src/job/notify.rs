//! Notify sinks in the job file: the adapter's settings, and what feeds it and where its
//! outcomes go.

use std::time::Duration;

use toml::Spanned;

use super::{Checker, NotifySpec, SinkKind, SinkSpec, SourceSpec, raw};
use crate::record::FieldType;
use crate::sinks::notify::config::{ApiKey, ChannelLimits, NotifyConfig, RetryPolicy};
use crate::sinks::notify::request::{Channel, REQUIRED_FIELDS, RequestFields};

impl Checker<'_> {
    /// The settings of a `kind = "notify"` sink.
    pub(super) fn notify_config(&mut self, s: &raw::SinkSection, field: &str) -> NotifyConfig {
        let required =
            |this: &mut Self, value: &Option<raw::Text>, name: &str, what: &str| match value {
                Some(v) => this.expand(v, format!("{field}.{name}")),
                None => {
                    this.error(
                        s.kind.span(),
                        format!("{field}.{name}"),
                        format!("a notify sink needs `{name}`: {what}"),
                    );
                    String::new()
                }
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
        let sent_record = required(
            self,
            &s.sent_record,
            "sent_record",
            "a file recording what was sent, so that nothing is sent twice",
        );
        let sender = match &s.sender {
            Some(v) => self.expand(v, format!("{field}.sender")),
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
        let mut config = NotifyConfig::new(
            &base_url,
            ApiKey::new(api_key),
            &sender,
            self.relative(&sent_record),
        );
        config.timeout = timeout;
        config.retry = RetryPolicy {
            max_attempts: self.positive(
                &s.max_attempts,
                format!("{field}.max_attempts"),
                retry.max_attempts.into(),
            ) as u32,
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
        config.queue =
            self.positive(&s.queue, format!("{field}.queue"), config.queue as u64) as usize;
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
        let positive = |this: &mut Self, value: &Option<Spanned<i64>>, name: &str, default| {
            this.positive(value, format!("{field}.{name}"), default)
        };
        ChannelLimits {
            rate: positive(self, &c.rate, "rate", defaults.rate.into()).min(u32::MAX.into()) as u32,
            concurrency: positive(
                self,
                &c.concurrency,
                "concurrency",
                defaults.concurrency as u64,
            ) as usize,
            batch: positive(self, &c.batch, "batch", defaults.batch as u64).min(10_000) as usize,
        }
    }

    /// Wires each notify sink to the source of its requests and the sink of its outcomes.
    pub(super) fn notifications(
        &mut self,
        file: &raw::JobFile,
        sinks: &[SinkSpec],
        sources: &[SourceSpec],
    ) -> Vec<NotifySpec> {
        let mut notifications = Vec::new();
        for (sink, spec) in sinks.iter().enumerate() {
            if !matches!(spec.kind, SinkKind::Notify(_)) {
                continue;
            }
            let Some((i, raw)) = file
                .sinks
                .iter()
                .enumerate()
                .find(|(_, s)| *s.get_ref().name.get_ref() == spec.name)
            else {
                continue;
            };
            let raw = raw.get_ref();
            let field = format!("sinks[{i}]");
            if let SinkKind::Notify(config) = &spec.kind
                && let Some(other) = sinks[..sink].iter().find(|other| {
                    matches!(&other.kind, SinkKind::Notify(c) if c.sent_record == config.sent_record)
                })
            {
                let span = raw.sent_record.as_ref().map_or(0..0, Spanned::span);
                self.error(
                    span,
                    format!("{field}.sent_record"),
                    format!(
                        "notify sink `{}` records its sends in the same file: give each its own",
                        other.name
                    ),
                );
            }
            let source = match &raw.source {
                None => {
                    self.error(
                        raw.kind.span(),
                        format!("{field}.source"),
                        "a notify sink needs the `source` of its notification requests",
                    );
                    None
                }
                Some(name) => {
                    let found = sources.iter().position(|s| s.name == *name.get_ref());
                    match found {
                        None => self.error(
                            name.span(),
                            format!("{field}.source"),
                            format!("no source named `{}`", name.get_ref()),
                        ),
                        Some(found) => self.request_schema(&sources[found], name, &field),
                    }
                    found
                }
            };
            let outcomes = match &raw.outcomes {
                None => {
                    self.error(
                        raw.kind.span(),
                        format!("{field}.outcomes"),
                        "a notify sink needs an `outcomes` sink for NotificationSent and \
                         NotificationFailed events",
                    );
                    None
                }
                Some(name) => {
                    let found = sinks.iter().position(|s| s.name == *name.get_ref());
                    match found.map(|o| &sinks[o]) {
                        None => self.error(
                            name.span(),
                            format!("{field}.outcomes"),
                            format!("no sink named `{}`", name.get_ref()),
                        ),
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
