//! One subscriber's change stream, its backlog bounded by batches and by bytes.
//!
//! A task of its own reads the view's broadcast as batches come (so a subscriber that does not
//! read holds no batch in the view's shared buffer) and queues them, encoded, for the
//! subscriber's answer. Once the subscriber has more than [`ServerLimits::subscriber_batches`]
//! batches or [`ServerLimits::subscriber_bytes`] bytes waiting, it gets one `lagged` event after
//! those, and its stream ends: it reads the rows again and resubscribes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::response::sse::Event;
use futures_util::Stream;
use serde_json::json;
use tokio::sync::{broadcast, mpsc, watch};

use super::connections::ServerLimits;
use crate::sinks::view::ChangeBatch;

/// What waits to be sent to a subscriber.
enum Item {
    /// An encoded change batch.
    Changes(String),
    /// Why the stream ends here.
    Lagged(String),
}

/// What a subscriber has waiting: change batches and their bytes.
#[derive(Default)]
struct Waiting {
    batches: AtomicUsize,
    bytes: AtomicUsize,
}

/// A subscriber's change stream: the batches its forwarding task queued.
pub(super) struct Feed {
    items: mpsc::UnboundedReceiver<Item>,
    waiting: Arc<Waiting>,
    stop: watch::Receiver<bool>,
}

impl Feed {
    /// Starts forwarding `changes` (a fresh subscription) within `limits`, on the current tokio
    /// runtime, until the feed is dropped or lags. The stream ends when `stop` turns true.
    pub(super) fn start(
        changes: broadcast::Receiver<Arc<ChangeBatch>>,
        stop: watch::Receiver<bool>,
        limits: &ServerLimits,
    ) -> Feed {
        let (queue, items) = mpsc::unbounded_channel();
        let waiting = Arc::new(Waiting::default());
        tokio::spawn(forward(
            changes,
            queue,
            Arc::clone(&waiting),
            (limits.subscriber_batches, limits.subscriber_bytes),
        ));
        Feed {
            items,
            waiting,
            stop,
        }
    }

    /// The batches as `changes` events, in order, until the subscriber lags (one `lagged`
    /// event with a JSON error), the view goes away or the server stops.
    pub(super) fn events(self) -> impl Stream<Item = Result<Event, axum::Error>> + Send {
        futures_util::stream::unfold(self, |mut feed| async move {
            let item = tokio::select! {
                biased;
                _ = feed.stop.wait_for(|&stop| stop) => return None,
                item = feed.items.recv() => item?,
            };
            let event = match item {
                Item::Changes(data) => {
                    feed.waiting.batches.fetch_sub(1, Ordering::AcqRel);
                    feed.waiting.bytes.fetch_sub(data.len(), Ordering::AcqRel);
                    Ok(Event::default().event("changes").data(data))
                }
                Item::Lagged(error) => Event::default()
                    .event("lagged")
                    .json_data(json!({ "error": error })),
            };
            Some((event, feed))
        })
    }
}

/// Queues each batch of `changes` for the subscriber while it has fewer than `max` (batches,
/// bytes) waiting (a batch is always queued when nothing waits); else queues why it lagged and
/// ends. Ends too when the subscriber goes away or the view does.
async fn forward(
    mut changes: broadcast::Receiver<Arc<ChangeBatch>>,
    queue: mpsc::UnboundedSender<Item>,
    waiting: Arc<Waiting>,
    (max_batches, max_bytes): (usize, usize),
) {
    let why = loop {
        let received = tokio::select! {
            biased;
            () = queue.closed() => return,
            received = changes.recv() => received,
        };
        match received {
            Ok(batch) => {
                // Compact JSON holds no line break, as an SSE data line must not.
                let data = serde_json::to_string(&*batch).expect("a change batch encodes");
                let batches = waiting.batches.load(Ordering::Acquire);
                let bytes = waiting.bytes.load(Ordering::Acquire);
                if batches > 0 && (batches >= max_batches || bytes + data.len() > max_bytes) {
                    break format!(
                        "this subscriber fell {batches} change batches ({bytes} bytes) behind"
                    );
                }
                waiting.batches.fetch_add(1, Ordering::AcqRel);
                waiting.bytes.fetch_add(data.len(), Ordering::AcqRel);
                if queue.send(Item::Changes(data)).is_err() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                break format!("this subscriber fell {missed} change batches behind");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    };
    let _ = queue.send(Item::Lagged(format!(
        "{why}; read the rows again and resubscribe"
    )));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::view::{Change, ViewStore};
    use axum::response::IntoResponse as _;
    use axum::response::sse::Sse;

    /// The stream's frames, read once it has ended.
    async fn frames(feed: Feed) -> Vec<String> {
        let body = Sse::new(feed.events()).into_response().into_body();
        let text = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let text = String::from_utf8(text.to_vec()).unwrap();
        text.split_terminator("\n\n").map(String::from).collect()
    }

    fn lagged_error(frame: &str) -> String {
        let data = frame
            .strip_prefix("event: lagged\ndata: ")
            .unwrap_or_else(|| panic!("{frame}"));
        let error: serde_json::Value = serde_json::from_str(data).unwrap();
        error["error"].as_str().unwrap().to_string()
    }

    fn batch(time: u64, key: &str) -> ChangeBatch {
        ChangeBatch {
            time,
            changes: vec![Change::Delete { key: key.into() }],
        }
    }

    #[tokio::test]
    async fn a_subscriber_behind_the_views_buffer_gets_one_lagged_event() {
        let view = ViewStore::new("v");
        let (_stop, stopped) = watch::channel(false);
        let feed = Feed::start(view.subscribe(), stopped, &ServerLimits::default());
        // More batches than the view buffers, before the forwarding task has run at all.
        for time in 0..1100 {
            view.apply(batch(time, "k"));
        }
        let frames = frames(feed).await;
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert!(lagged_error(&frames[0]).contains("resubscribe"));
    }

    #[tokio::test]
    async fn a_subscriber_with_too_many_bytes_waiting_lags_after_them() {
        let view = ViewStore::new("v");
        let (_stop, stopped) = watch::channel(false);
        let limits = ServerLimits {
            subscriber_bytes: 1000,
            ..ServerLimits::default()
        };
        let key = "k".repeat(100);
        let size = serde_json::to_string(&batch(0, &key)).unwrap().len();
        let feed = Feed::start(view.subscribe(), stopped, &limits);
        for time in 0..50 {
            view.apply(batch(time, &key));
        }
        // Nothing is read until the forwarding task has taken every batch.
        let frames = frames(feed).await;
        let fit = 1000 / size;
        assert_eq!(frames.len(), fit + 1, "{frames:?}");
        for (time, frame) in frames[..fit].iter().enumerate() {
            let data = frame.strip_prefix("event: changes\ndata: ").unwrap();
            let got: ChangeBatch = serde_json::from_str(data).unwrap();
            assert_eq!(got.time, time as u64);
        }
        let error = lagged_error(&frames[fit]);
        assert!(
            error.starts_with(&format!(
                "this subscriber fell {fit} change batches ({} bytes) behind",
                fit * size
            )),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_batch_larger_than_the_budget_reaches_a_subscriber_with_nothing_waiting() {
        let view = ViewStore::new("v");
        let (stop, stopped) = watch::channel(false);
        let limits = ServerLimits {
            subscriber_bytes: 10,
            ..ServerLimits::default()
        };
        let feed = Feed::start(view.subscribe(), stopped, &limits);
        view.apply(batch(7, &"k".repeat(100)));
        let mut events = Box::pin(feed.events());
        let first = futures_util::StreamExt::next(&mut events).await;
        assert!(first.is_some_and(|e| e.is_ok()));
        stop.send_replace(true);
        assert!(futures_util::StreamExt::next(&mut events).await.is_none());
    }
}
