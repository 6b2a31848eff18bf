//! [`CpaasStandIn`]: a local CPaaS on 127.0.0.1 with the API shape of Infobip's (the SMS and
//! e-mail endpoints the notification adapter calls), for the demo, the tests and the benchmark.
//!
//! It checks the `Authorization: App {key}` header and the request bodies, accepts each message
//! id once (a message whose id it has already accepted is answered as before and not sent
//! again), records what it received, and can be told to fail calls: a share of them at random
//! ([`Faults`]) or the next few in order ([`CpaasStandIn::script`]) with 5xx, 429 with
//! `Retry-After`, a slow answer (the messages are accepted, the answer comes late), or an error
//! that quotes the `Authorization` header back.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::sync::oneshot;

use crate::sinks::notify::client::{EMAIL_PATH, SMS_PATH, SmsBody};

/// A way to fail one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `503 Service Unavailable`; nothing is accepted.
    ServerError,
    /// `429 Too Many Requests` with `Retry-After` (whole seconds); nothing is accepted.
    TooManyRequests {
        /// The `Retry-After` sent.
        retry_after: Duration,
    },
    /// The messages are accepted, but the answer comes after this long (a client with a shorter
    /// timeout sees a timeout, and must not make the retry send twice).
    Slow(Duration),
    /// This status, with an error body that quotes the call's `Authorization` header back, as
    /// a careless CPaaS might; nothing is accepted. The adapter must not keep the key.
    EchoAuthorization(StatusCode),
}

/// Shares of calls (0 to 1) failed at random, each way.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// Share answered with 503.
    pub server_errors: f64,
    /// Share answered with 429 and a `Retry-After` of `retry_after`.
    pub too_many_requests: f64,
    /// `Retry-After` of those 429s.
    pub retry_after: Duration,
    /// Share answered slowly.
    pub slow: f64,
    /// How slowly.
    pub slow_by: Duration,
}

/// What the stand-in counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StandInCounts {
    /// HTTP calls received.
    pub calls: u64,
    /// Messages sent: accepted for the first time (or again, when the stand-in does not dedupe).
    pub sent: u64,
    /// Messages whose id had been received before (answered as before, and not sent again when
    /// the stand-in dedupes).
    pub duplicates: u64,
    /// Calls failed on purpose (5xx, 429 and echoes; slow answers not counted).
    pub failed: u64,
    /// Calls refused as bad requests (400) or unauthorised (401).
    pub refused: u64,
}

/// A message the stand-in sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentMessage {
    /// `sms` or `email`.
    pub channel: &'static str,
    /// Its message id.
    pub message_id: String,
    /// The sender.
    pub from: String,
    /// The recipient.
    pub to: String,
    /// The subject (e-mail).
    pub subject: Option<String>,
    /// The text.
    pub text: String,
}

/// One call as received (kept when the stand-in records calls).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedCall {
    /// The path called.
    pub path: String,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// The body (SMS: JSON).
    pub body: Vec<u8>,
    /// The form fields (e-mail: multipart/form-data), in order.
    pub form: Vec<(String, String)>,
}

/// How the stand-in behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StandInOptions {
    /// The API key it accepts.
    pub api_key: String,
    /// Keep every call received (see [`CpaasStandIn::calls`]).
    pub record_calls: bool,
    /// Accept each message id once (as the adapter expects of a CPaaS); when false, a message
    /// id seen before is sent again, so a test can check that the adapter alone never repeats
    /// a message.
    pub dedupe: bool,
}

impl StandInOptions {
    /// Accepts `api_key`, dedupes message ids, records nothing.
    pub fn new(api_key: &str) -> Self {
        StandInOptions {
            api_key: api_key.into(),
            record_calls: false,
            dedupe: true,
        }
    }
}

struct StandIn {
    options: StandInOptions,
    faults: Mutex<(Faults, StdRng)>,
    script: Mutex<VecDeque<Fault>>,
    sent: Mutex<HashMap<String, SentMessage>>,
    calls: Mutex<Vec<ReceivedCall>>,
    counts: Counters,
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    sent: AtomicU64,
    duplicates: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
    ids: AtomicU64,
}

/// The running stand-in; stopped when dropped.
pub struct CpaasStandIn {
    addr: SocketAddr,
    state: Arc<StandIn>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<thread::JoinHandle<()>>,
}

impl CpaasStandIn {
    /// Starts a stand-in on 127.0.0.1 (a free port).
    pub fn start(options: StandInOptions) -> anyhow::Result<CpaasStandIn> {
        let state = Arc::new(StandIn {
            options,
            faults: Mutex::new((Faults::default(), StdRng::seed_from_u64(7))),
            script: Mutex::new(VecDeque::new()),
            sent: Mutex::new(HashMap::new()),
            calls: Mutex::new(Vec::new()),
            counts: Counters::default(),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cpaas-standin")
            .enable_all()
            .build()
            .context("starting the CPaaS stand-in's runtime")?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .context("binding the CPaaS stand-in to 127.0.0.1")?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route(SMS_PATH, post(send_sms))
            .route(EMAIL_PATH, post(send_email))
            .with_state(Arc::clone(&state));
        let (shutdown, stopped) = oneshot::channel::<()>();
        let server = thread::Builder::new()
            .name("cpaas-standin".into())
            .spawn(move || {
                let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                    let _ = stopped.await;
                });
                if let Err(e) = runtime.block_on(async move { serve.await }) {
                    tracing::error!("CPaaS stand-in: {e}");
                }
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .context("starting the CPaaS stand-in")?;
        Ok(CpaasStandIn {
            addr,
            state,
            shutdown: Some(shutdown),
            server: Some(server),
        })
    }

    /// Its base URL, `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Fails shares of the calls from now on.
    pub fn set_faults(&self, faults: Faults) {
        self.state.faults.lock().unwrap().0 = faults;
    }

    /// Fails the next calls, one fault each, in order (before any random faults).
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state.script.lock().unwrap().extend(faults);
    }

    /// What it counted so far.
    pub fn counts(&self) -> StandInCounts {
        let c = &self.state.counts;
        StandInCounts {
            calls: c.calls.load(Ordering::Relaxed),
            sent: c.sent.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
        }
    }

    /// The messages it sent, by message id.
    pub fn sent(&self) -> HashMap<String, SentMessage> {
        self.state.sent.lock().unwrap().clone()
    }

    /// The calls it received (when started with `record_calls`).
    pub fn calls(&self) -> Vec<ReceivedCall> {
        self.state.calls.lock().unwrap().clone()
    }
}

impl Drop for CpaasStandIn {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

/// Why a call is refused before its body is looked at.
enum Refusal {
    Unauthorized,
    ServerError,
    TooManyRequests(Duration),
    /// The status, and the `Authorization` header to quote.
    Echo(StatusCode, String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Unauthorized => refuse(StatusCode::UNAUTHORIZED, "Invalid login details"),
            Refusal::ServerError => refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "Service temporarily unavailable",
            ),
            Refusal::TooManyRequests(retry_after) => {
                let mut answer = refuse(StatusCode::TOO_MANY_REQUESTS, "Too many requests");
                answer.headers_mut().insert(
                    header::RETRY_AFTER,
                    retry_after.as_secs().to_string().parse().expect("digits"),
                );
                answer
            }
            Refusal::Echo(status, authorization) => {
                let body = json!({
                    "error": "request refused",
                    "request": {"headers": {"authorization": authorization}},
                });
                (status, axum::Json(body)).into_response()
            }
        }
    }
}

/// An Infobip-style error answer.
fn refuse(status: StatusCode, text: &str) -> Response {
    let id = if status == StatusCode::UNAUTHORIZED {
        "UNAUTHORIZED"
    } else {
        "BAD_REQUEST"
    };
    let body = json!({"requestError": {"serviceException": {"messageId": id, "text": text}}});
    (status, axum::Json(body)).into_response()
}

impl StandIn {
    /// The checks and faults every call goes through first: how long to delay the answer, or
    /// the refusal to answer with.
    fn admit(&self, headers: &HeaderMap) -> Result<Option<Duration>, Refusal> {
        self.counts.calls.fetch_add(1, Ordering::Relaxed);
        let expected = format!("App {}", self.options.api_key);
        let auth = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if auth != Some(expected.as_str()) {
            self.counts.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Unauthorized);
        }
        let scripted = self.script.lock().unwrap().pop_front();
        let fault = scripted.or_else(|| {
            let (faults, rng) = &mut *self.faults.lock().unwrap();
            let draw: f64 = rng.random();
            if draw < faults.server_errors {
                Some(Fault::ServerError)
            } else if draw < faults.server_errors + faults.too_many_requests {
                Some(Fault::TooManyRequests {
                    retry_after: faults.retry_after,
                })
            } else if draw < faults.server_errors + faults.too_many_requests + faults.slow {
                Some(Fault::Slow(faults.slow_by))
            } else {
                None
            }
        });
        match fault {
            None => Ok(None),
            Some(Fault::Slow(by)) => Ok(Some(by)),
            Some(Fault::ServerError) => {
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
                Err(Refusal::ServerError)
            }
            Some(Fault::TooManyRequests { retry_after }) => {
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
                Err(Refusal::TooManyRequests(retry_after))
            }
            Some(Fault::EchoAuthorization(status)) => {
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
                Err(Refusal::Echo(status, expected))
            }
        }
    }

    fn record_call(&self, path: &str, headers: &HeaderMap, body: &[u8], form: &[(String, String)]) {
        if !self.options.record_calls {
            return;
        }
        let header = |name| {
            headers
                .get(name)
                .and_then(|v: &axum::http::HeaderValue| v.to_str().ok())
                .map(String::from)
        };
        self.calls.lock().unwrap().push(ReceivedCall {
            path: path.into(),
            authorization: header(header::AUTHORIZATION),
            content_type: header(header::CONTENT_TYPE),
            body: body.to_vec(),
            form: form.to_vec(),
        });
    }

    /// Accepts messages (each id once) and answers for all of them.
    fn accept(&self, messages: Vec<SentMessage>) -> serde_json::Value {
        let mut sent = self.sent.lock().unwrap();
        let answers: Vec<serde_json::Value> = messages
            .into_iter()
            .map(|m| {
                let to = m.to.clone();
                let id = m.message_id.clone();
                let seen = sent.contains_key(&id);
                if seen {
                    self.counts.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                if !seen || !self.options.dedupe {
                    self.counts.sent.fetch_add(1, Ordering::Relaxed);
                    sent.insert(id.clone(), m);
                }
                json!({
                    "to": to,
                    "messageId": id,
                    "status": {"groupId": 1, "groupName": "PENDING", "id": 26,
                               "name": "PENDING_ACCEPTED",
                               "description": "Message sent to next instance"}
                })
            })
            .collect();
        let bulk = self.counts.ids.fetch_add(1, Ordering::Relaxed);
        json!({"bulkId": format!("bulk-{bulk}"), "messages": answers})
    }

    /// A message id: the client's, or a new one.
    fn message_id(&self, given: Option<String>) -> String {
        given.unwrap_or_else(|| {
            format!(
                "standin-{}",
                self.counts.ids.fetch_add(1, Ordering::Relaxed)
            )
        })
    }

    fn bad_request(&self, text: &str) -> Response {
        self.counts.refused.fetch_add(1, Ordering::Relaxed);
        refuse(StatusCode::BAD_REQUEST, text)
    }
}

/// A phone number: an optional `+`, then 6 to 15 digits.
fn valid_phone(to: &str) -> bool {
    let digits = to.strip_prefix('+').unwrap_or(to);
    (6..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

async fn answer(slow: Option<Duration>, body: serde_json::Value) -> Response {
    if let Some(by) = slow {
        tokio::time::sleep(by).await;
    }
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn send_sms(State(state): State<Arc<StandIn>>, headers: HeaderMap, body: Bytes) -> Response {
    state.record_call(SMS_PATH, &headers, &body, &[]);
    let slow = match state.admit(&headers) {
        Ok(slow) => slow,
        Err(refusal) => return refusal.into_response(),
    };
    let parsed: SmsBody = match serde_json::from_slice(&body) {
        Ok(parsed) => parsed,
        Err(e) => return state.bad_request(&format!("Invalid request body: {e}")),
    };
    let mut messages = Vec::new();
    for message in parsed.messages {
        if message.destinations.is_empty() {
            return state.bad_request("A message has no destinations");
        }
        for d in message.destinations {
            if !valid_phone(&d.to) {
                return state.bad_request(&format!("Invalid destination address `{}`", d.to));
            }
            messages.push(SentMessage {
                channel: "sms",
                message_id: state.message_id(d.message_id),
                from: message.from.clone(),
                to: d.to,
                subject: None,
                text: message.text.clone(),
            });
        }
    }
    answer(slow, state.accept(messages)).await
}

async fn send_email(
    State(state): State<Arc<StandIn>>,
    headers: HeaderMap,
    mut form: Multipart,
) -> Response {
    let mut fields = Vec::new();
    loop {
        match form.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or_default().to_string();
                match field.text().await {
                    Ok(value) => fields.push((name, value)),
                    Err(e) => return state.bad_request(&format!("Invalid form field: {e}")),
                }
            }
            Ok(None) => break,
            Err(e) => return state.bad_request(&format!("Invalid form: {e}")),
        }
    }
    state.record_call(EMAIL_PATH, &headers, &[], &fields);
    let slow = match state.admit(&headers) {
        Ok(slow) => slow,
        Err(refusal) => return refusal.into_response(),
    };
    let get = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let (Some(from), Some(to), Some(subject), Some(text)) =
        (get("from"), get("to"), get("subject"), get("text"))
    else {
        return state.bad_request("An e-mail needs from, to, subject and text");
    };
    if !to.contains('@') {
        return state.bad_request(&format!("Invalid destination address `{to}`"));
    }
    let message = SentMessage {
        channel: "email",
        message_id: state.message_id(get("messageId")),
        from,
        to,
        subject: Some(subject),
        text,
    };
    answer(slow, state.accept(vec![message])).await
}
