//! What a block's `meta.json` records of its attribute keys and values, and how a merged
//! block gets it from its inputs without looking at a span.
//!
//! Every span of a merged block comes from one of its inputs, so the merged block's keys, key
//! types, keys holding arrays and distinct values are the unions of the inputs' (a span
//! received twice and dropped takes no key or value away: its copy carries the same). Limits
//! apply to the union as to a block written from spans: a key over its value limits, or past
//! the block's byte budget, is recorded as too wide and read from Parquet when asked for. An
//! input that recorded nothing (too many keys) makes the merged block record nothing.

use std::collections::{BTreeMap, BTreeSet};

use super::meta::BlockMeta;
use super::tag_values::{TagValueIndex, ValueScan};
use crate::convert::flatten::FlatSpan;
use crate::hot::{AttrKey, AttributeKeys, KeyScan, KeyTypes, MAX_RECORDED_KEYS};
use crate::schema::{AttrScope, HotType};

/// What a block's `meta.json` records of its attribute keys and values; `None` where not
/// recorded (too many keys, or not known).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecordedKeys {
    /// Keys that hold arrays, kvlists or bytes.
    pub other_keys: Option<Vec<AttrKey>>,
    /// Scalar types per key.
    pub key_types: Option<Vec<KeyTypes>>,
    /// Every key of every scope.
    pub attribute_keys: Option<AttributeKeys>,
    /// Distinct values per key, and span names.
    pub tag_values: Option<TagValueIndex>,
}

/// What records a [`RecordedKeys`]: a block's `meta.json`, or a part of the live head.
pub trait Records {
    /// Keys that hold arrays, kvlists or bytes.
    fn other_keys(&self) -> Option<&[AttrKey]>;
    /// Scalar types per key.
    fn key_types(&self) -> Option<&[KeyTypes]>;
    /// Every key of every scope.
    fn attribute_keys(&self) -> Option<&AttributeKeys>;
    /// Distinct values per key, and span names.
    fn tag_values(&self) -> Option<&TagValueIndex>;
}

/// Implements [`Records`] for a type holding the four lists as fields of those names.
macro_rules! records_from_fields {
    ($($t:ty),*) => {$(
        impl Records for $t {
            fn other_keys(&self) -> Option<&[AttrKey]> {
                self.other_keys.as_deref()
            }
            fn key_types(&self) -> Option<&[KeyTypes]> {
                self.key_types.as_deref()
            }
            fn attribute_keys(&self) -> Option<&AttributeKeys> {
                self.attribute_keys.as_ref()
            }
            fn tag_values(&self) -> Option<&TagValueIndex> {
                self.tag_values.as_ref()
            }
        }
    )*};
}

records_from_fields!(BlockMeta, RecordedKeys);

impl RecordedKeys {
    /// What a block written from `spans` alone would record.
    pub fn of_spans(spans: &[FlatSpan]) -> Self {
        let mut scan = KeyScan::default();
        scan.add(spans);
        let mut values = ValueScan::default();
        values.add(spans);
        Self::of_scans(&scan, values)
    }

    /// What a block records from the scans of its spans: nothing when they hold more than
    /// [`MAX_RECORDED_KEYS`] keys.
    pub fn of_scans(scan: &KeyScan, values: ValueScan) -> Self {
        let recorded = scan.distinct_keys() <= MAX_RECORDED_KEYS;
        Self {
            other_keys: recorded.then(|| scan.others()),
            key_types: recorded.then(|| scan.key_types()),
            attribute_keys: recorded.then(|| scan.keys()),
            tag_values: recorded.then(|| values.finish()),
        }
    }

    /// About the bytes these lists hold in memory (strings' lengths plus a word per entry),
    /// for budgets that count them.
    pub fn approx_bytes(&self) -> u64 {
        const WORD: usize = 24;
        let strings = |v: &[String]| v.iter().map(|s| s.len() + WORD).sum::<usize>();
        let mut n = 0;
        for k in self.other_keys.iter().flatten() {
            n += k.key.len() + WORD;
        }
        for k in self.key_types.iter().flatten() {
            n += k.key.len() + WORD + 8 * (k.types.len() + k.spans.len());
        }
        if let Some(a) = &self.attribute_keys {
            for scope in AttributeKeys::SCOPES {
                n += strings(a.scope(scope));
            }
        }
        if let Some(ix) = &self.tag_values {
            for k in &ix.keys {
                n += k.key.len() + WORD + strings(&k.strings);
                n += 8 * (k.ints.len() + k.floats.len()) + k.bools.len();
            }
            n += ix.wide.iter().map(|w| w.key.len() + WORD).sum::<usize>();
            n += ix.names.as_deref().map_or(0, strings);
        }
        n as u64
    }

    /// The union of what `blocks` recorded (see the module docs).
    pub fn union<'a, R: Records + 'a>(blocks: impl IntoIterator<Item = &'a R> + Clone) -> Self {
        let all = |f: fn(&R) -> bool| blocks.clone().into_iter().all(f);
        let recorded = all(|m| {
            m.other_keys().is_some() && m.key_types().is_some() && m.attribute_keys().is_some()
        });
        if !recorded {
            return Self::default();
        }
        let mut others: BTreeSet<AttrKey> = BTreeSet::new();
        // Per key and type, spans carrying it (`None` once an input did not count them).
        let mut types: BTreeMap<(AttrScope, String), BTreeMap<HotType, Option<u64>>> =
            BTreeMap::new();
        let mut keys: [BTreeSet<String>; 5] = Default::default();
        for m in blocks.clone() {
            others.extend(m.other_keys().into_iter().flatten().cloned());
            for k in m.key_types().into_iter().flatten() {
                let entry = types.entry((k.scope, k.key.clone())).or_default();
                let counted = k.spans.len() == k.types.len();
                for (i, t) in k.types.iter().enumerate() {
                    let n = entry.entry(*t).or_insert(Some(0));
                    *n = n.zip(counted.then(|| k.spans[i])).map(|(a, b)| a + b);
                }
            }
            if let Some(a) = m.attribute_keys() {
                for (set, scope) in keys.iter_mut().zip(AttributeKeys::SCOPES) {
                    set.extend(a.scope(scope).iter().cloned());
                }
            }
        }
        if keys.iter().map(BTreeSet::len).sum::<usize>() > MAX_RECORDED_KEYS {
            return Self::default();
        }
        let key_types = types
            .into_iter()
            .map(|((scope, key), per_type)| {
                let spans: Option<Vec<u64>> = per_type.values().copied().collect();
                KeyTypes {
                    scope,
                    key,
                    // In declaration order (string, int, float, bool), as a scan lists them.
                    types: per_type.into_keys().collect(),
                    spans: spans.unwrap_or_default(),
                }
            })
            .collect();
        let [span, resource, instrumentation, event, link] = keys.map(|s| s.into_iter().collect());
        let tag_values = all(|m| m.tag_values().is_some()).then(|| {
            let mut scan = ValueScan::default();
            for m in blocks.clone() {
                if let Some(ix) = m.tag_values() {
                    scan.add_index(ix);
                }
            }
            scan.finish()
        });
        Self {
            other_keys: Some(others.into_iter().collect()),
            key_types: Some(key_types),
            attribute_keys: Some(AttributeKeys {
                span,
                resource,
                instrumentation,
                event,
                link,
            }),
            tag_values,
        }
    }
}
