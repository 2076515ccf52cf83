//! Which files of a working tree are code: what `git ls-files --cached --others
//! --exclude-standard` lists in a git tree, the same `.gitignore` rules without git, minus
//! what `.strataignore` files exclude. `.git/` is never code.
//!
//! The walk is ripgrep's (`ignore`): `.gitignore` files at every level, `.git/info/exclude`,
//! and `.strataignore` files with the same syntax. The user's global excludes
//! (`core.excludesFile`) are not read: they are one person's taste, not the project's, and
//! the same tree must give the same layer on every machine. Symlinks are listed as links,
//! never followed.

use std::collections::BTreeMap;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::WalkBuilder;

use crate::error::CodeError;

/// The name of strata's own ignore files (gitignore syntax).
pub const STRATAIGNORE: &str = ".strataignore";

/// One file of the tree, as stat saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeFile {
    /// Relative to the root, `/`-separated.
    pub rel: String,
    pub kind: FileKind,
    pub stat: Stat,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileKind {
    Regular { size: u64, executable: bool },
    Symlink { target: String },
}

/// What the cache compares to decide a file is unchanged without reading it (git's index
/// keeps the same fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stat {
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub ino: u64,
    pub dev: u64,
}

impl Stat {
    fn of(meta: &Metadata) -> Stat {
        Stat {
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }
}

/// The tree's files sorted by path, and what was left out because it is neither a file nor
/// a symlink (sockets, FIFOs, devices).
#[derive(Debug, Default)]
pub struct Tree {
    pub files: Vec<TreeFile>,
    pub skipped: Vec<String>,
}

/// The paths under `root` that the ignore rules keep, by relative path. `in_git`: the root
/// is inside a git work tree, so the ignore files of the directories above it apply too (as
/// they do for git); outside one, a stray `~/.gitignore` must not decide what ships.
/// Directories in `exclude` (absolute, canonical) are skipped whole.
pub fn list(
    root: &Path,
    in_git: bool,
    exclude: &[PathBuf],
) -> Result<BTreeMap<String, PathBuf>, CodeError> {
    let exclude = exclude.to_vec();
    let mut found = BTreeMap::new();
    let mut builder = WalkBuilder::new(root);
    builder
        .standard_filters(false)
        .git_ignore(true)
        .git_exclude(true)
        .git_global(false)
        .parents(in_git)
        .require_git(false)
        .add_custom_ignore_filename(STRATAIGNORE)
        .follow_links(false)
        .filter_entry(move |e| e.file_name() != ".git" && !exclude.iter().any(|x| x == e.path()));
    for entry in builder.build() {
        let entry = entry.map_err(|source| CodeError::Walk {
            root: root.to_path_buf(),
            source,
        })?;
        if entry.depth() == 0 || entry.file_type().is_some_and(|t| t.is_dir()) {
            continue;
        }
        let rel = relative(root, entry.path())?;
        found.insert(rel, entry.into_path());
    }
    Ok(found)
}

/// Adds the files git tracks under `root` (relative to it): they are code even when an
/// ignore rule matches them, as for `git ls-files --cached`, unless the root's
/// `.strataignore` excludes them.
pub fn add_tracked(
    root: &Path,
    found: &mut BTreeMap<String, PathBuf>,
    tracked: &[String],
    exclude: &[PathBuf],
) {
    let strataignore = root_strataignore(root);
    for rel in tracked {
        let ignored_by_strata = strataignore
            .matched_path_or_any_parents(rel, false)
            .is_ignore();
        let path = root.join(rel);
        let excluded = exclude.iter().any(|x| path.starts_with(x));
        if !ignored_by_strata && !excluded && !rel.split('/').any(|c| c == ".git") {
            found.entry(rel.clone()).or_insert(path);
        }
    }
}

/// Whether `root` is inside a git work tree (a `.git` here or above), without running git.
pub fn in_git_tree(root: &Path) -> bool {
    root.ancestors().any(|dir| dir.join(".git").exists())
}

/// Stats the listed paths (never following a symlink), sorted by path.
pub fn stat(found: BTreeMap<String, PathBuf>) -> Result<Tree, CodeError> {
    let mut tree = Tree::default();
    for (rel, path) in found {
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            // Tracked by git but deleted from the working tree: there is nothing to ship.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(CodeError::Io { path, source }),
        };
        let kind = if meta.file_type().is_file() {
            FileKind::Regular {
                size: meta.len(),
                executable: meta.permissions().mode() & 0o111 != 0,
            }
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).map_err(|source| CodeError::Io {
                path: path.clone(),
                source,
            })?;
            let target = target
                .to_str()
                .ok_or_else(|| CodeError::NotUtf8 { path: path.clone() })?;
            FileKind::Symlink {
                target: target.to_string(),
            }
        } else if meta.file_type().is_dir() {
            // A tracked submodule (a gitlink): its own repository, not this tree's code.
            continue;
        } else {
            tree.skipped.push(rel);
            continue;
        };
        tree.files.push(TreeFile {
            rel,
            kind,
            stat: Stat::of(&meta),
        });
    }
    Ok(tree)
}

fn relative(root: &Path, path: &Path) -> Result<String, CodeError> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let bytes = rel.as_os_str().as_bytes();
    std::str::from_utf8(bytes)
        .map(str::to_string)
        .map_err(|_| CodeError::NotUtf8 {
            path: path.to_path_buf(),
        })
}

/// The root's `.strataignore`, for files git tracks (which the walk's rules do not drop).
fn root_strataignore(root: &Path) -> Gitignore {
    let mut builder = GitignoreBuilder::new(root);
    let path = root.join(STRATAIGNORE);
    if path.is_file() {
        if let Some(e) = builder.add(&path) {
            tracing::warn!("{}: {e}", path.display());
        }
    }
    builder.build().unwrap_or_else(|_| Gitignore::empty())
}
