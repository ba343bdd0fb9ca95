//! `allegro metrics`: a TraceQL metrics query over the stored blocks, printed as a table with
//! a sparkline per series (or Tempo's JSON with `--format json`).

use std::process::ExitCode;

use allegro_engine::query::QueryEngine;
use allegro_engine::query::metrics::MetricsRequest;
use allegro_engine::tempopb::QueryRangeResponse;
use opentelemetry_proto::tonic::common::v1::any_value::Value;

use super::open_catalog;
use crate::api::metrics::{MetricsParams, metrics_request};
use crate::api::time::{step, timestamp};
use crate::config::Config;
use crate::jsonpb::metrics::range_json;
use crate::tenant::SINGLE_TENANT;

/// Options of `allegro metrics`.
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsArgs {
    /// The query, e.g. `{ status = error } | rate() by (resource.service.name)`.
    pub query: String,
    /// The last DURATION (`15m`, `1h`, `6h`); default 1h.
    #[arg(long, conflicts_with_all = ["start", "end"])]
    pub since: Option<String>,
    /// Range start: unix seconds, nanoseconds or RFC3339.
    #[arg(long)]
    pub start: Option<String>,
    /// Range end (default now).
    #[arg(long)]
    pub end: Option<String>,
    /// Step (`30s`, `1m`); default Tempo's for the range.
    #[arg(long)]
    pub step: Option<String>,
    /// Tenant (`a|b` adds several up).
    #[arg(long, default_value = SINGLE_TENANT)]
    pub tenant: String,
    /// `table` for people, `json` (Tempo's query_range response) for scripts.
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
}

fn request(a: &MetricsArgs) -> Result<MetricsRequest, String> {
    let time = |flag: &str, v: &Option<String>| {
        v.as_deref()
            .map(|v| timestamp(flag, v))
            .transpose()
            .map_err(|e| e.message)
    };
    let since = a
        .since
        .as_deref()
        .map(|s| humantime::parse_duration(s).map_err(|e| format!("--since: {e}")))
        .transpose()?;
    metrics_request(&MetricsParams {
        query: a.query.clone(),
        start: time("--start", &a.start)?,
        end: time("--end", &a.end)?,
        since,
        step: a
            .step
            .as_deref()
            .map(step)
            .transpose()
            .map_err(|e| e.message)?,
        exemplars: Some(0),
        max_series: None,
        mode: None,
    })
    .map_err(|e| e.message)
}

/// `allegro metrics`.
pub async fn run(cfg: Config, a: MetricsArgs) -> Result<ExitCode, String> {
    let req = request(&a)?;
    let engine = QueryEngine::new(open_catalog(&cfg)?, None).map_err(|e| e.to_string())?;
    let tenants: Vec<String> = a.tenant.split('|').map(str::to_string).collect();
    let settings = cfg.traceql_metrics().map_err(|e| e.to_string())?;
    let resp = match engine.query_range(&tenants, &req, &settings.limits).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(if e.is_user_error() { 2 } else { 1 }));
        }
    };
    if a.format == "json" {
        println!("{}", range_json(&resp));
    } else {
        print!("{}", table(&resp));
    }
    Ok(ExitCode::SUCCESS)
}

/// `▁▂▃▄▅▆▇█` scaled from 0 (or the lowest negative value) to the series' maximum; a space
/// where there is no sample.
pub fn sparkline(values: &[Option<f64>]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let present: Vec<f64> = values.iter().flatten().copied().collect();
    let lo = present.iter().copied().fold(0.0f64, f64::min);
    let hi = present.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    values
        .iter()
        .map(|v| match v {
            None => ' ',
            Some(x) if hi <= lo => BARS[if *x > 0.0 { 7 } else { 0 }],
            Some(x) => BARS[(((x - lo) / (hi - lo)) * 7.0).round().clamp(0.0, 7.0) as usize],
        })
        .collect()
}

fn label_text(r: &QueryRangeResponse, i: usize) -> String {
    let parts: Vec<String> = r.series[i]
        .labels
        .iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => format!("{s:?}"),
                Some(Value::IntValue(n)) => n.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                _ => "nil".into(),
            };
            format!("{}={v}", kv.key)
        })
        .collect();
    format!("{{{}}}", parts.join(", "))
}

fn short(v: f64) -> String {
    if v == 0.0 || (v.abs() >= 0.01 && v.abs() < 1e6) {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.3e}")
    }
}

/// The series as a table: labels, a sparkline over the range, last, min, max.
pub fn table(r: &QueryRangeResponse) -> String {
    let mut stamps: Vec<i64> = r
        .series
        .iter()
        .flat_map(|s| s.samples.iter().map(|x| x.timestamp_ms))
        .collect();
    stamps.sort_unstable();
    stamps.dedup();
    let labels: Vec<String> = (0..r.series.len()).map(|i| label_text(r, i)).collect();
    let width = labels
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut out = format!(
        "{:<width$}  {:<w2$}  {:>10} {:>10} {:>10}\n",
        "SERIES",
        "OVER TIME",
        "LAST",
        "MIN",
        "MAX",
        w2 = stamps.len().max(9)
    );
    for (s, l) in r.series.iter().zip(&labels) {
        let by_ts: std::collections::HashMap<i64, f64> = s
            .samples
            .iter()
            .map(|x| (x.timestamp_ms, x.value))
            .collect();
        let values: Vec<Option<f64>> = stamps.iter().map(|t| by_ts.get(t).copied()).collect();
        let present: Vec<f64> = values.iter().flatten().copied().collect();
        let last = present.last().copied().unwrap_or(f64::NAN);
        let min = present.iter().copied().fold(f64::INFINITY, f64::min);
        let max = present.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        out.push_str(&format!(
            "{l:<width$}  {:<w2$}  {:>10} {:>10} {:>10}\n",
            sparkline(&values),
            short(last),
            short(min),
            short(max),
            w2 = stamps.len().max(9)
        ));
    }
    out.push_str(&format!(
        "{} series, {} points each\n",
        r.series.len(),
        stamps.len()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparklines_scale_to_the_maximum() {
        assert_eq!(sparkline(&[Some(0.0), Some(7.0), None, Some(3.5)]), "▁█ ▅");
        assert_eq!(sparkline(&[Some(2.0), Some(2.0)]), "██");
        assert_eq!(sparkline(&[]), "");
    }
}
