//! Tag values answered from what `meta.json` records equal tag values read from the blocks'
//! Parquet, for every scalar type, the service-name column and its overflow, span names,
//! arrays, keys a block lacks, and keys with too many values to record; and the recorded ones
//! read nothing.

use std::path::Path;

use allegro_engine::query::QueryEngine;
use allegro_engine::query::tags::{TagValue, parse_tag};
use allegro_tests::engines::{catalog_at, encode};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

const TENANT: &str = "t";

fn kv(key: &str, v: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}

/// One trace of one span per attribute set, under `resource`.
fn traces(resource: Vec<KeyValue>, spans: Vec<(&str, Vec<KeyValue>)>, first: u8) -> ResourceSpans {
    let spans = spans
        .into_iter()
        .enumerate()
        .map(|(i, (name, attributes))| {
            let n = first as u64 * 10_000 + i as u64;
            let mut trace_id = [0u8; 16];
            trace_id[..8].copy_from_slice(&n.to_be_bytes());
            trace_id[15] = 1;
            Span {
                trace_id: trace_id.to_vec(),
                span_id: (n + 1).to_be_bytes().to_vec(),
                name: name.into(),
                start_time_unix_nano: 1_000_000_000 + n,
                end_time_unix_nano: 2_000_000_000 + n,
                attributes,
                ..Default::default()
            }
        })
        .collect();
    ResourceSpans {
        resource: Some(Resource {
            attributes: resource,
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "lib".into(),
                attributes: vec![kv("lib.flag", Value::BoolValue(true))],
                ..Default::default()
            }),
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Two blocks: every scalar type, a `service.name` held as a string and (in the overflow) an
/// int, arrays, a non-finite float, and a key with more values than a block records.
fn blocks() -> Vec<Vec<ResourceSpans>> {
    let array = Value::ArrayValue(ArrayValue {
        values: vec![
            AnyValue {
                value: Some(s("x")),
            },
            AnyValue {
                value: Some(Value::IntValue(7)),
            },
        ],
    });
    let first = vec![
        traces(
            vec![
                kv("service.name", s("api")),
                kv("host.cores", Value::IntValue(4)),
            ],
            vec![
                (
                    "GET /",
                    vec![
                        kv("http.route", s("/")),
                        kv("ratio", Value::DoubleValue(0.1)),
                    ],
                ),
                (
                    "GET /a",
                    vec![kv("ratio", Value::DoubleValue(1e21)), kv("tags", array)],
                ),
                (
                    "",
                    vec![
                        kv("retries", Value::IntValue(-3)),
                        kv("cached", Value::BoolValue(false)),
                    ],
                ),
            ],
            1,
        ),
        traces(
            vec![
                kv("service.name", s("db")),
                kv("service.name", Value::IntValue(9)),
            ],
            vec![(
                "query",
                vec![
                    kv("ratio", Value::DoubleValue(-0.0)),
                    kv("nan", Value::DoubleValue(f64::NAN)),
                ],
            )],
            2,
        ),
    ];
    let wide = (0..1500)
        .map(|i| {
            (
                "op",
                vec![
                    kv("request.id", s(&format!("r{i}"))),
                    kv("retries", Value::IntValue(i % 3)),
                ],
            )
        })
        .collect();
    let second = vec![traces(
        vec![kv("service.name", s("api")), kv("region", s("eu"))],
        wide,
        3,
    )];
    vec![first, second]
}

/// An engine over the blocks under `dir`, their recorded values dropped unless `recorded`.
async fn engine(dir: &Path, recorded: bool) -> QueryEngine {
    let catalog = catalog_at(dir);
    for rs in blocks() {
        let mut block = encode(TENANT, rs);
        assert!(block.meta.tag_values.is_some(), "values recorded at write");
        if !recorded {
            block.meta.tag_values = None;
        }
        catalog.add_block(&block).await.expect("add block");
    }
    QueryEngine::new(catalog, None).expect("engine")
}

async fn values(e: &QueryEngine, tag: &str) -> (Vec<TagValue>, u64) {
    let field = parse_tag(tag, false).expect("tag");
    let (v, m) = e
        .tag_values(TENANT, &field, None, None, 5000)
        .await
        .expect("tag values");
    (v, m.inspected_bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_tag_values_equal_values_read_from_blocks() {
    let dir = tempfile::tempdir().expect("dir");
    let recorded = engine(&dir.path().join("recorded"), true).await;
    let read = engine(&dir.path().join("read"), false).await;
    // (tag, answered from meta.json alone)
    let tags = [
        ("resource.service.name", true),
        ("resource.host.cores", true),
        ("resource.region", true),
        ("instrumentation.lib.flag", true),
        ("span.http.route", true),
        ("span.ratio", true),
        ("span.retries", true),
        ("span.cached", true),
        // meta.json records scalars only: a key that holds arrays is read.
        ("span.tags", false),
        ("span.absent", true),
        ("name", true),
        ("span.nan", false),
        ("span.request.id", false),
    ];
    for (tag, from_meta) in tags {
        let (got, bytes) = values(&recorded, tag).await;
        let (want, read_bytes) = values(&read, tag).await;
        assert_eq!(got, want, "{tag}");
        assert_eq!(bytes == 0, from_meta, "{tag}: {bytes} bytes read");
        assert!(
            read_bytes > 0 || want.is_empty(),
            "{tag}: read from the blocks"
        );
    }
    // Hand-checked answers.
    let text = |v: Vec<TagValue>| -> Vec<String> {
        v.into_iter()
            .map(|t| format!("{}:{}", t.kind, t.value))
            .collect()
    };
    assert_eq!(
        text(values(&recorded, "resource.service.name").await.0),
        ["int:9", "string:api", "string:db"]
    );
    assert_eq!(
        text(values(&recorded, "span.retries").await.0),
        ["int:-3", "int:0", "int:1", "int:2"]
    );
    assert_eq!(
        text(values(&recorded, "name").await.0),
        [
            "string:",
            "string:GET /",
            "string:GET /a",
            "string:op",
            "string:query"
        ]
    );
    assert_eq!(values(&recorded, "span.request.id").await.0.len(), 1500);
    // Each element of an array, typed, as Tempo lists them.
    assert_eq!(
        text(values(&recorded, "span.tags").await.0),
        ["int:7", "string:x"]
    );
}

/// Event and link attributes and event names list every event's (link's) value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_values_of_events_list_every_event() {
    let path = allegro_tests::workspace_dir().join("tests/traceql/data/events.traces");
    let ds = allegro_tests::dataset::parse(&std::fs::read_to_string(path).expect("dataset"))
        .expect("parse");
    let dir = tempfile::tempdir().expect("dir");
    for (mode, e) in [
        (
            "blocks",
            allegro_tests::engines::over_blocks(&ds, &dir.path().join("b")).await,
        ),
        (
            "head",
            allegro_tests::engines::over_head(&ds, &dir.path().join("h")),
        ),
    ] {
        let text = |v: Vec<TagValue>| -> Vec<String> {
            v.into_iter()
                .map(|t| format!("{}:{}", t.kind, t.value))
                .collect()
        };
        let get = |tag: &'static str| {
            let e = e.clone();
            async move {
                let field = parse_tag(tag, false).expect("tag");
                let (v, _) = e
                    .tag_values(allegro_tests::engines::TENANT, &field, None, None, 100)
                    .await
                    .expect("tag values");
                text(v)
            }
        };
        assert_eq!(
            get("event.exception.type").await,
            ["string:IOError", "string:Timeout"],
            "{mode}"
        );
        assert_eq!(get("event.attempt").await, ["int:2"], "{mode}");
        assert_eq!(
            get("event:name").await,
            ["string:exception", "string:log", "string:retry"],
            "{mode}"
        );
        assert_eq!(get("span.codes").await, ["int:200", "int:404"], "{mode}");
    }
}

/// `kind` lists every kind spans have, `unspecified` included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kind_values_include_unspecified() {
    let ds = allegro_tests::dataset::parse(
        "trace k1\n  A service=s kind=unspecified\n    B service=s kind=server\n",
    )
    .expect("parse");
    let dir = tempfile::tempdir().expect("dir");
    for e in [
        allegro_tests::engines::over_blocks(&ds, &dir.path().join("b")).await,
        allegro_tests::engines::over_head(&ds, &dir.path().join("h")),
    ] {
        let field = parse_tag("kind", true).expect("tag");
        let (v, _) = e
            .tag_values(allegro_tests::engines::TENANT, &field, None, None, 100)
            .await
            .expect("tag values");
        let got: Vec<String> = v
            .into_iter()
            .map(|t| format!("{}:{}", t.kind, t.value))
            .collect();
        assert_eq!(got, ["keyword:server", "keyword:unspecified"]);
    }
}
