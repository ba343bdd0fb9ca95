//! Where SQL runs when a cluster is configured: the engine plans a query as always (tables,
//! views, Allegro's optimizer rules), then hands the optimized plan to a [`Remote`] planner
//! instead of DataFusion's, which sends it to the cluster and streams its answer back.
//!
//! The engine knows only this trait; the cluster crate implements it over Ballista, so the
//! engine (and everything that depends on it) builds without a distributed runtime.

use std::sync::Arc;

use datafusion::error::DataFusionError;
use datafusion::execution::context::QueryPlanner;
use datafusion::prelude::SessionConfig;

/// A cluster that runs query plans; see the module docs.
pub trait Remote: Send + Sync + std::fmt::Debug {
    /// `config` with what the cluster's planner reads from a session (its settings, codecs).
    fn configure(&self, config: SessionConfig) -> SessionConfig;

    /// The planner that sends a session's optimized plans to the cluster.
    fn planner(&self) -> Arc<dyn QueryPlanner + Send + Sync>;

    /// What an error from running a plan on the cluster means: the query's own mistake (a
    /// cast that fails on the data: [`crate::error::EngineError::InvalidInput`]) or the
    /// cluster's failure ([`crate::error::EngineError::Unavailable`]).
    fn failure(&self, e: DataFusionError) -> crate::error::EngineError;
}
