//! Acceptance with a real client: the OpenTelemetry Python SDK exports over OTLP/gRPC and
//! OTLP/HTTP, and each trace can be fetched by ID within one second of its acknowledgement.
//! Needs `pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-grpc
//! opentelemetry-exporter-otlp-proto-http` (`.ci/run` installs them); fails under `CI=true`
//! when they are missing, skips with a note otherwise.

use allegro_tests::{TestServer, config_for, python_with, run_python};

#[test]
fn python_sdk_exports_are_readable_within_a_second() {
    let Some(python) = python_with(&[
        "opentelemetry.sdk",
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    ]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::start(config_for(dir.path()));
    let stdout = run_python(
        &python,
        "otel_export.py",
        &[
            format!("http://{}", srv.addrs.otlp_grpc.unwrap()),
            srv.otlp_http(),
            srv.base.clone(),
        ],
    );
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 10, "{stdout}");
    for proto in ["grpc", "http"] {
        assert_eq!(rows.iter().filter(|r| r["protocol"] == proto).count(), 5);
    }
    for r in &rows {
        assert_eq!(r["fetched_spans"], 3, "{r}");
        let ms = r["visible_after_ms"].as_f64().unwrap();
        assert!(ms < 1000.0, "visible only after {ms} ms: {r}");
        // The content is what the SDK sent: names, status, event, resource.
        let id = r["trace_id"].as_str().unwrap();
        let a = srv.get(&format!("/api/traces/{id}"), &[]);
        let text = a.text();
        for want in [
            "checkout",
            "charge card",
            "send email",
            "smtp down",
            "authorised",
            "allegro-acceptance",
        ] {
            assert!(text.contains(want), "{want} missing from {text}");
        }
        assert!(text.contains(&format!("python-{}", r["protocol"].as_str().unwrap())));
    }
}
