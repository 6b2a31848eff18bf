//! A checkpoint store: a local directory or an S3 bucket behind the `object_store` crate, with
//! the layout of checkpoints in it. Its methods are synchronous; the store owns a small tokio
//! runtime that drives the object store's futures, so dataflow threads and the CLI call it
//! directly.
//!
//! Layout under the store's root:
//!
//! ```text
//! manifests/00000000000000000007            checkpoint 7's manifest: it exists only once complete
//! data/00000000000000000007/SECTION/W-of-N  the run of SECTION written by worker W of N in 7
//! ```
//!
//! Every key is written once and never rewritten. A manifest is one put: atomic on S3, and on a
//! directory a write to a temporary file and a rename. Ids are zero-padded so that listing order
//! is numeric order.
//!
//! S3 settings come from the standard AWS environment variables (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`/`AWS_DEFAULT_REGION`, …), and
//! `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT`) points at an S3-compatible server; an `http://`
//! endpoint is allowed without TLS. Credentials are never logged: the store displays as its
//! location only.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

use super::format::{self, Kind};
use super::location::Location;
use super::manifest::{CheckpointId, Manifest};

const MANIFESTS: &str = "manifests";
const DATA: &str = "data";

/// A checkpoint store. Cheap to clone: clones share the connection and the runtime.
///
/// # Examples
///
/// ```
/// use eddy::state::{CheckpointStore, Location};
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = CheckpointStore::open(&Location::Dir(dir.path().into())).unwrap();
/// assert!(store.checkpoints().unwrap().is_empty());
/// ```
#[derive(Clone)]
pub struct CheckpointStore {
    inner: Arc<Inner>,
}

struct Inner {
    location: Location,
    objects: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Runtime,
}

impl fmt::Display for CheckpointStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.location.fmt(f)
    }
}

impl fmt::Debug for CheckpointStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CheckpointStore({})", self.inner.location)
    }
}

/// One listed checkpoint: its id and its manifest, or why the manifest cannot be read.
pub type Listed = (CheckpointId, Result<Manifest, String>);

impl CheckpointStore {
    /// Opens the store at `location`, creating a missing directory; S3 settings come from the
    /// process's `AWS_*` environment variables. Nothing is read yet.
    pub fn open(location: &Location) -> Result<CheckpointStore> {
        let vars = std::env::vars_os()
            .filter_map(|(key, value)| Some((key.into_string().ok()?, value.into_string().ok()?)));
        CheckpointStore::open_with_env(location, vars)
    }

    /// Opens the store at `location`, taking S3 settings from `vars` (`AWS_*` name, value)
    /// instead of the process's environment.
    pub fn open_with_env(
        location: &Location,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<CheckpointStore> {
        let objects: Arc<dyn ObjectStore> = match location {
            Location::Dir(dir) => {
                std::fs::create_dir_all(dir).with_context(|| {
                    format!("creating the checkpoint directory {}", dir.display())
                })?;
                Arc::new(
                    LocalFileSystem::new_with_prefix(dir)
                        .with_context(|| format!("opening {}", dir.display()))?
                        .with_automatic_cleanup(true),
                )
            }
            Location::S3 { bucket, prefix } => {
                let mut builder = AmazonS3Builder::new();
                for (key, value) in vars {
                    if key.starts_with("AWS_")
                        && let Ok(key) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>()
                    {
                        builder = builder.with_config(key, value);
                    }
                }
                builder = builder.with_bucket_name(bucket).with_retry(RetryConfig {
                    max_retries: 4,
                    retry_timeout: Duration::from_secs(30),
                    ..RetryConfig::default()
                });
                if builder
                    .get_config_value(&AmazonS3ConfigKey::Endpoint)
                    .is_some_and(|endpoint| endpoint.starts_with("http://"))
                {
                    builder = builder.with_allow_http(true);
                }
                let s3 = builder
                    .build()
                    .with_context(|| format!("configuring the S3 store {location}"))?;
                if prefix.is_empty() {
                    Arc::new(s3)
                } else {
                    Arc::new(PrefixStore::new(s3, prefix.as_str()))
                }
            }
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("eddy-checkpoints")
            .enable_all()
            .build()
            .context("starting the checkpoint store's runtime")?;
        Ok(CheckpointStore {
            inner: Arc::new(Inner {
                location: location.clone(),
                objects,
                runtime,
            }),
        })
    }

    /// Where it is.
    pub fn location(&self) -> &Location {
        &self.inner.location
    }

    /// Every checkpoint with a manifest, newest first, each with its manifest or the reason it
    /// cannot be read. The runs are not checked here (a restore checks them).
    pub fn checkpoints(&self) -> Result<Vec<Listed>> {
        let mut ids = self.manifest_ids()?;
        ids.reverse();
        Ok(ids
            .into_iter()
            .map(|id| (id, self.manifest(id).map_err(|e| format!("{e:#}"))))
            .collect())
    }

    /// Checkpoint `id`'s manifest, checked and decoded.
    pub fn manifest(&self, id: CheckpointId) -> Result<Manifest> {
        let key = manifest_key(id);
        let bytes = self.get(&key)?;
        let manifest: Manifest =
            format::read(Kind::Manifest, &bytes).with_context(|| format!("manifest `{key}`"))?;
        anyhow::ensure!(
            manifest.id == id,
            "manifest `{key}` is that of checkpoint {}",
            manifest.id
        );
        Ok(manifest)
    }

    /// The ids of the checkpoints with a manifest, ascending.
    pub(super) fn manifest_ids(&self) -> Result<Vec<CheckpointId>> {
        let mut ids: Vec<CheckpointId> = self
            .list(MANIFESTS)?
            .iter()
            .filter_map(|(key, _)| key.rsplit('/').next()?.parse().ok())
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Every key under `data/` with the checkpoint that wrote it and its size.
    pub(super) fn data(&self) -> Result<Vec<(String, CheckpointId, u64)>> {
        Ok(self
            .list(DATA)?
            .into_iter()
            .filter_map(|(key, size)| {
                let id = key.split('/').nth(1)?.parse().ok()?;
                Some((key, id, size))
            })
            .collect())
    }

    /// An id above every checkpoint's, complete or not, in the store.
    pub(super) fn next_id(&self) -> Result<CheckpointId> {
        let manifests = self.manifest_ids()?.last().copied().unwrap_or(0);
        let data = self.data()?.iter().map(|d| d.1).max().unwrap_or(0);
        Ok(manifests.max(data) + 1)
    }

    /// Runs `future` on the store's runtime, from a thread outside it.
    pub(super) fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.inner.runtime.block_on(future)
    }

    /// Starts `future` on the store's runtime.
    pub(super) fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.runtime.spawn(future)
    }

    /// A future that puts `bytes` at `key`, atomically.
    pub(super) fn put_future(
        &self,
        key: String,
        bytes: Vec<u8>,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        let objects = Arc::clone(&self.inner.objects);
        async move {
            let path = Path::parse(&key).with_context(|| format!("key `{key}`"))?;
            objects
                .put(&path, PutPayload::from(bytes))
                .await
                .with_context(|| format!("writing `{key}`"))?;
            Ok(())
        }
    }

    /// A future that gets the object at `key`.
    pub(super) fn get_future(
        &self,
        key: String,
    ) -> impl Future<Output = Result<Vec<u8>>> + Send + 'static {
        let objects = Arc::clone(&self.inner.objects);
        async move {
            let path = Path::parse(&key).with_context(|| format!("key `{key}`"))?;
            let read = async { objects.get(&path).await?.bytes().await };
            match read.await {
                Ok(bytes) => Ok(bytes.into()),
                Err(object_store::Error::NotFound { .. }) => {
                    Err(anyhow::anyhow!("`{key}` is missing"))
                }
                Err(e) => Err(e).with_context(|| format!("reading `{key}`")),
            }
        }
    }

    /// Puts `bytes` at `key`, atomically.
    pub(super) fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        self.block_on(self.put_future(key.into(), bytes))
    }

    /// The object at `key`.
    pub(super) fn get(&self, key: &str) -> Result<Vec<u8>> {
        self.block_on(self.get_future(key.into()))
    }

    /// Deletes the objects at `keys`; one that is already gone is no error.
    pub(super) fn delete(&self, keys: Vec<String>) -> Result<()> {
        let objects = Arc::clone(&self.inner.objects);
        self.block_on(async move {
            let paths = keys
                .iter()
                .map(Path::parse)
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .map(Ok);
            let mut deleted = objects.delete_stream(Box::pin(futures_util::stream::iter(paths)));
            while let Some(result) = deleted.next().await {
                match result {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e).context("deleting old checkpoint files"),
                }
            }
            Ok(())
        })
    }

    /// Every key under `prefix` with its size.
    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let objects = Arc::clone(&self.inner.objects);
        let prefix = Path::from(prefix);
        self.block_on(async move {
            let listed: Vec<_> = objects
                .list(Some(&prefix))
                .try_collect()
                .await
                .with_context(|| format!("listing `{prefix}`"))?;
            Ok(listed
                .into_iter()
                .map(|meta| (meta.location.to_string(), meta.size))
                .collect())
        })
    }
}

/// The key of checkpoint `id`'s manifest.
pub(super) fn manifest_key(id: CheckpointId) -> String {
    format!("{MANIFESTS}/{id:020}")
}

/// The key of the run of `section` that worker `worker` of `peers` writes in checkpoint `id`; the
/// section's name is percent-encoded where a key could not hold it.
pub(super) fn run_key(id: CheckpointId, section: &str, worker: usize, peers: usize) -> String {
    let id = format!("{id:020}");
    let file = format!("{worker}-of-{peers}");
    Path::from_iter([DATA, id.as_str(), section, file.as_str()]).to_string()
}
