//! The attributes a search answer shows on its spans: for a field of events (links), the value
//! of the event that matched, as Tempo shows it, not the first event's.

use allegro_engine::query::search::SearchRequest;
use allegro_tests::dataset;
use allegro_tests::engines::{TENANT, over_blocks, over_head};

const DATA: &str = r#"trace x1
  A service=shop event=exception event.exception.type="IOError" event=exception event.exception.type="Timeout" event=retry event.attempt=2
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_field_shows_the_value_that_matched() {
    let ds = dataset::parse(DATA).expect("dataset");
    let dir = tempfile::tempdir().expect("dir");
    let cases = [
        (
            r#"{ event.exception.type = "Timeout" }"#,
            "exception.type",
            "Timeout",
        ),
        (
            r#"{ event.exception.type =~ "IO.*" }"#,
            "exception.type",
            "IOError",
        ),
        (r#"{ event:name = "retry" }"#, "event:name", "retry"),
    ];
    for (mode, engine) in [
        ("blocks", over_blocks(&ds, &dir.path().join("b")).await),
        ("head", over_head(&ds, &dir.path().join("h"))),
    ] {
        for (query, key, want) in cases {
            let req = SearchRequest {
                query: query.into(),
                limit: 10,
                spss: 10,
                range: None,
            };
            let resp = engine
                .search(&[TENANT.to_string()], &req)
                .await
                .expect("search");
            let span = &resp.traces[0].span_sets[0].spans[0];
            let shown: Vec<String> = span
                .attributes
                .iter()
                .filter(|kv| kv.key == key)
                .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s) => {
                        Some(s.clone())
                    }
                    _ => None,
                })
                .collect();
            assert_eq!(shown, [want], "{mode}: {query}: {:?}", span.attributes);
        }
    }
}
