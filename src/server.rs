//! [`Server`]: the job's HTTP server, answering reads of its views, streaming their changes,
//! and exposing its metrics and health, on its own thread with its own tokio runtime.
//!
//! Routes (all `GET`, all answers JSON unless said otherwise):
//!
//! - `/views/{view}/{key}`: the key's row, `{"key": .., "row": {..}, "frontier": N}`; 404 when
//!   the view or the key does not exist. Keys are path segments, so a key with `/`, `?`, `%`
//!   or `#` in it is sent percent-encoded.
//! - `/views/{view}?prefix=&limit=&after=`: a [`Page`] of rows in key order: those whose key
//!   starts with `prefix` (default: all) and comes after `after` (default: from the first),
//!   at most `limit` (default 100, at most 1000). Pass the page's `next` as `after` for the
//!   next page. Query values are form-encoded (`+` is a space; send `%2B` for a plus).
//! - `/views/{view}/changes`: server-sent events, one `event: changes` per
//!   [`ChangeBatch`](crate::sinks::view::ChangeBatch) applied after the subscription, in
//!   order, with the batch as JSON data. A subscriber that falls too far behind (more batches
//!   or bytes waiting than its [`ServerLimits`] allow) gets one `event: lagged` with a JSON
//!   error, and the stream ends: it reads the rows again and resubscribes. To follow a view
//!   without missing a change, subscribe first, then read the rows (their `frontier`), and
//!   skip the batches whose `time` is below that frontier. This route takes precedence over a row lookup, so a key literally
//!   named `changes` is reachable only through the page route (`?prefix=changes&limit=1`).
//! - `/metrics`: the job's [`Stats`] and view sizes in the OpenMetrics text format (which
//!   Prometheus scrapes): totals, records per source and per sink, and the consumer lag per
//!   Kafka partition.
//! - `/health`: 200 `{"status":"ready"}` once the job is ready, 503 `{"status":"starting"}`
//!   before.
//!
//! Anything else is a 404 (unknown path) or 405 (wrong method) JSON error. When the server has
//! a token, every route, `/health` and `/metrics` included, asks for `Authorization: Bearer
//! <token>` and answers 401 without it.
//!
//! Connections are held within [`ServerLimits`]: a connection that sends no complete request
//! head in time (nothing, part of one, or nothing more after an answer) is closed, and so is
//! one whose client stops reading; past the connection limit, clients wait to be accepted.

mod connections;
mod feed;

pub use connections::ServerLimits;
use connections::Slots;

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, mpsc};
use std::thread;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq as _;
use tokio::sync::watch;

use crate::job::{Job, ServerSpec};
use crate::sinks::view::{Page, ViewStore, Views};
use crate::stats::{Counter, Stats};
use feed::Feed;

/// Rows a page holds when the request does not say.
const DEFAULT_PAGE_LIMIT: usize = 100;

/// The most rows a page may hold, so one request cannot copy a whole large view.
const MAX_PAGE_LIMIT: usize = 1000;

/// The running server; shut down gracefully when dropped (the drop waits for its thread, at
/// most a few seconds when requests are still in flight).
pub struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<thread::JoinHandle<()>>,
}

/// What the handlers share.
struct Shared {
    views: Views,
    stats: Arc<Stats>,
    token: Option<String>,
    metrics: Registry,
    limits: ServerLimits,
    /// Becomes true when the server shuts down, which ends the change streams.
    stop: watch::Receiver<bool>,
}

type AppState = State<Arc<Shared>>;

impl Server {
    /// Starts the server `job` declares (with `[server]` or views), serving `views` and
    /// `stats` within the default limits; `None` for a job without one.
    pub fn for_job(job: &Job, views: &Views, stats: &Arc<Stats>) -> anyhow::Result<Option<Server>> {
        job.server
            .clone()
            .map(|spec| {
                Server::start(
                    spec,
                    ServerLimits::default(),
                    views.clone(),
                    Arc::clone(stats),
                )
            })
            .transpose()
    }

    /// Binds `config.listen` and serves `views` and `stats` (whose [`Stats::ready`] answers
    /// `/health`) within `limits` from a thread of its own; returns once the server is
    /// listening.
    pub fn start(
        config: ServerSpec,
        limits: ServerLimits,
        views: Views,
        stats: Arc<Stats>,
    ) -> anyhow::Result<Server> {
        limits
            .check()
            .map_err(|e| anyhow::anyhow!("the HTTP server's limits: {e}"))?;
        let slots = Slots::new(limits.max_connections);
        let (stop, stopped) = watch::channel(false);
        // A cluster's processes each serve their own share: every series says whose.
        let labels = stats.process.get().map(|&(process, processes)| {
            [("process", process), ("processes", processes)]
                .map(|(name, value)| (Cow::Borrowed(name), Cow::Owned(value.to_string())))
        });
        let mut metrics = Registry::with_prefix_and_labels("eddy", labels.into_iter().flatten());
        metrics.register(
            "source_records",
            "Events decoded, per source.",
            stats.source_records.clone(),
        );
        metrics.register(
            "sink_records",
            "Records handed to each sink to write, per sink.",
            stats.sink_records.clone(),
        );
        metrics.register(
            "consumer_lag",
            "Messages behind the end of each assigned Kafka partition.",
            stats.partition_lag.clone(),
        );
        metrics.register_collector(Box::new(JobMetrics {
            stats: Arc::clone(&stats),
            views: views.clone(),
            slots: slots.clone(),
        }));
        let shared = Arc::new(Shared {
            views,
            stats,
            token: config.token,
            metrics,
            limits,
            stop: stopped.clone(),
        });
        let app = router(shared);
        let listen = config.listen;
        // The runtime lives and dies on the server's thread, so the caller may be a runtime's.
        let (started, listening) = mpsc::sync_channel(1);
        let thread = thread::Builder::new()
            .name("eddy-http".into())
            .spawn(move || run(listen, app, (limits, slots), stopped, started))
            .context("starting the HTTP server's thread")?;
        let addr = match listening.recv() {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                anyhow::bail!("the HTTP server's thread ended before listening on {listen}");
            }
        };
        tracing::info!("HTTP server listening on http://{addr}");
        Ok(Server {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address the server listens on (with the actual port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The server's thread: builds the runtime and binds `listen`, tells `started` the address
/// bound (or why not), then serves within `limits` and `slots` until `stopped` turns true.
fn run(
    listen: SocketAddr,
    app: Router,
    (limits, slots): (ServerLimits, Slots),
    stopped: watch::Receiver<bool>,
    started: mpsc::SyncSender<anyhow::Result<SocketAddr>>,
) {
    let bound = (|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("eddy-http")
            .enable_all()
            .build()
            .context("starting the HTTP server's runtime")?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(listen))
            .with_context(|| format!("binding the HTTP server to {listen}"))?;
        let addr = listener
            .local_addr()
            .with_context(|| format!("reading the address bound for {listen}"))?;
        anyhow::Ok((runtime, listener, addr))
    })();
    match bound {
        Ok((runtime, listener, addr)) => {
            let _ = started.send(Ok(addr));
            runtime.block_on(connections::serve(listener, app, limits, slots, stopped));
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
        Err(e) => {
            let _ = started.send(Err(e));
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/views/{view}", get(page))
        .route("/views/{view}/changes", get(changes))
        .route("/views/{view}/{key}", get(row))
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&shared),
            authorize,
        ))
        .with_state(shared)
}

/// A request that cannot be answered: its status and why, answered as `{"error": why}`.
struct ApiError(StatusCode, String);

impl ApiError {
    fn new(status: StatusCode, why: impl Into<String>) -> Self {
        ApiError(status, why.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

/// A path that does not decode (invalid percent-encoding or UTF-8).
impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, rejection.body_text())
    }
}

/// A query string that does not decode.
impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, rejection.body_text())
    }
}

/// Lets a request through when the server has no token or the request carries it.
async fn authorize(State(shared): AppState, request: Request, next: Next) -> Response {
    if let Some(token) = &shared.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| bearer_token(value.as_bytes()));
        // Constant time, so the answer's timing does not tell how much of a guess was right.
        let valid = given.is_some_and(|given| bool::from(given.ct_eq(token.as_bytes())));
        if !valid {
            let mut answer = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "this server needs `Authorization: Bearer <token>` with its token",
            )
            .into_response();
            answer
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return answer;
        }
    }
    next.run(request).await
}

/// The credentials of an `Authorization: Bearer <credentials>` header (scheme in any case).
fn bearer_token(header: &[u8]) -> Option<&[u8]> {
    let scheme = b"bearer ";
    let head = header.get(..scheme.len())?;
    head.eq_ignore_ascii_case(scheme)
        .then(|| header[scheme.len()..].trim_ascii())
}

/// The view called `name`, or the 404 naming it.
fn view<'a>(shared: &'a Shared, name: &str) -> Result<&'a Arc<ViewStore>, ApiError> {
    shared
        .views
        .get(name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no view named `{name}`")))
}

async fn row(
    State(shared): AppState,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path((name, key)) = path?;
    match view(&shared, &name)?.get(&key) {
        (Some(row), frontier) => {
            Ok(Json(json!({ "key": key, "row": row, "frontier": frontier })).into_response())
        }
        (None, _) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("view `{name}` has no row with key `{key}`"),
        )),
    }
}

/// The page route's query parameters, as sent (checked by [`page`]).
#[derive(Deserialize)]
struct PageQuery {
    prefix: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

/// The number of rows a page request asks for, or the 400 saying why it is not one.
fn page_limit(limit: Option<&str>) -> Result<usize, ApiError> {
    let Some(limit) = limit else {
        return Ok(DEFAULT_PAGE_LIMIT);
    };
    let why = match limit.parse::<usize>() {
        Ok(n @ 1..=MAX_PAGE_LIMIT) => return Ok(n),
        Ok(0) => "`limit` must be at least 1".to_string(),
        Ok(n) => format!("`limit` must be at most {MAX_PAGE_LIMIT}, not {n}"),
        Err(_) => {
            format!("`limit` must be a whole number from 1 to {MAX_PAGE_LIMIT}, not `{limit}`")
        }
    };
    Err(ApiError::new(StatusCode::BAD_REQUEST, why))
}

async fn page(
    State(shared): AppState,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    let Path(name) = path?;
    let Query(query) = query?;
    let view = view(&shared, &name)?;
    let limit = page_limit(query.limit.as_deref())?;
    Ok(Json(view.page(
        query.prefix.as_deref().unwrap_or(""),
        query.after.as_deref(),
        limit,
    )))
}

async fn changes(
    State(shared): AppState,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = path?;
    // Subscribed before the answer's head is sent: a client that has it misses no later batch.
    let feed = Feed::start(
        view(&shared, &name)?.subscribe(),
        shared.stop.clone(),
        &shared.limits,
    );
    Ok(Sse::new(feed.events())
        .keep_alive(KeepAlive::default())
        .into_response())
}

async fn metrics(State(shared): AppState) -> Result<Response, ApiError> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &shared.metrics).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the metrics: {e}"),
        )
    })?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn health(State(shared): AppState) -> Response {
    if shared.stats.ready() {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "starting" })),
        )
            .into_response()
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not answer {method}", uri.path()),
    )
}

/// Upper bounds (seconds) of the end-to-end latency histogram's buckets, `+Inf` last.
const LATENCY_BUCKETS: [f64; 19] = [
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    f64::INFINITY,
];

/// Reads the job's [`Stats`], view sizes and open connections at each scrape.
#[derive(Debug)]
struct JobMetrics {
    stats: Arc<Stats>,
    views: Views,
    slots: Slots,
}

impl Collector for JobMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        for counter in Counter::ALL {
            let spec = counter.spec();
            if !spec.metrics {
                continue;
            }
            let value = ConstCounter::new(self.stats.get(counter));
            value.encode(encoder.encode_descriptor(
                spec.name,
                spec.help,
                None,
                value.metric_type(),
            )?)?;
        }
        let mut rows = encoder.encode_descriptor(
            "view_rows",
            "Rows in each view.",
            None,
            MetricType::Gauge,
        )?;
        for view in self.views.iter() {
            let labels = [("view", view.name())];
            rows.encode_family(&labels)?
                .encode_gauge(&(view.len() as u64))?;
        }
        let open = ConstGauge::new(self.slots.open() as i64);
        open.encode(encoder.encode_descriptor(
            "http_connections",
            "HTTP connections open (this scrape's included).",
            None,
            open.metric_type(),
        )?)?;
        let (sum, count, buckets) = self.latency_buckets();
        encoder
            .encode_descriptor(
                "latency",
                "End-to-end latency: from the sources having emitted everything up to an event \
                 time until every sink has flushed what derives from it (bucket bounds and sum \
                 are within 1% of the recorded values).",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
}

impl JobMetrics {
    /// The latency histogram's sum (seconds), count, and count per bucket of
    /// [`LATENCY_BUCKETS`] (not cumulative), read from the hdrhistogram.
    fn latency_buckets(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets: Vec<(f64, u64)> = LATENCY_BUCKETS.iter().map(|&le| (le, 0)).collect();
        // A writer that panicked left the histogram whole: read it anyway.
        let histogram = self
            .stats
            .latency
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for recorded in histogram.iter_recorded() {
            // The bucket's lowest value: a value recorded at a bound counts below it.
            let seconds = histogram.lowest_equivalent(recorded.value_iterated_to()) as f64 / 1e6;
            let bucket = buckets
                .iter_mut()
                .find(|(le, _)| seconds <= *le)
                .expect("the last bucket is +Inf");
            bucket.1 += recorded.count_at_value();
        }
        let count = histogram.len();
        (histogram.mean() * count as f64 / 1e6, count, buckets)
    }
}
