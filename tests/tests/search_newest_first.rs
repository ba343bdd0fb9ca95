//! Newest-first search stops early; its answer must be exactly the first `limit` traces of a
//! full evaluation. The data is made to test that: the generated shop in six time-ordered
//! blocks and the live head, one trace in seven split across two blocks (or a block and the
//! head) as late spans land, and pairs of traces tied on their start time.

use std::collections::BTreeMap;
use std::sync::Arc;

use allegro_datasets::{GenOptions, Generator};
use allegro_engine::convert::to_arrow::resource_spans_to_batches;
use allegro_engine::query::QueryEngine;
use allegro_engine::query::search::SearchRequest;
use allegro_engine::tempopb::SearchResponse;
use allegro_tests::engines::{
    GENERATED_START, StaticLive, TENANT, catalog_at, sorted_span_sets, store_block,
};
use allegro_tests::reference;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

/// One span per `ResourceSpans`, so a trace's spans can be dealt to different places.
fn spans_of(trace: Vec<ResourceSpans>) -> Vec<ResourceSpans> {
    let mut out = Vec::new();
    for rs in trace {
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(ResourceSpans {
                    resource: rs.resource.clone(),
                    scope_spans: vec![ScopeSpans {
                        scope: ss.scope.clone(),
                        spans: vec![s],
                        schema_url: ss.schema_url.clone(),
                    }],
                    schema_url: rs.schema_url.clone(),
                });
            }
        }
    }
    out
}

fn start_of(trace: &[ResourceSpans]) -> u64 {
    trace
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| s.start_time_unix_nano)
        .min()
        .unwrap_or(0)
}

fn shift(trace: &mut [ResourceSpans], to: u64) {
    let from = start_of(trace);
    for s in trace
        .iter_mut()
        .flat_map(|r| &mut r.scope_spans)
        .flat_map(|s| &mut s.spans)
    {
        s.start_time_unix_nano = s.start_time_unix_nano - from + to;
        s.end_time_unix_nano = s.end_time_unix_nano - from + to;
        for e in &mut s.events {
            e.time_unix_nano = e.time_unix_nano - from + to;
        }
    }
}

/// The engine over the dataset described in the module docs, and every trace whole.
async fn engine(dir: &std::path::Path) -> (QueryEngine, Vec<ResourceSpans>, usize) {
    let mut g = Generator::new(GenOptions {
        seed: 11,
        spans: 24_000,
        start_unix_nano: GENERATED_START,
        duration_nano: 600_000_000_000,
    });
    let mut traces: Vec<Vec<ResourceSpans>> = Vec::new();
    while let Some(t) = g.next_trace() {
        traces.push(spans_of(t));
    }
    // Ties: every 13th trace starts exactly when the one before it does.
    for i in (1..traces.len()).step_by(13) {
        let to = start_of(&traces[i - 1]);
        shift(&mut traces[i], to);
    }
    traces.sort_by_key(|t| start_of(t));
    let n = traces.len();
    let live_from = n * 95 / 100;
    let per_block = live_from.div_ceil(6);
    // Places: 0..6 are blocks in time order, 6 is the head.
    let mut places: Vec<Vec<ResourceSpans>> = vec![Vec::new(); 7];
    let mut split = 0;
    for (i, t) in traces.iter().enumerate() {
        let home = if i >= live_from { 6 } else { i / per_block };
        if i % 7 == 3 && home < 6 && t.len() >= 4 {
            // The root and the first half in its block; the rest lands one place later.
            let (mut early, mut late): (Vec<_>, Vec<_>) = (Vec::new(), Vec::new());
            let mut sorted = t.clone();
            sorted.sort_by_key(|r| r.scope_spans[0].spans[0].start_time_unix_nano);
            let half = sorted.len() / 2;
            for (k, s) in sorted.into_iter().enumerate() {
                if k < half {
                    early.push(s)
                } else {
                    late.push(s)
                }
            }
            places[home].extend(early);
            places[home + 1].extend(late);
            split += 1;
        } else {
            places[home].extend(t.iter().cloned());
        }
    }
    let catalog = catalog_at(dir);
    for block in &places[..6] {
        store_block(&catalog, TENANT, block.clone()).await;
    }
    // The head in groups as the ingester hands them over: whole traces by arrival (five at
    // a time here), the late halves of block 5's split traces in a group of their own, and
    // every ninth head trace dealt to two groups (a part of it in each: each group's rows
    // are evaluated alone, so it must be joined like a trace split across blocks).
    let (mut groups, mut late) = (vec![Vec::new(); 1], Vec::new());
    let head_traces: Vec<Vec<u8>> = traces[live_from..]
        .iter()
        .map(|t| t[0].scope_spans[0].spans[0].trace_id.clone())
        .collect();
    for s in &places[6] {
        let id = &s.scope_spans[0].spans[0].trace_id;
        match head_traces.iter().position(|h| h == id) {
            None => late.push(s.clone()),
            Some(k) => {
                let g = k / 5
                    + usize::from(
                        k % 9 == 4 && s.scope_spans[0].spans[0].parent_span_id.is_empty(),
                    );
                groups.resize(groups.len().max(g + 1), Vec::new());
                groups[g].push(s.clone());
            }
        }
    }
    groups.push(late);
    let live = groups
        .into_iter()
        .filter(|g| !g.is_empty())
        .map(|g| resource_spans_to_batches(g, 1024).unwrap())
        .collect();
    let engine = QueryEngine::new(catalog, Some(Arc::new(StaticLive(live)))).unwrap();
    (engine, traces.into_iter().flatten().collect(), split)
}

/// Searches without structural operators.
const PLAIN: [&str; 8] = [
    "{ }",
    "{ status = error }",
    "{ kind = server } | count() > 3",
    "{ } | avg(duration) > 20ms",
    "{ name =~ \"GET.*\" }",
    "{ kind = client } || { status = error }",
    "{ resource.service.name = \"api-gateway\" } && { status = error }",
    // The root test holds per part: only the true root has -1.
    "{ nestedSetParent < 0 && kind = server }",
];

/// Searches with structural operators.
const STRUCTURAL: [&str; 3] = [
    "{ resource.service.name = \"api-gateway\" } >> { status = error }",
    "{ kind = server } > { kind = client }",
    "({ kind = server } &>> { status = error }) || ({ kind = server }) | select(status, name)",
];

async fn search(e: &QueryEngine, q: &str, limit: usize) -> SearchResponse {
    let req = SearchRequest {
        query: q.into(),
        limit,
        spss: 1_000_000,
        range: None,
    };
    e.search(&[TENANT.to_string()], &req)
        .await
        .unwrap_or_else(|e| panic!("{q}: {e}"))
}

/// Each trace as `(id, start, sorted spansets of sorted span IDs)`, in answer order.
fn answer(r: &SearchResponse) -> Vec<(String, u64, Vec<Vec<String>>)> {
    r.traces
        .iter()
        .map(|t| {
            (
                t.trace_id.clone(),
                t.start_time_unix_nano,
                sorted_span_sets(t),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_first_answers_are_the_head_of_the_full_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, all, split) = engine(dir.path()).await;
    assert!(split > 50, "only {split} split traces");
    let whole = reference::traces(&all);
    // The head is read as partitions of whole traces, newest first, as blocks are.
    let plan = engine
        .explain(
            TENANT,
            &SearchRequest {
                query: "{ }".into(),
                limit: 20,
                spss: 3,
                range: None,
            },
        )
        .await
        .unwrap()
        .physical;
    let head_partitions: usize = plan
        .split("the live head, ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no head in {plan}"));
    assert!(
        head_partitions >= 5,
        "{head_partitions} partitions of the head"
    );
    // Every answer, structural ones over split traces included, equals the reference
    // evaluator's over whole traces.
    for q in PLAIN.iter().chain(&STRUCTURAL) {
        let full = answer(&search(&engine, q, 1_000_000).await);
        assert!(full.len() > 20, "{q}: only {} traces match", full.len());
        for limit in [1, 5, 20] {
            let got = answer(&search(&engine, q, limit).await);
            assert_eq!(got, full[..limit], "{q} limit {limit}");
        }
        let ast = allegro_traceql::compile(q).unwrap();
        let want: BTreeMap<String, Vec<Vec<String>>> = whole
            .iter()
            .filter_map(|t| {
                let sets = reference::search(&ast, t).unwrap();
                (!sets.is_empty()).then(|| {
                    let id = hex::encode(&t.id).trim_start_matches('0').to_string();
                    (id, sets)
                })
            })
            .collect();
        let got: BTreeMap<String, Vec<Vec<String>>> =
            full.into_iter().map(|(id, _, sets)| (id, sets)).collect();
        let differ: Vec<&String> = want
            .keys()
            .chain(got.keys())
            .filter(|k| want.get(*k) != got.get(*k))
            .take(3)
            .collect();
        assert!(
            differ.is_empty(),
            "{q}: {} traces expected, {} returned; differing: {:?}",
            want.len(),
            got.len(),
            differ
                .iter()
                .map(|k| format!("{k}: want {:?} got {:?}", want.get(*k), got.get(*k)))
                .collect::<Vec<_>>()
        );
    }
    // Ties are ordered by trace ID, and some of them are in the answers above.
    let full = answer(&search(&engine, "{ }", 1_000_000).await);
    let tied = full.windows(2).filter(|w| w[0].1 == w[1].1).count();
    assert!(tied > 10, "only {tied} ties");
    let padded = |id: &str| format!("{id:0>32}");
    assert!(
        full.windows(2)
            .all(|w| w[0].1 > w[1].1 || (w[0].1 == w[1].1 && padded(&w[0].0) < padded(&w[1].0)))
    );
    // And the point of it: the newest 20 of `{ }` read a fraction of what all of them read.
    let bytes = |r: &SearchResponse| r.metrics.as_ref().map_or(0, |m| m.inspected_bytes);
    // A search no span matches joins no split trace; one whose leaf reads a trace-level
    // column (which a part holds for itself alone) must join them all to know.
    let (span_miss, root_miss) = (
        search(&engine, "{ name = \"no such span\" }", 20).await,
        search(&engine, "{ rootName = \"no such root\" }", 20).await,
    );
    assert!(span_miss.traces.is_empty() && root_miss.traces.is_empty());
    assert!(
        bytes(&span_miss) * 2 < bytes(&root_miss),
        "{} bytes without a join, {} with one",
        bytes(&span_miss),
        bytes(&root_miss)
    );
    let (some, every) = (
        bytes(&search(&engine, "{ }", 20).await),
        bytes(&search(&engine, "{ }", 1_000_000).await),
    );
    assert!(
        some * 2 < every,
        "{some} bytes for 20 traces, {every} for all"
    );
}

/// The same searches through a Ballista cluster (two executors, one task slot each): blocks
/// read there in waves, newest first, the head here; every answer, cut short by a limit or
/// not, is one process's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn newest_first_answers_on_a_cluster_are_one_process_answers() {
    let root = tempfile::tempdir().unwrap();
    let (cluster, store) = allegro_tests::cluster::two_executors(root.path(), 1).await;
    let (local, _, _) = engine(&store).await;
    let remote = cluster.remote(local.clone());
    for q in PLAIN.iter().chain(&STRUCTURAL) {
        for limit in [1, 5, 20, 1_000_000] {
            let (want, got) = (
                answer(&search(&local, q, limit).await),
                answer(&search(&remote, q, limit).await),
            );
            assert_eq!(got, want, "{q} limit {limit}");
        }
    }
}
