//! OTLP ingest: receivers, WAL, live head and block flushing.
//!
//! Built by the ingest issue on top of `allegro_engine::convert::flatten` (OTLP → rows with
//! malformed spans set aside) and `allegro_engine::block::writer` (blocks); until then this
//! crate only reserves its place in the workspace.
