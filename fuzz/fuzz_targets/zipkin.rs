//! Zipkin v2 JSON bodies (`ingest/src/zipkin.rs`): spans or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = allegro_ingest::zipkin::decode_zipkin_v2(data);
});
