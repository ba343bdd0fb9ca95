//! Tempo's operational endpoints: `/status/config`, `/status/overrides`, `/api/overrides`,
//! `/status/buildinfo`, `/status/endpoints`.

use allegro_server::config::Config;
use allegro_tests::{TestServer, config_for};

#[test]
fn operators_find_the_effective_config_overrides_build_and_routes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg: Config = config_for(dir.path());
    cfg.multitenancy_enabled = true;
    cfg.overrides.defaults.ingestion.max_traces_per_user = Some(1234);
    let mut team = allegro_server::config::TenantLimits::default();
    team.ingestion.max_traces_per_user = Some(77);
    cfg.overrides.per_tenant.insert("team-a".into(), team);
    let srv = TestServer::start(cfg);

    // The effective config as YAML: what was set and the defaults around it.
    let a = srv.get("/status/config", &[]);
    assert_eq!(a.status, 200);
    let y: serde_yaml::Value = serde_yaml::from_str(&a.text()).expect("YAML");
    assert_eq!(y["multitenancy_enabled"], serde_yaml::Value::Bool(true));
    assert_eq!(
        y["overrides"]["defaults"]["ingestion"]["max_traces_per_user"],
        serde_yaml::Value::from(1234)
    );
    assert_eq!(
        y["ingester"]["trace_idle_period"],
        serde_yaml::Value::from("5s"),
        "defaults are filled in"
    );
    let a = srv.get("/status/overrides", &[]);
    let y: serde_yaml::Value = serde_yaml::from_str(&a.text()).expect("YAML");
    assert_eq!(
        y["per_tenant"]["team-a"]["ingestion"]["max_traces_per_user"],
        serde_yaml::Value::from(77)
    );

    // The caller's tenant's overrides, or the defaults for a tenant without its own.
    let own: serde_json::Value = serde_json::from_str(
        &srv.get("/api/overrides", &[("X-Scope-OrgID", "team-a")])
            .text(),
    )
    .unwrap();
    assert_eq!(own["ingestion"]["max_traces_per_user"], 77);
    let other: serde_json::Value = serde_json::from_str(
        &srv.get("/api/overrides", &[("X-Scope-OrgID", "team-b")])
            .text(),
    )
    .unwrap();
    assert_eq!(other["ingestion"]["max_traces_per_user"], 1234);
    assert_eq!(srv.get("/api/overrides", &[]).status, 401);

    let b: serde_json::Value =
        serde_json::from_str(&srv.get("/status/buildinfo", &[]).text()).unwrap();
    assert!(b["version"].as_str().unwrap().contains("+allegro."));
    let e = srv.get("/status/endpoints", &[]).text();
    for route in ["GET /api/search", "GET /status/config", "StreamingQuerier"] {
        assert!(e.contains(route), "{route} missing from {e}");
    }
}
