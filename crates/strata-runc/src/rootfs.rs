//! Image layers unpacked once per layer digest under `$STRATA_HOME/rootfs/<hex>/`, shared
//! read-only by every job as overlay lower directories.
//!
//! A layer is extracted into a temporary directory next to its final place and renamed
//! into place only when the whole blob was read and its bytes hashed to its digest, so a
//! directory named by a digest is always complete. A lock file per digest makes concurrent
//! launches of the same image extract it once. Every extraction appends the digest to
//! `rootfs/extractions.log`, which tests read to prove nothing was unpacked twice.
//!
//! Layers are untrusted input: [`unpack`] creates every entry inside the layer directory
//! without following symlinks and caps what a layer may hold ([`LayerLimits`]). A refused
//! layer leaves nothing: its temporary directory is removed, and one left by a launcher
//! killed mid-unpack is removed by the next unpack of that layer.

pub(crate) mod beneath;
mod unpack;

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};

use strata_oci::Digest;
use strata_oci::HashingWriter;
use strata_oci::Store;

const EXTRACTIONS_LOG: &str = "extractions.log";

/// Caps on what one layer may unpack to, against layers made to fill the disk or the inode
/// table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerLimits {
    /// Bytes of file content.
    pub max_bytes: u64,
    /// Tar entries of any kind (whiteouts included).
    pub max_entries: u64,
}

impl Default for LayerLimits {
    fn default() -> Self {
        LayerLimits {
            max_bytes: 32 << 30,
            max_entries: 1_000_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("rootfs {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("layer {digest} is not in the store: {source}")]
    Blob {
        digest: Digest,
        #[source]
        source: strata_oci::StoreError,
    },
    #[error("layer {digest} is corrupt: its bytes hash to {actual}")]
    Corrupt { digest: Digest, actual: Digest },
    #[error("layer {digest} is not a valid gzip or zstd tar: {source}")]
    BadArchive {
        digest: Digest,
        #[source]
        source: io::Error,
    },
    #[error("layer {digest} has an unsafe entry {entry:?}: {reason}")]
    UnsafeEntry {
        digest: Digest,
        entry: String,
        reason: &'static str,
    },
    #[error("layer {digest}: entry {entry:?}: {source}")]
    Entry {
        digest: Digest,
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("layer {digest} is refused at entry {entry:?}: it holds more than {limit} {what}")]
    Limit {
        digest: Digest,
        entry: String,
        limit: u64,
        what: &'static str,
    },
    #[error("image {image}: {source}")]
    InImage {
        image: Digest,
        #[source]
        source: Box<RootfsError>,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RootfsError + '_ {
    move |source| RootfsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The shared directory of unpacked layers.
#[derive(Debug, Clone)]
pub struct LayerCache {
    dir: PathBuf,
    limits: LayerLimits,
}

/// What [`LayerCache::ensure`] did for one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedLayer {
    pub digest: Digest,
    pub dir: PathBuf,
    /// True when this call unpacked it; false when it was already there.
    pub extracted: bool,
}

impl LayerCache {
    /// Opens (creating) `dir`, normally `$STRATA_HOME/rootfs`.
    pub fn open(dir: &Path) -> Result<LayerCache, RootfsError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        Ok(LayerCache {
            dir: dir.to_path_buf(),
            limits: LayerLimits::default(),
        })
    }

    /// The same cache with other caps (tests use small ones).
    pub fn with_limits(self, limits: LayerLimits) -> LayerCache {
        LayerCache { limits, ..self }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn layer_dir(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    /// [`LayerCache::ensure`] for a layer of `image`, whose errors then name the image.
    pub fn ensure_for(
        &self,
        store: &Store,
        image: &Digest,
        digest: &Digest,
    ) -> Result<PreparedLayer, RootfsError> {
        self.ensure(store, digest)
            .map_err(|source| RootfsError::InImage {
                image: image.clone(),
                source: Box::new(source),
            })
    }

    /// Makes sure the layer is unpacked, extracting it from `store` at most once however
    /// many callers (threads or processes) ask at the same time.
    pub fn ensure(&self, store: &Store, digest: &Digest) -> Result<PreparedLayer, RootfsError> {
        let dir = self.layer_dir(digest);
        let ready = |extracted| PreparedLayer {
            digest: digest.clone(),
            dir: dir.clone(),
            extracted,
        };
        if dir.is_dir() {
            return Ok(ready(false));
        }
        let lock_path = self.dir.join(format!(".{}.lock", digest.hex()));
        let lock = File::create(&lock_path).map_err(io_err(&lock_path))?;
        lock.lock().map_err(io_err(&lock_path))?;
        // Someone else may have finished while we waited for the lock.
        if dir.is_dir() {
            return Ok(ready(false));
        }
        let prefix = format!(".tmp-{}-", digest.hex());
        self.remove_stale(&prefix)?;
        let tmp = tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir_in(&self.dir)
            .map_err(io_err(&self.dir))?;
        // On error `tmp` is dropped, which removes what was unpacked so far.
        extract_verified(store, digest, tmp.path(), self.limits)?;
        let tmp_path = tmp.keep();
        fs::rename(&tmp_path, &dir).map_err(io_err(&dir))?;
        self.record_extraction(digest)?;
        Ok(ready(true))
    }

    /// Removes the temporary directories of this layer that a launcher killed while
    /// unpacking it left behind. Called under the layer's lock, so none is in use.
    fn remove_stale(&self, prefix: &str) -> Result<(), RootfsError> {
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            if entry.file_name().to_string_lossy().starts_with(prefix) {
                let path = entry.path();
                fs::remove_dir_all(&path).map_err(io_err(&path))?;
            }
        }
        Ok(())
    }

    /// How many layer extractions this cache has ever done (all digests).
    pub fn extraction_count(&self) -> Result<usize, RootfsError> {
        let path = self.dir.join(EXTRACTIONS_LOG);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(text.lines().filter(|l| !l.is_empty()).count()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn record_extraction(&self, digest: &Digest) -> Result<(), RootfsError> {
        let path = self.dir.join(EXTRACTIONS_LOG);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        // One short write with O_APPEND: concurrent writers never interleave inside a line.
        log.write_all(format!("{digest}\n").as_bytes())
            .map_err(io_err(&path))
    }
}

/// A reader that hashes what passes through it, so the blob is verified in the same pass
/// that unpacks it.
struct HashingReader<R> {
    inner: R,
    hasher: HashingWriter<io::Sink>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.write_all(&buf[..n])?;
        Ok(n)
    }
}

fn extract_verified(
    store: &Store,
    digest: &Digest,
    dest: &Path,
    limits: LayerLimits,
) -> Result<(), RootfsError> {
    let blob = store
        .open_blob(digest)
        .map_err(|source| RootfsError::Blob {
            digest: digest.clone(),
            source,
        })?;
    let bad = |source| RootfsError::BadArchive {
        digest: digest.clone(),
        source,
    };
    let mut buffered = io::BufReader::with_capacity(1 << 20, blob);
    let compression = LayerCompression::sniff(buffered.fill_buf().map_err(bad)?);
    let mut reader = HashingReader {
        inner: buffered,
        hasher: HashingWriter::new(io::sink()),
    };
    {
        let tar: Box<dyn Read + '_> = match compression {
            LayerCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut reader)),
            LayerCompression::Zstd => Box::new(
                zstd::stream::read::Decoder::with_buffer(io::BufReader::new(&mut reader))
                    .map_err(bad)?,
            ),
        };
        let mut archive = tar::Archive::new(tar);
        let mut unpacker = unpack::Unpacker::new(dest, digest, limits)?;
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            unpacker.entry(&mut entry)?;
        }
        unpacker.finish()?;
    }
    // The tar end marker may come before the end of the blob: hash the rest too.
    io::copy(&mut reader, &mut io::sink()).map_err(bad)?;
    let (actual, _, _) = reader.hasher.finish();
    if &actual != digest {
        return Err(RootfsError::Corrupt {
            digest: digest.clone(),
            actual,
        });
    }
    Ok(())
}

/// How a layer blob is compressed, told by its first bytes: the runner gets digests, not
/// descriptors, and the bytes are checked against the digest anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LayerCompression {
    Gzip,
    Zstd,
}

impl LayerCompression {
    const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

    /// zstd when the blob starts with zstd's frame magic, else gzip (whose decoder names
    /// anything else as a bad archive).
    fn sniff(head: &[u8]) -> LayerCompression {
        match head.starts_with(&Self::ZSTD_MAGIC) {
            true => LayerCompression::Zstd,
            false => LayerCompression::Gzip,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::unpack::safe_relative;
    use std::path::Path;

    #[test]
    fn refuses_parent_and_absolute_paths() {
        assert_eq!(safe_relative(Path::new("./a/b")).unwrap(), Path::new("a/b"));
        assert!(safe_relative(Path::new("a/../../etc")).is_err());
        assert!(safe_relative(Path::new("/etc/passwd")).is_err());
    }
}
