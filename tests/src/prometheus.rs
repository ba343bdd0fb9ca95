//! A real Prometheus server (Debian's `prometheus` package) with the remote-write receiver and
//! exemplar storage on, for the metrics-generator tests.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Prometheus; killed on drop.
pub struct Prometheus {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    child: Child,
    agent: ureq::Agent,
}

/// The `prometheus` binary, or `None` outside CI when it is not installed (under `CI=true`
/// a missing binary fails the test).
pub fn binary() -> Option<String> {
    crate::tool("prometheus", &["--version"], "apt-get install prometheus")
}

impl Prometheus {
    /// Starts Prometheus on `port` with its data in `dir` and waits until it is ready.
    pub fn start(bin: &str, dir: &Path, port: u16) -> Self {
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, "global:\n  scrape_interval: 15s\n").expect("write config");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver")
            .arg("--enable-feature=exemplar-storage")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let p = Self {
            base: format!("http://127.0.0.1:{port}"),
            child,
            agent,
        };
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = p
                .agent
                .get(format!("{}/-/ready", p.base))
                .call()
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return p;
            }
            let log = std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
            assert!(
                Instant::now() < until,
                "prometheus did not become ready:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `GET path?params` → the JSON body's `data`.
    pub fn api(&self, path: &str, params: &[(&str, &str)]) -> serde_json::Value {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        for (k, v) in params {
            req = req.query(*k, *v);
        }
        let mut resp = req.call().expect("prometheus request");
        let text = resp.body_mut().read_to_string().expect("body");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["status"], "success", "{path} {params:?}: {text}");
        v["data"].clone()
    }

    /// An instant PromQL query → (labels, value) per result.
    pub fn query(&self, q: &str) -> Vec<(serde_json::Map<String, serde_json::Value>, f64)> {
        let data = self.api("/api/v1/query", &[("query", q)]);
        data["result"]
            .as_array()
            .map(|r| {
                r.iter()
                    .map(|s| {
                        let labels = s["metric"].as_object().cloned().unwrap_or_default();
                        let v = s["value"][1]
                            .as_str()
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(f64::NAN);
                        (labels, v)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
