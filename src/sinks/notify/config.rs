//! The adapter's settings, as the job file gives them.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::request::Channel;

/// The CPaaS API key. Its `Debug` shows no part of it, so it cannot reach a log by accident;
/// only the HTTP client reads it, through [`ApiKey::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: String) -> ApiKey {
        ApiKey(key)
    }

    /// The key itself, for the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the key, as it is and as a JSON string spells it,
    /// replaced by `<redacted>` (overlapping occurrences as one). Whatever the CPaaS answers
    /// passes through this before the adapter reports, records or logs it, since a CPaaS may
    /// quote the request's `Authorization` header back. An empty key hides nothing; where the
    /// marker and its neighbours would spell the key again, the marker alone is returned.
    pub fn redact(&self, text: &str) -> String {
        const MARKER: &str = "<redacted>";
        if self.0.is_empty() {
            return text.to_string();
        }
        let escaped = serde_json::to_string(&self.0).expect("a string encodes");
        let escaped = &escaped[1..escaped.len() - 1];
        let mut redacted = replace_occurrences(text, &self.0, MARKER);
        if escaped != self.0 {
            redacted = replace_occurrences(&redacted, escaped, MARKER);
        }
        if redacted.contains(self.0.as_str()) || redacted.contains(escaped) {
            return MARKER.to_string();
        }
        redacted
    }
}

/// `text` with each run of overlapping occurrences of `secret` (not empty) replaced by `marker`.
fn replace_occurrences(text: &str, secret: &str, marker: &str) -> String {
    let finder = memchr::memmem::Finder::new(secret.as_bytes());
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    // The end of the text copied so far, and of the run of occurrences being replaced.
    let (mut copied, mut run_end) = (0, None::<usize>);
    let mut from = 0;
    while let Some(at) = finder.find(&bytes[from..]) {
        let (start, end) = (from + at, from + at + secret.len());
        match run_end {
            Some(run) if start <= run => run_end = Some(end),
            _ => {
                if let Some(run) = run_end {
                    copied = run;
                }
                // A match of a whole UTF-8 string starts and ends on character boundaries.
                out.push_str(&text[copied..start]);
                out.push_str(marker);
                run_end = Some(end);
            }
        }
        from = start + 1;
    }
    out.push_str(&text[run_end.unwrap_or(copied)..]);
    out
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// The most requests a channel's queue may hold.
pub const MAX_QUEUE: usize = 1 << 20;
/// The most HTTP calls a channel may have in flight.
pub const MAX_CONCURRENCY: usize = 10_000;
/// The most messages one call may carry.
pub const MAX_BATCH: usize = 10_000;

/// Limits of one channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelLimits {
    /// Messages per second at most.
    pub rate: u32,
    /// HTTP calls in flight at most.
    pub concurrency: usize,
    /// Messages per call at most (1 for e-mail, whose API takes one content per call).
    pub batch: usize,
}

impl ChannelLimits {
    /// The defaults of `channel`.
    pub fn default_for(channel: Channel) -> ChannelLimits {
        match channel {
            Channel::Sms => ChannelLimits {
                rate: 50_000,
                concurrency: 64,
                batch: 100,
            },
            Channel::Email => ChannelLimits {
                rate: 1_000,
                concurrency: 16,
                batch: 1,
            },
        }
    }
}

/// When and how often a failed call is tried again: exponential backoff with jitter, between
/// `min_delay` and `max_delay` (a `Retry-After` from the CPaaS overrides the delay).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Calls per message at most, the first included.
    pub max_attempts: u32,
    /// The first delay.
    pub min_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(10),
        }
    }
}

/// Everything the adapter needs to deliver.
#[derive(Clone, Debug, PartialEq)]
pub struct NotifyConfig {
    /// The CPaaS base URL, e.g. `https://xyz.api.infobip.com` (no trailing slash).
    pub base_url: String,
    /// Sent as `Authorization: App {key}`.
    pub api_key: ApiKey,
    /// The sender: `from` of SMS and e-mails.
    pub sender: String,
    /// The sent-record: a file of every request id decided, so that nothing is sent twice.
    pub sent_record: PathBuf,
    /// How long one HTTP call may take before it counts as a timeout.
    pub timeout: Duration,
    /// Retries.
    pub retry: RetryPolicy,
    /// Requests waiting for a call, per channel, before the dataflow is slowed down.
    pub queue: usize,
    /// SMS limits.
    pub sms: ChannelLimits,
    /// E-mail limits.
    pub email: ChannelLimits,
}

impl NotifyConfig {
    /// The limits of `channel`.
    pub fn limits(&self, channel: Channel) -> ChannelLimits {
        match channel {
            Channel::Sms => self.sms,
            Channel::Email => self.email,
        }
    }

    /// Whether the adapter can run with these limits: each at least 1, and the queue, calls in
    /// flight and batch at most [`MAX_QUEUE`], [`MAX_CONCURRENCY`] and [`MAX_BATCH`]; else what
    /// is out of bounds, by its job-file name (`queue`, `sms.concurrency`, …). A job file's
    /// check bounds them first; this keeps a configuration built otherwise from failing the
    /// adapter's runtime later.
    pub fn check_limits(&self) -> Result<(), String> {
        let within = |name: String, value: usize, max: usize, what: &str| {
            if (1..=max).contains(&value) {
                Ok(())
            } else {
                Err(format!(
                    "`{name}` is {value}: it must be from 1 to {max} ({what})"
                ))
            }
        };
        within(
            "queue".into(),
            self.queue,
            MAX_QUEUE,
            "requests waiting per channel",
        )?;
        for channel in Channel::ALL {
            let limits = self.limits(channel);
            within(
                format!("{channel}.concurrency"),
                limits.concurrency,
                MAX_CONCURRENCY,
                "HTTP calls in flight",
            )?;
            within(
                format!("{channel}.batch"),
                limits.batch,
                MAX_BATCH,
                "messages per call",
            )?;
            if limits.rate == 0 {
                return Err(format!(
                    "`{channel}.rate` is 0: it must be at least 1 message per second"
                ));
            }
        }
        Ok(())
    }

    /// A configuration with the default limits, retries and queue.
    pub fn new(base_url: &str, api_key: ApiKey, sender: &str, sent_record: PathBuf) -> Self {
        NotifyConfig {
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key,
            sender: sender.into(),
            sent_record,
            timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            queue: 1024,
            sms: ChannelLimits::default_for(Channel::Sms),
            email: ChannelLimits::default_for(Channel::Email),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_key_never_shows_in_debug_output() {
        let config = NotifyConfig::new(
            "http://127.0.0.1:1/",
            ApiKey::new("s3cr3t-key".into()),
            "Eddy",
            "sent.redb".into(),
        );
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("ApiKey(<redacted>)"));
        assert_eq!(config.base_url, "http://127.0.0.1:1");
    }

    #[test]
    fn limits_out_of_bounds_are_named() {
        let config = NotifyConfig::new(
            "http://127.0.0.1:1",
            ApiKey::new("k".into()),
            "Eddy",
            "sent.redb".into(),
        );
        assert_eq!(config.check_limits(), Ok(()));
        let huge = NotifyConfig {
            queue: i64::MAX as usize,
            ..config.clone()
        };
        assert_eq!(
            huge.check_limits(),
            Err(format!(
                "`queue` is {}: it must be from 1 to {MAX_QUEUE} (requests waiting per channel)",
                i64::MAX
            ))
        );
        let mut busy = config.clone();
        busy.email.concurrency = MAX_CONCURRENCY + 1;
        assert!(
            busy.check_limits()
                .unwrap_err()
                .starts_with("`email.concurrency` is 10001")
        );
        let mut still = config;
        still.sms.rate = 0;
        assert!(
            still
                .check_limits()
                .unwrap_err()
                .starts_with("`sms.rate` is 0")
        );
    }

    #[test]
    fn the_key_is_redacted_wherever_it_occurs() {
        let key = ApiKey::new("k3y".into());
        assert_eq!(
            key.redact("Authorization: App k3y, again k3y."),
            "Authorization: App <redacted>, again <redacted>."
        );
        assert_eq!(key.redact("nothing here"), "nothing here");
        assert_eq!(key.redact("k3yk3y"), "<redacted>");
        // Overlapping occurrences leave no part of the key behind.
        assert_eq!(ApiKey::new("aa".into()).redact("xaaay"), "x<redacted>y");
        // As a JSON string spells it.
        let quoted = ApiKey::new(r#"a"b\c"#.into());
        assert_eq!(
            quoted.redact(r#"{"auth":"App a\"b\\c"}"#),
            r#"{"auth":"App <redacted>"}"#
        );
        // Multi-byte text around it.
        assert_eq!(key.redact("é k3y ü"), "é <redacted> ü");
        // A key within the marker cannot be replaced away: the marker alone is left.
        assert_eq!(ApiKey::new("red".into()).redact("a red car"), "<redacted>");
        assert_eq!(ApiKey::new(String::new()).redact("text"), "text");
    }
}
