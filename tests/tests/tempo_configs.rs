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
