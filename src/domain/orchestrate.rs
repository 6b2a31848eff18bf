//! The orchestrator, a [`Pattern`] per user: keeps each user's contact profile from the events it
//! sees, and reacts to events and alerts with notification requests rendered from templates, on
//! the channel the reaction names or the user's preferred one.
//!
//! Run it with `stream.detect(detection, |h: &Happening| h.user.clone(), orchestrator)`.

use std::cmp::Ordering;
use std::sync::Arc;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use super::command::REJECTED;
use crate::operators::pattern::Pattern;
use crate::record::{Id, Record, Value, record_cmp};

/// Where a happening comes from: each has its own schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Origin {
    /// The user events (`UserRegistered`, `PurchaseInitiated`, …).
    Events,
    /// Fraud alerts on the user's card account.
    Alerts,
}

/// Something that happened to a user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Happening {
    /// Its id (the event id or alert id): requests it causes are named after it.
    pub id: CompactString,
    /// The user.
    pub user: Id,
    /// Where it comes from.
    pub origin: Origin,
    /// Its type: the event name (for alerts, `alert`).
    pub kind: CompactString,
    /// The whole record, in its origin's schema.
    pub record: Record,
}

impl Happening {
    /// The user event in `record`, whose event id, user id and event name are at the indexes
    /// `fields`. The job loader checked that the user id is an int or a string.
    pub fn event(record: Record, [id, user, kind]: [usize; 3]) -> Self {
        Happening {
            id: record[id].to_text(),
            user: Id::of(&record[user]).expect("checked by the job loader"),
            origin: Origin::Events,
            kind: record[kind].to_text(),
            record,
        }
    }

    /// The fraud alert in `record`, whose alert id and card account (the user id) are at the
    /// indexes `fields`.
    pub fn alert(record: Record, [id, account]: [usize; 2]) -> Self {
        Happening {
            id: record[id].to_text(),
            user: Id::of(&record[account]).expect("checked by the job loader"),
            origin: Origin::Alerts,
            kind: "alert".into(),
            record,
        }
    }
}

impl Eq for Happening {}

impl PartialOrd for Happening {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// By origin, then id, then fields: simultaneous happenings of a user are taken in this order.
impl Ord for Happening {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.origin, &self.id)
            .cmp(&(other.origin, &other.id))
            .then_with(|| record_cmp(&self.record, &other.record))
    }
}

/// A contact detail kept per user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Contact {
    /// The user's name.
    Name,
    /// E.164 phone number, for SMS.
    Phone,
    /// E-mail address.
    Email,
    /// The preferred channel, `sms` or `email`.
    Channel,
}

/// The contact details, by record index in the events' schema (`None`: not in it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactFields(pub [Option<usize>; 4]);

/// A piece of a template.
#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    /// Literal text.
    Text(CompactString),
    /// A field of the happening's record.
    Field(usize),
    /// A contact detail of the user.
    Contact(Contact),
}

/// A template: text with `{placeholders}` resolved when the job is loaded.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Template(pub Vec<Part>);

impl Template {
    fn render(&self, record: &Record, profile: &Profile) -> String {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field(i) => out.push_str(&record[*i].to_text()),
                Part::Contact(c) => out.push_str(profile.get(*c).map_or("", |v| v.as_str())),
            }
        }
        out
    }
}

/// How the orchestrator reacts to one kind of happening.
#[derive(Clone, Debug, PartialEq)]
pub struct Reaction {
    /// Where the happening comes from.
    pub origin: Origin,
    /// The event name it reacts to (`alert` for alerts).
    pub kind: CompactString,
    /// `sms` or `email`; `None`: the user's preferred channel.
    pub channel: Option<CompactString>,
    /// The e-mail subject.
    pub subject: Option<Template>,
    /// The message.
    pub text: Template,
}

/// The orchestrator's settings.
#[derive(Clone, Debug)]
pub struct Orchestrator {
    /// Where the contact details are in the events' schema.
    pub contacts: ContactFields,
    /// The reactions.
    pub reactions: Arc<[Reaction]>,
}

/// A user's contact details, as the latest events gave them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Profile([Option<CompactString>; 4]);

impl Profile {
    fn get(&self, contact: Contact) -> Option<&CompactString> {
        self.0[contact as usize].as_ref()
    }
}

/// A notification the orchestrator asks for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NotificationRequest {
    /// `<cause>:<channel>`: the same on a replay.
    pub request_id: CompactString,
    /// The happening that caused it.
    pub cause: CompactString,
    /// `sms` or `email`; `None` when the user has no preferred channel yet.
    pub channel: Option<CompactString>,
    /// The phone number or address; `None` when the user's profile lacks it (the notification
    /// adapter then fails the request with that reason).
    pub to: Option<CompactString>,
    /// The e-mail subject.
    pub subject: Option<String>,
    /// The message.
    pub text: String,
}

impl Pattern<Happening> for Orchestrator {
    type State = Profile;
    type Match = NotificationRequest;

    fn advance(
        &self,
        profile: &mut Profile,
        _time: u64,
        happenings: &[Happening],
        emit: &mut impl FnMut(NotificationRequest),
    ) {
        for h in happenings {
            // A rejection carries the command's fields as given, which may be invalid.
            if h.origin == Origin::Events && h.kind != REJECTED {
                for (slot, field) in profile.0.iter_mut().zip(&self.contacts.0) {
                    if let Some(Value::Str(s)) = field.map(|i| &h.record[i]) {
                        *slot = Some(s.clone());
                    }
                }
            }
            for reaction in self
                .reactions
                .iter()
                .filter(|r| r.origin == h.origin && r.kind == h.kind)
            {
                let channel = reaction
                    .channel
                    .clone()
                    .or_else(|| profile.get(Contact::Channel).cloned());
                let to = match channel.as_deref() {
                    Some("sms") => profile.get(Contact::Phone).cloned(),
                    Some("email") => profile.get(Contact::Email).cloned(),
                    _ => None,
                };
                let mut request_id = h.id.clone();
                request_id.push(':');
                request_id.push_str(channel.as_deref().unwrap_or("none"));
                emit(NotificationRequest {
                    request_id,
                    cause: h.id.clone(),
                    channel,
                    to,
                    subject: reaction
                        .subject
                        .as_ref()
                        .map(|s| s.render(&h.record, profile)),
                    text: reaction.text.render(&h.record, profile),
                });
            }
        }
    }

    /// Profiles have no time bound: a restarted job knows the users whose events it replays.
    fn horizon(&self) -> u64 {
        0
    }

    fn expired(&self, profile: &Profile, _: u64) -> bool {
        profile.0.iter().all(Option::is_none)
    }
}
