//! `kind = "notify"`: a notify sink's settings as the job file writes them, and their checks
//! (what feeds the sink and where its outcomes go are checked with the job's other sections).

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::config::{ApiKey, ChannelLimits, NotifyConfig, RetryPolicy};
use super::request::Channel;
use crate::settings::{Check, Limit, Text};
use crate::sinks::registry::{Settings, SinkKind};

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

/// `kind = "notify"`: the notification adapter's settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySettings {
    /// `source`: the source of the notification requests.
    pub source: Option<Text>,
    /// `base_url`: the CPaaS base URL.
    pub base_url: Option<Text>,
    /// `api_key`: the CPaaS API key.
    pub api_key: Option<Text>,
    /// `sender`: who the messages are from.
    pub sender: Option<Text>,
    /// `outcomes`: the sink of the outcome events.
    pub outcomes: Option<Text>,
    /// `sent_record`: the file recording what was sent.
    pub sent_record: Option<Text>,
    /// `timeout`: how long one call may take.
    pub timeout: Option<Text>,
    /// `max_attempts`: how many times a request is tried.
    pub max_attempts: Option<Spanned<i64>>,
    /// `min_backoff`: the first wait before a retry.
    pub min_backoff: Option<Text>,
    /// `max_backoff`: the longest wait before a retry.
    pub max_backoff: Option<Text>,
    /// `queue`: how many requests wait for the adapter.
    pub queue: Option<Spanned<i64>>,
    /// `sms`: the SMS channel's limits.
    pub sms: Option<Spanned<ChannelSettings>>,
    /// `email`: the e-mail channel's limits.
    pub email: Option<Spanned<ChannelSettings>>,
}

/// A notify sink's `sms` or `email` limits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSettings {
    /// `rate`: messages per second.
    pub rate: Option<Spanned<i64>>,
    /// `concurrency`: calls in flight.
    pub concurrency: Option<Spanned<i64>>,
    /// `batch`: messages in one call.
    pub batch: Option<Spanned<i64>>,
}

impl Settings for NotifySettings {
    fn checkpoints_conflict(
        &self,
        checkpoints: bool,
        kind: Range<usize>,
    ) -> Option<(Range<usize>, &'static str, String)> {
        checkpoints.then(|| {
            (
                kind,
                "kind",
                "a notify sink's undecided requests are not restored from checkpoints yet; \
                 remove [checkpoints] to run it"
                    .to_string(),
            )
        })
    }

    fn check<C: Check>(&self, check: &mut C, kind: Range<usize>, field: &str) -> Option<SinkKind> {
        let required = |check: &mut C, value: &'_ Option<Text>, name: &str, what: &str| {
            if value.is_none() {
                check.error(
                    kind.clone(),
                    format!("{field}.{name}"),
                    format!("a notify sink needs `{name}`: {what}"),
                );
            }
            value
                .as_ref()
                .map_or_else(String::new, |v| v.get_ref().clone())
        };
        let base_url = required(check, &self.base_url, "base_url", "the CPaaS base URL");
        if let Some(span) = self.base_url.as_ref().map(Spanned::span)
            && !base_url.is_empty()
        {
            match reqwest::Url::parse(&base_url) {
                Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                Ok(url) => check.error(
                    span,
                    format!("{field}.base_url"),
                    format!("`{}` is not an http or https URL", url.scheme()),
                ),
                Err(e) => check.error(span, format!("{field}.base_url"), format!("not a URL: {e}")),
            }
        }
        let api_key = required(
            check,
            &self.api_key,
            "api_key",
            "the CPaaS API key, e.g. \"${EDDY_CPAAS_KEY}\"",
        );
        if let Some(span) = self.api_key.as_ref().map(Spanned::span) {
            let problem = if api_key.trim().is_empty() {
                Some("the API key is empty")
            } else if reqwest::header::HeaderValue::from_str(&api_key).is_err() {
                Some("the API key holds a character an HTTP header cannot carry, such as a newline")
            } else {
                None
            };
            if let Some(problem) = problem {
                check.error(span, format!("{field}.api_key"), problem.into());
            }
        }
        let sent_record_what = "a file recording what was sent, so that nothing is sent twice";
        required(check, &self.sent_record, "sent_record", sent_record_what);
        let sent_record = self.sent_record.as_ref().map_or_else(PathBuf::new, |p| {
            check.path(p, format!("{field}.sent_record"))
        });
        let sender = match &self.sender {
            Some(v) => v.get_ref().clone(),
            None => "Eddy".into(),
        };
        let retry = RetryPolicy::default();
        let timeout = check.duration(
            &self.timeout,
            format!("{field}.timeout"),
            Duration::from_secs(10),
        );
        if timeout.is_zero() {
            let span = self.timeout.as_ref().map_or(0..0, Spanned::span);
            check.error(
                span,
                format!("{field}.timeout"),
                "must be longer than 0".into(),
            );
        }
        let mut config = NotifyConfig::new(&base_url, ApiKey::new(api_key), &sender, sent_record);
        config.timeout = timeout;
        config.retry = RetryPolicy {
            max_attempts: check.count(
                &self.max_attempts,
                format!("{field}.max_attempts"),
                retry.max_attempts,
                ATTEMPTS,
            ),
            min_delay: check.duration(
                &self.min_backoff,
                format!("{field}.min_backoff"),
                retry.min_delay,
            ),
            max_delay: check.duration(
                &self.max_backoff,
                format!("{field}.max_backoff"),
                retry.max_delay,
            ),
        };
        config.queue = check.count(&self.queue, format!("{field}.queue"), config.queue, QUEUE);
        config.sms = channel_limits(check, &self.sms, Channel::Sms, field);
        config.email = channel_limits(check, &self.email, Channel::Email, field);
        Some(SinkKind::Notify(config))
    }
}

/// The limits of `channel` that `section` sets, the defaults where it does not.
fn channel_limits(
    check: &mut impl Check,
    section: &Option<Spanned<ChannelSettings>>,
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
        check.error(
            batch.span(),
            format!("{field}.batch"),
            "the e-mail API takes one message per call: remove `batch`".into(),
        );
    }
    ChannelLimits {
        rate: check.count(&c.rate, format!("{field}.rate"), defaults.rate, RATE),
        concurrency: check.count(
            &c.concurrency,
            format!("{field}.concurrency"),
            defaults.concurrency,
            CONCURRENCY,
        ),
        batch: check.count(&c.batch, format!("{field}.batch"), defaults.batch, BATCH),
    }
}
