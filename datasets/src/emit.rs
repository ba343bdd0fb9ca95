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

/// Whole traces from `g` until at least `spans` spans (fewer at the end); returns them and
/// their span count.
fn next_chunk(g: &mut Generator, spans: u64) -> (Vec<ResourceSpans>, u64) {
    let mut chunk = Vec::new();
    let mut n = 0u64;
    while n < spans.max(1) {
        let Some(t) = g.next_trace() else { break };
        n += allegro_engine::convert::normalize::span_count(&t) as u64;
        chunk.extend(t);
    }
    (chunk, n)
}

/// Generates every trace of `opts` into memory (for fixtures and tests; use the writers for
/// large datasets).
pub fn generate_all(opts: GenOptions) -> Vec<Vec<ResourceSpans>> {
    let mut g = Generator::new(opts);
    std::iter::from_fn(|| g.next_trace()).collect()
}

/// Generates spans into blocks of about `block_spans` spans each (whole traces), written to
/// `store` under `tenant`. `progress` is told the running span count.
pub async fn write_blocks(
    store: &Arc<dyn ObjectStore>,
    tenant: &str,
    opts: GenOptions,
    block_spans: u64,
    write: &BlockWriteOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<Summary, DatasetError> {
    let mut g = Generator::new(opts);
    let mut summary = Summary::default();
    let mut pending: Option<tokio::task::JoinHandle<Result<_, EngineError>>> = None;
    loop {
        let (chunk, n) = next_chunk(&mut g, block_spans);
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
        progress(g.spans_produced());
        let tenant = tenant.to_string();
        let write = write.clone();
        pending = Some(tokio::task::spawn_blocking(move || {
            encode_block(&tenant, flatten(chunk).0, &write)
        }));
    }
    summary.spans = g.spans_produced();
    summary.traces = g.traces_produced();
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
    let mut g = Generator::new(opts);
    let mut summary = Summary::default();
    loop {
        let (chunk, n) = next_chunk(&mut g, file_spans);
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
        progress(g.spans_produced());
    }
    summary.spans = g.spans_produced();
    summary.traces = g.traces_produced();
    Ok(summary)
}
