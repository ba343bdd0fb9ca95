//! Remote write on the wire: a scripted HTTP receiver records what arrives and answers with
//! chosen statuses, to pin the headers, the snappy + protobuf body, retries on 5xx, dropping on
//! 4xx, and the on-disk queue surviving a restart. (The end-to-end test against a real
//! Prometheus is tests/tests/metrics_generator.rs.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::time::Duration;

use allegro_ingest::generator::prompb::{Exemplar, Label, Sample, TimeSeries, WriteRequest};
use allegro_ingest::generator::remote_write::{Endpoint, RemoteWrite, RemoteWriteConfig};
use prost::Message;

struct Received {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn request(&self) -> WriteRequest {
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&self.body)
            .expect("snappy");
        WriteRequest::decode(&raw[..]).expect("protobuf")
    }
}

/// Answers each request with the next status of `script` (then 200s).
fn receiver(script: Vec<u16>) -> (String, mpsc::Receiver<Received>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/api/v1/write", l.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut script = script.into_iter();
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut headers = Vec::new();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            loop {
                line.clear();
                r.read_line(&mut line).unwrap();
                let t = line.trim_end();
                if t.is_empty() {
                    break;
                }
                if let Some((k, v)) = t.split_once(':') {
                    headers.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
            let len: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.parse().unwrap())
                .unwrap_or(0);
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let status = script.next().unwrap_or(200);
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno"
            );
            if tx.send(Received { headers, body }).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

fn series(name: &str, v: f64) -> TimeSeries {
    TimeSeries {
        labels: vec![Label {
            name: "__name__".into(),
            value: name.into(),
        }],
        samples: vec![Sample {
            value: v,
            timestamp: 1_000,
        }],
        exemplars: vec![Exemplar {
            labels: vec![Label {
                name: "traceID".into(),
                value: "ab".repeat(16),
            }],
            value: 0.5,
            timestamp: 1_000,
        }],
    }
}

fn config(dir: &std::path::Path, url: &str, exemplars: bool) -> RemoteWriteConfig {
    let mut c = RemoteWriteConfig::new(dir);
    c.endpoints.push(Endpoint {
        url: url.into(),
        name: "prom".into(),
        send_exemplars: exemplars,
        headers: vec![("X-Extra".into(), "1".into())],
        timeout: Duration::from_secs(5),
    });
    c.min_backoff = Duration::from_millis(10);
    c.flush_deadline = Duration::from_secs(5);
    c
}

/// A URL nothing listens on (the port was free a moment ago): every attempt fails to connect.
fn dead_endpoint() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}/api/v1/write", l.local_addr().unwrap())
}

fn next(rx: &mpsc::Receiver<Received>) -> Received {
    rx.recv_timeout(Duration::from_secs(10))
        .expect("a request in time")
}

#[test]
fn retries_5xx_drops_4xx_and_sends_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (url, rx) = receiver(vec![503, 200, 400]);
    let rw = RemoteWrite::start(&config(dir.path(), &url, false)).unwrap();
    rw.enqueue("acme", &[series("a_total", 1.0)]);
    rw.enqueue("acme", &[series("b_total", 2.0)]);
    rw.enqueue("other", &[series("c_total", 3.0)]);
    let first = next(&rx);
    let retry = next(&rx);
    let refused = next(&rx);
    let last = next(&rx);
    assert_eq!(
        first.body, retry.body,
        "a 503 is retried with the same request"
    );
    assert_eq!(first.header("Content-Encoding"), Some("snappy"));
    assert_eq!(first.header("Content-Type"), Some("application/x-protobuf"));
    assert_eq!(
        first.header("X-Prometheus-Remote-Write-Version"),
        Some("0.1.0")
    );
    assert_eq!(first.header("X-Scope-OrgID"), Some("acme"));
    assert_eq!(first.header("X-Extra"), Some("1"));
    let req = first.request();
    assert_eq!(req.timeseries[0].labels[0].value, "a_total");
    assert!(
        req.timeseries[0].exemplars.is_empty(),
        "send_exemplars is off"
    );
    assert_eq!(refused.request().timeseries[0].labels[0].value, "b_total");
    assert_eq!(last.request().timeseries[0].labels[0].value, "c_total");
    assert_eq!(last.header("X-Scope-OrgID"), Some("other"));
    rw.shutdown();
    let (_, s) = &rw.stats()[0];
    assert_eq!(s.sent_requests.load(Relaxed), 2);
    assert_eq!(s.sent_samples.load(Relaxed), 2);
    assert_eq!(s.failed_attempts.load(Relaxed), 1);
    assert_eq!(s.dropped_requests.load(Relaxed), 1);
    assert_eq!(s.queued_requests.load(Relaxed), 0);
}

#[test]
fn queued_requests_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let dead = dead_endpoint();
    let mut cfg = config(dir.path(), &dead, true);
    cfg.flush_deadline = Duration::from_millis(200);
    let rw = RemoteWrite::start(&cfg).unwrap();
    rw.enqueue("acme", &[series("a_total", 1.0)]);
    rw.enqueue("acme", &[series("a_total", 2.0)]);
    rw.shutdown();
    assert_eq!(rw.stats()[0].1.queued_requests.load(Relaxed), 2);
    // Same endpoint name and position, receiver up: the queue drains in order.
    let (url, rx) = receiver(vec![]);
    let mut cfg = config(dir.path(), &url, true);
    cfg.endpoints[0].url = url;
    let rw = RemoteWrite::start(&cfg).unwrap();
    let a = next(&rx).request();
    let b = next(&rx).request();
    assert_eq!(a.timeseries[0].samples[0].value, 1.0);
    assert_eq!(b.timeseries[0].samples[0].value, 2.0);
    assert_eq!(a.timeseries[0].exemplars[0].labels[0].name, "traceID");
    rw.shutdown();
    assert_eq!(rw.stats()[0].1.queued_requests.load(Relaxed), 0);
}

#[test]
fn a_full_queue_drops_its_oldest_requests_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let dead = dead_endpoint();
    let mut cfg = config(dir.path(), &dead, false);
    cfg.flush_deadline = Duration::from_millis(50);
    // Always over the bound: only the request being retried and the newest are kept.
    cfg.max_queue_bytes = 1;
    let rw = RemoteWrite::start(&cfg).unwrap();
    for v in 1..=5 {
        rw.enqueue("acme", &[series("a_total", f64::from(v))]);
    }
    let s = rw.stats()[0].1.clone();
    assert_eq!(s.dropped_requests.load(Relaxed), 3);
    assert_eq!(s.queued_requests.load(Relaxed), 2);
    rw.shutdown();
    // The first (being retried) and the newest survive; the files on disk agree.
    let (url, rx) = receiver(vec![]);
    let mut cfg = config(dir.path(), &url, false);
    cfg.endpoints[0].url = url;
    let rw = RemoteWrite::start(&cfg).unwrap();
    let a = next(&rx).request();
    let b = next(&rx).request();
    assert_eq!(a.timeseries[0].samples[0].value, 1.0);
    assert_eq!(b.timeseries[0].samples[0].value, 5.0);
    rw.shutdown();
}

#[test]
fn requests_queued_too_long_are_dropped_unsent() {
    let dir = tempfile::tempdir().unwrap();
    let dead = dead_endpoint();
    let mut cfg = config(dir.path(), &dead, false);
    cfg.flush_deadline = Duration::from_millis(50);
    let rw = RemoteWrite::start(&cfg).unwrap();
    rw.enqueue("acme", &[series("a_total", 1.0)]);
    rw.enqueue("acme", &[series("a_total", 2.0)]);
    rw.shutdown();
    std::thread::sleep(Duration::from_millis(300));
    // Back with a receiver, but the two requests waited longer than the queue keeps them.
    let (url, rx) = receiver(vec![]);
    let mut cfg = config(dir.path(), &url, false);
    cfg.endpoints[0].url = url;
    cfg.max_queue_age = Duration::from_millis(200);
    let rw = RemoteWrite::start(&cfg).unwrap();
    rw.enqueue("acme", &[series("a_total", 3.0)]);
    let first = next(&rx).request();
    assert_eq!(first.timeseries[0].samples[0].value, 3.0);
    rw.shutdown();
    let s = rw.stats()[0].1.clone();
    assert_eq!(s.dropped_requests.load(Relaxed), 2);
    assert_eq!(s.sent_requests.load(Relaxed), 1);
    assert_eq!(s.queued_requests.load(Relaxed), 0);
}
