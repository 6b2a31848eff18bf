//! Validation of `[[commands]]` and `[[orchestrators]]` sections: command types, formats and
//! fields; reactions and their templates.

use std::sync::Arc;
use std::time::Duration;

use compact_str::CompactString;

use toml::Spanned;

use super::outputs::{Names, Wiring};
use super::values::millis_of;
use super::{Checker, SourceSpec, raw};
use crate::domain::command::{CommandProcessor, CommandType, Format, UserRule};
use crate::domain::orchestrate::{
    Contact, ContactFields, Orchestrator, Origin, Part, Reaction, Template,
};
use crate::record::{FieldType, Schema};

/// A command processor: commands from a source become events (or rejections) on its sinks.
#[derive(Clone, Debug)]
pub struct CommandsSpec {
    /// Its name.
    pub name: String,
    /// The source index.
    pub source: usize,
    /// Record indexes of the command id, user id and command type.
    pub id: usize,
    /// See `id`.
    pub user: usize,
    /// See `id`.
    pub kind: usize,
    /// The command types and dedup span.
    pub processor: CommandProcessor,
    /// Record indexes of the fields carried into the events (all but id, user, type and time).
    pub payload: Vec<usize>,
    /// The output columns: [`EVENT_COLUMNS`], then the payload fields.
    pub columns: Vec<String>,
    /// Sink indexes for the events.
    pub sinks: Vec<usize>,
}

/// The first columns of a command processor's events.
pub const EVENT_COLUMNS: [&str; 6] = [
    "event_id",
    "event",
    "command_id",
    "user_id",
    "time",
    "reason",
];

/// An orchestrator: user events (and alerts) become notification requests on its sinks.
#[derive(Clone, Debug)]
pub struct OrchestratorSpec {
    /// Its name.
    pub name: String,
    /// The source of user events and where their fields are.
    pub events: EventFields,
    /// The source of fraud alerts and where their fields are, if the orchestrator reacts to
    /// alerts.
    pub alerts: Option<AlertFields>,
    /// Contacts and reactions.
    pub orchestrator: Orchestrator,
    /// Sink indexes for the requests.
    pub sinks: Vec<usize>,
}

/// The source of an orchestrator's user events, and the record indexes of their fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventFields {
    /// The source index.
    pub source: usize,
    /// `event_id`.
    pub event_id: usize,
    /// `user_id`.
    pub user_id: usize,
    /// `event`, the event's name.
    pub event: usize,
}

impl EventFields {
    /// The record indexes of `event_id`, `user_id` and `event`, as [`Happening::event`] takes
    /// them.
    ///
    /// [`Happening::event`]: crate::domain::orchestrate::Happening::event
    pub fn indexes(&self) -> [usize; 3] {
        [self.event_id, self.user_id, self.event]
    }
}

/// The source of an orchestrator's fraud alerts, and the record indexes of their fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlertFields {
    /// The source index.
    pub source: usize,
    /// `alert_id`.
    pub alert_id: usize,
    /// `account_id`: the card account, which is the user id.
    pub account_id: usize,
}

impl AlertFields {
    /// The record indexes of `alert_id` and `account_id`, as [`Happening::alert`] takes them.
    ///
    /// [`Happening::alert`]: crate::domain::orchestrate::Happening::alert
    pub fn indexes(&self) -> [usize; 2] {
        [self.alert_id, self.account_id]
    }
}

/// The columns of a notification request.
pub const REQUEST_COLUMNS: [&str; 9] = [
    "request_id",
    "event",
    "user_id",
    "channel",
    "to",
    "subject",
    "text",
    "cause",
    "time",
];

/// The command types a `[[commands]]` section without `types` knows: (name, event, user rule,
/// required fields, formats).
type BuiltIn = (
    &'static str,
    &'static str,
    UserRule,
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
);

const BUILT_IN: [BuiltIn; 3] = [
    (
        "RegisterUser",
        "UserRegistered",
        UserRule::New,
        &["name", "phone", "email", "channel"],
        &[
            ("phone", "e164"),
            ("email", "email"),
            ("channel", "sms|email"),
        ],
    ),
    (
        "InitiatePurchase",
        "PurchaseInitiated",
        UserRule::Existing,
        &["amount_cents", "item"],
        &[("amount_cents", "positive")],
    ),
    (
        "UpdatePreferences",
        "PreferencesUpdated",
        UserRule::Existing,
        &["channel"],
        &[("channel", "sms|email")],
    ),
];

/// The contact fields an orchestrator reads from user events, by name.
const CONTACTS: [(&str, Contact); 4] = [
    ("name", Contact::Name),
    ("phone", Contact::Phone),
    ("email", Contact::Email),
    ("channel", Contact::Channel),
];

impl Checker<'_> {
    pub(super) fn commands(
        &mut self,
        c: &raw::CommandsSection,
        field: &str,
        schema: &Schema,
        wiring: Wiring,
    ) -> Option<CommandsSpec> {
        let errors_before = self.errors.len();
        let named = c.fields.as_ref().map(|f| {
            let f = f.get_ref();
            [&f.id, &f.user, &f.kind]
        });
        let mut index = [0; 3];
        for (i, (part, default)) in [("id", "command_id"), ("user", "user_id"), ("type", "type")]
            .iter()
            .enumerate()
        {
            let given = named.and_then(|n| n[i].as_ref());
            let name = given.map_or(*default, |t| t.get_ref().as_str());
            let span = given.map_or_else(|| c.source.span(), |t| t.span());
            let at = format!("{field}.fields.{part}");
            let types: &[FieldType] = if *part == "user" {
                &[FieldType::Int, FieldType::String]
            } else {
                &[FieldType::String]
            };
            match schema.index_of(name) {
                Some(j) if !types.contains(&schema.fields()[j].ty) => self.error(
                    span,
                    at,
                    format!("field `{name}` must be of type {}", kinds(types)),
                ),
                Some(j) if !schema.fields()[j].required => self.error(
                    span,
                    at,
                    format!("field `{name}` must be required (no `?`): every command has one"),
                ),
                Some(j) => index[i] = j,
                None => self.error(
                    span,
                    at,
                    format!("the source schema has no field `{name}` for the command's {part}"),
                ),
            }
        }
        let mut types = Vec::new();
        match &c.types {
            Some(declared) => {
                for (name, t) in declared.get_ref() {
                    let at = format!("{field}.types.{name}");
                    let r = t.get_ref();
                    let user = match r.user.as_ref().map(|u| u.get_ref().as_str()) {
                        None | Some("any") => UserRule::Any,
                        Some("new") => UserRule::New,
                        Some("existing") => UserRule::Existing,
                        Some(other) => {
                            let span = r.user.as_ref().expect("matched").span();
                            self.error(
                                span,
                                format!("{at}.user"),
                                format!("`{other}`: expected new, existing or any"),
                            );
                            UserRule::Any
                        }
                    };
                    let required: Vec<(&str, std::ops::Range<usize>)> = r
                        .required
                        .iter()
                        .map(|f| (f.get_ref().as_str(), f.span()))
                        .collect();
                    let formats: Vec<(&str, &str, std::ops::Range<usize>)> = r
                        .formats
                        .iter()
                        .map(|(f, v)| (f.as_str(), v.get_ref().as_str(), v.span()))
                        .collect();
                    types.extend(self.command_type(
                        (name, r.event.get_ref()),
                        user,
                        &required,
                        &formats,
                        schema,
                        &at,
                    ));
                }
            }
            None => {
                for (name, event, user, required, formats) in BUILT_IN {
                    let span = c.name.span();
                    let required: Vec<_> = required.iter().map(|f| (*f, span.clone())).collect();
                    let formats: Vec<_> = formats
                        .iter()
                        .map(|(f, v)| (*f, *v, span.clone()))
                        .collect();
                    let at = format!("{field}.types (built-in {name})");
                    types.extend(self.command_type(
                        (name, event),
                        user,
                        &required,
                        &formats,
                        schema,
                        &at,
                    ));
                }
            }
        }
        let dedup_within = self.duration(
            &c.dedup_within,
            format!("{field}.dedup_within"),
            Duration::from_secs(24 * 3600),
        );
        let payload: Vec<usize> = (0..schema.fields().len())
            .filter(|i| !index.contains(i) && *i != schema.time_index())
            .collect();
        let columns = EVENT_COLUMNS
            .iter()
            .map(|c| c.to_string())
            .chain(payload.iter().map(|&i| schema.fields()[i].name.to_string()))
            .collect();
        (self.errors.len() == errors_before).then(|| CommandsSpec {
            name: c.name.get_ref().clone(),
            source: wiring.source,
            id: index[0],
            user: index[1],
            kind: index[2],
            processor: CommandProcessor {
                types: types.into(),
                dedup_within: millis_of(dedup_within),
            },
            payload,
            columns,
            sinks: wiring.sinks,
        })
    }

    /// One command type, its fields looked up in `schema`.
    fn command_type(
        &mut self,
        (name, event): (&str, &str),
        user: UserRule,
        required: &[(&str, std::ops::Range<usize>)],
        formats: &[(&str, &str, std::ops::Range<usize>)],
        schema: &Schema,
        at: &str,
    ) -> Option<CommandType> {
        let errors_before = self.errors.len();
        let lookup = |this: &mut Self, f: &str, span: std::ops::Range<usize>, what: &str| {
            let found = schema.index_of(f);
            if found.is_none() {
                this.error(
                    span,
                    format!("{at}.{what}"),
                    format!("the source schema has no field `{f}`"),
                );
            }
            found
        };
        let required = required
            .iter()
            .filter_map(|(f, span)| {
                lookup(self, f, span.clone(), "required").map(|i| (i, CompactString::from(*f)))
            })
            .collect();
        let mut checked = Vec::new();
        for (f, written, span) in formats {
            let Some(i) = lookup(self, f, span.clone(), "formats") else {
                continue;
            };
            let ty = schema.fields()[i].ty;
            let format = match *written {
                "e164" => Format::E164,
                "email" => Format::Email,
                "positive" => Format::Positive,
                options if options.contains('|') => {
                    Format::OneOf(options.split('|').map(|o| o.trim().into()).collect())
                }
                other => {
                    self.error(
                        span.clone(),
                        format!("{at}.formats.{f}"),
                        format!(
                            "unknown format `{other}`: expected e164, email, positive or a|b|…"
                        ),
                    );
                    continue;
                }
            };
            let numeric = matches!(format, Format::Positive);
            let fits = if numeric {
                matches!(ty, FieldType::Int | FieldType::Float)
            } else {
                ty == FieldType::String
            };
            if !fits {
                self.error(
                    span.clone(),
                    format!("{at}.formats.{f}"),
                    format!(
                        "`{written}` needs a {} field, but `{f}` is of type {ty:?}",
                        if numeric { "numeric" } else { "string" }
                    ),
                );
                continue;
            }
            checked.push((i, CompactString::from(*f), format));
        }
        (self.errors.len() == errors_before).then(|| CommandType {
            name: name.into(),
            event: event.into(),
            user,
            required,
            formats: checked,
        })
    }

    pub(super) fn orchestrators(
        &mut self,
        sections: &[Spanned<raw::OrchestratorSection>],
        names: &Names,
        sources: &[SourceSpec],
    ) -> Vec<OrchestratorSpec> {
        let mut specs = Vec::new();
        for (i, o) in sections.iter().enumerate() {
            let o = o.get_ref();
            let field = format!("orchestrators[{i}]");
            let events = self.source_index(names, &o.events, format!("{field}.events"));
            let alerts = o
                .alerts
                .as_ref()
                .map(|a| self.source_index(names, a, format!("{field}.alerts")));
            let sinks = self.sink_indexes(names, &o.sinks, format!("{field}.sinks"));
            let alerts = alerts.map_or(Some(None), |found| found.map(Some));
            let (Some(events), Some(alerts)) = (events, alerts) else {
                continue;
            };
            specs.extend(self.orchestrator(o, &field, events, alerts, sources, sinks));
        }
        specs
    }

    fn orchestrator(
        &mut self,
        o: &raw::OrchestratorSection,
        field: &str,
        events: usize,
        alerts: Option<usize>,
        sources: &[SourceSpec],
        sinks: Vec<usize>,
    ) -> Option<OrchestratorSpec> {
        let errors_before = self.errors.len();
        // The fields `names` of `source`, each required; the second names the user, an int or
        // a string.
        let fields_of = |this: &mut Self, source: usize, names: &[&str], at: &raw::Text| {
            let schema = &sources[source].schema;
            let what = if names.len() == 3 {
                "user events"
            } else {
                "alerts"
            };
            names
                .iter()
                .enumerate()
                .map(|(k, name)| {
                    let Some(i) = schema.index_of(name) else {
                        this.error(
                            at.span(),
                            field.to_string(),
                            format!(
                                "source `{}` has no field `{name}`, which {what} carry",
                                sources[source].name
                            ),
                        );
                        return 0;
                    };
                    let f = &schema.fields()[i];
                    let user = k == 1 && !matches!(f.ty, FieldType::Int | FieldType::String);
                    if !f.required || user {
                        this.error(
                            at.span(),
                            field.to_string(),
                            format!(
                                "field `{name}` of source `{}` must be required{}",
                                sources[source].name,
                                if k == 1 {
                                    " and an int or a string"
                                } else {
                                    ""
                                }
                            ),
                        );
                    }
                    i
                })
                .collect::<Vec<_>>()
        };
        let event_fields = fields_of(self, events, &["event_id", "user_id", "event"], &o.events);
        let alert_fields = alerts.map(|a| {
            let at = o.alerts.as_ref().expect("alerts named");
            (a, fields_of(self, a, &["alert_id", "account_id"], at))
        });
        let events_schema = &sources[events].schema;
        let contacts = ContactFields(CONTACTS.map(|(name, _)| events_schema.index_of(name)));
        let mut reactions = Vec::new();
        for (kind, r) in o.reactions.get_ref() {
            let at = format!("{field}.reactions.{kind}");
            let (origin, schema) = match (kind.as_str(), alerts) {
                ("alert", Some(a)) => (Origin::Alerts, &sources[a].schema),
                ("alert", None) => {
                    self.error(
                        r.span(),
                        at,
                        "a reaction to `alert` needs the orchestrator's `alerts` source",
                    );
                    continue;
                }
                _ => (Origin::Events, events_schema),
            };
            let r = r.get_ref();
            let channel = r.channel.as_ref().and_then(|c| match c.get_ref().as_str() {
                "sms" | "email" => Some(CompactString::from(c.get_ref().as_str())),
                other => {
                    self.error(
                        c.span(),
                        format!("{at}.channel"),
                        format!("`{other}`: expected sms or email (or leave it out for the user's preferred channel)"),
                    );
                    None
                }
            });
            let subject = r
                .subject
                .as_ref()
                .map(|s| self.template(s, schema, format!("{at}.subject")));
            let text = self.template(&r.text, schema, format!("{at}.text"));
            reactions.push(Reaction {
                origin,
                kind: kind.as_str().into(),
                channel,
                subject,
                text,
            });
        }
        if o.reactions.get_ref().is_empty() {
            self.error(
                o.reactions.span(),
                format!("{field}.reactions"),
                "no reactions: add e.g. `UserRegistered = { text = \"Welcome, {name}!\" }`",
            );
        }
        (self.errors.len() == errors_before).then(|| OrchestratorSpec {
            name: o.name.get_ref().clone(),
            events: EventFields {
                source: events,
                event_id: event_fields[0],
                user_id: event_fields[1],
                event: event_fields[2],
            },
            alerts: alert_fields.map(|(source, f)| AlertFields {
                source,
                alert_id: f[0],
                account_id: f[1],
            }),
            orchestrator: Orchestrator {
                contacts,
                reactions: Arc::from(reactions),
            },
            sinks,
        })
    }

    /// A template: `{name}` is a contact detail of the user (name, phone, email, channel), else a
    /// field of `schema`.
    fn template(&mut self, text: &raw::Text, schema: &Schema, field: String) -> Template {
        let mut parts = Vec::new();
        let mut rest = text.get_ref().as_str();
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].into()));
            }
            let Some(close) = rest[open..].find('}') else {
                self.error(text.span(), field, "a `{` without its `}`");
                return Template(parts);
            };
            let name = rest[open + 1..open + close].trim();
            // Contact details come from the user's profile, which the event itself has updated.
            match CONTACTS.iter().find(|(n, _)| *n == name) {
                Some((_, contact)) => parts.push(Part::Contact(*contact)),
                None => match schema.index_of(name) {
                    Some(i) => parts.push(Part::Field(i)),
                    None => self.error(
                        text.span(),
                        field.clone(),
                        format!(
                            "`{{{name}}}` is neither a field of the source nor one of the user's \
                             contact details (name, phone, email, channel)"
                        ),
                    ),
                },
            }
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.into()));
        }
        Template(parts)
    }
}

/// `int or string`, for messages.
fn kinds(types: &[FieldType]) -> String {
    types
        .iter()
        .map(|t| format!("{t:?}").to_lowercase())
        .collect::<Vec<_>>()
        .join(" or ")
}
