//! Starting `allegro serve` as a separate process, for the tests that run the binary.

// Each test crate reads the parts it needs.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStdout, Command, Stdio};

/// Free loopback ports, shared with the cross-crate tests (one source file for both).
#[path = "../../../tests/src/ports.rs"]
pub mod ports;
/// A real S3-compatible server (SeaweedFS), shared with the cross-crate tests.
#[path = "../../../tests/src/seaweed.rs"]
pub mod seaweed;
/// Real tools found, or the test skipped outside CI, shared with the cross-crate tests.
#[path = "../../../tests/src/tools.rs"]
pub mod tools;

/// OTLP receivers on any free port, for configs of tests that talk to the HTTP API only.
pub const RECEIVERS: &str = "distributor:
  receivers:
    otlp:
      protocols:
        grpc:
          endpoint: 127.0.0.1:0
        http:
          endpoint: 127.0.0.1:0
";

/// An HTTP client that reports every status as an answer, waiting at most `timeout`.
pub fn agent(timeout: std::time::Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

/// A running process, killed with SIGKILL when dropped (also when a test fails).
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Killed {
    /// SIGTERM, then waits for the process to end; asserts that it ended successfully (a
    /// graceful stop: in-flight requests finished, the head flushed).
    pub fn terminate(&mut self) {
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status()
            .unwrap();
        assert!(sent.success());
        let status = self.0.wait().unwrap();
        assert!(status.success(), "{status}");
    }
}

/// Runs `cmd` to its end; fails the test, showing its stderr, unless it succeeded.
pub fn succeeded(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `allegro <global> blocks --format json`: the stored blocks, as JSON objects.
pub fn blocks(global: &[&std::ffi::OsStr]) -> Vec<serde_json::Value> {
    let out = succeeded(
        Command::new(env!("CARGO_BIN_EXE_allegro"))
            .args(global)
            .args(["blocks", "--format", "json"]),
    );
    match serde_json::from_slice(&out.stdout).unwrap() {
        serde_json::Value::Array(blocks) => blocks,
        other => panic!("allegro blocks answered {other}"),
    }
}

/// A running `allegro serve` on a free loopback port.
pub struct Served {
    /// The server, killed when dropped: a failing test leaves no server holding the test
    /// runner's output open.
    pub child: Killed,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Status lines printed before `allegro listening on`.
    pub before: Vec<String>,
    /// The rest of its stdout, open: the server keeps printing status lines.
    pub lines: Lines<BufReader<ChildStdout>>,
}

/// Runs `allegro` (with its global flags already on `cmd`) as `serve` on a free loopback port
/// and waits until it says where it listens.
pub fn serve(cmd: Command) -> Served {
    serve_on(cmd, 0)
}

/// [`serve`] with the HTTP API on loopback port `port` (0: any free one).
pub fn serve_on(mut cmd: Command, port: u16) -> Served {
    let mut child = cmd
        .args(["serve", "--http-listen-port"])
        .arg(port.to_string())
        .args(["--http-listen-address", "127.0.0.1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut before = Vec::new();
    let base = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("server exited; it printed {before:?}"))
            .unwrap();
        if let Some(b) = line.trim().strip_prefix("allegro listening on ") {
            break b.to_string();
        }
        before.push(line);
    };
    Served {
        child: Killed(child),
        base,
        before,
        lines,
    }
}
