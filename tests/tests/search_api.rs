//! `/api/search` and the tags APIs over HTTP, as Grafana calls them: half of the shop dataset
//! in blocks written before start, half sent through OTLP/HTTP into the live head.

use std::collections::BTreeSet;
use std::sync::Arc;

use allegro_engine::block::writer::{BlockWriteOptions, encode_block};
use allegro_engine::catalog::{Catalog, CatalogConfig};
use allegro_engine::convert::flatten::flatten;
use allegro_engine::storage::{StorageBackend, open_store};
use allegro_engine::tempopb::SearchResponse;
use allegro_tests::dataset::{self, Dataset};
use allegro_tests::url_encode as enc;
use allegro_tests::{TestServer, config_for, workspace_dir};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::Value as J;

fn shop() -> Dataset {
    let p = workspace_dir().join("tests/traceql/data/shop.traces");
    dataset::parse(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// t1 and t2 as one block on disk; t3 and t4 sent live.
fn start(dir: &std::path::Path, ds: &Dataset) -> TestServer {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = open_store(&StorageBackend::Local {
            path: dir.to_path_buf(),
        })
        .unwrap();
        let catalog = Arc::new(Catalog::new(store, CatalogConfig::default()));
        let rs = ds.traces[..2]
            .iter()
            .flat_map(|t| t.spans.clone())
            .collect();
        let (spans, _) = flatten(rs);
        let block = encode_block("single-tenant", spans, &BlockWriteOptions::default()).unwrap();
        catalog.add_block(&block).await.unwrap();
    });
    let server = TestServer::start(config_for(dir));
    let req = ExportTraceServiceRequest {
        resource_spans: ds.traces[2..]
            .iter()
            .flat_map(|t| t.spans.clone())
            .collect(),
    };
    let a = server.post(
        &server.otlp_http(),
        "/v1/traces",
        &[("content-type", "application/x-protobuf")],
        &req.encode_to_vec(),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    server
}

fn json(server: &TestServer, path: &str) -> J {
    let a = server.get(path, &[]);
    assert_eq!(a.status, 200, "{path}: {}", a.text());
    assert_eq!(a.content_type, "application/json");
    serde_json::from_slice(&a.body).unwrap()
}

fn trace_names(ds: &Dataset, v: &J) -> Vec<String> {
    v["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            ds.trace_name(t["traceID"].as_str().unwrap())
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Every key Grafana's pinned tempopb knows; anything else breaks its search.
fn assert_known_fields(v: &J) {
    let known: BTreeSet<&str> = [
        "traces",
        "metrics",
        "traceID",
        "rootServiceName",
        "rootTraceName",
        "startTimeUnixNano",
        "durationMs",
        "spanSet",
        "spanSets",
        "serviceStats",
        "spanCount",
        "errorCount",
        "spans",
        "matched",
        "attributes",
        "spanID",
        "name",
        "durationNanos",
        "key",
        "value",
        "stringValue",
        "intValue",
        "doubleValue",
        "boolValue",
        "inspectedTraces",
        "inspectedBytes",
        "totalBlocks",
        "completedJobs",
        "totalJobs",
        "totalBlockBytes",
        "inspectedSpans",
    ]
    .into();
    fn walk(v: &J, known: &BTreeSet<&str>, in_stats: bool) {
        match v {
            J::Object(m) => {
                for (k, x) in m {
                    // serviceStats is a map keyed by service name.
                    assert!(in_stats || known.contains(k.as_str()), "unknown field {k}");
                    walk(x, known, k == "serviceStats");
                }
            }
            J::Array(a) => a.iter().for_each(|x| walk(x, known, false)),
            _ => {}
        }
    }
    walk(v, &known, false);
}

#[test]
fn search_and_tags_over_blocks_and_live_spans() {
    let ds = shop();
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &ds);

    // Errors are in a block (t1, t2); newest first.
    let v = json(
        &server,
        &format!("/api/search?q={}", enc("{ status = error }")),
    );
    assert_known_fields(&v);
    assert_eq!(trace_names(&ds, &v), ["t2", "t1"]);
    let t2 = &v["traces"][0];
    assert_eq!(t2["rootServiceName"], "frontend");
    assert_eq!(t2["rootTraceName"], "E");
    assert_eq!(t2["durationMs"], 2000);
    assert_eq!(
        t2["startTimeUnixNano"],
        (dataset::BASE_NANOS + 10_000_000_000 + 1_000_000).to_string()
    );
    assert_eq!(t2["serviceStats"]["payments"]["spanCount"], 2);
    assert_eq!(t2["serviceStats"]["payments"]["errorCount"], 1);
    assert!(
        t2["serviceStats"]["frontend"].get("errorCount").is_none(),
        "zero is omitted"
    );
    let set = &t2["spanSets"][0];
    assert_eq!(set["matched"], 1);
    assert_eq!(set["spans"][0]["durationNanos"], "1500000000");
    assert_eq!(set["spans"][0]["attributes"][0]["key"], "status");
    assert_eq!(
        set["spans"][0]["attributes"][0]["value"]["stringValue"],
        "error"
    );
    let m = &v["metrics"];
    assert_eq!(m["totalBlocks"], 1);
    assert_eq!(m["inspectedSpans"], "12");
    assert_eq!(m["inspectedTraces"], 4);

    // Live spans are searchable at once, merged with blocks; limit keeps the newest.
    let v = json(
        &server,
        &format!(
            "/api/search?q={}&limit=2",
            enc("{ resource.service.name = \"frontend\" }")
        ),
    );
    assert_eq!(trace_names(&ds, &v), ["t4", "t2"]);
    let v = json(
        &server,
        &format!("/api/search?q={}", enc("{ kind = consumer }")),
    );
    assert_eq!(trace_names(&ds, &v), ["t3"]);

    // spss limits spans shown, not matched.
    let v = json(
        &server,
        &format!(
            "/api/search?q={}&spss=1",
            enc("{ resource.service.name = \"cart\" }")
        ),
    );
    let t4 = &v["traces"][0];
    assert_eq!(t4["spanSets"][0]["matched"], 2);
    assert_eq!(t4["spanSets"][0]["spans"].as_array().unwrap().len(), 1);

    // The structure tab's query: one spanset per trace, nested-set numbers and service.name.
    let q = "({ resource.service.name = \"frontend\" } &>> { status = error }) || ({ resource.service.name = \"frontend\" }) | select(status, resource.service.name, name, nestedSetParent, nestedSetLeft, nestedSetRight)";
    let v = json(&server, &format!("/api/search?q={}&spss=20", enc(q)));
    assert_eq!(trace_names(&ds, &v).len(), 3);
    for t in v["traces"].as_array().unwrap() {
        assert_eq!(t["spanSets"].as_array().unwrap().len(), 1);
        for s in t["spanSets"][0]["spans"].as_array().unwrap() {
            let keys: BTreeSet<&str> = s["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["key"].as_str().unwrap())
                .collect();
            for k in [
                "nestedSetLeft",
                "nestedSetRight",
                "nestedSetParent",
                "service.name",
                "status",
            ] {
                assert!(keys.contains(k), "{k} missing in {s}");
            }
        }
    }
    let t2 = v["traces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["rootTraceName"] == "E")
        .unwrap();
    let e = &t2["spanSets"][0]["spans"][0];
    let left = e["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == "nestedSetLeft")
        .unwrap();
    assert_eq!(left["value"]["intValue"], "1");

    // Protobuf on request, with the same content.
    let a = server.get(
        &format!("/api/search?q={}", enc("{ status = error }")),
        &[("accept", "application/protobuf")],
    );
    assert_eq!(a.status, 200);
    let pb = SearchResponse::decode(a.body.as_slice()).unwrap();
    assert_eq!(pb.traces.len(), 2);
    assert_eq!(pb.traces[0].span_sets[0].spans[0].name, "F");

    // Legacy tag search.
    let v = json(&server, "/api/search?tags=service.name%3Dpayments");
    assert_eq!(trace_names(&ds, &v), ["t2"]);
    let v = json(
        &server,
        "/api/search?tags=service.name%3Dfrontend&minDuration=1s",
    );
    assert_eq!(trace_names(&ds, &v), ["t2"]);

    // Mistakes are 400s with a position and a caret; unsupported is loud.
    let a = server.get(&format!("/api/search?q={}", enc("{ .a = }")), &[]);
    assert_eq!(a.status, 400);
    assert!(
        a.text().contains("1:8") && a.text().contains('^'),
        "{}",
        a.text()
    );
    let a = server.get(
        &format!("/api/search?q={}", enc("{ span:childCount > 2 }")),
        &[],
    );
    assert_eq!(a.status, 400);
    assert!(a.text().contains("unsupported"), "{}", a.text());
    assert_eq!(server.get("/api/search?limit=0", &[]).status, 400);

    // Tags, v2 with scopes and intrinsics.
    let v = json(&server, "/api/v2/search/tags");
    let scope = |name: &str| -> Vec<String> {
        v["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .map(|s| {
                s["tags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(scope("resource").contains(&"service.name".to_string()));
    assert!(scope("resource").contains(&"env".to_string()));
    for k in ["http.status_code", "db.system", "flag", "amount"] {
        assert!(
            scope("span").contains(&k.to_string()),
            "{k}: {:?}",
            scope("span")
        );
    }
    assert!(scope("intrinsic").contains(&"duration".to_string()));
    assert!(scope("intrinsic").contains(&"nestedSetLeft".to_string()));
    let v1 = json(&server, "/api/search/tags");
    assert!(
        v1["tagNames"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "db.system")
    );

    // Values: typed, from blocks and head, narrowed by q; Grafana's extra tag= is ignored.
    let v = json(
        &server,
        "/api/v2/search/tag/resource.service.name/values?tag=resource.service.name",
    );
    let vals: Vec<(String, String)> = v["tagValues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["type"].as_str().unwrap().into(),
                x["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = ["cart", "db", "frontend", "payments", "worker"]
        .iter()
        .map(|s| ("string".into(), s.to_string()))
        .collect();
    assert_eq!(vals, want);
    // Asked again, the blocks' values come from the per-block cache: the same answer.
    let again = json(&server, "/api/v2/search/tag/resource.service.name/values");
    assert_eq!(again["tagValues"], v["tagValues"]);
    let v = json(
        &server,
        &format!(
            "/api/v2/search/tag/resource.service.name/values?q={}",
            enc("{ kind = consumer }")
        ),
    );
    assert_eq!(v["tagValues"].as_array().unwrap().len(), 1);
    let v = json(&server, "/api/v2/search/tag/span.http.status_code/values");
    let vals: BTreeSet<String> = v["tagValues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            format!(
                "{}:{}",
                x["type"].as_str().unwrap(),
                x["value"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        vals,
        ["int:200", "int:201", "int:500", "string:404"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    let v = json(&server, "/api/v2/search/tag/status/values");
    let vals: BTreeSet<&str> = v["tagValues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["value"].as_str().unwrap())
        .collect();
    assert_eq!(vals, ["error", "ok", "unset"].into());
    assert_eq!(v["tagValues"][0]["type"], "keyword");
    let v = json(&server, "/api/search/tag/service.name/values");
    assert_eq!(v["tagValues"].as_array().unwrap().len(), 5);
    assert_eq!(server.get("/api/v2/search/tag/%7B/values", &[]).status, 400);
}
