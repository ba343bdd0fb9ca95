//! Arrow Flight SQL with a real client: ADBC's Flight SQL driver (pip
//! `adbc-driver-flightsql`, installed by `.ci/run`) runs queries against a running server and
//! gets the rows `POST /api/sql` gives; a tenant sees only its spans; a refused statement is
//! the driver's error with the server's message. Fails under `CI=true` without the driver.

use allegro_tests::{TestServer, config_for, one_span_trace, python_with, run_python};
use serde_json::Value;

const Q: &str =
    "SELECT name, kind, status, span_attr('http.route') AS route FROM spans ORDER BY name";

#[test]
fn adbc_gets_the_rows_the_http_door_gives() {
    let Some(python) = python_with(&["adbc_driver_flightsql", "pyarrow"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config_for(dir.path());
    cfg.multitenancy_enabled = true;
    let srv = TestServer::start(cfg);
    for (tenant, id) in [("acme", 1), ("acme", 2), ("umbrella", 3)] {
        assert_eq!(srv.export(Some(tenant), one_span_trace(id)).status, 200);
    }
    let uri = format!("grpc://{}", srv.addrs.flight_sql.expect("Flight SQL is on"));
    let out = run_python(
        &python,
        "flight_sql_client.py",
        &[
            uri.as_str(),
            "acme",
            Q,
            "SELECT count(*) AS n FROM traces",
            "DROP TABLE spans",
        ],
    );
    let answers: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 3, "{out}");

    // The same rows as the HTTP door's JSON.
    let a = srv.post(
        &srv.base,
        "/api/sql",
        &[("X-Scope-OrgID", "acme")],
        Q.as_bytes(),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    let http: Value = serde_json::from_slice(&a.body).unwrap();
    let http_rows: Vec<Vec<Value>> = http["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            ["name", "kind", "status", "route"]
                .iter()
                .map(|k| r[*k].clone())
                .collect()
        })
        .collect();
    assert_eq!(
        answers[0]["columns"],
        serde_json::json!(["name", "kind", "status", "route"])
    );
    assert_eq!(answers[0]["rows"], serde_json::json!(http_rows), "{out}");
    assert_eq!(http_rows.len(), 2, "acme's two spans only");
    assert_eq!(answers[1]["rows"], serde_json::json!([[2]]), "{out}");
    let e = answers[2]["error"].as_str().unwrap_or_default();
    assert!(e.contains("read-only"), "{out}");

    // The other tenant sees its own span.
    let out = run_python(
        &python,
        "flight_sql_client.py",
        &[uri.as_str(), "umbrella", Q],
    );
    let v: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(v["rows"][0][0], "op-3", "{out}");
    assert_eq!(v["rows"].as_array().unwrap().len(), 1, "{out}");
}
