//! WAL bytes (`ingest/src/wal/record.rs`): every frame reads as a record, the clean end or a
//! torn frame with its reason, never a panic; a record never claims more bytes than remain.
#![no_main]

use allegro_ingest::wal::record::{Frame, read_frame};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let data = Bytes::copy_from_slice(data);
    let mut at = 0;
    while at < data.len() {
        match read_frame(&data.slice(at..)) {
            Frame::Record(_, _, n) => {
                assert!(n > 0 && at + n <= data.len(), "a record of {n} bytes at {at}");
                at += n;
            }
            Frame::End => break,
            // Replay resynchronises past a torn frame; the fuzzer walks on byte by byte.
            Frame::Torn(_) => at += 1,
        }
    }
});
