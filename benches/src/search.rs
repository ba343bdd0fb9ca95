//! TraceQL search at scale: Tempo's benchmark shapes, `{ }` and Traces Drilldown's span list
//! and structure tab over ranges ending at the end of the data, side by side with DuckDB
//! running hand-written SQL that returns the same newest traces from the same Parquet files
//! (`benches/duckdb/server.py`), the two alternating repetition by repetition. Per query:
//! p50/p99 of both, bytes read, spans in range per second, peak RSS, and whether the answers
//! (trace IDs, in order) are equal.

use std::time::Instant;

use allegro_engine::query::QueryEngine;
use allegro_engine::query::search::SearchRequest;
use serde_json::{Value, json};

use crate::dataset::{self, TENANT};
use crate::report::{Latency, emit_ranges, peak_rss, reset_peak_rss, timed};
use crate::{Common, Versus, Window};

/// One benchmark query: TraceQL, the SQL that answers it, and Grafana's limit and spss.
pub struct Shape {
    /// The shape's name in reports.
    pub name: &'static str,
    /// The search.
    pub traceql: &'static str,
    /// `{win}`, `{limit}` and `{span.KEY}`/`{resource.KEY}` are filled in by the runner.
    sql: String,
    /// Traces asked for.
    pub limit: usize,
    /// Spans per spanset asked for.
    pub spss: usize,
}

impl Shape {
    /// The search of this shape over `[start, end]` (unix ns).
    pub fn request(&self, start: u64, end: u64) -> SearchRequest {
        SearchRequest {
            query: self.traceql.to_string(),
            limit: self.limit,
            spss: self.spss,
            range: Some((start, end)),
        }
    }
}

/// The newest traces with a span matching `cond`.
fn any_span(cond: &str) -> String {
    format!(
        "SELECT trace_id, min(trace_start_unix_nano) AS s FROM spans WHERE {{win}} AND ({cond}) \
         GROUP BY trace_id ORDER BY s DESC, trace_id LIMIT {{limit}}"
    )
}

/// The newest traces whose spans match `cond` with `having` true of the group.
fn grouped(cond: &str, having: &str) -> String {
    format!(
        "SELECT trace_id, min(trace_start_unix_nano) AS s FROM spans WHERE {{win}} AND ({cond}) \
         GROUP BY trace_id HAVING {having} ORDER BY s DESC, trace_id LIMIT {{limit}}"
    )
}

/// The newest traces with a pair of spans `a` (matching `lhs`) and `b` (matching `rhs`)
/// for which `rel` holds (`exists`), or with a `b` for which no `a` does (not `exists`).
fn related(lhs: &str, rhs: &str, rel: &str, exists: bool) -> String {
    let side = |cond: &str| {
        format!(
            "SELECT trace_id, nested_set_left AS l, nested_set_right AS r, \
             nested_set_parent AS p, trace_start_unix_nano AS ts FROM spans \
             WHERE {{win}} AND ({cond})"
        )
    };
    let matched =
        format!("SELECT 1 FROM a WHERE a.trace_id = b.trace_id AND a.l > 0 AND b.l > 0 AND {rel}");
    let test = if exists {
        format!("EXISTS ({matched})")
    } else {
        format!("NOT EXISTS ({matched})")
    };
    format!(
        "WITH a AS ({}), b AS ({}) SELECT trace_id, min(ts) AS s FROM b WHERE {test} \
         GROUP BY trace_id ORDER BY s DESC, trace_id LIMIT {{limit}}",
        side(lhs),
        side(rhs)
    )
}

const DESCENDANT: &str = "a.l < b.l AND b.r < a.r";
const CHILD: &str = "b.p = a.l";
const SIBLING: &str = "b.p = a.p AND b.p <> 0 AND b.l <> a.l";
const ERROR: &str = "status_code = 2";
const GATEWAY: &str = "service_name = 'api-gateway'";

/// The shapes: Tempo's benchmark kinds, `{ }`, and Drilldown's searches as Grafana sends them.
pub fn shapes() -> Vec<Shape> {
    let s = |name, traceql, sql: String| Shape {
        name,
        traceql,
        sql,
        limit: 20,
        spss: 3,
    };
    vec![
        s("all", "{ }", any_span("true")),
        s(
            "span-attr-match",
            "{ span.http.route = \"/api/cart\" }",
            any_span("{span.http.route} = '/api/cart'"),
        ),
        s(
            "span-attr-nomatch",
            "{ span.http.route = \"/api/none\" }",
            any_span("{span.http.route} = '/api/none'"),
        ),
        s(
            "resource-attr",
            "{ resource.service.name = \"checkout-service\" }",
            any_span("service_name = 'checkout-service'"),
        ),
        s("intrinsic", "{ status = error }", any_span(ERROR)),
        s(
            "regex",
            "{ name =~ \"GET /api/.*\" }",
            any_span("regexp_full_match(name, 'GET /api/.*')"),
        ),
        s(
            "or-spansets",
            "{ resource.service.name = \"payment-service\" } || { status = error }",
            any_span("service_name = 'payment-service' OR status_code = 2"),
        ),
        s(
            "and-spansets",
            "{ resource.service.name = \"api-gateway\" } && { status = error }",
            grouped(
                &format!("{GATEWAY} OR {ERROR}"),
                &format!("bool_or({GATEWAY}) AND bool_or({ERROR})"),
            ),
        ),
        s(
            "mixed",
            "{ resource.service.name = \"cart-service\" && span.http.route = \"/api/cart\" && duration > 5ms }",
            any_span(
                "service_name = 'cart-service' AND {span.http.route} = '/api/cart' AND duration_nano > 5000000",
            ),
        ),
        s(
            "complex",
            "{ (resource.service.name = \"api-gateway\" || resource.service.name = \"web-frontend\") && kind = server && duration > 10ms && status != error }",
            any_span(
                "service_name IN ('api-gateway', 'web-frontend') AND kind = 2 AND duration_nano > 10000000 AND status_code <> 2",
            ),
        ),
        s(
            "descendant",
            "{ resource.service.name = \"api-gateway\" } >> { status = error }",
            related(GATEWAY, ERROR, DESCENDANT, true),
        ),
        s(
            "child",
            "{ kind = server } > { kind = client }",
            related("kind = 2", "kind = 3", CHILD, true),
        ),
        // The gateway checks stock and reads the product side by side.
        s(
            "sibling",
            "{ name = \"shop.inventory.v1.InventoryService/CheckStock\" } ~ { name = \"shop.catalog.v1.ProductCatalogService/GetProduct\" }",
            related(
                "name = 'shop.inventory.v1.InventoryService/CheckStock'",
                "name = 'shop.catalog.v1.ProductCatalogService/GetProduct'",
                SIBLING,
                true,
            ),
        ),
        // Structure that matches nothing reads the whole range, as any no-match query does.
        s(
            "sibling-nomatch",
            "{ resource.service.name = \"cart-service\" } ~ { resource.service.name = \"inventory-service\" }",
            related(
                "service_name = 'cart-service'",
                "service_name = 'inventory-service'",
                SIBLING,
                true,
            ),
        ),
        s(
            "not-descendant",
            "{ resource.service.name = \"api-gateway\" } !>> { status = error }",
            related(GATEWAY, ERROR, DESCENDANT, false),
        ),
        s(
            "union-descendant",
            "{ resource.service.name = \"api-gateway\" } &>> { status = error }",
            related(GATEWAY, ERROR, DESCENDANT, true),
        ),
        s(
            "count",
            "{ } | count() > 60",
            grouped("true", "count(*) > 60"),
        ),
        s(
            "avg",
            "{ kind = server } | avg(duration) > 100ms",
            grouped("kind = 2", "avg(duration_nano) > 100000000"),
        ),
        s(
            "by",
            "{ status = error } | by(resource.service.name)",
            any_span(ERROR),
        ),
        s(
            "select",
            "{ status = error } | select(span.http.route, resource.service.name)",
            any_span(ERROR),
        ),
        Shape {
            name: "drilldown-span-list",
            traceql: "{nestedSetParent<0 && true && status = error}",
            sql: any_span("nested_set_parent < 0 AND status_code = 2"),
            limit: 200,
            spss: 10,
        },
        Shape {
            name: "drilldown-structure",
            traceql: "({nestedSetParent<0 && true && status = error} &>> { status = error }) || ({nestedSetParent<0 && true && status = error}) | select(status, resource.service.name, name, nestedSetParent, nestedSetLeft, nestedSetRight)",
            sql: any_span("nested_set_parent < 0 AND status_code = 2"),
            limit: 200,
            spss: 20,
        },
    ]
}

/// Options of the search suite.
#[derive(Debug, Clone, clap::Args)]
pub struct SearchArgs {
    /// Dataset, repetitions, output.
    #[command(flatten)]
    pub common: Common,
    /// Ranges, DuckDB, which shapes.
    #[command(flatten)]
    pub versus: Versus,
}

/// A trace ID as Tempo's search answer writes it: hex without leading zeros.
fn trimmed(hex: &str) -> String {
    let t = hex.trim_start_matches('0');
    if t.is_empty() { "0".into() } else { t.into() }
}

/// Times Grafana's tag requests over `range`: names (the query editor's autocomplete) and the
/// values of a resource and a span attribute.
async fn tags(
    engine: &QueryEngine,
    c: &Common,
    range: (u64, u64),
    out: &mut serde_json::Map<String, Value>,
) -> Result<(), String> {
    use allegro_engine::query::tags::parse_tag;
    let mut samples = Vec::new();
    for i in 0..c.warmup + c.reps {
        let t0 = Instant::now();
        let (names, _) = engine
            .tag_names(TENANT, Some(range))
            .await
            .map_err(|e| e.to_string())?;
        if i >= c.warmup {
            samples.push(t0.elapsed());
        }
        if names.is_empty() {
            return Err("no tag names".into());
        }
    }
    let lat = Latency::of(samples);
    eprintln!("tag-names               {:>9.1} ms", lat.p50_ms);
    out.insert("tag-names".into(), json!({ "latency": lat }));
    for tag in ["resource.service.name", "span.http.route"] {
        let field = parse_tag(tag, false).map_err(|e| e.to_string())?;
        let mut samples = Vec::new();
        let mut n = 0;
        // The first request reads the blocks no earlier request read; later ones answer from
        // the per-block values it kept.
        let mut first_ms = 0.0;
        for i in 0..c.warmup + c.reps {
            let t0 = Instant::now();
            let (values, _) = engine
                .tag_values(TENANT, &field, None, Some(range), 1000)
                .await
                .map_err(|e| e.to_string())?;
            if i == 0 {
                first_ms = t0.elapsed().as_secs_f64() * 1e3;
            }
            if i >= c.warmup {
                samples.push(t0.elapsed());
            }
            n = values.len();
        }
        let lat = Latency::of(samples);
        eprintln!(
            "tag-values {tag:<22} {:>9.1} ms ({n} values; first {first_ms:.1} ms)",
            lat.p50_ms
        );
        out.insert(
            format!("tag-values {tag}"),
            json!({ "latency": lat, "first_ms": first_ms, "values": n }),
        );
    }
    Ok(())
}

/// Runs the suite.
pub async fn run(a: &SearchArgs) -> Result<(), String> {
    let c = &a.common;
    let (_, dir, info) = dataset::ensure(c).await?;
    let (engine, data_end) = dataset::open_engine(&dir).await?;
    let v = &a.versus;
    let mut duck = v.duckdb(&dir)?;
    let tenants = [TENANT.to_string()];
    let mut ranges = serde_json::Map::new();
    for r in &v.ranges {
        let Window {
            start,
            end,
            spans: spans_in_range,
        } = Versus::window(r, c, info.spans, data_end)?;
        let mut queries = serde_json::Map::new();
        for shape in shapes() {
            if !v.runs(shape.name) {
                continue;
            }
            let req = shape.request(start, end);
            let sql = shape
                .sql
                .replace(
                    "{win}",
                    &format!(
                        "trace_start_unix_nano <= {end} AND \
                         trace_start_unix_nano + trace_duration_nano >= {start}"
                    ),
                )
                .replace("{limit}", &shape.limit.to_string());
            let mut ours = Vec::new();
            let mut theirs = Vec::new();
            let mut peak = 0u64;
            let mut last = None;
            let mut duck_ids = Vec::new();
            for i in 0..c.warmup + c.reps {
                reset_peak_rss();
                let t0 = Instant::now();
                let resp = engine
                    .search(&tenants, &req)
                    .await
                    .map_err(|e| format!("{}: {e}", shape.name))?;
                let took = t0.elapsed();
                peak = peak.max(peak_rss());
                if let Some(d) = duck.as_mut() {
                    let (t, rows) = d.query(&sql)?;
                    if i >= c.warmup {
                        theirs.push(t);
                    }
                    duck_ids = rows
                        .iter()
                        .filter_map(|r| r.first()?.as_str())
                        .map(trimmed)
                        .collect();
                }
                if i >= c.warmup {
                    ours.push(took);
                }
                last = Some(resp);
            }
            let resp = last.unwrap_or_default();
            let ids: Vec<String> = resp.traces.iter().map(|t| t.trace_id.clone()).collect();
            let lat = Latency::of(ours);
            // Planning alone: compiled, blocks chosen and pruned, per-span plans built and
            // printed, nothing read.
            let planning = timed(c, async || engine.explain(TENANT, &req).await)
                .await
                .map_err(|e| format!("{}: {e}", shape.name))?;
            let mut entry = json!({
                "query": shape.traceql,
                "limit": shape.limit,
                "latency": lat,
                "planning": planning,
                "spans_per_second": spans_in_range / (lat.p50_ms / 1e3).max(1e-9),
                "traces_returned": ids.len(),
                "bytes_read": resp.metrics.map_or(0, |m| m.inspected_bytes),
                "peak_rss_bytes": peak,
            });
            if duck.is_some() {
                let d = Latency::of(theirs);
                entry["duckdb"] = json!({ "latency": d, "sql": sql });
                entry["faster_than_duckdb"] = json!(d.p50_ms / lat.p50_ms.max(1e-9));
                entry["answers_equal"] = json!(ids == duck_ids);
                if ids != duck_ids {
                    entry["duckdb"]["first_ids"] =
                        json!(duck_ids.iter().take(3).collect::<Vec<_>>());
                    entry["first_ids"] = json!(ids.iter().take(3).collect::<Vec<_>>());
                }
            }
            eprintln!(
                "{r} {:<22} {:>9.1} ms  duckdb {:>9}  equal {}",
                shape.name,
                lat.p50_ms,
                entry["duckdb"]["latency"]["p50_ms"]
                    .as_f64()
                    .map_or("-".into(), |v| format!("{v:.1} ms")),
                entry["answers_equal"]
            );
            queries.insert(shape.name.to_string(), entry);
        }
        if v.only.is_empty() || v.only.iter().any(|o| o.starts_with("tag")) {
            tags(&engine, c, (start, end), &mut queries).await?;
        }
        ranges.insert(r.clone(), Value::Object(queries));
    }
    emit_ranges("search", "TraceQL search", c, &info, ranges)
}
