//! Each block's distinct attribute values and span names, recorded in `meta.json` when the
//! block is written.
//!
//! Tag-value requests without conditions (`q={}`: the query editor's autocomplete and
//! Drilldown's first request for a service list) want every value of one key over the blocks
//! in range. Read from Parquet, that is a column of every block: 1.1 s at 100M spans in 286
//! blocks on the first request after a start (3 ms once cached in memory). Recorded here, the
//! answer is a merge of lists already in memory from the first request on. A key with more
//! than [`MAX_VALUES_PER_KEY`] values, or more than [`MAX_BYTES_PER_KEY`] bytes of them, is
//! recorded as too wide and read from the block as before; so are keys first seen once the
//! block's lists have reached [`MAX_BYTES`], which bounds what `meta.json` grows by.
//!
//! Only scalar values are recorded (string, int, float, bool), the ones tag-value requests
//! return; a non-finite float (which JSON cannot hold) makes its key too wide.

use std::collections::{HashMap, HashSet};

use foldhash::fast::RandomState;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use serde::{Deserialize, Serialize};

use crate::convert::flatten::FlatSpan;
use crate::hot::AttrKey;
use crate::schema::AttrScope;

/// Most distinct values recorded per key.
pub const MAX_VALUES_PER_KEY: usize = 1000;
/// Most bytes of string values recorded per key.
pub const MAX_BYTES_PER_KEY: usize = 32 << 10;
/// Most bytes of values recorded per block, over every key.
pub const MAX_BYTES: usize = 256 << 10;

/// What `meta.json` records of a block's values.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagValueIndex {
    /// Keys and their values, sorted by scope and key.
    pub keys: Vec<KeyValues>,
    /// Keys with too many values to record, sorted.
    pub wide: Vec<AttrKey>,
    /// Distinct span names, sorted (`None`: too many to record).
    pub names: Option<Vec<String>>,
}

/// The distinct scalar values of one attribute key in a block, each list sorted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyValues {
    /// Scope of the attribute.
    pub scope: AttrScope,
    /// The key.
    pub key: String,
    /// String values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub strings: Vec<String>,
    /// Integer values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ints: Vec<i64>,
    /// Float values (finite).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub floats: Vec<f64>,
    /// Bool values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bools: Vec<bool>,
}

/// What the index knows of one key in its block.
#[derive(Debug, PartialEq)]
pub enum Known<'a> {
    /// These are all its values.
    Values(&'a KeyValues),
    /// The block does not hold the key.
    Absent,
    /// Too many values were recorded: read them from the block.
    Wide,
}

impl TagValueIndex {
    /// What is recorded of `scope`.`key`.
    pub fn lookup(&self, scope: AttrScope, key: &str) -> Known<'_> {
        let cmp = |s: AttrScope, k: &str| (s, k).cmp(&(scope, key));
        if let Ok(i) = self.keys.binary_search_by(|v| cmp(v.scope, &v.key)) {
            return Known::Values(&self.keys[i]);
        }
        if self.wide.binary_search_by(|w| cmp(w.scope, &w.key)).is_ok() {
            return Known::Wide;
        }
        Known::Absent
    }
}

/// Values of one key gathered so far; `None` once too wide.
#[derive(Default)]
struct KeySet {
    strings: HashSet<String, RandomState>,
    ints: HashSet<i64, RandomState>,
    /// Bits of each float.
    floats: HashSet<u64, RandomState>,
    bools: [bool; 2],
    bytes: usize,
}

impl KeySet {
    fn len(&self) -> usize {
        self.strings.len()
            + self.ints.len()
            + self.floats.len()
            + self.bools.iter().filter(|b| **b).count()
    }

    /// Whether the values are few enough to record.
    fn within(&self) -> bool {
        self.len() <= MAX_VALUES_PER_KEY && self.bytes <= MAX_BYTES_PER_KEY
    }

    /// Adds `v`; the bytes it added, or `None` when it cannot be recorded.
    fn add(&mut self, v: &Value) -> Option<usize> {
        let added = match v {
            Value::StringValue(s) => {
                if self.strings.contains(s.as_str()) {
                    0
                } else {
                    self.strings.insert(s.clone());
                    // As `meta.json` holds it: quoted, a comma.
                    s.len() + 3
                }
            }
            Value::IntValue(i) => usize::from(self.ints.insert(*i)) * 8,
            Value::DoubleValue(f) if f.is_finite() => {
                // -0.0 reads back from a block as 0.0.
                let f = if *f == 0.0 { 0.0 } else { *f };
                usize::from(self.floats.insert(f.to_bits())) * 8
            }
            Value::DoubleValue(_) => return None,
            Value::BoolValue(b) => {
                let new = !self.bools[usize::from(*b)];
                self.bools[usize::from(*b)] = true;
                usize::from(new)
            }
            // Arrays, kvlists and bytes have no tag values.
            _ => 0,
        };
        self.bytes += added;
        Some(added)
    }

    fn finish(self, scope: AttrScope, key: String) -> KeyValues {
        let mut strings: Vec<String> = self.strings.into_iter().collect();
        strings.sort_unstable();
        let mut ints: Vec<i64> = self.ints.into_iter().collect();
        ints.sort_unstable();
        let mut floats: Vec<f64> = self.floats.into_iter().map(f64::from_bits).collect();
        floats.sort_unstable_by(f64::total_cmp);
        let bools = [false, true]
            .into_iter()
            .filter(|b| self.bools[usize::from(*b)])
            .collect();
        KeyValues {
            scope,
            key,
            strings,
            ints,
            floats,
            bools,
        }
    }
}

/// Gathers a block's [`TagValueIndex`] a batch of spans at a time.
pub struct ValueScan {
    /// Per scope (in [`AttrScope::ALL`] order): key → its values, `None` once too wide.
    keys: [HashMap<String, Option<KeySet>, RandomState>; 3],
    names: Option<KeySet>,
    bytes: usize,
}

impl Default for ValueScan {
    fn default() -> Self {
        Self {
            keys: Default::default(),
            names: Some(KeySet::default()),
            bytes: 0,
        }
    }
}

/// Adds `v` to `set` within the block's `total` bytes; a set that can no longer be recorded
/// becomes `None` (too wide) and gives its bytes back.
fn admit(set: &mut Option<KeySet>, v: &Value, total: &mut usize) {
    let Some(values) = set.as_mut() else { return };
    let before = values.bytes;
    match values.add(v) {
        Some(n) if values.within() && *total + n <= MAX_BYTES => *total += n,
        _ => {
            *total -= before;
            *set = None;
        }
    }
}

fn slot(scope: AttrScope) -> usize {
    match scope {
        AttrScope::Resource => 0,
        AttrScope::Span => 1,
        AttrScope::Instrumentation => 2,
    }
}

impl ValueScan {
    /// Adds a batch of spans.
    pub fn add(&mut self, spans: &[FlatSpan]) {
        // Resources and scopes are shared by many spans: each distinct one is read once.
        let mut seen: HashSet<usize, RandomState> = HashSet::default();
        for s in spans {
            for kv in &s.span.attributes {
                self.note(AttrScope::Span, kv);
            }
            let shared = [
                (
                    AttrScope::Resource,
                    s.resource.resource.attributes.as_slice(),
                ),
                (
                    AttrScope::Instrumentation,
                    s.scope.scope.attributes.as_slice(),
                ),
            ];
            for (scope, attrs) in shared {
                if seen.insert(attrs.as_ptr() as usize) {
                    for kv in attrs {
                        self.note(scope, kv);
                    }
                }
            }
            let name = s.span.name.as_str();
            if self
                .names
                .as_ref()
                .is_some_and(|n| !n.strings.contains(name))
            {
                admit(
                    &mut self.names,
                    &Value::StringValue(name.to_string()),
                    &mut self.bytes,
                );
            }
        }
    }

    fn note(&mut self, scope: AttrScope, kv: &KeyValue) {
        let Some(v) = kv.value.as_ref().and_then(|v| v.value.as_ref()) else {
            return;
        };
        self.note_value(scope, &kv.key, v);
    }

    fn note_value(&mut self, scope: AttrScope, key: &str, v: &Value) {
        let keys = &mut self.keys[slot(scope)];
        let set = match keys.get_mut(key) {
            Some(s) => s,
            None => {
                // A key first seen once the block's lists are full is not recorded.
                let open = self.bytes < MAX_BYTES;
                keys.entry(key.to_string())
                    .or_insert_with(|| open.then(KeySet::default))
            }
        };
        admit(set, v, &mut self.bytes);
    }

    /// Adds what another block recorded: its values, and its too-wide keys as too wide (a
    /// merged block records the union of its inputs').
    pub fn add_index(&mut self, ix: &TagValueIndex) {
        for w in &ix.wide {
            let keys = &mut self.keys[slot(w.scope)];
            if let Some(Some(set)) = keys.insert(w.key.clone(), None) {
                self.bytes -= set.bytes;
            }
        }
        for k in &ix.keys {
            let values = k
                .strings
                .iter()
                .map(|s| Value::StringValue(s.clone()))
                .chain(k.ints.iter().map(|i| Value::IntValue(*i)))
                .chain(k.floats.iter().map(|f| Value::DoubleValue(*f)))
                .chain(k.bools.iter().map(|b| Value::BoolValue(*b)));
            for v in values {
                self.note_value(k.scope, &k.key, &v);
            }
        }
        match &ix.names {
            Some(names) => {
                for n in names {
                    if self.names.as_ref().is_some_and(|s| !s.strings.contains(n)) {
                        admit(
                            &mut self.names,
                            &Value::StringValue(n.clone()),
                            &mut self.bytes,
                        );
                    }
                }
            }
            None => {
                if let Some(set) = self.names.take() {
                    self.bytes -= set.bytes;
                }
            }
        }
    }

    /// The index of everything added.
    pub fn finish(self) -> TagValueIndex {
        let mut keys = Vec::new();
        let mut wide = Vec::new();
        for (scope, map) in AttrScope::ALL.into_iter().zip(self.keys) {
            for (key, set) in map {
                match set {
                    Some(s) => keys.push(s.finish(scope, key)),
                    None => wide.push(AttrKey { scope, key }),
                }
            }
        }
        keys.sort_by(|a, b| (a.scope, &a.key).cmp(&(b.scope, &b.key)));
        wide.sort();
        let names = self
            .names
            .map(|n| n.finish(AttrScope::Span, String::new()).strings);
        TagValueIndex { keys, wide, names }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    use super::*;
    use crate::convert::flatten::flatten;

    /// One span per attribute list, each named `name{i}`.
    fn spans(attrs: Vec<Vec<(String, Value)>>) -> Vec<FlatSpan> {
        let spans = attrs
            .into_iter()
            .enumerate()
            .map(|(i, kvs)| Span {
                trace_id: [[1u8; 8], (i as u64 + 1).to_be_bytes()].concat(),
                span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                name: format!("name{}", i % 1001),
                start_time_unix_nano: 1,
                end_time_unix_nano: 2,
                attributes: kvs
                    .into_iter()
                    .map(|(key, v)| KeyValue {
                        key,
                        value: Some(AnyValue { value: Some(v) }),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect();
        let rs = ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        };
        let (flat, rejected) = flatten(vec![rs]);
        assert!(rejected.is_empty());
        flat
    }

    fn index(attrs: Vec<Vec<(String, Value)>>) -> TagValueIndex {
        let mut scan = ValueScan::default();
        scan.add(&spans(attrs));
        scan.finish()
    }

    #[test]
    fn a_key_with_more_values_than_recorded_is_wide_and_span_names_too() {
        let n = |i: usize| vec![("n".to_string(), Value::IntValue(i as i64 % 1000))];
        let w = |i: usize| vec![("w".to_string(), Value::IntValue(i as i64))];
        let idx = index((0..1001).map(|i| [n(i), w(i)].concat()).collect());
        let Known::Values(kv) = idx.lookup(AttrScope::Span, "n") else {
            panic!("n recorded");
        };
        assert_eq!(kv.ints, (0..1000).collect::<Vec<i64>>());
        assert_eq!(idx.lookup(AttrScope::Span, "w"), Known::Wide);
        assert_eq!(idx.lookup(AttrScope::Resource, "n"), Known::Absent);
        assert_eq!(idx.lookup(AttrScope::Span, "x"), Known::Absent);
        // 1001 distinct names: name0..name1000.
        assert_eq!(idx.names, None);
    }

    #[test]
    fn the_block_total_bounds_the_lists_and_later_keys_are_wide() {
        // Keys of 15 KiB each: 17 fit under 256 KiB with the names, the rest do not.
        let big = "x".repeat(15 << 10);
        let attrs = (0..30)
            .map(|k| vec![(format!("k{k:02}"), Value::StringValue(big.clone()))])
            .collect();
        let idx = index(attrs);
        let recorded = idx.keys.len();
        assert!((15..=17).contains(&recorded), "{recorded} keys recorded");
        assert_eq!(idx.wide.len(), 30 - recorded);
        // Keys are recorded in the order they came, so the first ones are the recorded ones.
        assert!(matches!(
            idx.lookup(AttrScope::Span, "k00"),
            Known::Values(_)
        ));
        assert_eq!(idx.lookup(AttrScope::Span, "k29"), Known::Wide);
        let json = serde_json::to_string(&idx).expect("json");
        assert!(json.len() <= MAX_BYTES + (64 << 10), "{} bytes", json.len());
    }

    #[test]
    fn non_finite_floats_make_a_key_wide_and_zero_has_one_sign() {
        let f = |k: &str, v: f64| vec![(k.to_string(), Value::DoubleValue(v))];
        let idx = index(vec![
            f("a", 1.5),
            f("a", -0.0),
            f("a", 0.0),
            f("b", f64::INFINITY),
        ]);
        let Known::Values(kv) = idx.lookup(AttrScope::Span, "a") else {
            panic!("a recorded");
        };
        assert_eq!(kv.floats, [0.0, 1.5]);
        assert_eq!(idx.lookup(AttrScope::Span, "b"), Known::Wide);
    }
}
