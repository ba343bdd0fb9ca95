//! Segment files: `<dir>/<first sequence number, 20 digits>.wal`, each opened by the magic and
//! followed by records. Reading skips what is not a readable record (a torn tail, damage) and
//! resumes at the next intact one; the skipped bytes are kept aside ([`read`]).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::record::{self, FRAME_HEADER, Frame, Record, SEGMENT_MAGIC, read_frame};

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
    /// Each stretch of bytes that held no readable record, and what became of it.
    pub damage: Vec<String>,
}

/// Where damaged bytes are kept, inside the WAL directory: nothing is deleted that someone
/// might want to look at.
pub const DAMAGED_DIR: &str = "damaged";

/// Reads every intact record of `seg` in order. A stretch that is not a readable record (a
/// torn tail after a crash, flipped bits, a damaged segment header) is skipped: reading
/// resumes at the next intact record, so one bad byte costs one record, not the rest of the
/// segment. With `repair`, each such stretch is copied to `<dir>/damaged/` and the segment is
/// rewritten without it, so the next start finds a clean file; without (read-only storage),
/// nothing is written.
pub fn read(
    seg: &Segment,
    repair: bool,
    mut f: impl FnMut(u64, Record),
) -> std::io::Result<ReadOutcome> {
    let data = Bytes::from(std::fs::read(&seg.path)?);
    let mut out = ReadOutcome::default();
    let mut good: Vec<std::ops::Range<usize>> = Vec::new();
    let mut bad: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    // A record's sequence number is at least the segment's first and above the last read.
    let mut next_seq = seg.first_seq;
    let mut at = SEGMENT_MAGIC.len();
    if data.len() < SEGMENT_MAGIC.len() || &data[..SEGMENT_MAGIC.len()] != SEGMENT_MAGIC {
        // Short: a crash between creating the file and writing its magic. Otherwise a damaged
        // header, with records behind it.
        let resume = resync(&data, 0, next_seq);
        let end = resume.unwrap_or(data.len());
        if end > 0 {
            bad.push((0..end, "the WAL magic is missing".into()));
        }
        at = end;
    }
    while at < data.len() {
        match read_frame(&data.slice(at..)) {
            Frame::Record(seq, rec, n) => {
                f(seq, rec);
                out.records += 1;
                good.push(at..at + n);
                next_seq = seq + 1;
                at += n;
            }
            Frame::End => break,
            Frame::Torn(why) => {
                let end = resync(&data, at + 1, next_seq).unwrap_or(data.len());
                bad.push((at..end, why));
                at = end;
            }
        }
    }
    for (range, why) in &bad {
        let resumed = if range.end < data.len() {
            format!("reading resumed at byte {}", range.end)
        } else {
            "nothing readable after it".to_string()
        };
        let kept = if repair {
            let name = seg
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            let dir = seg
                .path
                .parent()
                .unwrap_or(Path::new("."))
                .join(DAMAGED_DIR);
            let aside = dir.join(format!(
                "{}.{}-{}",
                name.unwrap_or_default(),
                range.start,
                range.end
            ));
            std::fs::create_dir_all(&dir)?;
            std::fs::write(&aside, &data[range.clone()])?;
            File::open(&aside)?.sync_all()?;
            format!("kept in {}", aside.display())
        } else {
            "left in place (read-only)".to_string()
        };
        out.damage.push(format!(
            "segment {}: {why} at byte {}; {} bytes skipped, {kept}; {resumed}",
            seg.path.display(),
            range.start,
            range.len()
        ));
    }
    if repair && !bad.is_empty() {
        rewrite(seg, &data, &good)?;
    }
    Ok(out)
}

/// The first offset at or after `from` where an intact record with a sequence number of at
/// least `min_seq` starts. The frame's kind and sequence number are checked before its
/// checksum, so scanning a 64 MiB segment costs about one comparison per byte.
fn resync(data: &Bytes, from: usize, min_seq: u64) -> Option<usize> {
    let last = data.len().checked_sub(FRAME_HEADER + 9)?;
    (from..=last).find(|&p| {
        let kind = data[p + FRAME_HEADER];
        let seq = u64::from_le_bytes(
            data[p + FRAME_HEADER + 1..p + FRAME_HEADER + 9]
                .try_into()
                .unwrap_or([0; 8]),
        );
        // Sequence numbers grow by one per record; 2^40 past the last read is no WAL's.
        record::KINDS.contains(&kind)
            && seq >= min_seq
            && seq - min_seq < 1 << 40
            && matches!(read_frame(&data.slice(p..)), Frame::Record(..))
    })
}

/// Replaces `seg` by its magic and its `good` frames (durably, by rename): a torn tail is
/// simply cut off.
fn rewrite(seg: &Segment, data: &[u8], good: &[std::ops::Range<usize>]) -> std::io::Result<()> {
    let contiguous = good.iter().enumerate().all(|(i, r)| {
        r.start
            == good
                .get(i.wrapping_sub(1))
                .map_or(SEGMENT_MAGIC.len(), |p| p.end)
    });
    let intact_magic = data.get(..SEGMENT_MAGIC.len()) == Some(&SEGMENT_MAGIC[..]);
    if contiguous && intact_magic {
        let end = good.last().map_or(SEGMENT_MAGIC.len(), |r| r.end);
        return truncate(&seg.path, end as u64);
    }
    let tmp = seg.path.with_extension("repair");
    let mut f = File::create(&tmp)?;
    f.write_all(SEGMENT_MAGIC)?;
    for r in good {
        f.write_all(&data[r.clone()])?;
    }
    f.sync_all()?;
    std::fs::rename(&tmp, &seg.path)?;
    sync_dir(seg.path.parent().unwrap_or(Path::new(".")))
}

fn truncate(path: &Path, len: u64) -> std::io::Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    f.set_len(len)?;
    f.sync_all()
}
