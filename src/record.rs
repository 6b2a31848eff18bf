//! Events as records: the compact, schema-driven [`Record`] that user-defined jobs carry, the
//! [`Event`] envelope that stamps every datum with its event time and watermark, and the
//! [`DeadLetter`] that bad input becomes.

use std::hash::{Hash, Hasher};

use compact_str::CompactString;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

/// One datum in flight, stamped by its source.
///
/// `time` is the exact event time in epoch milliseconds. `frontier` is the watermark of the
/// record's partition plus one, as it stood just before this record: operators decide lateness by
/// it (a window `[s, e)` is closed for this record when `frontier >= e`), so the late set never
/// depends on batching, scheduling or the number of workers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event<D> {
    /// Event time, epoch milliseconds.
    pub time: u64,
    /// The partition's watermark + 1 just before this record.
    pub frontier: u64,
    /// The payload.
    pub data: D,
}

/// A typed field value.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Value {
    /// Absent or JSON `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A 64-bit signed integer (also used for timestamps, in epoch milliseconds).
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// A string; short strings are stored inline.
    Str(CompactString),
}

impl Value {
    /// The value as a float, for numeric aggregates; `None` for non-numbers.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// Writes the value as a JSON literal.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Value::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
            Value::Float(f) if f.is_finite() => {
                out.extend_from_slice(ryu::Buffer::new().format_finite(*f).as_bytes())
            }
            Value::Float(_) => out.extend_from_slice(b"null"),
            Value::Str(s) => {
                serde_json::to_writer(&mut *out, s.as_str()).expect("writing to a Vec cannot fail")
            }
        }
    }

    /// Writes the value as a CSV field (quoted only where needed).
    pub fn write_csv(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => {}
            Value::Str(s) if s.contains([',', '"', '\n', '\r']) => {
                out.push(b'"');
                out.extend_from_slice(s.replace('"', "\"\"").as_bytes());
                out.push(b'"');
            }
            Value::Str(s) => out.extend_from_slice(s.as_bytes()),
            other => other.write_json(out),
        }
    }
}

impl Value {
    /// A total order over values (by kind, then value; floats by IEEE total order), for
    /// ordering records deterministically.
    pub fn total_cmp(&self, other: &Value) -> std::cmp::Ordering {
        let rank = |v: &Value| match v {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) => 2,
            Value::Float(_) => 3,
            Value::Str(_) => 4,
        };
        match (self, other) {
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::Float(a), Value::Float(b)) => a.total_cmp(b),
            (Value::Str(a), Value::Str(b)) => a.cmp(b),
            (a, b) => rank(a).cmp(&rank(b)),
        }
    }

    /// The value as text, for messages and templates (`null` for Null).
    pub fn to_text(&self) -> CompactString {
        match self {
            Value::Str(s) => s.clone(),
            other => {
                let mut out = Vec::new();
                other.write_json(&mut out);
                CompactString::from_utf8(out).expect("JSON literals are UTF-8")
            }
        }
    }
}

/// Orders records field by field with [`Value::total_cmp`].
pub fn record_cmp(a: &[Value], b: &[Value]) -> std::cmp::Ordering {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.total_cmp(y))
        .find(|o| o.is_ne())
        .unwrap_or_else(|| a.len().cmp(&b.len()))
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            (Value::Str(a), Value::Str(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Value::Null => state.write_u8(0),
            Value::Bool(b) => state.write_u8(1 + *b as u8),
            Value::Int(i) => state.write_i64(*i),
            Value::Float(f) => state.write_u64(f.to_bits()),
            Value::Str(s) => state.write(s.as_bytes()),
        }
    }
}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => a.partial_cmp(b),
            (Value::Str(a), Value::Str(b)) => a.partial_cmp(b),
            (Value::Bool(a), Value::Bool(b)) => a.partial_cmp(b),
            (a, b) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        }
    }
}

/// A decoded event of a user-defined job: one value per schema field, in schema order.
pub type Record = Box<[Value]>;

/// A grouping key: the values of the group-by fields (inline for one field, the common case,
/// which keeps window state small).
pub type Key = SmallVec<[Value; 1]>;

/// The type of a schema field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// A JSON integer.
    Int,
    /// A JSON number.
    Float,
    /// A JSON string.
    String,
    /// A JSON boolean.
    Bool,
    /// Event time: an integer of epoch milliseconds, or an RFC 3339 string.
    Timestamp,
}

/// A field of a [`Schema`].
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    /// The JSON member name.
    pub name: CompactString,
    /// Its type.
    pub ty: FieldType,
    /// Whether a record without it is dead-lettered (otherwise it becomes `Null`).
    pub required: bool,
}

/// The fields a job reads from each event, and which one is event time.
///
/// Members of the JSON object that the schema does not name are skipped while decoding.
#[derive(Clone, Debug, PartialEq)]
pub struct Schema {
    fields: Vec<Field>,
    time: usize,
}

impl Schema {
    /// A schema whose event time is the field named `time_field`, which must be among `fields`
    /// and be an integer or timestamp.
    pub fn new(fields: Vec<Field>, time_field: &str) -> Result<Schema, String> {
        let time = fields
            .iter()
            .position(|f| f.name == time_field)
            .ok_or_else(|| format!("event-time field `{time_field}` is not in the schema"))?;
        if !matches!(fields[time].ty, FieldType::Int | FieldType::Timestamp) {
            return Err(format!(
                "event-time field `{time_field}` must be of type `timestamp` or `int`"
            ));
        }
        Ok(Schema { fields, time })
    }

    /// The fields, in record order.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// The index of the event-time field.
    pub fn time_index(&self) -> usize {
        self.time
    }

    /// The record index of the field named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }
}

/// An identifier (a card account, a user): a number or a string, as the source has it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Id {
    /// A numeric id.
    Int(i64),
    /// A textual id.
    Str(CompactString),
}

impl Id {
    /// The id in a field value: an int or a string.
    pub fn of(value: &Value) -> Option<Id> {
        match value {
            Value::Int(n) => Some(Id::Int(*n)),
            Value::Str(s) => Some(Id::Str(s.clone())),
            _ => None,
        }
    }

    /// The id as a field value.
    pub fn to_value(&self) -> Value {
        match self {
            Id::Int(i) => Value::Int(*i),
            Id::Str(s) => Value::Str(s.clone()),
        }
    }
}

/// A card payment, as the fraud rules read it. Ordered by id first, which orders simultaneous
/// payments of an account deterministically.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CardPayment {
    /// The payment (transaction) id.
    pub id: CompactString,
    /// The card account.
    pub account: Id,
    /// Amount in minor units.
    pub amount: i64,
    /// The merchant.
    pub merchant: CompactString,
    /// Where it was made.
    pub country: CompactString,
}

/// Input that could not become an event, with where it came from and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// What was wrong with it.
    pub error: String,
    /// The source topic (or file path) it was read from.
    pub topic: String,
    /// The source partition (or file split).
    pub partition: i32,
    /// Its offset in the partition (or line number in the file).
    pub offset: i64,
    /// The raw bytes.
    pub payload: Vec<u8>,
}
