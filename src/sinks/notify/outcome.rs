//! What became of a request: `NotificationSent` (with the CPaaS message id and status) or
//! `NotificationFailed` (with the reason), written to the outcomes topic keyed by request id; a
//! failed request also becomes a dead letter.

use serde::{Deserialize, Serialize};

use super::request::NotificationRequest;
use crate::record::DeadLetter;
use crate::sinks::Encode;

/// How a request ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Delivery {
    /// The CPaaS accepted the message.
    Sent {
        /// The CPaaS message id (the request id, which the adapter sets as idempotency key).
        message_id: String,
        /// The CPaaS status name, e.g. `PENDING_ACCEPTED`.
        status: String,
    },
    /// The message was not sent, and will not be.
    Failed {
        /// Why: a permanent error, or the last error after the last try.
        reason: String,
    },
}

/// The outcome of one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The request.
    pub request: NotificationRequest,
    /// How it ended.
    pub delivery: Delivery,
    /// HTTP calls made for it (0 when an earlier request with its id had decided it).
    pub attempts: u32,
    /// Decided by an earlier request with the same id (a duplicate, or a replay after a
    /// restart), found in the sent-record: nothing was sent for this one.
    pub deduplicated: bool,
}

impl Outcome {
    /// A request that fails before any call, e.g. one the CPaaS would refuse anyway.
    pub fn failed(request: NotificationRequest, reason: String, attempts: u32) -> Outcome {
        Outcome {
            request,
            delivery: Delivery::Failed { reason },
            attempts,
            deduplicated: false,
        }
    }

    /// The event type: `NotificationSent` or `NotificationFailed`.
    pub fn event_type(&self) -> &'static str {
        match self.delivery {
            Delivery::Sent { .. } => "NotificationSent",
            Delivery::Failed { .. } => "NotificationFailed",
        }
    }

    /// For a failed request: the dead letter that keeps it, with the reason, attributed to the
    /// source it was read from (`source`; partition and offset are not known here: -1).
    pub fn dead_letter(&self, source: &str) -> Option<DeadLetter> {
        let Delivery::Failed { reason } = &self.delivery else {
            return None;
        };
        Some(DeadLetter {
            error: format!("notification failed: {reason}"),
            topic: source.to_string(),
            partition: -1,
            offset: -1,
            payload: serde_json::to_vec(&self.request).expect("a request encodes"),
        })
    }
}

/// The outcome event as written: flat JSON with a `type`.
#[derive(Serialize)]
struct OutcomeEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    request_id: &'a str,
    channel: &'a str,
    to: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    attempts: u32,
    deduplicated: bool,
}

/// Writes outcomes as JSON events keyed by request id, with provenance headers and an
/// `eddy.event` header naming the event type.
#[derive(Clone, Debug, Default)]
pub struct OutcomeEncoder {
    /// Headers on every message, e.g. `eddy.job` and `eddy.output`.
    pub provenance: Vec<(&'static str, String)>,
}

impl Encode<Outcome> for OutcomeEncoder {
    fn value(&self, outcome: &Outcome, out: &mut Vec<u8>) {
        let (message_id, status, reason) = match &outcome.delivery {
            Delivery::Sent { message_id, status } => (Some(&**message_id), Some(&**status), None),
            Delivery::Failed { reason } => (None, None, Some(&**reason)),
        };
        let event = OutcomeEvent {
            kind: outcome.event_type(),
            request_id: &outcome.request.request_id,
            channel: outcome.request.channel.name(),
            to: &outcome.request.to,
            message_id,
            status,
            reason,
            attempts: outcome.attempts,
            deduplicated: outcome.deduplicated,
        };
        serde_json::to_writer(out, &event).expect("writing to a Vec cannot fail");
    }

    fn key(&self, outcome: &Outcome, out: &mut Vec<u8>) -> bool {
        out.extend_from_slice(outcome.request.request_id.as_bytes());
        true
    }

    fn headers(&self, outcome: &Outcome) -> Vec<(&'static str, String)> {
        let mut headers = self.provenance.clone();
        headers.push(("eddy.event", outcome.event_type().to_string()));
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::notify::request::Channel;

    fn request() -> NotificationRequest {
        NotificationRequest {
            request_id: "r1".into(),
            channel: Channel::Sms,
            to: "+41790000001".into(),
            subject: None,
            text: "hi".into(),
        }
    }

    #[test]
    fn outcomes_are_flat_json_events_keyed_by_request_id() {
        let sent = Outcome {
            request: request(),
            delivery: Delivery::Sent {
                message_id: "r1".into(),
                status: "PENDING_ACCEPTED".into(),
            },
            attempts: 2,
            deduplicated: false,
        };
        let encoder = OutcomeEncoder::default();
        let mut out = Vec::new();
        encoder.value(&sent, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"type":"NotificationSent","request_id":"r1","channel":"sms","to":"+41790000001","message_id":"r1","status":"PENDING_ACCEPTED","attempts":2,"deduplicated":false}"#
        );
        let mut key = Vec::new();
        assert!(encoder.key(&sent, &mut key));
        assert_eq!(key, b"r1");
        assert_eq!(sent.dead_letter("requests"), None);
    }

    #[test]
    fn a_failed_request_becomes_a_dead_letter_with_its_reason() {
        let failed = Outcome::failed(request(), "CPaaS answered 400".into(), 1);
        let mut out = Vec::new();
        OutcomeEncoder::default().value(&failed, &mut out);
        assert!(String::from_utf8(out).unwrap().contains(
            r#""type":"NotificationFailed","request_id":"r1","channel":"sms","to":"+41790000001","reason":"CPaaS answered 400""#
        ));
        let letter = failed.dead_letter("requests").unwrap();
        assert_eq!(letter.error, "notification failed: CPaaS answered 400");
        assert_eq!(letter.topic, "requests");
        let back: NotificationRequest = serde_json::from_slice(&letter.payload).unwrap();
        assert_eq!(back, request());
    }
}
