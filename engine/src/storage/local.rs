//! The local-disk object store, with ranged reads cut down to what a page-cache hit costs.
//!
//! `object_store`'s `LocalFileSystem` answers each `get_ranges` by handing a closure to
//! tokio's blocking pool, which opens the file, zero-fills a buffer per range and `pread`s
//! into it. A sampled metrics query makes a few hundred such calls of a few tens of KiB each
//! (a block's leading pages, per row group), and the open and the two thread hand-offs cost
//! more than the copy: a quarter of its CPU. Here open files are kept (block objects are
//! written once, by rename, and reads of a path stop using the kept file when this store
//! writes or deletes it), and small reads run on the calling thread: from the page cache they
//! take microseconds, and only a large read is worth a blocking-pool thread.
//!
//! `LocalFileSystem` writes each object to a staging file (`data.parquet#12`) and renames it;
//! a process killed between the two leaves the staging file, which `LocalFileSystem` hides from
//! every listing. A block directory holding only such a file was then neither a block nor an
//! orphan to the catalog, and stayed on disk for ever. Here listing a prefix also reports its
//! staging leftovers, with their real age, so retention deletes them like any orphan's files
//! (after the same grace, so a write in progress is never cut), and deleting one removes it and
//! the directory it leaves empty.

use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use moka::sync::Cache;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};

/// Ranged reads of at most this many bytes in total run on the calling thread.
const INLINE_READ_BYTES: u64 = 512 * 1024;

/// Open files kept: well under the usual soft limit of 1024 descriptors, which sockets, WAL
/// segments and writes share.
const OPEN_FILES: u64 = 256;

/// [`LocalFileSystem`] with kept open files and inline small ranged reads.
#[derive(Debug)]
pub struct LocalStore {
    inner: LocalFileSystem,
    files: Cache<Path, Arc<File>>,
}

impl LocalStore {
    /// Wraps `inner`.
    pub fn new(inner: LocalFileSystem) -> Self {
        Self {
            inner,
            files: Cache::builder()
                .max_capacity(OPEN_FILES)
                // A file deleted behind this store's back is let go of within a minute.
                .time_to_idle(Duration::from_secs(60))
                .build(),
        }
    }

    fn file(&self, location: &Path) -> object_store::Result<Arc<File>> {
        if let Some(f) = self.files.get(location) {
            return Ok(f);
        }
        let path = self.inner.path_to_filesystem(location)?;
        let file = File::open(&path).map_err(|e| io_error(location, e))?;
        let file = Arc::new(file);
        self.files.insert(location.clone(), file.clone());
        Ok(file)
    }
}

/// Whether `l` names a staging file of `LocalFileSystem` (`name#digits`).
fn is_staging(l: &Path) -> bool {
    l.filename()
        .and_then(|f| f.split_once('#'))
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes the staging file `l` under `root`, and its directory when that leaves it empty.
fn remove_staging(root: &std::path::Path, l: &Path) -> object_store::Result<()> {
    let fs = root.join(l.as_ref());
    match std::fs::remove_file(&fs) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(l, e)),
    }
    if let Some(dir) = fs.parent() {
        // Fails, harmlessly, when anything else is still there.
        let _ = std::fs::remove_dir(dir);
    }
    Ok(())
}

impl LocalStore {
    /// The directory the store's paths are relative to.
    fn staging_root(&self) -> std::path::PathBuf {
        // Any valid path resolves under the root; strip it back to the root.
        let probe = Path::from("probe");
        self.inner
            .path_to_filesystem(&probe)
            .ok()
            .and_then(|p| p.parent().map(|p| p.to_path_buf()))
            .unwrap_or_default()
    }

    /// Staging leftovers under `prefix`, as objects with their size and age.
    fn staging_leftovers(&self, prefix: &Path) -> Vec<object_store::Result<ObjectMeta>> {
        let root = self.staging_root();
        let mut out = Vec::new();
        let mut dirs = vec![root.join(prefix.as_ref())];
        while let Some(d) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                let Ok(meta) = e.metadata() else { continue };
                if meta.is_dir() {
                    dirs.push(p);
                    continue;
                }
                let Ok(rel) = p.strip_prefix(&root) else {
                    continue;
                };
                // `parse` keeps the `#` that `Path::from` would percent-encode.
                let Ok(location) = Path::parse(rel.to_string_lossy()) else {
                    continue;
                };
                if !is_staging(&location) {
                    continue;
                }
                let modified = meta
                    .modified()
                    .map(chrono::DateTime::<chrono::Utc>::from)
                    .unwrap_or_default();
                out.push(Ok(ObjectMeta {
                    location,
                    last_modified: modified,
                    size: meta.len(),
                    e_tag: None,
                    version: None,
                }));
            }
        }
        out
    }
}

fn io_error(location: &Path, e: std::io::Error) -> object_store::Error {
    match e.kind() {
        std::io::ErrorKind::NotFound => object_store::Error::NotFound {
            path: location.to_string(),
            source: Box::new(e),
        },
        _ => object_store::Error::Generic {
            store: "LocalFileSystem",
            source: format!("{location}: {e}").into(),
        },
    }
}

/// Reads `ranges` of `file`; a range past the end is an error, as in `LocalFileSystem`.
fn read_ranges(
    file: &File,
    location: &Path,
    ranges: &[Range<u64>],
) -> object_store::Result<Vec<Bytes>> {
    ranges
        .iter()
        .map(|r| {
            let len = r
                .end
                .checked_sub(r.start)
                .ok_or_else(|| object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: format!("{location}: range {r:?} ends before it starts").into(),
                })?;
            let mut buf = vec![0u8; len as usize];
            file.read_exact_at(&mut buf, r.start)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => object_store::Error::Generic {
                        store: "LocalFileSystem",
                        source: format!("{location}: range {r:?} is beyond the end of the file")
                            .into(),
                    },
                    _ => io_error(location, e),
                })?;
            Ok(Bytes::from(buf))
        })
        .collect()
}

impl fmt::Display for LocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        // After the rename too: a read between the two may have kept the old file.
        self.files.invalidate(location);
        let put = self.inner.put_opts(location, payload, opts).await;
        self.files.invalidate(location);
        put
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.files.invalidate(location);
        let upload = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(Upload {
            inner: upload,
            location: location.clone(),
            files: self.files.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        let bytes: u64 = ranges.iter().map(|r| r.end.saturating_sub(r.start)).sum();
        let file = self.file(location)?;
        // Outside a tokio runtime there is no blocking pool to hand a large read to.
        let runtime = tokio::runtime::Handle::try_current();
        let Some(runtime) = runtime.ok().filter(|_| bytes > INLINE_READ_BYTES) else {
            return read_ranges(&file, location, ranges);
        };
        let (location, ranges) = (location.clone(), ranges.to_vec());
        runtime
            .spawn_blocking(move || read_ranges(&file, &location, &ranges))
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(e),
            })?
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let files = self.files.clone();
        let root = self.staging_root();
        let locations = locations
            .map(move |l| {
                if let Ok(l) = &l {
                    files.invalidate(l);
                }
                l
            })
            .boxed();
        // Staging leftovers are removed here, as they pass (`LocalFileSystem` refuses their
        // names); their results follow the others'.
        let done = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let staged = done.clone();
        let rest = locations
            .filter_map(move |l| {
                let out = match l {
                    Ok(l) if is_staging(&l) => {
                        staged.lock().push(remove_staging(&root, &l).map(|()| l));
                        None
                    }
                    other => Some(other),
                };
                futures::future::ready(out)
            })
            .boxed();
        self.inner
            .delete_stream(rest)
            .chain(
                futures::stream::once(async move { std::mem::take(&mut *done.lock()) })
                    .flat_map(futures::stream::iter),
            )
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let listed = self.inner.list(prefix);
        let Some(prefix) = prefix else {
            return listed;
        };
        let leftovers = self.staging_leftovers(prefix);
        listed.chain(futures::stream::iter(leftovers)).boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.files.invalidate(to);
        let copied = self.inner.copy_opts(from, to, options).await;
        self.files.invalidate(to);
        copied
    }
}

/// A multipart upload whose object appears at `complete`, when the kept file is let go of.
#[derive(Debug)]
struct Upload {
    inner: Box<dyn MultipartUpload>,
    location: Path,
    files: Cache<Path, Arc<File>>,
}

#[async_trait]
impl MultipartUpload for Upload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let done = self.inner.complete().await;
        self.files.invalidate(&self.location);
        done
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

#[cfg(test)]
// One-range reads are the point of several checks, not a mistaken `Vec` of a range.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    fn store() -> (tempfile::TempDir, LocalStore) {
        let dir = tempfile::tempdir().unwrap();
        let inner = LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        (dir, LocalStore::new(inner))
    }

    #[tokio::test]
    async fn staging_leftovers_are_listed_and_deleted() {
        // As the store is opened for serving: directories go with their last object.
        let dir = tempfile::tempdir().unwrap();
        let inner = LocalFileSystem::new_with_prefix(dir.path())
            .unwrap()
            .with_automatic_cleanup(true);
        let s = LocalStore::new(inner);
        s.put(&Path::from("t/b/meta.json"), b"{}".to_vec().into())
            .await
            .unwrap();
        std::fs::write(dir.path().join("t/b/data.parquet#42"), b"cut short").unwrap();
        let mut listed: Vec<String> = s
            .list(Some(&Path::from("t/b")))
            .map(|m| m.unwrap().location.to_string())
            .collect()
            .await;
        listed.sort();
        assert_eq!(listed, ["t/b/data.parquet#42", "t/b/meta.json"]);
        for l in &listed {
            s.delete(&Path::parse(l).unwrap()).await.unwrap();
        }
        assert!(!dir.path().join("t/b").exists());
    }

    #[tokio::test]
    async fn ranged_reads_return_the_bytes_small_and_large() {
        let (_dir, s) = store();
        let path = Path::from("t/b/data.parquet");
        let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
        s.put(&path, data.clone().into()).await.unwrap();
        // Small (inline) and large (blocking pool) reads, and an empty range.
        for ranges in [
            vec![0..10, 1000..1010, 5..5],
            vec![0..1_500_000, 1_999_990..2_000_000],
        ] {
            let got = s.get_ranges(&path, &ranges).await.unwrap();
            for (r, b) in ranges.iter().zip(&got) {
                assert_eq!(&b[..], &data[r.start as usize..r.end as usize], "{r:?}");
            }
        }
        let err = s
            .get_ranges(&path, &[1_999_999..2_000_001])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("beyond the end"), "{err}");
        let missing = s
            .get_ranges(&Path::from("t/none"), &[0..1])
            .await
            .unwrap_err();
        assert!(
            matches!(missing, object_store::Error::NotFound { .. }),
            "{missing}"
        );
    }

    #[test]
    fn a_large_read_outside_a_runtime_runs_inline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big"), vec![7u8; 1 << 20]).unwrap();
        let s = LocalStore::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let got = futures::executor::block_on(s.get_ranges(&Path::from("big"), &[0..(1 << 20)]));
        assert_eq!(got.unwrap()[0], vec![7u8; 1 << 20]);
    }

    #[tokio::test]
    async fn a_rewritten_or_deleted_object_is_not_read_through_a_kept_file() {
        let (_dir, s) = store();
        let path = Path::from("t/meta.json");
        s.put(&path, b"first".to_vec().into()).await.unwrap();
        assert_eq!(
            &s.get_ranges(&path, &[0..5]).await.unwrap()[0][..],
            b"first"
        );
        // Put writes a new file and renames it over the old one: the kept handle is stale.
        s.put(&path, b"again".to_vec().into()).await.unwrap();
        assert_eq!(
            &s.get_ranges(&path, &[0..5]).await.unwrap()[0][..],
            b"again"
        );
        // A multipart upload replaces it when it completes.
        let mut up = s.put_multipart(&path).await.unwrap();
        up.put_part(b"third".to_vec().into()).await.unwrap();
        // Read while it is in flight: the old object, whose file is kept again.
        assert_eq!(
            &s.get_ranges(&path, &[0..5]).await.unwrap()[0][..],
            b"again"
        );
        up.complete().await.unwrap();
        assert_eq!(
            &s.get_ranges(&path, &[0..5]).await.unwrap()[0][..],
            b"third"
        );
        s.delete(&path).await.unwrap();
        let gone = s.get_ranges(&path, &[0..5]).await.unwrap_err();
        assert!(
            matches!(gone, object_store::Error::NotFound { .. }),
            "{gone}"
        );
    }
}
