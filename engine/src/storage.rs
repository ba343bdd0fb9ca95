//! Object storage: the backend chosen by config, and a wrapper that counts what is read.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

mod local;

pub use local::LocalStore;

/// Which object store holds the blocks, with Tempo's key names (`storage.trace.*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum StorageBackend {
    /// A directory on the local filesystem (the embedded default).
    Local {
        /// Root directory of the blocks.
        path: std::path::PathBuf,
    },
    /// Amazon S3 or an S3-compatible server.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Endpoint (host or URL); empty for AWS.
        endpoint: String,
        /// Region.
        region: String,
        /// Access key; empty to use the environment.
        access_key: String,
        /// Secret key; empty to use the environment.
        secret_key: String,
        /// Use plain HTTP (for local S3-compatible servers).
        insecure: bool,
        /// Path-style addressing.
        forcepathstyle: bool,
    },
    /// Google Cloud Storage.
    Gcs {
        /// Bucket name.
        bucket_name: String,
    },
    /// Azure Blob Storage.
    Azure {
        /// Container name.
        container_name: String,
        /// Storage account name.
        storage_account_name: String,
        /// Storage account key; empty to use the environment.
        storage_account_key: String,
    },
}

/// Deletes the object at `path` in `store`; one already gone is no error.
pub async fn delete_if_present(store: &dyn ObjectStore, path: &Path) -> Result<()> {
    match object_store::ObjectStoreExt::delete(store, path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(EngineError::storage(path, e)),
    }
}

/// All of the object at `path` in `store`.
pub async fn whole_object(store: &dyn ObjectStore, path: &Path) -> Result<Bytes> {
    let got = store
        .get_opts(path, GetOptions::default())
        .await
        .map_err(|e| EngineError::storage(path, e))?;
    got.bytes().await.map_err(|e| EngineError::storage(path, e))
}

/// Opens the configured object store.
pub fn open_store(backend: &StorageBackend) -> Result<Arc<dyn ObjectStore>> {
    let bad = |what: &str, e: object_store::Error| {
        EngineError::InvalidInput(format!("storage.trace.{what}: {e}"))
    };
    Ok(match backend {
        StorageBackend::Local { path } => {
            std::fs::create_dir_all(path).map_err(|e| {
                EngineError::InvalidInput(format!(
                    "storage.trace.local.path {}: cannot create: {e}",
                    path.display()
                ))
            })?;
            Arc::new(LocalStore::new(
                // Retention deletes blocks object by object; their directories go with them.
                object_store::local::LocalFileSystem::new_with_prefix(path)
                    .map_err(|e| bad("local.path", e))?
                    .with_automatic_cleanup(true),
            ))
        }
        StorageBackend::S3 {
            bucket,
            endpoint,
            region,
            access_key,
            secret_key,
            insecure,
            forcepathstyle,
        } => {
            let mut b = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
            if !endpoint.is_empty() {
                let url = if endpoint.contains("://") {
                    endpoint.clone()
                } else {
                    format!("{}://{endpoint}", if *insecure { "http" } else { "https" })
                };
                b = b.with_endpoint(url).with_allow_http(*insecure);
            }
            if !region.is_empty() {
                b = b.with_region(region);
            }
            if !access_key.is_empty() {
                b = b
                    .with_access_key_id(access_key)
                    .with_secret_access_key(secret_key);
            }
            b = b.with_virtual_hosted_style_request(!*forcepathstyle);
            Arc::new(b.build().map_err(|e| bad("s3", e))?)
        }
        StorageBackend::Gcs { bucket_name } => Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket_name)
                .build()
                .map_err(|e| bad("gcs", e))?,
        ),
        StorageBackend::Azure {
            container_name,
            storage_account_name,
            storage_account_key,
        } => {
            let mut b = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_container_name(container_name)
                .with_account(storage_account_name);
            if !storage_account_key.is_empty() {
                b = b.with_access_key(storage_account_key);
            }
            Arc::new(b.build().map_err(|e| bad("azure", e))?)
        }
    })
}

/// Counters of what a [`CountingStore`] read.
#[derive(Debug, Default)]
pub struct ReadCounters {
    /// Read requests (GET, ranged GET).
    pub requests: AtomicU64,
    /// Bytes returned by reads.
    pub bytes: AtomicU64,
}

impl ReadCounters {
    /// (requests, bytes) so far.
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.requests.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// An object store wrapper that counts read requests and bytes; used by the query metrics
/// (`inspectedBytes`) and the benchmarks.
#[derive(Debug)]
pub struct CountingStore {
    inner: Arc<dyn ObjectStore>,
    /// The counters, shared.
    pub counters: Arc<ReadCounters>,
}

impl CountingStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            counters: Arc::default(),
        }
    }

    fn count(&self, bytes: u64) {
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl fmt::Display for CountingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for CountingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let head = options.head;
        let r = self.inner.get_opts(location, options).await?;
        self.count(if head { 0 } else { r.range.end - r.range.start });
        Ok(r)
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        let r = self.inner.get_ranges(location, ranges).await?;
        self.counters
            .requests
            .fetch_add(ranges.len() as u64, Ordering::Relaxed);
        self.counters
            .bytes
            .fetch_add(r.iter().map(|b| b.len() as u64).sum(), Ordering::Relaxed);
        Ok(r)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
