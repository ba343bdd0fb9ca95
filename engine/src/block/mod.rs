//! Immutable blocks on object storage:
//! `<tenant>/<block_id>/{meta.json,data.parquet,bloom,rollup.parquet}`.

pub mod bloom;
pub mod checksums;
pub mod claim;
pub mod compact;
pub mod lifecycle;
pub mod meta;
pub mod object_reader;
pub mod pace;
pub mod quarantine;
pub mod reader;
pub mod recorded;
pub mod rollup;
pub mod row_groups;
pub mod scan_footer;
pub mod slices;
pub mod spill;
pub mod tag_values;
pub mod tenant_index;
pub mod trace_cuts;
pub mod writer;
