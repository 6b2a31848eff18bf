//! Kafka topics chosen per row: a sink's `topic` may name columns in braces (`events.{type}`),
//! filled from each row, so one sink writes a topic per event type.
//!
//! A value becomes its text (strings as they are, numbers and bools as in JSON, null as `null`),
//! with every character that Kafka does not allow in a topic name (anything but ASCII letters,
//! digits, `.`, `_` and `-`) replaced by `_`: every row gets a legal topic, and rows whose values
//! differ only there share it.

use crate::record::Value;

/// A topic name with `{column}` placeholders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicTemplate {
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Column(String),
}

impl TopicTemplate {
    /// Parses `topic`; `{` and `}` may only enclose a column name.
    pub fn parse(topic: &str) -> Result<TopicTemplate, String> {
        let mut parts = Vec::new();
        let mut rest = topic;
        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with('}') {
                return Err(format!("`}}` without `{{` in topic `{topic}`"));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(format!("unclosed `{{` in topic `{topic}`"));
            };
            let name = &rest[open + 1..open + close];
            if name.is_empty() || name.contains('{') {
                return Err(format!(
                    "`{{{name}}}` in topic `{topic}`: braces must enclose a column name"
                ));
            }
            if open > 0 {
                parts.push(Part::Text(rest[..open].into()));
            }
            parts.push(Part::Column(name.into()));
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.into()));
        }
        Ok(TopicTemplate { parts })
    }

    /// The columns it names, in order.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Column(name) => Some(name.as_str()),
            Part::Text(_) => None,
        })
    }

    /// The template for rows whose column `name` is at `index(name)`; `None` when it names no
    /// column (a fixed topic).
    pub fn for_rows(
        &self,
        index: impl Fn(&str) -> Option<usize>,
    ) -> Result<Option<RowTopic>, String> {
        if self.columns().next().is_none() {
            return Ok(None);
        }
        let parts = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Text(text) => Ok(RowPart::Text(text.clone())),
                Part::Column(name) => index(name)
                    .map(RowPart::Column)
                    .ok_or_else(|| format!("the rows have no column `{name}`")),
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(RowTopic { parts }))
    }
}

/// A topic template bound to row indexes.
#[derive(Clone, Debug, PartialEq)]
pub struct RowTopic {
    parts: Vec<RowPart>,
}

#[derive(Clone, Debug, PartialEq)]
enum RowPart {
    Text(String),
    Column(usize),
}

impl RowTopic {
    /// Writes the topic of `row` into `out` (cleared first).
    pub fn write(&self, row: &[Value], out: &mut String) {
        out.clear();
        let mut buffer = Vec::new();
        for part in &self.parts {
            match part {
                RowPart::Text(text) => out.push_str(text),
                RowPart::Column(i) => {
                    let text = match &row[*i] {
                        Value::Str(s) => s.as_bytes(),
                        other => {
                            buffer.clear();
                            other.write_json(&mut buffer);
                            &buffer
                        }
                    };
                    out.extend(text.iter().map(|&b| legal(b)));
                }
            }
        }
    }
}

/// `b` if Kafka allows it in a topic name, else `_` (so every byte of a multi-byte character
/// becomes `_`).
fn legal(b: u8) -> char {
    if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
        b as char
    } else {
        '_'
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_placeholders() {
        let t = TopicTemplate::parse("events.{type}.{region}-x").unwrap();
        assert_eq!(t.columns().collect::<Vec<_>>(), ["type", "region"]);
        assert_eq!(TopicTemplate::parse("plain").unwrap().columns().count(), 0);
        for bad in ["a.{type", "a.}", "a.{}", "{a{b}}"] {
            assert!(TopicTemplate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fills_placeholders_from_rows() {
        let t = TopicTemplate::parse("events.{type}.{n}").unwrap();
        let columns = ["n", "type"];
        let rows = t
            .for_rows(|name| columns.iter().position(|c| *c == name))
            .unwrap()
            .unwrap();
        let mut out = String::new();
        rows.write(&[Value::Int(7), Value::Str("Purchase".into())], &mut out);
        assert_eq!(out, "events.Purchase.7");
        rows.write(&[Value::Null, Value::Str("a b/é".into())], &mut out);
        assert_eq!(out, "events.a_b___.null");
        assert!(t.for_rows(|_| None).is_err());
        let fixed = TopicTemplate::parse("plain").unwrap();
        assert_eq!(fixed.for_rows(|_| None), Ok(None));
    }
}
