//! The engine must agree with the plain reference evaluator (tests/src/reference.rs) on every
//! golden query and every query of `tests/traceql/generated.queries`, over the generated
//! dataset: most traces in Parquet blocks, the newest in the live head.

use std::collections::BTreeMap;
use std::path::Path;

use allegro_engine::query::search::SearchRequest;
use allegro_tests::engines::{TENANT, generated, sorted_span_sets};
use allegro_tests::golden::{self, Expect};
use allegro_tests::reference::{self, missing_and_extra};

fn queries(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files.into_iter().filter(|f| f.is_file()) {
        let text = std::fs::read_to_string(&f).unwrap();
        match f.extension().and_then(|e| e.to_str()) {
            Some("tql") => out.extend(
                golden::parse(&text)
                    .unwrap()
                    .cases
                    .into_iter()
                    .filter(|c| matches!(c.expect, Expect::Rows(_)))
                    .map(|c| c.query),
            ),
            Some("queries") => out.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from),
            ),
            _ => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_agrees_with_the_reference_evaluator() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, all) = generated(dir.path(), 42, 30_000).await;
    let rtraces = reference::traces(&all);

    let dir = Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("traceql");
    let queries = queries(&dir);
    assert!(queries.len() > 100, "only {} queries", queries.len());
    let mut failures = Vec::new();
    let mut non_empty = 0;
    for q in &queries {
        let ast = allegro_traceql::compile(q).unwrap();
        let mut want: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
        let mut want_err = None;
        for t in &rtraces {
            match reference::search(&ast, t) {
                Ok(sets) if !sets.is_empty() => {
                    want.insert(hex::encode(&t.id).trim_start_matches('0').to_string(), sets);
                }
                Ok(_) => {}
                Err(e) => want_err = Some(e),
            }
        }
        let req = SearchRequest {
            query: q.clone(),
            limit: 1_000_000,
            spss: 1_000_000,
            range: None,
        };
        let got = engine.search(&[TENANT.to_string()], &req).await;
        match (got, want_err) {
            (Err(e), Some(_)) if e.to_string().contains("multiple spansets") => continue,
            (Err(e), _) => failures.push(format!("{q}: engine failed: {e}")),
            (Ok(_), Some(e)) => failures.push(format!(
                "{q}: reference failed ({e}) but the engine did not"
            )),
            (Ok(resp), None) => {
                let got: BTreeMap<String, Vec<Vec<String>>> = resp
                    .traces
                    .iter()
                    .map(|t| (t.trace_id.clone(), sorted_span_sets(t)))
                    .collect();
                if !want.is_empty() {
                    non_empty += 1;
                }
                if got != want {
                    let (missing, extra) = missing_and_extra(&want, &got);
                    let differ: Vec<_> = want
                        .iter()
                        .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
                        .take(1)
                        .map(|(k, v)| format!("{k}: want {v:?} got {:?}", got[k]))
                        .collect();
                    failures.push(format!(
                        "{q}: {} traces expected, {} returned; missing {missing:?}, extra {extra:?}, differing {differ:?}",
                        want.len(),
                        got.len()
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} queries disagree:\n{}",
        failures.len(),
        queries.len(),
        failures.join("\n")
    );
    // Most generated-dataset queries must match something, or the agreement says little.
    assert!(
        non_empty >= 40,
        "only {non_empty} queries matched any trace"
    );
    eprintln!(
        "{} queries agree ({non_empty} with matches) over {} traces",
        queries.len(),
        rtraces.len()
    );
}
