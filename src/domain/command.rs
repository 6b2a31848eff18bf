//! The command processor, a [`Pattern`] per user: validates each command (its type, required
//! fields, formats, whether the user exists) in event-time order and reports the event it causes
//! or why it is rejected; a command id seen before (within the dedup span) causes nothing.
//!
//! Run it with `stream.detect(detection, |c: &Command| c.user.clone(), processor)`.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::sync::Arc;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use crate::operators::pattern::Pattern;
use crate::record::{Id, Record, Value, record_cmp};

/// The event a rejected command causes.
pub const REJECTED: &str = "CommandRejected";

/// A command as read from its source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// The command id: a repeated id is a duplicate.
    pub id: CompactString,
    /// The user it is for.
    pub user: Id,
    /// Its type, e.g. `RegisterUser`.
    pub kind: CompactString,
    /// The whole record, for its fields.
    pub record: Record,
}

impl Command {
    /// The command in `record`, whose command id, user id and type are at the indexes `fields`.
    /// The job loader checked that the user id is an int or a string.
    pub fn from_record(record: Record, [id, user, kind]: [usize; 3]) -> Self {
        Command {
            id: record[id].to_text(),
            user: Id::of(&record[user]).expect("checked by the job loader"),
            kind: record[kind].to_text(),
            record,
        }
    }
}

impl Eq for Command {}

impl PartialOrd for Command {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// By id, then type, then fields: simultaneous commands of a user are taken in this order.
impl Ord for Command {
    fn cmp(&self, other: &Self) -> Ordering {
        (&self.id, &self.kind)
            .cmp(&(&other.id, &other.kind))
            .then_with(|| record_cmp(&self.record, &other.record))
    }
}

/// What a command type demands of its user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserRule {
    /// The user must not exist yet, and exists afterwards (registration).
    New,
    /// The user must exist.
    Existing,
    /// Either.
    Any,
}

/// A format a field's value must have.
#[derive(Clone, Debug, PartialEq)]
pub enum Format {
    /// An E.164 phone number: `+`, then 2 to 15 digits, the first not 0.
    E164,
    /// An e-mail address.
    Email,
    /// A number above zero.
    Positive,
    /// One of these strings.
    OneOf(Vec<CompactString>),
}

impl Format {
    /// Why `value` does not have this format, if it does not.
    pub fn violation(&self, name: &str, value: &Value) -> Option<String> {
        let ok = match (self, value) {
            (Format::E164, Value::Str(s)) => s.strip_prefix('+').is_some_and(|digits| {
                (2..=15).contains(&digits.len())
                    && digits.bytes().all(|b| b.is_ascii_digit())
                    && !digits.starts_with('0')
            }),
            (Format::Email, Value::Str(s)) => email_address::EmailAddress::is_valid(s),
            (Format::Positive, v) => v.as_f64().is_some_and(|x| x > 0.0),
            (Format::OneOf(options), Value::Str(s)) => options.iter().any(|o| o == s),
            _ => false,
        };
        (!ok).then(|| {
            let shown = value.to_text();
            match self {
                Format::E164 => format!("`{name}` is not an E.164 phone number: `{shown}`"),
                Format::Email => format!("`{name}` is not an e-mail address: `{shown}`"),
                Format::Positive => format!("`{name}` must be positive, not `{shown}`"),
                Format::OneOf(options) => {
                    format!(
                        "`{name}` must be one of {}, not `{shown}`",
                        options.join(", ")
                    )
                }
            }
        })
    }
}

/// A command type: the event it causes and what it demands.
#[derive(Clone, Debug, PartialEq)]
pub struct CommandType {
    /// Its name, e.g. `RegisterUser`.
    pub name: CompactString,
    /// The event an accepted command causes, e.g. `UserRegistered`.
    pub event: CompactString,
    /// What it demands of the user.
    pub user: UserRule,
    /// Fields that must be present: (record index, name).
    pub required: Vec<(usize, CompactString)>,
    /// Fields with a format, checked when present: (record index, name, format).
    pub formats: Vec<(usize, CompactString, Format)>,
}

/// The processor's settings.
#[derive(Clone, Debug)]
pub struct CommandProcessor {
    /// The known command types.
    pub types: Arc<[CommandType]>,
    /// A command id seen within this span (ms of event time) before is a duplicate.
    pub dedup_within: u64,
}

/// What became of a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// It causes this event.
    Accepted(CompactString),
    /// It is rejected, for this reason.
    Rejected(String),
}

/// A user as the processor knows it: whether it exists, and the command ids seen lately.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct UserState {
    exists: bool,
    seen: VecDeque<(u64, CompactString)>,
}

impl CommandProcessor {
    fn validate(&self, command: &Command, exists: bool) -> Result<&CommandType, String> {
        let kind = self
            .types
            .iter()
            .find(|t| t.name == command.kind)
            .ok_or_else(|| format!("unknown command type `{}`", command.kind))?;
        for (i, name) in &kind.required {
            if matches!(command.record[*i], Value::Null) {
                return Err(format!("missing required field `{name}`"));
            }
        }
        for (i, name, format) in &kind.formats {
            let value = &command.record[*i];
            if !matches!(value, Value::Null)
                && let Some(why) = format.violation(name, value)
            {
                return Err(why);
            }
        }
        match (kind.user, exists) {
            (UserRule::New, true) => Err(format!("user `{}` already exists", user(command))),
            (UserRule::Existing, false) => Err(format!("user `{}` does not exist", user(command))),
            _ => Ok(kind),
        }
    }
}

fn user(command: &Command) -> CompactString {
    command.user.to_value().to_text()
}

impl Pattern<Command> for CommandProcessor {
    type State = UserState;
    type Match = (Command, Outcome);

    fn advance(
        &self,
        state: &mut UserState,
        time: u64,
        commands: &[Command],
        emit: &mut impl FnMut((Command, Outcome)),
    ) {
        while state
            .seen
            .front()
            .is_some_and(|(t, _)| t.saturating_add(self.dedup_within) <= time)
        {
            state.seen.pop_front();
        }
        for command in commands {
            if state.seen.iter().any(|(_, id)| *id == command.id) {
                continue;
            }
            state.seen.push_back((time, command.id.clone()));
            let outcome = match self.validate(command, state.exists) {
                Ok(kind) => {
                    if kind.user == UserRule::New {
                        state.exists = true;
                    }
                    Outcome::Accepted(kind.event.clone())
                }
                Err(reason) => Outcome::Rejected(reason),
            };
            emit((command.clone(), outcome));
        }
    }

    fn horizon(&self) -> u64 {
        self.dedup_within
    }

    /// Known users are kept for good; the rest once their command ids have aged out.
    fn expired(&self, state: &UserState, frontier: u64) -> bool {
        !state.exists
            && state
                .seen
                .back()
                .is_none_or(|(t, _)| t.saturating_add(self.dedup_within) <= frontier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn processor() -> CommandProcessor {
        CommandProcessor {
            types: vec![
                CommandType {
                    name: "RegisterUser".into(),
                    event: "UserRegistered".into(),
                    user: UserRule::New,
                    required: vec![(0, "phone".into())],
                    formats: vec![
                        (0, "phone".into(), Format::E164),
                        (1, "email".into(), Format::Email),
                    ],
                },
                CommandType {
                    name: "InitiatePurchase".into(),
                    event: "PurchaseInitiated".into(),
                    user: UserRule::Existing,
                    required: vec![(2, "amount".into())],
                    formats: vec![(2, "amount".into(), Format::Positive)],
                },
            ]
            .into(),
            dedup_within: 1000,
        }
    }

    fn command(id: &str, kind: &str, fields: [Value; 3]) -> Command {
        Command {
            id: id.into(),
            user: Id::Int(1),
            kind: kind.into(),
            record: Box::new(fields),
        }
    }

    #[test]
    fn validates_in_order_and_drops_duplicates() {
        let p = processor();
        let mut state = UserState::default();
        let mut out = Vec::new();
        let s = |x: &str| Value::Str(x.into());
        let feed = [
            (
                1,
                command(
                    "c1",
                    "InitiatePurchase",
                    [Value::Null, Value::Null, Value::Int(5)],
                ),
            ),
            (
                2,
                command(
                    "c2",
                    "RegisterUser",
                    [s("+4412345"), s("not-an-address"), Value::Null],
                ),
            ),
            (
                3,
                command(
                    "c3",
                    "RegisterUser",
                    [s("4412345"), Value::Null, Value::Null],
                ),
            ),
            (
                4,
                command(
                    "c4",
                    "RegisterUser",
                    [s("+4412345"), s("a@b.example"), Value::Null],
                ),
            ),
            (
                5,
                command(
                    "c4",
                    "RegisterUser",
                    [s("+4412345"), s("a@b.example"), Value::Null],
                ),
            ),
            (
                6,
                command(
                    "c5",
                    "InitiatePurchase",
                    [Value::Null, Value::Null, Value::Int(-5)],
                ),
            ),
            (
                7,
                command(
                    "c6",
                    "InitiatePurchase",
                    [Value::Null, Value::Null, Value::Int(5)],
                ),
            ),
            (
                8,
                command("c7", "Teleport", [Value::Null, Value::Null, Value::Null]),
            ),
            (
                9,
                command(
                    "c8",
                    "RegisterUser",
                    [s("+4412345"), Value::Null, Value::Null],
                ),
            ),
        ];
        for (t, c) in feed {
            p.advance(&mut state, t, &[c], &mut |(c, o)| out.push((c.id, o)));
        }
        let rejected = |r: &str| Outcome::Rejected(r.into());
        assert_eq!(
            out,
            [
                ("c1".into(), rejected("user `1` does not exist")),
                (
                    "c2".into(),
                    rejected("`email` is not an e-mail address: `not-an-address`")
                ),
                (
                    "c3".into(),
                    rejected("`phone` is not an E.164 phone number: `4412345`")
                ),
                ("c4".into(), Outcome::Accepted("UserRegistered".into())),
                ("c5".into(), rejected("`amount` must be positive, not `-5`")),
                ("c6".into(), Outcome::Accepted("PurchaseInitiated".into())),
                ("c7".into(), rejected("unknown command type `Teleport`")),
                ("c8".into(), rejected("user `1` already exists")),
            ]
        );
    }
}
