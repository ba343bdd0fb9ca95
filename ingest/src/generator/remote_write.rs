//! Prometheus remote write with an on-disk queue: every collection becomes one snappy-compressed
//! `WriteRequest` file per endpoint under `metrics_generator.storage.path` before it is sent, and
//! the file is deleted only once the receiver accepted it, so neither a restarting receiver nor
//! a restarting Allegro loses what was collected. One sender thread per endpoint sends the files
//! in order, retrying with exponential backoff on connection errors, 5xx and 429.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use prost::Message;

use crate::generator::prompb::{TimeSeries, WriteRequest};

/// One `remote_write` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// Where to POST, e.g. `http://prometheus:9090/api/v1/write`.
    pub url: String,
    /// Name in logs and self-metrics (default: the URL's position).
    pub name: String,
    /// Send exemplars (Prometheus needs `--enable-feature=exemplar-storage`).
    pub send_exemplars: bool,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Timeout of one request (30s).
    pub timeout: Duration,
}

/// `metrics_generator.storage` as far as remote write is concerned.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteWriteConfig {
    /// Receivers.
    pub endpoints: Vec<Endpoint>,
    /// Add `X-Scope-OrgID: <tenant>` (default true).
    pub add_org_id_header: bool,
    /// Queue directory (`storage.path`).
    pub dir: PathBuf,
    /// Most queued bytes per endpoint; the oldest requests are dropped past it.
    pub max_queue_bytes: u64,
    /// Longest a request waits in the queue; older ones are dropped unsent (Prometheus refuses
    /// samples much older than its newest as out of bounds, so sending them only fails).
    pub max_queue_age: Duration,
    /// How long shutdown keeps sending what is queued (`remote_write_flush_deadline`, 1m).
    pub flush_deadline: Duration,
    /// First retry delay.
    pub min_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
}

impl RemoteWriteConfig {
    /// Defaults with the queue in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            endpoints: Vec::new(),
            add_org_id_header: true,
            dir: dir.into(),
            max_queue_bytes: 512 << 20,
            max_queue_age: Duration::from_secs(2 * 3600),
            flush_deadline: Duration::from_secs(60),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// Counters of one endpoint.
#[derive(Debug, Default)]
pub struct EndpointStats {
    /// Requests accepted by the receiver.
    pub sent_requests: AtomicU64,
    /// Samples in them.
    pub sent_samples: AtomicU64,
    /// Failed attempts (retried).
    pub failed_attempts: AtomicU64,
    /// Requests given up: refused as bad (4xx) or pushed out of a full queue.
    pub dropped_requests: AtomicU64,
    /// Bytes waiting on disk.
    pub queued_bytes: AtomicU64,
    /// Requests waiting.
    pub queued_requests: AtomicU64,
}

#[derive(Debug)]
struct Pending {
    path: PathBuf,
    bytes: u64,
}

struct Queue {
    endpoint: Endpoint,
    dir: PathBuf,
    add_org_id: bool,
    max_bytes: u64,
    max_age: Duration,
    backoff: (Duration, Duration),
    pending: Mutex<(VecDeque<Pending>, u64)>,
    wake: Condvar,
    stats: Arc<EndpointStats>,
}

/// The remote-write outputs.
pub struct RemoteWrite {
    queues: Vec<Arc<Queue>>,
    stop: Arc<AtomicBool>,
    deadline: Duration,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for RemoteWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteWrite").finish_non_exhaustive()
    }
}

/// Queue file: `AGRW` magic, tenant length (u16 LE), tenant, samples (u32 LE), snappy body.
const MAGIC: &[u8; 4] = b"AGRW";

fn encode_file(tenant: &str, samples: u32, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(body.len() + tenant.len() + 10);
    f.extend_from_slice(MAGIC);
    f.extend_from_slice(&(tenant.len() as u16).to_le_bytes());
    f.extend_from_slice(tenant.as_bytes());
    f.extend_from_slice(&samples.to_le_bytes());
    f.extend_from_slice(body);
    f
}

fn decode_file(f: &[u8]) -> Option<(&str, u32, &[u8])> {
    let rest = f.strip_prefix(MAGIC)?;
    let n = u16::from_le_bytes(rest.get(..2)?.try_into().ok()?) as usize;
    let tenant = std::str::from_utf8(rest.get(2..2 + n)?).ok()?;
    let samples = u32::from_le_bytes(rest.get(2 + n..6 + n)?.try_into().ok()?);
    Some((tenant, samples, rest.get(6 + n..)?))
}

/// A directory name for an endpoint that stays the same across restarts.
fn queue_dir(root: &Path, i: usize, e: &Endpoint) -> PathBuf {
    let safe: String = e
        .name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    root.join("remote_write").join(format!("{i}-{safe}"))
}

impl RemoteWrite {
    /// Opens the queues (requests left from a previous run are sent first) and starts one
    /// sender thread per endpoint.
    pub fn start(cfg: &RemoteWriteConfig) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut queues = Vec::new();
        let mut threads = Vec::new();
        for (i, e) in cfg.endpoints.iter().enumerate() {
            let dir = queue_dir(&cfg.dir, i, e);
            std::fs::create_dir_all(&dir)?;
            let mut files: Vec<(String, PathBuf, u64)> = Vec::new();
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().to_string();
                if name.ends_with(".tmp") {
                    let _ = std::fs::remove_file(entry.path());
                } else if name.ends_with(".rw") {
                    files.push((name, entry.path(), entry.metadata()?.len()));
                }
            }
            files.sort();
            let total = files.iter().map(|f| f.2).sum();
            let stats = Arc::new(EndpointStats::default());
            stats.queued_bytes.store(total, Relaxed);
            stats.queued_requests.store(files.len() as u64, Relaxed);
            if !files.is_empty() {
                tracing::info!(endpoint = %e.name, requests = files.len(), "remote write: resending requests queued before the restart");
            }
            let q = Arc::new(Queue {
                endpoint: e.clone(),
                dir,
                add_org_id: cfg.add_org_id_header,
                max_bytes: cfg.max_queue_bytes,
                max_age: cfg.max_queue_age,
                backoff: (cfg.min_backoff, cfg.max_backoff),
                pending: Mutex::new((
                    files
                        .into_iter()
                        .map(|(_, path, bytes)| Pending { path, bytes })
                        .collect(),
                    0,
                )),
                wake: Condvar::new(),
                stats,
            });
            let (q2, stop2) = (q.clone(), stop.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("remote-write-{i}"))
                    .spawn(move || q2.run(&stop2))?,
            );
            queues.push(q);
        }
        Ok(Self {
            queues,
            stop,
            deadline: cfg.flush_deadline,
            threads: Mutex::new(threads),
        })
    }

    /// Queues one tenant's collected series on every endpoint.
    pub fn enqueue(&self, tenant: &str, series: &[TimeSeries]) {
        for q in &self.queues {
            if let Err(e) = q.enqueue(tenant, series) {
                q.stats.dropped_requests.fetch_add(1, Relaxed);
                tracing::error!(endpoint = %q.endpoint.name, %tenant, error = %e, "remote write: cannot queue a request on disk; it is dropped");
            }
        }
    }

    /// Counters per endpoint name.
    pub fn stats(&self) -> Vec<(String, Arc<EndpointStats>)> {
        self.queues
            .iter()
            .map(|q| (q.endpoint.name.clone(), q.stats.clone()))
            .collect()
    }

    /// Waits until every queue is empty or `flush_deadline` passed, then stops the senders;
    /// what is left stays on disk for the next start.
    pub fn shutdown(&self) {
        self.shutdown_within(self.deadline);
    }

    /// Like [`RemoteWrite::shutdown`], waiting at most `limit` (and never past
    /// `flush_deadline`).
    pub fn shutdown_within(&self, limit: Duration) {
        let until = Instant::now() + self.deadline.min(limit);
        while Instant::now() < until && self.queues.iter().any(|q| !q.pending.lock().0.is_empty()) {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop.store(true, Relaxed);
        for q in &self.queues {
            q.wake.notify_all();
        }
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }
}

/// When the request in queue file `path` was queued (unix milliseconds, the start of its name).
fn queued_at(path: &Path) -> Option<u64> {
    path.file_name()?.to_str()?.get(..16)?.parse().ok()
}

/// How a send attempt ended.
enum Sent {
    Ok,
    Retry(String),
    Drop(String),
}

impl Queue {
    fn enqueue(&self, tenant: &str, series: &[TimeSeries]) -> std::io::Result<()> {
        let mut req = WriteRequest {
            timeseries: series.to_vec(),
        };
        if !self.endpoint.send_exemplars {
            req.timeseries.iter_mut().for_each(|t| t.exemplars.clear());
        }
        let samples: usize = req.timeseries.iter().map(|t| t.samples.len()).sum();
        let body = snap::raw::Encoder::new()
            .compress_vec(&req.encode_to_vec())
            .map_err(std::io::Error::other)?;
        let file = encode_file(tenant, samples.min(u32::MAX as usize) as u32, &body);
        let mut pending = self.pending.lock();
        pending.1 += 1;
        let name = format!(
            "{:016}-{:08}.rw",
            crate::generator::registry::now_ms(),
            pending.1
        );
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, &file)?;
        std::fs::rename(&tmp, &path)?;
        let bytes = file.len() as u64;
        pending.0.push_back(Pending { path, bytes });
        self.stats.queued_bytes.fetch_add(bytes, Relaxed);
        self.stats.queued_requests.fetch_add(1, Relaxed);
        // Past the bound the oldest requests go (the one being sent stays, it is first).
        while self.stats.queued_bytes.load(Relaxed) > self.max_bytes && pending.0.len() > 2 {
            if let Some(old) = pending.0.remove(1) {
                let _ = std::fs::remove_file(&old.path);
                self.forget(&old);
                self.stats.dropped_requests.fetch_add(1, Relaxed);
                tracing::warn!(endpoint = %self.endpoint.name, "remote write queue is over its size bound; the oldest request was dropped");
            }
        }
        self.wake.notify_one();
        Ok(())
    }

    fn forget(&self, p: &Pending) {
        self.stats.queued_bytes.fetch_sub(p.bytes, Relaxed);
        self.stats.queued_requests.fetch_sub(1, Relaxed);
    }

    fn run(&self, stop: &AtomicBool) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(self.endpoint.timeout))
            .build()
            .into();
        let mut backoff = self.backoff.0;
        loop {
            let next = {
                let mut p = self.pending.lock();
                while p.0.is_empty() && !stop.load(Relaxed) {
                    self.wake.wait_for(&mut p, Duration::from_secs(1));
                }
                if stop.load(Relaxed) {
                    return;
                }
                p.0.front().map(|f| f.path.clone())
            };
            let Some(path) = next else { continue };
            let age = queued_at(&path).map(|at| {
                let now = crate::generator::registry::now_ms().max(0) as u64;
                Duration::from_millis(now.saturating_sub(at))
            });
            let outcome = match std::fs::read(&path) {
                _ if age.is_some_and(|a| a > self.max_age) => Sent::Drop(format!(
                    "queued {:?} ago, longer than {:?}: too old to be accepted",
                    age.unwrap_or_default(),
                    self.max_age
                )),
                Ok(f) => match decode_file(&f) {
                    Some((tenant, samples, body)) => match self.send(&agent, tenant, body) {
                        Sent::Ok => {
                            self.stats.sent_requests.fetch_add(1, Relaxed);
                            self.stats
                                .sent_samples
                                .fetch_add(u64::from(samples), Relaxed);
                            Sent::Ok
                        }
                        other => other,
                    },
                    None => Sent::Drop("queue file is corrupt".into()),
                },
                Err(e) => Sent::Drop(format!("cannot read queue file: {e}")),
            };
            match outcome {
                Sent::Retry(why) => {
                    self.stats.failed_attempts.fetch_add(1, Relaxed);
                    tracing::warn!(endpoint = %self.endpoint.name, url = %self.endpoint.url, error = %why, retry_in = ?backoff, "remote write failed; retrying");
                    let mut p = self.pending.lock();
                    if !stop.load(Relaxed) {
                        self.wake.wait_for(&mut p, backoff);
                    }
                    backoff = (backoff * 2).min(self.backoff.1);
                    continue;
                }
                Sent::Drop(why) => {
                    self.stats.dropped_requests.fetch_add(1, Relaxed);
                    tracing::error!(endpoint = %self.endpoint.name, url = %self.endpoint.url, error = %why, "remote write request refused; it is dropped");
                }
                Sent::Ok => {}
            }
            backoff = self.backoff.0;
            let _ = std::fs::remove_file(&path);
            let mut p = self.pending.lock();
            if p.0.front().is_some_and(|f| f.path == path)
                && let Some(done) = p.0.pop_front()
            {
                self.forget(&done);
            }
        }
    }

    fn send(&self, agent: &ureq::Agent, tenant: &str, body: &[u8]) -> Sent {
        let mut req = agent
            .post(&self.endpoint.url)
            .header("Content-Type", "application/x-protobuf")
            .header("Content-Encoding", "snappy")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .header("User-Agent", concat!("allegro/", env!("CARGO_PKG_VERSION")));
        if self.add_org_id {
            req = req.header("X-Scope-OrgID", tenant);
        }
        for (k, v) in &self.endpoint.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        match req.send(body) {
            Err(e) => Sent::Retry(e.to_string()),
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                if (200..300).contains(&status) {
                    return Sent::Ok;
                }
                let text = resp
                    .body_mut()
                    .with_config()
                    .limit(4096)
                    .read_to_string()
                    .unwrap_or_default();
                let why = format!("HTTP {status}: {}", text.trim());
                if status == 429 || status >= 500 {
                    Sent::Retry(why)
                } else {
                    Sent::Drop(why)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_files_round_trip() {
        let f = encode_file("tenant-a", 42, b"body");
        assert_eq!(decode_file(&f), Some(("tenant-a", 42, &b"body"[..])));
        assert_eq!(decode_file(b"AGRW\x09"), None);
        assert_eq!(decode_file(b"nope"), None);
    }
}
