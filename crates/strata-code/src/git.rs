//! What git says about the tree: the commit it is at, whether it differs from it, and which
//! files git tracks. Asked of the `git` program (what the person's own git says is the
//! truth, whatever its version or extensions); no git, or not a git tree, is fine: the tree
//! is shipped without a commit.

use std::path::Path;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

/// The commit of a shipped tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitState {
    /// `HEAD`'s commit (none in a repository without commits).
    pub commit: Option<String>,
    /// The shipped directory differs from the commit (changed, staged or untracked files).
    pub dirty: bool,
}

/// Git's view of `root`: its state and the tracked files under it (relative to it).
pub struct GitView {
    pub state: GitState,
    pub tracked: Vec<String>,
}

/// `None` when `root` is not in a git work tree (or git is not installed).
pub fn inspect(root: &Path) -> Option<GitView> {
    let inside = git(root, &["rev-parse", "--is-inside-work-tree"])?;
    if inside.trim_ascii() != b"true" {
        return None;
    }
    let commit = git(root, &["rev-parse", "--verify", "--quiet", "HEAD"])
        .and_then(|out| String::from_utf8(out).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    // Limited to the shipped directory: changes elsewhere in the repository are not shipped.
    let status = git(root, &["status", "--porcelain", "-z", "--", "."])?;
    let tracked = git(root, &["ls-files", "-z", "--cached", "--", "."])?;
    let tracked = tracked
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .filter_map(|p| std::str::from_utf8(p).ok().map(str::to_string))
        .collect();
    Some(GitView {
        state: GitState {
            commit,
            dirty: !status.is_empty(),
        },
        tracked,
    })
}

/// Runs git in `dir`; its stdout when it succeeds. No optional locks: asking must not write
/// the index under a person's running `git` (`git status` refreshes it otherwise).
fn git(dir: &Path, args: &[&str]) -> Option<Vec<u8>> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_OPTIONAL_LOCKS", "0")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status.success().then_some(out.stdout)
}
