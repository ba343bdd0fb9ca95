//! Errors of the cluster's processes.

use thiserror::Error;

/// Result alias of the cluster crate.
pub type Result<T, E = ClusterError> = std::result::Result<T, E>;

/// What can stop a scheduler or an executor.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// Ballista could not start or stopped with an error (a port in use, a scheduler that does
    /// not answer, a bad setting).
    #[error("ballista: {0}")]
    Ballista(String),
}

impl ClusterError {
    /// Ballista's error, kept as its message.
    pub fn ballista(e: impl std::fmt::Display) -> Self {
        Self::Ballista(e.to_string())
    }
}
