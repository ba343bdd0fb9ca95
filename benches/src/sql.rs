//! SQL analytics: ten queries a user of the `spans`/`traces` tables writes (latency
//! percentiles by service and route, error ratios per minute, slow endpoints, trace sizes,
//! attribute breakdowns over hot columns and overflow maps, parent/child joins over nested
//! sets, a `traceql()` join), run through `QueryEngine::sql` and side by side with DuckDB
//! running the equivalent SQL on the same Parquet files (`benches/duckdb/server.py`), the two
//! alternating repetition by repetition. Per query: p50/p99 of both, rows, peak RSS, and
//! whether the answers are equal (the columns both compute exactly, as sorted rows).
//!
//! The Allegro text is what `docs/sql.md` teaches (`span_attr(...)`, kind and status by name,
//! hex IDs); the DuckDB text reads the raw block columns (`{span.KEY}` expands to the hot
//! column where a block has one, else the overflow map).

use std::time::Instant;

use allegro_engine::query::QueryEngine;
use arrow::array::RecordBatch;
use serde_json::{Value, json};

use crate::dataset::{self, TENANT};
use crate::report::{Latency, emit_ranges, peak_rss, reset_peak_rss};
use crate::{Common, Versus, Window};

/// One benchmark query in both dialects. `{win}` is the time window, `{start}`/`{end}` its
/// bounds in unix nanoseconds.
pub(crate) struct Query {
    pub(crate) name: &'static str,
    pub(crate) allegro: &'static str,
    duckdb: &'static str,
    /// Columns both engines compute exactly (approximate percentiles are left out).
    pub(crate) exact: &'static [usize],
}

/// `text` with the window `[start, end)` filled in.
pub(crate) fn fill(text: &str, start: u64, end: u64) -> String {
    text.replace(
        "{win}",
        &format!("start_time_unix_nano >= {start} AND start_time_unix_nano < {end}"),
    )
    .replace("{start}", &start.to_string())
    .replace("{end}", &end.to_string())
}

pub(crate) const QUERIES: [Query; 10] = [
    Query {
        name: "latency-by-service",
        allegro: "SELECT service_name, count(*) AS spans, \
                  approx_percentile_cont(duration_ms, 0.5) AS p50_ms, \
                  approx_percentile_cont(duration_ms, 0.99) AS p99_ms \
                  FROM spans WHERE {win} GROUP BY 1 ORDER BY 1",
        duckdb: "SELECT service_name, count(*) AS spans, \
                 approx_quantile(duration_nano / 1e6, 0.5), \
                 approx_quantile(duration_nano / 1e6, 0.99) \
                 FROM spans WHERE {win} GROUP BY 1 ORDER BY 1",
        exact: &[0, 1],
    },
    Query {
        name: "latency-by-route",
        allegro: "SELECT service_name, span_attr('http.route') AS route, count(*) AS spans, \
                  approx_percentile_cont(duration_ms, 0.5) AS p50_ms, \
                  approx_percentile_cont(duration_ms, 0.99) AS p99_ms \
                  FROM spans WHERE {win} AND kind = 'server' \
                  AND span_attr('http.route') IS NOT NULL GROUP BY 1, 2 ORDER BY 5 DESC",
        duckdb: "SELECT service_name, {span.http.route} AS route, count(*) AS spans, \
                 approx_quantile(duration_nano / 1e6, 0.5), \
                 approx_quantile(duration_nano / 1e6, 0.99) \
                 FROM spans WHERE {win} AND kind = 2 \
                 AND {span.http.route} IS NOT NULL GROUP BY 1, 2 ORDER BY 5 DESC",
        exact: &[0, 1, 2],
    },
    Query {
        name: "error-ratio-by-minute",
        allegro: "SELECT date_bin(interval '1 minute', start_time) AS minute, service_name, \
                  count(*) AS spans, \
                  avg(CASE WHEN status = 'error' THEN 1.0 ELSE 0.0 END) AS error_ratio \
                  FROM spans WHERE {win} GROUP BY 1, 2 ORDER BY 1, 2",
        duckdb: "SELECT time_bucket(INTERVAL 1 minute, \
                 make_timestamp((start_time_unix_nano // 1000)::BIGINT)) AS minute, service_name, \
                 count(*) AS spans, \
                 avg(CASE WHEN status_code = 2 THEN 1.0 ELSE 0.0 END) AS error_ratio \
                 FROM spans WHERE {win} GROUP BY 1, 2 ORDER BY 1, 2",
        exact: &[1, 2, 3],
    },
    Query {
        name: "top-slow-endpoints",
        allegro: "SELECT service_name, name, count(*) AS calls, avg(duration_ms) AS avg_ms, \
                  max(duration_ms) AS max_ms FROM spans WHERE {win} AND kind = 'server' \
                  GROUP BY 1, 2 HAVING count(*) >= 100 ORDER BY avg_ms DESC LIMIT 10",
        duckdb: "SELECT service_name, name, count(*) AS calls, avg(duration_nano / 1e6) AS avg_ms, \
                 max(duration_nano / 1e6) AS max_ms FROM spans WHERE {win} AND kind = 2 \
                 GROUP BY 1, 2 HAVING count(*) >= 100 ORDER BY avg_ms DESC LIMIT 10",
        exact: &[0, 1, 2, 3, 4],
    },
    Query {
        name: "spans-per-trace",
        allegro: "SELECT spans, count(*) AS traces FROM traces \
                  WHERE start_time >= to_timestamp_nanos({start}) \
                  AND start_time < to_timestamp_nanos({end}) GROUP BY 1 ORDER BY 1",
        duckdb: "SELECT n, count(*) AS traces FROM (SELECT trace_id, count(*) AS n, \
                 min(start_time_unix_nano) AS s FROM spans GROUP BY trace_id) \
                 WHERE s >= {start} AND s < {end} GROUP BY 1 ORDER BY 1",
        exact: &[0, 1],
    },
    Query {
        name: "version-breakdown",
        allegro: "SELECT resource_attr('service.version') AS version, \
                  span_attr('http.request.method') AS method, status, count(*) AS spans \
                  FROM spans WHERE {win} AND service_name = 'api-gateway' \
                  GROUP BY 1, 2, 3 ORDER BY 4 DESC",
        duckdb: "SELECT {resource.service.version} AS version, \
                 {span.http.request.method} AS method, status_code, count(*) AS spans \
                 FROM spans WHERE {win} AND service_name = 'api-gateway' \
                 GROUP BY 1, 2, 3 ORDER BY 4 DESC",
        exact: &[0, 1, 3],
    },
    Query {
        name: "http-5xx-by-route",
        allegro: "SELECT span_attr('http.route') AS route, count(*) AS requests, \
                  avg(CASE WHEN span_attr_int('http.response.status_code') >= 500 \
                  THEN 1.0 ELSE 0.0 END) AS ratio_5xx \
                  FROM spans WHERE {win} AND span_attr('http.route') IS NOT NULL \
                  GROUP BY 1 ORDER BY 3 DESC",
        duckdb: "SELECT {span.http.route} AS route, count(*) AS requests, \
                 avg(CASE WHEN {span_int.http.response.status_code} >= 500 \
                 THEN 1.0 ELSE 0.0 END) AS ratio_5xx \
                 FROM spans WHERE {win} AND {span.http.route} IS NOT NULL \
                 GROUP BY 1 ORDER BY 3 DESC",
        exact: &[0, 1, 2],
    },
    Query {
        name: "kafka-topics",
        allegro: "SELECT span_attr('messaging.destination.name') AS topic, kind, \
                  count(*) AS spans, avg(duration_ms) AS avg_ms \
                  FROM spans WHERE {win} AND span_attr('messaging.system') = 'kafka' \
                  GROUP BY 1, 2 ORDER BY 1, 2",
        duckdb: "SELECT {span.messaging.destination.name} AS topic, kind, \
                 count(*) AS spans, avg(duration_nano / 1e6) AS avg_ms \
                 FROM spans WHERE {win} AND {span.messaging.system} = 'kafka' \
                 GROUP BY 1, 2 ORDER BY 1, 2",
        exact: &[0, 2, 3],
    },
    Query {
        name: "error-chains",
        allegro: "SELECT p.service_name AS caller, c.service_name AS callee, count(*) AS errors \
                  FROM spans p JOIN spans c \
                  ON c.trace_id = p.trace_id AND c.nested_set_parent = p.nested_set_left \
                  WHERE c.status = 'error' AND p.status = 'error' \
                  AND p.service_name <> c.service_name \
                  AND p.start_time_unix_nano >= {start} AND p.start_time_unix_nano < {end} \
                  AND c.start_time_unix_nano >= {start} AND c.start_time_unix_nano < {end} \
                  GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2",
        duckdb: "SELECT p.service_name AS caller, c.service_name AS callee, count(*) AS errors \
                 FROM spans p JOIN spans c \
                 ON c.trace_id = p.trace_id AND c.nested_set_parent = p.nested_set_left \
                 WHERE c.status_code = 2 AND p.status_code = 2 \
                 AND p.service_name <> c.service_name \
                 AND p.start_time_unix_nano >= {start} AND p.start_time_unix_nano < {end} \
                  AND c.start_time_unix_nano >= {start} AND c.start_time_unix_nano < {end} \
                  GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2",
        exact: &[0, 1, 2],
    },
    Query {
        name: "traceql-join",
        allegro: "SELECT s.service_name, s.name, count(*) AS failures \
                  FROM traceql('{ resource.service.name = \"api-gateway\" } >> { status = error }', \
                  {start}, {end}) t JOIN spans s USING (trace_id, span_id) \
                  GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2",
        duckdb: "WITH a AS (SELECT trace_id, nested_set_left AS l, nested_set_right AS r \
                 FROM spans WHERE service_name = 'api-gateway' \
                 AND trace_start_unix_nano <= {end} \
                 AND trace_start_unix_nano + trace_duration_nano >= {start}), \
                 b AS (SELECT * FROM spans WHERE status_code = 2 \
                 AND trace_start_unix_nano <= {end} \
                 AND trace_start_unix_nano + trace_duration_nano >= {start}) \
                 SELECT b.service_name, b.name, count(*) AS failures FROM b WHERE EXISTS \
                 (SELECT 1 FROM a WHERE a.trace_id = b.trace_id \
                 AND a.l < b.nested_set_left AND b.nested_set_right < a.r) \
                 GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2",
        exact: &[0, 1, 2],
    },
];

/// Options of the SQL suite.
#[derive(Debug, Clone, clap::Args)]
pub struct SqlArgs {
    /// Dataset, repetitions, output.
    #[command(flatten)]
    pub common: Common,
    /// Ranges, DuckDB, which queries.
    #[command(flatten)]
    pub versus: Versus,
    /// Ad-hoc SQL to time instead of the ten (Allegro only; `{win}`, `{start}`, `{end}` are
    /// filled in); repeatable.
    #[arg(long)]
    pub query: Vec<String>,
}

/// A value as the answer check compares it: numbers to six significant digits.
fn canonical(v: &Value) -> String {
    match v {
        Value::Number(n) => n.as_f64().map_or(n.to_string(), |f| format!("{f:.5e}")),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The `exact` columns of `rows`, canonical and sorted: equal answers compare equal whatever
/// the order of ties.
pub(crate) fn answer(rows: &[Vec<Value>], exact: &[usize]) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            exact
                .iter()
                .map(|&i| r.get(i).map_or("null".into(), canonical))
                .collect()
        })
        .collect();
    out.sort();
    out
}

/// Arrow batches as JSON rows in column order.
pub(crate) fn rows_of(batches: &[RecordBatch]) -> Result<Vec<Vec<Value>>, String> {
    let mut out = Vec::new();
    for b in batches {
        let mut w = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::JsonArray>(Vec::new());
        w.write(b).map_err(|e| e.to_string())?;
        w.finish().map_err(|e| e.to_string())?;
        let objects: Vec<serde_json::Map<String, Value>> =
            serde_json::from_slice(&w.into_inner()).map_err(|e| e.to_string())?;
        let names: Vec<&String> = b.schema_ref().fields().iter().map(|f| f.name()).collect();
        for o in objects {
            out.push(
                names
                    .iter()
                    .map(|n| o.get(*n).cloned().unwrap_or(Value::Null))
                    .collect(),
            );
        }
    }
    Ok(out)
}

/// Rows at most in an answer the suites time.
pub(crate) const MAX_ROWS: usize = 1_000_000;

/// `sql`'s answer from `engine` over the dataset's tenant.
pub(crate) async fn run_allegro(
    engine: &QueryEngine,
    sql: &str,
) -> Result<Vec<RecordBatch>, String> {
    let tenants = [TENANT.to_string()];
    let answer = engine
        .sql(&tenants, sql, MAX_ROWS)
        .await
        .map_err(|e| format!("{e} in {sql}"))?;
    Ok(answer.batches)
}

/// Runs the suite.
pub async fn run(a: &SqlArgs) -> Result<(), String> {
    let c = &a.common;
    let (_, dir, info) = dataset::ensure(c).await?;
    let (engine, data_end) = dataset::open_engine(&dir).await?;
    let v = &a.versus;
    let mut duck = v.duckdb(&dir)?;
    let mut ranges = serde_json::Map::new();
    for r in &v.ranges {
        let Window {
            start,
            end,
            spans: spans_in_range,
        } = Versus::window(r, c, info.spans, data_end)?;
        let fill = |text: &str| fill(text, start, end);
        let mut queries = serde_json::Map::new();
        for (i, text) in a.query.iter().enumerate() {
            let sql = fill(text);
            let mut samples = Vec::new();
            let mut rows = 0;
            for n in 0..c.warmup + c.reps {
                let t0 = Instant::now();
                let batches = run_allegro(&engine, &sql).await?;
                if n >= c.warmup {
                    samples.push(t0.elapsed());
                }
                rows = batches.iter().map(|b| b.num_rows()).sum();
            }
            let lat = Latency::of(samples);
            eprintln!("{r} query {i}: {:>9.1} ms  rows {rows}", lat.p50_ms);
            queries.insert(
                format!("query {i}"),
                json!({ "sql": sql, "latency": lat, "rows": rows }),
            );
        }
        let adhoc = !a.query.is_empty();
        for q in QUERIES.iter().filter(|_| !adhoc) {
            if !v.runs(q.name) {
                continue;
            }
            let (ours_sql, theirs_sql) = (fill(q.allegro), fill(q.duckdb));
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            let mut peak = 0u64;
            let mut last = Vec::new();
            let mut duck_rows = Vec::new();
            for i in 0..c.warmup + c.reps {
                reset_peak_rss();
                let t0 = Instant::now();
                let batches = run_allegro(&engine, &ours_sql).await?;
                let took = t0.elapsed();
                peak = peak.max(peak_rss());
                if let Some(d) = duck.as_mut() {
                    let (t, rows) = d.query(&theirs_sql)?;
                    if i >= c.warmup {
                        theirs.push(t);
                    }
                    duck_rows = rows;
                }
                if i >= c.warmup {
                    ours.push(took);
                }
                last = batches;
            }
            let rows = rows_of(&last)?;
            let lat = Latency::of(ours);
            let mut entry = json!({
                "sql": ours_sql,
                "latency": lat,
                "spans_per_second": spans_in_range / (lat.p50_ms / 1e3).max(1e-9),
                "rows": rows.len(),
                "peak_rss_bytes": peak,
            });
            if duck.is_some() {
                let d = Latency::of(theirs);
                let equal = answer(&rows, q.exact) == answer(&duck_rows, q.exact);
                entry["duckdb"] =
                    json!({ "latency": d, "sql": theirs_sql, "rows": duck_rows.len() });
                entry["faster_than_duckdb"] = json!(d.p50_ms / lat.p50_ms.max(1e-9));
                entry["answers_equal"] = json!(equal);
                if !equal {
                    entry["first_rows"] = json!(rows.iter().take(3).collect::<Vec<_>>());
                    entry["duckdb"]["first_rows"] =
                        json!(duck_rows.iter().take(3).collect::<Vec<_>>());
                }
            }
            eprintln!(
                "{r} {:<22} {:>9.1} ms  duckdb {:>9}  rows {:>6}  equal {}",
                q.name,
                lat.p50_ms,
                entry["duckdb"]["latency"]["p50_ms"]
                    .as_f64()
                    .map_or("-".into(), |v| format!("{v:.1} ms")),
                rows.len(),
                entry["answers_equal"]
            );
            queries.insert(q.name.to_string(), entry);
        }
        ranges.insert(r.clone(), Value::Object(queries));
    }
    emit_ranges("sql", "SQL analytics", c, &info, ranges)
}
