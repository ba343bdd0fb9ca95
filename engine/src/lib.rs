//! Allegro's storage engine: the span table, Parquet blocks on object storage, the block
//! catalog and trace lookup by ID.

#![warn(missing_docs)]

pub mod block;
pub mod catalog;
pub mod convert;
pub mod error;
pub mod hot;
pub mod ids;
pub mod nested_set;
pub mod otlp_json;
pub mod query;
pub mod schema;
pub mod storage;
pub mod tempopb;

pub use opentelemetry_proto::tonic as otlp;
