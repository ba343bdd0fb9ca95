//! The TraceQL front-end fuzzer: random token soup, mutations of Tempo's corpus, and printed
//! random ASTs, each parsed, validated, printed, re-parsed and compared. Any panic or
//! round-trip difference stops the run and prints the input.
//!
//! ```text
//! cargo run --release -p allegro-traceql --example fuzz -- [INPUTS] [SEED]
//! ```

use std::time::Instant;

use allegro_traceql::fuzzing::{corpus_queries, fuzz, on_server_stack};

fn main() {
    let mut args = std::env::args().skip(1);
    let inputs: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let seed: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1);
    let seeds = corpus_queries();
    if seeds.is_empty() {
        eprintln!(
            "corpus not found at {}; fuzzing without seeds",
            allegro_traceql::fuzzing::corpus_path().display()
        );
    }
    let started = Instant::now();
    let report = on_server_stack(move || fuzz(&seeds, inputs, seed));
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{} inputs in {secs:.1}s ({:.0}/s): {} parsed, {} valid, seed {seed}",
        report.inputs,
        report.inputs as f64 / secs,
        report.parsed,
        report.valid
    );
    if let Some((input, why)) = report.failure {
        println!("FAILURE on input {input:?}:\n{why}");
        std::process::exit(1);
    }
}
