//! What every front door (HTTP, gRPC, CLI) shares before and after the engine: requests
//! validated once into the engine's typed requests, and errors with one status per kind.
//! A door parses its own wire form (query strings, protobuf messages, flags) into these
//! parameters and encodes the engine's answers; the query logic is the engine's.

pub mod error;
pub mod metrics;
pub mod search;
pub mod sql;
pub mod time;
