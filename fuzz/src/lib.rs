//! The properties the fuzz targets check, one function per target, each panicking when its
//! property fails. The libFuzzer targets (`fuzz_targets/`) call them; so does the eddy package's
//! `tests/fuzz_corpus.rs`, over the seed corpus (`corpus/<target>/`), in every test run.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use eddy::Predicate;
use eddy::job::{Job, ServerSpec};
use eddy::record::{Field, FieldType, Schema, Value};
use eddy::server::{Server, ServerLimits};
use eddy::sinks::view::{Change, ChangeBatch, Row, Views};
use eddy::stats::Stats;

/// The job-file loader never panics, whatever the text (`${VAR}` expands to a value for every
/// name but `UNSET`).
pub fn job_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let vars = |name: &str| (name != "UNSET").then(|| format!("value-of-{name}"));
    let _ = Job::parse_with(Path::new("fuzz.toml"), text, &vars);
}

/// The schema the decoder and predicate targets use: one field of each type.
fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let field = |name: &str, ty, required| Field {
            name: name.into(),
            ty,
            required,
        };
        Schema::new(
            vec![
                field("id", FieldType::Int, true),
                field("amount", FieldType::Float, false),
                field("name", FieldType::String, false),
                field("ok", FieldType::Bool, false),
                field("ts", FieldType::Timestamp, true),
            ],
            "ts",
        )
        .expect("a valid schema")
    })
}

/// The JSON decoder agrees with serde_json: it accepts nothing serde_json refuses, and what it
/// accepts is an object whose members have the values serde_json reads (the last of repeated
/// members, as serde_json keeps), and whose event time is the record's.
pub fn json_decoder(data: &[u8]) {
    let schema = schema();
    let ours = schema.decode(data);
    let theirs = serde_json::from_slice::<serde_json::Value>(data);
    let (time, record) = match (ours, theirs) {
        (Ok(_), Err(e)) => panic!("the decoder accepted what serde_json refuses: {e}"),
        (Err(_), _) => return,
        (Ok(decoded), Ok(value)) => {
            let serde_json::Value::Object(members) = value else {
                panic!("the decoder accepted a JSON {value} that is not an object");
            };
            for (field, got) in schema.fields().iter().zip(&decoded.1) {
                let member = members.get(field.name.as_str());
                assert!(
                    agrees(field.ty, member, got),
                    "field `{}`: decoded {got:?} from {member:?}",
                    field.name
                );
            }
            decoded
        }
    };
    assert_eq!(
        Some(time),
        match record[schema.time_index()] {
            Value::Int(ms) => u64::try_from(ms).ok(),
            _ => None,
        },
        "the event time is not the time field's"
    );
}

/// Whether `got`, decoded as `ty`, is what serde_json read for the member.
fn agrees(ty: FieldType, member: Option<&serde_json::Value>, got: &Value) -> bool {
    use serde_json::Value as J;
    match (ty, member, got) {
        (_, None | Some(J::Null), Value::Null) => true,
        (FieldType::Int, Some(J::Number(n)), Value::Int(i)) => n.as_i64() == Some(*i),
        (FieldType::Float, Some(J::Number(n)), Value::Float(f)) => n.as_f64() == Some(*f),
        (FieldType::String, Some(J::String(s)), Value::Str(t)) => s == t.as_str(),
        (FieldType::Bool, Some(J::Bool(b)), Value::Bool(c)) => b == c,
        (FieldType::Timestamp, Some(J::Number(n)), Value::Int(i)) => n.as_i64() == Some(*i),
        // RFC 3339 text: its parse is the decoder's own; that it is a time is checked.
        (FieldType::Timestamp, Some(J::String(_)), Value::Int(_)) => true,
        _ => false,
    }
}

/// Records of [`schema`] with edge values, for compiled predicates to run on.
fn records() -> &'static [Vec<Value>] {
    static RECORDS: OnceLock<Vec<Vec<Value>>> = OnceLock::new();
    RECORDS.get_or_init(|| {
        let record = |id, amount, name: &str, ok| {
            vec![
                Value::Int(id),
                amount,
                Value::Str(name.into()),
                ok,
                Value::Int(1_700_000_000_000),
            ]
        };
        vec![
            record(0, Value::Float(0.0), "", Value::Bool(false)),
            record(
                i64::MAX,
                Value::Float(f64::MAX),
                "ü\u{0}",
                Value::Bool(true),
            ),
            record(i64::MIN, Value::Float(f64::NEG_INFINITY), "DE", Value::Null),
            record(
                -1,
                Value::Float(f64::NAN),
                "x".repeat(300).as_str(),
                Value::Null,
            ),
            record(1, Value::Null, "1", Value::Bool(true)),
        ]
    })
}

/// The CEL predicate compiler never panics, and neither does a predicate it compiled, on any
/// record of its schema.
pub fn cel_predicate(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(predicate) = Predicate::compile(text, schema()) {
        for record in records() {
            let _ = predicate.holds(record);
        }
    }
}

/// The address of a server over a view `v` of a few rows (keys with `/`, `%`, spaces and
/// non-ASCII among them), of a job that is ready (so `/health` answers 200), started once.
fn server() -> SocketAddr {
    static SERVER: OnceLock<SocketAddr> = OnceLock::new();
    *SERVER.get_or_init(|| {
        let views = Views::new(["v"]);
        let changes = ["a", "a/b", "100%", "with space", "ü", "changes", ""]
            .iter()
            .enumerate()
            .map(|(n, key)| {
                let mut row = Row::new();
                row.insert("n".into(), (n as i64).into());
                Change::Upsert {
                    key: (*key).into(),
                    row,
                }
            })
            .collect();
        views
            .get("v")
            .expect("the view")
            .apply(ChangeBatch { time: 1, changes });
        let stats = Arc::new(Stats::default());
        stats.workers.store(1, Ordering::Release);
        stats.workers_ready.store(1, Ordering::Release);
        let server = Server::start(
            ServerSpec {
                listen: "127.0.0.1:0".parse().expect("an address"),
                token: None,
            },
            ServerLimits::default(),
            views,
            stats,
        )
        .expect("the server starts");
        let addr = server.addr();
        // Serves until the process ends.
        std::mem::forget(server);
        addr
    })
}

/// The HTTP server answers any request target (path and query) with a status below 500: it
/// neither fails nor leaves the client without an answer.
pub fn http_query(data: &[u8]) {
    let mut stream = TcpStream::connect(server()).expect("connecting to the server");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("a read timeout");
    let mut request = b"GET ".to_vec();
    request.extend_from_slice(data);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: eddy\r\nConnection: close\r\n\r\n");
    // The server may answer, and close, before it has read all of a bad request.
    let _ = stream.write_all(&request);
    let mut status = String::new();
    BufReader::new(stream)
        .read_line(&mut status)
        .expect("an answer");
    let code: u16 = status
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {status:?}"));
    assert!(code < 500, "answered {status:?}");
}
