//! `compare()`'s counting: every attribute value of every span, per interval and side
//! (selection or baseline), in one walk over the span rows.
//!
//! As a DataFusion aggregation this needed one grouping set per attribute: DataFusion repeats
//! every row once per set (45 times on the benchmark data) after looking each attribute up in
//! the overflow maps for every span. Here a row's hot columns and map entries are visited once,
//! so the work follows the values a span has, not the keys the data has.

use std::collections::HashMap;
use std::hash::BuildHasher;

use allegro_traceql::ast::{Attribute, FieldRef, Intrinsic, Scope};
use allegro_udfs::spansets::key::{KeyType, encode};
use allegro_udfs::traceql_match::{Val, array_elements};
use arrow::array::{
    Array, AsArray, BooleanArray, Float64Array, Int32Array, Int64Array, LargeStringArray, MapArray,
    StringArray, StringViewArray, UInt64Array,
};
use arrow::datatypes::{Float64Type, Int32Type, Int64Type, UInt64Type};
use arrow::record_batch::RecordBatch;
use foldhash::fast::{FixedState, RandomState};
use hashbrown::HashTable;

use crate::error::{EngineError, Result};
use crate::query::translate::{KIND_NAMES, STATUS_NAMES, enum_name};
use crate::schema::{AttrScope, HotColumn, HotType, col as c};

use super::series::LabelValue;

/// How an intrinsic's column holds its value.
#[derive(Clone, Copy)]
enum Holds {
    /// The text itself.
    Text,
    /// An OTLP enum number, named as TraceQL names it.
    Enum(KeyType, &'static [(i32, &'static str)]),
}

/// Intrinsics compared besides every span and resource attribute (Tempo leaves out only
/// start time and duration; IDs and nested sets are not attributes of interest), with their
/// columns. Their attribute IDs are their positions here.
const INTRINSICS: [(Intrinsic, &str, Holds); 8] = [
    (Intrinsic::Name, c::NAME, Holds::Text),
    (
        Intrinsic::Status,
        c::STATUS_CODE,
        Holds::Enum(KeyType::Status, &STATUS_NAMES),
    ),
    (
        Intrinsic::Kind,
        c::KIND,
        Holds::Enum(KeyType::Kind, &KIND_NAMES),
    ),
    (Intrinsic::TraceRootName, c::TRACE_ROOT_NAME, Holds::Text),
    (
        Intrinsic::TraceRootService,
        c::TRACE_ROOT_SERVICE,
        Holds::Text,
    ),
    (Intrinsic::StatusMessage, c::STATUS_MESSAGE, Holds::Text),
    (Intrinsic::InstrumentationName, c::SCOPE_NAME, Holds::Text),
    (
        Intrinsic::InstrumentationVersion,
        c::SCOPE_VERSION,
        Holds::Text,
    ),
];

/// The scopes whose attributes are compared, in the order of their overflow maps' columns.
pub(super) const SCOPES: [AttrScope; 3] = [
    AttrScope::Resource,
    AttrScope::Span,
    AttrScope::Instrumentation,
];

/// Scalar types in TraceQL's lookup order: a key's first present type is its value.
const TYPES: [(HotType, &str, KeyType); 4] = [
    (HotType::String, "str", KeyType::Str),
    (HotType::Int, "int", KeyType::Int),
    (HotType::Float, "float", KeyType::Float),
    (HotType::Bool, "bool", KeyType::Bool),
];

/// The overflow map column of `scope` for values of type `suffix`.
pub(super) fn map_column(scope: AttrScope, suffix: &str) -> String {
    format!("{}attrs_{suffix}", scope.overflow_prefix())
}

/// The suffix of the overflow maps that hold arrays (among kvlists and bytes, as protobuf).
const OTHER: &str = "other";

/// Type codes of arrays in a slot's key: this bit over their elements' [`KeyType`] code, so
/// an array never equals a scalar.
const ARRAY: u8 = 0x80;

/// Every overflow map column the tally reads: the scalar ones, then those holding arrays.
pub(super) fn map_columns() -> impl Iterator<Item = String> {
    SCOPES
        .into_iter()
        .flat_map(|s| {
            TYPES
                .into_iter()
                .map(move |(_, suffix, _)| map_column(s, suffix))
        })
        .chain(SCOPES.into_iter().map(|s| map_column(s, OTHER)))
}

/// The string and enum columns the tally reads as they are: the intrinsics' and
/// `service_name`.
pub(super) fn plain_columns() -> impl Iterator<Item = &'static str> {
    INTRINSICS
        .iter()
        .map(|(_, name, _)| *name)
        .chain([c::SERVICE_NAME])
}

/// Every column of the tally's input besides `i`, `sel` and `w`, for an input with `hot` hot
/// columns.
pub(super) fn columns(hot: usize) -> impl Iterator<Item = String> {
    plain_columns()
        .map(str::to_string)
        .chain((0..hot).map(hot_name))
        .chain(map_columns())
}

/// The name of the `n`th hot column of the tally's input.
pub(super) fn hot_name(n: usize) -> String {
    format!("h{n}")
}

/// Counts per (attribute, value): one row of `2 × intervals` cells, baseline then selection.
pub(super) struct Tally {
    intervals: usize,
    /// Label name per attribute ID; the intrinsics come first.
    names: Vec<String>,
    /// Attribute IDs per scope (in [`SCOPES`] order) and key.
    ids: [HashMap<Box<str>, u32, RandomState>; SCOPES.len()],
    /// Scope and key per attribute ID (`None` for the intrinsics).
    keys: Vec<Option<(usize, Box<str>)>>,
    /// Per attribute ID, the last row that counted it (a key counts once per span).
    seen: Vec<u64>,
    row: u64,
    /// The hot columns of the input: attribute ID and type index, in `h<n>` order.
    hot: Vec<(u32, usize)>,
    /// Per attribute ID, the hash of its scope and name: a value's hash mixes it with the
    /// value's, so tallies that number attributes differently hash a value alike and merge
    /// without hashing bytes again.
    attr_hash: Vec<u64>,
    /// Slots by (attribute, type code, value bytes), found by hash.
    table: HashTable<u32>,
    /// Per slot: hash, attribute ID, and where its type code and value bytes sit in `arena`.
    slots: Vec<Slot>,
    arena: Vec<u8>,
    cells: Vec<f64>,
}

/// A counted value.
struct Slot {
    hash: u64,
    attr: u32,
    /// `arena[at..at + len]`: the type code, then the value's bytes.
    at: usize,
    len: usize,
}

/// One seed for every tally, so equal values hash alike in all of them.
const SEED: FixedState = FixedState::with_seed(0x5eed_a11e_9e0c_0de5);

fn lost(what: &str) -> EngineError {
    EngineError::Internal(format!("compare rows lost column {what}"))
}

/// A string column of any of Arrow's string layouts.
enum Strs<'a> {
    Utf8(&'a StringArray),
    Large(&'a LargeStringArray),
    View(&'a StringViewArray),
}

impl<'a> Strs<'a> {
    fn new(a: &'a dyn Array) -> Option<Self> {
        a.as_string_opt::<i32>()
            .map(Strs::Utf8)
            .or_else(|| a.as_string_opt::<i64>().map(Strs::Large))
            .or_else(|| a.as_string_view_opt().map(Strs::View))
    }

    #[inline]
    fn get(&self, i: usize) -> Option<&'a str> {
        match self {
            Strs::Utf8(a) => a.is_valid(i).then(|| a.value(i)),
            Strs::Large(a) => a.is_valid(i).then(|| a.value(i)),
            Strs::View(a) => a.is_valid(i).then(|| a.value(i)),
        }
    }
}

/// One scalar column (a hot column or a map's values), by type.
enum Scalars<'a> {
    Str(Strs<'a>),
    Int(&'a Int64Array),
    Float(&'a Float64Array),
    Bool(&'a BooleanArray),
}

impl<'a> Scalars<'a> {
    fn new(a: &'a dyn Array, ty: usize) -> Option<Self> {
        Some(match TYPES[ty].0 {
            HotType::String => Scalars::Str(Strs::new(a)?),
            HotType::Int => Scalars::Int(a.as_primitive_opt::<Int64Type>()?),
            HotType::Float => Scalars::Float(a.as_primitive_opt::<Float64Type>()?),
            HotType::Bool => Scalars::Bool(a.as_boolean_opt()?),
        })
    }

    /// Value `i` as the bytes that identify it (`buf` holds the number's bytes).
    #[inline]
    fn bytes<'b>(&'b self, i: usize, buf: &'b mut [u8; 8]) -> Option<&'b [u8]> {
        match self {
            Scalars::Str(s) => s.get(i).map(str::as_bytes),
            Scalars::Int(a) => a.is_valid(i).then(|| {
                *buf = a.value(i).to_le_bytes();
                &buf[..]
            }),
            Scalars::Float(a) => a.is_valid(i).then(|| {
                *buf = a.value(i).to_bits().to_le_bytes();
                &buf[..]
            }),
            Scalars::Bool(a) => a.is_valid(i).then(|| {
                buf[0] = a.value(i) as u8;
                &buf[..1]
            }),
        }
    }
}

/// An intrinsic's column in a batch.
enum IntrinsicColumn<'a> {
    Text(Strs<'a>),
    Enum(&'a Int32Array, KeyType, &'static [(i32, &'static str)]),
}

/// An overflow map column: its entries' keys and values.
struct Entries<'a> {
    map: &'a MapArray,
    keys: Strs<'a>,
    values: Scalars<'a>,
    scope: usize,
    ty: usize,
}

impl Tally {
    /// A tally over `intervals` intervals whose input has the hot columns `hot` (`h0`, `h1`...).
    pub(super) fn new(intervals: usize, hot: &[HotColumn]) -> Self {
        let mut t = Tally {
            intervals,
            names: Vec::new(),
            ids: Default::default(),
            keys: Vec::new(),
            seen: Vec::new(),
            row: 0,
            hot: Vec::new(),
            attr_hash: Vec::new(),
            table: HashTable::new(),
            slots: Vec::new(),
            arena: Vec::new(),
            cells: Vec::new(),
        };
        for (i, ..) in INTRINSICS {
            t.names.push(FieldRef::Intrinsic(i).to_string());
            t.attr_hash.push(SEED.hash_one(t.names.len()));
            t.keys.push(None);
            t.seen.push(0);
        }
        for h in hot {
            let Some(scope) = SCOPES.iter().position(|s| *s == h.scope) else {
                continue;
            };
            let ty = TYPES.iter().position(|(t, ..)| *t == h.ty).unwrap_or(0);
            let id = t.attr(scope, &h.key);
            t.hot.push((id, ty));
        }
        t
    }

    /// The ID of attribute `key` of scope `SCOPES[scope]`, made on first sight.
    fn attr(&mut self, scope: usize, key: &str) -> u32 {
        if let Some(id) = self.ids[scope].get(key) {
            return *id;
        }
        let id = self.names.len() as u32;
        let name = FieldRef::Attribute(Attribute {
            scope: match SCOPES[scope] {
                AttrScope::Resource => Scope::Resource,
                AttrScope::Instrumentation => Scope::Instrumentation,
                AttrScope::Span => Scope::Span,
            },
            parent: false,
            name: key.to_string(),
        });
        self.names.push(name.to_string());
        self.attr_hash.push(SEED.hash_one((scope, key)));
        self.keys.push(Some((scope, key.into())));
        self.seen.push(0);
        self.ids[scope].insert(key.into(), id);
        id
    }

    /// Adds `w` to cell `cell` of the value (`attr`, type code `ty`, `value`).
    #[inline]
    fn bump(&mut self, attr: u32, ty: u8, value: &[u8], cell: usize, w: f64) {
        let hash = self.attr_hash[attr as usize] ^ SEED.hash_one((ty, value));
        let width = 2 * self.intervals;
        let slot = self.slot(hash, attr, ty, value);
        self.cells[slot * width + cell] += w;
    }

    /// [`Self::bump`] unless the row already counted `attr` (an earlier type or column won).
    #[inline]
    fn bump_once(&mut self, attr: u32, ty: u8, value: &[u8], cell: usize, w: f64) {
        let seen = &mut self.seen[attr as usize];
        if *seen == self.row {
            return;
        }
        *seen = self.row;
        self.bump(attr, ty, value, cell, w);
    }

    /// Counts the rows of `b`: columns `i` (interval), `sel`, `w`, the intrinsics' columns,
    /// `service_name`, the hot columns and the overflow maps.
    pub(super) fn add(&mut self, b: &RecordBatch, i: &str, sel: &str, w: &str) -> Result<()> {
        let column = |n: &str| b.column_by_name(n).ok_or_else(|| lost(n));
        let iv: &UInt64Array = column(i)?
            .as_primitive_opt::<UInt64Type>()
            .ok_or_else(|| lost(i))?;
        let selv = column(sel)?.as_boolean_opt().ok_or_else(|| lost(sel))?;
        let wv = column(w)?
            .as_primitive_opt::<Float64Type>()
            .ok_or_else(|| lost(w))?;
        let strs = |n: &str| column(n).and_then(|a| Strs::new(a).ok_or_else(|| lost(n)));
        let ints = |n: &str| -> Result<&Int32Array> {
            column(n)?
                .as_primitive_opt::<Int32Type>()
                .ok_or_else(|| lost(n))
        };
        let intrinsics = INTRINSICS
            .iter()
            .map(|(_, name, holds)| match holds {
                Holds::Text => strs(name).map(IntrinsicColumn::Text),
                Holds::Enum(ty, names) => ints(name).map(|a| IntrinsicColumn::Enum(a, *ty, names)),
            })
            .collect::<Result<Vec<_>>>()?;
        let service = strs(c::SERVICE_NAME)?;
        let hot = (0..self.hot.len())
            .map(|n| {
                let h = hot_name(n);
                Scalars::new(column(&h)?, self.hot[n].1).ok_or_else(|| lost(&h))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut maps = Vec::new();
        for (scope, s) in SCOPES.into_iter().enumerate() {
            for (ty, (_, suffix, _)) in TYPES.into_iter().enumerate() {
                let n = map_column(s, suffix);
                let map = column(&n)?.as_map_opt().ok_or_else(|| lost(&n))?;
                maps.push(Entries {
                    map,
                    keys: Strs::new(map.keys()).ok_or_else(|| lost(&n))?,
                    values: Scalars::new(map.values(), ty).ok_or_else(|| lost(&n))?,
                    scope,
                    ty,
                });
            }
        }
        let mut arrays = Vec::new();
        for (scope, s) in SCOPES.into_iter().enumerate() {
            let n = map_column(s, OTHER);
            let map = column(&n)?.as_map_opt().ok_or_else(|| lost(&n))?;
            let keys = Strs::new(map.keys()).ok_or_else(|| lost(&n))?;
            let values = map
                .values()
                .as_binary_opt::<i32>()
                .ok_or_else(|| lost(&n))?;
            arrays.push((map, keys, values, scope));
        }
        let mut elems = Vec::new();
        let service_id = self.attr(0, "service.name");
        let mut num = [0u8; 8];
        for r in 0..b.num_rows() {
            if iv.is_null(r) || iv.value(r) as usize >= self.intervals {
                continue;
            }
            let side = usize::from(selv.is_valid(r) && selv.value(r));
            let cell = side * self.intervals + iv.value(r) as usize;
            let w = wv.value(r);
            self.row += 1;
            for (id, x) in intrinsics.iter().enumerate() {
                let (ty, v) = match x {
                    IntrinsicColumn::Text(a) => (KeyType::Str, a.get(r)),
                    IntrinsicColumn::Enum(a, ty, names) => {
                        (*ty, a.is_valid(r).then(|| enum_name(names, a.value(r))))
                    }
                };
                if let Some(v) = v {
                    self.bump(id as u32, ty as u8, v.as_bytes(), cell, w);
                }
            }
            // Types in lookup order, and within a type the column before the map: a key
            // counts once per span, with the value TraceQL sees (a map entry beside a value in
            // the key's column is a second value of a key the span repeats).
            for (ty, (.., tag)) in TYPES.into_iter().enumerate() {
                if ty == 0
                    && let Some(v) = service.get(r)
                {
                    self.bump_once(service_id, tag as u8, v.as_bytes(), cell, w);
                }
                for (n, h) in hot.iter().enumerate() {
                    let (id, t) = self.hot[n];
                    if t == ty
                        && let Some(v) = h.bytes(r, &mut num)
                    {
                        self.bump_once(id, tag as u8, v, cell, w);
                    }
                }
                for m in maps.iter().filter(|m| m.ty == ty) {
                    if m.map.is_null(r) {
                        continue;
                    }
                    let offsets = m.map.value_offsets();
                    for e in offsets[r] as usize..offsets[r + 1] as usize {
                        let Some(key) = m.keys.get(e) else { continue };
                        let id = self.attr(m.scope, key);
                        if let Some(v) = m.values.bytes(e, &mut num) {
                            self.bump_once(id, tag as u8, v, cell, w);
                        }
                    }
                }
            }
            // Arrays last, each counted as one value (Tempo groups by the whole array here,
            // where `by()` groups by element), keyed by its protobuf bytes.
            for (map, keys, values, scope) in &arrays {
                if map.is_null(r) {
                    continue;
                }
                let offsets = map.value_offsets();
                for e in offsets[r] as usize..offsets[r + 1] as usize {
                    let (Some(key), true) = (keys.get(e), values.is_valid(e)) else {
                        continue;
                    };
                    let v = values.value(e);
                    elems.clear();
                    let Some(ty) = array_elements(v, &mut elems)
                        .then(|| element_type(&elems))
                        .flatten()
                    else {
                        continue;
                    };
                    let id = self.attr(*scope, key);
                    self.bump_once(id, ARRAY | ty as u8, v, cell, w);
                }
            }
        }
        Ok(())
    }

    /// Adds `other`'s counts (another partition's or tenant's) to these.
    pub(super) fn merge(&mut self, mut other: Tally) {
        // The smaller into the larger: attributes are matched by scope and key, so either
        // side's numbering serves.
        if other.slots.len() > self.slots.len() {
            std::mem::swap(self, &mut other);
        }
        let width = 2 * self.intervals;
        self.table
            .reserve(other.slots.len(), |s| self.slots[*s as usize].hash);
        let ids: Vec<u32> = other
            .keys
            .iter()
            .enumerate()
            .map(|(id, k)| match k {
                Some((scope, key)) => self.attr(*scope, key),
                None => id as u32,
            })
            .collect();
        for (slot, s) in other.slots.iter().enumerate() {
            let key = other.key(s);
            let mine = self.slot(s.hash, ids[s.attr as usize], key[0], &key[1..]);
            let from = &other.cells[slot * width..(slot + 1) * width];
            for (a, b) in self.cells[mine * width..(mine + 1) * width]
                .iter_mut()
                .zip(from)
            {
                *a += b;
            }
        }
    }

    /// Per side and attribute, the `top_n` values with the highest counts (ties by value, as
    /// tagged text) and the totals over all values. Only the winners are turned into text.
    pub(super) fn ranked(self, top_n: usize) -> Vec<Ranked> {
        let n = self.intervals;
        // (attribute, side) → (total, value key, first cell) per value.
        type Values<'k> = Vec<(f64, &'k [u8], usize)>;
        let mut groups: HashMap<(u32, usize), Values, RandomState> = HashMap::default();
        for (slot, s) in self.slots.iter().enumerate() {
            let (attr, key) = (s.attr, self.key(s));
            let start = slot * 2 * n;
            for side in 0..2 {
                let cells = &self.cells[start + side * n..start + (side + 1) * n];
                if cells.iter().any(|x| *x != 0.0) {
                    let total = cells.iter().sum();
                    groups
                        .entry((attr, side))
                        .or_default()
                        .push((total, key, start + side * n));
                }
            }
        }
        let order = |a: &(f64, &[u8], usize), b: &(f64, &[u8], usize)| {
            b.0.total_cmp(&a.0).then_with(|| tie(a.1, b.1))
        };
        groups
            .into_iter()
            .map(|((attr, side), mut values)| {
                let mut totals = vec![0.0; n];
                for (_, _, at) in &values {
                    for (t, x) in totals.iter_mut().zip(&self.cells[*at..*at + n]) {
                        *t += x;
                    }
                }
                if values.len() > top_n && top_n > 0 {
                    values.select_nth_unstable_by(top_n - 1, order);
                }
                values.truncate(top_n);
                values.sort_by(order);
                Ranked {
                    sel: side == 1,
                    attr: self.names[attr as usize].clone(),
                    top: values
                        .into_iter()
                        .filter_map(|(_, v, at)| Some((label(v)?, self.cells[at..at + n].to_vec())))
                        .collect(),
                    totals,
                }
            })
            .collect()
    }

    /// A slot's type code and value bytes.
    fn key(&self, s: &Slot) -> &[u8] {
        &self.arena[s.at..s.at + s.len]
    }

    /// The slot of (`attr`, `ty`, `value`) whose hash is `hash`, made (with zero cells) on
    /// first sight.
    #[inline]
    fn slot(&mut self, hash: u64, attr: u32, ty: u8, value: &[u8]) -> usize {
        let (slots, arena) = (&self.slots, &self.arena);
        let same = |s: &u32| {
            let s = &slots[*s as usize];
            let key = &arena[s.at..s.at + s.len];
            s.hash == hash && s.attr == attr && key[0] == ty && &key[1..] == value
        };
        if let Some(s) = self.table.find(hash, same) {
            return *s as usize;
        }
        let slot = self.slots.len();
        self.slots.push(Slot {
            hash,
            attr,
            at: self.arena.len(),
            len: value.len() + 1,
        });
        self.arena.push(ty);
        self.arena.extend_from_slice(value);
        let slots = &self.slots;
        self.table
            .insert_unique(hash, slot as u32, |s| slots[*s as usize].hash);
        self.cells
            .resize(self.cells.len() + 2 * self.intervals, 0.0);
        slot
    }
}

/// One side of one attribute: its top values and the totals over all its values.
pub(super) struct Ranked {
    /// Selection (or baseline).
    pub sel: bool,
    /// The attribute's label name.
    pub attr: String,
    /// Values with their counts per interval, highest first.
    pub top: Vec<(LabelValue, Vec<f64>)>,
    /// Counts per interval over every value.
    pub totals: Vec<f64>,
}

/// Orders equal counts by tagged text without building it for string-like values.
fn tie(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let texty = |k: &[u8]| {
        k.first()
            .and_then(|c| KeyType::from_code(*c))
            .filter(|t| matches!(t, KeyType::Str | KeyType::Status | KeyType::Kind))
    };
    let array = |k: &[u8]| k.first().is_some_and(|c| c & ARRAY != 0);
    match (texty(a), texty(b)) {
        (Some(x), Some(y)) => x.tag().cmp(y.tag()).then_with(|| a[1..].cmp(&b[1..])),
        _ if array(a) || array(b) => {
            (array(a), label(a).map(|l| l.text())).cmp(&(array(b), label(b).map(|l| l.text())))
        }
        _ => decode(a).cmp(&decode(b)),
    }
}

/// The one scalar type of an array's elements; `None` for an empty or mixed array, which
/// TraceQL has no value for.
fn element_type(elems: &[Val]) -> Option<KeyType> {
    let ty = |v: &Val| match v {
        Val::Str(_) | Val::Owned(_) => KeyType::Str,
        Val::Int(_) => KeyType::Int,
        Val::Float(_) => KeyType::Float,
        Val::Bool(_) => KeyType::Bool,
        Val::Dur(_) => KeyType::Duration,
    };
    let first = ty(elems.first()?);
    elems.iter().all(|v| ty(v) == first).then_some(first)
}

/// A value's key bytes as a label: scalars through their tagged text, arrays element by element.
fn label(key: &[u8]) -> Option<LabelValue> {
    if key.first()? & ARRAY == 0 {
        return Some(LabelValue::from_key(&decode(key)?));
    }
    let mut elems = Vec::new();
    if !array_elements(&key[1..], &mut elems) {
        return None;
    }
    let elems = elems.iter().map(|v| match v {
        Val::Str(s) => LabelValue::Str((*s).to_string()),
        Val::Owned(s) => LabelValue::Str(s.clone()),
        Val::Int(i) | Val::Dur(i) => LabelValue::Int(*i),
        Val::Float(f) => LabelValue::Float(*f),
        Val::Bool(b) => LabelValue::Bool(*b),
    });
    Some(LabelValue::Array(elems.collect()))
}

/// A value's key bytes (type code, value) as tagged text (`i:200`), as `by()` keys spell
/// values.
fn decode(key: &[u8]) -> Option<String> {
    let ty = KeyType::from_code(*key.first()?)?;
    let v = &key[1..];
    let num = || -> Option<[u8; 8]> { v.try_into().ok() };
    let text = match ty {
        KeyType::Int => i64::from_le_bytes(num()?).to_string(),
        KeyType::Float => f64::from_bits(u64::from_le_bytes(num()?)).to_string(),
        KeyType::Bool => (v.first()? != &0).to_string(),
        _ => String::from_utf8(v.to_vec()).ok()?,
    };
    Some(encode(ty, text))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayBuilder, BooleanArray, Float64Array, Int32Array, UInt64Array};
    use arrow::array::{
        ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, MapBuilder,
        StringBuilder,
    };
    use arrow::record_batch::RecordBatch;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, any_value::Value};
    use prost::Message;

    use super::*;

    /// A map column from per-row entries, built by `put` into the values builder.
    fn map<B: ArrayBuilder + Default, T: Copy>(
        rows: &[&[(&str, T)]],
        put: fn(&mut B, T),
    ) -> ArrayRef {
        let mut m = MapBuilder::new(None, StringBuilder::new(), B::default());
        for row in rows {
            for (k, v) in *row {
                m.keys().append_value(k);
                put(m.values(), *v);
            }
            m.append(true).unwrap();
        }
        Arc::new(m.finish())
    }

    #[test]
    fn counts_each_key_once_per_span_with_the_value_traceql_sees() {
        // Three spans; the third falls outside the grid. Span 0: resource service "api",
        // span attribute `code` as a string in the hot column *and* as an int in the map
        // (TraceQL sees the string), `n` twice in the int map (the first counts), `x` as a
        // float; span 1 (selection, weight 2): `code` only as an int, service "api".
        let strs =
            |v: [Option<&str>; 3]| Arc::new(v.into_iter().collect::<StringArray>()) as ArrayRef;
        let none: &[(&str, &str)] = &[];
        let no_int: &[(&str, i64)] = &[];
        let no_f: &[(&str, f64)] = &[];
        let no_b: &[(&str, bool)] = &[];
        let s = |b: &mut StringBuilder, v: &str| b.append_value(v);
        let i = |b: &mut Int64Builder, v: i64| b.append_value(v);
        let f = |b: &mut Float64Builder, v: f64| b.append_value(v);
        let bo = |b: &mut BooleanBuilder, v: bool| b.append_value(v);
        let mut cols: Vec<(String, ArrayRef)> = vec![
            (
                "i".into(),
                Arc::new(UInt64Array::from(vec![Some(0), Some(1), Some(9)])),
            ),
            (
                "sel".into(),
                Arc::new(BooleanArray::from(vec![Some(false), Some(true), None])),
            ),
            (
                "w".into(),
                Arc::new(Float64Array::from(vec![1.0, 2.0, 1.0])),
            ),
            (c::NAME.into(), strs([Some("GET"), Some("GET"), Some("x")])),
            (
                c::STATUS_CODE.into(),
                Arc::new(Int32Array::from(vec![2, 0, 0])),
            ),
            (c::KIND.into(), Arc::new(Int32Array::from(vec![2, 3, 0]))),
            (
                c::TRACE_ROOT_NAME.into(),
                strs([Some("root"), Some("root"), None]),
            ),
            (
                c::TRACE_ROOT_SERVICE.into(),
                strs([Some("fe"), Some("fe"), None]),
            ),
            (
                c::SERVICE_NAME.into(),
                strs([Some("api"), Some("api"), None]),
            ),
            (
                c::STATUS_MESSAGE.into(),
                strs([Some(""), Some("boom"), None]),
            ),
            (c::SCOPE_NAME.into(), strs([Some("lib"), Some("lib"), None])),
            (c::SCOPE_VERSION.into(), strs([None, None, None])),
            (hot_name(0), strs([Some("404"), None, Some("500")])),
            ("resource_attrs_str".into(), map(&[none, none, none], s)),
            (
                "resource_attrs_int".into(),
                map(&[no_int, &[("service.name", 7)], no_int], i),
            ),
            ("resource_attrs_float".into(), map(&[no_f, no_f, no_f], f)),
            ("resource_attrs_bool".into(), map(&[no_b, no_b, no_b], bo)),
            ("span_attrs_str".into(), map(&[none, none, none], s)),
            (
                "span_attrs_int".into(),
                map(
                    &[
                        &[("code", 200), ("n", 1), ("n", 2)],
                        &[("code", 201)],
                        no_int,
                    ],
                    i,
                ),
            ),
            (
                "span_attrs_float".into(),
                map(&[&[("x", 0.5)], no_f, no_f], f),
            ),
            (
                "span_attrs_bool".into(),
                map(&[no_b, &[("ok", true)], no_b], bo),
            ),
            (
                "instrumentation_attrs_str".into(),
                map(&[none, &[("lib.flag", "on")], none], s),
            ),
            (
                "instrumentation_attrs_int".into(),
                map(&[no_int, no_int, no_int], i),
            ),
            (
                "instrumentation_attrs_float".into(),
                map(&[no_f, no_f, no_f], f),
            ),
            (
                "instrumentation_attrs_bool".into(),
                map(&[no_b, no_b, no_b], bo),
            ),
        ];
        // Arrays: span 0 and span 1 both hold `tags = ["a", "b"]` (one value each, whole);
        // span 0 also a mixed array and a kvlist (no TraceQL value, not counted), span 1 a
        // resource array of ints.
        let array = |xs: Vec<Value>| {
            AnyValue {
                value: Some(Value::ArrayValue(ArrayValue {
                    values: xs
                        .into_iter()
                        .map(|v| AnyValue { value: Some(v) })
                        .collect(),
                })),
            }
            .encode_to_vec()
        };
        let ab = array(vec![
            Value::StringValue("a".into()),
            Value::StringValue("b".into()),
        ]);
        let mixed = array(vec![Value::StringValue("a".into()), Value::IntValue(1)]);
        let ints = array(vec![Value::IntValue(3), Value::IntValue(4)]);
        let kvlist = AnyValue {
            value: Some(Value::KvlistValue(Default::default())),
        }
        .encode_to_vec();
        let by = |b: &mut BinaryBuilder, v: &[u8]| b.append_value(v);
        let no_other: &[(&str, &[u8])] = &[];
        cols.extend([
            (
                "resource_attrs_other".to_string(),
                map(&[no_other, &[("shards", &ints[..])], no_other], by),
            ),
            (
                "span_attrs_other".into(),
                map(
                    &[
                        &[
                            ("tags", &ab[..]),
                            ("mixed", &mixed[..]),
                            ("kv", &kvlist[..]),
                        ],
                        &[("tags", &ab[..])],
                        no_other,
                    ],
                    by,
                ),
            ),
            (
                "instrumentation_attrs_other".into(),
                map(&[no_other, no_other, no_other], by),
            ),
        ]);
        let b = RecordBatch::try_from_iter(cols).unwrap();
        let hot = [HotColumn {
            scope: AttrScope::Span,
            key: "code".into(),
            ty: HotType::String,
        }];
        let mut t = Tally::new(2, &hot);
        t.add(&b, "i", "sel", "w").unwrap();
        // Merged with a tally that numbers the attributes differently and holds one more
        // `span.x = 0.5` in baseline interval 0.
        let mut all = Tally::new(2, &[]);
        let x = all.attr(1, "x");
        all.bump(
            x,
            KeyType::Float as u8,
            &0.5f64.to_bits().to_le_bytes(),
            0,
            1.0,
        );
        all.merge(t);
        let mut flat: Vec<String> = all
            .ranked(10)
            .iter()
            .flat_map(|r| {
                let side = if r.sel { "S" } else { "B" };
                r.top
                    .iter()
                    .map(move |(v, c)| format!("{side} {} {v:?} {c:?}", r.attr))
            })
            .collect();
        flat.sort();
        let want = [
            r#"B instrumentation:name Str("lib") [1.0, 0.0]"#,
            r#"B kind Str("server") [1.0, 0.0]"#,
            r#"B name Str("GET") [1.0, 0.0]"#,
            r#"B resource.service.name Str("api") [1.0, 0.0]"#,
            r#"B rootName Str("root") [1.0, 0.0]"#,
            r#"B rootServiceName Str("fe") [1.0, 0.0]"#,
            r#"B span.code Str("404") [1.0, 0.0]"#,
            r#"B span.n Int(1) [1.0, 0.0]"#,
            r#"B span.tags Array([Str("a"), Str("b")]) [1.0, 0.0]"#,
            r#"B span.x Float(0.5) [2.0, 0.0]"#,
            r#"B status Str("error") [1.0, 0.0]"#,
            r#"B statusMessage Str("") [1.0, 0.0]"#,
            r#"S instrumentation.lib.flag Str("on") [0.0, 2.0]"#,
            r#"S instrumentation:name Str("lib") [0.0, 2.0]"#,
            r#"S kind Str("client") [0.0, 2.0]"#,
            r#"S name Str("GET") [0.0, 2.0]"#,
            r#"S resource.service.name Str("api") [0.0, 2.0]"#,
            r#"S resource.shards Array([Int(3), Int(4)]) [0.0, 2.0]"#,
            r#"S rootName Str("root") [0.0, 2.0]"#,
            r#"S rootServiceName Str("fe") [0.0, 2.0]"#,
            r#"S span.code Int(201) [0.0, 2.0]"#,
            r#"S span.ok Bool(true) [0.0, 2.0]"#,
            r#"S span.tags Array([Str("a"), Str("b")]) [0.0, 2.0]"#,
            r#"S status Str("unset") [0.0, 2.0]"#,
            r#"S statusMessage Str("boom") [0.0, 2.0]"#,
        ];
        assert_eq!(flat, want);
    }
}
