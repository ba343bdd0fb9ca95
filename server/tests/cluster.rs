//! `allegro scheduler` and `allegro executor` as separate processes on loopback, with `allegro
//! sql` sending its query to them (`query.ballista.scheduler`): the cluster answers as one
//! process does, and an executor killed with SIGKILL never turns into a partial answer.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn allegro() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_allegro"));
    c.env("RUST_LOG", "warn");
    c
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// Processes killed with SIGKILL when dropped.
struct Nodes(Vec<Child>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A scheduler and two executors over the data directory `data`; the scheduler's port.
fn cluster(data: &Path) -> (Nodes, u16, Vec<u16>) {
    let port = free_port();
    let mut nodes = Nodes(Vec::new());
    nodes.0.push(
        allegro()
            .arg("--data-dir")
            .arg(data)
            .args(["scheduler", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    listening(port);
    let mut flights = Vec::new();
    for _ in 0..2 {
        let (flight, grpc) = (free_port(), free_port());
        nodes.0.push(
            allegro()
                .arg("--data-dir")
                .arg(data)
                .args([
                    "executor",
                    "--scheduler",
                    &format!("127.0.0.1:{port}"),
                    "--flight-port",
                    &flight.to_string(),
                    "--grpc-port",
                    &grpc.to_string(),
                    "--concurrent-tasks",
                    "2",
                ])
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        listening(flight);
        flights.push(flight);
    }
    (nodes, port, flights)
}

/// `allegro sql --format csv` over `data`, through the cluster at `scheduler` when given.
fn sql(data: &Path, scheduler: Option<u16>, query: &str) -> Output {
    let mut c = allegro();
    c.arg("--data-dir").arg(data);
    if let Some(port) = scheduler {
        let config = data.join(format!("cluster-{port}.yaml"));
        std::fs::write(
            &config,
            format!("query:\n  ballista:\n    scheduler: 127.0.0.1:{port}\n"),
        )
        .unwrap();
        c.arg("--config").arg(config);
    }
    c.args(["sql", "--format", "csv", query]).output().unwrap()
}

fn stdout_of(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

const QUERIES: [&str; 4] = [
    "SELECT service_name, count(*) AS spans, sum(duration_nano) AS busy FROM spans \
     GROUP BY service_name ORDER BY service_name",
    "SELECT root_service, count(*) AS traces, max(spans) AS widest FROM traces \
     GROUP BY root_service ORDER BY root_service",
    "SELECT s.name, count(*) FROM spans s JOIN traces t ON s.trace_id = t.trace_id \
     WHERE t.errors > 0 AND s.status = 'error' GROUP BY s.name ORDER BY 2 DESC, 1 LIMIT 5",
    "SELECT count(*) FROM events",
];

#[test]
fn separate_processes_answer_as_one_process_does() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = allegro()
        .arg("--data-dir")
        .arg(&data)
        .args(["gen", "--spans", "30000", "--block-spans", "4000"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_nodes, port, _) = cluster(&data);
    for q in QUERIES {
        let alone = stdout_of(&sql(&data, None, q));
        let clustered = stdout_of(&sql(&data, Some(port), q));
        assert!(alone.lines().count() > 1, "{q}: {alone}");
        assert_eq!(clustered, alone, "{q}");
    }
}

#[test]
fn a_killed_executor_never_gives_a_partial_answer() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = allegro()
        .arg("--data-dir")
        .arg(&data)
        .args(["gen", "--spans", "30000", "--block-spans", "4000"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let q = QUERIES[0];
    let alone = stdout_of(&sql(&data, None, q));
    let (mut nodes, port, _) = cluster(&data);
    // One executor dies while queries run: each answer is the whole one (the scheduler ran
    // the lost tasks again on the other executor) or a clear error, never a part.
    let mut victim = nodes.0.remove(1);
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let _ = victim.kill();
        let _ = victim.wait();
    });
    let mut answers = 0;
    for _ in 0..6 {
        let o = sql(&data, Some(port), q);
        if o.status.success() {
            assert_eq!(String::from_utf8(o.stdout).unwrap(), alone);
            answers += 1;
        } else {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.starts_with("error: "), "{err}");
            assert!(!err.contains("panicked"), "{err}");
        }
    }
    killer.join().unwrap();
    // With one executor left the cluster still answers, whole.
    let after = sql(&data, Some(port), q);
    assert_eq!(stdout_of(&after), alone);
    assert!(answers > 0);
}
