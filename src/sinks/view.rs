//! Views as a sink: the current rows of a materialized view, kept from the changes a dataflow
//! emits (upserts and deletes per key), applied a whole time at a time once the frontier has
//! passed it, so a reader only ever sees states that existed at some frontier. Readers (the HTTP
//! server) look rows up and page through them; subscribers get every change batch in order.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use differential_dataflow::{Hashable, VecCollection};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use tokio::sync::broadcast;

use crate::operators::Stash;
use crate::state::SectionCheckpoint;

/// One row of a view: its columns by name, in the order the job declares them.
pub type Row = serde_json::Map<String, serde_json::Value>;

/// What happened to one key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Change {
    /// The key's row is now `row`.
    Upsert {
        /// The view key, as text.
        key: String,
        /// The whole new row.
        row: Row,
    },
    /// The key has no row any more.
    Delete {
        /// The view key, as text.
        key: String,
    },
}

/// The changes that became final at one time, in key order (deserializable, so a Rust client
/// can read the change stream).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeBatch {
    /// The timely time (epoch ms, truncated to the job's tick) the changes happened at.
    pub time: u64,
    /// Every key that changed at `time`, once.
    pub changes: Vec<Change>,
}

/// How many change batches a slow subscriber may fall behind before it is dropped (it then
/// reconnects and reads the current rows again).
const SUBSCRIBER_BACKLOG: usize = 1024;

/// The current rows of one view.
#[derive(Debug)]
pub struct ViewStore {
    name: String,
    state: RwLock<ViewState>,
    changes: broadcast::Sender<Arc<ChangeBatch>>,
}

#[derive(Debug, Default)]
struct ViewState {
    rows: BTreeMap<String, Row>,
    /// Every change before this time has been applied.
    frontier: u64,
}

/// A page of rows in key order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Page {
    /// The rows, each with its key.
    pub rows: Vec<KeyedRow>,
    /// The key to pass as `after` for the next page, when there may be one.
    pub next: Option<String>,
    /// The frontier of the state the page was read from.
    pub frontier: u64,
}

/// A row with its key.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KeyedRow {
    /// The view key, as text.
    pub key: String,
    /// The row.
    pub row: Row,
}

impl ViewStore {
    /// An empty view called `name`.
    pub fn new(name: &str) -> Self {
        ViewStore {
            name: name.to_string(),
            state: RwLock::new(ViewState::default()),
            changes: broadcast::channel(SUBSCRIBER_BACKLOG).0,
        }
    }

    /// The view's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Applies the changes final at `batch.time` at once and passes them to the subscribers.
    pub fn apply(&self, batch: ChangeBatch) {
        {
            let mut state = self.state.write().expect("view lock");
            for change in &batch.changes {
                match change {
                    Change::Upsert { key, row } => {
                        state.rows.insert(key.clone(), row.clone());
                    }
                    Change::Delete { key } => {
                        state.rows.remove(key);
                    }
                }
            }
            state.frontier = state.frontier.max(batch.time + 1);
        }
        // No subscriber is not an error.
        let _ = self.changes.send(Arc::new(batch));
    }

    /// The row of `key`, if it has one, with the frontier of the state it was read from.
    pub fn get(&self, key: &str) -> (Option<Row>, u64) {
        let state = self.state.read().expect("view lock");
        (state.rows.get(key).cloned(), state.frontier)
    }

    /// Every row, in key order, each as its JSON text: what a checkpoint keeps of the view.
    fn rows_as_json(&self) -> Vec<(String, String)> {
        let state = self.state.read().expect("view lock");
        state
            .rows
            .iter()
            .map(|(key, row)| {
                (
                    key.clone(),
                    serde_json::Value::Object(row.clone()).to_string(),
                )
            })
            .collect()
    }

    /// Up to `limit` rows whose keys start with `prefix` and come after `after`, in key order.
    pub fn page(&self, prefix: &str, after: Option<&str>, limit: usize) -> Page {
        let state = self.state.read().expect("view lock");
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_string()),
            _ => Bound::Included(prefix.to_string()),
        };
        let mut rows: Vec<KeyedRow> = state
            .rows
            .range((start, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix))
            .take(limit.saturating_add(1))
            .map(|(key, row)| KeyedRow {
                key: key.clone(),
                row: row.clone(),
            })
            .collect();
        let next = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|r| r.key.clone())
        } else {
            None
        };
        Page {
            rows,
            next,
            frontier: state.frontier,
        }
    }

    /// How many rows the view has.
    pub fn len(&self) -> usize {
        self.state.read().expect("view lock").rows.len()
    }

    /// Whether the view has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every change batch applied from now on, in order.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<ChangeBatch>> {
        // Under the lock: `apply_cells` sees this subscriber, or applied its batch before.
        let _state = self.state.read().expect("view lock");
        self.changes.subscribe()
    }

    /// Applies cell updates (each a `(key, (column, JSON text))` and its difference), all at
    /// `time`, to the rows in place and at once, and passes the rows they changed to the
    /// subscribers, if there are any.
    pub fn apply_cells(&self, time: u64, mut updates: Vec<(Cell, isize)>, columns: &[String]) {
        differential_dataflow::consolidation::consolidate(&mut updates);
        // Retractions first: a cell's new value replaces its old one whatever their order.
        updates.sort_by(|((k1, _), d1), ((k2, _), d2)| k1.cmp(k2).then(d1.cmp(d2)));
        let mut state = self.state.write().expect("view lock");
        let subscribed = self.changes.receiver_count() > 0;
        let mut batch = ChangeBatch {
            time,
            changes: Vec::new(),
        };
        let mut updates = updates.into_iter().peekable();
        while let Some(((key, first), diff)) = updates.next() {
            let row = state.rows.entry(key.clone()).or_default();
            let same_key = |((k, _), _): &(Cell, isize)| *k == key;
            for ((column, value), diff) in
                std::iter::once((first, diff)).chain(std::iter::from_fn(|| {
                    updates.next_if(same_key).map(|((_, c), d)| (c, d))
                }))
            {
                let name = &columns[column];
                let value = serde_json::from_str(&value).expect("cells hold JSON text");
                if diff < 0 {
                    if row.get(name) == Some(&value) {
                        row.remove(name);
                    }
                } else {
                    row.insert(name.clone(), value);
                }
            }
            if row.is_empty() {
                state.rows.remove(&key);
                if subscribed {
                    batch.changes.push(Change::Delete { key });
                }
            } else if subscribed {
                let row = row.clone();
                batch.changes.push(Change::Upsert { key, row });
            }
        }
        state.frontier = state.frontier.max(time + 1);
        if subscribed {
            // No subscriber left is not an error.
            let _ = self.changes.send(Arc::new(batch));
        }
    }
}

/// The views of a job, by name.
#[derive(Clone, Debug, Default)]
pub struct Views(Arc<IndexMap<String, Arc<ViewStore>>>);

impl Views {
    /// Empty stores for the views `names`.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        Views(Arc::new(
            names
                .into_iter()
                .map(|name| (name.to_string(), Arc::new(ViewStore::new(name))))
                .collect(),
        ))
    }

    /// The view called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<ViewStore>> {
        self.0.get(name)
    }

    /// Every view, in the order the job declares them.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<ViewStore>> {
        self.0.values()
    }
}

/// One update of a view cell: `(key, (column, value as JSON text))`.
pub type Cell = (String, (usize, String));

/// Writes a collection of view cells into a [`ViewStore`].
pub trait WriteView<'scope> {
    /// Applies the cells' changes to `store` a time at a time, once the frontier has passed
    /// that time, on worker 0 (so one change batch holds every key a time changed); `columns`
    /// names the columns. The returned stream's frontier passes a time once it is applied.
    ///
    /// With `checkpoint`, the rows take part in the job's checkpoints as [`SectionCheckpoint`]
    /// says: a time at or past a pending checkpoint's frontier is applied only once the rows of
    /// the times before it are handed off, as (key, the row's JSON text) entries (see
    /// [`crate::dataflows::views`] for how they are restored).
    fn write_view(
        self,
        store: Arc<ViewStore>,
        columns: Arc<[String]>,
        checkpoint: Option<SectionCheckpoint>,
    ) -> StreamVec<'scope, u64, ()>;
}

impl<'scope> WriteView<'scope> for VecCollection<'scope, u64, Cell, isize> {
    fn write_view(
        self,
        store: Arc<ViewStore>,
        columns: Arc<[String]>,
        mut checkpoint: Option<SectionCheckpoint>,
    ) -> StreamVec<'scope, u64, ()> {
        // Worker 0 holds every row; the others hand off empty shares.
        let writes = self.inner.scope().index() == 0;
        self.inner
            .unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
                Exchange::new(|_: &(Cell, u64, isize)| 0),
                "ViewSink",
                move |_cap, _info| {
                    // Updates by the time they happen at.
                    let mut pending = Stash::default();
                    move |(input, frontier), _output| {
                        let plan = checkpoint.as_mut().and_then(SectionCheckpoint::pending);
                        input.for_each(|cap, data| {
                            for (cell, time, diff) in data.drain(..) {
                                pending.push(time, (cell, diff), || cap.delayed(&time, 0));
                            }
                        });
                        let mut apply = |before: Option<u64>| {
                            while let Some((time, _cap, updates)) = pending.pop_done(|t| {
                                !frontier.less_equal(&t) && before.is_none_or(|before| t < before)
                            }) {
                                store.apply_cells(time, updates, &columns);
                            }
                        };
                        apply(plan);
                        if let Some(at) = plan
                            && !frontier.less_than(&at)
                            && let Some(c) = checkpoint.as_mut()
                        {
                            let rows = match writes {
                                true => store.rows_as_json(),
                                false => Vec::new(),
                            };
                            let entries = rows
                                .into_iter()
                                .map(|(key, row)| (key.hashed(), key, row))
                                .collect::<Vec<_>>();
                            c.hand_off(entries);
                            apply(None);
                        }
                    }
                },
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(n: i64) -> Row {
        let mut row = Row::new();
        row.insert("n".into(), n.into());
        row
    }

    fn upsert(key: &str, n: i64) -> Change {
        Change::Upsert {
            key: key.into(),
            row: row(n),
        }
    }

    #[test]
    fn applies_batches_and_pages_by_prefix_in_key_order() {
        let view = ViewStore::new("v");
        let mut changes = view.subscribe();
        view.apply(ChangeBatch {
            time: 10,
            changes: vec![upsert("a1", 1), upsert("a2", 2), upsert("b1", 3)],
        });
        view.apply(ChangeBatch {
            time: 20,
            changes: vec![Change::Delete { key: "a2".into() }, upsert("a3", 4)],
        });
        assert_eq!(view.get("a1"), (Some(row(1)), 21));
        assert_eq!(view.get("a2"), (None, 21));
        let first = view.page("a", None, 1);
        assert_eq!(first.rows[0].key, "a1");
        assert_eq!(first.next.as_deref(), Some("a1"));
        let second = view.page("a", first.next.as_deref(), 1);
        assert_eq!(second.rows[0].key, "a3");
        assert_eq!(second.next, None);
        assert_eq!(view.page("", None, 10).rows.len(), 3);
        assert_eq!(changes.try_recv().unwrap().time, 10);
        assert_eq!(changes.try_recv().unwrap().time, 20);
    }
}
