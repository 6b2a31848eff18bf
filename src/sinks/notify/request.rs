//! `NotificationRequested`: what the adapter is asked to deliver, read from a record by field
//! name and checked before anything is sent.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::outcome::RequestContext;
use crate::record::{Record, Schema, Value};

/// How a notification reaches its recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// A text message: `POST /sms/2/text/advanced`, several messages per call.
    Sms,
    /// An e-mail: `POST /email/3/send`, one message per call.
    Email,
}

impl Channel {
    /// Both channels, in the order their settings are listed.
    pub const ALL: [Channel; 2] = [Channel::Sms, Channel::Email];

    /// The name used in requests, outcomes and job files.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Email => "email",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One `NotificationRequested` event, checked: its request id is the idempotency key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationRequest {
    /// Unique per notification: a retry, a replay or a duplicate carries the same id.
    pub request_id: String,
    /// SMS or e-mail.
    pub channel: Channel,
    /// A phone number or an e-mail address.
    pub to: String,
    /// The e-mail subject (e-mail only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The message text (or rendered template output).
    pub text: String,
}

/// The fields a request schema must have.
pub const REQUIRED_FIELDS: [&str; 4] = ["request_id", "channel", "to", "text"];

/// Where the request fields stand in the records of a source (record indexes by schema).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestFields {
    request_id: usize,
    channel: usize,
    to: usize,
    text: usize,
    subject: Option<usize>,
    user_id: Option<usize>,
    time: usize,
}

impl RequestFields {
    /// Locates the fields in `schema`: `request_id`, `channel`, `to` and `text` are required,
    /// `subject` and `user_id` optional (the event-time field is the request's time); the error
    /// names what is missing.
    pub fn new(schema: &Schema) -> Result<RequestFields, String> {
        let find = |name: &str| {
            schema.index_of(name).ok_or_else(|| {
                format!(
                    "the source schema has no `{name}`: notification requests need {}, and \
                     `subject` for e-mail",
                    REQUIRED_FIELDS.join(", ")
                )
            })
        };
        Ok(RequestFields {
            request_id: find("request_id")?,
            channel: find("channel")?,
            to: find("to")?,
            text: find("text")?,
            subject: schema.index_of("subject"),
            user_id: schema.index_of("user_id"),
            time: schema.time_index(),
        })
    }

    /// The request fields of a record as a JSON object, to keep a record that is no valid
    /// request in a dead letter.
    pub fn to_json(&self, record: &Record) -> Vec<u8> {
        let mut out = b"{".to_vec();
        let named = [
            ("request_id", Some(self.request_id)),
            ("channel", Some(self.channel)),
            ("to", Some(self.to)),
            ("subject", self.subject),
            ("text", Some(self.text)),
        ];
        for (name, index) in named {
            let Some(index) = index else { continue };
            if out.len() > 1 {
                out.push(b',');
            }
            out.extend_from_slice(format!("\"{name}\":").as_bytes());
            record[index].write_json(&mut out);
        }
        out.push(b'}');
        out
    }

    /// The request id, channel and recipient a record gives, as strings (for reporting a
    /// record that is no valid request); `None` without a request id.
    pub fn identity(&self, record: &Record) -> Option<(String, Option<String>, Option<String>)> {
        let text = |index: usize| text_of(&record[index]);
        Some((text(self.request_id)?, text(self.channel), text(self.to)))
    }

    /// The user a record names (any scalar, as text) and its event time, where it gives them.
    pub fn context(&self, record: &Record) -> RequestContext {
        let user_id = self.user_id.and_then(|i| match &record[i] {
            Value::Null => None,
            Value::Str(s) if s.trim().is_empty() => None,
            other => Some(other.to_text().to_string()),
        });
        let time = match record[self.time] {
            Value::Int(ms) => Some(ms),
            _ => None,
        };
        RequestContext { user_id, time }
    }

    /// The request a record holds, or why it is not a valid one.
    pub fn read(&self, record: &Record) -> Result<NotificationRequest, String> {
        let text = |index: usize, name: &str| match &record[index] {
            Value::Str(_) | Value::Null | Value::Int(_) => {
                text_of(&record[index]).ok_or_else(|| format!("`{name}` is empty"))
            }
            other => Err(format!("`{name}` is not a string: {other:?}")),
        };
        let request_id = text(self.request_id, "request_id")?;
        let channel = match text(self.channel, "channel")?.as_str() {
            "sms" => Channel::Sms,
            "email" => Channel::Email,
            other => {
                return Err(format!(
                    "request `{request_id}`: unknown channel `{other}`: expected sms or email"
                ));
            }
        };
        let to = text(self.to, "to").map_err(|e| format!("request `{request_id}`: {e}"))?;
        let body = text(self.text, "text").map_err(|e| format!("request `{request_id}`: {e}"))?;
        let subject = self.subject.map(|i| text(i, "subject")).transpose();
        let subject = match (channel, subject) {
            (Channel::Email, Ok(None) | Err(_)) => {
                return Err(format!(
                    "request `{request_id}`: an e-mail needs a `subject`"
                ));
            }
            (Channel::Email, Ok(subject)) => subject,
            (Channel::Sms, _) => None,
        };
        Ok(NotificationRequest {
            request_id,
            channel,
            to,
            subject,
            text: body,
        })
    }
}

/// A field's text: a non-blank string, or an integer written out.
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::Str(s) if !s.trim().is_empty() => Some(s.to_string()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::FieldType;

    fn schema() -> Schema {
        Schema::of(
            &[
                ("request_id", FieldType::String, true),
                ("channel", FieldType::String, true),
                ("to", FieldType::String, true),
                ("subject", FieldType::String, false),
                ("text", FieldType::String, true),
                ("ts", FieldType::Timestamp, true),
            ],
            "ts",
        )
        .unwrap()
    }

    fn record(values: [Value; 5]) -> Record {
        values
            .into_iter()
            .chain([Value::Int(1)])
            .collect::<Vec<_>>()
            .into_boxed_slice()
    }

    fn s(text: &str) -> Value {
        Value::Str(text.into())
    }

    #[test]
    fn reads_sms_and_email_requests() {
        let fields = RequestFields::new(&schema()).unwrap();
        let sms = fields
            .read(&record([
                s("r1"),
                s("sms"),
                s("+41790000001"),
                Value::Null,
                s("hi"),
            ]))
            .unwrap();
        assert_eq!(sms.channel, Channel::Sms);
        assert_eq!(sms.subject, None);
        let email = fields
            .read(&record([
                s("r2"),
                s("email"),
                s("a@b.ch"),
                s("Welcome"),
                s("hello"),
            ]))
            .unwrap();
        assert_eq!(email.subject.as_deref(), Some("Welcome"));
    }

    #[test]
    fn a_request_record_gives_its_user_and_event_time() {
        let schema = |user_id: bool| {
            let mut fields = ["request_id", "channel", "to", "text"]
                .map(|name| (name, FieldType::String, false))
                .to_vec();
            fields.push(("time", FieldType::Timestamp, false));
            if user_id {
                fields.push(("user_id", FieldType::Int, false));
            }
            RequestFields::new(&Schema::of(&fields, "time").unwrap()).unwrap()
        };
        let request = [s("r1"), s("sms"), s("+41790000001"), s("hi")];
        let context = |user_id: Option<Value>| {
            let fields = schema(user_id.is_some());
            let record: Record = request
                .iter()
                .cloned()
                .chain([Value::Int(1_700_000_000_000)])
                .chain(user_id)
                .collect();
            fields.context(&record)
        };
        assert_eq!(
            context(Some(Value::Int(42))),
            RequestContext {
                user_id: Some("42".into()),
                time: Some(1_700_000_000_000),
            }
        );
        assert_eq!(context(Some(s("u-7"))).user_id.as_deref(), Some("u-7"));
        assert_eq!(context(Some(Value::Null)).user_id, None);
        assert_eq!(
            context(None),
            RequestContext {
                user_id: None,
                time: Some(1_700_000_000_000),
            }
        );
    }

    #[test]
    fn says_what_is_wrong_with_a_request() {
        let fields = RequestFields::new(&schema()).unwrap();
        let err = |values| fields.read(&record(values)).unwrap_err();
        assert_eq!(
            err([s("r1"), s("fax"), s("1"), Value::Null, s("x")]),
            "request `r1`: unknown channel `fax`: expected sms or email"
        );
        assert_eq!(
            err([s("r2"), s("email"), s("a@b.ch"), Value::Null, s("x")]),
            "request `r2`: an e-mail needs a `subject`"
        );
        assert_eq!(
            err([s("r3"), s("sms"), s(" "), Value::Null, s("x")]),
            "request `r3`: `to` is empty"
        );
    }

    #[test]
    fn an_invalid_record_is_kept_as_json() {
        let fields = RequestFields::new(&schema()).unwrap();
        let json = fields.to_json(&record([s("r1"), s("fax"), s("1"), Value::Null, s("x")]));
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r#"{"request_id":"r1","channel":"fax","to":"1","subject":null,"text":"x"}"#
        );
    }

    #[test]
    fn a_schema_without_request_fields_is_refused() {
        let schema = Schema::of(&[("ts", FieldType::Timestamp, true)], "ts").unwrap();
        assert!(
            RequestFields::new(&schema)
                .unwrap_err()
                .starts_with("the source schema has no `request_id`")
        );
    }
}
