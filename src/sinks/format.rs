//! Encodings of rows and dead letters: JSON objects, CSV lines, and Kafka messages with
//! provenance headers.

use serde::{Deserialize, Serialize};

use super::Encode;
use super::topic::RowTopic;
use crate::record::{DeadLetter, Record};

/// How rows are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// One JSON object per row.
    #[default]
    Json,
    /// Comma-separated values with a header line.
    Csv,
}

/// Writes chosen columns of a row, as JSON or CSV, keyed by one column.
#[derive(Clone, Debug, PartialEq)]
pub struct RowEncoder {
    format: Format,
    /// (name, index in the row) of each column written.
    columns: Vec<(String, usize)>,
    /// The row index of the key column.
    key: Option<usize>,
    /// Pre-rendered `"name":` prefixes for JSON.
    json_names: Vec<Vec<u8>>,
    /// Headers on every message: where the rows come from.
    provenance: Vec<(&'static str, String)>,
    /// The Kafka topic of each row, when the sink's topic names columns.
    topic: Option<RowTopic>,
}

impl RowEncoder {
    /// An encoder writing `columns` (name and row index) in `format`, keyed by row index `key`.
    pub fn new(format: Format, columns: Vec<(String, usize)>, key: Option<usize>) -> Self {
        let json_names = columns
            .iter()
            .map(|(name, _)| {
                let mut prefix = serde_json::to_vec(name).expect("a string encodes");
                prefix.push(b':');
                prefix
            })
            .collect();
        RowEncoder {
            format,
            columns,
            key,
            json_names,
            provenance: Vec::new(),
            topic: None,
        }
    }

    /// The same encoder, with `headers` on every message (Kafka sinks) saying where rows come
    /// from, e.g. `eddy.job` and `eddy.output`.
    pub fn with_provenance(mut self, headers: Vec<(&'static str, String)>) -> Self {
        self.provenance = headers;
        self
    }

    /// The same encoder, choosing each row's Kafka topic by `topic` (`None`: the sink's topic).
    pub fn with_topic(mut self, topic: Option<RowTopic>) -> Self {
        self.topic = topic;
        self
    }
}

impl Encode<Record> for RowEncoder {
    fn value(&self, row: &Record, out: &mut Vec<u8>) {
        match self.format {
            Format::Json => {
                out.push(b'{');
                for (i, ((_, index), name)) in self.columns.iter().zip(&self.json_names).enumerate()
                {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(name);
                    row[*index].write_json(out);
                }
                out.push(b'}');
            }
            Format::Csv => {
                for (i, (_, index)) in self.columns.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    row[*index].write_csv(out);
                }
            }
        }
    }

    fn key(&self, row: &Record, out: &mut Vec<u8>) -> bool {
        let Some(index) = self.key else {
            return false;
        };
        match &row[index] {
            crate::record::Value::Str(s) => out.extend_from_slice(s.as_bytes()),
            other => other.write_json(out),
        }
        true
    }

    fn topic(&self, row: &Record, out: &mut String) -> bool {
        let Some(topic) = &self.topic else {
            return false;
        };
        topic.write(row, out);
        true
    }

    fn headers(&self, _row: &Record) -> Vec<(&'static str, String)> {
        self.provenance.clone()
    }

    fn preamble(&self) -> Option<String> {
        (self.format == Format::Csv).then(|| {
            let names: Vec<&str> = self.columns.iter().map(|(n, _)| n.as_str()).collect();
            names.join(",")
        })
    }
}

/// Dead letters as Kafka messages: the original payload, with `eddy.error`,
/// `eddy.source.topic`, `eddy.source.partition` and `eddy.source.offset` headers; in files,
/// one JSON object per dead letter with the same facts. A payload cut to [`Payload::KEPT`]
/// bytes also gives the input's length and SHA-256 (headers `eddy.payload.length` and
/// `eddy.payload.sha256`; members `payload_length` and `payload_sha256`).
///
/// [`Payload::KEPT`]: crate::record::Payload::KEPT
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeadLetterEncoder {
    /// Write the raw payload (with headers) rather than a JSON object.
    pub raw: bool,
}

impl Encode<DeadLetter> for DeadLetterEncoder {
    fn value(&self, letter: &DeadLetter, out: &mut Vec<u8>) {
        let payload = &letter.payload;
        if self.raw {
            out.extend_from_slice(&payload.kept);
        } else {
            let mut object = serde_json::json!({
                "error": letter.error,
                "topic": letter.topic,
                "partition": letter.partition,
                "offset": letter.offset,
                "payload": String::from_utf8_lossy(&payload.kept),
            });
            if let Some(sha256) = payload.sha256_hex() {
                object["payload_length"] = payload.len.into();
                object["payload_sha256"] = sha256.into();
            }
            serde_json::to_writer(out, &object).expect("writing to a Vec cannot fail");
        }
    }

    fn headers(&self, letter: &DeadLetter) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("eddy.error", letter.error.clone()),
            ("eddy.source.topic", letter.topic.clone()),
            ("eddy.source.partition", letter.partition.to_string()),
            ("eddy.source.offset", letter.offset.to_string()),
        ];
        if let Some(sha256) = letter.payload.sha256_hex() {
            headers.push(("eddy.payload.length", letter.payload.len.to_string()));
            headers.push(("eddy.payload.sha256", sha256));
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Payload;

    fn letter(payload: &[u8]) -> DeadLetter {
        DeadLetter {
            error: "bad".into(),
            topic: "in".into(),
            partition: 1,
            offset: 2,
            payload: Payload::of(payload),
        }
    }

    /// A dead letter keeps at most [`Payload::KEPT`] bytes of its input; a cut one says how long
    /// the input was and gives its SHA-256 (`sha256sum` of 65 537 bytes `a`).
    #[test]
    fn a_long_payload_is_cut_with_its_length_and_hash() {
        let long = letter(&[b'a'; Payload::KEPT + 1]);
        let hash = "008ffc88d3c96a9f307524eb361e47c5222a887fc45fa0c1fb8d429c5c23b430";
        let raw = DeadLetterEncoder { raw: true };
        let mut out = Vec::new();
        raw.value(&long, &mut out);
        assert_eq!(out, [b'a'; Payload::KEPT]);
        let headers = raw.headers(&long);
        assert!(headers.contains(&("eddy.payload.length", "65537".into())));
        assert!(headers.contains(&("eddy.payload.sha256", hash.into())));
        out.clear();
        DeadLetterEncoder { raw: false }.value(&long, &mut out);
        let object: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(object["payload"].as_str().unwrap().len(), Payload::KEPT);
        assert_eq!(object["payload_length"], 65537);
        assert_eq!(object["payload_sha256"], hash);

        let short = letter(&[b'a'; Payload::KEPT]);
        assert_eq!(short.payload.kept.len(), Payload::KEPT);
        assert_eq!(raw.headers(&short).len(), 4);
        out.clear();
        DeadLetterEncoder { raw: false }.value(&short, &mut out);
        let object: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(object.get("payload_length").is_none());
    }
}
