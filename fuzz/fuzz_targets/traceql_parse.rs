//! TraceQL text: parse, validate and compile never panic, and a query that parses prints to
//! text that parses back to the same AST (`allegro_traceql::fuzzing::check_one`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(why) = allegro_traceql::fuzzing::check_one(text) {
        panic!("{text:?}: {why}");
    }
});
