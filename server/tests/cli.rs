//! The `allegro` binary as a user runs it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Served;

fn allegro() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_allegro"));
    c.env("RUST_LOG", "warn");
    c
}

#[test]
fn a_bad_config_is_a_clear_start_up_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "server:\n  http_listen_port: lots\n",
            "server.http_listen_port",
        ),
        (
            "storage:\n  trace:\n    backend: tape\n",
            "storage.trace.backend",
        ),
        (
            "storage:\n  trace:\n    backend: s3\n    s3:\n",
            "storage.trace.s3.bucket",
        ),
        (
            "serverr:\n  http_listen_port: 1\n",
            "unknown field `serverr`",
        ),
    ];
    for (yaml, key) in cases {
        let path = dir.path().join("bad.yaml");
        std::fs::write(&path, yaml).unwrap();
        let out = allegro()
            .arg("--config")
            .arg(&path)
            .arg("serve")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{yaml}: {stderr}");
        assert!(stderr.contains(key), "{yaml}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let out = allegro()
        .args(["--config", "/nonexistent/allegro.yaml", "serve"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/allegro.yaml"));
}

/// `allegro gen` of 20,000 spans in blocks of `block_spans` into the data directory `data`.
fn gen_blocks(data: &std::path::Path, block_spans: &str) {
    common::succeeded(allegro().arg("--data-dir").arg(data).args([
        "gen",
        "--spans",
        "20000",
        "--block-spans",
        block_spans,
    ]));
}

/// Receivers on free loopback ports, so tests never fight over 4317/4318.
const LOOPBACK_RECEIVERS: &str = "distributor:\n  receivers:\n    otlp:\n      protocols:\n        grpc:\n          endpoint: 127.0.0.1:0\n        http:\n          endpoint: 127.0.0.1:0\n";

/// Starts `allegro serve` with `config` over the data directory `data`.
fn serve(data: &std::path::Path, config: &std::path::Path) -> Served {
    let mut cmd = allegro();
    cmd.arg("--data-dir").arg(data).arg("--config").arg(config);
    common::serve(cmd)
}

impl Served {
    /// SIGTERM, then waits for a graceful, successful exit.
    fn stop(mut self) {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.0.id().to_string())
            .status()
            .unwrap();
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.0.try_wait().unwrap() {
                assert!(status.success(), "{status}");
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "server did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn gen_then_serve_then_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = common::succeeded(allegro().arg("--data-dir").arg(&data).args([
        "gen",
        "--spans",
        "20000",
        "--block-spans",
        "5000",
    ]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("generated 200") && stdout.contains("4 blocks"),
        "{stdout}"
    );
    let listing = allegro()
        .arg("--data-dir")
        .arg(&data)
        .args(["blocks", "--format", "json"])
        .output()
        .unwrap();
    let blocks: serde_json::Value = serde_json::from_slice(&listing.stdout).unwrap();
    let blocks = blocks.as_array().unwrap();
    assert_eq!(blocks.len(), 4);
    let spans: u64 = blocks
        .iter()
        .map(|b| b["totalSpans"].as_u64().unwrap())
        .sum();
    assert!((20_000..21_000).contains(&spans), "{spans}");
    let id = blocks[2]["maxID"].as_str().unwrap().to_string();

    let cfg = dir.path().join("allegro.yaml");
    std::fs::write(&cfg, LOOPBACK_RECEIVERS).unwrap();
    let srv = serve(&data, &cfg);
    assert!(srv.before.is_empty(), "{:?}", srv.before);
    let base = srv.base.clone();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let resp = agent
        .get(format!("{base}/api/v2/traces/{id}"))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let resp = agent
        .get(format!("{base}/api/v2/traces/nothex"))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    // SIGTERM: a graceful, successful exit.
    srv.stop();
}

#[test]
fn gen_writes_otlp_files_that_decode_to_the_same_spans() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--spans",
        "3000",
        "--seed",
        "4",
        "--start",
        "2026-01-01T00:00:00Z",
        "--duration",
        "5m",
        "--file-spans",
        "1000",
    ];
    for (format, ext) in [("otlp-json", "json"), ("otlp-proto", "pb")] {
        let out_dir = dir.path().join(format);
        common::succeeded(
            allegro()
                .arg("gen")
                .args(args)
                .args(["--format", format, "--out"])
                .arg(&out_dir),
        );
        let mut files: Vec<_> = std::fs::read_dir(&out_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(
            files.len() >= 3 && files.iter().all(|f| f.extension().unwrap() == ext),
            "{files:?}"
        );
    }
    let count = |format: &str| -> usize {
        let mut n = 0;
        for f in std::fs::read_dir(dir.path().join(format)).unwrap() {
            let bytes = std::fs::read(f.unwrap().path()).unwrap();
            let rs = if format == "otlp-json" {
                allegro_engine::otlp_json::decode_traces_json(&bytes).unwrap()
            } else {
                use prost::Message;
                allegro_engine::otlp::collector::trace::v1::ExportTraceServiceRequest::decode(
                    &*bytes,
                )
                .unwrap()
                .resource_spans
            };
            n += allegro_engine::convert::normalize::span_count(&rs);
        }
        n
    };
    assert_eq!(count("otlp-json"), count("otlp-proto"));
    assert!(count("otlp-json") >= 3000);
    let bad = allegro()
        .args(["gen", "--start", "last tuesday"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--start"));
}

/// Runs `cmd` with `stdin` fed to it (closed at once when `None`): exit code, stdout, stderr.
fn run_with_stdin(mut cmd: Command, stdin: Option<&str>) -> (i32, String, String) {
    use std::io::Write;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write");
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn traceql_check(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut cmd = allegro();
    cmd.args(["traceql", "check"]).args(args);
    run_with_stdin(cmd, stdin)
}

#[test]
fn traceql_check_prints_canonical_form_or_error_with_exit_codes() {
    let (code, out, _) = traceql_check(&["{ span:name = \"x\" && .a * .b + .c > 1 }"], None);
    assert_eq!(code, 0);
    assert_eq!(out, "{ (name = \"x\") && (((.a * .b) + .c) > 1) }\n");

    let (code, out, err) = traceql_check(&["{ .a == 1 }"], None);
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(err.contains("--> 1:7"), "{err}");
    assert!(err.contains("1 | { .a == 1 }\n  |       ^"), "{err}");

    let (code, _, err) = traceql_check(&["{ 1 = \"foo\" }"], None);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("must operate on the same type"), "{err}");

    let (code, _, err) = traceql_check(&["{ parent.a != 3 }"], None);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("not yet supported"), "{err}");
}

#[test]
fn traceql_check_json_and_stdin() {
    let (code, out, _) = traceql_check(&["-", "--format", "json"], Some("{ .a = 1 }\n"));
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        v,
        serde_json::json!({"ok": true, "canonical": "{ .a = 1 }"})
    );

    let (code, out, _) = traceql_check(
        &["--format", "json", "-"],
        Some("{ .a = 1 &&\n  .b = = 2 }"),
    );
    assert_eq!(code, 2);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["ok"], false);
    assert_eq!(v["kind"], "parse");
    assert_eq!(
        (v["line"].as_u64(), v["column"].as_u64()),
        (Some(2), Some(8))
    );
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("unexpected `=`"),
        "{v}"
    );

    let (code, out, _) = traceql_check(&["{ status > ok }", "--format", "json"], None);
    assert_eq!(code, 3);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["kind"], "validate");
}

#[test]
fn demo_sends_live_traffic_through_otlp() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("allegro.yaml");
    std::fs::write(&cfg, LOOPBACK_RECEIVERS).unwrap();
    let mut child = allegro()
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&cfg)
        .args([
            "demo",
            "--spans",
            "2000",
            "--rate",
            "400",
            "--http-listen-port",
            "0",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut base = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(b) = line.strip_prefix("allegro listening on ") {
            base = b.replace("0.0.0.0", "127.0.0.1");
        }
        if line.starts_with("sending ~400 live spans/s") {
            break;
        }
    }
    assert!(!base.is_empty());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let start = std::time::Instant::now();
    let received = loop {
        let m = agent
            .get(format!("{base}/metrics"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        let n: u64 = m
            .lines()
            .find_map(|l| {
                l.strip_prefix(
                    "allegro_ingest_spans_received_total{tenant=\"single-tenant\",protocol=\"otlp_grpc\"} ",
                )
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if n >= 400 || start.elapsed() > Duration::from_secs(20) {
            break n;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        received >= 400,
        "only {received} live spans arrived in 20 s"
    );
}

#[test]
fn query_and_explain_run_embedded_on_the_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    gen_blocks(&data, "10000");
    let run = |args: &[&str]| {
        let out = allegro()
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // JSON is Tempo's search response: newest first, each trace with a matching error span.
    let (code, stdout, stderr) = run(&[
        "query",
        "{ status = error }",
        "--format",
        "json",
        "--limit",
        "5",
        "--spss",
        "2",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let traces = v["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 5);
    let starts: Vec<u64> = traces
        .iter()
        .map(|t| t["startTimeUnixNano"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(starts.windows(2).all(|w| w[0] >= w[1]), "{starts:?}");
    for t in traces {
        let spans = t["spanSets"][0]["spans"].as_array().unwrap();
        assert!(!spans.is_empty() && spans.len() <= 2);
        assert_eq!(spans[0]["attributes"][0]["value"]["stringValue"], "error");
    }
    assert_eq!(v["metrics"]["totalBlocks"], 2);
    // The table names the traces and their spans.
    let (code, stdout, _) = run(&[
        "query",
        "{ resource.service.name = \"checkout-service\" } >> { status = error }",
        "--limit",
        "2",
    ]);
    assert_eq!(code, Some(0));
    assert!(
        stdout.starts_with("TRACE") && stdout.contains("spanset:"),
        "{stdout}"
    );
    // A window before the data finds nothing.
    let (code, stdout, _) = run(&["query", "{ }", "--start", "1000", "--end", "2000"]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("0 traces"), "{stdout}");
    // A bad query: exit 2, position and caret.
    let (code, _, stderr) = run(&["query", "{ .a = }"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("1:8") && stderr.contains('^'), "{stderr}");
    // Metrics: a sparkline table; per-service rates add up to the total; JSON is Tempo's.
    let (code, stdout, stderr) = run(&[
        "metrics",
        "{ } | count_over_time() by (resource.service.name)",
        "--since",
        "2h",
        "--step",
        "10m",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.starts_with("SERIES") && stdout.contains("resource.service.name=\"cart-service\""),
        "{stdout}"
    );
    assert!(stdout.chars().any(|c| "▁▂▃▄▅▆▇█".contains(c)), "{stdout}");
    let (code, stdout, stderr) = run(&[
        "metrics",
        "{ } | count_over_time() by (resource.service.name)",
        "--since",
        "2h",
        "--step",
        "10m",
        "--format",
        "json",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let counted: f64 = v["series"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["samples"].as_array().unwrap().iter())
        .map(|x| x["value"].as_f64().unwrap_or(0.0))
        .sum();
    // Whole traces: a few more than the 20000 asked for, each counted once.
    let stored: f64 = v["metrics"]["inspectedSpans"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(stored >= 20000.0);
    assert_eq!(counted, stored, "every stored span counted once");
    let (code, _, stderr) = run(&["metrics", "{ } | rate() by (", "--since", "1h"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains('^'), "{stderr}");
    // The default step over 2h is 30s: 240 points drawn in what an 80-column terminal has
    // room for, durations with their unit.
    let (code, stdout, stderr) = run(&[
        "metrics",
        "{ } | quantile_over_time(duration, .9) by (resource.service.name)",
        "--since",
        "2h",
        "--width",
        "80",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    for line in stdout.lines() {
        assert!(line.chars().count() <= 80, "{line}");
    }
    assert!(
        stdout.contains("per cell") && stdout.contains("durations"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ms ") || stdout.contains("µs ") || stdout.contains("s "),
        "{stdout}"
    );
    assert!(!stdout.contains("e-"), "unitless exponent in {stdout}");
    // explain works for metrics queries: the stage, what it reads, the aggregation's plans.
    let (code, stdout, stderr) = run(&[
        "explain",
        "{ status = error } | rate() by (resource.service.name)",
        "--since",
        "2h",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    for part in [
        "== First stage 1: rate() by (resource.service.name) ==",
        "spans:    one spanset filter",
        "reads:    2 of the tenant's 2 block(s) overlap the range",
        "Aggregate",
        "-- Physical plan --",
    ] {
        assert!(stdout.contains(part), "{part} missing:\n{stdout}");
    }
    // SQL on the data directory: the same spans as the search saw, in every format.
    let (code, stdout, stderr) = run(&[
        "sql",
        "SELECT count(*) AS n, count(DISTINCT trace_id) AS traces FROM spans",
        "--format",
        "json",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["rows"][0]["n"].as_f64(), Some(stored), "{stdout}");
    let (code, stdout, stderr) = run(&[
        "sql",
        "SELECT service_name, count(*) FROM spans WHERE status = 'error' GROUP BY 1 ORDER BY 2 DESC LIMIT 3",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("| service_name") && stdout.contains("3 row(s)"),
        "{stdout}"
    );
    let (code, stdout, _) = run(&["sql", "SELECT 1 AS a, 'x' AS b", "--format", "csv"]);
    assert_eq!(code, Some(0));
    assert_eq!(stdout, "a,b\n1,x\n");
    let (code, _, stderr) = run(&["sql", "DELETE FROM spans"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("read-only"), "{stderr}");
    // Without a query: statements from stdin, `\d` among them.
    let mut cmd = allegro();
    cmd.arg("--data-dir")
        .arg(&data)
        .args(["sql", "--format", "csv"]);
    let (code, stdout, stderr) = run_with_stdin(
        cmd,
        Some("\\d\nSELECT count(*) AS n\nFROM traces\nWHERE spans > 0;\n"),
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.starts_with("table_name\nevents\nlinks\nspans\ntraces\nn\n"),
        "{stdout}"
    );
    // ... and says why a plan reads nothing.
    let (code, stdout, stderr) = run(&["explain", "{ span.no_such_attribute = \"x\" }"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("nothing to read. All 2 block(s) in range were pruned"),
        "{stdout}"
    );
    // explain shows the plans and the predicate pushed into the Parquet scan.
    let (code, stdout, stderr) = run(&[
        "explain",
        "{ resource.service.name = \"cart-service\" && span.http.route = \"/api/cart\" }",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    for part in [
        "== AST ==",
        "== Logical plan",
        "== Physical plan ==",
        "traceql_spansets",
        "pruning_predicate=",
        "service_name",
    ] {
        assert!(stdout.contains(part), "{part} missing:\n{stdout}");
    }
}

#[test]
fn config_check_prints_effective_values_and_refuses_what_would_break() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tempo.yaml");
    // The seed: Tempo zeroes an empty registry block and panics at start.
    std::fs::write(
        &path,
        "metrics_generator:\n  registry:\n  storage:\n    path: /tmp/gen\n    remote_write:\n      - url: http://prometheus:9090/api/v1/write\n        send_exemplars: true\n",
    )
    .unwrap();
    let out = allegro()
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("is valid"), "{stderr}");
    let v: serde_yaml::Value = serde_yaml::from_str(&stdout).unwrap();
    let g = &v["metrics_generator"];
    assert_eq!(g["registry"]["collection_interval"].as_str(), Some("15s"));
    assert_eq!(g["registry"]["stale_duration"].as_str(), Some("15m"));
    assert_eq!(g["registry"]["max_label_value_length"].as_u64(), Some(2048));
    assert_eq!(
        g["storage"]["remote_write"][0]["url"].as_str(),
        Some("http://prometheus:9090/api/v1/write")
    );
    assert_eq!(
        v["overrides"]["defaults"]["metrics_generator"]["processors"],
        serde_yaml::to_value(["span-metrics", "service-graphs", "local-blocks"]).unwrap()
    );
    assert_eq!(
        g["processor"]["span_metrics"]["histogram_buckets"][13].as_f64(),
        Some(16.384)
    );
    assert!(v["ingester"]["ring"].is_null(), "no ring unless configured");
    // A ring prints as read, addresses without a trailing slash.
    std::fs::write(
        &path,
        "ingester:\n  ring:\n    instance_id: b\n    members:\n      - id: a\n        address: http://a:3200/\n      - id: b\n        address: http://b:3200\n",
    )
    .unwrap();
    let out = common::succeeded(allegro().args(["config", "check"]).arg(&path));
    let v: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ingester"]["ring"]["instance_id"].as_str(), Some("b"));
    assert_eq!(
        v["ingester"]["ring"]["members"][0]["address"].as_str(),
        Some("http://a:3200")
    );

    for (yaml, want) in [
        (
            "metrics_generator:\n  registry:\n    collection_interval: 0s\n",
            "metrics_generator.registry.collection_interval: must be positive",
        ),
        (
            "metrics_generator:\n  storage:\n    remote_write:\n      - name: prom\n",
            "metrics_generator.storage.remote_write[0].url: is required",
        ),
        (
            "overrides:\n  defaults:\n    metrics_generator:\n      processors: [service-graphs]\n",
            "the metrics generator is off",
        ),
        (
            "ingester:\n  ring:\n    instance_id: c\n    members:\n      - id: a\n        address: http://a:3200\n",
            "ingester.ring: this instance, \"c\", is not among the members (a)",
        ),
    ] {
        std::fs::write(&path, yaml).unwrap();
        let out = allegro()
            .args(["config", "check"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{yaml}: {stderr}");
        assert!(stderr.contains(want), "{yaml}: {stderr}");
        // `serve` refuses the same config at start, with the same message and no panic.
        let out = allegro()
            .arg("--config")
            .arg(&path)
            .args(["serve", "--http-listen-port", "0"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{yaml}: {stderr}");
        assert!(
            stderr.contains(want) && !stderr.contains("panicked"),
            "{stderr}"
        );
    }
}

#[test]
fn serve_starts_with_an_empty_registry_block_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("seed.yaml");
    // The seed that makes Tempo panic at start: `registry:` with nothing under it.
    std::fs::write(
        &cfg,
        format!("{LOOPBACK_RECEIVERS}metrics_generator:\n  registry:\n"),
    )
    .unwrap();
    let srv = serve(&dir.path().join("data"), &cfg);
    assert!(
        srv.before
            .iter()
            .any(|l| l.starts_with("metrics generator:")),
        "{:?}",
        srv.before
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let resp = agent
        .get(format!("{}/api/metrics-generator/metrics", srv.base))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    srv.stop();
}

#[test]
fn serve_logs_at_server_log_level() {
    for (level, info_lines) in [("info", true), ("warn", false)] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("tempo.yaml");
        std::fs::write(
            &cfg,
            format!("{LOOPBACK_RECEIVERS}server:\n  log_level: {level}\n"),
        )
        .unwrap();
        let mut cmd = allegro();
        cmd.env_remove("RUST_LOG")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--config")
            .arg(&cfg)
            .stderr(Stdio::piped());
        let mut srv = common::serve(cmd);
        let mut stderr = srv.child.0.stderr.take().unwrap();
        srv.stop();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut text).unwrap();
        // `serving the Tempo HTTP API` is logged at info on every start.
        assert_eq!(text.contains(" INFO "), info_lines, "{level}: {text}");
    }
}

#[test]
fn sigterm_right_after_the_announcement_is_a_graceful_stop() {
    // `listening on` is the cue scripts and supervisors wait for; a SIGTERM sent at
    // once must already find the handler installed, or the process dies of the signal.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("seed.yaml");
    std::fs::write(&cfg, LOOPBACK_RECEIVERS).unwrap();
    for _ in 0..20 {
        let mut srv = serve(&dir.path().join("data"), &cfg);
        // SAFETY: kill(2) on our own child's pid; no memory is touched.
        let sent = unsafe { libc::kill(srv.child.0.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(sent, 0);
        let status = srv.child.0.wait().unwrap();
        assert!(status.success(), "{status}");
    }
}

#[test]
fn read_commands_end_quietly_on_a_closed_pipe_and_refuse_a_missing_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    gen_blocks(&data, "1000");
    // `allegro query … --format json | head -c 1` (an answer of about a megabyte, more than
    // a pipe holds): the reader goes away after one byte.
    let mut child = allegro()
        .arg("--data-dir")
        .arg(&data)
        .args(["query", "{ }", "--limit", "2000", "--format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut one = [0u8; 1];
    std::io::Read::read_exact(&mut out, &mut one).unwrap();
    drop(out);
    let done = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Ended by SIGPIPE like any Unix tool (or done before the pipe closed), never exit 101.
    assert_ne!(done.status.code(), Some(101), "{stderr}");

    // A mistyped data directory is an error, and is not created.
    let typo = dir.path().join("dta");
    for args in [
        vec!["blocks"],
        vec!["query", "{ }"],
        vec!["metrics", "{ } | rate()"],
    ] {
        let out = allegro()
            .arg("--data-dir")
            .arg(&typo)
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("does not exist"), "{args:?}: {stderr}");
        assert!(!typo.exists(), "{args:?} created the directory");
    }
}

#[test]
fn receivers_follow_the_http_listen_address_unless_configured() {
    let dir = tempfile::tempdir().unwrap();
    // All interfaces, as the defaults are, on free ports; and Zipkin configured elsewhere.
    let config = dir.path().join("allegro.yaml");
    std::fs::write(
        &config,
        "distributor:\n  receivers:\n    otlp:\n      protocols:\n        grpc:\n          endpoint: 0.0.0.0:0\n        http:\n          endpoint: 0.0.0.0:0\n    zipkin:\n      endpoint: 127.0.0.2:0\n",
    )
    .unwrap();
    // `common::serve` passes `--http-listen-address 127.0.0.1`; the receivers' lines follow
    // the announcement.
    let mut s = serve(&dir.path().join("data"), &config);
    let lines: Vec<String> = (&mut s.lines).take(3).map(|l| l.unwrap()).collect();
    s.stop();
    for want in [
        "OTLP/gRPC receiver on 127.0.0.1:",
        "OTLP/HTTP receiver on 127.0.0.1:",
        "Zipkin receiver on 127.0.0.2:",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(want)),
            "no {want:?} in {lines:?}"
        );
    }
}

/// The `allegro sql` shell at a terminal (a pseudo-terminal driven by
/// `tests/python/sql_shell_pty.py`, Python's standard library): the up arrow recalls the last
/// statement, and history outlives the session.
#[test]
fn the_sql_shell_edits_lines_and_keeps_history() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history");
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/python/sql_shell_pty.py");
    let session = |lines: &[&str]| {
        let out = Command::new("python3")
            .arg(&script)
            .arg(env!("CARGO_BIN_EXE_allegro"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("sql")
            .arg("--")
            .args(lines)
            .env("ALLEGRO_SQL_HISTORY", &history)
            .env("RUST_LOG", "warn")
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["screen"].as_str().unwrap_or_default().to_string()
    };
    // Typed as two lines, then recalled with the up arrow: the answer shows twice.
    let screen = session(&["SELECT 'zebra' || '-'", "|| 'giraffe' AS x;", "<UP>", "\\q"]);
    assert_eq!(screen.matches("zebra-giraffe").count(), 2, "{screen}");
    let kept = std::fs::read_to_string(&history).unwrap();
    assert!(
        kept.contains("SELECT 'zebra' || '-' || 'giraffe' AS x;"),
        "{kept}"
    );
    // A new session recalls it too.
    let screen = session(&["<UP>", "\\q"]);
    assert_eq!(screen.matches("zebra-giraffe").count(), 1, "{screen}");
}

/// The directory of block `id` somewhere under `data`.
fn block_dir(data: &std::path::Path, id: &str) -> std::path::PathBuf {
    let mut dirs = vec![data.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                if e.file_name() == id {
                    return e.path();
                }
                dirs.push(e.path());
            }
        }
    }
    panic!("no block {id} under {}", data.display())
}

#[test]
fn blocks_check_finds_damage_and_serve_answers_partial_around_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    gen_blocks(&data, "5000");
    let check = || {
        allegro()
            .arg("--data-dir")
            .arg(&data)
            .args(["blocks", "--check", "--format", "json"])
            .output()
            .unwrap()
    };
    let out = check();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let blocks: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let blocks = blocks.as_array().unwrap().clone();
    assert_eq!(blocks.len(), 4);
    assert!(blocks.iter().all(|b| b["state"] == "ok"));

    // One flipped byte anywhere in a block's data: --check reads all of it.
    let damaged = blocks[1]["blockID"].as_str().unwrap().to_string();
    let file = block_dir(&data, &damaged).join("data.parquet");
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    let out = check();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let states: Vec<(String, String)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["blockID"].as_str().unwrap().to_string(),
                b["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(states.len(), 4);
    assert!(
        states.contains(&(damaged.clone(), "quarantined".into())),
        "{states:?}"
    );
    assert_eq!(states.iter().filter(|s| s.1 == "ok").count(), 3);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 damaged block"), "{stderr}");

    // A changed meta.json (valid JSON, wrong count) is found as soon as serve lists blocks,
    // and every query answer says it is partial.
    let other = blocks[2]["blockID"].as_str().unwrap().to_string();
    let meta = block_dir(&data, &other).join("meta.json");
    let text = std::fs::read_to_string(&meta).unwrap();
    std::fs::write(
        &meta,
        text.replacen("\"totalSpans\": ", "\"totalSpans\": 9", 1),
    )
    .unwrap();
    let cfg = dir.path().join("allegro.yaml");
    std::fs::write(&cfg, LOOPBACK_RECEIVERS).unwrap();
    let srv = serve(&data, &cfg);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let resp = agent
        .get(format!("{}/api/search?q=%7B%20%7D", srv.base))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let partial = resp
        .headers()
        .get("x-allegro-partial")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(partial.contains(&other), "{partial:?}");
    let mut resp = agent.get(format!("{}/metrics", srv.base)).call().unwrap();
    let text = resp.body_mut().read_to_string().unwrap();
    assert!(
        text.contains("allegro_blocks_quarantined{tenant="),
        "{text}"
    );
    srv.stop();
}
