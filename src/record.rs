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

    /// Appends the value's sort key: bytes that compare, as byte strings, in the order values
    /// sort in, so a sort compares keys without knowing their kinds. No value's key is a proper
    /// prefix of another's, so the keys of several values written one after the other compare
    /// value by value. The order:
    /// - across kinds, null < bool < number < string;
    /// - within a kind, as [`Value::partial_cmp`] orders values: false < true, strings by their
    ///   bytes (a string before its extensions), numbers by value (-0.0 equal to 0.0);
    /// - ints and floats by their exact values, against each other too (an int is equal to the
    ///   float of the same value, and ints past 2^53 keep their order even where their floats
    ///   are equal); NaN is after every number and equal to every NaN.
    pub fn write_sort_key(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.push(0),
            Value::Bool(b) => out.extend_from_slice(&[1, u8::from(*b)]),
            Value::Int(i) => {
                let float = *i as f64;
                // Past 2^53 the float may be rounded, by at most 2^9.
                let lost = i128::from(*i) - float as i128;
                write_number_sort_key(float, lost as i16, out)
            }
            Value::Float(f) => write_number_sort_key(*f, 0, out),
            Value::Str(s) => {
                out.push(3);
                // A 0 byte becomes 0 0xFF and the string ends with 0 0, which sorts before any
                // byte that could follow in a longer string.
                for &byte in s.as_bytes() {
                    out.push(byte);
                    if byte == 0 {
                        out.push(0xFF);
                    }
                }
                out.extend_from_slice(&[0, 0]);
            }
        }
    }
}

/// From 2^53 on, not every int is a float: an int's float may be rounded to a neighbour's.
const INTS_ROUNDED_FROM: f64 = (1u64 << 53) as f64;

/// Appends the sort key of the number `value + lost` (`lost` being what an int lost as a float):
/// 2, then the float's bits as big-endian bytes that compare as floats do (a negative float's
/// bits inverted, a positive one's sign bit set, every NaN as all ones, after infinity), then,
/// for floats from 2^53 on, `lost`, offset to compare as unsigned.
fn write_number_sort_key(value: f64, lost: i16, out: &mut Vec<u8>) {
    let bits = if value == 0.0 { 0 } else { value.to_bits() }; // -0.0 as 0.0
    let ordered = if value.is_nan() {
        u64::MAX
    } else if bits >> 63 == 1 {
        !bits
    } else {
        bits | 1 << 63
    };
    out.push(2);
    out.extend_from_slice(&ordered.to_be_bytes());
    if value.abs() >= INTS_ROUNDED_FROM {
        out.extend_from_slice(&(lost as u16 ^ 0x8000).to_be_bytes());
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
    /// Bit `n` is set when a field's name is `n` bytes long (63 for any longer): most members a
    /// schema does not name are told apart by their length alone.
    name_lengths: u64,
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
        let name_lengths = fields
            .iter()
            .fold(0, |mask, f| mask | 1 << f.name.len().min(63));
        Ok(Schema {
            fields,
            time,
            name_lengths,
        })
    }

    /// [`Schema::new`] for fields written out as `(name, type, required)`, as code that builds
    /// a dataflow by hand (and tests) declare them.
    ///
    /// ```
    /// use eddy::record::{FieldType, Schema};
    /// let schema = Schema::of(&[("id", FieldType::Int, true), ("ts", FieldType::Timestamp, true)], "ts")?;
    /// assert_eq!(schema.index_of("ts"), Some(1));
    /// # Ok::<(), String>(())
    /// ```
    pub fn of(fields: &[(&str, FieldType, bool)], time_field: &str) -> Result<Schema, String> {
        let fields = fields.iter().map(|&(name, ty, required)| Field {
            name: name.into(),
            ty,
            required,
        });
        Schema::new(fields.collect(), time_field)
    }

    /// The index of the field named `name`, if there is one.
    #[inline]
    pub fn field_index(&self, name: &[u8]) -> Option<usize> {
        if self.name_lengths & 1 << name.len().min(63) == 0 {
            return None;
        }
        self.fields.iter().position(|f| f.name.as_bytes() == name)
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
    /// The raw bytes, cut to [`Payload::KEPT`].
    pub payload: Payload,
}

/// The raw bytes of bad input as a dead letter keeps them: all of them up to [`Payload::KEPT`]
/// bytes; of longer input its first bytes, with the whole input's length and SHA-256, so that a
/// dead letter never costs more than a set size however large the input was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// The input, or its first [`Payload::KEPT`] bytes.
    pub kept: Vec<u8>,
    /// The input's length in bytes.
    pub len: u64,
    /// When `kept` is only a prefix: the SHA-256 of the whole input.
    pub sha256: Option<[u8; 32]>,
}

impl Payload {
    /// The most bytes of its input a dead letter keeps: events are far shorter, so a dead
    /// letter normally holds its input whole and can be replayed once the cause is fixed.
    pub const KEPT: usize = 64 << 10;

    /// The payload of `input`.
    pub fn of(input: &[u8]) -> Payload {
        let mut payload = PayloadBuilder::default();
        payload.push(input);
        payload.finish()
    }

    /// The SHA-256 of the whole input as lowercase hex, when `kept` is only a prefix.
    pub fn sha256_hex(&self) -> Option<String> {
        use std::fmt::Write;
        self.sha256.map(|hash| {
            hash.iter()
                .fold(String::with_capacity(64), |mut hex, byte| {
                    write!(hex, "{byte:02x}").expect("writing to a String cannot fail");
                    hex
                })
        })
    }
}

/// Makes a [`Payload`] of input that arrives in pieces (a line read past without holding it),
/// keeping its first bytes and hashing all of it.
#[derive(Default)]
pub struct PayloadBuilder {
    kept: Vec<u8>,
    len: u64,
    hasher: sha2::Sha256,
}

impl PayloadBuilder {
    /// Adds the next piece of the input.
    pub fn push(&mut self, piece: &[u8]) {
        use sha2::Digest;
        let room = Payload::KEPT - self.kept.len();
        self.kept.extend_from_slice(&piece[..piece.len().min(room)]);
        self.len += piece.len() as u64;
        self.hasher.update(piece);
    }

    /// The payload of everything pushed.
    pub fn finish(self) -> Payload {
        use sha2::Digest;
        let cut = self.len > self.kept.len() as u64;
        Payload {
            sha256: cut.then(|| self.hasher.finalize().into()),
            kept: self.kept,
            len: self.len,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Ordering::{self, Equal, Less};

    use super::*;

    /// The order [`Value::write_sort_key`] documents, written out directly.
    fn documented_cmp(a: &Value, b: &Value) -> Ordering {
        let kind = |v: &Value| match v {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) | Value::Float(_) => 2,
            Value::Str(_) => 3,
        };
        match (a, b) {
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::Int(i), Value::Float(f)) => int_cmp_float(*i, *f),
            (Value::Float(f), Value::Int(i)) => int_cmp_float(*i, *f).reverse(),
            (Value::Float(a), Value::Float(b)) => match (a.is_nan(), b.is_nan()) {
                (false, false) => a.partial_cmp(b).unwrap(),
                (a_nan, b_nan) => a_nan.cmp(&b_nan),
            },
            (Value::Str(a), Value::Str(b)) => a.as_bytes().cmp(b.as_bytes()),
            (a, b) => kind(a).cmp(&kind(b)),
        }
    }

    /// An int against a float, exactly: against the float's floor, then its fraction.
    fn int_cmp_float(int: i64, float: f64) -> Ordering {
        if float.is_nan() {
            return Less;
        }
        let floor = float.floor();
        let fraction = if float > floor { Less } else { Equal };
        i128::from(int).cmp(&(floor as i128)).then(fraction)
    }

    /// A small deterministic generator (splitmix64).
    fn next(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value of any kind, often one that is equal or close to others: small numbers, ints and
    /// floats past 2^53 that round to each other, NaN, signed zeros, infinities, and short
    /// strings of a few bytes (0 among them), prefixes of each other.
    fn random_value(state: &mut u64) -> Value {
        let r = next(state);
        let pick = |choices: &[Value]| choices[(r >> 8) as usize % choices.len()].clone();
        let big = 1i64 << (53 + (r >> 8) % 10);
        let near = (r >> 16) as i64 % 5 - 2;
        match r % 10 {
            0 => pick(&[Value::Null, Value::Bool(false), Value::Bool(true)]),
            1 => Value::Int(next(state) as i64),
            2 => Value::Int((r >> 8) as i64 % 7 - 3),
            3 => Value::Int(if r & 1 << 40 == 0 {
                big + near
            } else {
                near - big
            }),
            4 => pick(&[
                Value::Int(i64::MIN),
                Value::Int(i64::MAX),
                Value::Float(i64::MIN as f64),
                Value::Float(i64::MAX as f64),
                Value::Float(f64::NAN),
                Value::Float(-f64::NAN),
                Value::Float(f64::INFINITY),
                Value::Float(f64::NEG_INFINITY),
                Value::Float(0.0),
                Value::Float(-0.0),
                Value::Float(f64::MIN_POSITIVE),
            ]),
            5 => Value::Float(f64::from_bits(next(state))),
            6 => Value::Float(((r >> 8) as i64 % 13 - 6) as f64 / 4.0),
            7 => Value::Float(big as f64 * if r & 1 << 40 == 0 { 1.0 } else { -1.0 }),
            _ => {
                let len = (r >> 8) as usize % 4;
                let text: String = (0..len)
                    .map(|_| ['\0', 'a', 'b', 'é'][next(state) as usize % 4])
                    .collect();
                Value::Str(text.into())
            }
        }
    }

    fn sort_key(values: &[Value]) -> Vec<u8> {
        let mut key = Vec::new();
        values.iter().for_each(|v| v.write_sort_key(&mut key));
        key
    }

    /// Sort keys compare as the documented order has it, which for values of one kind is
    /// `partial_cmp`'s.
    #[test]
    fn sort_keys_order_values_as_documented() {
        let mut state = 1;
        let values: Vec<Value> = (0..600).map(|_| random_value(&mut state)).collect();
        let keys: Vec<Vec<u8>> = values
            .iter()
            .map(|v| sort_key(std::slice::from_ref(v)))
            .collect();
        for (a, a_key) in values.iter().zip(&keys) {
            for (b, b_key) in values.iter().zip(&keys) {
                let documented = documented_cmp(a, b);
                assert_eq!(a_key.cmp(b_key), documented, "{a:?} against {b:?}");
                let same_kind = std::mem::discriminant(a) == std::mem::discriminant(b);
                if let (true, Some(partial)) = (same_kind, a.partial_cmp(b)) {
                    assert_eq!(partial, documented, "{a:?} against {b:?}");
                }
            }
        }
    }

    /// The keys of several values compare value by value, whatever their lengths: a first value
    /// that is a prefix of another's, or equal to it, leaves the order to the second.
    #[test]
    fn sort_keys_order_columns_one_after_another() {
        let a_2 = sort_key(&[Value::Str("a".into()), Value::Int(2)]);
        let ab_1 = sort_key(&[Value::Str("ab".into()), Value::Int(1)]);
        assert!(a_2 < ab_1);
        let firsts = ["", "a", "a\0", "ab"].map(|s| Value::Str(s.into()));
        let firsts = [
            &firsts[..],
            &[Value::Null, Value::Int(1), Value::Float(1.0)],
        ]
        .concat();
        let mut state = 2;
        let rows: Vec<[Value; 2]> = (0..140)
            .map(|i| [firsts[i % firsts.len()].clone(), random_value(&mut state)])
            .collect();
        for a in &rows {
            for b in &rows {
                let documented = documented_cmp(&a[0], &b[0]).then(documented_cmp(&a[1], &b[1]));
                assert_eq!(
                    sort_key(a).cmp(&sort_key(b)),
                    documented,
                    "{a:?} against {b:?}"
                );
            }
        }
    }
}
