//! Schema-driven JSON decoding: one pass over the bytes straight into a [`Record`], skipping the
//! members the schema does not name, with no intermediate `serde_json::Value` tree.
//!
//! Events are nearly always flat objects of numbers and plain strings, so a scanner for exactly
//! that shape reads them first. It accepts only what it can check completely (strict number
//! grammar, strings without escapes, no nesting) and hands anything else to serde_json, which
//! then decides, so both paths accept the same inputs and report errors the same way.
//!
//! A payload must be valid JSON throughout, members the schema does not name included: both
//! paths refuse invalid UTF-8 and numbers out of `f64`'s range wherever they stand, as
//! `serde_json::Value` does.

use std::fmt;

use compact_str::CompactString;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use crate::record::{FieldType, Record, Schema, Value};

/// Why a payload did not decode; the message names the field and, for syntax errors, the column.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

/// The latest event time, epoch milliseconds: 9999-12-30T22:00:00.999Z, the latest time an RFC
/// 3339 event time can name (with any offset). Later ones are dead-lettered, so that an event
/// time plus the durations a job file may set (see `job::MAX_DURATION`) stays far inside `i64`
/// milliseconds.
pub const MAX_EVENT_TIME: u64 = 253_402_207_200_999;

impl Schema {
    /// Decodes one JSON object into a record and its event time (epoch milliseconds).
    pub fn decode(&self, bytes: &[u8]) -> Result<(u64, Record), DecodeError> {
        let mut values = vec![Value::Null; self.fields().len()];
        if flat::scan(self, bytes, &mut values).is_none() {
            values.fill(Value::Null);
            self.decode_with_serde(bytes, &mut values)?;
        }
        self.finish(values)
    }

    fn decode_with_serde(&self, bytes: &[u8], values: &mut [Value]) -> Result<(), DecodeError> {
        let mut current = None;
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let seed = ObjectSeed {
            schema: self,
            values,
            current: &mut current,
        };
        let parsed = seed.deserialize(&mut de).and_then(|()| de.end());
        parsed.map_err(|err| {
            DecodeError(match current {
                Some(i) => format!("field `{}`: {err}", self.fields()[i].name),
                None => format!("invalid JSON: {err}"),
            })
        })
    }

    /// Checks required fields and extracts the event time.
    fn finish(&self, values: Vec<Value>) -> Result<(u64, Record), DecodeError> {
        for (field, value) in self.fields().iter().zip(&values) {
            if field.required && matches!(value, Value::Null) {
                return Err(DecodeError(format!(
                    "missing required field `{}` (absent or null)",
                    field.name
                )));
            }
        }
        let time = match values[self.time_index()] {
            Value::Int(ms) => match u64::try_from(ms) {
                Ok(ms) if ms <= MAX_EVENT_TIME => ms,
                Ok(_) => {
                    return Err(DecodeError(format!(
                        "field `{}`: event time after 9999-12-30T22:00:00.999Z",
                        self.fields()[self.time_index()].name
                    )));
                }
                Err(_) => {
                    return Err(DecodeError(format!(
                        "field `{}`: event time before 1970",
                        self.fields()[self.time_index()].name
                    )));
                }
            },
            _ => {
                return Err(DecodeError(format!(
                    "missing event-time field `{}`",
                    self.fields()[self.time_index()].name
                )));
            }
        };
        Ok((time, values.into_boxed_slice()))
    }
}

/// The scanner for flat objects of scalars.
mod flat {
    use compact_str::CompactString;

    use crate::record::{FieldType, Schema, Value};

    /// Fills `values` from a flat JSON object, or returns `None` when the input is anything the
    /// scanner does not check completely (the serde path then decides).
    pub(super) fn scan(schema: &Schema, bytes: &[u8], values: &mut [Value]) -> Option<()> {
        let mut at = skip_ws(bytes, 0);
        (bytes.get(at) == Some(&b'{')).then_some(())?;
        at = skip_ws(bytes, at + 1);
        if bytes.get(at) == Some(&b'}') {
            return (skip_ws(bytes, at + 1) == bytes.len()).then_some(());
        }
        loop {
            let (key, next) = plain_string(bytes, at)?;
            at = skip_ws(bytes, next);
            (bytes.get(at) == Some(&b':')).then_some(())?;
            at = skip_ws(bytes, at + 1);
            at = match schema.field_index(key) {
                Some(i) => {
                    let (value, next) = typed_value(schema.fields()[i].ty, bytes, at)?;
                    values[i] = value;
                    next
                }
                None => skip_scalar(bytes, at)?,
            };
            at = skip_ws(bytes, at);
            match bytes.get(at) {
                Some(b',') => at = skip_ws(bytes, at + 1),
                Some(b'}') => return (skip_ws(bytes, at + 1) == bytes.len()).then_some(()),
                _ => return None,
            }
        }
    }

    fn skip_ws(bytes: &[u8], mut at: usize) -> usize {
        while matches!(bytes.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            at += 1;
        }
        at
    }

    /// A string without escapes or control characters starting at `at`: its bytes (valid
    /// UTF-8) and the index after its closing quote. One pass, byte by byte: the names and
    /// values of events are a few bytes long, shorter than a vectorised search pays for.
    fn plain_string(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
        (bytes.get(at) == Some(&b'"')).then_some(())?;
        let rest = &bytes[at + 1..];
        let mut ascii = true;
        for (end, &byte) in rest.iter().enumerate() {
            match byte {
                b'"' => {
                    let s = &rest[..end];
                    if !ascii {
                        std::str::from_utf8(s).ok()?;
                    }
                    return Some((s, at + 1 + end + 1));
                }
                b'\\' | 0..0x20 => return None,
                0x80.. => ascii = false,
                _ => {}
            }
        }
        None
    }

    /// A number by JSON's grammar starting at `at`: the index after it, and whether it has an
    /// exponent.
    fn number(bytes: &[u8], mut at: usize) -> Option<(usize, bool)> {
        let digits = |bytes: &[u8], mut at: usize| {
            let start = at;
            while bytes.get(at).is_some_and(u8::is_ascii_digit) {
                at += 1;
            }
            (at > start).then_some(at)
        };
        if bytes.get(at) == Some(&b'-') {
            at += 1;
        }
        at = match bytes.get(at) {
            Some(b'0') => at + 1,
            Some(b'1'..=b'9') => digits(bytes, at)?,
            _ => return None,
        };
        if bytes.get(at) == Some(&b'.') {
            at = digits(bytes, at + 1)?;
        }
        let exponent = matches!(bytes.get(at), Some(b'e' | b'E'));
        if exponent {
            at += 1;
            if matches!(bytes.get(at), Some(b'+' | b'-')) {
                at += 1;
            }
            at = digits(bytes, at)?;
        }
        Some((at, exponent))
    }

    /// An integer by JSON's grammar starting at `at` that fits an `i64`: its value and the index
    /// after it, read in one pass. `None` for any other number (a fraction, an exponent, `-0`,
    /// which serde_json reads as a float, or too many digits): the serde path decides those.
    fn integer(bytes: &[u8], at: usize) -> Option<(i64, usize)> {
        let negative = bytes.get(at) == Some(&b'-');
        let start = at + usize::from(negative);
        let (mut value, mut end) = (0i64, start);
        while let Some(&digit) = bytes.get(end)
            && digit.is_ascii_digit()
        {
            let digit = i64::from(digit - b'0');
            value = value
                .checked_mul(10)?
                .checked_add(if negative { -digit } else { digit })?;
            end += 1;
        }
        let leading_zero = bytes.get(start) == Some(&b'0') && (end - start > 1 || negative);
        let fraction = matches!(bytes.get(end), Some(b'.' | b'e' | b'E'));
        (end > start && !leading_zero && !fraction).then_some((value, end))
    }

    fn literal(bytes: &[u8], at: usize) -> Option<(Value, usize)> {
        let rest = &bytes[at..];
        if rest.starts_with(b"true") {
            Some((Value::Bool(true), at + 4))
        } else if rest.starts_with(b"false") {
            Some((Value::Bool(false), at + 5))
        } else if rest.starts_with(b"null") {
            Some((Value::Null, at + 4))
        } else {
            None
        }
    }

    /// Skips a scalar (string, number, literal); nested values go to the serde path, and so do
    /// numbers that could be out of range (with an exponent, or longer than any finite `f64`
    /// needs), which serde decides.
    fn skip_scalar(bytes: &[u8], at: usize) -> Option<usize> {
        match bytes.get(at)? {
            b'"' => plain_string(bytes, at).map(|(_, next)| next),
            b'-' | b'0'..=b'9' => {
                let (next, exponent) = number(bytes, at)?;
                (!exponent && next - at <= 300).then_some(next)
            }
            _ => literal(bytes, at).map(|(_, next)| next),
        }
    }

    /// A value of the field's type; mismatches go to the serde path, which reports them.
    fn typed_value(ty: FieldType, bytes: &[u8], at: usize) -> Option<(Value, usize)> {
        match (ty, bytes.get(at)?) {
            (FieldType::Int | FieldType::Timestamp, b'-' | b'0'..=b'9') => {
                let (value, next) = integer(bytes, at)?;
                Some((Value::Int(value), next))
            }
            (FieldType::Float, b'-' | b'0'..=b'9') => {
                let (next, _) = number(bytes, at)?;
                let text = std::str::from_utf8(&bytes[at..next]).ok()?;
                // Out of range (`1e400`): the serde path reports it.
                let value = text.parse::<f64>().ok().filter(|f| f.is_finite())?;
                Some((Value::Float(value), next))
            }
            (FieldType::String, b'"') => {
                let (s, next) = plain_string(bytes, at)?;
                let s = std::str::from_utf8(s).expect("checked by plain_string");
                Some((Value::Str(CompactString::from(s)), next))
            }
            (FieldType::Bool, b't' | b'f') | (_, b'n') => literal(bytes, at),
            _ => None,
        }
    }
}

/// Visits the top-level object, filling `values` by schema position.
struct ObjectSeed<'a> {
    schema: &'a Schema,
    values: &'a mut [Value],
    /// The field being decoded, so that an error can name it.
    current: &'a mut Option<usize>,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(index) = map.next_key_seed(KeySeed(self.schema))? {
            match index {
                Some(i) => {
                    *self.current = Some(i);
                    self.values[i] = map.next_value_seed(ValueSeed(self.schema.fields()[i].ty))?;
                    *self.current = None;
                }
                None => {
                    map.next_value::<Unnamed>()?;
                }
            }
        }
        Ok(())
    }
}

/// The value of a member the schema does not name, parsed as fully as a named one and dropped:
/// serde_json's `IgnoredAny` would skip strings without checking their UTF-8 and numbers without
/// checking their range, accepting lines that are not JSON.
struct Unnamed;

impl<'de> Deserialize<'de> for Unnamed {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Unnamed, D::Error> {
        d.deserialize_any(Unnamed)
    }
}

impl<'de> Visitor<'de> for Unnamed {
    type Value = Unnamed;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Unnamed, E> {
        Ok(Unnamed)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Unnamed, E> {
        Ok(Unnamed)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Unnamed, E> {
        Ok(Unnamed)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Unnamed, E> {
        Ok(Unnamed)
    }

    fn visit_str<E>(self, _: &str) -> Result<Unnamed, E> {
        Ok(Unnamed)
    }

    fn visit_unit<E>(self) -> Result<Unnamed, E> {
        Ok(Unnamed)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Unnamed, A::Error> {
        while seq.next_element::<Unnamed>()?.is_some() {}
        Ok(Unnamed)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unnamed, A::Error> {
        while map.next_entry::<Unnamed, Unnamed>()?.is_some() {}
        Ok(Unnamed)
    }
}

/// Maps a member name to its schema position without allocating.
struct KeySeed<'a>(&'a Schema);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Option<usize>, E> {
        Ok(self.0.index_of(name))
    }
}

/// Decodes one member value as the schema's type says.
struct ValueSeed(FieldType);

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value;

    /// `null` is `Null` for every type (a required field then counts as missing).
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl ValueSeed {
    fn typed<'de, D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        match self.0 {
            FieldType::Int => d.deserialize_i64(self),
            FieldType::Timestamp => d.deserialize_any(self),
            FieldType::Float => d.deserialize_f64(self),
            FieldType::String => d.deserialize_str(self),
            FieldType::Bool => d.deserialize_bool(self),
        }
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self.0 {
            FieldType::Int => "an integer",
            FieldType::Float => "a number",
            FieldType::String => "a string",
            FieldType::Bool => "a boolean",
            FieldType::Timestamp => "epoch milliseconds or an RFC 3339 time",
        })
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.typed(d)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        match self.0 {
            FieldType::Bool => Ok(Value::Bool(v)),
            _ => Err(E::invalid_type(de::Unexpected::Bool(v), &self)),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        match self.0 {
            FieldType::Int | FieldType::Timestamp => Ok(Value::Int(v)),
            FieldType::Float => Ok(Value::Float(v as f64)),
            _ => Err(E::invalid_type(de::Unexpected::Signed(v), &self)),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        match i64::try_from(v) {
            Ok(v) => self.visit_i64(v),
            Err(_) if self.0 == FieldType::Float => Ok(Value::Float(v as f64)),
            Err(_) => Err(E::invalid_value(de::Unexpected::Unsigned(v), &self)),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        match self.0 {
            FieldType::Float => Ok(Value::Float(v)),
            _ => Err(E::invalid_type(de::Unexpected::Float(v), &self)),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        match self.0 {
            FieldType::String => Ok(Value::Str(CompactString::from(v))),
            FieldType::Timestamp => v
                .parse::<jiff::Timestamp>()
                .map(|ts| Value::Int(ts.as_millisecond()))
                .map_err(|e| E::custom(format!("`{v}` is not an RFC 3339 time: {e}"))),
            _ => Err(E::invalid_type(de::Unexpected::Str(v), &self)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A schema of `(name, type, required)` fields with event time `ts`.
    fn schema_of(fields: &[(&str, FieldType, bool)]) -> Schema {
        Schema::of(fields, "ts").unwrap()
    }

    fn schema() -> Schema {
        schema_of(&[
            ("account_id", FieldType::Int, true),
            ("amount_cents", FieldType::Int, true),
            ("country", FieldType::String, false),
            ("ts", FieldType::Timestamp, true),
        ])
    }

    #[test]
    fn decodes_named_fields_and_skips_others() {
        let line = br#"{"txn_id":"t1","account_id":7,"amount_cents":852,"extra":{"a":[1,2]},"country":"PT","ts":1700000000000}"#;
        let (time, record) = schema().decode(line).unwrap();
        assert_eq!(time, 1_700_000_000_000);
        assert_eq!(
            &record[..],
            &[
                Value::Int(7),
                Value::Int(852),
                Value::Str("PT".into()),
                Value::Int(1_700_000_000_000)
            ]
        );
    }

    #[test]
    fn optional_field_may_be_absent_and_times_may_be_rfc3339() {
        let line = br#"{"account_id":7,"amount_cents":1,"ts":"2023-11-14T22:13:20.5+00:00"}"#;
        let (time, record) = schema().decode(line).unwrap();
        assert_eq!(time, 1_700_000_000_500);
        assert_eq!(record[2], Value::Null);
    }

    #[test]
    fn event_times_run_from_1970_to_the_end_of_9999() {
        let at = |ts: &str| {
            schema().decode(format!(r#"{{"account_id":1,"amount_cents":1,"ts":{ts}}}"#).as_bytes())
        };
        assert_eq!(at("0").unwrap().0, 0);
        assert_eq!(at(&MAX_EVENT_TIME.to_string()).unwrap().0, MAX_EVENT_TIME);
        assert_eq!(
            at(r#""9999-12-30T22:00:00.999Z""#).unwrap().0,
            MAX_EVENT_TIME
        );
        assert_eq!(jiff::Timestamp::MAX.as_millisecond(), MAX_EVENT_TIME as i64);
        let after = at(&(MAX_EVENT_TIME + 1).to_string()).unwrap_err();
        assert_eq!(
            after.0,
            "field `ts`: event time after 9999-12-30T22:00:00.999Z"
        );
        let after = at(&i64::MAX.to_string()).unwrap_err();
        assert_eq!(
            after.0,
            "field `ts`: event time after 9999-12-30T22:00:00.999Z"
        );
        assert_eq!(
            at("-1").unwrap_err().0,
            "field `ts`: event time before 1970"
        );
    }

    /// Wherever the flat scanner accepts an input, the serde path accepts it too, with the same
    /// values: tricky inputs, and random byte mutations of valid ones.
    #[test]
    fn the_flat_scanner_agrees_with_serde() {
        let schema = schema_of(&[
            ("i", FieldType::Int, false),
            ("f", FieldType::Float, false),
            ("s", FieldType::String, false),
            ("b", FieldType::Bool, false),
            ("ts", FieldType::Timestamp, false),
        ]);
        let mut inputs: Vec<Vec<u8>> = [
            r#"{"i":1,"f":2.5,"s":"x","b":true,"ts":3}"#,
            r#" { "i" : -0 , "f" : -1e-3 , "s" : "" , "b" : false , "ts" : 0 } "#,
            r#"{"i":01,"ts":1}"#,
            r#"{"i":-01,"ts":1}"#,
            r#"{"i":-,"ts":1}"#,
            r#"{"i":-"#,
            r#"{"i":1e3,"ts":1}"#,
            r#"{"i":-9223372036854775808,"ts":-9223372036854775809}"#,
            r#"{"i":1.0,"ts":1}"#,
            r#"{"i":9223372036854775808,"ts":1}"#,
            r#"{"i":1,"ts":1,}"#,
            r#"{"i":1,"ts":1}x"#,
            r#"{"s":"a"b","ts":1}"#,
            r#"{"s":"tab	here","ts":1}"#,
            r#"{"x":[1,{"y":2}],"ts":1}"#,
            r#"{"x":nul,"ts":1}"#,
            r#"{"i":null,"s":null,"ts":1}"#,
            r#"{"i":"1","ts":1}"#,
            r#"{"b":1,"ts":1}"#,
            r#"{"x":1.,"ts":1}"#,
            r#"{"x":.5,"ts":1}"#,
            r#"{"x":-,"ts":1}"#,
            r#"{"i":1,"i":2,"ts":1}"#,
            r#"{}"#,
            r#"{"ts":"2023-11-14T22:13:20Z"}"#,
            "{\"s\":\"\u{e9}\",\"ts\":1}",
            r#"{"f":1e400,"ts":1}"#,
            r#"{"x":1e400,"ts":1}"#,
            r#"{"x":1e300,"f":-1.5e2,"ts":1}"#,
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let base =
            br#"{"i":-12,"f":3.25e2,"s":"abc","b":true,"other":"zz","n":null,"ts":1700000000000}"#;
        for _ in 0..20_000 {
            let mut line = base.to_vec();
            for _ in 0..1 + x % 3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = (x % line.len() as u64) as usize;
                let bytes = b"{}[]\":,.-+eE0123456789 tfnx\\\x01\xc3";
                line[at] = bytes[((x >> 32) % bytes.len() as u64) as usize];
            }
            inputs.push(line);
        }
        let mut accepted = 0;
        for input in &inputs {
            let mut fast = vec![Value::Null; 5];
            if flat::scan(&schema, input, &mut fast).is_none() {
                continue;
            }
            accepted += 1;
            let mut slow = vec![Value::Null; 5];
            let text = String::from_utf8_lossy(input);
            schema
                .decode_with_serde(input, &mut slow)
                .unwrap_or_else(|e| panic!("the scanner accepted {text}, serde said {e}"));
            assert_eq!(fast, slow, "{text}");
        }
        assert!(
            accepted > 1000,
            "the scanner should accept most inputs: {accepted}"
        );
    }

    /// A required float, an optional string and the event time.
    fn float_schema() -> Schema {
        schema_of(&[
            ("f", FieldType::Float, true),
            ("s", FieldType::String, false),
            ("ts", FieldType::Timestamp, true),
        ])
    }

    /// Decodes `line` on both paths: the scanner's answer (`None`: it passed the line on) and
    /// the serde path's.
    fn both_paths(
        schema: &Schema,
        line: &[u8],
    ) -> (Option<Vec<Value>>, Result<Vec<Value>, String>) {
        let mut fast = vec![Value::Null; schema.fields().len()];
        let fast = flat::scan(schema, line, &mut fast).map(|()| fast);
        let mut slow = vec![Value::Null; schema.fields().len()];
        let slow = schema.decode_with_serde(line, &mut slow).map(|()| slow);
        (fast, slow.map_err(|e| e.0))
    }

    /// A float out of range is refused on both paths, not read as infinity (which a JSON sink
    /// then writes as null), also when an escape elsewhere sends the line to the serde path.
    #[test]
    fn a_float_out_of_range_is_refused_on_both_paths() {
        let schema = float_schema();
        for line in [
            &br#"{"f":1e400,"ts":1}"#[..],
            br#"{"f":-1e400,"ts":1}"#,
            br#"{"f":1e400,"s":"a\nb","ts":1}"#,
        ] {
            let text = String::from_utf8_lossy(line);
            let (fast, slow) = both_paths(&schema, line);
            assert_eq!(fast, None, "{text}");
            let error = slow.unwrap_err();
            assert!(
                error.starts_with("field `f`: number out of range"),
                "{text}: {error}"
            );
            let error = schema.decode(line).unwrap_err().0;
            assert!(
                error.starts_with("field `f`: number out of range"),
                "{text}: {error}"
            );
        }
        // Underflow is no error: it is the nearest float, zero.
        assert_eq!(
            schema.decode(br#"{"f":1e-400,"ts":1}"#).unwrap().1[0],
            Value::Float(0.0)
        );
    }

    /// A line that is not JSON is refused on both paths even where the schema does not look:
    /// invalid UTF-8 in a string, or a number out of range, in an unnamed member, nested or not.
    #[test]
    fn a_line_that_is_not_json_is_refused_in_unnamed_members_too() {
        let schema = float_schema();
        for line in [
            &b"{\"x\":\"\xff\",\"f\":1,\"ts\":1}"[..],
            b"{\"x\":\"a\\n\xc3\",\"f\":1,\"ts\":1}",
            b"{\"x\":[\"\xed\xa0\x80\"],\"f\":1,\"ts\":1}",
            b"{\"x\":{\"\xff\":1},\"f\":1,\"ts\":1}",
            b"{\"x\":1e400,\"f\":1,\"ts\":1}",
            b"{\"x\":[-1e999],\"f\":1,\"ts\":1}",
        ] {
            let text = String::from_utf8_lossy(line);
            assert!(
                serde_json::from_slice::<serde_json::Value>(line).is_err(),
                "{text}"
            );
            let (fast, slow) = both_paths(&schema, line);
            assert_eq!(fast, None, "{text}");
            assert!(slow.is_err(), "{text}: {slow:?}");
            assert!(schema.decode(line).is_err(), "{text}");
        }
        // Valid UTF-8 and numbers in range there are fine, on either path.
        for line in [
            "{\"x\":\"\u{e9}\",\"y\":1e300,\"f\":1,\"ts\":1}",
            "{\"x\":[\"\u{e9}\\n\",{\"z\":-2.5e-3}],\"f\":1,\"ts\":1}",
        ] {
            let (_, slow) = both_paths(&schema, line.as_bytes());
            assert!(slow.is_ok(), "{line}: {slow:?}");
            assert!(schema.decode(line.as_bytes()).is_ok(), "{line}");
        }
    }

    #[test]
    fn errors_name_the_field_and_the_reason() {
        let err = |line: &[u8]| schema().decode(line).unwrap_err().0;
        assert_eq!(
            err(br#"{"account_id":7,"ts":1}"#),
            "missing required field `amount_cents` (absent or null)"
        );
        let wrong_type = err(br#"{"account_id":"x","amount_cents":1,"ts":1}"#);
        assert!(
            wrong_type
                .starts_with("field `account_id`: invalid type: string \"x\", expected an integer"),
            "{wrong_type}"
        );
        assert!(err(br#"{"account_id":7,"#).starts_with("invalid JSON: "));
        assert!(err(b"[1,2]").starts_with("invalid JSON: invalid type: sequence"));
        assert!(
            err(br#"{"account_id":7,"amount_cents":1,"ts":"yesterday"}"#)
                .starts_with("field `ts`: `yesterday` is not an RFC 3339 time")
        );
    }
}
