//! TraceQL search over a generated dataset: latency per query (p50/p99), spans searched per
//! second, bytes the Parquet scans read, and peak memory.

use std::sync::Arc;
use std::time::Instant;

use allegro_engine::catalog::{Catalog, CatalogConfig};
use allegro_engine::query::QueryEngine;
use allegro_engine::query::search::SearchRequest;
use allegro_engine::storage::open_store;
use serde_json::{Value, json};

use crate::Common;
use crate::dataset::{self, TENANT};
use crate::report::{Latency, emit, peak_rss};

/// Representative searches: Grafana's default, Drilldown's span list and structure tab,
/// selective filters on hot and overflow attributes, structure, pipelines.
pub const QUERIES: [(&str, &str); 10] = [
    ("all", "{ }"),
    ("errors", "{ status = error }"),
    (
        "service",
        "{ resource.service.name = \"checkout-service\" }",
    ),
    (
        "route+duration",
        "{ span.http.route = \"/api/cart\" && duration > 5ms }",
    ),
    ("unscoped", "{ .db.system = \"postgresql\" }"),
    ("regex", "{ name =~ \"GET /api/.*\" }"),
    (
        "descendant",
        "{ resource.service.name = \"api-gateway\" } >> { status = error }",
    ),
    ("count", "{ kind = server } | count() > 3"),
    ("by", "{ status = error } | by(resource.service.name)"),
    (
        "structure-tab",
        "({ resource.service.name = \"web-frontend\" } &>> { status = error }) || ({ resource.service.name = \"web-frontend\" }) | select(status, resource.service.name, name, nestedSetParent, nestedSetLeft, nestedSetRight)",
    ),
];

/// Runs the suite.
pub async fn run(c: &Common) -> Result<(), String> {
    let (_, dir, info) = dataset::ensure(c).await?;
    let store = open_store(&allegro_engine::storage::StorageBackend::Local { path: dir })
        .map_err(|e| e.to_string())?;
    let catalog = Arc::new(Catalog::new(store, CatalogConfig::default()));
    let engine = QueryEngine::new(catalog, None).map_err(|e| e.to_string())?;
    let tenants = [TENANT.to_string()];
    let mut results = serde_json::Map::new();
    for (name, q) in QUERIES {
        let req = SearchRequest {
            query: q.to_string(),
            limit: 20,
            spss: 3,
            range: None,
        };
        for _ in 0..c.warmup {
            engine
                .search(&tenants, &req)
                .await
                .map_err(|e| format!("{name}: {e}"))?;
        }
        let mut samples = Vec::new();
        let mut last = None;
        for _ in 0..c.reps {
            let t0 = Instant::now();
            let r = engine
                .search(&tenants, &req)
                .await
                .map_err(|e| format!("{name}: {e}"))?;
            samples.push(t0.elapsed());
            last = Some(r);
        }
        let lat = Latency::of(samples);
        let r = last.unwrap_or_default();
        let m = r.metrics.unwrap_or_default();
        results.insert(
            name.to_string(),
            json!({
                "query": q,
                "latency": lat,
                "spans_per_second": info.spans as f64 / (lat.p50_ms / 1e3).max(1e-9),
                "traces_returned": r.traces.len(),
                "bytes_read": m.inspected_bytes,
            }),
        );
    }
    let report = json!({
        "suite": "search",
        "compression": c.compression,
        "dataset": { "spans": info.spans, "traces": info.traces, "blocks": info.blocks, "data_bytes": info.data_bytes },
        "queries": Value::Object(results),
        "peak_rss_bytes": peak_rss(),
    });
    emit("TraceQL search", &report, c.json.as_deref())
}
