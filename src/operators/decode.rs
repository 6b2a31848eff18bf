//! Schema-driven JSON decoding: one pass over the bytes straight into a [`Record`], skipping the
//! members the schema does not name, with no intermediate `serde_json::Value` tree.

use std::fmt;

use compact_str::CompactString;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use crate::record::{FieldType, Record, Schema, Value};

/// Why a payload did not decode; the message names the field and, for syntax errors, the column.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

impl Schema {
    /// Decodes one JSON object into a record and its event time (epoch milliseconds).
    pub fn decode(&self, bytes: &[u8]) -> Result<(u64, Record), DecodeError> {
        let mut values = vec![Value::Null; self.fields().len()];
        let mut current = None;
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let seed = ObjectSeed {
            schema: self,
            values: &mut values,
            current: &mut current,
        };
        let parsed = seed.deserialize(&mut de).and_then(|()| de.end());
        if let Err(err) = parsed {
            return Err(DecodeError(match current {
                Some(i) => format!("field `{}`: {err}", self.fields()[i].name),
                None => format!("invalid JSON: {err}"),
            }));
        }
        for (field, value) in self.fields().iter().zip(&values) {
            if field.required && matches!(value, Value::Null) {
                return Err(DecodeError(format!(
                    "missing required field `{}`",
                    field.name
                )));
            }
        }
        let time = match values[self.time_index()] {
            Value::Int(ms) if ms >= 0 => ms as u64,
            Value::Int(_) => {
                return Err(DecodeError(format!(
                    "field `{}`: event time before 1970",
                    self.fields()[self.time_index()].name
                )));
            }
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
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
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

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
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

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
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
    use crate::record::Field;

    fn schema() -> Schema {
        let field = |name: &str, ty, required| Field {
            name: name.into(),
            ty,
            required,
        };
        Schema::new(
            vec![
                field("account_id", FieldType::Int, true),
                field("amount_cents", FieldType::Int, true),
                field("country", FieldType::String, false),
                field("ts", FieldType::Timestamp, true),
            ],
            "ts",
        )
        .unwrap()
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
    fn errors_name_the_field_and_the_reason() {
        let err = |line: &[u8]| schema().decode(line).unwrap_err().0;
        assert_eq!(
            err(br#"{"account_id":7,"ts":1}"#),
            "missing required field `amount_cents`"
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
