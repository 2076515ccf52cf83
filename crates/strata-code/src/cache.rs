//! The stat cache: an unchanged tree is answered with the layer packed last time, without
//! reading or compressing a byte.
//!
//! One small file per shipped directory records a fingerprint of what stat said about every
//! file (path, size, mtime, ctime, inode, device, mode, link target) and the layer it gave.
//! A stat is trusted as git trusts its index: a file modified so close to the pack that a
//! later write could leave its stat unchanged (the same timestamp tick) is *racy*; its
//! content digest is kept and checked again on the next lookup. Anything else about the
//! cache that is off (missing, unreadable, another format) is a miss, never an error.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use strata_oci::{Digest, LayerDescriptor};

use crate::walk::{FileKind, TreeFile};

/// Bumped when what a cache file means changes.
const CACHE_FORMAT: u32 = 1;

/// A file modified less than this before the pack started is racy (coarse filesystem
/// timestamps, clocks of network filesystems).
pub const RACY_WINDOW_NS: i128 = 2_000_000_000;

#[derive(Debug, Serialize, Deserialize)]
pub struct Entry {
    format: u32,
    pub fingerprint: Digest,
    pub layer: LayerDescriptor,
    pub files: usize,
    pub bytes: u64,
    /// Content digests of the racy files, by relative path.
    pub racy: BTreeMap<String, Digest>,
}

pub struct Cache {
    path: PathBuf,
}

impl Cache {
    /// The cache file of one directory shipped to one destination, under `dir`.
    pub fn new(dir: &Path, root: &Path, dest: &str) -> Cache {
        let mut key = root.as_os_str().as_encoded_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(dest.as_bytes());
        let name = format!("{}.json", &Digest::of(&key).hex()[..32]);
        Cache {
            path: dir.join(name),
        }
    }

    /// The layer of a tree whose fingerprint is `fingerprint`, if its racy files still have
    /// the content they had.
    pub fn lookup(&self, fingerprint: &Digest, root: &Path) -> Option<Entry> {
        let bytes = std::fs::read(&self.path).ok()?;
        let entry: Entry = serde_json::from_slice(&bytes).ok()?;
        if entry.format != CACHE_FORMAT || entry.fingerprint != *fingerprint {
            return None;
        }
        for (rel, digest) in &entry.racy {
            if content_digest(&root.join(rel)).ok()? != *digest {
                return None;
            }
        }
        Some(entry)
    }

    /// Records the layer of a tree (best effort: a cache that cannot be written costs a
    /// pack next time, nothing else).
    pub fn store(
        &self,
        fingerprint: Digest,
        layer: &LayerDescriptor,
        files: usize,
        bytes: u64,
        racy: BTreeMap<String, Digest>,
    ) {
        let entry = Entry {
            format: CACHE_FORMAT,
            fingerprint,
            layer: layer.clone(),
            files,
            bytes,
            racy,
        };
        if let Err(e) = self.write(&entry) {
            tracing::warn!("writing the code cache {}: {e}", self.path.display());
        }
    }

    fn write(&self, entry: &Entry) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(&serde_json::to_vec(entry).map_err(std::io::Error::other)?)?;
        tmp.persist(&self.path).map_err(|e| e.error)?;
        Ok(())
    }
}

/// The fingerprint of a tree as stat sees it, for one destination and layer format.
pub fn fingerprint(files: &[TreeFile], dest: &str, format: &str) -> Digest {
    let mut h = Sha256::new();
    h.update(format.as_bytes());
    h.update(b"\0");
    h.update(dest.as_bytes());
    h.update(b"\0");
    for f in files {
        let s = &f.stat;
        let kind = match &f.kind {
            FileKind::Regular { size, executable } => format!("f {size} {executable}"),
            FileKind::Symlink { target } => format!("l {target}"),
        };
        h.update(
            format!(
                "{}\0{kind}\0{} {} {} {} {}\n",
                f.rel, s.size, s.mtime_ns, s.ctime_ns, s.ino, s.dev
            )
            .as_bytes(),
        );
    }
    Digest::from_hex(&hex::encode(h.finalize())).unwrap_or_else(|_| Digest::of(b""))
}

/// Whether a file was written so shortly before `started_ns` that a later write in the
/// same timestamp tick would leave its stat unchanged. Only the mtime tells: a write moves
/// it, and a change that puts an old mtime back moves the ctime, which the fingerprint sees.
pub fn is_racy(file: &TreeFile, started_ns: i128) -> bool {
    matches!(file.kind, FileKind::Regular { .. })
        && file.stat.mtime_ns >= started_ns - RACY_WINDOW_NS
}

fn content_digest(path: &Path) -> std::io::Result<Digest> {
    let file = std::fs::File::open(path)?;
    Ok(Digest::of_reader(std::io::BufReader::with_capacity(1 << 16, file))?.0)
}
