//! Parquet's `AsyncFileReader` over an `object_store` object of known size.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore};
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};

/// Reads byte ranges of one object; the size comes from `meta.json`, so no HEAD request is made.
#[derive(Debug, Clone)]
pub struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
    footer_hint: usize,
}

impl ObjectReader {
    /// A reader of `path`, `size` bytes long; `footer_hint` bytes are fetched for the footer.
    pub fn new(store: Arc<dyn ObjectStore>, path: Path, size: u64, footer_hint: usize) -> Self {
        Self {
            store,
            path,
            size,
            footer_hint,
        }
    }
}

fn external(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, Result<Bytes>> {
        async move {
            let opts = GetOptions {
                range: Some(GetRange::Bounded(range)),
                ..Default::default()
            };
            let r = self
                .store
                .get_opts(&self.path, opts)
                .await
                .map_err(external)?;
            r.bytes().await.map_err(external)
        }
        .boxed()
    }

    fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(external)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, Result<Arc<ParquetMetaData>>> {
        async move {
            let policy = match options {
                Some(o) if o.column_index_policy() != PageIndexPolicy::Skip => {
                    PageIndexPolicy::Optional
                }
                _ => PageIndexPolicy::Skip,
            };
            let size = self.size;
            let reader = ParquetMetaDataReader::new()
                .with_page_index_policy(policy)
                .with_prefetch_hint(Some(self.footer_hint));
            Ok(Arc::new(reader.load_and_finish(self, size).await?))
        }
        .boxed()
    }
}
