//! Every query the TraceQL fuzzer makes (token soup, mutations of Tempo's corpus, printed
//! random ASTs), and every query of the corpus itself, sent to a running server as search and
//! as TraceQL metrics: each gets an answer in its class — a 200, or a 4xx naming what was wrong
//! — never a 5xx. The front end's own fuzz test checks it never panics; this checks the rest of
//! the way (planning, execution, encoding) over real spans.

use allegro_tests::dataset::{self, Dataset};
use allegro_tests::{TestServer, config_for, url_encode, workspace_dir};
use allegro_traceql::fuzzing::{corpus_queries, fuzz_inputs};

/// Inputs swept: about twenty seconds of requests in a debug build.
const INPUTS: u64 = 5_000;

fn shop() -> Dataset {
    let p = workspace_dir().join("tests/traceql/data/shop.traces");
    dataset::parse(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn no_fuzzed_query_gets_a_server_error() {
    let corpus = corpus_queries();
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        assert!(
            !corpus.is_empty(),
            "Tempo's corpus is missing from ../shared"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(config_for(dir.path()));
    let ds = shop();
    let spans: Vec<_> = ds.traces.iter().flat_map(|t| t.spans.clone()).collect();
    let times: Vec<(u64, u64)> = spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| (s.start_time_unix_nano, s.end_time_unix_nano))
        .collect();
    let start = times.iter().map(|t| t.0).min().unwrap() / 1_000_000_000;
    let end = times.iter().map(|t| t.1).max().unwrap() / 1_000_000_000 + 1;
    let a = srv.export(None, spans);
    assert_eq!(a.status, 200, "{}", a.text());
    let first = ds.traces[0].names[0].1.clone();
    assert!(srv.finds_span(None, &first), "the spans are searchable");

    // Answered 200 as search and as metrics, of the fuzzer's inputs made without the corpus
    // (the corpus is Tempo's file, and its mutations draw on the fuzzer's random stream, so
    // the inputs made after them change whenever the file does).
    let mut answered = [0usize; 2];
    let mut failures = Vec::new();
    let own = fuzz_inputs(&[], INPUTS / 2, 28).map(|q| (q, true));
    let inputs = corpus
        .iter()
        .cloned()
        .chain(fuzz_inputs(&corpus, INPUTS / 2, 28))
        .map(|q| (q, false))
        .chain(own);
    for (q, counted) in inputs {
        let q = url_encode(&q);
        let routes = [
            format!("/api/search?q={q}&limit=5&start={start}&end={end}"),
            format!("/api/metrics/query_range?q={q}&start={start}&end={end}&step=60s"),
        ];
        for (i, path) in routes.iter().enumerate() {
            let a = srv.get(path, &[]);
            if a.status >= 500 {
                failures.push(format!("{path} → {}: {}", a.status, a.text()));
            } else if a.status == 200 && counted {
                answered[i] += 1;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} server errors:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The sweep reaches execution, not only the parser: some of the fuzzer's own inputs are
    // valid queries (99 searches and 18 metrics queries answered 200 with this seed).
    assert!(
        answered[0] > 80 && answered[1] > 12,
        "answered {answered:?}"
    );
}
