//! Helpers for the integration tests: a real server on a loopback port, and a plain HTTP client.

pub mod cluster;
pub mod dataset;
pub mod engines;
pub mod golden;
pub mod metrics;
pub mod ports;
pub mod prometheus;
pub mod reference;
pub mod seaweed;
pub mod tools;

use tools::missing;
pub use tools::tool;

use std::sync::mpsc;
use std::time::Duration;

use allegro_engine::otlp::collector::trace::v1::ExportTraceServiceRequest;
use allegro_engine::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
use allegro_server::commands::serve::{Addresses, serve_with};
use allegro_server::config::{Config, GrpcReceiver, HttpReceiver, ReceiversConfig, ZipkinReceiver};
use prost::Message;

/// A server running on its own thread and runtime, on a free loopback port.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Where everything listens.
    pub addrs: Addresses,
    agent: ureq::Agent,
}

/// An HTTP answer.
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: String,
    /// Body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl TestServer {
    /// Starts `allegro serve` for `cfg` (the listen port is replaced by a free one).
    pub fn start(cfg: Config) -> Self {
        Self::start_on(cfg, 0)
    }

    /// Starts `allegro serve` for `cfg` with its HTTP API on loopback port `port` (0: any
    /// free one).
    pub fn start_on(cfg: Config, port: u16) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                    .await
                    .expect("bind");
                let ready = move |a: Addresses| {
                    let _ = tx.send(a);
                };
                if let Err(e) = serve_with(&cfg, listener, ready).await {
                    eprintln!("test server failed: {e}");
                }
            });
        });
        let addrs = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server did not start");
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Self {
            base: format!("http://{}", addrs.http),
            addrs,
            agent,
        }
    }

    /// `http://127.0.0.1:PORT` of the OTLP/HTTP receiver.
    pub fn otlp_http(&self) -> String {
        format!(
            "http://{}",
            self.addrs.otlp_http.expect("OTLP/HTTP receiver is off")
        )
    }

    /// `POST path` to `base` with a body and headers.
    pub fn post(&self, base: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        let mut req = self.agent.post(format!("{base}{path}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send(body).expect("request failed");
        answer(resp)
    }

    /// Sends `spans` as OTLP/HTTP protobuf, as `tenant` when given.
    pub fn export(&self, tenant: Option<&str>, spans: Vec<ResourceSpans>) -> Answer {
        let body = ExportTraceServiceRequest {
            resource_spans: spans,
        }
        .encode_to_vec();
        let mut headers = vec![("content-type", "application/x-protobuf")];
        headers.extend(tenant.map(|t| ("X-Scope-OrgID", t)));
        self.post(&self.otlp_http(), "/v1/traces", &headers, &body)
    }

    /// Whether `{ }` (as `tenant` when given) answers a span named `name`.
    pub fn finds_span(&self, tenant: Option<&str>, name: &str) -> bool {
        let headers: Vec<(&str, &str)> = tenant.map(|t| ("X-Scope-OrgID", t)).into_iter().collect();
        let a = self.get(&format!("/api/search?q={}", url_encode("{ }")), &headers);
        assert_eq!(a.status, 200, "{}", a.text());
        a.text().contains(&format!("\"{name}\""))
    }

    /// `GET path` with optional extra headers.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        answer(req.call().expect("request failed"))
    }
}

impl TestServer {
    /// The protobuf answer to `path` for `tenant` (`Accept: application/protobuf`); fails the
    /// test on anything but 200.
    pub fn get_proto<M: Message + Default>(&self, path: &str, tenant: &str) -> M {
        let a = self.get(
            path,
            &[
                ("X-Scope-OrgID", tenant),
                ("Accept", "application/protobuf"),
            ],
        );
        assert_eq!(a.status, 200, "{path}: {}", a.text());
        M::decode(a.body.as_slice()).expect("a protobuf answer")
    }
}

fn answer(mut resp: ureq::http::Response<ureq::Body>) -> Answer {
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp
        .body_mut()
        .with_config()
        .limit(512 << 20)
        .read_to_vec()
        .expect("body");
    Answer {
        status,
        content_type,
        body,
    }
}

/// A config whose local store is `dir`, with every receiver on a free loopback port.
pub fn config_for(dir: &std::path::Path) -> Config {
    let mut cfg = Config::default();
    cfg.storage.trace.local.path = dir.to_path_buf();
    let mut r = ReceiversConfig::default();
    let mut otlp = allegro_server::config::OtlpReceiver::default();
    otlp.protocols.grpc = Some(GrpcReceiver {
        endpoint: "127.0.0.1:0".into(),
        ..Default::default()
    });
    otlp.protocols.http = Some(HttpReceiver {
        endpoint: "127.0.0.1:0".into(),
        ..Default::default()
    });
    r.otlp = Some(otlp);
    r.zipkin = Some(ZipkinReceiver {
        endpoint: "127.0.0.1:0".into(),
        ..Default::default()
    });
    cfg.distributor.receivers = Some(r);
    cfg.sql.flight_listen_address = Some("127.0.0.1:0".into());
    // Test datasets have fixed dates (2023, 2026-01-01): accept spans of any age, and keep
    // their blocks.
    cfg.overrides.defaults.ingestion.max_span_age = Some(Duration::ZERO);
    cfg.compactor.compaction.block_retention = Some(Duration::ZERO);
    cfg
}

/// The workspace root (from the run-time manifest directory, which stays right when a shared
/// target directory is reused across checkouts).
pub fn workspace_dir() -> std::path::PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").expect("run under cargo");
    std::path::Path::new(&manifest)
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A Python 3 that can import every module in `modules`. Without one the test fails under
/// `CI=true` (a real client is part of the acceptance) and is skipped with a note otherwise.
pub fn python_with(modules: &[&str]) -> Option<String> {
    let check = format!("import {}", modules.join(", "));
    for py in ["python3", "python"] {
        let ok = std::process::Command::new(py)
            .args(["-c", &check])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(py.to_string());
        }
    }
    missing(&format!(
        "no Python with {modules:?}: pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-grpc opentelemetry-exporter-otlp-proto-http"
    ))
}

/// `tests/node` when `node` and the npm packages of `tests/node/package.json` are installed
/// there (`.ci/run` runs `npm install` in it). Without them the test fails under `CI=true` and
/// is skipped with a note otherwise.
pub fn node_packages(package: &str) -> Option<std::path::PathBuf> {
    let dir = workspace_dir().join("tests/node");
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if node && dir.join("node_modules").join(package).is_dir() {
        return Some(dir);
    }
    missing(&format!(
        "no node with the npm package {package}: run `npm install` in {}",
        dir.display()
    ))
}

/// Runs `tests/node/<script>` with `node` and `args` in `dir`; its stdout. A failing script
/// fails the test with everything it printed.
pub fn run_node<S: AsRef<std::ffi::OsStr>>(
    dir: &std::path::Path,
    script: &str,
    args: &[S],
) -> String {
    run_script("node", &dir.join(script), args)
}

/// Runs `tests/python/<script>` with `python` and `args`; its stdout. A failing script fails
/// the test with everything it printed.
pub fn run_python<S: AsRef<std::ffi::OsStr>>(python: &str, script: &str, args: &[S]) -> String {
    run_script(
        python,
        &workspace_dir().join("tests/python").join(script),
        args,
    )
}

fn run_script<S: AsRef<std::ffi::OsStr>>(
    program: &str,
    script: &std::path::Path,
    args: &[S],
) -> String {
    let out = std::process::Command::new(program)
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} failed: {stdout}\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `q` percent-encoded for a URL query parameter (unreserved characters kept).
pub fn url_encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A one-span trace named `op-<id>` (its trace ID `id` repeated) that ended a minute ago.
pub fn one_span_trace(id: u8) -> Vec<ResourceSpans> {
    let now = allegro_engine::now_unix_nanos();
    vec![ResourceSpans {
        scope_spans: vec![ScopeSpans {
            spans: vec![Span {
                trace_id: vec![id; 16],
                span_id: vec![id; 8],
                name: format!("op-{id}"),
                start_time_unix_nano: now - 61_000_000_000,
                end_time_unix_nano: now - 60_000_000_000,
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }]
}

/// Copies the tree `from` to `to`, as a crash or an upgrade would leave it.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("create");
    for e in std::fs::read_dir(from).expect("read dir").flatten() {
        let target = to.join(e.file_name());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// A test config (see [`crate::config_for`]) whose blocks go to `bucket` on `s3`, with the WAL
/// under `dir`.
pub fn config_on_s3(
    dir: &std::path::Path,
    s3: &seaweed::SeaweedFs,
    bucket: &str,
) -> allegro_server::config::Config {
    let mut cfg = config_for(dir);
    let t = &mut cfg.storage.trace;
    t.backend = "s3".into();
    t.s3.bucket = bucket.into();
    t.s3.endpoint = s3.endpoint.clone();
    t.s3.insecure = true;
    t.s3.forcepathstyle = true;
    t.s3.region = "us-east-1".into();
    t.s3.access_key = "allegro".into();
    t.s3.secret_key = "allegro".into();
    t.wal.path = dir.join("wal");
    cfg
}
