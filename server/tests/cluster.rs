//! A Ballista cluster of separate processes — `allegro scheduler` and two `allegro executor`s —
//! with `allegro serve` sending its SQL and its searches' block reads there, over one bucket
//! on a real S3 server (SeaweedFS) that the executors read straight from: it answers as one
//! process does, and a kill -9 of an executor mid-query gives a correct answer or a clear 503,
//! never a partial answer presented as whole.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::ports::free_port;
use common::{Killed, RECEIVERS};

/// How the tests run every `allegro` command with the config `config` in `dir`.
fn allegro(dir: &Path, config: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_allegro"));
    c.arg("--config")
        .arg(dir.join(config))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// A scheduler and two executors as processes, and `allegro serve` using them.
struct Processes {
    /// The bucket's server, stopped last.
    _bucket: common::seaweed::SeaweedFs,
    scheduler: Killed,
    executors: Vec<Killed>,
    serve: Killed,
    /// The serving process's HTTP API.
    api: String,
    logs: PathBuf,
}

impl Processes {
    /// What the processes logged, for a failing assertion.
    fn logs(&self) -> String {
        logs_in(&self.logs)
    }
}

/// The last lines of every log in `dir`.
fn logs_in(dir: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        out.push_str(&format!("--- {}\n", e.path().display()));
        for l in tail.into_iter().rev() {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// Waits until something accepts connections on `port`, or fails with `what` and the logs.
fn listening(port: u16, what: &str, logs: &dyn Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} is not listening on {port}:\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts a bucket on SeaweedFS, writes `local.yaml` (queries in one process) and
/// `cluster.yaml` (on the cluster) over it, puts 20 blocks into it, and starts the cluster and
/// a serving process on it; `None` outside CI without SeaweedFS.
fn start(dir: &Path) -> Option<Processes> {
    let weed = common::seaweed::binary()?;
    let bucket = common::seaweed::SeaweedFs::start(&weed, &dir.join("weed"));
    bucket.create_bucket("blocks");
    let storage = format!(
        "storage:\n  trace:\n    backend: s3\n    s3:\n      bucket: blocks\n      endpoint: {}\n      \
         insecure: true\n      forcepathstyle: true\n      region: us-east-1\n      \
         access_key: allegro\n      secret_key: allegro\n    wal:\n      path: {}\n",
        bucket.endpoint,
        dir.join("wal").display()
    );
    let scheduler_port = free_port();
    std::fs::write(dir.join("local.yaml"), format!("{RECEIVERS}{storage}")).unwrap();
    std::fs::write(
        dir.join("cluster.yaml"),
        format!(
            "{RECEIVERS}{storage}query:\n  ballista:\n    scheduler: 127.0.0.1:{scheduler_port}\n"
        ),
    )
    .unwrap();
    let ok = allegro(dir, "local.yaml")
        .args(["gen", "--spans", "40000", "--block-spans", "2000"])
        .args(["--duration", "2h"])
        .status()
        .unwrap();
    assert!(ok.success());
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let logged = |cmd: &mut Command, name: &str| {
        let f = std::fs::File::create(logs.join(format!("{name}.log"))).unwrap();
        cmd.stderr(f.try_clone().unwrap()).stdout(f);
        Killed(cmd.spawn().unwrap())
    };
    let scheduler = logged(
        allegro(dir, "cluster.yaml")
            .arg("scheduler")
            .arg(format!("--listen=127.0.0.1:{scheduler_port}"))
            .args(["--external-host", "127.0.0.1", "--executor-timeout", "3s"]),
        "scheduler",
    );
    let read_logs = || logs_in(&logs);
    listening(scheduler_port, "the scheduler", &read_logs);
    let mut executors = Vec::new();
    for i in 0..2 {
        let (flight, grpc) = (free_port(), free_port());
        executors.push(logged(
            allegro(dir, "cluster.yaml")
                .arg("executor")
                .arg(format!("--scheduler=127.0.0.1:{scheduler_port}"))
                .args(["--bind-host", "127.0.0.1", "--external-host", "127.0.0.1"])
                .arg(format!("--flight-port={flight}"))
                .arg(format!("--grpc-port={grpc}"))
                .args(["--concurrent-tasks", "2", "--heartbeat", "1s"])
                .arg("--work-dir")
                .arg(dir.join(format!("executor-{i}"))),
            &format!("executor-{i}"),
        ));
        listening(flight, "an executor", &read_logs);
    }
    let mut cmd = allegro(dir, "cluster.yaml");
    cmd.stderr(std::fs::File::create(logs.join("serve.log")).unwrap());
    let common::Served {
        child, base, lines, ..
    } = common::serve(cmd);
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Some(Processes {
        _bucket: bucket,
        scheduler,
        executors,
        serve: child,
        api: base,
        logs,
    })
}

/// An HTTP client that waits as long as a query on a cluster that lost an executor may take.
fn agent() -> ureq::Agent {
    common::agent(Duration::from_secs(120))
}

/// `sql` through the serving process (so on the cluster): status and CSV body.
fn on_cluster(agent: &ureq::Agent, api: &str, sql: &str) -> (u16, String) {
    let mut r = agent
        .post(format!("{api}/api/sql"))
        .header("Accept", "text/csv")
        .send(sql)
        .unwrap();
    let status = r.status().as_u16();
    (status, r.body_mut().read_to_string().unwrap_or_default())
}

/// `sql` answered by `allegro sql` in one process over the same store: CSV, or the error it
/// printed.
fn in_one_process(dir: &Path, sql: &str) -> Result<String, String> {
    let out = allegro(dir, "local.yaml")
        .args(["sql", "--format", "csv", sql])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Queries whose answers must not depend on where they run: aggregates over every block,
/// the traces view, a join, window functions, list columns, a LIMIT.
const QUERIES: [&str; 7] = [
    "SELECT service_name, count(*) AS n, sum(duration_nano) AS d FROM spans GROUP BY 1 ORDER BY 1",
    "SELECT kind, status, count(*) FROM spans GROUP BY 1, 2 ORDER BY 1, 2",
    "SELECT root_service, count(*), max(spans), sum(errors) FROM traces GROUP BY 1 ORDER BY 1",
    "SELECT c.service_name AS child, p.service_name AS parent, count(*) AS calls FROM spans c \
     JOIN spans p ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id \
     WHERE c.service_name <> p.service_name GROUP BY 1, 2 ORDER BY 1, 2",
    "SELECT service_name, name, row_number() OVER (PARTITION BY service_name ORDER BY \
     duration_nano DESC, span_id) AS r FROM spans ORDER BY r, service_name LIMIT 20",
    "SELECT count(*), count(DISTINCT trace_id) FROM events",
    "SELECT duration_nano FROM spans ORDER BY duration_nano DESC, span_id LIMIT 5",
];

#[test]
fn a_cluster_of_processes_answers_sql_and_searches_as_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let Some(p) = start(dir.path()) else {
        return;
    };
    let agent = agent();
    for sql in QUERIES {
        let want = in_one_process(dir.path(), sql).unwrap();
        assert!(want.lines().count() > 1, "{sql}: no rows to compare");
        let (status, got) = on_cluster(&agent, &p.api, sql);
        assert_eq!(status, 200, "{sql}: {got}\n{}", p.logs());
        assert_eq!(got, want, "{sql}");
    }
    // A query that fails on its data is the user's mistake on the cluster as in one process.
    let bad = "SELECT CAST(name AS INT) FROM spans";
    let local = in_one_process(dir.path(), bad).unwrap_err();
    let (status, body) = on_cluster(&agent, &p.api, bad);
    assert_eq!(status, 400, "{body}");
    for text in [&local, &body] {
        assert!(text.contains("Cannot cast string"), "{text}");
    }
    // Searches: blocks read on the executors in waves, the same traces and spansets as
    // `allegro query` finds in one process, cut short by a limit or not.
    for (q, limit) in SEARCHES {
        let want = traces_of(&search_in_one_process(dir.path(), q, limit));
        assert!(!want.is_empty(), "{q}: nothing to compare");
        let mut r = agent
            .get(format!(
                "{}/api/search?q={}&limit={limit}&spss=5",
                p.api,
                url_encoded(q)
            ))
            .call()
            .unwrap();
        let body = r.body_mut().read_to_string().unwrap_or_default();
        assert_eq!(r.status().as_u16(), 200, "{q}: {body}\n{}", p.logs());
        let got = traces_of(&serde_json::from_str(&body).unwrap());
        assert_eq!(got, want, "{q} limit {limit}");
    }
}

/// Searches, plain and structural, some cut short by their limit.
const SEARCHES: [(&str, usize); 4] = [
    ("{ }", 7),
    ("{ status = error }", 1000),
    (
        "{ resource.service.name = \"api-gateway\" } >> { status = error }",
        20,
    ),
    ("{ kind = server } | count() > 3", 1000),
];

/// `q` answered by `allegro query` in one process over the same bucket, as Tempo's JSON.
fn search_in_one_process(dir: &Path, q: &str, limit: usize) -> serde_json::Value {
    let out = common::succeeded(
        allegro(dir, "local.yaml")
            .args(["query", q, "--format", "json", "--spss", "5"])
            .arg(format!("--limit={limit}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A search answer's traces: ID, start and each spanset's span IDs (sorted), in answer order.
fn traces_of(answer: &serde_json::Value) -> Vec<(String, String, Vec<Vec<String>>)> {
    let Some(traces) = answer["traces"].as_array() else {
        return Vec::new();
    };
    traces
        .iter()
        .map(|t| {
            let mut sets: Vec<Vec<String>> = t["spanSets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    let mut ids: Vec<String> = s["spans"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|x| x["spanID"].as_str().unwrap_or_default().to_string())
                        .collect();
                    ids.sort();
                    ids
                })
                .collect();
            sets.sort();
            (
                t["traceID"].as_str().unwrap_or_default().to_string(),
                t["startTimeUnixNano"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                sets,
            )
        })
        .collect()
}

/// `s` for a URL's query string.
fn url_encoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn kill_9_of_an_executor_mid_query_answers_whole_or_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut p) = start(dir.path()) else {
        return;
    };
    // Heavy enough to keep both executors busy: a join over every span, then a shuffle.
    let sql = QUERIES[3];
    let want = in_one_process(dir.path(), sql).unwrap();
    let api = p.api.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let outcomes: Arc<Mutex<Vec<(Instant, u16)>>> = Arc::default();
    let wrong: Arc<Mutex<Option<String>>> = Arc::default();
    let client = {
        let (stop, answered, outcomes, wrong, want) = (
            stop.clone(),
            answered.clone(),
            outcomes.clone(),
            wrong.clone(),
            want.clone(),
        );
        std::thread::spawn(move || {
            let agent = agent();
            while !stop.load(Ordering::SeqCst) {
                let (status, body) = on_cluster(&agent, &api, sql);
                outcomes.lock().unwrap().push((Instant::now(), status));
                match status {
                    200 if body == want => {
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    503 => assert!(body.contains("retry"), "{body}"),
                    _ => *wrong.lock().unwrap() = Some(format!("{status}: {body}")),
                }
            }
        })
    };
    // The kill lands while queries run back to back: after the first whole answer.
    let deadline = Instant::now() + Duration::from_secs(120);
    while answered.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no answer:\n{}", p.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(30));
    let killed_at = Instant::now();
    drop(p.executors.remove(0));
    let before = answered.load(Ordering::SeqCst);
    // The other executor answers once the scheduler has taken the killed one for lost.
    while answered.load(Ordering::SeqCst) < before + 3 {
        assert!(
            Instant::now() < killed_at + Duration::from_secs(120),
            "no whole answer after the kill; outcomes {:?}:\n{}",
            outcomes.lock().unwrap().len(),
            p.logs()
        );
        assert!(wrong.lock().unwrap().is_none());
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    client.join().unwrap();
    let w = wrong.lock().unwrap().clone();
    assert!(w.is_none(), "an answer was neither whole nor a 503: {w:?}");
    let after: Vec<u16> = outcomes
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, _)| *at > killed_at)
        .map(|(_, s)| *s)
        .collect();
    eprintln!("after the kill: {after:?}");
    let _ = (&p.scheduler, &p.serve);
}
