//! OTLP ingest: limits, the write-ahead log, the live head, trace cutting and block flushing.
//!
//! ```text
//! request → rate limit → sanitize (cut long values, keys, names; fix end < start)
//!         → check IDs and start times, regroup by trace → trace limits
//!         → WAL (group commit, fsync) → live head (queryable) → ack
//! flush loop: idle/old traces → head block → cut by age/size → Parquet block → catalog
//!             → `Flushed` WAL record → old WAL segments deleted
//! tap after the WAL: metrics generator (span metrics, service graphs) → remote write / scrape
//! ```

#![warn(missing_docs)]

pub mod distributor;
pub mod error;
pub mod generator;
pub mod head;
pub mod head_snapshots;
pub mod ingester;
pub mod jaeger;
pub mod limits;
pub mod metrics;
pub mod peers;
pub mod prepare;
pub mod ring_live;
pub mod sanitize;
pub mod wal;
pub mod wire;
pub mod zipkin;

pub use ingester::{Ingester, IngesterConfig, OpenSummary, PushOutcome};
