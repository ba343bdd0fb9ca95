//! Helpers for the integration tests: a real server on a loopback port, and a plain HTTP client.

use std::sync::mpsc;
use std::time::Duration;

use allegro_server::commands::serve::serve_on;
use allegro_server::config::Config;

/// A server running on its own thread and runtime, on a free loopback port.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
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
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                tx.send(listener.local_addr().expect("addr"))
                    .expect("send addr");
                if let Err(e) = serve_on(&cfg, listener).await {
                    eprintln!("test server failed: {e}");
                }
            });
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server did not start");
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Self {
            base: format!("http://{addr}"),
            agent,
        }
    }

    /// `GET path` with optional extra headers.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut resp = req.call().expect("request failed");
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
}

/// A config whose local store is `dir`.
pub fn config_for(dir: &std::path::Path) -> Config {
    let mut cfg = Config::default();
    cfg.storage.trace.local.path = dir.to_path_buf();
    cfg
}
