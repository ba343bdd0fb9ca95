//! `QueryRangeResponse` and `QueryInstantResponse` in jsonpb (NaN as `"NaN"`).

use allegro_engine::otlp_json::{Dialect, attrs};
use allegro_engine::tempopb::{
    PartialStatus, QueryInstantResponse, QueryRangeResponse, TimeSeries,
};
use serde_json::{Map, Value as J, json};

use super::search::metrics_json;

/// A double as jsonpb writes it: NaN and infinities as strings; zero omitted by the caller.
fn double(v: f64) -> J {
    if v.is_nan() {
        J::String("NaN".into())
    } else if v.is_infinite() {
        J::String(if v > 0.0 { "Infinity" } else { "-Infinity" }.into())
    } else {
        json!(v)
    }
}

fn put_double(o: &mut Map<String, J>, k: &str, v: f64) {
    if v != 0.0 {
        o.insert(k.into(), double(v));
    }
}

fn put_i64(o: &mut Map<String, J>, k: &str, v: i64) {
    if v != 0 {
        o.insert(k.into(), J::String(v.to_string()));
    }
}

fn status(o: &mut Map<String, J>, status: i32, message: &str) {
    if status == PartialStatus::Partial as i32 {
        o.insert("status".into(), J::String("PARTIAL".into()));
    }
    if !message.is_empty() {
        o.insert("message".into(), J::String(message.into()));
    }
}

fn series_json(s: &TimeSeries) -> J {
    let mut o = Map::new();
    o.insert("labels".into(), J::Array(attrs(&s.labels, Dialect::Tempo)));
    let samples = s
        .samples
        .iter()
        .map(|x| {
            let mut m = Map::new();
            put_i64(&mut m, "timestampMs", x.timestamp_ms);
            put_double(&mut m, "value", x.value);
            J::Object(m)
        })
        .collect();
    o.insert("samples".into(), J::Array(samples));
    if !s.exemplars.is_empty() {
        let ex = s
            .exemplars
            .iter()
            .map(|e| {
                let mut m = Map::new();
                m.insert("labels".into(), J::Array(attrs(&e.labels, Dialect::Tempo)));
                put_double(&mut m, "value", e.value);
                put_i64(&mut m, "timestampMs", e.timestamp_ms);
                J::Object(m)
            })
            .collect();
        o.insert("exemplars".into(), J::Array(ex));
    }
    J::Object(o)
}

/// A range response in Tempo's jsonpb.
pub fn range_json(r: &QueryRangeResponse) -> J {
    let mut o = Map::new();
    o.insert(
        "series".into(),
        J::Array(r.series.iter().map(series_json).collect()),
    );
    if let Some(m) = &r.metrics {
        o.insert("metrics".into(), metrics_json(m));
    }
    status(&mut o, r.status, &r.message);
    J::Object(o)
}

/// An instant response in Tempo's jsonpb.
pub fn instant_json(r: &QueryInstantResponse) -> J {
    let series = r
        .series
        .iter()
        .map(|s| {
            let mut m = Map::new();
            m.insert("labels".into(), J::Array(attrs(&s.labels, Dialect::Tempo)));
            put_double(&mut m, "value", s.value);
            J::Object(m)
        })
        .collect();
    let mut o = Map::new();
    o.insert("series".into(), J::Array(series));
    if let Some(m) = &r.metrics {
        o.insert("metrics".into(), metrics_json(m));
    }
    status(&mut o, r.status, &r.message);
    J::Object(o)
}
