//! The generated dataset has the properties the issue asks for, and is deterministic.

use std::collections::{HashMap, HashSet};

use allegro_datasets::{GenOptions, generate_all, small_fixture_options};
use allegro_engine::otlp::common::v1::any_value::Value;
use allegro_engine::otlp::trace::v1::{ResourceSpans, Span};

fn opts(spans: u64) -> GenOptions {
    GenOptions {
        seed: 7,
        spans,
        start_unix_nano: 1_767_225_600_000_000_000,
        duration_nano: 3_600_000_000_000,
    }
}

fn spans(t: &[ResourceSpans]) -> impl Iterator<Item = (&ResourceSpans, &Span)> {
    t.iter().flat_map(|r| {
        r.scope_spans
            .iter()
            .flat_map(move |s| s.spans.iter().map(move |sp| (r, sp)))
    })
}

fn str_attr<'a>(
    attrs: &'a [allegro_engine::otlp::common::v1::KeyValue],
    key: &str,
) -> Option<&'a str> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

fn depth(t: &[ResourceSpans]) -> usize {
    let parent: HashMap<&[u8], &[u8]> = spans(t)
        .map(|(_, s)| (s.span_id.as_slice(), s.parent_span_id.as_slice()))
        .collect();
    parent
        .keys()
        .map(|id| {
            let (mut d, mut cur) = (1, *id);
            while let Some(p) = parent.get(cur).filter(|p| !p.is_empty()) {
                d += 1;
                cur = p;
            }
            d
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn dataset_looks_like_a_real_system() {
    let traces = generate_all(opts(60_000));
    let total: usize = traces.iter().map(|t| spans(t).count()).sum();
    assert!((60_000..61_000).contains(&total), "{total} spans");
    let mut services = HashSet::new();
    let mut kinds = HashSet::new();
    let mut db_systems = HashSet::new();
    let (mut errors, mut exceptions, mut links, mut statements) = (0, 0, 0, 0);
    let mut resource_keys = HashSet::new();
    let mut users = HashSet::new();
    let mut durations = Vec::new();
    for t in &traces {
        for (r, s) in spans(t) {
            let res = r.resource.as_ref().unwrap();
            services.insert(
                str_attr(&res.attributes, "service.name")
                    .unwrap()
                    .to_string(),
            );
            resource_keys.extend(res.attributes.iter().map(|kv| kv.key.clone()));
            kinds.insert(s.kind);
            if let Some(d) = str_attr(&s.attributes, "db.system") {
                db_systems.insert(d.to_string());
                statements += usize::from(str_attr(&s.attributes, "db.statement").is_some());
            }
            if s.status.as_ref().is_some_and(|st| st.code == 2) {
                errors += 1;
            }
            for e in &s.events {
                if e.name == "exception" {
                    for k in [
                        "exception.type",
                        "exception.message",
                        "exception.stacktrace",
                    ] {
                        assert!(
                            str_attr(&e.attributes, k).is_some(),
                            "exception event lacks {k}"
                        );
                    }
                    exceptions += 1;
                }
            }
            links += s.links.len();
            if let Some(u) = str_attr(&s.attributes, "enduser.id") {
                users.insert(u.to_string());
            }
            durations.push(s.end_time_unix_nano - s.start_time_unix_nano);
        }
    }
    assert!(services.len() >= 10, "{services:?}");
    assert_eq!(
        kinds,
        (1..=5).collect::<HashSet<i32>>(),
        "internal, server, client, producer, consumer"
    );
    for d in ["postgresql", "mysql", "redis", "elasticsearch"] {
        assert!(db_systems.contains(d), "{db_systems:?}");
    }
    assert!(statements > 1000);
    assert!(
        errors > 100 && exceptions > 50,
        "errors {errors}, exceptions {exceptions}"
    );
    assert!(links > 10, "links {links}");
    for k in [
        "service.version",
        "deployment.environment",
        "k8s.pod.name",
        "k8s.namespace.name",
        "k8s.cluster.name",
    ] {
        assert!(resource_keys.contains(k), "missing resource attribute {k}");
    }
    assert!(
        users.len() > 1000,
        "user ids are high-cardinality: {}",
        users.len()
    );
    // Long tail: p99.9 far above the median.
    durations.sort_unstable();
    let p50 = durations[durations.len() / 2];
    let p999 = durations[durations.len() * 999 / 1000];
    assert!(p999 > 20 * p50, "p50 {p50} p99.9 {p999}");
    let sizes: Vec<usize> = traces.iter().map(|t| spans(t).count()).collect();
    assert_eq!(*sizes.iter().min().unwrap(), 1);
    assert!(
        *sizes.iter().max().unwrap() >= 200,
        "max trace size {}",
        sizes.iter().max().unwrap()
    );
    assert!(
        traces.iter().any(|t| depth(t) > 20),
        "some trace deeper than 20 levels"
    );
}

#[test]
fn same_seed_same_data_and_times_stay_in_the_window() {
    let o = opts(3_000);
    assert_eq!(generate_all(o.clone()), generate_all(o.clone()));
    let other = generate_all(GenOptions {
        seed: 8,
        ..o.clone()
    });
    assert_ne!(generate_all(o.clone()), other);
    for t in generate_all(o.clone()) {
        for (_, s) in spans(&t) {
            assert!(s.start_time_unix_nano >= o.start_unix_nano);
            assert!(s.start_time_unix_nano < o.start_unix_nano + o.duration_nano + 120_000_000_000);
        }
    }
}

/// The committed fixture is exactly what the generator makes for its options. If the generator
/// changes on purpose, regenerate it:
/// `cargo run -- gen --spans 400 --seed 1 --start 2026-01-01T00:00:00Z --duration 10m
/// --format otlp-json --file-spans 100000 --out /tmp/fx && cp /tmp/fx/traces-00000.json
/// datasets/fixtures/small.otlp.json`
#[test]
fn committed_fixture_matches_the_generator() {
    let path = allegro_datasets::fixtures_dir().join("small.otlp.json");
    let bytes = std::fs::read(&path).unwrap();
    let decoded = allegro_engine::otlp_json::decode_traces_json(&bytes).unwrap();
    let generated: Vec<ResourceSpans> = generate_all(small_fixture_options())
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(decoded, generated);
}
