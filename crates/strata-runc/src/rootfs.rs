//! Image layers unpacked once per layer digest under `$STRATA_HOME/rootfs/<hex>/`, shared
//! read-only by every job as overlay lower directories.
//!
//! A layer is extracted into a temporary directory next to its final place and renamed
//! into place only when the whole blob was read and its bytes hashed to its digest, so a
//! directory named by a digest is always complete. A lock file per digest makes concurrent
//! launches of the same image extract it once. Every extraction appends the digest to
//! `rootfs/extractions.log`, which tests read to prove nothing was unpacked twice.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use strata_oci::Digest;
use strata_oci::HashingWriter;
use strata_oci::Store;

/// Where overlay expects a directory to hide everything below it in lower layers.
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const WHITEOUT_PREFIX: &str = ".wh.";
const EXTRACTIONS_LOG: &str = "extractions.log";

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
    #[error("layer {digest} is not a valid gzip tar: {source}")]
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
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn layer_dir(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
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
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".tmp-{}-", digest.short(12)))
            .tempdir_in(&self.dir)
            .map_err(io_err(&self.dir))?;
        extract_verified(store, digest, tmp.path())?;
        let tmp_path = tmp.keep();
        fs::rename(&tmp_path, &dir).map_err(io_err(&dir))?;
        self.record_extraction(digest)?;
        Ok(ready(true))
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

fn extract_verified(store: &Store, digest: &Digest, dest: &Path) -> Result<(), RootfsError> {
    let blob = store
        .open_blob(digest)
        .map_err(|source| RootfsError::Blob {
            digest: digest.clone(),
            source,
        })?;
    let mut reader = HashingReader {
        inner: io::BufReader::with_capacity(1 << 20, blob),
        hasher: HashingWriter::new(io::sink()),
    };
    let bad = |source| RootfsError::BadArchive {
        digest: digest.clone(),
        source,
    };
    {
        let gz = flate2::read::GzDecoder::new(&mut reader);
        let mut archive = tar::Archive::new(gz);
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(true);
        archive.set_preserve_mtime(true);
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            unpack_entry(digest, &mut entry, dest)?;
        }
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

fn unpack_entry<R: Read>(
    digest: &Digest,
    entry: &mut tar::Entry<R>,
    dest: &Path,
) -> Result<(), RootfsError> {
    let raw = entry
        .path()
        .map(|p| p.into_owned())
        .map_err(|source| RootfsError::BadArchive {
            digest: digest.clone(),
            source,
        })?;
    let unsafe_entry = |reason| RootfsError::UnsafeEntry {
        digest: digest.clone(),
        entry: raw.display().to_string(),
        reason,
    };
    let relative = safe_relative(&raw).map_err(unsafe_entry)?;
    if entry.header().entry_type().is_hard_link() {
        let target = entry
            .link_name()
            .ok()
            .flatten()
            .ok_or_else(|| unsafe_entry("hard link without a target"))?;
        safe_relative(&target).map_err(|_| unsafe_entry("hard link target leaves the layer"))?;
    }
    let Some(name) = relative.file_name().and_then(|n| n.to_str()) else {
        return Ok(()); // the root itself ("./")
    };
    let parent = dest.join(relative.parent().unwrap_or(Path::new("")));
    if name == OPAQUE_MARKER {
        ensure_dir(&parent)?;
        return set_opaque(&parent);
    }
    if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
        ensure_dir(&parent)?;
        return make_whiteout(&parent.join(hidden));
    }
    let unpacked = entry
        .unpack_in(dest)
        .map_err(|source| RootfsError::BadArchive {
            digest: digest.clone(),
            source,
        })?;
    if !unpacked {
        return Err(unsafe_entry("the tar crate refused it"));
    }
    Ok(())
}

/// The entry's path relative to the layer root, refusing absolute paths and `..`.
fn safe_relative(path: &Path) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::Normal(p) => out.push(p),
            Component::ParentDir => return Err("'..' in the path"),
            Component::RootDir | Component::Prefix(_) => return Err("absolute path"),
        }
    }
    Ok(out)
}

fn ensure_dir(dir: &Path) -> Result<(), RootfsError> {
    fs::create_dir_all(dir).map_err(io_err(dir))
}

fn cstring(path: &Path) -> Result<CString, RootfsError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| RootfsError::Io {
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in path"),
    })
}

/// An overlay whiteout: a character device 0/0 with the hidden name.
fn make_whiteout(path: &Path) -> Result<(), RootfsError> {
    let c = cstring(path)?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, libc::makedev(0, 0)) };
    if rc != 0 {
        return Err(io_err(path)(io::Error::last_os_error()));
    }
    Ok(())
}

/// Marks a directory opaque for overlay: lower layers' contents below it are hidden.
fn set_opaque(dir: &Path) -> Result<(), RootfsError> {
    let c = cstring(dir)?;
    let name = c"trusted.overlay.opaque";
    let value = b"y";
    // SAFETY: valid NUL-terminated strings and a buffer of the length passed.
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(io_err(dir)(io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_parent_and_absolute_paths() {
        assert_eq!(safe_relative(Path::new("./a/b")).unwrap(), Path::new("a/b"));
        assert!(safe_relative(Path::new("a/../../etc")).is_err());
        assert!(safe_relative(Path::new("/etc/passwd")).is_err());
    }
}
