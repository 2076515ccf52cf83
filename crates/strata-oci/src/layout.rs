//! The local store: an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) that
//! skopeo and umoci read with the `oci:` transport.
//!
//! Blobs are written to a temporary file outside the layout, hashed while written, fsynced,
//! verified against the digest the caller expects and only then renamed into place, so a
//! reader never sees a partial or wrong blob. `index.json` is replaced the same way, under a
//! lock, so concurrent taggers do not lose each other's tags.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::descriptor::{BlobDescriptor, MEDIA_TYPE_INDEX};
use crate::digest::{Digest, HashingWriter};

/// The annotation an OCI layout uses to name a manifest (its "tag").
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Scratch directories of the work directory start with this (a verify's rebuild home); gc
/// removes those a killed process left behind, past its grace period.
pub const SCRATCH_DIR_PREFIX: &str = "scratch-";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("blob {digest} is not in the store at {root}")]
    MissingBlob { digest: Digest, root: PathBuf },
    #[error("blob {path} is corrupt: its bytes hash to {actual}, not {expected}")]
    CorruptBlob {
        path: PathBuf,
        expected: Digest,
        actual: Digest,
    },
    #[error("{path} is not a valid OCI index: {source}")]
    BadIndex {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid tag {0:?}: tags are 1-128 characters of letters, digits, '_', '.', '-', not starting with '.' or '-'")]
    BadTag(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One entry of `index.json`. Unknown fields are kept so that we never drop what another
/// tool wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexEntry {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize)]
struct OciIndex {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<IndexEntry>,
    #[serde(flatten)]
    extra: BTreeMap<String, serde_json::Value>,
}

/// A blob being written: hashed as it goes, not yet visible in the store.
pub struct BlobWriter {
    inner: HashingWriter<BufWriter<File>>,
    tmp: tempfile::TempPath,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A fully written, fsynced blob waiting to be committed into the store. Dropping it
/// removes the temporary file, so an abandoned build leaves nothing behind.
pub struct StagedBlob {
    pub digest: Digest,
    pub size: u64,
    tmp: tempfile::TempPath,
}

impl StagedBlob {
    /// The temporary file holding the blob, to read before it is committed.
    pub fn path(&self) -> &Path {
        &self.tmp
    }
}

impl BlobWriter {
    /// Flushes and fsyncs the blob; it is not in the store until [`Store::commit`].
    pub fn finish(self) -> io::Result<StagedBlob> {
        let (digest, size, buffered) = self.inner.finish();
        let file = buffered.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(StagedBlob {
            digest,
            size,
            tmp: self.tmp,
        })
    }
}

/// A blob whose writer hashes the bytes itself as it produces them (the layer writer hashes
/// the compressed stream it writes, for the manifest): the store only counts them, rather
/// than hash them a second time. Never for bytes from outside (a download, a user's file):
/// those go through [`Store::writer`] or [`Store::import_file`], which hash what they store.
pub struct PrehashedBlobWriter {
    inner: BufWriter<File>,
    count: u64,
    tmp: tempfile::TempPath,
}

impl Write for PrehashedBlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl PrehashedBlobWriter {
    /// Flushes and fsyncs the blob, staged as `digest`: the writer's own hash of the bytes it
    /// wrote, which must be `size` long (a writer that lost or added bytes is refused here).
    pub fn finish(self, digest: Digest, size: u64) -> io::Result<StagedBlob> {
        if size != self.count {
            return Err(io::Error::other(format!(
                "the blob {digest} was said to be {size} bytes, but {} were written",
                self.count
            )));
        }
        let file = self.inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(StagedBlob {
            digest,
            size,
            tmp: self.tmp,
        })
    }
}

/// A temporary file beside the store for a blob someone else writes and verifies (a
/// registry download): [`DownloadSlot::into_staged`] turns it into a [`StagedBlob`].
/// Dropping it removes the file.
pub struct DownloadSlot {
    tmp: tempfile::TempPath,
}

impl DownloadSlot {
    /// Where the blob is to be written (the file may be replaced by a rename).
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// The written blob, staged for [`Store::commit`]. The caller vouches that the file's
    /// bytes hash to `digest` and are `size` long (the registry client checks both while it
    /// downloads): they are not read again here.
    pub fn into_staged(self, digest: Digest, size: u64) -> StagedBlob {
        StagedBlob {
            digest,
            size,
            tmp: self.tmp,
        }
    }
}

/// The local OCI image layout.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    work: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the layout at `root`. `work` holds temporary files and the
    /// index lock; it must be on the same filesystem so that renames are atomic.
    pub fn open(root: &Path, work: &Path) -> Result<Store, StoreError> {
        let blobs = root.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(io_err(&blobs))?;
        fs::create_dir_all(work).map_err(io_err(work))?;
        let store = Store {
            root: root.to_path_buf(),
            work: work.to_path_buf(),
        };
        let layout = root.join("oci-layout");
        if !layout.exists() {
            store.write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        if !store.index_path().exists() {
            store.write_index(&OciIndex {
                schema_version: 2,
                media_type: Some(MEDIA_TYPE_INDEX.to_string()),
                manifests: Vec::new(),
                extra: BTreeMap::new(),
            })?;
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory for temporary files and locks (outside the layout).
    pub fn work_dir(&self) -> &Path {
        &self.work
    }

    /// Where blobs fetched from a registry wait, verified, in an OCI layout's
    /// `blobs/sha256`, until an image takes them into the store: kept across a failed pull,
    /// so a retry downloads only the rest; gc removes those past its grace period.
    pub fn pull_staging_dir(&self) -> PathBuf {
        self.work.join("pulled")
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blob_dir().join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// A writer for a new blob; commit the result with [`Store::commit`].
    pub fn writer(&self) -> Result<BlobWriter, StoreError> {
        let tmp = tempfile::NamedTempFile::new_in(&self.work).map_err(io_err(&self.work))?;
        let (file, tmp) = tmp.into_parts();
        Ok(BlobWriter {
            inner: HashingWriter::new(BufWriter::with_capacity(1 << 20, file)),
            tmp,
        })
    }

    /// A writer for a new blob its writer hashes itself (see [`PrehashedBlobWriter`]); commit
    /// the result with [`Store::commit`].
    pub fn prehashed_writer(&self) -> Result<PrehashedBlobWriter, StoreError> {
        let tmp = tempfile::NamedTempFile::new_in(&self.work).map_err(io_err(&self.work))?;
        let (file, tmp) = tmp.into_parts();
        Ok(PrehashedBlobWriter {
            inner: BufWriter::with_capacity(1 << 20, file),
            count: 0,
            tmp,
        })
    }

    /// A slot for a blob downloaded into the store's work directory.
    pub fn download_slot(&self) -> Result<DownloadSlot, StoreError> {
        let tmp = tempfile::NamedTempFile::new_in(&self.work).map_err(io_err(&self.work))?;
        Ok(DownloadSlot {
            tmp: tmp.into_temp_path(),
        })
    }

    /// Moves a staged blob into the store. A blob already present is left as it is (same
    /// name, same bytes), so nothing is ever overwritten in place.
    pub fn commit(&self, staged: StagedBlob) -> Result<Digest, StoreError> {
        let digest = self.persist(staged)?;
        sync_dir(&self.blob_dir())?;
        Ok(digest)
    }

    /// Moves several staged blobs into the store, then syncs the blob directory once: an
    /// image's blobs land together, and a sync per blob (milliseconds each on a virtual disk)
    /// was most of the end of a cold build. When this returns, every one of them is durable.
    pub fn commit_all(&self, staged: Vec<StagedBlob>) -> Result<Vec<Digest>, StoreError> {
        let digests = staged
            .into_iter()
            .map(|blob| self.persist(blob))
            .collect::<Result<Vec<_>, _>>()?;
        sync_dir(&self.blob_dir())?;
        Ok(digests)
    }

    fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    /// Renames a staged blob into place (not yet synced).
    fn persist(&self, staged: StagedBlob) -> Result<Digest, StoreError> {
        let dest = self.blob_path(&staged.digest);
        if dest.is_file() {
            return Ok(staged.digest);
        }
        staged.tmp.persist(&dest).map_err(|e| StoreError::Io {
            path: dest.clone(),
            source: e.error,
        })?;
        Ok(staged.digest)
    }

    /// Removes a blob (gone already is fine). Only for a blob its caller added and nothing
    /// references: GC removes the others.
    pub fn remove_blob(&self, digest: &Digest) -> Result<(), StoreError> {
        let path = self.blob_path(digest);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(StoreError::Io { path, source: e })
            }
            _ => Ok(()),
        }
    }

    /// Writes a small blob (config, manifest) and returns its digest.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let staged = self.stage_bytes(bytes)?;
        self.commit(staged)
    }

    /// Stages a small blob (config, manifest) for [`Store::commit_all`].
    pub fn stage_bytes(&self, bytes: &[u8]) -> Result<StagedBlob, StoreError> {
        let mut writer = self.writer()?;
        writer.write_all(bytes).map_err(io_err(&self.work))?;
        writer.finish().map_err(io_err(&self.work))
    }

    /// Copies a file into the store if its bytes hash to `expected`.
    pub fn import_file(&self, path: &Path, expected: &Digest) -> Result<(), StoreError> {
        if self.has_blob(expected) {
            return Ok(());
        }
        let staged = self.stage_file(path, expected)?;
        self.commit(staged).map(|_| ())
    }

    /// Copies a file into the store's work directory if its bytes hash to `expected`, for
    /// [`Store::commit_all`].
    pub fn stage_file(&self, path: &Path, expected: &Digest) -> Result<StagedBlob, StoreError> {
        let mut src = File::open(path).map_err(io_err(path))?;
        let mut writer = self.writer()?;
        io::copy(&mut src, &mut writer).map_err(io_err(path))?;
        let staged = writer.finish().map_err(io_err(path))?;
        if &staged.digest != expected {
            return Err(StoreError::CorruptBlob {
                path: path.to_path_buf(),
                expected: expected.clone(),
                actual: staged.digest,
            });
        }
        Ok(staged)
    }

    /// Moves a file into the store if its bytes hash to `expected` (the file must be on the
    /// store's filesystem, e.g. under its work dir). Cheaper than [`Store::import_file`] for
    /// large downloads.
    pub fn adopt_file(&self, path: &Path, expected: &Digest) -> Result<(), StoreError> {
        let file = File::open(path).map_err(io_err(path))?;
        let (actual, _) = Digest::of_reader(io::BufReader::new(file)).map_err(io_err(path))?;
        if &actual != expected {
            return Err(StoreError::CorruptBlob {
                path: path.to_path_buf(),
                expected: expected.clone(),
                actual,
            });
        }
        let dest = self.blob_path(expected);
        if dest.is_file() {
            return Ok(());
        }
        fs::rename(path, &dest).map_err(io_err(&dest))?;
        sync_dir(dest.parent().unwrap_or(&self.root))
    }

    /// Reads a small blob and verifies its bytes.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::MissingBlob {
                    digest: digest.clone(),
                    root: self.root.clone(),
                })
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let actual = Digest::of(&bytes);
        if &actual != digest {
            return Err(StoreError::CorruptBlob {
                path,
                expected: digest.clone(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// Hashes a (possibly large) blob on disk and checks it against its name.
    pub fn verify_blob(&self, digest: &Digest) -> Result<u64, StoreError> {
        let path = self.blob_path(digest);
        let file = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::MissingBlob {
                digest: digest.clone(),
                root: self.root.clone(),
            },
            _ => io_err(&path)(e),
        })?;
        let (actual, size) = Digest::of_reader(io::BufReader::new(file)).map_err(io_err(&path))?;
        if &actual != digest {
            return Err(StoreError::CorruptBlob {
                path,
                expected: digest.clone(),
                actual,
            });
        }
        Ok(size)
    }

    /// Opens a blob for streaming; the caller verifies if it needs to.
    pub fn open_blob(&self, digest: &Digest) -> Result<impl Read, StoreError> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::MissingBlob {
                digest: digest.clone(),
                root: self.root.clone(),
            },
            _ => io_err(&path)(e),
        })
    }

    /// Points `tag` at a manifest, replacing what the tag pointed at before.
    pub fn tag(
        &self,
        tag: &str,
        manifest: &BlobDescriptor,
        annotations: BTreeMap<String, String>,
    ) -> Result<(), StoreError> {
        validate_tag(tag)?;
        let _lock = self.lock_index()?;
        let mut index = self.read_index()?;
        index
            .manifests
            .retain(|m| m.annotations.get(REF_NAME).map(String::as_str) != Some(tag));
        let mut annotations = annotations;
        annotations.insert(REF_NAME.to_string(), tag.to_string());
        index.manifests.push(IndexEntry {
            media_type: manifest.media_type.clone(),
            digest: manifest.digest.clone(),
            size: manifest.size,
            annotations,
            extra: BTreeMap::new(),
        });
        self.write_index(&index)
    }

    /// The manifest a tag points at, if any.
    pub fn resolve_tag(&self, tag: &str) -> Result<Option<IndexEntry>, StoreError> {
        let index = self.read_index()?;
        Ok(index
            .manifests
            .into_iter()
            .find(|m| m.annotations.get(REF_NAME).map(String::as_str) == Some(tag)))
    }

    /// All entries of `index.json`.
    pub fn entries(&self) -> Result<Vec<IndexEntry>, StoreError> {
        Ok(self.read_index()?.manifests)
    }

    /// Removes each `(tag, manifest)` from `index.json` if the tag still points at that
    /// manifest (a tag re-pointed meanwhile is left alone); returns the tags removed.
    pub fn remove_tags(&self, tags: &[(String, Digest)]) -> Result<Vec<String>, StoreError> {
        let wanted: std::collections::HashSet<(&str, &Digest)> =
            tags.iter().map(|(t, d)| (t.as_str(), d)).collect();
        let _lock = self.lock_index()?;
        let mut index = self.read_index()?;
        let mut removed = Vec::new();
        index.manifests.retain(|m| {
            let Some(tag) = m.annotations.get(REF_NAME) else {
                return true;
            };
            let gone = wanted.contains(&(tag.as_str(), &m.digest));
            if gone {
                removed.push(tag.clone());
            }
            !gone
        });
        if !removed.is_empty() {
            self.write_index(&index)?;
        }
        Ok(removed)
    }

    /// The GC lock, shared: held while taking a lease, so that a sweep never runs between
    /// its re-read of the leases and its deletions. Released when the file is dropped.
    pub fn gc_lock_shared(&self) -> Result<File, StoreError> {
        let file = self.open_gc_lock()?;
        file.lock_shared().map_err(io_err(&self.work))?;
        Ok(file)
    }

    /// The GC lock, exclusive: held by a sweep while it re-reads leases and deletes.
    pub fn gc_lock_exclusive(&self) -> Result<File, StoreError> {
        let file = self.open_gc_lock()?;
        file.lock().map_err(io_err(&self.work))?;
        Ok(file)
    }

    fn open_gc_lock(&self) -> Result<File, StoreError> {
        let path = self.work.join("gc.lock");
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    fn read_index(&self) -> Result<OciIndex, StoreError> {
        let path = self.index_path();
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::BadIndex { path, source })
    }

    fn write_index(&self, index: &OciIndex) -> Result<(), StoreError> {
        let path = self.index_path();
        let bytes = serde_json::to_vec(index).map_err(|source| StoreError::BadIndex {
            path: path.clone(),
            source,
        })?;
        self.write_atomic(&path, &bytes)
    }

    fn lock_index(&self) -> Result<File, StoreError> {
        let path = self.work.join("index.lock");
        let file = File::create(&path).map_err(io_err(&path))?;
        file.lock().map_err(io_err(&path))?;
        Ok(file)
    }

    fn write_atomic(&self, dest: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let mut tmp = tempfile::NamedTempFile::new_in(&self.work).map_err(io_err(&self.work))?;
        tmp.write_all(bytes).map_err(io_err(dest))?;
        tmp.as_file().sync_all().map_err(io_err(dest))?;
        tmp.persist(dest).map_err(|e| StoreError::Io {
            path: dest.to_path_buf(),
            source: e.error,
        })?;
        sync_dir(dest.parent().unwrap_or(&self.root))
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn validate_tag(tag: &str) -> Result<(), StoreError> {
    let valid = !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid {
        Ok(())
    } else {
        Err(StoreError::BadTag(tag.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::descriptor::MEDIA_TYPE_MANIFEST;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("oci"), &dir.path().join("tmp")).unwrap();
        (dir, store)
    }

    #[test]
    fn blobs_are_named_by_their_digest_and_verified_on_read() {
        let (_dir, store) = store();
        let d = store.put_bytes(b"hello").unwrap();
        assert_eq!(d, Digest::of(b"hello"));
        assert_eq!(store.read_blob(&d).unwrap(), b"hello");
        fs::write(store.blob_path(&d), b"jello").unwrap();
        let err = store.read_blob(&d).unwrap_err();
        assert!(matches!(err, StoreError::CorruptBlob { .. }), "{err}");
        assert!(matches!(
            store.verify_blob(&d),
            Err(StoreError::CorruptBlob { .. })
        ));
    }

    #[test]
    fn abandoned_writes_leave_nothing_behind() {
        let (dir, store) = store();
        let mut w = store.writer().unwrap();
        w.write_all(b"partial").unwrap();
        let staged = w.finish().unwrap();
        let digest = staged.digest.clone();
        drop(staged);
        assert!(!store.has_blob(&digest));
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("tmp"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name() != "index.lock")
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_prehashed_blob_must_be_as_long_as_its_writer_says() {
        let (_dir, store) = store();
        let mut w = store.prehashed_writer().unwrap();
        w.write_all(b"hello").unwrap();
        assert!(w.finish(Digest::of(b"hello!"), 6).is_err());
        let mut w = store.prehashed_writer().unwrap();
        w.write_all(b"hello").unwrap();
        let staged = w.finish(Digest::of(b"hello"), 5).unwrap();
        let digest = store.commit(staged).unwrap();
        assert_eq!(store.read_blob(&digest).unwrap(), b"hello");
    }

    #[test]
    fn import_rejects_bytes_that_do_not_match() {
        let (dir, store) = store();
        let src = dir.path().join("src");
        fs::write(&src, b"abc").unwrap();
        let wrong = Digest::of(b"abd");
        assert!(store.import_file(&src, &wrong).is_err());
        assert!(!store.has_blob(&wrong));
        store.import_file(&src, &Digest::of(b"abc")).unwrap();
        assert!(store.has_blob(&Digest::of(b"abc")));
    }

    #[test]
    fn tags_replace_and_survive_reopen() {
        let (dir, store) = store();
        let a = store.put_bytes(b"{}").unwrap();
        let b = store.put_bytes(b"{ }").unwrap();
        let desc = |d: &Digest| BlobDescriptor {
            media_type: MEDIA_TYPE_MANIFEST.into(),
            digest: d.clone(),
            size: 2,
        };
        store.tag("env-1", &desc(&a), BTreeMap::new()).unwrap();
        store.tag("other", &desc(&a), BTreeMap::new()).unwrap();
        store.tag("env-1", &desc(&b), BTreeMap::new()).unwrap();
        let reopened = Store::open(&dir.path().join("oci"), &dir.path().join("tmp")).unwrap();
        assert_eq!(reopened.resolve_tag("env-1").unwrap().unwrap().digest, b);
        assert_eq!(reopened.resolve_tag("other").unwrap().unwrap().digest, a);
        assert_eq!(reopened.entries().unwrap().len(), 2);
        assert!(store.tag("bad/tag", &desc(&a), BTreeMap::new()).is_err());
    }
}
