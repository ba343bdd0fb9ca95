//! Parse + validate latency over Tempo's whole corpus.
//!
//! ```text
//! cargo bench -p allegro-traceql --bench parse
//! ```
//!
//! Each corpus query is parsed and validated `REPS` times after a warm-up; the per-query
//! median is kept, and the report gives the median, p90, p99 and max of those medians, plus
//! the slowest queries. Timing a query many times and taking its median removes scheduler
//! noise from a 2-core machine without hiding slow queries.

use std::collections::BTreeMap;
use std::time::Instant;

const REPS: usize = 201;

fn main() {
    let corpus: BTreeMap<String, Vec<String>> =
        allegro_traceql::fuzzing::corpus().expect("Tempo's corpus under ../shared");
    let queries: Vec<&String> = corpus.values().flatten().collect();
    let mut medians: Vec<(f64, &str)> = Vec::with_capacity(queries.len());
    for q in &queries {
        let mut times = Vec::with_capacity(REPS);
        for i in 0..REPS + 20 {
            let t = Instant::now();
            let r = allegro_traceql::parse(q).and_then(|a| allegro_traceql::validate(q, &a));
            std::hint::black_box(&r);
            if i >= 20 {
                times.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        times.sort_by(f64::total_cmp);
        medians.push((times[REPS / 2], q.as_str()));
    }
    medians.sort_by(|a, b| a.0.total_cmp(&b.0));
    let pct = |p: f64| medians[((medians.len() - 1) as f64 * p).round() as usize].0;
    println!(
        "parse+validate, {} corpus queries x {REPS} reps (per-query medians, µs):",
        medians.len()
    );
    println!(
        "  median {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0)
    );
    println!("  slowest:");
    for (t, q) in medians.iter().rev().take(3) {
        println!("    {t:7.2} µs  {q}");
    }
}
