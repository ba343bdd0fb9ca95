//! Error categories of the engine: user mistakes, unsupported requests, storage faults and bugs.

use thiserror::Error;

/// `e` and every error it was caused by, outermost first.
pub fn chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

/// Result alias used throughout the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine, grouped the way callers must react to it.
#[derive(Debug, Error)]
pub enum EngineError {
    /// The caller sent something malformed (bad ID, span without a trace ID, …): a 400.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A TraceQL query that does not parse, validate, or uses something not supported; the
    /// error carries the position and a caret.
    #[error("{0}")]
    Query(allegro_traceql::Error),
    /// The request is well formed but asks for something this version cannot do.
    #[error("not supported: {0}")]
    NotSupported(String),
    /// A block was written by a newer (or unknown) format version.
    #[error("block {block} has format {found:?}; this build reads {supported}")]
    UnsupportedFormat {
        /// The block's ID.
        block: String,
        /// The format string found in its meta.json.
        found: String,
        /// The format strings this build can read.
        supported: String,
    },
    /// The object store failed (I/O, permissions, network).
    #[error("storage error at {path}: {source}")]
    Storage {
        /// The object the operation touched.
        path: String,
        /// The underlying error.
        #[source]
        source: object_store::Error,
    },
    /// Stored data could not be decoded: a corrupt or foreign file.
    #[error("corrupt block data in {path}: {message}")]
    Corrupt {
        /// The object that failed to decode.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// A query went over one of its budgets (time, memory, answer size): a 422 naming the limit.
    #[error("{message} (limit: {limit})")]
    Budget {
        /// The config key of the limit.
        limit: String,
        /// What went over, and what to do about it.
        message: String,
    },
    /// The tenant has too many queries running and waiting: a 429, retry later.
    #[error("too many queries: {0}")]
    TooManyQueries(String),
    /// A block the query was reading was deleted under it (merged and retired, or expired,
    /// possibly by another process sharing the storage): a 503; asking again reads the blocks
    /// that replaced it.
    #[error("block data at {path} was deleted while the query read it; retry the query")]
    BlockGone {
        /// The object that was gone.
        path: String,
    },
    /// The query cluster could not finish the query (an executor lost, a shuffle gone, the
    /// scheduler unreachable): a 503; asking again may succeed. Never a partial answer.
    #[error("the query cluster could not finish the query: {0}; retry the query")]
    Unavailable(String),
    /// An error shared by several waiters on one cache load.
    #[error("{0}")]
    Shared(std::sync::Arc<EngineError>),
    /// A bug in Allegro: an invariant that should always hold did not.
    #[error("internal error (a bug, please report it): {0}")]
    Internal(String),
}

impl EngineError {
    /// The object a block read found missing, if that is what this error is: the block was
    /// deleted after the query listed it.
    pub fn missing_object(&self) -> Option<&str> {
        match self {
            Self::Storage {
                path,
                source: object_store::Error::NotFound { .. },
            }
            | Self::BlockGone { path } => Some(path),
            Self::Shared(e) => e.missing_object(),
            _ => None,
        }
    }

    /// The object found missing anywhere in the chain of `e` (a DataFusion or Parquet error
    /// wrapping a storage error).
    pub fn missing_in(e: &(dyn std::error::Error + 'static)) -> Option<String> {
        chain(e).find_map(|err| {
            if let Some(object_store::Error::NotFound { path, .. }) =
                err.downcast_ref::<object_store::Error>()
            {
                return Some(path.clone());
            }
            err.downcast_ref::<EngineError>()
                .and_then(|e| e.missing_object())
                .map(str::to_string)
        })
    }

    /// The damaged object's path and what was wrong, when this is (or shares) a
    /// [`EngineError::Corrupt`].
    pub fn damaged(&self) -> Option<(&str, &str)> {
        match self {
            Self::Corrupt { path, message } => Some((path, message)),
            Self::Shared(e) => e.damaged(),
            _ => None,
        }
    }

    /// The damaged object anywhere in the chain of `e` (a DataFusion or Parquet error wrapping
    /// a failed checksum or decode), as a [`EngineError::Corrupt`].
    pub fn damaged_in(e: &(dyn std::error::Error + 'static)) -> Option<EngineError> {
        chain(e).find_map(|err| {
            let (path, message) = err.downcast_ref::<EngineError>()?.damaged()?;
            Some(Self::corrupt(path, message))
        })
    }

    /// Builds an [`EngineError::Storage`] for `path`.
    pub fn storage(path: impl std::fmt::Display, source: object_store::Error) -> Self {
        Self::Storage {
            path: path.to_string(),
            source,
        }
    }

    /// Builds an [`EngineError::Corrupt`] for `path`.
    pub fn corrupt(path: impl std::fmt::Display, message: impl std::fmt::Display) -> Self {
        Self::Corrupt {
            path: path.to_string(),
            message: message.to_string(),
        }
    }

    /// True when the caller, not the system, is at fault.
    pub fn is_user_error(&self) -> bool {
        match self {
            Self::InvalidInput(_)
            | Self::NotSupported(_)
            | Self::Query(_)
            | Self::Budget { .. }
            | Self::TooManyQueries(_) => true,
            Self::Shared(e) => e.is_user_error(),
            _ => false,
        }
    }
}

impl From<arrow::error::ArrowError> for EngineError {
    fn from(e: arrow::error::ArrowError) -> Self {
        Self::Internal(format!("arrow: {e}"))
    }
}

impl From<parquet::errors::ParquetError> for EngineError {
    fn from(e: parquet::errors::ParquetError) -> Self {
        Self::Internal(format!("parquet: {e}"))
    }
}
