//! Why a push or an ingest operation failed, grouped by how the caller must answer.

use thiserror::Error;

/// Result alias of the ingest crate.
pub type Result<T, E = IngestError> = std::result::Result<T, E>;

/// Everything that can go wrong while ingesting.
#[derive(Debug, Error)]
pub enum IngestError {
    /// The request is malformed (bad protobuf, bad JSON, bad IDs in every span): 400 /
    /// INVALID_ARGUMENT.
    #[error("{0}")]
    InvalidInput(String),
    /// The tenant sent more bytes than its rate and burst allow: 429 / RESOURCE_EXHAUSTED.
    #[error("{0}")]
    RateLimited(String),
    /// The head is full until flushing catches up: 503 / UNAVAILABLE (retryable).
    #[error("{0}")]
    Backpressure(String),
    /// The WAL could not make the batch durable: nothing was acknowledged (503 / UNAVAILABLE).
    #[error("write-ahead log: {0}")]
    Wal(String),
    /// The storage takes no writes; the server serves reads only (503 / UNAVAILABLE).
    #[error("read-only: {0}; this server serves queries only")]
    ReadOnly(String),
    /// The server is shutting down and takes no more data.
    #[error("shutting down: no more data is accepted")]
    ShuttingDown,
    /// Another ingester of the ring could not take its share of a write or answer for its
    /// live spans: 503 / UNAVAILABLE (retryable).
    #[error("{0}")]
    Peer(String),
    /// A block could not be written.
    #[error(transparent)]
    Engine(#[from] allegro_engine::error::EngineError),
    /// A bug: an invariant that should hold did not.
    #[error("internal error (a bug, please report it): {0}")]
    Internal(String),
}
