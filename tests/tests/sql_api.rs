//! The SQL doors as clients use them. `POST /api/sql`: the live head's spans are in `spans` at
//! once, answers come as JSON, CSV or an Arrow IPC stream by `Accept`, a tenant sees only its
//! own spans, and mistakes get a 400 naming the problem. Arrow Flight SQL: ADBC's Flight SQL
//! driver (pip `adbc-driver-flightsql`, installed by `.ci/run`; the test fails under `CI=true`
//! without it) gets the rows `POST /api/sql` gives, per tenant, and a refused statement as the
//! driver's error with the server's message.

use allegro_tests::{TestServer, config_for, one_span_trace, python_with, run_python};
use serde_json::Value;

const SQL: &str = "SELECT name, service_name, kind, status FROM spans ORDER BY name";

/// A multitenant server whose head holds acme's spans `op-1`, `op-2` and umbrella's `op-3`.
fn server_with_two_tenants(dir: &std::path::Path) -> TestServer {
    let mut cfg = config_for(dir);
    cfg.multitenancy_enabled = true;
    let srv = TestServer::start(cfg);
    for (tenant, id) in [("acme", 1), ("acme", 2), ("umbrella", 3)] {
        assert_eq!(srv.export(Some(tenant), one_span_trace(id)).status, 200);
    }
    srv
}

#[test]
fn sql_over_http_in_three_encodings_and_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server_with_two_tenants(dir.path());
    let post = |tenant: &str, accept: &str, body: &str| {
        srv.post(
            &srv.base,
            "/api/sql",
            &[("X-Scope-OrgID", tenant), ("Accept", accept)],
            body.as_bytes(),
        )
    };

    // JSON: columns with types, rows as objects; only acme's two spans.
    let a = post("acme", "application/json", SQL);
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.content_type, "application/json");
    let v: Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(v["columns"][0]["name"], "name");
    assert_eq!(v["truncated"], false);
    let names: Vec<&str> = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["op-1", "op-2"]);
    assert_eq!(v["rows"][0]["kind"], "unspecified");
    assert_eq!(v["rows"][0]["service_name"], serde_json::Value::Null);

    // CSV, with a header.
    let a = post("umbrella", "text/csv", SQL);
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        a.text(),
        "name,service_name,kind,status\nop-3,,unspecified,unset\n"
    );

    // An Arrow IPC stream that Arrow reads back.
    let a = post("acme", "application/vnd.apache.arrow.stream", SQL);
    assert_eq!(a.status, 200, "{}", a.text());
    let reader = arrow::ipc::reader::StreamReader::try_new(a.body.as_slice(), None).unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 2);

    // JSON request bodies work too; the traces table is there.
    let a = srv.post(
        &srv.base,
        "/api/sql",
        &[
            ("X-Scope-OrgID", "acme"),
            ("Content-Type", "application/json"),
        ],
        br#"{"query": "SELECT count(*) AS n FROM traces"}"#,
    );
    assert_eq!(a.status, 200, "{}", a.text());
    let v: Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(v["rows"][0]["n"], 2);

    // Mistakes: the user's, so 400 with what was wrong; no tenant: 401.
    for (body, says) in [
        ("DROP TABLE spans", "read-only"),
        ("SELECT nope FROM spans", "No field named nope"),
        ("SELEC 1", "SQL syntax"),
        ("", "no SQL query"),
    ] {
        let a = post("acme", "application/json", body);
        assert_eq!(a.status, 400, "{body}: {}", a.text());
        assert!(a.text().contains(says), "{body}: {}", a.text());
    }
    let a = srv.post(&srv.base, "/api/sql", &[], SQL.as_bytes());
    assert_eq!(a.status, 401, "{}", a.text());
}

const Q: &str =
    "SELECT name, kind, status, span_attr('http.route') AS route FROM spans ORDER BY name";

#[test]
fn adbc_gets_the_rows_the_http_door_gives() {
    let Some(python) = python_with(&["adbc_driver_flightsql", "pyarrow"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let srv = server_with_two_tenants(dir.path());
    let uri = format!("grpc://{}", srv.addrs.flight_sql.expect("Flight SQL is on"));
    let prepared = format!("prepared:{Q}");
    let out = run_python(
        &python,
        "flight_sql_client.py",
        &[
            uri.as_str(),
            "acme",
            Q,
            "SELECT count(*) AS n FROM traces",
            "DROP TABLE spans",
            prepared.as_str(),
            "prepared:SELECT nope FROM spans",
        ],
    );
    let answers: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), 6, "{out}");
    // What a tool sees on connecting: the server's name and the four tables.
    assert_eq!(answers[5]["vendor"], "Allegro", "{out}");
    assert_eq!(
        answers[5]["tables"],
        serde_json::json!([
            "allegro.public.events",
            "allegro.public.links",
            "allegro.public.spans",
            "allegro.public.traces"
        ]),
        "{out}"
    );

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
    // A prepared statement (JDBC's way) answers what the plain one does; a bad one fails when
    // prepared, with the planner's message.
    assert_eq!(answers[3]["prepared"], true, "{out}");
    assert_eq!(answers[3]["rows"], answers[0]["rows"], "{out}");
    let e = answers[4]["error"].as_str().unwrap_or_default();
    assert!(e.contains("nope"), "{out}");

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
