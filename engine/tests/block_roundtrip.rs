//! Writing a block and reading traces back is lossless for every OTLP field, and lookups prune.

use std::sync::Arc;

use allegro_engine::block::writer::{BlockWriteOptions, encode_block};
use allegro_engine::catalog::{Catalog, CatalogConfig};
use allegro_engine::convert::flatten::flatten;
use allegro_engine::convert::normalize::normalize;
use allegro_engine::hot::HotPolicy;
use allegro_engine::ids::TraceId;
use allegro_engine::otlp::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
};
use allegro_engine::otlp::resource::v1::Resource;
use allegro_engine::otlp::trace::v1::span::{Event, Link};
use allegro_engine::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use allegro_engine::schema::{AttrScope, HotColumn, HotType};
use object_store::ObjectStore;
use object_store::memory::InMemory;

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}

/// Every kind of value OTLP can carry, in every place it can carry it.
fn every_field(trace: u8) -> Vec<ResourceSpans> {
    let all_values = vec![
        kv("str", s("x")),
        kv("int", Value::IntValue(i64::MIN)),
        kv("float", Value::DoubleValue(-0.5)),
        kv("nan", Value::DoubleValue(f64::INFINITY)),
        kv("bool", Value::BoolValue(true)),
        kv("bytes", Value::BytesValue(vec![0, 1, 255])),
        kv(
            "arr",
            Value::ArrayValue(ArrayValue {
                values: vec![
                    AnyValue {
                        value: Some(s("a")),
                    },
                    AnyValue {
                        value: Some(Value::IntValue(2)),
                    },
                ],
            }),
        ),
        kv(
            "kv",
            Value::KvlistValue(KeyValueList {
                values: vec![kv("inner", Value::BoolValue(false))],
            }),
        ),
        KeyValue {
            key: "empty".into(),
            value: Some(AnyValue { value: None }),
            ..Default::default()
        },
        KeyValue {
            key: "none".into(),
            value: None,
            ..Default::default()
        },
        // Mixed types under one key across spans: the hot column keeps strings, ints overflow.
        kv(
            "http.route",
            if trace.is_multiple_of(2) {
                s("/a")
            } else {
                Value::IntValue(7)
            },
        ),
    ];
    let tid = vec![trace; 16];
    let root = Span {
        trace_id: tid.clone(),
        span_id: vec![1; 8],
        parent_span_id: vec![],
        trace_state: "k=v".into(),
        flags: 0x301,
        name: "root".into(),
        kind: 2,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_900_000_000,
        attributes: all_values.clone(),
        dropped_attributes_count: 3,
        events: vec![
            Event {
                time_unix_nano: 1_700_000_000_100_000_000,
                name: "exception".into(),
                attributes: all_values.clone(),
                dropped_attributes_count: 1,
            },
            Event {
                time_unix_nano: 1_600_000_000_000_000_000,
                name: "before start".into(),
                attributes: vec![],
                dropped_attributes_count: 0,
            },
        ],
        dropped_events_count: 4,
        links: vec![Link {
            trace_id: vec![9; 16],
            span_id: vec![8; 8],
            trace_state: "a=b".into(),
            attributes: all_values.clone(),
            dropped_attributes_count: 2,
            flags: 1,
        }],
        dropped_links_count: 5,
        status: Some(Status {
            message: "boom".into(),
            code: 2,
        }),
    };
    let child = Span {
        trace_id: tid,
        span_id: vec![2; 8],
        parent_span_id: vec![1; 8],
        name: "child".into(),
        kind: 3,
        start_time_unix_nano: 1_700_000_000_200_000_000,
        // Ends before it starts: must still round-trip exactly.
        end_time_unix_nano: 1_700_000_000_100_000_000,
        status: Some(Status::default()),
        ..Default::default()
    };
    vec![
        ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", s("api")),
                    kv("service.name", s("dup")),
                    kv("k8s.pod.name", s("api-1")),
                    kv("service.version", Value::IntValue(3)),
                ],
                dropped_attributes_count: 6,
                entity_refs: vec![EntityRef {
                    schema_url: "u".into(),
                    r#type: "service".into(),
                    id_keys: vec!["service.name".into()],
                    description_keys: vec![],
                }],
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "lib".into(),
                    version: "1.2".into(),
                    attributes: all_values.clone(),
                    dropped_attributes_count: 7,
                }),
                spans: vec![root],
                schema_url: "scope-schema".into(),
            }],
            schema_url: "res-schema".into(),
        },
        ResourceSpans {
            // No service.name at all, and no scope message.
            resource: Some(Resource {
                attributes: vec![kv("host.name", s("h"))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: None,
                spans: vec![child],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        },
    ]
}

fn catalog() -> Catalog {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    Catalog::new(store, CatalogConfig::default())
}

#[tokio::test]
async fn every_otlp_field_survives_a_block_round_trip() {
    let input: Vec<ResourceSpans> = (1..=4u8).flat_map(every_field).collect();
    let (spans, rejected) = flatten(input.clone());
    assert!(rejected.is_empty());
    let opts = BlockWriteOptions {
        hot: HotPolicy {
            configured: vec![HotColumn {
                scope: AttrScope::Span,
                key: "http.route".into(),
                ty: HotType::String,
            }],
            ..Default::default()
        },
        ..Default::default()
    };
    let block = encode_block("t1", spans, &opts).unwrap();
    assert_eq!(block.meta.total_spans, 8);
    assert_eq!(block.meta.total_objects, 4);
    let names: Vec<String> = block
        .meta
        .hot_columns
        .iter()
        .map(HotColumn::column_name)
        .collect();
    assert!(names.contains(&"span.http.route".to_string()), "{names:?}");
    assert!(
        names.contains(&"resource.k8s.pod.name".to_string()),
        "{names:?}"
    );
    let cat = catalog();
    cat.add_block(&block).await.unwrap();
    for t in 1..=4u8 {
        let got = cat.find_trace("t1", &TraceId([t; 16]), None).await.unwrap();
        assert_eq!(got.resource_spans, normalize(every_field(t)), "trace {t}");
        assert_eq!(got.blocks_read, 1);
    }
    assert!(
        cat.find_trace("t1", &TraceId([5; 16]), None)
            .await
            .unwrap()
            .resource_spans
            .is_empty()
    );
    assert!(
        cat.find_trace("other", &TraceId([1; 16]), None)
            .await
            .unwrap()
            .resource_spans
            .is_empty()
    );
}

#[tokio::test]
async fn every_compression_reads_back() {
    use allegro_engine::block::writer::BlockCompression;
    for c in ["lz4", "zstd", "zstd:9", "snappy", "none"] {
        let opts = BlockWriteOptions {
            compression: BlockCompression::parse(c).unwrap(),
            ..Default::default()
        };
        let block = encode_block("t", flatten(every_field(3)).0, &opts).unwrap();
        let cat = catalog();
        cat.add_block(&block).await.unwrap();
        let got = cat.find_trace("t", &TraceId([3; 16]), None).await.unwrap();
        assert_eq!(got.resource_spans, normalize(every_field(3)), "{c}");
    }
    assert!(BlockCompression::parse("zstd:40").is_err());
    assert!(BlockCompression::parse("brotli").is_err());
}

#[tokio::test]
async fn nested_set_and_trace_level_columns_are_stored() {
    let (spans, _) = flatten(every_field(1));
    let block = encode_block("t", spans, &BlockWriteOptions::default()).unwrap();
    let cat = catalog();
    cat.add_block(&block).await.unwrap();
    let batches = allegro_engine::block::reader::read_all(cat.store(), &block.meta)
        .await
        .unwrap();
    // Two row groups: the child, then the root (roots apart; each part's group closes at the
    // end, the rest first).
    assert_eq!(batches.len(), 2);
    let b = &arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    let col = |n: &str| b.column_by_name(n).unwrap().clone();
    let left = col("nested_set_left");
    let left = left
        .as_any()
        .downcast_ref::<arrow::array::Int32Array>()
        .unwrap();
    let right = col("nested_set_right");
    let right = right
        .as_any()
        .downcast_ref::<arrow::array::Int32Array>()
        .unwrap();
    let parent = col("nested_set_parent");
    let parent = parent
        .as_any()
        .downcast_ref::<arrow::array::Int32Array>()
        .unwrap();
    // child (2..3, parent 1), root (1..4, parent -1).
    assert_eq!((left.value(0), right.value(0), parent.value(0)), (2, 3, 1));
    assert_eq!((left.value(1), right.value(1), parent.value(1)), (1, 4, -1));
    let dur = col("trace_duration_nano");
    let dur = dur
        .as_any()
        .downcast_ref::<arrow::array::UInt64Array>()
        .unwrap();
    assert_eq!(dur.value(1), 900_000_000);
    let root = col("trace_root_service");
    assert_eq!(
        root.as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap()
            .value(1),
        "api"
    );
}

#[tokio::test]
async fn lookups_prune_blocks_and_merge_a_trace_split_across_blocks() {
    let cat = catalog();
    // Trace 1 in both blocks (one span each, plus an exact duplicate), trace 2 only in the first.
    let all = every_field(1);
    let mut first = all.clone();
    first[1].scope_spans[0].spans.clear();
    first.extend(every_field(2));
    let b1 = encode_block("t", flatten(first).0, &BlockWriteOptions::default()).unwrap();
    let mut second = all.clone();
    second.extend(every_field(1)); // exact duplicates of both spans
    let b2 = encode_block("t", flatten(second).0, &BlockWriteOptions::default()).unwrap();
    cat.add_block(&b1).await.unwrap();
    cat.add_block(&b2).await.unwrap();
    let got = cat.find_trace("t", &TraceId([1; 16]), None).await.unwrap();
    assert_eq!(got.resource_spans, normalize(every_field(1)));
    assert_eq!((got.total_blocks, got.blocks_read), (2, 2));
    // Trace 2 is outside the second block's min/max ID range: only one block is read.
    let got = cat.find_trace("t", &TraceId([2; 16]), None).await.unwrap();
    assert_eq!(got.blocks_read, 1);
    // Each lookup reports what it read itself: warm repeats read the same pages.
    let a = cat
        .find_trace("t", &TraceId([1; 16]), None)
        .await
        .unwrap()
        .inspected_bytes;
    let b = cat
        .find_trace("t", &TraceId([1; 16]), None)
        .await
        .unwrap()
        .inspected_bytes;
    assert!(a > 0);
    assert_eq!(a, b);
    // A time range that misses both blocks reads nothing at all.
    let (_, before) = cat.read_counters();
    let got = cat
        .find_trace("t", &TraceId([1; 16]), Some((0, 1_000)))
        .await
        .unwrap();
    assert!(got.resource_spans.is_empty());
    assert_eq!(cat.read_counters().1, before);
}

#[tokio::test]
async fn malformed_spans_are_set_aside_with_reasons() {
    let mut rs = every_field(1);
    rs[0].scope_spans[0].spans[0].trace_id = vec![1; 5];
    rs[1].scope_spans[0].spans[0].parent_span_id = vec![1; 3];
    let (ok, rejected) = flatten(rs);
    assert!(ok.is_empty());
    assert_eq!(rejected.len(), 2);
    assert!(
        rejected[0]
            .reason
            .contains("trace ID must be 16 bytes, got 5"),
        "{:?}",
        rejected[0]
    );
    assert!(
        rejected[1]
            .reason
            .contains("parent span ID must be 8 bytes, got 3"),
        "{:?}",
        rejected[1]
    );
}

#[tokio::test]
async fn a_block_of_an_unknown_format_is_skipped_and_the_others_stay_listed() {
    use object_store::path::Path;
    use object_store::{PutOptions, PutPayload};
    let cat = catalog();
    let block = encode_block(
        "t",
        flatten(every_field(1)).0,
        &BlockWriteOptions::default(),
    )
    .unwrap();
    cat.add_block(&block).await.unwrap();
    // A block written by a future version, and an incomplete one (no meta.json yet).
    let future = br#"{"format":"allegro-9","blockID":"7a1c0f3e-0000-4000-8000-000000000000"}"#;
    let put = |p: &str, b: &'static [u8]| {
        let store = cat.store().clone();
        let path = Path::from(p);
        async move {
            store
                .put_opts(&path, PutPayload::from_static(b), PutOptions::default())
                .await
                .unwrap()
        }
    };
    put("t/7a1c0f3e-0000-4000-8000-000000000000/meta.json", future).await;
    put(
        "t/11111111-0000-4000-8000-000000000000/data.parquet",
        b"partial",
    )
    .await;
    cat.clear_caches();
    let blocks = cat.blocks("t").await.unwrap();
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].block_id, block.meta.block_id);
    assert_eq!(
        cat.find_trace("t", &TraceId([1; 16]), None)
            .await
            .unwrap()
            .resource_spans,
        normalize(every_field(1))
    );
}
