//! Segment files: `<dir>/<first sequence number, 20 digits>.wal`, each opened by the magic and
//! followed by records. Reading stops at a torn or corrupt tail, which is cut off with a warning.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::record::{Frame, Record, SEGMENT_MAGIC, read_frame};

/// One segment on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The first sequence number it may hold.
    pub first_seq: u64,
    /// Its file.
    pub path: PathBuf,
}

/// The file of a segment that starts at `first_seq`.
pub fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.wal"))
}

/// The segments in `dir`, oldest first; other files are ignored.
pub fn list(dir: &Path) -> std::io::Result<Vec<Segment>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".wal")) else {
            continue;
        };
        if let Ok(first_seq) = stem.parse::<u64>() {
            out.push(Segment {
                first_seq,
                path: e.path(),
            });
        }
    }
    out.sort_by_key(|s| s.first_seq);
    Ok(out)
}

/// Creates an empty segment (magic only), durable with its directory entry.
pub fn create(dir: &Path, first_seq: u64) -> std::io::Result<(File, Segment)> {
    let path = segment_path(dir, first_seq);
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    f.write_all(SEGMENT_MAGIC)?;
    f.sync_all()?;
    sync_dir(dir)?;
    // Appending mode keeps writes at the end even after a failed write is cut off.
    let f = OpenOptions::new().append(true).open(&path)?;
    Ok((f, Segment { first_seq, path }))
}

/// Makes creations and deletions in `dir` durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// What reading a segment found.
#[derive(Debug, Default)]
pub struct ReadOutcome {
    /// Records read.
    pub records: usize,
    /// Why the tail was cut, if it was.
    pub torn: Option<String>,
}

/// Reads every intact record of `seg` in order; a torn or corrupt tail is truncated away so the
/// next start finds a clean file.
pub fn read(seg: &Segment, mut f: impl FnMut(u64, Record)) -> std::io::Result<ReadOutcome> {
    let data = Bytes::from(std::fs::read(&seg.path)?);
    let mut out = ReadOutcome::default();
    if data.len() < SEGMENT_MAGIC.len() || &data[..SEGMENT_MAGIC.len()] != SEGMENT_MAGIC {
        // A crash between creating the file and writing its magic leaves it short; anything
        // else is not ours to interpret.
        out.torn = Some(format!(
            "segment {} does not start with the WAL magic; its {} bytes are ignored",
            seg.path.display(),
            data.len()
        ));
        truncate(&seg.path, 0)?;
        return Ok(out);
    }
    let mut at = SEGMENT_MAGIC.len();
    loop {
        match read_frame(&data.slice(at..)) {
            Frame::Record(seq, rec, n) => {
                f(seq, rec);
                out.records += 1;
                at += n;
            }
            Frame::End => break,
            Frame::Torn(why) => {
                out.torn = Some(format!(
                    "segment {}: {why} at byte {at}; truncated to the last whole record ({} bytes dropped)",
                    seg.path.display(),
                    data.len() - at
                ));
                truncate(&seg.path, at as u64)?;
                break;
            }
        }
    }
    Ok(out)
}

fn truncate(path: &Path, len: u64) -> std::io::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    f.set_len(len)?;
    f.sync_all()
}
