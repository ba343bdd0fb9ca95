//! `allegro query` and `allegro explain`: TraceQL search embedded on the data directory, no
//! server needed (blocks only; spans still in a server's WAL appear once flushed).

use std::process::ExitCode;

use allegro_engine::error::EngineError;
use allegro_engine::query::QueryEngine;
use allegro_engine::query::search::SearchRequest;
use allegro_engine::tempopb::SearchResponse;

use super::open_catalog;
use crate::api::search::{SearchParams, search_request};
use crate::config::Config;
use crate::jsonpb::search::search_json;
use crate::tenant::SINGLE_TENANT;

/// Options of `allegro query`.
#[derive(Debug, Clone, clap::Args)]
pub struct QueryArgs {
    /// The TraceQL query, e.g. `{ status = error }`.
    pub query: String,
    /// Only traces of the last DURATION (`15m`, `1h`, `7d`).
    #[arg(long, conflicts_with_all = ["start", "end"])]
    pub since: Option<String>,
    /// Window start: RFC3339 or unix seconds.
    #[arg(long)]
    pub start: Option<String>,
    /// Window end: RFC3339 or unix seconds (default now).
    #[arg(long)]
    pub end: Option<String>,
    /// Most traces (newest first).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Most spans shown per spanset.
    #[arg(long, default_value_t = 3)]
    pub spss: usize,
    /// Tenant (`a|b` searches several).
    #[arg(long, default_value = SINGLE_TENANT)]
    pub tenant: String,
    /// `table` for people, `json` (Tempo's search response) for scripts.
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
}

/// Options of `allegro explain`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExplainArgs {
    /// The TraceQL query: a search, or a metrics query (`{ } | rate() by (name)`).
    pub query: String,
    /// Tenant whose blocks the plan reads.
    #[arg(long, default_value = SINGLE_TENANT)]
    pub tenant: String,
    /// Metrics queries: the range is the last DURATION (default 1h).
    #[arg(long)]
    pub since: Option<String>,
    /// Metrics queries: the step (`30s`, `1m`); default Tempo's for the range.
    #[arg(long)]
    pub step: Option<String>,
}

fn instant(flag: &str, v: &str) -> Result<u64, String> {
    if let Ok(s) = v.parse::<u64>() {
        return Ok(s.saturating_mul(1_000_000_000));
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.timestamp_nanos_opt().unwrap_or_default().max(0) as u64)
        .map_err(|e| format!("--{flag} {v:?}: expected RFC3339 or unix seconds ({e})"))
}

fn range(a: &QueryArgs) -> Result<Option<(u64, u64)>, String> {
    if let Some(s) = &a.since {
        let d = humantime::parse_duration(s).map_err(|e| format!("--since {s:?}: {e}"))?;
        let now = allegro_engine::now_unix_nanos();
        return Ok(Some((now.saturating_sub(d.as_nanos() as u64), now)));
    }
    let start = a
        .start
        .as_deref()
        .map(|v| instant("start", v))
        .transpose()?;
    let end = a.end.as_deref().map(|v| instant("end", v)).transpose()?;
    Ok(match (start, end) {
        (None, None) => None,
        (s, e) => Some((
            s.unwrap_or(0),
            e.unwrap_or_else(allegro_engine::now_unix_nanos),
        )),
    })
}

/// Prints an engine error; a bad query exits 2, anything else 1.
fn fail(e: EngineError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(if e.is_user_error() { 2 } else { 1 })
}

fn engine(cfg: &Config) -> Result<QueryEngine, String> {
    QueryEngine::new(open_catalog(cfg)?, None).map_err(|e| e.to_string())
}

/// `allegro query`.
pub async fn run(cfg: Config, a: QueryArgs) -> Result<ExitCode, String> {
    // Limits and legacy defaults are checked as the HTTP and gRPC doors check them; the
    // CLI's range is finer (RFC3339, `--since`) than their unix seconds.
    let limits = cfg.search_limits().map_err(|e| e.to_string())?;
    let mut req = search_request(
        &SearchParams {
            query: a.query.clone(),
            limit: Some(a.limit),
            spss: Some(a.spss),
            ..Default::default()
        },
        &limits,
    )
    .map_err(|e| e.message)?;
    req.range = range(&a)?;
    let tenants: Vec<String> = a.tenant.split('|').map(str::to_string).collect();
    let resp = match engine(&cfg)?.search(&tenants, &req).await {
        Ok(r) => r,
        Err(e) => return Ok(fail(e)),
    };
    if a.format == "json" {
        println!("{}", search_json(&resp));
    } else {
        print_table(&resp);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(r: &SearchResponse) {
    println!(
        "{:<32} {:<24} {:>10}  {:<20} ROOT NAME",
        "TRACE", "START", "DURATION", "ROOT SERVICE"
    );
    for t in &r.traces {
        let start = chrono::DateTime::from_timestamp_nanos(t.start_time_unix_nano as i64)
            .format("%Y-%m-%dT%H:%M:%S%.3fZ");
        println!(
            "{:<32} {:<24} {:>8}ms  {:<20} {}",
            t.trace_id, start, t.duration_ms, t.root_service_name, t.root_trace_name
        );
        for s in &t.span_sets {
            let by: Vec<String> = s
                .attributes
                .iter()
                .map(|kv| format!("{}={}", kv.key, show(kv.value.as_ref())))
                .collect();
            println!("  spanset: {} matched {}", s.matched, by.join(" "));
            for sp in &s.spans {
                let attrs: Vec<String> = sp
                    .attributes
                    .iter()
                    .map(|kv| format!("{}={}", kv.key, show(kv.value.as_ref())))
                    .collect();
                println!(
                    "    {} {:<30} {:>12.3}ms  {}",
                    sp.span_id,
                    sp.name,
                    sp.duration_nanos as f64 / 1e6,
                    attrs.join(" ")
                );
            }
        }
    }
    if let Some(m) = &r.metrics {
        println!(
            "{} traces; searched {} blocks, {} spans, read {} bytes",
            r.traces.len(),
            m.total_blocks,
            m.inspected_spans,
            m.inspected_bytes
        );
    }
}

fn show(v: Option<&allegro_engine::otlp::common::v1::AnyValue>) -> String {
    use allegro_engine::otlp::common::v1::any_value::Value;
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => format!("{s:?}"),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(f)) => f.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => "nil".into(),
    }
}

/// `allegro explain`.
pub async fn explain(cfg: Config, a: ExplainArgs) -> Result<ExitCode, String> {
    if let Ok(q) = allegro_traceql::parse(&a.query)
        && matches!(q.body, allegro_traceql::ast::QueryBody::Metrics(_))
    {
        return explain_metrics(cfg, a).await;
    }
    let req = SearchRequest {
        query: a.query.clone(),
        limit: 20,
        spss: 3,
        range: None,
    };
    let ex = match engine(&cfg)?.explain(&a.tenant, &req).await {
        Ok(x) => x,
        Err(e) => return Ok(fail(e)),
    };
    let q = allegro_traceql::compile(&a.query).map_err(|e| e.to_string())?;
    println!("== TraceQL (parsed, validated, rewritten) ==\n{q}\n");
    println!("== AST ==\n{q:#?}\n");
    println!(
        "== Per-trace program (traceql_spansets) ==\n{}\n",
        serde_json::to_string_pretty(&ex.compiled.program).unwrap_or_default()
    );
    println!("== Logical plan (optimised) ==\n{}\n", ex.logical);
    println!("== Physical plan ==\n{}", ex.physical);
    Ok(ExitCode::SUCCESS)
}

async fn explain_metrics(cfg: Config, a: ExplainArgs) -> Result<ExitCode, String> {
    let req = super::metrics_cmd::request(&super::metrics_cmd::MetricsArgs {
        query: a.query.clone(),
        since: a.since.clone(),
        start: None,
        end: None,
        step: a.step.clone(),
        tenant: a.tenant.clone(),
        format: "table".into(),
        width: None,
    })?;
    let limits = cfg.traceql_metrics().map_err(|e| e.to_string())?.limits;
    let ex = match engine(&cfg)?
        .explain_metrics(&a.tenant, &req, &limits)
        .await
    {
        Ok(x) => x,
        Err(e) => return Ok(fail(e)),
    };
    let q = allegro_traceql::compile(&a.query).map_err(|e| e.to_string())?;
    println!("== TraceQL metrics (parsed, validated, rewritten) ==\n{q}\n");
    println!("== Grid ==\n{}\n", ex.grid);
    for (i, st) in ex.stages.iter().enumerate() {
        println!("== First stage {}: {} ==", i + 1, st.function);
        println!("spans:    {}", st.selection);
        println!("reads:    {}", st.reads);
        println!("sampling: {}\n", st.sampling);
        println!("-- Logical plan (optimised) --\n{}\n", st.logical);
        println!("-- Physical plan --\n{}", st.physical);
    }
    Ok(ExitCode::SUCCESS)
}
