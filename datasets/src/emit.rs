//! Writing generated traces out: as blocks, or as OTLP protobuf / OTLP JSON files for ingest.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use allegro_engine::block::meta::BlockMeta;
use allegro_engine::block::writer::{BlockWriteOptions, encode_block, put_block};
use allegro_engine::convert::flatten::flatten;
use allegro_engine::error::EngineError;
use allegro_engine::otlp::collector::trace::v1::ExportTraceServiceRequest;
use allegro_engine::otlp::trace::v1::ResourceSpans;
use allegro_engine::otlp_json::{Dialect, encode_resource_spans};
use object_store::ObjectStore;
use prost::Message;

use crate::generate::{GenOptions, Generator};

/// Errors of the dataset tools.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// Writing a block failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The blocking encoder task died.
    #[error("internal error: block encoder task failed: {0}")]
    Task(String),
}

/// What was written.
#[derive(Debug, Default)]
pub struct Summary {
    /// Spans generated.
    pub spans: u64,
    /// Traces generated.
    pub traces: u64,
    /// Blocks written (block output).
    pub blocks: Vec<BlockMeta>,
    /// Files written (OTLP output).
    pub files: Vec<PathBuf>,
    /// Bytes written.
    pub bytes: u64,
}

/// OTLP file encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpFormat {
    /// `ExportTraceServiceRequest` protobuf (`.pb`), as sent to `/v1/traces`.
    Protobuf,
    /// OTLP JSON (`.json`).
    Json,
}

/// How generated traces are cut into blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockCut {
    /// About this many spans per block.
    pub spans: u64,
    /// Every `split_every`th trace with spans of more than one service is split across two
    /// neighbouring blocks: the spans of its first resource (service and pod) in one, the
    /// rest in the next, as when spans arrive more than `trace_idle_period` apart. 0: every
    /// trace whole.
    pub split_every: u64,
}

impl BlockCut {
    /// Blocks of about `spans` spans, every trace whole.
    pub fn whole(spans: u64) -> Self {
        Self {
            spans,
            split_every: 0,
        }
    }
}

/// Cuts the generator's traces into chunks as a [`BlockCut`] says.
struct Chunker {
    g: Generator,
    cut: BlockCut,
    /// The later parts of split traces, for the next chunk.
    carry: Vec<ResourceSpans>,
    traces: u64,
}

impl Chunker {
    fn new(g: Generator, cut: BlockCut) -> Self {
        Self {
            g,
            cut,
            carry: Vec::new(),
            traces: 0,
        }
    }

    /// The next chunk (the parts carried over, then traces until at least `cut.spans` spans;
    /// fewer at the end) and its span count.
    fn next_chunk(&mut self) -> (Vec<ResourceSpans>, u64) {
        let count =
            |rs: &[ResourceSpans]| allegro_engine::convert::normalize::span_count(rs) as u64;
        let mut chunk = std::mem::take(&mut self.carry);
        let mut n = count(&chunk);
        while n < self.cut.spans.max(1) {
            let Some(mut t) = self.g.next_trace() else {
                break;
            };
            self.traces += 1;
            if self.cut.split_every > 0
                && self.traces.is_multiple_of(self.cut.split_every)
                && t.len() > 1
            {
                self.carry.extend(t.split_off(1));
            }
            n += count(&t);
            chunk.extend(t);
        }
        (chunk, n)
    }
}

/// Generates every trace of `opts` into memory (for fixtures and tests; use the writers for
/// large datasets).
pub fn generate_all(opts: GenOptions) -> Vec<Vec<ResourceSpans>> {
    let mut g = Generator::new(opts);
    std::iter::from_fn(|| g.next_trace()).collect()
}

/// Generates spans into blocks cut as `cut` says, written to `store` under `tenant`.
/// `progress` is told the running span count.
pub async fn write_blocks(
    store: &Arc<dyn ObjectStore>,
    tenant: &str,
    opts: GenOptions,
    cut: BlockCut,
    write: &BlockWriteOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<Summary, DatasetError> {
    let mut chunks = Chunker::new(Generator::new(opts), cut);
    let mut summary = Summary::default();
    let mut pending: Option<tokio::task::JoinHandle<Result<_, EngineError>>> = None;
    loop {
        let (chunk, n) = chunks.next_chunk();
        // Encode on a blocking thread while the next chunk is generated.
        if let Some(h) = pending.take() {
            let block = h.await.map_err(|e| DatasetError::Task(e.to_string()))??;
            put_block(store, &block).await?;
            summary.bytes += block.meta.size + block.meta.bloom_size;
            summary.blocks.push(block.meta);
        }
        if n == 0 {
            break;
        }
        progress(chunks.g.spans_produced());
        let tenant = tenant.to_string();
        let write = write.clone();
        pending = Some(tokio::task::spawn_blocking(move || {
            encode_block(&tenant, flatten(chunk).0, &write)
        }));
    }
    summary.spans = chunks.g.spans_produced();
    summary.traces = chunks.g.traces_produced();
    Ok(summary)
}

/// Generates spans into numbered OTLP files of about `file_spans` spans in `dir`.
pub fn write_otlp_files(
    dir: &Path,
    format: OtlpFormat,
    opts: GenOptions,
    file_spans: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<Summary, DatasetError> {
    let io = |path: &Path, source| DatasetError::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let mut chunks = Chunker::new(Generator::new(opts), BlockCut::whole(file_spans));
    let mut summary = Summary::default();
    loop {
        let (chunk, n) = chunks.next_chunk();
        if n == 0 {
            break;
        }
        let (ext, bytes) = match format {
            OtlpFormat::Protobuf => (
                "pb",
                ExportTraceServiceRequest {
                    resource_spans: chunk,
                }
                .encode_to_vec(),
            ),
            OtlpFormat::Json => {
                let doc = serde_json::json!({ "resourceSpans": encode_resource_spans(&chunk, Dialect::Otlp) });
                ("json", doc.to_string().into_bytes())
            }
        };
        let path = dir.join(format!("traces-{:05}.{ext}", summary.files.len()));
        std::fs::write(&path, &bytes).map_err(|e| io(&path, e))?;
        summary.bytes += bytes.len() as u64;
        summary.files.push(path);
        progress(chunks.g.spans_produced());
    }
    summary.spans = chunks.g.spans_produced();
    summary.traces = chunks.g.traces_produced();
    Ok(summary)
}
