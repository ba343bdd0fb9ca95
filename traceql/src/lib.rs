//! TraceQL front end: pest grammar, typed AST, validation, canonical printer and errors with
//! positions. Deliberately free of DataFusion so it builds and tests in seconds.
//!
//! The language layer is built by the TraceQL front-end issue; until then this crate only
//! reserves its place in the workspace (nothing depends on it yet).
