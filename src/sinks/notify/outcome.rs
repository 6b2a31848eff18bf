//! What became of a request: `NotificationSent` (with the CPaaS message id and status) or
//! `NotificationFailed` (with the reason), written to the outcomes topic keyed by request id; a
//! failed request also becomes a dead letter. A record that is no valid request (no channel, no
//! recipient, …) fails too, as a [`Rejection`], with a dead letter.

use serde::{Deserialize, Serialize};

use super::request::NotificationRequest;
use crate::record::{DeadLetter, Payload};
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
            payload: Payload::of(&serde_json::to_vec(&self.request).expect("a request encodes")),
        })
    }
}

/// Whom a request is for and when, as its record gives them (not part of the request: the
/// adapter neither needs nor records them): outcome events carry both, so a view can count a
/// user's notifications.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestContext {
    /// The user, as text, when the record names one (a `user_id` field).
    pub user_id: Option<String>,
    /// The record's event time (epoch milliseconds).
    pub time: Option<i64>,
}

/// A record that is no valid request but names its request id: it fails with the reason, and
/// is reported with whatever channel and recipient it gave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    /// The request id.
    pub request_id: String,
    /// The channel as given.
    pub channel: Option<String>,
    /// The recipient as given.
    pub to: Option<String>,
    /// What is wrong with it.
    pub reason: String,
    /// Its user and event time.
    pub context: RequestContext,
}

/// What the notify operator emits for each record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Resolved {
    /// The outcome of a request, with its record's user and event time.
    Outcome(Outcome, RequestContext),
    /// A record that is no valid request: a failure event when it names a request id, and a
    /// dead letter with the reason.
    Invalid {
        /// The failure to report, if the record names a request id.
        rejection: Option<Rejection>,
        /// The record as a dead letter.
        letter: DeadLetter,
    },
}

impl Resolved {
    /// Whether it is reported as an outcome event.
    pub fn has_event(&self) -> bool {
        !matches!(
            self,
            Resolved::Invalid {
                rejection: None,
                ..
            }
        )
    }

    /// The dead letter: an invalid record, or a request that failed (attributed to `source`).
    pub fn dead_letter(self, source: &str) -> Option<DeadLetter> {
        match self {
            Resolved::Outcome(outcome, _) => outcome.dead_letter(source),
            Resolved::Invalid { letter, .. } => Some(letter),
        }
    }
}

/// The outcome event as written: flat JSON with a `type`, and the request's `user_id` and `time`
/// where known.
#[derive(Serialize)]
struct OutcomeEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    request_id: &'a str,
    channel: Option<&'a str>,
    to: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    attempts: u32,
    deduplicated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<i64>,
}

/// Writes outcomes as JSON events keyed by request id, with provenance headers and an
/// `eddy.event` header naming the event type.
#[derive(Clone, Debug, Default)]
pub struct OutcomeEncoder {
    /// Headers on every message, e.g. `eddy.job` and `eddy.output`.
    pub provenance: Vec<(&'static str, String)>,
}

impl OutcomeEncoder {
    fn event<'a>(&self, resolved: &'a Resolved) -> OutcomeEvent<'a> {
        match resolved {
            Resolved::Outcome(outcome, context) => {
                let (message_id, status, reason) = match &outcome.delivery {
                    Delivery::Sent { message_id, status } => {
                        (Some(&**message_id), Some(&**status), None)
                    }
                    Delivery::Failed { reason } => (None, None, Some(&**reason)),
                };
                OutcomeEvent {
                    kind: outcome.event_type(),
                    request_id: &outcome.request.request_id,
                    channel: Some(outcome.request.channel.name()),
                    to: Some(&outcome.request.to),
                    message_id,
                    status,
                    reason,
                    attempts: outcome.attempts,
                    deduplicated: outcome.deduplicated,
                    user_id: context.user_id.as_deref(),
                    time: context.time,
                }
            }
            Resolved::Invalid { rejection, letter } => {
                let (request_id, channel, to, user_id, time) = match rejection {
                    Some(r) => (
                        &*r.request_id,
                        r.channel.as_deref(),
                        r.to.as_deref(),
                        r.context.user_id.as_deref(),
                        r.context.time,
                    ),
                    None => ("", None, None, None, None),
                };
                OutcomeEvent {
                    kind: "NotificationFailed",
                    request_id,
                    channel,
                    to,
                    message_id: None,
                    status: None,
                    reason: Some(rejection.as_ref().map_or(&*letter.error, |r| &*r.reason)),
                    attempts: 0,
                    deduplicated: false,
                    user_id,
                    time,
                }
            }
        }
    }
}

impl Encode<Resolved> for OutcomeEncoder {
    fn value(&self, resolved: &Resolved, out: &mut Vec<u8>) {
        serde_json::to_writer(out, &self.event(resolved)).expect("writing to a Vec cannot fail");
    }

    fn key(&self, resolved: &Resolved, out: &mut Vec<u8>) -> bool {
        out.extend_from_slice(self.event(resolved).request_id.as_bytes());
        true
    }

    fn headers(&self, resolved: &Resolved) -> Vec<(&'static str, String)> {
        let mut headers = self.provenance.clone();
        headers.push(("eddy.event", self.event(resolved).kind.to_string()));
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
        let sent = Resolved::Outcome(sent, RequestContext::default());
        let mut out = Vec::new();
        encoder.value(&sent, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"type":"NotificationSent","request_id":"r1","channel":"sms","to":"+41790000001","message_id":"r1","status":"PENDING_ACCEPTED","attempts":2,"deduplicated":false}"#
        );
        let mut key = Vec::new();
        assert!(encoder.key(&sent, &mut key));
        assert_eq!(key, b"r1");
        assert_eq!(
            encoder.headers(&sent),
            vec![("eddy.event", "NotificationSent".into())]
        );
        assert_eq!(sent.dead_letter("requests"), None);
    }

    #[test]
    fn outcome_events_carry_the_user_and_time_of_the_request() {
        let context = |user_id: Option<&str>| RequestContext {
            user_id: user_id.map(Into::into),
            time: Some(1_700_000_000_000),
        };
        let event = |outcome: Outcome, user_id| {
            let mut out = Vec::new();
            OutcomeEncoder::default()
                .value(&Resolved::Outcome(outcome, context(user_id)), &mut out);
            serde_json::from_slice::<serde_json::Value>(&out).unwrap()
        };
        let sent = Outcome {
            request: request(),
            delivery: Delivery::Sent {
                message_id: "r1".into(),
                status: "PENDING_ACCEPTED".into(),
            },
            attempts: 1,
            deduplicated: false,
        };
        let sent = event(sent, Some("42"));
        assert_eq!(sent["user_id"], "42");
        assert_eq!(sent["time"], 1_700_000_000_000_i64);
        let failed = event(
            Outcome::failed(request(), "CPaaS answered 400".into(), 1),
            None,
        );
        assert_eq!(failed["type"], "NotificationFailed");
        assert_eq!(failed.get("user_id"), None);
        assert_eq!(failed["time"], 1_700_000_000_000_i64);
    }

    #[test]
    fn a_failed_request_becomes_a_dead_letter_with_its_reason() {
        let failed = Outcome::failed(request(), "CPaaS answered 400".into(), 1);
        let mut out = Vec::new();
        let context = RequestContext::default();
        OutcomeEncoder::default().value(&Resolved::Outcome(failed.clone(), context), &mut out);
        assert!(String::from_utf8(out).unwrap().contains(
            r#""type":"NotificationFailed","request_id":"r1","channel":"sms","to":"+41790000001","reason":"CPaaS answered 400""#
        ));
        let letter = failed.dead_letter("requests").unwrap();
        assert_eq!(letter.error, "notification failed: CPaaS answered 400");
        assert_eq!(letter.topic, "requests");
        let back: NotificationRequest = serde_json::from_slice(&letter.payload.kept).unwrap();
        assert_eq!(back, request());
    }

    #[test]
    fn an_invalid_request_fails_with_what_it_gave() {
        let letter = DeadLetter {
            error: "not a notification request: request `r9`: `to` is empty".into(),
            topic: "requests".into(),
            partition: -1,
            offset: -1,
            payload: Payload::of(b"{}"),
        };
        let invalid = Resolved::Invalid {
            rejection: Some(Rejection {
                request_id: "r9".into(),
                channel: Some("sms".into()),
                to: None,
                reason: "`to` is empty".into(),
                context: RequestContext {
                    user_id: Some("7".into()),
                    time: Some(1_700_000_000_000),
                },
            }),
            letter: letter.clone(),
        };
        assert!(invalid.has_event());
        let mut out = Vec::new();
        OutcomeEncoder::default().value(&invalid, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"type":"NotificationFailed","request_id":"r9","channel":"sms","to":null,"reason":"`to` is empty","attempts":0,"deduplicated":false,"user_id":"7","time":1700000000000}"#
        );
        assert_eq!(invalid.dead_letter("requests"), Some(letter.clone()));
        let anonymous = Resolved::Invalid {
            rejection: None,
            letter,
        };
        assert!(!anonymous.has_event());
    }
}
