//! Validation of `[[commands]]` and `[[orchestrators]]` sections: command types, formats and
//! fields; reactions and their templates.

use std::sync::Arc;
use std::time::Duration;

use compact_str::CompactString;

use super::{Checker, CommandsSpec, EVENT_COLUMNS, OrchestratorSpec, SourceSpec, raw};
use crate::operators::command::{CommandProcessor, CommandType, Format, UserRule};
use crate::operators::orchestrate::{
    Contact, ContactFields, Orchestrator, Origin, Part, Reaction, Template,
};
use crate::record::{FieldType, Schema};

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
        source: usize,
        schema: &Schema,
        sinks: Vec<usize>,
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
            source,
            id: index[0],
            user: index[1],
            kind: index[2],
            processor: CommandProcessor {
                types: types.into(),
                dedup_within: dedup_within.as_millis() as u64,
            },
            payload,
            columns,
            sinks,
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

    pub(super) fn orchestrator(
        &mut self,
        o: &raw::OrchestratorSection,
        field: &str,
        events: usize,
        alerts: Option<usize>,
        sources: &[SourceSpec],
        sinks: Vec<usize>,
    ) -> Option<OrchestratorSpec> {
        let errors_before = self.errors.len();
        let fields_of = |this: &mut Self, source: usize, names: &[&str], at: &raw::Text| {
            let schema = &sources[source].schema;
            names
                .iter()
                .map(|name| {
                    schema.index_of(name).unwrap_or_else(|| {
                        this.error(
                            at.span(),
                            field.to_string(),
                            format!(
                                "source `{}` has no field `{name}`, which {} carry",
                                sources[source].name,
                                if names.len() == 3 {
                                    "user events"
                                } else {
                                    "alerts"
                                }
                            ),
                        );
                        0
                    })
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
            events: (events, [event_fields[0], event_fields[1], event_fields[2]]),
            alerts: alert_fields.map(|(a, f)| (a, [f[0], f[1]])),
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
