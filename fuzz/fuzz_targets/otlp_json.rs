//! OTLP/JSON request bodies (`engine/src/otlp_json.rs`): an answer or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = allegro_engine::otlp_json::decode_traces_json(data);
});
