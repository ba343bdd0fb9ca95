//! Tempo's protobuf messages (`proto/tempopb/tempo.proto`, generated at build time by
//! `build.rs`), wire-compatible with Tempo: its `KeyValue` and `ResourceSpans` are copies of
//! OTLP's, so the `opentelemetry-proto` crate's types stand for them.

include!(concat!(env!("OUT_DIR"), "/tempopb.rs"));
