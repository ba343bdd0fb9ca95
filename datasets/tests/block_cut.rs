//! `BlockCut::split_every` splits exactly the traces it names across neighbouring blocks and
//! loses no span.

use std::collections::HashSet;
use std::sync::Arc;

use allegro_datasets::{BlockCut, GenOptions, generate_all, write_blocks};
use allegro_engine::block::writer::BlockWriteOptions;
use object_store::ObjectStore;
use object_store::memory::InMemory;

fn opts() -> GenOptions {
    GenOptions {
        seed: 3,
        spans: 3_000,
        start_unix_nano: 1_767_225_600_000_000_000,
        duration_nano: 600_000_000_000,
    }
}

#[tokio::test]
async fn every_nth_trace_is_split_across_two_blocks() {
    // Independently: the traces the cut must split, from the generator's own output.
    let traces = generate_all(opts());
    let all_spans: u64 = traces
        .iter()
        .map(|t| allegro_engine::convert::normalize::span_count(t) as u64)
        .sum();
    let trace_id = |t: &[allegro_engine::otlp::trace::v1::ResourceSpans]| {
        hex::encode(&t[0].scope_spans[0].spans[0].trace_id)
    };
    let expected: HashSet<String> = traces
        .iter()
        .enumerate()
        .filter(|(i, t)| (i + 1) % 5 == 0 && t.len() > 1)
        .map(|(_, t)| trace_id(t))
        .collect();
    assert!(expected.len() > 5, "{} split traces", expected.len());

    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let cut = BlockCut {
        spans: 200,
        split_every: 5,
    };
    let summary = write_blocks(
        &store,
        "t",
        opts(),
        cut,
        &BlockWriteOptions::default(),
        &mut |_| {},
    )
    .await
    .expect("blocks");
    assert_eq!(summary.spans, all_spans);
    assert_eq!(
        summary.blocks.iter().map(|b| b.total_spans).sum::<u64>(),
        all_spans,
        "every span in exactly one block"
    );
    // Generated traces are whole, so a block records a trace as incomplete only when the
    // cut split it; each split trace has a part without its root somewhere.
    let incomplete: HashSet<String> = summary
        .blocks
        .iter()
        .flat_map(|b| b.incomplete_traces.clone().unwrap_or_default())
        .collect();
    assert_eq!(incomplete, expected);
}
