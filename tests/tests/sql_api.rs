//! `POST /api/sql` as a client uses it: the live head's spans are in `spans` at once, answers
//! come as JSON, CSV or an Arrow IPC stream by `Accept`, a tenant sees only its own spans, and
//! mistakes get a 400 naming the problem.

use allegro_tests::{TestServer, config_for, one_span_trace};

const SQL: &str = "SELECT name, service_name, kind, status FROM spans ORDER BY name";

#[test]
fn sql_over_http_in_three_encodings_and_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config_for(dir.path());
    cfg.multitenancy_enabled = true;
    let srv = TestServer::start(cfg);
    for (tenant, id) in [("acme", 1), ("acme", 2), ("umbrella", 3)] {
        assert_eq!(srv.export(Some(tenant), one_span_trace(id)).status, 200);
    }
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
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
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
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
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
