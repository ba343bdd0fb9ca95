//! Parquet's `AsyncFileReader` over an `object_store` object of known size.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};

use super::checksums::{Checksums, PageSums};
use crate::error::EngineError;

/// Reads byte ranges of one object; the size comes from `meta.json`, so no HEAD request is made.
/// With checksums, every fetched range is checked against the footer, page index and pages it
/// holds whole before Parquet sees it (see [`super::checksums`]).
#[derive(Debug, Clone)]
pub struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
    footer_hint: usize,
    checksums: Option<(Checksums, u64)>,
    pages: Option<Arc<PageSums>>,
}

impl ObjectReader {
    /// A reader of `path`, `size` bytes long; `footer_hint` bytes are fetched for the footer.
    pub fn new(store: Arc<dyn ObjectStore>, path: Path, size: u64, footer_hint: usize) -> Self {
        Self {
            store,
            path,
            size,
            footer_hint,
            checksums: None,
            pages: None,
        }
    }

    /// This reader checking footer and page index reads against `checksums` (the footer being
    /// the last `footer_len` bytes); `None`: unverified.
    pub fn verified(self, checksums: Option<Checksums>, footer_len: u64) -> Self {
        Self {
            checksums: checksums.map(|c| (c, footer_len)),
            ..self
        }
    }

    /// This reader also checking every page it reads whole against `pages`.
    pub fn with_pages(self, pages: Option<Arc<PageSums>>) -> Self {
        Self { pages, ..self }
    }

    /// Fetches `ranges`, checked when there are checksums.
    async fn fetch(&self, ranges: Vec<Range<u64>>) -> Result<Vec<Bytes>> {
        let got = match self.store.get_ranges(&self.path, &ranges).await {
            Ok(got) => got,
            Err(e) => return Err(self.failed(e).await),
        };
        let Some((sums, footer_len)) = &self.checksums else {
            return Ok(got);
        };
        for (r, bytes) in ranges.iter().zip(&got) {
            if bytes.len() as u64 != r.end - r.start {
                return Err(damaged(
                    &self.path,
                    format!(
                        "read {} bytes at {}, expected {} (the object is shorter than meta.json says)",
                        bytes.len(),
                        r.start,
                        r.end - r.start
                    ),
                ));
            }
            sums.verify_metadata(r.start, bytes, self.size, *footer_len)
                .map_err(|m| damaged(&self.path, m))?;
            if let Some(pages) = &self.pages {
                pages
                    .verify(r.start, bytes)
                    .map_err(|m| damaged(&self.path, m))?;
            }
        }
        Ok(got)
    }

    /// The error for a read that failed with `e`: a damaged block when the object is no longer
    /// the size `meta.json` gives (a truncated file fails a ranged read past its end, and stores
    /// word that differently), else `e` as it came. One HEAD request, on the error path only.
    async fn failed(&self, e: object_store::Error) -> ParquetError {
        if matches!(e, object_store::Error::NotFound { .. }) {
            return external(e);
        }
        match self.store.head(&self.path).await {
            Ok(m) if m.size != self.size => damaged(
                &self.path,
                format!(
                    "the object is {} bytes, meta.json says {} ({e})",
                    m.size, self.size
                ),
            ),
            _ => external(e),
        }
    }
}

fn damaged(path: &Path, message: String) -> ParquetError {
    ParquetError::External(Box::new(EngineError::corrupt(path, message)))
}

fn external(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, Result<Bytes>> {
        async move {
            if self.checksums.is_some() {
                let mut one = self.fetch(vec![range]).await?;
                return Ok(one.pop().unwrap_or_default());
            }
            let opts = GetOptions {
                range: Some(GetRange::Bounded(range)),
                ..Default::default()
            };
            let got = async { self.store.get_opts(&self.path, opts).await?.bytes().await };
            match got.await {
                Ok(b) => Ok(b),
                Err(e) => Err(self.failed(e).await),
            }
        }
        .boxed()
    }

    fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, Result<Vec<Bytes>>> {
        async move { self.fetch(ranges).await }.boxed()
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
