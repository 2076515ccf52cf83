//! What is on disk: the blobs of the layout with their size and mtime, and the temporary
//! files a crashed writer left in the work directory.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use strata_oci::Digest;
use strata_oci::{Store, SCRATCH_DIR_PREFIX};

/// The prefix `tempfile` gives the files `Store::writer` and `write_atomic` create.
const TEMP_PREFIX: &str = ".tmp";
/// The prefix of a registry download into a `Store::download_slot` file: the registry
/// client writes `.<name>.<pid>-<n>.partial` beside it and renames it into place, so a
/// download killed midway leaves `..tmp….partial` behind.
const PARTIAL_PREFIX: &str = "..tmp";

/// A blob file under `blobs/sha256/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobFile {
    pub digest: Digest,
    pub size: u64,
    /// Modification time, unix seconds.
    pub mtime: i64,
}

/// A temporary file (or scratch directory) in the store's work directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TempFile {
    pub path: PathBuf,
    pub size: u64,
    pub mtime: i64,
}

/// The sha256 blobs of the store. Files whose names are not digests are not ours to judge
/// and are left out.
pub fn list_blobs(store: &Store) -> io::Result<Vec<BlobFile>> {
    let dir = store.root().join("blobs").join("sha256");
    let mut blobs = Vec::new();
    for entry in fs::read_dir(&dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Ok(digest) = Digest::from_hex(&name) else {
            continue;
        };
        // A blob deleted while we list is simply not there any more.
        let Some(meta) = metadata_if_exists(&entry.path())? else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        blobs.push(BlobFile {
            digest,
            size: meta.len(),
            mtime: mtime_secs(&meta),
        });
    }
    blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
    Ok(blobs)
}

/// What a crashed or killed process left in the work directory: regular files named like
/// temporary files, scratch directories ([`strata_oci::SCRATCH_DIR_PREFIX`], with the size of
/// what they hold), and the blobs of the pull staging area (locks and whatever else lives
/// there are left alone). Their age decides (see the plan).
pub fn list_temp_files(store: &Store) -> io::Result<Vec<TempFile>> {
    let mut temps = Vec::new();
    for entry in fs::read_dir(store.work_dir())? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let Some(meta) = metadata_if_exists(&entry.path())? else {
            continue;
        };
        let is_temp = name.starts_with(TEMP_PREFIX) || name.starts_with(PARTIAL_PREFIX);
        if meta.is_file() && is_temp {
            temps.push(temp_file(entry.path(), &meta));
        } else if meta.is_dir() && name.starts_with(SCRATCH_DIR_PREFIX) {
            let tree = scratch_tree(&entry.path());
            temps.push(TempFile {
                path: entry.path(),
                size: tree.bytes,
                mtime: tree.newest,
            });
        }
    }
    let staged = store.pull_staging_dir().join("blobs").join("sha256");
    if let Some(entries) = read_dir_if_exists(&staged)? {
        for entry in entries {
            let entry = entry?;
            match metadata_if_exists(&entry.path())? {
                Some(meta) if meta.is_file() => temps.push(temp_file(entry.path(), &meta)),
                _ => {}
            }
        }
    }
    temps.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(temps)
}

fn temp_file(path: PathBuf, meta: &fs::Metadata) -> TempFile {
    TempFile {
        path,
        size: meta.len(),
        mtime: mtime_secs(meta),
    }
}

fn read_dir_if_exists(dir: &Path) -> io::Result<Option<fs::ReadDir>> {
    match fs::read_dir(dir) {
        Ok(entries) => Ok(Some(entries)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// What a scratch directory holds, symlinks not followed.
pub struct ScratchTree {
    /// The bytes of its regular files.
    pub bytes: u64,
    /// The newest modification time in it, the directory's own included: a process working
    /// deep inside leaves the top directory's time alone. Anything unreadable counts as new
    /// (the directory is kept), and a file that goes meanwhile counts for nothing.
    pub newest: i64,
}

pub fn scratch_tree(dir: &Path) -> ScratchTree {
    let mut tree = ScratchTree {
        bytes: 0,
        newest: i64::MIN,
    };
    add_tree(dir, &mut tree);
    tree
}

fn add_tree(path: &Path, tree: &mut ScratchTree) {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(_) => {
            tree.newest = i64::MAX;
            return;
        }
    };
    tree.newest = tree.newest.max(mtime_secs(&meta));
    if meta.is_file() {
        tree.bytes += meta.len();
    }
    if !meta.is_dir() {
        return;
    }
    let Ok(entries) = fs::read_dir(path) else {
        tree.newest = i64::MAX;
        return;
    };
    for entry in entries {
        match entry {
            Ok(entry) => add_tree(&entry.path(), tree),
            Err(_) => tree.newest = i64::MAX,
        }
    }
}

/// Metadata without following symlinks; `None` if the file is gone.
pub fn metadata_if_exists(path: &Path) -> io::Result<Option<fs::Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn mtime_secs(meta: &fs::Metadata) -> i64 {
    let Ok(modified) = meta.modified() else {
        return i64::MAX; // unknown age: treat as young, never swept
    };
    match modified.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}
