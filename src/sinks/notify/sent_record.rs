//! The sent-record: every request id the adapter has decided (sent, or failed for good), kept in
//! an embedded transactional store (redb) that survives restarts. A request whose id is in it is
//! never sent again; its recorded outcome is reported instead.
//!
//! Writes are group-committed: one thread takes every batch of outcomes waiting, writes them in
//! one transaction, makes it durable, then releases the waiting callers. So a busy adapter makes
//! one disk sync per group, not per message.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;

use anyhow::Context as _;
use redb::{Database, ReadableDatabase, TableDefinition};
use tokio::sync::oneshot;

use super::outcome::Outcome;

/// request id → the outcome (JSON).
const OUTCOMES: TableDefinition<&str, &[u8]> = TableDefinition::new("outcomes");

/// A batch of outcomes to make durable, and who waits for it.
type Pending = (Vec<Outcome>, oneshot::Sender<Result<Vec<Outcome>, String>>);

/// The store, shared by the adapter's tasks.
pub struct SentRecord {
    db: Arc<Database>,
    writes: Option<mpsc::Sender<Pending>>,
    writer: Option<thread::JoinHandle<()>>,
}

impl SentRecord {
    /// Opens (or creates) the store at `path`; its directory is created if needed.
    pub fn open(path: &Path) -> anyhow::Result<SentRecord> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the directory of {}", dir.display()))?;
        }
        let db = Database::create(path)
            .with_context(|| format!("opening the sent-record {}", path.display()))?;
        let txn = db.begin_write()?;
        txn.open_table(OUTCOMES)?;
        txn.commit()?;
        let db = Arc::new(db);
        let (writes, queue) = mpsc::channel();
        let writer = {
            let db = Arc::clone(&db);
            thread::Builder::new()
                .name("sent-record".into())
                .spawn(move || group_commit(&db, &queue))
                .context("starting the sent-record writer")?
        };
        Ok(SentRecord {
            db,
            writes: Some(writes),
            writer: Some(writer),
        })
    }

    /// The recorded outcome of each request id, where there is one.
    pub fn lookup<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> anyhow::Result<Vec<Option<Outcome>>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OUTCOMES)?;
        ids.into_iter()
            .map(|id| {
                table
                    .get(id)?
                    .map(|v| serde_json::from_slice(v.value()).context("a corrupt outcome"))
                    .transpose()
            })
            .collect()
    }

    /// Records `outcomes` durably; returns them once they are on disk.
    pub async fn record(&self, outcomes: Vec<Outcome>) -> anyhow::Result<Vec<Outcome>> {
        let (done, wait) = oneshot::channel();
        self.writes
            .as_ref()
            .expect("open until dropped")
            .send((outcomes, done))
            .map_err(|_| anyhow::anyhow!("the sent-record writer has stopped"))?;
        wait.await
            .map_err(|_| anyhow::anyhow!("the sent-record writer has stopped"))?
            .map_err(|e| anyhow::anyhow!("writing the sent-record: {e}"))
    }
}

impl Drop for SentRecord {
    fn drop(&mut self) {
        self.writes.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Writes every batch waiting in one durable transaction, until the store is dropped.
fn group_commit(db: &Database, queue: &mpsc::Receiver<Pending>) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        group.extend(queue.try_iter());
        let written = write(db, group.iter().flat_map(|(outcomes, _)| outcomes));
        for (outcomes, done) in group {
            let _ = done.send(match &written {
                Ok(()) => Ok(outcomes),
                Err(e) => Err(format!("{e:#}")),
            });
        }
    }
}

fn write<'a>(db: &Database, outcomes: impl Iterator<Item = &'a Outcome>) -> anyhow::Result<()> {
    let txn = db.begin_write()?;
    {
        let mut table = txn.open_table(OUTCOMES)?;
        for outcome in outcomes {
            let value = serde_json::to_vec(outcome).expect("an outcome encodes");
            table.insert(outcome.request.request_id.as_str(), value.as_slice())?;
        }
    }
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::notify::outcome::Delivery;
    use crate::sinks::notify::request::{Channel, NotificationRequest};

    fn sent(id: &str) -> Outcome {
        Outcome {
            request: NotificationRequest {
                request_id: id.into(),
                channel: Channel::Sms,
                to: "+41790000001".into(),
                subject: None,
                text: "hi".into(),
            },
            delivery: Delivery::Sent {
                message_id: id.into(),
                status: "PENDING_ACCEPTED".into(),
            },
            attempts: 1,
            deduplicated: false,
        }
    }

    #[tokio::test]
    async fn recorded_outcomes_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/sent.redb");
        {
            let store = SentRecord::open(&path).unwrap();
            assert_eq!(store.lookup(["a"]).unwrap(), vec![None]);
            let written = store.record(vec![sent("a"), sent("b")]).await.unwrap();
            assert_eq!(written.len(), 2);
        }
        let store = SentRecord::open(&path).unwrap();
        assert_eq!(
            store.lookup(["b", "c", "a"]).unwrap(),
            vec![Some(sent("b")), None, Some(sent("a"))]
        );
    }
}
