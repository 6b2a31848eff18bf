//! The HTTP server against a real client on 127.0.0.1: row lookups, paging, the change stream,
//! the bearer token, health and metrics, with views filled directly through `ViewStore::apply`;
//! and a running job's view read during a burst, whose every read must be a state the change
//! stream says existed at the frontier the read reports.

mod common;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use common::kafka::Tier;
use eddy::dataflows::RunOptions;
use eddy::job::{Job, ServerSpec, SourceKind};
use eddy::run::{ClusterArgs, run_job};
use eddy::server::{Server, ServerLimits};
use eddy::sinks::view::{Change, ChangeBatch, Row, Views};
use eddy::sources::generator::{Generator, GeneratorConfig};
use eddy::sources::kafka::StartFrom;
use eddy::stats::{Counter, Stats};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Only so a broken server fails the test instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(60);

/// A server on a free loopback port over the views `names`, with its inputs.
struct Fixture {
    server: Server,
    views: Views,
    stats: Arc<Stats>,
    client: reqwest::Client,
}

impl Fixture {
    fn start(names: &[&str], token: Option<&str>) -> Fixture {
        Fixture::with_limits(names, token, ServerLimits::default())
    }

    fn with_limits(names: &[&str], token: Option<&str>, limits: ServerLimits) -> Fixture {
        let views = Views::new(names.iter().copied());
        let stats = Arc::new(Stats::default());
        let server = Server::start(
            ServerSpec {
                listen: "127.0.0.1:0".parse().unwrap(),
                token: token.map(String::from),
            },
            limits,
            views.clone(),
            Arc::clone(&stats),
        )
        .expect("server starts");
        // No idle connections kept: a test's short header timeout closes them on the server's
        // side, and a request sent on one just as it closes would fail.
        let client = reqwest::Client::builder()
            .timeout(PATIENCE)
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        Fixture {
            server,
            views,
            stats,
            client,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.addr())
    }

    /// GETs `path` (with `token` as bearer token, if any): the status and the body as JSON.
    async fn get_with(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.client.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        json_answer(request, path).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.get_with(path, None).await
    }
}

/// Sends `request` (for `path`): the status and the body as JSON.
async fn json_answer(request: reqwest::RequestBuilder, path: &str) -> (StatusCode, Value) {
    let response = request.send().await.expect("request answered");
    let status = response.status();
    let body = response.text().await.expect("body read");
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("GET {path}: {status} body is not JSON ({e}): {body}"));
    (status, json)
}

/// Runs a test's client side, failing it if it takes more than [`PATIENCE`].
async fn patiently<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(PATIENCE, test)
        .await
        .expect("test finished in time");
}

fn row(n: i64, name: &str) -> Row {
    let mut row = Row::new();
    row.insert("n".into(), n.into());
    row.insert("name".into(), name.into());
    row
}

fn upsert(key: &str, n: i64) -> Change {
    Change::Upsert {
        key: key.into(),
        row: row(n, key),
    }
}

/// The error message of a JSON error answer.
fn error_of(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("not a JSON error: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looks_rows_up_and_answers_404_for_unknown_views_and_keys() {
    let fx = Fixture::start(&["balances"], None);
    let view = fx.views.get("balances").unwrap();
    view.apply(ChangeBatch {
        time: 10,
        changes: vec![upsert("alice", 5), upsert("bob/smith", 7)],
    });
    view.apply(ChangeBatch {
        time: 20,
        changes: vec![
            upsert("alice", 6),
            Change::Delete {
                key: "carol".into(),
            },
        ],
    });
    patiently(async {
        let (status, body) = fx.get("/views/balances/alice").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            json!({"key": "alice", "row": {"n": 6, "name": "alice"}, "frontier": 21})
        );

        // A key with a slash, percent-encoded.
        let (status, body) = fx.get("/views/balances/bob%2Fsmith").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["row"], json!({"n": 7, "name": "bob/smith"}));

        let (status, body) = fx.get("/views/nope/alice").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(error_of(&body).contains("nope"), "{body}");

        let (status, body) = fx.get("/views/balances/carol").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(error_of(&body).contains("carol"), "{body}");

        let (status, body) = fx.get("/views/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(error_of(&body).contains("nope"), "{body}");

        let (status, body) = fx.get("/nowhere").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(error_of(&body).contains("/nowhere"), "{body}");

        let response = fx
            .client
            .post(fx.url("/views/balances/alice"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(
            response.headers()[reqwest::header::ALLOW]
                .to_str()
                .unwrap()
                .contains("GET")
        );
        let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        error_of(&body);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_walk_every_matching_row_once_in_key_order() {
    let fx = Fixture::start(&["accounts"], None);
    let view = fx.views.get("accounts").unwrap();
    let mut expected = BTreeMap::new();
    let mut changes = Vec::new();
    for i in 0..57 {
        for prefix in ["a", "b", "ab"] {
            let key = format!("{prefix}-{i:03}");
            changes.push(upsert(&key, i));
            if key.starts_with("ab") {
                expected.insert(key.clone(), json!(row(i, &key)));
            }
        }
    }
    changes.sort_by(|x, y| key_of(x).cmp(key_of(y)));
    view.apply(ChangeBatch { time: 1, changes });
    patiently(async {
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = "/views/accounts?prefix=ab&limit=10".to_string();
            if let Some(after) = &after {
                path.push_str(&format!("&after={after}"));
            }
            let (status, page) = fx.get(&path).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            assert_eq!(page["frontier"], json!(2));
            let rows = page["rows"].as_array().unwrap();
            assert!(rows.len() <= 10);
            for keyed in rows {
                let key = keyed["key"].as_str().unwrap().to_string();
                assert_eq!(Some(&keyed["row"]), expected.get(&key), "{key}");
                seen.push(key);
            }
            match page["next"].as_str() {
                Some(next) => after = Some(next.to_string()),
                None => break,
            }
        }
        let wanted: Vec<String> = expected.keys().cloned().collect();
        assert_eq!(seen, wanted);

        // Without a prefix or limit: the first 100 rows of all.
        let (status, page) = fx.get("/views/accounts").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["rows"].as_array().unwrap().len(), 100);
        assert_eq!(page["rows"][0]["key"], json!("a-000"));

        for bad in ["0", "1001", "ten", "-1", ""] {
            let (status, body) = fx.get(&format!("/views/accounts?limit={bad}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "limit={bad}: {body}");
            assert!(error_of(&body).contains("limit"), "{body}");
        }
    })
    .await;
}

fn key_of(change: &Change) -> &str {
    match change {
        Change::Upsert { key, .. } | Change::Delete { key } => key,
    }
}

/// A change stream's server-sent events, read one at a time.
struct EventReader {
    response: reqwest::Response,
    /// Received text not yet parsed into events.
    buffer: String,
}

impl EventReader {
    fn new(response: reqwest::Response) -> Self {
        EventReader {
            response,
            buffer: String::new(),
        }
    }

    /// The next event: its name and its data as JSON (`:` keep-alive comments are skipped).
    async fn next(&mut self) -> (String, Value) {
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let mut event = None;
                let mut data = String::new();
                for line in frame.lines() {
                    if let Some(name) = line.strip_prefix("event:") {
                        event = Some(name.trim().to_string());
                    } else if let Some(line) = line.strip_prefix("data:") {
                        data.push_str(line.strip_prefix(' ').unwrap_or(line));
                    }
                }
                if let Some(event) = event {
                    return (event, serde_json::from_str(&data).expect("JSON data"));
                }
            }
            let chunk = self
                .response
                .chunk()
                .await
                .expect("stream readable")
                .expect("stream still open");
            self.buffer
                .push_str(std::str::from_utf8(&chunk).expect("UTF-8 events"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_every_batch_applied_after_subscribing_in_order() {
    let fx = Fixture::start(&["positions"], None);
    let view = Arc::clone(fx.views.get("positions").unwrap());
    view.apply(ChangeBatch {
        time: 1,
        changes: vec![upsert("before", 0)],
    });
    let batches: Vec<ChangeBatch> = (0..20)
        .map(|i| ChangeBatch {
            time: 10 + i,
            changes: vec![
                upsert(&format!("k{i}"), i as i64),
                Change::Delete {
                    key: format!("k{}", i.saturating_sub(1)),
                },
            ],
        })
        .collect();
    patiently(async {
        let response = fx
            .client
            .get(fx.url("/views/positions/changes"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()[reqwest::header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        // The answer's head came: the server has subscribed.
        let to_apply = batches.clone();
        let applier = thread::spawn(move || {
            for batch in to_apply {
                view.apply(batch);
            }
        });
        let mut reader = EventReader::new(response);
        let mut events = Vec::new();
        for _ in &batches {
            events.push(reader.next().await);
        }
        applier.join().unwrap();
        let expected: Vec<(String, Value)> = batches
            .iter()
            .map(|b| ("changes".to_string(), serde_json::to_value(b).unwrap()))
            .collect();
        assert_eq!(events, expected);

        let (status, body) = fx.get("/views/positions/changes/more").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        let (status, body) = fx.get("/views/nope/changes").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(error_of(&body).contains("nope"), "{body}");
    })
    .await;
    // Dropping the fixture stops the server with the stream still open.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_every_route() {
    let fx = Fixture::start(&["v"], Some("s3cret-token"));
    fx.views.get("v").unwrap().apply(ChangeBatch {
        time: 1,
        changes: vec![upsert("k", 1)],
    });
    fx.stats.workers.store(1, Ordering::Release);
    fx.stats.workers_ready.store(1, Ordering::Release);
    patiently(async {
        let routes = [
            "/views/v/k",
            "/views/v",
            "/views/v/changes",
            "/metrics",
            "/health",
            "/nowhere",
        ];
        for path in routes {
            for token in [
                None,
                Some("wrong"),
                Some("s3cret-toke"),
                Some("s3cret-token2"),
            ] {
                let mut request = fx.client.get(fx.url(path));
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                let response = request.send().await.unwrap();
                assert_eq!(
                    response.status(),
                    StatusCode::UNAUTHORIZED,
                    "{path} {token:?}"
                );
                assert_eq!(
                    response.headers()[reqwest::header::WWW_AUTHENTICATE],
                    "Bearer"
                );
                let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
                error_of(&body);
            }
        }
        // Another scheme with the right token is still refused.
        let response = fx
            .client
            .get(fx.url("/health"))
            .header("Authorization", "Basic s3cret-token")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

        for path in [
            "/views/v/k",
            "/views/v",
            "/views/v/changes",
            "/metrics",
            "/health",
        ] {
            let response = fx
                .client
                .get(fx.url(path))
                .bearer_auth("s3cret-token")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
        }
        let (status, _) = fx.get_with("/nowhere", Some("s3cret-token")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_turns_ready_and_metrics_expose_the_counters() {
    let fx = Fixture::start(&["small", "big"], None);
    patiently(async {
        let (status, body) = fx.get("/health").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, json!({"status": "starting"}));
        fx.stats.workers.store(1, Ordering::Release);
        fx.stats.workers_ready.store(1, Ordering::Release);
        let (status, body) = fx.get("/health").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, json!({"status": "ready"}));

        fx.stats.add(Counter::EventsIn, 1234);
        fx.stats.add(Counter::DeadLetters, 3);
        fx.stats.record_latency(Duration::from_millis(3));
        fx.stats.record_latency(Duration::from_millis(40));
        fx.stats.record_latency(Duration::from_secs(100));
        fx.views.get("big").unwrap().apply(ChangeBatch {
            time: 1,
            changes: vec![upsert("a", 1), upsert("b", 2), upsert("c", 3)],
        });

        let response = fx.client.get(fx.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let text = response.text().await.unwrap();
        let samples = parse_exposition(&text);
        let value = |name: &str| {
            *samples
                .get(name)
                .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
        };
        assert_eq!(value("eddy_events_in_total"), 1234.0);
        assert_eq!(value("eddy_dead_letters_total"), 3.0);
        assert_eq!(value("eddy_notifications_deduplicated_total"), 0.0);
        assert_eq!(value(r#"eddy_view_rows{view="big"}"#), 3.0);
        assert_eq!(value(r#"eddy_view_rows{view="small"}"#), 0.0);
        assert_eq!(value("eddy_latency_seconds_count"), 3.0);
        assert_eq!(value(r#"eddy_latency_seconds_bucket{le="0.005"}"#), 1.0);
        assert_eq!(value(r#"eddy_latency_seconds_bucket{le="0.05"}"#), 2.0);
        assert_eq!(value(r#"eddy_latency_seconds_bucket{le="60.0"}"#), 2.0);
        assert_eq!(value(r#"eddy_latency_seconds_bucket{le="+Inf"}"#), 3.0);
        let sum = value("eddy_latency_seconds_sum");
        assert!((sum - 100.043).abs() < 1.5, "sum {sum}");
        for counter in [
            "eddy_late_total",
            "eddy_windows_out_total",
            "eddy_alerts_total",
            "eddy_events_out_total",
            "eddy_notifications_requested_total",
            "eddy_notifications_sent_total",
            "eddy_notifications_failed_total",
            "eddy_notification_retries_total",
        ] {
            assert_eq!(value(counter), 0.0, "{counter}");
        }
        assert!(text.contains("# TYPE eddy_events_in counter\n"), "{text}");
        assert!(text.contains("# HELP eddy_events_in "), "{text}");
    })
    .await;
}

/// A raw client on `fx`'s address, connected (and so queued, if not accepted yet).
async fn raw_client(fx: &Fixture) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(fx.server.addr())
        .await
        .expect("connecting")
}

/// Reads `stream` until the server closes it (end of stream, or a reset); what it read.
async fn read_until_closed(stream: &mut tokio::net::TcpStream, what: &str) -> Vec<u8> {
    use tokio::io::AsyncReadExt as _;
    let mut read = Vec::new();
    let mut chunk = [0u8; 4096];
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server left {what} open for {PATIENCE:?}"
    );
    read
}

/// Reads `stream` until what it read holds `end`; what it read.
async fn read_until(stream: &mut tokio::net::TcpStream, end: &str) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut read = Vec::new();
    let mut chunk = [0u8; 65536];
    while !read.windows(end.len()).any(|w| w == end.as_bytes()) {
        let n = stream.read(&mut chunk).await.expect("reading");
        assert!(
            n > 0,
            "closed before `{end}`: {}",
            String::from_utf8_lossy(&read)
        );
        read.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(read).expect("UTF-8")
}

/// The sample `name` of `fx`'s metrics.
async fn metric(fx: &Fixture, name: &str) -> f64 {
    let response = fx.client.get(fx.url("/metrics")).send().await.unwrap();
    let text = response.text().await.unwrap();
    *parse_exposition(&text)
        .get(name)
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: eddy\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_a_whole_request_head_are_closed_and_others_served() {
    use tokio::io::AsyncWriteExt as _;
    let fx = Fixture::with_limits(
        &[],
        None,
        ServerLimits {
            header_timeout: Duration::from_millis(500),
            ..ServerLimits::default()
        },
    );
    patiently(async {
        let mut silent = raw_client(&fx).await;
        let mut partial = raw_client(&fx).await;
        partial
            .write_all(b"GET /health HTTP/1.1\r\nHost: ed")
            .await
            .unwrap();
        let mut idle = raw_client(&fx).await;
        idle.write_all(HEALTH).await.unwrap();
        read_until(&mut idle, "\r\n\r\n").await;
        // Others are served meanwhile.
        let (status, _) = fx.get("/health").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        read_until_closed(&mut silent, "a connection that sent nothing").await;
        read_until_closed(&mut partial, "a connection that sent part of a head").await;
        read_until_closed(&mut idle, "an idle connection after an answer").await;
        let (status, _) = fx.get("/health").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_limit_clients_wait_until_a_connection_closes() {
    use tokio::io::AsyncWriteExt as _;
    let fx = Fixture::with_limits(
        &[],
        None,
        ServerLimits {
            max_connections: 2,
            header_timeout: Duration::from_secs(600),
            ..ServerLimits::default()
        },
    );
    patiently(async {
        // Accepted in the order they connect: these two take both slots.
        let first = raw_client(&fx).await;
        let _second = raw_client(&fx).await;
        let mut third = raw_client(&fx).await;
        third.write_all(HEALTH).await.unwrap();
        let answer = tokio::spawn(async move { read_until(&mut third, "\r\n\r\n").await });
        // Time for a server without a limit to answer (one with a limit never does).
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!answer.is_finished(), "served past the connection limit");
        drop(first);
        let head = answer.await.unwrap();
        assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    })
    .await;
}

/// A raw client subscribed to `view`'s changes, the answer's head read (so subscribed).
async fn raw_subscriber(fx: &Fixture, view: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt as _;
    let mut stream = raw_client(fx).await;
    let request = format!("GET /views/{view}/changes HTTP/1.1\r\nHost: eddy\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = read_until(&mut stream, "\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    stream
}

/// Applies `n` change batches of about 50 KB each to `view`.
fn apply_big_batches(fx: &Fixture, view: &str, n: u64) {
    let view = fx.views.get(view).unwrap();
    for time in 0..n {
        let changes = (0..100)
            .map(|i| Change::Delete {
                key: format!("{time}-{i}-{}", "k".repeat(500)),
            })
            .collect();
        view.apply(ChangeBatch { time, changes });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_does_not_read_lags_once_its_bytes_waiting_pass_the_limit() {
    let fx = Fixture::with_limits(
        &["v"],
        None,
        ServerLimits {
            subscriber_bytes: 256 * 1024,
            write_timeout: PATIENCE,
            ..ServerLimits::default()
        },
    );
    patiently(async {
        let mut stream = raw_subscriber(&fx, "v").await;
        // 40 MB, far more than the socket buffers, the connection's and the limit hold, and
        // fewer batches than a subscriber may have waiting.
        const BATCHES: u64 = 800;
        apply_big_batches(&fx, "v", BATCHES);
        // The stream ends after one lagged event.
        let text = read_until(&mut stream, "\r\n0\r\n\r\n").await;
        let events: Vec<&str> = text
            .lines()
            .filter_map(|line| line.strip_prefix("event: "))
            .collect();
        assert_eq!(
            events.last(),
            Some(&"lagged"),
            "{:?}",
            &events[events.len().saturating_sub(3)..]
        );
        let received = events.iter().filter(|e| **e == "changes").count() as u64;
        assert_eq!(received + 1, events.len() as u64);
        assert!(
            received < BATCHES,
            "{received} batches reached the subscriber"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected() {
    let fx = Fixture::with_limits(
        &["v"],
        None,
        ServerLimits {
            write_timeout: Duration::from_millis(500),
            header_timeout: Duration::from_secs(600),
            // Nothing lags: the server has all 40 MB to write, more than the sockets buffer.
            subscriber_bytes: 64 << 20,
            ..ServerLimits::default()
        },
    );
    patiently(async {
        let _stream = raw_subscriber(&fx, "v").await;
        // This one and the client's for the metrics.
        assert_eq!(metric(&fx, "eddy_http_connections").await, 2.0);
        apply_big_batches(&fx, "v", 800);
        // Read nothing more: the server's writes stall, and it closes the connection.
        while metric(&fx, "eddy_http_connections").await > 1.0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// The samples of a Prometheus / OpenMetrics text exposition, by `name{labels}`, checking that
/// every line is a comment or a well-formed sample.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            let kind = line.split_whitespace().nth(1);
            assert!(
                matches!(kind, Some("HELP" | "TYPE" | "UNIT" | "EOF")),
                "comment line: {line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "metric name in {line}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "labels in {line}");
        }
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value in {line}")),
        };
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "repeated {series}"
        );
    }
    samples
}

/// A job with a Kafka source of three partitions (every `MALFORMED`-th message broken) routed
/// by amount to two sinks with its dead letters to a third, and a generator source to a fourth.
fn counted_job(topic: &str) -> String {
    format!(
        r#"
[job]
name = "counted"
dead_letter = "dlq"

[[sources]]
name = "payments"
kind = "kafka"
brokers = "${{BROKERS}}"
topics = ["{topic}"]
group = "counted"
event_time = "ts"
out_of_orderness = "2s"
schema = {{ account_id = "int", amount_cents = "int", ts = "timestamp" }}

[[sources]]
name = "generated"
kind = "generator"
count = {GENERATED}
event_time = "ts"
schema = {{ account_id = "int", ts = "timestamp" }}

[[routes]]
name = "big"
source = "payments"
when = 'amount_cents >= 5000'
sinks = ["big"]

[[routes]]
name = "rest"
source = "payments"
otherwise = true
sinks = ["rest"]

[[routes]]
name = "generated"
source = "generated"
sinks = ["generated_all"]

[[sinks]]
name = "big"
kind = "discard"

[[sinks]]
name = "rest"
kind = "discard"

[[sinks]]
name = "dlq"
kind = "discard"

[[sinks]]
name = "generated_all"
kind = "discard"
"#
    )
}

/// Every `MALFORMED`-th message of [`counted_job`]'s topic is broken JSON.
const MALFORMED: u64 = 20;
/// Transactions of [`counted_job`]'s generator source.
const GENERATED: u64 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_records_per_source_and_sink_and_lag_per_partition() {
    let cluster = common::kafka::Cluster::start(Tier::Mock, "counted", &[("payments", 3)])
        .expect("the mock cluster");
    let topic = cluster.topic("payments");
    let config = common::kafka::generator(Tier::Mock, 5, 1_000, 1_700_000_000_000);
    common::kafka::produce_input(cluster.brokers(), &topic, &config, Some(MALFORMED));
    let (mut big, mut rest, mut dead) = (0, 0, 0);
    for (i, txn) in common::kafka::generate(&config).iter().enumerate() {
        if (i as u64 + 1).is_multiple_of(MALFORMED) {
            dead += 1;
        } else if txn.amount_cents >= 5000 {
            big += 1;
        } else {
            rest += 1;
        }
    }
    let stats = Arc::new(Stats::default());
    common::kafka::run(
        &counted_job(&topic),
        cluster.brokers(),
        2,
        StartFrom::Earliest,
        true,
        Arc::new(AtomicBool::new(false)),
        Arc::clone(&stats),
    );
    let server = Server::start(
        ServerSpec {
            listen: "127.0.0.1:0".parse().unwrap(),
            token: None,
        },
        ServerLimits::default(),
        Views::default(),
        stats,
    )
    .expect("server starts");
    let client = reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .unwrap();
    let response = client
        .get(format!("http://{}/metrics", server.addr()))
        .send()
        .await
        .expect("request answered");
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("body read");
    let samples = parse_exposition(&text);
    let value = |name: &str| {
        *samples
            .get(name)
            .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
    };
    assert_eq!(
        value(r#"eddy_source_records_total{source="payments"}"#),
        (big + rest) as f64
    );
    assert_eq!(
        value(r#"eddy_source_records_total{source="generated"}"#),
        GENERATED as f64
    );
    for (sink, n) in [
        ("big", big),
        ("rest", rest),
        ("dlq", dead),
        ("generated_all", GENERATED),
    ] {
        assert_eq!(
            value(&format!(r#"eddy_sink_records_total{{sink="{sink}"}}"#)),
            n as f64,
            "sink {sink}"
        );
    }
    assert!(big > 0 && rest > 0 && dead > 0, "{big} {rest} {dead}");
    // Read to the end: no partition is behind.
    let lags: Vec<&String> = samples
        .keys()
        .filter(|k| k.starts_with("eddy_consumer_lag{"))
        .collect();
    assert_eq!(lags.len(), 3, "{text}");
    for partition in 0..3 {
        let series = format!(
            r#"eddy_consumer_lag{{source="payments",topic="{topic}",partition="{partition}"}}"#
        );
        assert_eq!(value(&series), 0.0, "{series}");
    }
    assert!(
        text.contains("# TYPE eddy_sink_records counter\n"),
        "{text}"
    );
    assert!(text.contains("# TYPE eddy_consumer_lag gauge\n"), "{text}");
}

#[test]
fn a_taken_address_is_a_clear_error() {
    let first = Fixture::start(&[], None);
    let taken = first.server.addr();
    let error = Server::start(
        ServerSpec {
            listen: taken,
            token: None,
        },
        ServerLimits::default(),
        Views::default(),
        Arc::new(Stats::default()),
    )
    .err()
    .expect("the address is taken");
    assert!(
        format!("{error:#}").contains(&taken.to_string()),
        "{error:#}"
    );
}

/// A job whose generator emits `rate` transactions a second of wall time (1.5 s of them, over
/// two partitions) into an `accounts` view served on a free loopback port. Every transaction
/// changes three columns of its account's row at once (`n`, `spent`, `last_ts`), so a row read
/// halfway through applying a change would show a state that never existed.
fn live_job(rate: u64) -> String {
    format!(
        r#"
[job]
name = "views-live"

[[sources]]
name = "transactions"
kind = "generator"
partitions = 2
count = {count}
rate = {rate}
accounts = 300
disorder = "200ms"
paced = true
event_time = "ts"
out_of_orderness = "1s"
schema = {{ account_id = "int", amount_cents = "int", country = "string", ts = "timestamp" }}

[[views]]
name = "accounts"
source = "transactions"
key = "account_id"
tick = "50ms"
columns = {{ n = "count", spent = "sum(amount_cents)", last_ts = "last(ts)", us = {{ value = "count", when = 'country == "US"' }} }}

[server]
listen = "127.0.0.1:0"
"#,
        count = rate * 3 / 2,
    )
}

/// The `accounts` view computed in plain Rust from the generator's transactions: per account,
/// how many, their total, the latest event time (ties carry the same value) and how many in
/// the US (absent when none, as the view leaves a zero count out).
fn accounts_reference(config: &GeneratorConfig, partitions: u64) -> BTreeMap<String, Row> {
    let mut rows = BTreeMap::<String, Row>::new();
    for partition in 0..partitions {
        let mut generator = Generator::partition(
            GeneratorConfig {
                paced: false,
                ..config.clone()
            },
            partition,
            partitions,
        );
        while !generator.finished() {
            generator.take(usize::MAX, |txn| {
                let row = rows.entry(txn.account_id.to_string()).or_default();
                let mut add = |column: &str, by: i64| {
                    let total = row.get(column).and_then(Value::as_i64).unwrap_or(0) + by;
                    row.insert(column.into(), total.into());
                };
                add("n", 1);
                add("spent", txn.amount_cents);
                if txn.country == "US" {
                    add("us", 1);
                }
                let latest = row.get("last_ts").and_then(Value::as_u64).unwrap_or(0);
                row.insert("last_ts".into(), latest.max(txn.ts).into());
            });
        }
    }
    rows
}

/// What a reader saw of the view: every row of a page, or one row, at the frontier the server
/// reported with it.
struct Observed {
    frontier: u64,
    rows: BTreeMap<String, Row>,
    /// The whole view (a page of every row) rather than one key.
    whole: bool,
}

/// The rows of a page answer, by key.
fn page_rows(page: &Value) -> BTreeMap<String, Row> {
    page["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("not a page: {page}"))
        .iter()
        .map(|keyed| {
            let row = serde_json::from_value(keyed["row"].clone()).expect("a row");
            (keyed["key"].as_str().expect("a key").to_string(), row)
        })
        .collect()
}

/// Reads the `accounts` view over HTTP until `done` turns true: alternately a page of every row
/// and single rows of a few keys.
async fn observe(
    client: reqwest::Client,
    base: String,
    done: tokio::sync::watch::Receiver<bool>,
) -> Vec<Observed> {
    let mut observed = Vec::new();
    for round in 0u64.. {
        if *done.borrow() {
            break;
        }
        let path = "/views/accounts?limit=1000";
        let (status, page) = json_answer(client.get(format!("{base}{path}")), path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page["next"].is_null(), "every row fits one page");
        observed.push(Observed {
            frontier: page["frontier"].as_u64().expect("a frontier"),
            rows: page_rows(&page),
            whole: true,
        });
        for key in [round % 300, (round * 7 + 3) % 300] {
            let path = format!("/views/accounts/{key}");
            let (status, body) = json_answer(client.get(format!("{base}{path}")), &path).await;
            if status == StatusCode::NOT_FOUND {
                continue;
            }
            assert_eq!(status, StatusCode::OK, "{body}");
            let row = serde_json::from_value(body["row"].clone()).expect("a row");
            observed.push(Observed {
                frontier: body["frontier"].as_u64().expect("a frontier"),
                rows: BTreeMap::from([(key.to_string(), row)]),
                whole: false,
            });
        }
    }
    observed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_serves_only_states_that_existed_at_a_frontier() {
    let job = Job::parse(std::path::Path::new("live.toml"), &live_job(20_000))
        .unwrap_or_else(|e| panic!("{e}"));
    let SourceKind::Generator { config, partitions } = &job.sources[0].kind else {
        unreachable!("a generator source");
    };
    let expected = accounts_reference(config, *partitions);
    let views = job.view_stores();
    let stats = Arc::new(Stats::default());
    let server = Server::for_job(&job, &views, &stats)
        .expect("server starts")
        .expect("the job declares a server");
    let base = format!("http://{}", server.addr());
    let client = reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .unwrap();
    patiently(async {
        // Subscribed before the job starts: the stream holds every batch the view applies.
        let response = client
            .get(format!("{base}/views/accounts/changes"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut changes = EventReader::new(response);
        let (done, running) = tokio::sync::watch::channel(false);
        let readers: Vec<_> = (0..2)
            .map(|_| tokio::spawn(observe(client.clone(), base.clone(), running.clone())))
            .collect();
        let options = RunOptions {
            start: StartFrom::Earliest,
            until_end: true,
            stop: Arc::new(AtomicBool::new(false)),
            stats: Arc::clone(&stats),
            views: views.clone(),
            reset_state: Vec::new(),
        };
        tokio::task::spawn_blocking(move || {
            run_job(
                job,
                &ClusterArgs::local(2),
                options,
                Duration::from_secs(1),
                |_, _| {},
            )
        })
        .await
        .expect("the job's thread")
        .expect("the job runs");
        done.send_replace(true);
        let mut observed = Vec::new();
        for reader in readers {
            observed.extend(reader.await.expect("a reader"));
        }

        // (a) The rows at the end are the reference's.
        let path = "/views/accounts?limit=1000";
        let (status, last) = json_answer(client.get(format!("{base}{path}")), path).await;
        assert_eq!(status, StatusCode::OK, "{last}");
        let final_frontier = last["frontier"].as_u64().unwrap();
        let final_rows = page_rows(&last);
        assert_eq!(final_rows.len(), expected.len(), "accounts in the view");
        for (key, row) in &expected {
            assert_eq!(final_rows.get(key), Some(row), "row of account {key}");
        }

        // (c) Every batch, in time order, up to the last one applied.
        let mut batches = Vec::new();
        let mut last_time = None;
        while last_time.is_none_or(|t: u64| t + 1 < final_frontier) {
            let (event, data) = changes.next().await;
            assert_eq!(event, "changes", "{data}");
            let batch: ChangeBatch = serde_json::from_value(data).expect("a change batch");
            assert!(
                last_time < Some(batch.time),
                "batch at {} after one at {last_time:?}",
                batch.time
            );
            last_time = Some(batch.time);
            batches.push(batch);
        }
        assert!(batches.len() > 10, "{} batches", batches.len());

        // (b) Every read equals the view replayed from the batches before its frontier.
        observed.sort_by_key(|o| o.frontier);
        let mut observed = observed.into_iter().peekable();
        let mut state = BTreeMap::<String, Row>::new();
        let mut frontier = 0;
        let mut frontiers_seen = std::collections::BTreeSet::new();
        for batch in batches.iter().map(Some).chain([None]) {
            let next_frontier = batch.map_or(u64::MAX, |b| b.time + 1);
            while let Some(o) = observed.next_if(|o| o.frontier < next_frontier) {
                assert_eq!(
                    o.frontier, frontier,
                    "a read at a frontier no batch ended at"
                );
                frontiers_seen.insert(o.frontier);
                if o.whole {
                    assert_eq!(o.rows, state, "the page read at frontier {frontier}");
                } else {
                    for (key, row) in &o.rows {
                        assert_eq!(Some(row), state.get(key), "row {key} read at {frontier}");
                    }
                }
            }
            let Some(batch) = batch else { break };
            for change in &batch.changes {
                match change {
                    Change::Upsert { key, row } => state.insert(key.clone(), row.clone()),
                    Change::Delete { key } => state.remove(key),
                };
            }
            frontier = next_frontier;
        }
        assert_eq!(state, final_rows, "the batches replayed");
        let during = frontiers_seen
            .iter()
            .filter(|&&f| f > 0 && f < final_frontier)
            .count();
        assert!(
            during >= 2,
            "reads during the run saw {during} frontiers: {frontiers_seen:?}"
        );
    })
    .await;
}
