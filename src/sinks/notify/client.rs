//! One HTTP call to the CPaaS, in the shape of Infobip's public API, and what its answer means:
//! per-message results, or an error that is worth retrying (timeouts, connection errors, 429,
//! 5xx) or not (any other 4xx).
//!
//! - SMS: `POST {base}/sms/2/text/advanced`, JSON `{"messages":[{"destinations":[{"to":…,
//!   "messageId":…}],"from":…,"text":…}, …]}`, several messages per call.
//! - E-mail: `POST {base}/email/3/send`, `multipart/form-data` with `from`, `to`, `subject`,
//!   `text` and `messageId`, one message per call.
//!
//! Every message carries the request id as its `messageId`: the CPaaS's idempotency key, so a
//! retried call, whose first try may have been accepted after all, does not send twice.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use serde::{Deserialize, Serialize};

use super::config::{ApiKey, NotifyConfig};
use super::request::NotificationRequest;

/// The path of the SMS endpoint.
pub const SMS_PATH: &str = "/sms/2/text/advanced";
/// The path of the e-mail endpoint.
pub const EMAIL_PATH: &str = "/email/3/send";

/// Why a call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// Worth another try: a timeout, a connection error, 429 or 5xx; `retry_after` is the
    /// server's `Retry-After`, if it sent one.
    Transient {
        /// What happened.
        reason: String,
        /// How long the server asked us to wait.
        retry_after: Option<Duration>,
    },
    /// Another try would fail the same way (a 4xx other than 408 and 429).
    Permanent {
        /// What happened.
        reason: String,
    },
}

impl CallError {
    /// What happened.
    pub fn reason(&self) -> &str {
        match self {
            CallError::Transient { reason, .. } | CallError::Permanent { reason } => reason,
        }
    }

    /// Whether another try may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, CallError::Transient { .. })
    }

    /// The delay the server asked for.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::Transient { retry_after, .. } => *retry_after,
            CallError::Permanent { .. } => None,
        }
    }
}

/// What the CPaaS said about one message of a call that it answered with success.
pub type MessageResult = Result<Accepted, String>;

/// A message the CPaaS accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The CPaaS message id.
    pub message_id: String,
    /// Its status name, e.g. `PENDING_ACCEPTED`.
    pub status: String,
}

/// The SMS request body.
#[derive(Debug, Serialize, Deserialize)]
pub struct SmsBody {
    /// The messages.
    pub messages: Vec<SmsMessage>,
}

/// One SMS message of a call.
#[derive(Debug, Serialize, Deserialize)]
pub struct SmsMessage {
    /// Its recipients (the adapter sends one per message).
    pub destinations: Vec<Destination>,
    /// The sender.
    pub from: String,
    /// The text.
    pub text: String,
}

/// A recipient, with the message id the client chose.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// The phone number.
    pub to: String,
    /// The idempotency key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

/// The answer to a successful call (both endpoints).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendResponse {
    /// An id of the whole call.
    #[serde(default)]
    pub bulk_id: Option<String>,
    /// One entry per message.
    pub messages: Vec<ResponseMessage>,
}

/// The answer about one message.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseMessage {
    /// The recipient.
    pub to: String,
    /// The message id.
    pub message_id: String,
    /// Its status.
    pub status: Status,
}

/// A message status, as Infobip reports it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Status group id (5: rejected).
    pub group_id: u32,
    /// Status group name, e.g. `PENDING` or `REJECTED`.
    pub group_name: String,
    /// Status id.
    pub id: u32,
    /// Status name, e.g. `PENDING_ACCEPTED`.
    pub name: String,
    /// A sentence about it.
    pub description: String,
}

/// The status group of rejected messages.
pub const REJECTED_GROUP: u32 = 5;

/// The most characters of an error the client reports: a CPaaS's error text is quoted up to
/// here, so that a huge error body does not make a huge outcome event or dead letter.
pub const MAX_REASON_CHARS: usize = 300;

/// The HTTP side of the adapter: a connection pool and the `Authorization` header.
///
/// Every text it reports (errors, and the message ids and statuses the CPaaS answers) has the
/// API key redacted ([`ApiKey::redact`]), then errors cut to [`MAX_REASON_CHARS`]: so what the
/// adapter records, reports and logs of an answer never holds the key, nor a part of it.
#[derive(Clone, Debug)]
pub struct CpaasClient {
    http: reqwest::Client,
    base_url: String,
    sender: String,
    key: ApiKey,
}

impl CpaasClient {
    /// A client for `config`'s CPaaS; calls time out after `config.timeout`.
    pub fn new(config: &NotifyConfig) -> anyhow::Result<CpaasClient> {
        let mut auth = HeaderValue::from_str(&format!("App {}", config.api_key.expose()))
            .map_err(|_| anyhow::anyhow!("the API key is not a valid header value"))?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(config.timeout)
            .pool_max_idle_per_host(config.sms.concurrency + config.email.concurrency)
            .build()?;
        Ok(CpaasClient {
            http,
            base_url: config.base_url.clone(),
            sender: config.sender.clone(),
            key: config.api_key.clone(),
        })
    }

    /// Sends SMS messages in one call; the results are in the order of `requests`.
    pub async fn send_sms(
        &self,
        requests: &[&NotificationRequest],
    ) -> Result<Vec<MessageResult>, CallError> {
        let body = SmsBody {
            messages: requests
                .iter()
                .map(|r| SmsMessage {
                    destinations: vec![Destination {
                        to: r.to.clone(),
                        message_id: Some(r.request_id.clone()),
                    }],
                    from: self.sender.clone(),
                    text: r.text.clone(),
                })
                .collect(),
        };
        let call = self
            .http
            .post(format!("{}{SMS_PATH}", self.base_url))
            .header(CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&body).expect("a request body encodes"));
        let answered = answer(call.send().await).await;
        self.sanitize(answered.map(|response| match_results(requests, response)))
    }

    /// Sends one e-mail.
    pub async fn send_email(
        &self,
        request: &NotificationRequest,
    ) -> Result<Vec<MessageResult>, CallError> {
        let form = reqwest::multipart::Form::new()
            .text("from", self.sender.clone())
            .text("to", request.to.clone())
            .text("subject", request.subject.clone().unwrap_or_default())
            .text("text", request.text.clone())
            .text("messageId", request.request_id.clone());
        let call = self
            .http
            .post(format!("{}{EMAIL_PATH}", self.base_url))
            .multipart(form);
        let answered = answer(call.send().await).await;
        self.sanitize(answered.map(|response| match_results(&[request], response)))
    }

    /// The result as reported: the key redacted from every text, errors cut after that.
    fn sanitize(
        &self,
        result: Result<Vec<MessageResult>, CallError>,
    ) -> Result<Vec<MessageResult>, CallError> {
        let reason = |text: &str| cut(&self.key.redact(text), MAX_REASON_CHARS);
        match result {
            Ok(results) => Ok(results
                .into_iter()
                .map(|result| match result {
                    Ok(accepted) => Ok(Accepted {
                        message_id: self.key.redact(&accepted.message_id),
                        status: self.key.redact(&accepted.status),
                    }),
                    Err(e) => Err(reason(&e)),
                })
                .collect()),
            Err(CallError::Transient {
                reason: text,
                retry_after,
            }) => Err(CallError::Transient {
                reason: reason(&text),
                retry_after,
            }),
            Err(CallError::Permanent { reason: text }) => Err(CallError::Permanent {
                reason: reason(&text),
            }),
        }
    }
}

/// `text` cut to `max` characters, with `…` where it was cut.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

/// Reads the answer to a call: the parsed body on success, or the error it amounts to.
async fn answer(
    sent: Result<reqwest::Response, reqwest::Error>,
) -> Result<SendResponse, CallError> {
    let response = sent.map_err(|e| transport_error(&e))?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = response.bytes().await.map_err(|e| transport_error(&e))?;
    if status.is_success() {
        return serde_json::from_slice(&body).map_err(|e| CallError::Transient {
            // The messages may have been accepted: a retry with the same message ids is safe.
            reason: format!("CPaaS answered {status} with an unreadable body: {e}"),
            retry_after: None,
        });
    }
    let reason = format!("CPaaS answered {status}: {}", error_text(&body));
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        Err(CallError::Transient {
            reason,
            retry_after,
        })
    } else {
        Err(CallError::Permanent { reason })
    }
}

fn transport_error(e: &reqwest::Error) -> CallError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    CallError::Transient {
        reason: format!("the call {what}: {e}"),
        retry_after: None,
    }
}

/// The text of an Infobip error body (`requestError.serviceException.text`), else the body
/// (cut later, after the key is redacted from it).
fn error_text(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let text = parsed.as_ref().and_then(|v| {
        v.pointer("/requestError/serviceException/text")
            .and_then(|t| t.as_str())
    });
    match text {
        Some(text) => text.to_string(),
        None => String::from_utf8_lossy(body).into_owned(),
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let wait = at.duration_since(jiff::Timestamp::now());
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

/// Pairs each request with the CPaaS's answer about it, by message id.
fn match_results(requests: &[&NotificationRequest], response: SendResponse) -> Vec<MessageResult> {
    requests
        .iter()
        .map(|r| {
            let found = response
                .messages
                .iter()
                .find(|m| m.message_id == r.request_id);
            match found {
                None => Err(format!(
                    "the CPaaS answer lists no message `{}`",
                    r.request_id
                )),
                Some(m) if m.status.group_id == REJECTED_GROUP => Err(format!(
                    "the CPaaS rejected the message: {} ({})",
                    m.status.name, m.status.description
                )),
                Some(m) => Ok(Accepted {
                    message_id: m.message_id.clone(),
                    status: m.status.name.clone(),
                }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_as_seconds_or_a_date() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn infobip_error_texts_are_extracted() {
        let body = br#"{"requestError":{"serviceException":{"messageId":"BAD_REQUEST","text":"Invalid destination"}}}"#;
        assert_eq!(error_text(body), "Invalid destination");
        assert_eq!(error_text(b"plain"), "plain");
    }

    #[test]
    fn errors_are_cut_only_after_the_key_is_redacted() {
        let config = NotifyConfig::new(
            "http://127.0.0.1:1",
            ApiKey::new("secret-key-123".into()),
            "Eddy",
            "sent.redb".into(),
        );
        let client = CpaasClient::new(&config).unwrap();
        // The key straddles the cut: cutting first would keep its start.
        let echo = format!("{}App secret-key-123", "x".repeat(MAX_REASON_CHARS - 4));
        let reported = client.sanitize(Err(CallError::Permanent {
            reason: echo.clone(),
        }));
        let reason = reported.unwrap_err().reason().to_string();
        assert!(!reason.contains("secre"), "{reason}");
        assert!(reason.ends_with("App …"), "{reason}");
        assert_eq!(reason.chars().count(), MAX_REASON_CHARS + 1);
        let accepted = client.sanitize(Ok(vec![
            Ok(Accepted {
                message_id: "id secret-key-123".into(),
                status: "secret-key-123".into(),
            }),
            Err(echo),
        ]));
        let accepted = accepted.unwrap();
        assert_eq!(
            accepted[0],
            Ok(Accepted {
                message_id: "id <redacted>".into(),
                status: "<redacted>".into(),
            })
        );
        assert!(!accepted[1].as_ref().unwrap_err().contains("secre"));
    }
}
