//! OTLP protobuf requests through the byte-level regrouping walk (`ingest/src/wire.rs`): never a
//! panic, and never an accepted request that prost refuses (the walk must refuse all of those,
//! or the decoding path's errors would be skipped).
#![no_main]

use allegro_ingest::sanitize::SpanRules;
use allegro_ingest::wire::prepare_encoded;
use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let rules = SpanRules {
        max_value_bytes: 1 << 16,
        max_key_bytes: 1 << 10,
        max_name_bytes: 1 << 10,
        max_attributes: 128,
        window: (0, u64::MAX),
    };
    if prepare_encoded(data, &rules).is_some() {
        assert!(
            ExportTraceServiceRequest::decode(data).is_ok(),
            "the walk accepted a request prost refuses"
        );
    }
});
