//! Checking out one commit of a git repository, for building a `name @ git+URL@ref` package.
//!
//! uv resolves the branch or tag to a commit (and records it in its pylock.toml); strata then
//! fetches exactly that commit with the `git` program, as uv itself does. Credentials for a
//! private repository come from git's own configuration (credential helpers, ssh keys): strata
//! passes none, so none reach a command line or a log.

use std::path::Path;
use std::process::Command;

/// git settings from the environment that would point it at another repository or make it
/// wait for a password nobody can type.
const GIT_ENV_REMOVED: &[&str] = &["GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_CONFIG"];

/// A full commit id: 40 (sha1) or 64 (sha256) lowercase hex digits.
pub(crate) fn is_commit_id(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Makes `dest` (an empty directory) a work tree of `url` at `commit`. The error is git's
/// last words.
pub(crate) fn checkout(url: &str, commit: &str, dest: &Path) -> Result<(), String> {
    if !is_commit_id(commit) {
        return Err(format!("{commit:?} is not a full commit id"));
    }
    // An argument starting with '-' would be an option to git, whatever the pylock said.
    if url.starts_with('-') || !url.contains("://") && !url.contains('@') {
        return Err(format!("{url:?} is not a repository URL"));
    }
    git(dest, &["init", "--quiet"])?;
    // Most servers give a single commit by id (shallow, fast); older ones only give refs, so
    // the fallback fetches them all and takes the commit from there.
    if git(dest, &["fetch", "--quiet", "--depth", "1", url, commit]).is_err() {
        git(
            dest,
            &[
                "fetch",
                "--quiet",
                url,
                "+refs/heads/*:refs/remotes/origin/*",
                "+refs/tags/*:refs/tags/*",
            ],
        )?;
    }
    git(
        dest,
        &[
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "--quiet",
            "--detach",
            commit,
        ],
    )?;
    let head = git(dest, &["rev-parse", "HEAD"])?;
    if head.trim() != commit {
        return Err(format!("checked out {} instead", head.trim()));
    }
    Ok(())
}

/// Runs git in `dir`; its stdout, or its last stderr lines as the error.
fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let mut command = Command::new("git");
    command
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true");
    for key in GIT_ENV_REMOVED {
        command.env_remove(key);
    }
    let output = command
        .output()
        .map_err(|e| format!("could not run git ({e}); install git"))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    Err(crate::credentials::redact_userinfo(
        &lines[lines.len().saturating_sub(3)..].join(" / "),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_full_commit_ids_are_commits() {
        assert!(is_commit_id(&"a".repeat(40)));
        assert!(is_commit_id(&"0".repeat(64)));
        for not in [
            "main",
            "v1.0",
            "abc123",
            &"A".repeat(40),
            &format!("-{}", "a".repeat(39)),
        ] {
            assert!(!is_commit_id(not), "{not}");
        }
    }

    #[test]
    fn options_are_not_urls() {
        let dir = tempfile::tempdir().unwrap();
        let err = checkout("--upload-pack=touch /tmp/x", &"a".repeat(40), dir.path()).unwrap_err();
        assert!(err.contains("not a repository URL"), "{err}");
    }
}
