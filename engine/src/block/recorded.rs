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
use crate::hot::{AttrKey, AttributeKeys, KeyTypes, MAX_RECORDED_KEYS};
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

impl RecordedKeys {
    /// The union of what `blocks` recorded (see the module docs).
    pub fn union<'a>(blocks: impl IntoIterator<Item = &'a BlockMeta> + Clone) -> Self {
        let all = |f: fn(&BlockMeta) -> bool| blocks.clone().into_iter().all(f);
        let recorded =
            all(|m| m.other_keys.is_some() && m.key_types.is_some() && m.attribute_keys.is_some());
        if !recorded {
            return Self::default();
        }
        let mut others: BTreeSet<AttrKey> = BTreeSet::new();
        // Per key and type, spans carrying it (`None` once an input did not count them).
        let mut types: BTreeMap<(AttrScope, String), BTreeMap<HotType, Option<u64>>> =
            BTreeMap::new();
        let mut keys: [BTreeSet<String>; 5] = Default::default();
        for m in blocks.clone() {
            others.extend(m.other_keys.iter().flatten().cloned());
            for k in m.key_types.iter().flatten() {
                let entry = types.entry((k.scope, k.key.clone())).or_default();
                let counted = k.spans.len() == k.types.len();
                for (i, t) in k.types.iter().enumerate() {
                    let n = entry.entry(*t).or_insert(Some(0));
                    *n = n.zip(counted.then(|| k.spans[i])).map(|(a, b)| a + b);
                }
            }
            if let Some(a) = &m.attribute_keys {
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
        let tag_values = all(|m| m.tag_values.is_some()).then(|| {
            let mut scan = ValueScan::default();
            for m in blocks.clone() {
                if let Some(ix) = &m.tag_values {
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
