//! Configs from real Tempo deployments (`../shared/reference/configs/`) load: keys Allegro
//! has no use for are accepted with one warning that says why, legacy flat overrides are
//! applied where the current layout puts them, and a typo is still an error.

use std::path::PathBuf;
use std::time::Duration;

use allegro_server::config::Config;
use allegro_tests::seaweed::{self, SeaweedFs};
use allegro_tests::{TestServer, config_for};

fn seed(name: &str) -> PathBuf {
    allegro_tests::workspace_dir()
        .join("../shared/reference/configs")
        .join(name)
}

/// The config in `name` and its warnings; every seed must load.
fn load(name: &str) -> (Config, Vec<String>) {
    let c = Config::load(&seed(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let w = c.warnings();
    (c, w)
}

fn has(warnings: &[String], part: &str) -> bool {
    warnings.iter().any(|w| w.contains(part))
}

/// Every seed config's file name.
fn seeds() -> Vec<String> {
    let dir = allegro_tests::workspace_dir().join("../shared/reference/configs");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 5, "{names:?}");
    names
}

#[test]
fn every_seed_config_starts_serve() {
    // The S3 seeds need an S3 server: SeaweedFS stands in for theirs (fails under CI=true
    // when missing, as every object-storage test does).
    let weed = seaweed::binary();
    for name in seeds() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = load(&name).0;
        // Scratch paths and loopback ports instead of the deployment's.
        let t = &mut c.storage.trace;
        t.local.path = dir.path().join("blocks");
        t.wal.path = dir.path().join("wal");
        c.distributor.receivers = config_for(dir.path()).distributor.receivers;
        if let Some(g) = c.metrics_generator.as_mut() {
            g.storage.path = Some(dir.path().join("generator"));
        }
        let _s3 = match c.storage.trace.backend.as_str() {
            "s3" => {
                let Some(bin) = &weed else { continue };
                let s3 = SeaweedFs::start(bin, &dir.path().join("weed"));
                let t = &mut c.storage.trace.s3;
                s3.create_bucket(&t.bucket);
                t.endpoint = s3.endpoint.clone();
                t.region = "us-east-1".into();
                t.access_key = "allegro".into();
                t.secret_key = "allegro".into();
                Some(s3)
            }
            _ => None,
        };
        let multitenant = c.multitenancy_enabled;
        let srv = TestServer::start(c);
        assert_eq!(srv.get("/ready", &[]).status, 200, "{name}");
        // And it answers: a search over the empty store.
        let tenant: &[(&str, &str)] = if multitenant {
            &[("X-Scope-OrgID", "t")]
        } else {
            &[]
        };
        let a = srv.get("/api/search?q=%7B%7D", tenant);
        assert_eq!(a.status, 200, "{name}: {}", a.text());
    }
}

#[test]
fn every_seed_config_loads() {
    for n in &seeds() {
        load(n);
    }
}

#[test]
fn legacy_flat_overrides_are_applied_with_a_warning() {
    let (c, w) = load("seed000-monolithic-s3.yaml");
    assert_eq!(
        c.overrides.defaults.metrics_generator.processors,
        Some(vec!["span-metrics".to_string()])
    );
    assert!(
        has(
            &w,
            "overrides.metrics_generator_processors is Tempo's legacy flat form"
        ) && has(&w, "overrides.defaults.metrics_generator.processors"),
        "{w:?}"
    );
    // That list lacks local-blocks: TraceQL metrics stay on (Tempo 3.x), config check says so
    // and names the switch that turns them off.
    assert!(
        has(
            &w,
            "overrides.defaults.metrics_generator.processors does not list local-blocks: TraceQL metrics (Traces Drilldown) stay on"
        ) && has(&w, "overrides.defaults.read.traceql_metrics_enabled: false"),
        "{w:?}"
    );
    assert!(c.traceql_metrics().unwrap().enabled("single-tenant"));
    assert_eq!(
        c.compactor.compaction.block_retention,
        Some(Duration::from_secs(744 * 3600))
    );
    // The current form wins where both are written.
    let c = Config::parse(
        "both.yaml",
        "overrides:\n  max_traces_per_user: 5\n  defaults:\n    ingestion:\n      max_traces_per_user: 9\n",
    )
    .unwrap();
    assert_eq!(c.overrides.defaults.ingestion.max_traces_per_user, Some(9));
    assert!(has(&c.warnings(), "overrides.max_traces_per_user"));
}

#[test]
fn the_kafka_path_and_traces_storage_are_accepted_with_a_warning() {
    let (_, w) = load("seed004-kafka.yaml");
    assert!(has(&w, "Kafka write path"), "{w:?}");
    assert_eq!(w.iter().filter(|x| x.contains("Kafka")).count(), 1, "{w:?}");
    let (_, w) = load("seed004-local.yaml");
    assert!(
        has(&w, "metrics_generator.traces_storage has no effect"),
        "{w:?}"
    );
    assert!(!has(&w, "Kafka"), "{w:?}");
}

#[test]
fn a_typo_is_still_an_error_naming_the_key() {
    let e = Config::parse("typo.yaml", "overrides:\n  max_trace_per_user: 5\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_trace_per_user"), "{e}");
    assert!(e.contains("did you mean `max_traces_per_user`?"), "{e}");
    let e = Config::parse("typo.yaml", "distributor:\n  kafka_write_path: true\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("kafka_write_path"), "{e}");
}

#[test]
fn the_effective_print_is_a_config_that_means_the_same() {
    let mut cases: Vec<(String, Config)> = seeds()
        .into_iter()
        .map(|n| {
            let c = load(&n).0;
            (n, c)
        })
        .collect();
    cases.push(("(defaults)".into(), Config::default()));
    for (name, c) in cases {
        let printed = serde_yaml::to_string(&c.effective().unwrap()).unwrap();
        let again = Config::parse("printed", &printed)
            .and_then(|c| c.validate().map(|_| c))
            .unwrap_or_else(|e| panic!("{name}: the print is refused: {e}\n{printed}"));
        assert_eq!(
            again.effective().unwrap(),
            c.effective().unwrap(),
            "{name}: the print means something else"
        );
    }
}

#[test]
fn tempo_keys_for_parts_allegro_lacks_are_accepted_with_one_warning_each() {
    let dir = tempfile::tempdir().unwrap();
    let tenants = dir.path().join("overrides.yaml");
    std::fs::write(
        &tenants,
        "overrides:\n  team-a:\n    ingestion:\n      rate_limit_bytes: 1000\n  \"*\":\n    global:\n      max_bytes_per_trace: 777\n",
    )
    .unwrap();
    let main = dir.path().join("tempo.yaml");
    // A Tempo 2.x config as deployments write it: rings, gossip, worker and encoding settings.
    std::fs::write(
        &main,
        format!(
            "target: all\nhttp_api_prefix: /tempo\nusage_report:\n  reporting_enabled: false\n\
             memberlist:\n  join_members: [tempo-gossip:7946]\n\
             server:\n  http_listen_port: 3200\n  grpc_listen_port: 9095\n  log_level: warn\n  log_format: logfmt\n\
             distributor:\n  ring:\n    kvstore:\n      store: memberlist\n  log_received_spans:\n    enabled: true\n\
             ingester:\n  lifecycler:\n    ring:\n      replication_factor: 1\n  complete_block_timeout: 15m\n\
             querier:\n  frontend_worker:\n    frontend_address: tempo:9095\n  max_concurrent_queries: 20\n\
             query_frontend:\n  max_outstanding_per_tenant: 2000\n  search:\n    concurrent_jobs: 1000\n\
             \x20   default_result_limit: 2\n    max_result_limit: 5\n    max_duration: 1h\n\
             storage:\n  trace:\n    backend: local\n    local:\n      path: {dir}/blocks\n    pool:\n      max_workers: 100\n\
             \x20   block:\n      version: vParquet4\n      parquet_dedicated_columns:\n        - {{scope: resource, name: k8s.namespace.name, type: string}}\n\
             \x20   wal:\n      path: {dir}/wal\n      version: vParquet4\n\
             overrides:\n  per_tenant_override_config: {tenants}\n  per_tenant_override_period: 10s\n",
            dir = dir.path().display(),
            tenants = tenants.display(),
        ),
    )
    .unwrap();
    let c = Config::load(&main).unwrap_or_else(|e| panic!("{e}"));
    let w = c.warnings();
    for key in [
        "target:",
        "usage_report:",
        "memberlist:",
        "server.grpc_listen_port:",
        "server.log_format:",
        "distributor.ring:",
        "distributor.log_received_spans:",
        "ingester.lifecycler:",
        "ingester.complete_block_timeout:",
        "querier.frontend_worker:",
        "querier.max_concurrent_queries:",
        "query_frontend.max_outstanding_per_tenant:",
        "query_frontend.search.concurrent_jobs:",
        "storage.trace.pool:",
        "storage.trace.block.version:",
        "storage.trace.wal.version:",
        "overrides.per_tenant_override_period:",
    ] {
        let n = w.iter().filter(|w| w.starts_with(key)).count();
        assert_eq!(n, 1, "{key}: {w:#?}");
    }
    // Keys with an equivalent are applied there.
    assert_eq!(c.server.http_api_prefix, "/tempo");
    assert_eq!(c.server.log_level.as_deref(), Some("warn"));
    assert_eq!(c.hot_columns().len(), 1);
    // The per-tenant file is read: its tenants, and "*" as the defaults.
    let o = c.overrides().unwrap();
    assert_eq!(o.limits("team-a").rate_limit_bytes, 1000);
    assert_eq!(o.limits("anyone").max_bytes_per_trace, 777);
    assert!(
        has(&w, "1 tenant(s) read from") || has(&w, "2 tenant(s) read from"),
        "{w:#?}"
    );
    // It starts.
    let mut c = c;
    c.distributor.receivers = config_for(dir.path()).distributor.receivers;
    c.server.http_listen_port = 0;
    let srv = TestServer::start(c);
    assert_eq!(srv.get("/tempo/api/echo", &[]).status, 200);
    // query_frontend.search limits hold at the door.
    for i in 1..=4 {
        assert_eq!(
            srv.export(None, allegro_tests::one_span_trace(i)).status,
            200
        );
    }
    let search = |q: &str| srv.get(&format!("/tempo/api/search?{q}"), &[]);
    let a = search("q=%7B%7D");
    assert_eq!(a.status, 200, "{}", a.text());
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(v["traces"].as_array().unwrap().len(), 2, "{v}");
    let a = search("q=%7B%7D&limit=6");
    assert_eq!(a.status, 400);
    assert!(a.text().contains("at most 5"), "{}", a.text());
    let a = search("q=%7B%7D&start=1000&end=10000");
    assert_eq!(a.status, 400);
    assert!(a.text().contains("exceeds 1h"), "{}", a.text());
}
