//! Which attributes become real columns in a block: chosen per block from statistics.
//!
//! Tempo makes users declare "dedicated columns" by hand; Allegro counts instead. A key is hot when
//! it is present on at least [`HotPolicy::min_fraction`] of the block's spans with one scalar
//! type; values of other types stay in the overflow maps. Configured keys are always hot.

use std::collections::{BTreeSet, HashMap};

use foldhash::fast::RandomState;

use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value};

use crate::convert::flatten::FlatSpan;
use crate::schema::{AttrScope, HotColumn, HotType};

/// How hot columns are chosen.
#[derive(Debug, Clone)]
pub struct HotPolicy {
    /// Minimum share of spans carrying the key (with its majority type).
    pub min_fraction: f64,
    /// At most this many automatic hot columns per scope.
    pub max_per_scope: usize,
    /// Columns that are always hot.
    pub configured: Vec<HotColumn>,
}

impl Default for HotPolicy {
    fn default() -> Self {
        Self {
            min_fraction: 0.05,
            max_per_scope: 24,
            configured: Vec::new(),
        }
    }
}

fn hot_type(kv: &KeyValue) -> Option<HotType> {
    match kv.value.as_ref()?.value.as_ref()? {
        Value::StringValue(_) => Some(HotType::String),
        Value::IntValue(_) => Some(HotType::Int),
        Value::DoubleValue(_) => Some(HotType::Float),
        Value::BoolValue(_) => Some(HotType::Bool),
        _ => None,
    }
}

impl HotPolicy {
    /// Chooses the hot columns for `spans`, sorted by scope then key.
    pub fn choose(&self, spans: &[FlatSpan]) -> Vec<HotColumn> {
        let mut scan = KeyScan::default();
        scan.add(spans);
        self.choose_from(&scan)
    }

    /// Chooses the hot columns, and lists the keys that hold arrays, kvlists or bytes anywhere
    /// (they live in `attrs_other`; queries need array semantics only for those).
    pub fn choose_and_scan(&self, spans: &[FlatSpan]) -> (Vec<HotColumn>, Vec<AttrKey>) {
        let (hot, others, _) = self.choose_and_scan_keys(spans);
        (hot, others)
    }

    /// As [`HotPolicy::choose_and_scan`], plus every attribute key of every scope in `spans`
    /// (so queries can skip scopes that never have a key, and tag names need no scan).
    pub fn choose_and_scan_keys(
        &self,
        spans: &[FlatSpan],
    ) -> (Vec<HotColumn>, Vec<AttrKey>, AttributeKeys) {
        let mut scan = KeyScan::default();
        scan.add(spans);
        (self.choose_from(&scan), scan.others(), scan.keys())
    }

    /// Chooses the hot columns from the keys counted so far, sorted by scope then key.
    pub fn choose_from(&self, scan: &KeyScan) -> Vec<HotColumn> {
        let types = [HotType::String, HotType::Int, HotType::Float, HotType::Bool];
        let min = ((scan.spans as f64) * self.min_fraction).ceil().max(1.0) as usize;
        let mut by_scope: HashMap<AttrScope, Vec<(usize, HotColumn)>> = HashMap::new();
        for ((scope, key), c) in &scan.counts {
            let (ti, n) = c
                .iter()
                .enumerate()
                .max_by_key(|(i, n)| (**n, std::cmp::Reverse(*i)))
                .unwrap_or((0, &0));
            if *n >= min {
                by_scope.entry(*scope).or_default().push((
                    *n,
                    HotColumn {
                        scope: *scope,
                        key: key.clone(),
                        ty: types[ti],
                    },
                ));
            }
        }
        let mut out: Vec<HotColumn> = self.configured.clone();
        for (_, mut cands) in by_scope {
            cands.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.key.cmp(&b.1.key)));
            for (_, h) in cands.into_iter().take(self.max_per_scope) {
                if !out.iter().any(|o| o.scope == h.scope && o.key == h.key) {
                    out.push(h);
                }
            }
        }
        out.sort();
        out
    }
}

/// Attribute keys counted over the spans of a block, added a batch at a time so a block can be
/// written without holding all its spans.
#[derive(Debug, Default)]
pub struct KeyScan {
    spans: usize,
    /// (scope, key) -> spans carrying it, per scalar type. Resource and scope attributes count
    /// once per span that carries them, as the column would store them.
    counts: HashMap<(AttrScope, String), [usize; 4], RandomState>,
    /// Keys holding arrays, kvlists or bytes somewhere.
    others: BTreeSet<(AttrScope, String)>,
    keys: KeySets,
    /// Scalar types of resource `service.name` values kept in the overflow maps (all but the
    /// first string one, which has the `service_name` column).
    service_types: [bool; 4],
}

fn note(set: &mut BTreeSet<String>, key: &str) {
    if !set.contains(key) {
        set.insert(key.to_string());
    }
}

impl KeyScan {
    /// Adds a batch of spans.
    pub fn add(&mut self, spans: &[FlatSpan]) {
        // Count per batch with borrowed keys, then merge: owned keys are made once per batch.
        let mut counts: HashMap<(AttrScope, &str), [usize; 4], RandomState> = HashMap::default();
        let mut others: BTreeSet<(AttrScope, &str)> = BTreeSet::new();
        // Resources and scopes are shared: count each distinct one once, weighted by its spans.
        type Shared<'a> = (AttrScope, &'a [KeyValue], usize);
        let mut shared: HashMap<(usize, usize), Shared, RandomState> = HashMap::default();
        for s in spans {
            for kv in &s.span.attributes {
                match hot_type(kv) {
                    Some(t) => {
                        counts
                            .entry((AttrScope::Span, kv.key.as_str()))
                            .or_default()[t as usize] += 1
                    }
                    None => {
                        others.insert((AttrScope::Span, kv.key.as_str()));
                    }
                }
            }
            let res = (
                AttrScope::Resource,
                s.resource.resource.attributes.as_slice(),
            );
            let scope = (
                AttrScope::Instrumentation,
                s.scope.scope.attributes.as_slice(),
            );
            for (i, (sc, attrs)) in [res, scope].into_iter().enumerate() {
                shared
                    .entry((i, attrs.as_ptr() as usize))
                    .or_insert((sc, attrs, 0))
                    .2 += 1;
            }
            for e in &s.span.events {
                for kv in &e.attributes {
                    note(&mut self.keys.event, &kv.key);
                }
            }
            for l in &s.span.links {
                for kv in &l.attributes {
                    note(&mut self.keys.link, &kv.key);
                }
            }
        }
        for (scope, attrs, weight) in shared.into_values() {
            let set = match scope {
                AttrScope::Resource => &mut self.keys.resource,
                _ => &mut self.keys.instrumentation,
            };
            for kv in attrs {
                note(set, &kv.key);
            }
            let mut column_taken = false;
            for kv in attrs {
                if scope == AttrScope::Resource && kv.key == "service.name" {
                    // Left out of the counts: `service.name` never becomes a hot column.
                    match hot_type(kv) {
                        Some(HotType::String) if !column_taken => column_taken = true,
                        Some(t) => self.service_types[t as usize] = true,
                        None => {
                            others.insert((scope, kv.key.as_str()));
                        }
                    }
                    continue;
                }
                match hot_type(kv) {
                    Some(t) => {
                        counts.entry((scope, kv.key.as_str())).or_default()[t as usize] += weight
                    }
                    None => {
                        others.insert((scope, kv.key.as_str()));
                    }
                }
            }
        }
        for ((scope, key), c) in counts {
            if scope == AttrScope::Span {
                note(&mut self.keys.span, key);
            }
            // One owned key per distinct key and batch: batches hold thousands of spans.
            let total = self.counts.entry((scope, key.to_string())).or_default();
            for (t, n) in total.iter_mut().zip(c) {
                *t += n;
            }
        }
        for (scope, key) in others {
            if scope == AttrScope::Span {
                note(&mut self.keys.span, key);
            }
            self.others.insert((scope, key.to_string()));
        }
        self.spans += spans.len();
    }

    /// Keys that hold arrays, kvlists or bytes anywhere.
    pub fn others(&self) -> Vec<AttrKey> {
        self.others
            .iter()
            .map(|(scope, key)| AttrKey {
                scope: *scope,
                key: key.clone(),
            })
            .collect()
    }

    /// The scalar types every span, resource and instrumentation key holds in its hot column
    /// or overflow maps, sorted by scope and key.
    pub fn key_types(&self) -> Vec<KeyTypes> {
        const TYPES: [HotType; 4] = [HotType::String, HotType::Int, HotType::Float, HotType::Bool];
        let types = |present: [bool; 4]| -> Vec<HotType> {
            TYPES.into_iter().filter(|t| present[*t as usize]).collect()
        };
        let mut out: Vec<KeyTypes> = self
            .counts
            .iter()
            .map(|((scope, key), c)| KeyTypes {
                scope: *scope,
                key: key.clone(),
                types: types(c.map(|n| n > 0)),
                spans: c.iter().filter(|n| **n > 0).map(|n| *n as u64).collect(),
            })
            .collect();
        if self.service_types.contains(&true) {
            // Not counted: `service.name` never becomes a hot column.
            out.push(KeyTypes {
                scope: AttrScope::Resource,
                key: "service.name".into(),
                types: types(self.service_types),
                spans: Vec::new(),
            });
        }
        out.sort_by(|a, b| (a.scope, &a.key).cmp(&(b.scope, &b.key)));
        out
    }

    /// The counts a block recorded (`spans` spans, `key_types` with their counts), to choose
    /// hot columns from; `None` when a key has no counts (written before they were recorded).
    pub fn of_recorded(spans: u64, key_types: &[KeyTypes]) -> Option<Self> {
        let mut scan = KeyScan {
            spans: spans as usize,
            ..Default::default()
        };
        for k in key_types {
            if k.scope == AttrScope::Resource && k.key == "service.name" {
                continue;
            }
            if k.spans.len() != k.types.len() {
                return None;
            }
            let c = scan.counts.entry((k.scope, k.key.clone())).or_default();
            for (t, n) in k.types.iter().zip(&k.spans) {
                c[*t as usize] += *n as usize;
            }
        }
        Some(scan)
    }

    /// Takes the spans counted here off the counts of `key_types` (spans dropped from a block
    /// whose counts were recorded with them).
    pub fn subtract_from(&self, key_types: &mut [KeyTypes]) {
        for k in key_types {
            let Some(c) = self.counts.get(&(k.scope, k.key.clone())) else {
                continue;
            };
            for (t, n) in k.types.iter().zip(k.spans.iter_mut()) {
                *n = n.saturating_sub(c[*t as usize] as u64);
            }
        }
    }

    /// Distinct attribute keys over all scopes.
    pub fn distinct_keys(&self) -> usize {
        let k = &self.keys;
        k.span.len() + k.resource.len() + k.instrumentation.len() + k.event.len() + k.link.len()
    }

    /// Every attribute key of every scope.
    pub fn keys(&self) -> AttributeKeys {
        let v = |s: &BTreeSet<String>| s.iter().cloned().collect();
        AttributeKeys {
            span: v(&self.keys.span),
            resource: v(&self.keys.resource),
            instrumentation: v(&self.keys.instrumentation),
            event: v(&self.keys.event),
            link: v(&self.keys.link),
        }
    }
}

#[derive(Debug, Default)]
struct KeySets {
    span: BTreeSet<String>,
    resource: BTreeSet<String>,
    instrumentation: BTreeSet<String>,
    event: BTreeSet<String>,
    link: BTreeSet<String>,
}

/// Most distinct attribute keys a block records in `meta.json` (keys, their types, which hold
/// arrays). A block over it records none: the lists are for pruning and tag names, and a block
/// whose spans carry a key each (ids or timestamps used as keys) gains nothing from them; 100k
/// such keys once grew `meta.json` to 466 MiB. Queries treat such a block as one written before
/// keys were recorded, and tag names read its overflow maps.
pub const MAX_RECORDED_KEYS: usize = 10_000;

/// Every attribute key of a block, per scope (sorted), as recorded in `meta.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AttributeKeys {
    /// Span attribute keys.
    pub span: Vec<String>,
    /// Resource attribute keys.
    pub resource: Vec<String>,
    /// Instrumentation-scope attribute keys.
    pub instrumentation: Vec<String>,
    /// Event attribute keys.
    pub event: Vec<String>,
    /// Link attribute keys.
    pub link: Vec<String>,
}

impl AttributeKeys {
    /// The scopes, by TraceQL name.
    pub const SCOPES: [&'static str; 5] = ["span", "resource", "instrumentation", "event", "link"];

    /// The keys of scope `name` (one of [`AttributeKeys::SCOPES`]).
    pub fn scope(&self, name: &str) -> &[String] {
        match name {
            "span" => &self.span,
            "resource" => &self.resource,
            "instrumentation" => &self.instrumentation,
            "event" => &self.event,
            "link" => &self.link,
            _ => &[],
        }
    }
}

/// An attribute key of a scope.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct AttrKey {
    /// Scope of the attribute.
    pub scope: AttrScope,
    /// The key.
    pub key: String,
}

/// The scalar types one attribute key holds somewhere in a block (in its hot column or the
/// overflow maps), recorded in `meta.json` so lookups skip the maps it never is in.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyTypes {
    /// Scope of the attribute.
    pub scope: AttrScope,
    /// The key.
    pub key: String,
    /// Its scalar types.
    pub types: Vec<HotType>,
    /// Spans carrying it with each of `types` (same order), from which a merge of blocks
    /// chooses hot columns again; empty in blocks written before they were recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spans: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, InstrumentationScope};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    use super::*;
    use crate::convert::flatten::flatten;

    fn kv(k: &str, v: Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    #[test]
    fn every_key_of_every_scope_is_recorded_and_array_keys_apart() {
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            attributes: vec![
                kv("http.route", Value::StringValue("/a".into())),
                kv("tags", Value::ArrayValue(ArrayValue { values: vec![] })),
            ],
            events: vec![Event {
                attributes: vec![kv("exception.type", Value::StringValue("E".into()))],
                ..Default::default()
            }],
            links: vec![Link {
                trace_id: vec![3; 16],
                span_id: vec![4; 8],
                attributes: vec![kv("link.kind", Value::IntValue(1))],
                ..Default::default()
            }],
            ..Default::default()
        };
        let rs = ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", Value::StringValue("shop".into())),
                    kv("env", Value::StringValue("prod".into())),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    attributes: vec![kv("lib.flag", Value::BoolValue(true))],
                    ..Default::default()
                }),
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        };
        let (spans, _) = flatten(vec![rs]);
        let (hot, others, keys) = HotPolicy::default().choose_and_scan_keys(&spans);
        assert!(
            hot.iter()
                .any(|h| h.key == "http.route" && h.scope == AttrScope::Span)
        );
        assert_eq!(
            others,
            vec![AttrKey {
                scope: AttrScope::Span,
                key: "tags".into()
            }]
        );
        assert_eq!(keys.span, ["http.route", "tags"]);
        assert_eq!(keys.resource, ["env", "service.name"]);
        assert_eq!(keys.instrumentation, ["lib.flag"]);
        assert_eq!(keys.event, ["exception.type"]);
        assert_eq!(keys.link, ["link.kind"]);
    }

    #[test]
    fn key_types_name_every_scalar_type_a_key_holds_outside_the_service_column() {
        let span = |code: Value| Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            attributes: vec![
                kv("code", code),
                kv("tags", Value::ArrayValue(ArrayValue { values: vec![] })),
            ],
            ..Default::default()
        };
        let resource = |attrs: Vec<KeyValue>, code: Value| ResourceSpans {
            resource: Some(Resource {
                attributes: attrs,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    attributes: vec![kv("lib.flag", Value::BoolValue(true))],
                    ..Default::default()
                }),
                spans: vec![span(code)],
                ..Default::default()
            }],
            ..Default::default()
        };
        let (spans, _) = flatten(vec![
            // The first string service.name goes to its column: no type recorded for it.
            resource(
                vec![kv("service.name", Value::StringValue("shop".into()))],
                Value::IntValue(200),
            ),
            // A second service.name, an int, lands in the overflow map.
            resource(
                vec![
                    kv("service.name", Value::StringValue("cart".into())),
                    kv("service.name", Value::IntValue(7)),
                    kv("ratio", Value::DoubleValue(0.5)),
                ],
                Value::StringValue("OK".into()),
            ),
        ]);
        let mut scan = KeyScan::default();
        scan.add(&spans);
        let keys = scan.key_types();
        let got: Vec<(AttrScope, &str, &[HotType])> = keys
            .iter()
            .map(|k| (k.scope, k.key.as_str(), k.types.as_slice()))
            .collect();
        assert_eq!(
            got,
            [
                (AttrScope::Resource, "ratio", &[HotType::Float][..]),
                (AttrScope::Resource, "service.name", &[HotType::Int][..]),
                (
                    AttrScope::Span,
                    "code",
                    &[HotType::String, HotType::Int][..]
                ),
                (AttrScope::Instrumentation, "lib.flag", &[HotType::Bool][..]),
            ]
        );
        assert_eq!(scan.others().len(), 1, "arrays are not scalar types");
    }
}
