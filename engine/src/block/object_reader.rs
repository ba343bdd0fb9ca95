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

use super::checksums::Checksums;
use crate::error::EngineError;

/// Reads byte ranges of one object; the size comes from `meta.json`, so no HEAD request is made.
/// With checksums, every read is widened to whole stripes and verified before it is returned.
#[derive(Debug, Clone)]
pub struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
    footer_hint: usize,
    checksums: Option<Checksums>,
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
        }
    }

    /// This reader verifying what it reads against `checksums` (`None`: unverified).
    pub fn verified(self, checksums: Option<Checksums>) -> Self {
        Self { checksums, ..self }
    }

    /// Fetches `ranges`, widened to stripes and verified when there are checksums.
    async fn fetch(&self, ranges: Vec<Range<u64>>) -> Result<Vec<Bytes>> {
        let Some(sums) = &self.checksums else {
            return self
                .store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(external);
        };
        let wide: Vec<Range<u64>> = ranges.iter().map(|r| sums.widen(r, self.size)).collect();
        let got = self
            .store
            .get_ranges(&self.path, &wide)
            .await
            .map_err(external)?;
        let mut out = Vec::with_capacity(ranges.len());
        for ((want, wide), bytes) in ranges.iter().zip(&wide).zip(got) {
            if bytes.len() as u64 != wide.end - wide.start {
                return Err(damaged(
                    &self.path,
                    format!(
                        "read {} bytes at {}, expected {} (the object is shorter than meta.json says)",
                        bytes.len(),
                        wide.start,
                        wide.end - wide.start
                    ),
                ));
            }
            sums.verify(wide.start, &bytes)
                .map_err(|m| damaged(&self.path, m))?;
            let from = (want.start - wide.start) as usize;
            out.push(bytes.slice(from..from + (want.end - want.start) as usize));
        }
        Ok(out)
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
