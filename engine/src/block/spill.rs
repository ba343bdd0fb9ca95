//! Where a block being written is kept until it is stored: in memory, or in unnamed files on
//! local disk.
//!
//! A flush of the head writes a block bounded by `max_block_bytes` and keeps it in memory. A
//! merge's output grows with its inputs: the last merge of a 40-block window built its 180 MB
//! `data.parquet` in a `Vec` and took the compactor to 1.14 GiB (docs/benchmarks.md,
//! compaction of one window). With a spill directory it goes to an unnamed file there (Linux
//! `O_TMPFILE`: a crash leaves nothing to clean up), the checksums are computed reading the
//! file back a chunk at a time, and the data is uploaded in parts (`put_multipart`), so what a
//! merge holds no longer follows what it writes.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutOptions, PutPayload, WriteMultipart};
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};

use super::checksums::{Checksums, Sweep};
use crate::error::{EngineError, Result};

/// Bytes read from a spilled file at a time: one upload part (S3 wants at least 5 MiB), and
/// one checksum chunk.
const CHUNK: usize = 8 << 20;
/// Upload parts in flight at once.
const PARTS_IN_FLIGHT: usize = 2;

fn io_err(what: impl std::fmt::Display, e: std::io::Error) -> EngineError {
    EngineError::Storage {
        path: what.to_string(),
        source: object_store::Error::Generic {
            store: "spill",
            source: Box::new(e),
        },
    }
}

/// An unnamed file in `dir` (created if missing).
fn unnamed_file(dir: &FsPath) -> Result<File> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir.display(), e))?;
    tempfile::tempfile_in(dir).map_err(|e| io_err(dir.display(), e))
}

/// A block's `data.parquet`, encoded.
#[derive(Debug, Clone)]
pub enum BlockData {
    /// Held in memory.
    Memory(Bytes),
    /// In an unnamed local file.
    Spilled(Arc<SpilledFile>),
}

/// An unnamed local file and its length.
#[derive(Debug)]
pub struct SpilledFile {
    file: File,
    len: u64,
    dir: PathBuf,
}

impl SpilledFile {
    /// Its bytes as `(offset, length)` pieces of at most [`CHUNK`], front to back.
    fn chunks(&self) -> impl Iterator<Item = (u64, usize)> + use<> {
        let len = self.len;
        (0..len)
            .step_by(CHUNK)
            .map(move |at| (at, CHUNK.min((len - at) as usize)))
    }

    fn read_at(&self, at: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0; len];
        self.file
            .read_exact_at(&mut buf, at)
            .map_err(|e| io_err(self.dir.display(), e))?;
        Ok(buf)
    }
}

impl BlockData {
    /// Its size in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Self::Memory(b) => b.len() as u64,
            Self::Spilled(f) => f.len,
        }
    }

    /// True when it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All its bytes (a spilled file is read whole: for tests and small blocks).
    pub fn to_bytes(&self) -> Result<Bytes> {
        match self {
            Self::Memory(b) => Ok(b.clone()),
            Self::Spilled(f) => Ok(Bytes::from(f.read_at(0, f.len as usize)?)),
        }
    }

    /// The length of the Parquet footer (metadata, its length and the magic), from the
    /// file's last 8 bytes.
    pub fn footer_len(&self) -> Result<u64> {
        let Some(at) = self.len().checked_sub(8) else {
            return Ok(0);
        };
        let tail = match self {
            Self::Memory(b) => b[at as usize..].to_vec(),
            Self::Spilled(f) => f.read_at(at, 8)?,
        };
        Ok(u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]])) + 8)
    }

    /// The checksums of the file (its footer read back for the page locations) and `bloom`.
    pub fn checksums(&self, footer_len: u64, bloom: &[u8]) -> Result<Checksums> {
        let internal = |m: String| EngineError::Internal(format!("checksums of a new block: {m}"));
        let md = self.metadata().map_err(|e| internal(e.to_string()))?;
        match self {
            Self::Memory(b) => Checksums::of(b, &md, footer_len, bloom).map_err(internal),
            Self::Spilled(f) => {
                let mut sweep = Sweep::new(f.len, &md, footer_len).map_err(internal)?;
                for (at, n) in f.chunks() {
                    sweep.feed(&f.read_at(at, n)?);
                }
                sweep.finish(bloom).map_err(internal)
            }
        }
    }

    fn metadata(&self) -> parquet::errors::Result<ParquetMetaData> {
        let reader = ParquetMetaDataReader::new().with_page_index_policy(PageIndexPolicy::Required);
        match self {
            Self::Memory(b) => reader.parse_and_finish(b),
            Self::Spilled(f) => reader.parse_and_finish(&f.file),
        }
    }

    /// Stores it at `path`: in one request from memory, in parts from a spilled file.
    pub async fn put(&self, store: &Arc<dyn ObjectStore>, path: &Path) -> Result<()> {
        let f = match self {
            Self::Memory(b) => {
                store
                    .put_opts(
                        path,
                        PutPayload::from_bytes(b.clone()),
                        PutOptions::default(),
                    )
                    .await
                    .map_err(|e| EngineError::storage(path, e))?;
                return Ok(());
            }
            Self::Spilled(f) => f.clone(),
        };
        let upload = store
            .put_multipart(path)
            .await
            .map_err(|e| EngineError::storage(path, e))?;
        let mut parts = WriteMultipart::new_with_chunk_size(upload, CHUNK);
        let sent = async {
            for (at, n) in f.chunks() {
                let file = f.clone();
                let bytes = tokio::task::spawn_blocking(move || file.read_at(at, n))
                    .await
                    .map_err(|e| {
                        EngineError::Internal(format!("reading a spilled block: {e}"))
                    })??;
                parts
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| EngineError::storage(path, e))?;
                parts.put(Bytes::from(bytes));
            }
            Ok(())
        }
        .await;
        if let Err(e) = sent {
            // The parts already sent are dropped with the upload.
            if let Err(abort) = parts.abort().await {
                tracing::warn!(path = %path, error = %abort, "upload not aborted");
            }
            return Err(e);
        }
        parts
            .finish()
            .await
            .map_err(|e| EngineError::storage(path, e))?;
        Ok(())
    }
}

/// Where the Parquet encoder writes `data.parquet`.
pub(crate) enum Sink {
    /// A growing buffer.
    Memory(Vec<u8>),
    /// An unnamed file in `dir`.
    File { out: BufWriter<File>, dir: PathBuf },
}

impl Sink {
    /// A sink in `spill_dir`, or in memory (`reserve` bytes ahead) without one.
    pub(crate) fn new(spill_dir: Option<&FsPath>, reserve: usize) -> Result<Self> {
        Ok(match spill_dir {
            None => Self::Memory(Vec::with_capacity(reserve)),
            Some(dir) => Self::File {
                out: BufWriter::with_capacity(1 << 20, unnamed_file(dir)?),
                dir: dir.to_path_buf(),
            },
        })
    }

    /// What was written.
    pub(crate) fn finish(self) -> Result<BlockData> {
        match self {
            Self::Memory(v) => Ok(BlockData::Memory(Bytes::from(v))),
            Self::File { out, dir } => {
                let file = out
                    .into_inner()
                    .map_err(|e| io_err(dir.display(), e.into_error()))?;
                let len = file.metadata().map_err(|e| io_err(dir.display(), e))?.len();
                Ok(BlockData::Spilled(Arc::new(SpilledFile { file, len, dir })))
            }
        }
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Memory(v) => v.write(buf),
            Self::File { out, .. } => out.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Memory(v) => v.write_all(buf),
            Self::File { out, .. } => out.write_all(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Memory(_) => Ok(()),
            Self::File { out, .. } => out.flush(),
        }
    }
}
