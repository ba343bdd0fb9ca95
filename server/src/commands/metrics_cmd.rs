//! `allegro metrics`: a TraceQL metrics query over the stored blocks, printed as a table with
//! a sparkline per series (or Tempo's JSON with `--format json`).
//!
//! The table fits the terminal (or `--width`): a range of more points than there is room for
//! is drawn with each cell standing for several consecutive points, at their highest value so
//! a spike is never averaged away, and long series labels are cut. Values carry the unit the
//! query implies: durations (Tempo answers them in seconds) as ns/µs/ms/s, `rate()` per second.

use std::process::ExitCode;

use allegro_engine::query::QueryEngine;
use allegro_engine::query::metrics::MetricsRequest;
use allegro_engine::tempopb::QueryRangeResponse;
use allegro_traceql::ast::{
    BinaryOp, FieldRef, Intrinsic, MetricsExpr, MetricsFn, Query, QueryBody,
};
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
    /// Width of the table in characters (default: the terminal's, else `$COLUMNS`, else 100).
    #[arg(long)]
    pub width: Option<usize>,
}

/// The engine's request for `a`, checked as the HTTP door checks it.
pub fn request(a: &MetricsArgs) -> Result<MetricsRequest, String> {
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
        let unit = allegro_traceql::parse(&a.query)
            .map(|q| Unit::of(&q))
            .unwrap_or(Unit::Plain);
        print!(
            "{}",
            table(&resp, unit, a.width.unwrap_or_else(terminal_width))
        );
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

/// What the query's values measure, from its first-stage function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// `rate()`: per second.
    PerSecond,
    /// A function of `duration` or `traceDuration`: seconds, as Tempo answers them.
    Seconds,
    /// Counts and anything else.
    Plain,
}

impl Unit {
    /// The unit of `q`'s values; arithmetic over queries of one unit keeps it only for `+`/`-`.
    pub fn of(q: &Query) -> Self {
        match &q.body {
            QueryBody::Metrics(m) => Self::of_expr(m),
            _ => Self::Plain,
        }
    }

    fn of_expr(m: &MetricsExpr) -> Self {
        let of_field = |f: &FieldRef| match f {
            FieldRef::Intrinsic(Intrinsic::Duration | Intrinsic::TraceDuration) => Self::Seconds,
            _ => Self::Plain,
        };
        match m {
            MetricsExpr::Query(q) => match &q.function {
                MetricsFn::Rate => Self::PerSecond,
                MetricsFn::MinOverTime(f)
                | MetricsFn::MaxOverTime(f)
                | MetricsFn::SumOverTime(f)
                | MetricsFn::AvgOverTime(f)
                | MetricsFn::QuantileOverTime(f, _) => of_field(f),
                MetricsFn::CountOverTime
                | MetricsFn::HistogramOverTime(_)
                | MetricsFn::Compare { .. } => Self::Plain,
            },
            MetricsExpr::Staged { expr, .. } => Self::of_expr(expr),
            MetricsExpr::Binary { op, lhs, rhs }
                if matches!(op, BinaryOp::Add | BinaryOp::Sub)
                    && Self::of_expr(lhs) == Self::of_expr(rhs) =>
            {
                Self::of_expr(lhs)
            }
            MetricsExpr::Binary { .. } | MetricsExpr::Number(_) => Self::Plain,
        }
    }

    /// `v` with its unit, in at most 10 characters.
    pub fn format(self, v: f64) -> String {
        if v.is_nan() {
            return "-".into();
        }
        match self {
            Self::Plain => short(v),
            Self::PerSecond => format!("{}/s", short(v)),
            Self::Seconds => {
                let a = v.abs();
                let (scaled, unit) = if a == 0.0 || a >= 1.0 {
                    (v, "s")
                } else if a >= 1e-3 {
                    (v * 1e3, "ms")
                } else if a >= 1e-6 {
                    (v * 1e6, "µs")
                } else {
                    (v * 1e9, "ns")
                };
                format!("{}{unit}", significant(scaled))
            }
        }
    }

    fn legend(self) -> &'static str {
        match self {
            Self::PerSecond => "; values per second",
            Self::Seconds => "; durations",
            Self::Plain => "",
        }
    }
}

/// Three significant digits, no trailing zeros.
fn significant(v: f64) -> String {
    let a = v.abs();
    let decimals = if a >= 100.0 {
        0
    } else if a >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn short(v: f64) -> String {
    if v == 0.0 || (v.abs() >= 0.01 && v.abs() < 1e6) {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.2e}")
    }
}

/// The terminal's width when stdout is one, else `$COLUMNS`, else 100.
fn terminal_width() -> usize {
    // SAFETY: TIOCGWINSZ fills a winsize struct we own; a failing call leaves it zeroed.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    if ok && ws.ws_col > 0 {
        return usize::from(ws.ws_col);
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|&c| c > 0)
        .unwrap_or(100)
}

/// `values` in `cells` cells, each the highest of the consecutive points it covers.
fn downsample(values: &[Option<f64>], cells: usize) -> Vec<Option<f64>> {
    if cells == 0 || values.len() <= cells {
        return values.to_vec();
    }
    (0..cells)
        .map(|i| {
            let (a, b) = (i * values.len() / cells, (i + 1) * values.len() / cells);
            values[a..b].iter().flatten().copied().reduce(f64::max)
        })
        .collect()
}

/// Cuts `s` to `max` characters, marking the cut.
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Columns besides labels and sparkline: two gaps of 2 and three value columns of 11.
const FIXED: usize = 2 + 2 + 3 * 11;

/// The series as a table at most `width` characters wide: labels, a sparkline over the
/// range, last, min, max, values in `unit`.
pub fn table(r: &QueryRangeResponse, unit: Unit, width: usize) -> String {
    let mut stamps: Vec<i64> = r
        .series
        .iter()
        .flat_map(|s| s.samples.iter().map(|x| x.timestamp_ms))
        .collect();
    stamps.sort_unstable();
    stamps.dedup();
    // The sparkline gets up to half the width beyond the fixed columns (at least 8 cells),
    // labels the rest.
    let room = width.saturating_sub(FIXED).max(16);
    let label_max = room - stamps.len().clamp(8, room / 2);
    let labels: Vec<String> = (0..r.series.len())
        .map(|i| cut(&label_text(r, i), label_max))
        .collect();
    let lw = labels
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(6)
        .max(6);
    let cells = stamps.len().min(room.saturating_sub(lw).max(8));
    let sw = cells.max(9);
    let mut out = format!(
        "{:<lw$}  {:<sw$}  {:>10} {:>10} {:>10}\n",
        "SERIES", "OVER TIME", "LAST", "MIN", "MAX"
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
        let min = present.iter().copied().reduce(f64::min).unwrap_or(f64::NAN);
        let max = present.iter().copied().reduce(f64::max).unwrap_or(f64::NAN);
        out.push_str(&format!(
            "{l:<lw$}  {:<sw$}  {:>10} {:>10} {:>10}\n",
            sparkline(&downsample(&values, cells)),
            unit.format(last),
            unit.format(min),
            unit.format(max),
        ));
    }
    let per_cell = if cells > 0 && cells < stamps.len() {
        format!(" (up to {} per cell)", stamps.len().div_ceil(cells))
    } else {
        String::new()
    };
    out.push_str(&format!(
        "{} series, {} points each{per_cell}{}\n",
        r.series.len(),
        stamps.len(),
        unit.legend()
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

    fn response(series: usize, points: i64, label: &str, value: f64) -> QueryRangeResponse {
        use allegro_engine::tempopb::{Sample, TimeSeries};
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
        QueryRangeResponse {
            series: (0..series)
                .map(|i| TimeSeries {
                    labels: vec![KeyValue {
                        key: "resource.service.name".into(),
                        value: Some(AnyValue {
                            value: Some(Value::StringValue(format!("{label}-{i}"))),
                        }),
                        ..Default::default()
                    }],
                    samples: (0..points)
                        .map(|t| Sample {
                            timestamp_ms: t * 15_000,
                            value: if t == 7 { value * 10.0 } else { value },
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_default_hour_fits_the_terminal() {
        // Tempo's default step over an hour is 15s: 240 points, once one cell each.
        let long = "a-service-with-a-really-long-name-that-goes-on-and-on-and-on";
        let r = response(3, 240, long, 5.932e-3);
        let q = allegro_traceql::parse("{ } | quantile_over_time(duration, .9)").unwrap();
        let t = table(&r, Unit::of(&q), 100);
        for line in t.lines() {
            assert!(
                line.chars().count() <= 100,
                "{} chars: {line}",
                line.chars().count()
            );
        }
        // The spike at point 7 survives the downsampling.
        assert!(t.lines().nth(1).unwrap().contains('█'), "{t}");
        assert!(t.contains("5.93ms") && t.contains("59.3ms"), "{t}");
        assert!(t.contains("240 points each (up to"), "{t}");
        assert!(t.contains('…'), "{t}");
    }

    #[test]
    fn values_carry_their_unit() {
        let unit = |q: &str| Unit::of(&allegro_traceql::parse(q).unwrap());
        assert_eq!(unit("{ } | rate() by (name)"), Unit::PerSecond);
        assert_eq!(unit("{ } | avg_over_time(traceDuration)"), Unit::Seconds);
        assert_eq!(unit("{ } | max_over_time(span.bytes)"), Unit::Plain);
        assert_eq!(unit("{ } | count_over_time()"), Unit::Plain);
        assert_eq!(unit("({ } | rate()) / ({ } | rate())"), Unit::Plain);
        assert_eq!(Unit::PerSecond.format(12.345), "12.345/s");
        assert_eq!(Unit::Seconds.format(5.932e-3), "5.93ms");
        assert_eq!(Unit::Seconds.format(2.5e-7), "250ns");
        assert_eq!(Unit::Seconds.format(42.0), "42s");
        assert_eq!(Unit::Seconds.format(0.000_012_3), "12.3µs");
        assert_eq!(Unit::Plain.format(f64::NAN), "-");
    }
}
