//! Allegro's storage engine: the span table, Parquet blocks on object storage, the block
//! catalog and trace lookup by ID.

#![warn(missing_docs)]

pub mod allocator;
pub mod block;
pub mod catalog;
pub mod convert;
pub mod error;
pub mod hot;
pub mod ids;
pub mod nested_set;
pub mod otlp_json;
pub mod priority;
pub mod query;
pub mod ring;
pub mod schema;
pub mod sql;
pub mod storage;
pub mod tempopb;
pub mod tenant;

pub use opentelemetry_proto::tonic as otlp;

/// Now, unix nanoseconds (0 if the clock is before 1970).
pub fn now_unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
