//! The write-ahead log: every accepted batch is on disk (fsync'd) before it is acknowledged.
//!
//! One writer thread takes records from a queue, writes everything that is waiting in one go,
//! calls `fdatasync` once for the whole group (group commit), applies the records to the live
//! head in sequence order, then acknowledges each. Applying in sequence order under the WAL is
//! what makes replay exact: a `Flushed` record names, per trace, the last sequence number its
//! block holds, and every later chunk of that trace has a larger number.

pub mod damaged;
pub mod record;
pub mod segment;

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

pub use self::record::Record;
use self::segment::Segment;
use crate::error::{IngestError, Result};
use crate::metrics::IngestMetrics;

/// Receives records in sequence order after they are durable and before they are acknowledged.
pub trait WalSink: Send + Sync + 'static {
    /// Applies one record.
    fn apply(&self, seq: u64, record: &Record);
}

/// WAL settings.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// Directory of the segment files.
    pub dir: PathBuf,
    /// A segment is closed and a new one started past this size.
    pub segment_bytes: u64,
    /// Bytes written per group commit at most (more waits for the next fsync).
    pub max_group_bytes: usize,
}

impl WalOptions {
    /// Defaults for `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_bytes: 64 << 20,
            max_group_bytes: 16 << 20,
        }
    }
}

/// What replay found.
#[derive(Debug, Default)]
pub struct ReplaySummary {
    /// Segments read.
    pub segments: usize,
    /// Records read.
    pub records: usize,
    /// Stretches that held no readable record (torn tails, damage), and what became of each.
    pub damage: Vec<String>,
    /// The next sequence number to use.
    pub next_seq: u64,
}

/// Reads every segment in `dir` in order, handing each intact record to `f`. With `repair`,
/// `dir` is created if missing and damaged stretches are set aside and cut out of their
/// segments ([`segment::read`]); without (read-only storage), nothing is written and a missing
/// `dir` is an empty WAL.
pub fn replay(dir: &Path, repair: bool, mut f: impl FnMut(u64, Record)) -> Result<ReplaySummary> {
    let mut out = ReplaySummary {
        next_seq: 1,
        ..Default::default()
    };
    if repair {
        std::fs::create_dir_all(dir)
            .map_err(|e| IngestError::Wal(format!("cannot create {}: {e}", dir.display())))?;
    } else if !dir.exists() {
        return Ok(out);
    }
    if repair {
        // Damage set aside by earlier starts has a bounded life (`damaged`).
        let aside = dir.join(segment::DAMAGED_DIR);
        match damaged::prune(
            &aside,
            std::time::SystemTime::now(),
            damaged::KEEP_FOR,
            damaged::KEEP_BYTES,
        ) {
            Ok(gone) if !gone.is_empty() => {
                tracing::info!(
                    files = gone.len(),
                    "deleted damaged WAL bytes past their lifetime"
                )
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, dir = %aside.display(), "cannot prune damaged WAL bytes")
            }
        }
    }
    let segs = segment::list(dir)
        .map_err(|e| IngestError::Wal(format!("cannot list {}: {e}", dir.display())))?;
    out.segments = segs.len();
    for seg in &segs {
        out.next_seq = out.next_seq.max(seg.first_seq);
        let r = segment::read(seg, repair, |seq, rec| {
            out.next_seq = out.next_seq.max(seq + 1);
            f(seq, rec)
        })
        .map_err(|e| IngestError::Wal(format!("cannot read {}: {e}", seg.path.display())))?;
        out.records += r.records;
        for d in r.damage {
            tracing::warn!("{d}");
            out.damage.push(d);
        }
    }
    Ok(out)
}

/// Whether `e` says the storage refuses writes (as opposed to failing them).
pub fn refuses_writes(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
    )
}

/// Whether `dir` takes writes: it exists or can be made, and a file can be created in it.
/// `Err` says why not (a read-only filesystem, no permission).
pub fn probe_writable(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(".write-probe");
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

enum Cmd {
    Write(Record, oneshot::Sender<Result<u64>>),
    /// Segments holding only sequence numbers below this are no longer needed.
    DeleteBefore(u64),
}

/// Handle to the WAL writer thread.
pub struct Wal {
    tx: mpsc::Sender<Cmd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Wal")
    }
}

impl Wal {
    /// Starts the writer on a fresh segment after a [`replay`] of the same directory.
    pub fn start(
        opts: WalOptions,
        next_seq: u64,
        sink: Arc<dyn WalSink>,
        metrics: Arc<IngestMetrics>,
    ) -> Result<Self> {
        let err = |e: std::io::Error| IngestError::Wal(format!("{}: {e}", opts.dir.display()));
        let mut closed: VecDeque<Segment> = segment::list(&opts.dir).map_err(err)?.into();
        // A previous run's empty last segment would share the new one's name.
        closed.retain(|s| s.first_seq != next_seq);
        let (file, seg) = segment::create(&opts.dir, next_seq).map_err(err)?;
        let (tx, rx) = mpsc::channel(4096);
        let mut w = Writer {
            opts,
            closed,
            file,
            seg,
            size: record::SEGMENT_MAGIC.len() as u64,
            next_seq,
            sink,
            metrics,
            buf: Vec::new(),
        };
        w.metrics.set_wal_segments(w.closed.len() + 1);
        let thread = std::thread::Builder::new()
            .name("allegro-wal".into())
            .spawn(move || w.run(rx))
            .map_err(|e| IngestError::Wal(format!("cannot start the WAL thread: {e}")))?;
        Ok(Self {
            tx,
            thread: Some(thread),
        })
    }

    /// Makes `record` durable, applies it, and returns its sequence number.
    pub async fn write(&self, record: Record) -> Result<u64> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Cmd::Write(record, ack))
            .await
            .map_err(|_| IngestError::ShuttingDown)?;
        done.await.map_err(|_| IngestError::ShuttingDown)?
    }

    /// Lets the writer delete segments that hold only sequence numbers below `seq`.
    pub async fn delete_before(&self, seq: u64) {
        let _ = self.tx.send(Cmd::DeleteBefore(seq)).await;
    }

    /// Stops the writer after everything queued is written.
    pub fn close(mut self) {
        let Self { tx, thread } = &mut self;
        let (dummy, _) = mpsc::channel(1);
        drop(std::mem::replace(tx, dummy));
        if let Some(t) = thread.take() {
            let _ = t.join();
        }
    }
}

struct Writer {
    opts: WalOptions,
    closed: VecDeque<Segment>,
    file: File,
    seg: Segment,
    size: u64,
    next_seq: u64,
    sink: Arc<dyn WalSink>,
    metrics: Arc<IngestMetrics>,
    buf: Vec<u8>,
}

impl Writer {
    fn run(&mut self, mut rx: mpsc::Receiver<Cmd>) {
        let mut group: Vec<(Record, oneshot::Sender<Result<u64>>)> = Vec::new();
        while let Some(cmd) = rx.blocking_recv() {
            self.buf.clear();
            // Everything already waiting joins this group, up to the byte budget.
            let mut next = Some(cmd);
            while let Some(cmd) = next.take() {
                match cmd {
                    Cmd::Write(r, ack) => {
                        r.encode(self.next_seq + group.len() as u64, &mut self.buf);
                        group.push((r, ack));
                    }
                    Cmd::DeleteBefore(seq) => {
                        // Rolling renumbers segments: write what is pending first.
                        self.commit(&mut group);
                        self.delete_before(seq);
                    }
                }
                if self.buf.len() < self.opts.max_group_bytes {
                    next = rx.try_recv().ok();
                }
            }
            self.commit(&mut group);
        }
        let _ = self.file.sync_data();
    }

    /// Writes the encoded group in `buf` with one fsync, then applies and acknowledges it.
    fn commit(&mut self, group: &mut Vec<(Record, oneshot::Sender<Result<u64>>)>) {
        if group.is_empty() {
            return;
        }
        let first = self.next_seq;
        let started = Instant::now();
        let result = self
            .file
            .write_all(&self.buf)
            .and_then(|()| self.file.sync_data());
        self.metrics
            .observe_fsync(started.elapsed(), self.buf.len());
        match result {
            Ok(()) => {
                self.size += self.buf.len() as u64;
                self.next_seq += group.len() as u64;
                for (i, (r, ack)) in group.drain(..).enumerate() {
                    let seq = first + i as u64;
                    self.sink.apply(seq, &r);
                    let _ = ack.send(Ok(seq));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, segment = %self.seg.path.display(), "WAL write failed");
                // Drop the partial write so the file stays a sequence of whole records.
                let _ = self.file.set_len(self.size);
                for (_, ack) in group.drain(..) {
                    let _ = ack.send(Err(IngestError::Wal(format!(
                        "cannot write {}: {e}",
                        self.seg.path.display()
                    ))));
                }
            }
        }
        self.buf.clear();
        if self.size >= self.opts.segment_bytes {
            self.roll();
        }
    }

    fn roll(&mut self) {
        match segment::create(&self.opts.dir, self.next_seq) {
            Ok((file, seg)) => {
                let _ = self.file.sync_all();
                let old = std::mem::replace(&mut self.seg, seg);
                self.closed.push_back(old);
                self.file = file;
                self.size = record::SEGMENT_MAGIC.len() as u64;
                self.metrics.set_wal_segments(self.closed.len() + 1);
            }
            Err(e) => tracing::error!(error = %e, "cannot start a new WAL segment"),
        }
    }

    fn delete_before(&mut self, seq: u64) {
        // The open segment goes too when nothing in it is needed.
        if seq >= self.next_seq && self.size > record::SEGMENT_MAGIC.len() as u64 {
            self.roll();
        }
        let mut deleted = false;
        while let Some(s) = self.closed.front() {
            let next_first = self
                .closed
                .get(1)
                .map_or(self.seg.first_seq, |n| n.first_seq);
            if next_first > seq {
                break;
            }
            if let Err(e) = std::fs::remove_file(&s.path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(error = %e, path = %s.path.display(), "cannot delete WAL segment");
                break;
            }
            deleted = true;
            self.closed.pop_front();
        }
        if deleted {
            let _ = segment::sync_dir(&self.opts.dir);
            self.metrics.set_wal_segments(self.closed.len() + 1);
        }
    }
}
