//! The span table: one row per span, shared by blocks, the live head and SQL.
//!
//! `docs/schema.md` documents every column; keep the two in step.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

/// Format string of a block whose rows are one run in trace-ID order (roots apart).
pub const FORMAT_V1: &str = "allegro-1";
/// Format string of a block cut into time slices (`slices` in `meta.json`), each its own run in
/// trace-ID order: what a merge writes. Builds that read only `allegro-1` would take the
/// slices for one run, so they refuse it by name.
pub const FORMAT_V2: &str = "allegro-2";
/// Every block format this build can read, oldest first.
pub const READABLE_FORMATS: &[&str] = &[FORMAT_V1, FORMAT_V2];

/// Column names of the fixed part of the schema.
pub mod col {
    #![allow(missing_docs)]
    pub const TRACE_ID: &str = "trace_id";
    pub const SPAN_ID: &str = "span_id";
    pub const PARENT_SPAN_ID: &str = "parent_span_id";
    pub const TRACE_STATE: &str = "trace_state";
    pub const FLAGS: &str = "flags";
    pub const NAME: &str = "name";
    pub const KIND: &str = "kind";
    pub const STATUS_CODE: &str = "status_code";
    pub const STATUS_MESSAGE: &str = "status_message";
    pub const START_TIME: &str = "start_time_unix_nano";
    pub const DURATION: &str = "duration_nano";
    pub const DROPPED_ATTRIBUTES: &str = "dropped_attributes_count";
    pub const DROPPED_EVENTS: &str = "dropped_events_count";
    pub const DROPPED_LINKS: &str = "dropped_links_count";
    pub const NESTED_SET_LEFT: &str = "nested_set_left";
    pub const NESTED_SET_RIGHT: &str = "nested_set_right";
    pub const NESTED_SET_PARENT: &str = "nested_set_parent";
    pub const TRACE_ROOT_SERVICE: &str = "trace_root_service";
    pub const TRACE_ROOT_NAME: &str = "trace_root_name";
    pub const TRACE_START: &str = "trace_start_unix_nano";
    pub const TRACE_DURATION: &str = "trace_duration_nano";
    pub const SERVICE_NAME: &str = "service_name";
    pub const RESOURCE_DROPPED_ATTRIBUTES: &str = "resource_dropped_attributes_count";
    pub const RESOURCE_SCHEMA_URL: &str = "resource_schema_url";
    pub const RESOURCE_ENTITY_REFS: &str = "resource_entity_refs";
    pub const SCOPE_NAME: &str = "scope_name";
    pub const SCOPE_VERSION: &str = "scope_version";
    pub const SCOPE_DROPPED_ATTRIBUTES: &str = "scope_dropped_attributes_count";
    pub const SCOPE_SCHEMA_URL: &str = "scope_schema_url";
    pub const EVENTS: &str = "events";
    pub const LINKS: &str = "links";
}

/// Where an attribute lives, named as TraceQL names the scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttrScope {
    /// `resource.` attributes.
    Resource,
    /// `span.` attributes.
    Span,
    /// `instrumentation.` (OTLP instrumentation scope) attributes.
    Instrumentation,
}

impl AttrScope {
    /// All scopes that have span-row attribute columns.
    pub const ALL: [AttrScope; 3] = [
        AttrScope::Resource,
        AttrScope::Span,
        AttrScope::Instrumentation,
    ];

    /// The TraceQL prefix (`span`, `resource`, `instrumentation`).
    pub fn name(self) -> &'static str {
        match self {
            AttrScope::Resource => "resource",
            AttrScope::Span => "span",
            AttrScope::Instrumentation => "instrumentation",
        }
    }

    /// Prefix of this scope's overflow map columns (`span_attrs_str`, …).
    pub fn overflow_prefix(self) -> String {
        format!("{}_", self.name())
    }
}

/// Scalar type of a hot attribute column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HotType {
    /// UTF-8 string.
    String,
    /// 64-bit signed integer.
    Int,
    /// 64-bit float.
    Float,
    /// Boolean.
    Bool,
}

impl HotType {
    /// The Arrow type of the column.
    pub fn data_type(self) -> DataType {
        match self {
            HotType::String => DataType::Utf8,
            HotType::Int => DataType::Int64,
            HotType::Float => DataType::Float64,
            HotType::Bool => DataType::Boolean,
        }
    }
}

/// An attribute promoted to a typed column of its own (`span.http.route`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HotColumn {
    /// Scope of the attribute.
    pub scope: AttrScope,
    /// Attribute key, e.g. `http.route`.
    pub key: String,
    /// Type of the values kept in the column; other types stay in the overflow maps.
    #[serde(rename = "type")]
    pub ty: HotType,
}

impl HotColumn {
    /// The column name, as TraceQL spells the attribute: `span.http.route`.
    pub fn column_name(&self) -> String {
        format!("{}.{}", self.scope.name(), self.key)
    }
}

/// Builds the Arrow value type of one overflow map.
pub type ValueType = fn() -> DataType;

/// The five typed overflow maps every attribute set has, in schema order.
pub const OVERFLOW_KINDS: [(&str, ValueType); 5] = [
    ("attrs_str", || DataType::Utf8),
    ("attrs_int", || DataType::Int64),
    ("attrs_float", || DataType::Float64),
    ("attrs_bool", || DataType::Boolean),
    // Arrays, kvlists, bytes and empty values: the OTLP `AnyValue`, protobuf-encoded.
    ("attrs_other", || DataType::Binary),
];

/// `Map<Utf8, value>` as Arrow's `MapBuilder` produces it.
pub fn map_type(value: DataType) -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "entries",
            DataType::Struct(Fields::from(vec![
                Field::new("keys", DataType::Utf8, false),
                Field::new("values", value, true),
            ])),
            false,
        )),
        false,
    )
}

/// The overflow map fields of one attribute set, names prefixed with `prefix`.
pub fn overflow_fields(prefix: &str) -> Vec<Field> {
    OVERFLOW_KINDS
        .iter()
        .map(|(name, ty)| Field::new(format!("{prefix}{name}"), map_type(ty()), false))
        .collect()
}

fn event_fields() -> Fields {
    let mut f = vec![
        Field::new("time_since_start_nano", DataType::UInt64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("dropped_attributes_count", DataType::UInt32, false),
    ];
    f.extend(overflow_fields(""));
    Fields::from(f)
}

fn link_fields() -> Fields {
    let mut f = vec![
        Field::new("trace_id", DataType::Binary, false),
        Field::new("span_id", DataType::Binary, false),
        Field::new("trace_state", DataType::Utf8, false),
        Field::new("flags", DataType::UInt32, false),
        Field::new("dropped_attributes_count", DataType::UInt32, false),
    ];
    f.extend(overflow_fields(""));
    Fields::from(f)
}

/// Struct type of one element of the `events` list.
pub fn event_struct_type() -> DataType {
    DataType::Struct(event_fields())
}

/// Struct type of one element of the `links` list.
pub fn link_struct_type() -> DataType {
    DataType::Struct(link_fields())
}

/// The list element field used by `events` and `links`.
pub fn list_item(ty: DataType) -> Arc<Field> {
    Arc::new(Field::new("item", ty, true))
}

/// The schema of a block (or head batch) with the given hot columns.
pub fn span_schema(hot: &[HotColumn]) -> SchemaRef {
    use DataType::*;
    let mut fields = vec![
        Field::new(col::TRACE_ID, FixedSizeBinary(16), false),
        Field::new(col::SPAN_ID, FixedSizeBinary(8), false),
        Field::new(col::PARENT_SPAN_ID, FixedSizeBinary(8), true),
        Field::new(col::TRACE_STATE, Utf8, false),
        Field::new(col::FLAGS, UInt32, false),
        Field::new(col::NAME, Utf8, false),
        Field::new(col::KIND, Int32, false),
        Field::new(col::STATUS_CODE, Int32, false),
        Field::new(col::STATUS_MESSAGE, Utf8, false),
        Field::new(col::START_TIME, UInt64, false),
        Field::new(col::DURATION, UInt64, false),
        Field::new(col::DROPPED_ATTRIBUTES, UInt32, false),
        Field::new(col::DROPPED_EVENTS, UInt32, false),
        Field::new(col::DROPPED_LINKS, UInt32, false),
        Field::new(col::NESTED_SET_LEFT, Int32, false),
        Field::new(col::NESTED_SET_RIGHT, Int32, false),
        Field::new(col::NESTED_SET_PARENT, Int32, false),
        Field::new(col::TRACE_ROOT_SERVICE, Utf8, false),
        Field::new(col::TRACE_ROOT_NAME, Utf8, false),
        Field::new(col::TRACE_START, UInt64, false),
        Field::new(col::TRACE_DURATION, UInt64, false),
        Field::new(col::SERVICE_NAME, Utf8, true),
        Field::new(col::RESOURCE_DROPPED_ATTRIBUTES, UInt32, false),
        Field::new(col::RESOURCE_SCHEMA_URL, Utf8, false),
        Field::new(col::RESOURCE_ENTITY_REFS, Binary, true),
        Field::new(col::SCOPE_NAME, Utf8, false),
        Field::new(col::SCOPE_VERSION, Utf8, false),
        Field::new(col::SCOPE_DROPPED_ATTRIBUTES, UInt32, false),
        Field::new(col::SCOPE_SCHEMA_URL, Utf8, false),
    ];
    for h in hot {
        fields.push(Field::new(h.column_name(), h.ty.data_type(), true));
    }
    for scope in AttrScope::ALL {
        fields.extend(overflow_fields(&scope.overflow_prefix()));
    }
    fields.push(Field::new(
        col::EVENTS,
        List(list_item(event_struct_type())),
        false,
    ));
    fields.push(Field::new(
        col::LINKS,
        List(list_item(link_struct_type())),
        false,
    ));
    Arc::new(Schema::new(fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hot_columns_are_named_as_traceql_names_them() {
        let h = HotColumn {
            scope: AttrScope::Span,
            key: "http.route".into(),
            ty: HotType::String,
        };
        let schema = span_schema(std::slice::from_ref(&h));
        let f = schema.field_with_name("span.http.route").unwrap();
        assert_eq!(f.data_type(), &DataType::Utf8);
        assert!(f.is_nullable());
        assert!(schema.field_with_name("resource_attrs_other").is_ok());
        assert!(schema.field_with_name("instrumentation_attrs_int").is_ok());
    }
}
