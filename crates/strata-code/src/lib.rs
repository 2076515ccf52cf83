//! A working tree shipped with a job: its code as one deterministic OCI layer at a fixed
//! path (`/work`), on top of the job's environment image.
//!
//! - [`pack`]: which files are code (the `.gitignore` rules, `git ls-files` in a git tree,
//!   `.strataignore`; `.git/` never), refusals (secrets by name, a tree over a size limit),
//!   the layer (sorted entries, fixed mtimes, owners and modes, so the digest depends on the
//!   files' paths, bytes, executable bits and link targets only), committed to the store
//!   under the caller's lease; an unchanged tree is answered from a stat cache.
//! - [`compose`]: the job's image, environment layers + code layer.

mod cache;
mod compose;
mod error;
mod git;
mod policy;
mod walk;
mod write;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use strata_index::Lease;
use strata_oci::{LayerDescriptor, Store};

pub use compose::{compose, CodeRef, ANNOTATION_CODE, ANNOTATION_ENV};
pub use error::{human_bytes, CodeError};
pub use git::GitState;
pub use policy::{looks_secret, parse_size, SizeError, LARGEST_LISTED, SECRET_NAMES};
pub use walk::STRATAIGNORE;
pub use write::CODE_GZIP_LEVEL;

/// Where code goes in the job's image, and its working directory.
pub const DEFAULT_DEST: &str = "/work";
/// The default limit on the bytes of code shipped.
pub const DEFAULT_MAX_SIZE: u64 = 100_000_000;
/// Bumped when the bytes of a code layer change for the same tree (with
/// `strata-install`'s layer format, which it builds on).
pub const CODE_FORMAT_VERSION: u32 = 1;

/// How a tree is packed.
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// Glob patterns of files to ship although they look like secrets (`--include`).
    pub include: Vec<String>,
    /// Refuse a tree whose files add up to more bytes than this.
    pub max_size: u64,
    /// Absolute path of the code in the image.
    pub dest: String,
    /// The stat cache's directory (`$STRATA_HOME/tmp/code-cache`); `None`: always pack.
    pub cache_dir: Option<PathBuf>,
    /// Directories never shipped even when under the root (`$STRATA_HOME`: a store in the
    /// project must not end up in its own jobs).
    pub exclude: Vec<PathBuf>,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            include: Vec::new(),
            max_size: DEFAULT_MAX_SIZE,
            dest: DEFAULT_DEST.to_string(),
            cache_dir: None,
            exclude: Vec::new(),
        }
    }
}

/// A packed tree.
#[derive(Debug, Clone, Serialize)]
pub struct CodeLayer {
    pub layer: LayerDescriptor,
    /// Absolute path of the code in the image.
    pub dest: String,
    /// Files and symlinks shipped.
    pub files: usize,
    /// Bytes of the regular files shipped (uncompressed).
    pub bytes: u64,
    /// The commit and dirtiness of the tree; `None` outside a git work tree.
    pub git: Option<GitState>,
    /// Files that look like secrets and were shipped because `--include` asked.
    pub included: Vec<String>,
    /// What was not shipped because it is neither a file nor a symlink (sockets, FIFOs).
    pub skipped: Vec<String>,
    /// The layer came from the stat cache: nothing was read or compressed.
    pub reused: bool,
}

/// Packs the code under `root` into one layer in `store`, held by `lease`.
pub fn pack(
    root: &Path,
    options: &PackOptions,
    store: &Store,
    lease: &Lease,
) -> Result<CodeLayer, CodeError> {
    let started_ns = now_ns();
    let dest = layer_dest(&options.dest)?;
    let root = std::fs::canonicalize(root)
        .ok()
        .filter(|r| r.is_dir())
        .ok_or_else(|| CodeError::NotADirectory {
            root: root.to_path_buf(),
            source: std::fs::metadata(root).err(),
        })?;
    let includes = policy::Includes::new(&options.include)?;
    let exclude: Vec<PathBuf> = options
        .exclude
        .iter()
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .collect();
    // git (a few processes) runs while the tree is walked.
    let in_git = walk::in_git_tree(&root);
    let (listed, git) = std::thread::scope(|s| {
        let git = s.spawn(|| in_git.then(|| git::inspect(&root)).flatten());
        let listed = walk::list(&root, in_git, &exclude);
        (listed, git.join().ok().flatten())
    });
    let mut listed = listed?;
    if let Some(view) = &git {
        walk::add_tracked(&root, &mut listed, &view.tracked, &exclude);
    }
    let tree = walk::stat(listed)?;
    let included = policy::check_secrets(&tree.files, &includes)?;
    let bytes = policy::check_size(&root, &tree.files, options.max_size)?;
    let format = format!(
        "code-{CODE_FORMAT_VERSION}-layer-{}-gzip-{CODE_GZIP_LEVEL}",
        strata_install::LAYER_FORMAT_VERSION
    );
    let fingerprint = cache::fingerprint(&tree.files, &options.dest, &format);
    let cache = options
        .cache_dir
        .as_ref()
        .map(|dir| cache::Cache::new(dir, &root, &options.dest));
    let done = |layer: LayerDescriptor, reused: bool| CodeLayer {
        layer,
        dest: options.dest.clone(),
        files: tree.files.len(),
        bytes,
        git: git.as_ref().map(|g| g.state.clone()),
        included: included.clone(),
        skipped: tree.skipped.clone(),
        reused,
    };
    if let Some(hit) = cache.as_ref().and_then(|c| c.lookup(&fingerprint, &root)) {
        compose::hold(store, lease, std::slice::from_ref(&hit.layer.digest))?;
        if store.has_blob(&hit.layer.digest) {
            return Ok(done(hit.layer, true));
        }
    }
    let racy: Vec<bool> = tree
        .files
        .iter()
        .map(|f| cache::is_racy(f, started_ns))
        .collect();
    let mut writer = store.writer()?;
    let written = write::write_layer(&root, &tree.files, &dest, &racy, &mut writer)?;
    let staged = writer.finish().map_err(|source| CodeError::Io {
        path: store.work_dir().to_path_buf(),
        source,
    })?;
    compose::hold(store, lease, std::slice::from_ref(&written.layer.digest))?;
    store.commit(staged)?;
    if let Some(cache) = &cache {
        cache.store(
            fingerprint,
            &written.layer,
            tree.files.len(),
            bytes,
            written.racy,
        );
    }
    Ok(done(written.layer, false))
}

/// `/work` -> `work`; refuses `/`, relative paths and `.`/`..` components.
fn layer_dest(dest: &str) -> Result<String, CodeError> {
    let bad = || CodeError::BadDest {
        dest: dest.to_string(),
    };
    let rel = dest
        .strip_prefix('/')
        .ok_or_else(bad)?
        .trim_end_matches('/');
    if rel.is_empty()
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(bad());
    }
    Ok(rel.to_string())
}

fn now_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        assert_eq!(layer_dest("/work").unwrap(), "work");
        assert_eq!(layer_dest("/opt/app/").unwrap(), "opt/app");
        for bad in ["/", "work", "/a/../b", "//x", "/a/./b", ""] {
            assert!(layer_dest(bad).is_err(), "{bad}");
        }
    }
}
