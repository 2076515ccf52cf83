//! runc, driven through its command line with a `--root` of strata's own.
//!
//! Containers are started by a small supervisor process (see
//! [`crate::supervisor::spawn_supervised`]) so that a job outlives the agent that launched
//! it and its exit status is still recorded.

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum RuncError {
    #[error("could not run {runc}: {source}")]
    Spawn {
        runc: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`runc {args}` failed: {message}")]
    Failed { args: String, message: String },
    #[error("`runc {args}` printed output strata cannot read: {source}")]
    BadOutput {
        args: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("starting the supervisor of {id}: {source}")]
    Supervisor {
        id: String,
        #[source]
        source: io::Error,
    },
}

/// What `runc state` says about a container.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RuncState {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub pid: i64,
    #[serde(default)]
    pub bundle: String,
}

/// A runc binary and a state root.
#[derive(Debug, Clone)]
pub struct Runc {
    pub binary: PathBuf,
    pub root: PathBuf,
}

impl Runc {
    /// Finds `runc` on PATH (or uses `STRATA_RUNC`).
    pub fn new(root: &Path) -> Runc {
        let binary = std::env::var_os("STRATA_RUNC")
            .map(PathBuf::from)
            .or_else(|| find_on_path("runc"))
            .unwrap_or_else(|| PathBuf::from("/usr/sbin/runc"));
        Runc {
            binary,
            root: root.to_path_buf(),
        }
    }

    fn run(&self, args: &[&OsStr]) -> Result<Vec<u8>, RuncError> {
        let output = Command::new(&self.binary)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|source| RuncError::Spawn {
                runc: self.binary.clone(),
                source,
            })?;
        if output.status.success() {
            return Ok(output.stdout);
        }
        Err(RuncError::Failed {
            args: join_args(args),
            message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }

    /// The container's state, or `None` when runc does not know it.
    pub fn state(&self, id: &str) -> Result<Option<RuncState>, RuncError> {
        let args = [OsStr::new("state"), OsStr::new(id)];
        match self.run(&args) {
            Ok(out) => {
                serde_json::from_slice(&out)
                    .map(Some)
                    .map_err(|source| RuncError::BadOutput {
                        args: join_args(&args),
                        source,
                    })
            }
            Err(RuncError::Failed { message, .. }) if is_not_found(&message) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Sends `signal` (e.g. "TERM") to every process of the container. A container that
    /// is already stopped or gone is not an error.
    pub fn kill_all(&self, id: &str, signal: &str) -> Result<(), RuncError> {
        let args = [
            OsStr::new("kill"),
            OsStr::new("--all"),
            OsStr::new(id),
            OsStr::new(signal),
        ];
        match self.run(&args) {
            Ok(_) => Ok(()),
            Err(RuncError::Failed { message, .. })
                if is_not_found(&message) || message.contains("not running") =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Kills (if needed) and deletes the container; absent is fine.
    pub fn delete_force(&self, id: &str) -> Result<(), RuncError> {
        let args = [OsStr::new("delete"), OsStr::new("--force"), OsStr::new(id)];
        match self.run(&args) {
            Ok(_) => Ok(()),
            Err(RuncError::Failed { message, .. }) if is_not_found(&message) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every container under this root.
    pub fn list(&self) -> Result<Vec<RuncState>, RuncError> {
        let args = [
            OsStr::new("list"),
            OsStr::new("--format"),
            OsStr::new("json"),
        ];
        let out = self.run(&args)?;
        // runc prints `null` when there are none.
        let parsed: Option<Vec<RuncState>> =
            serde_json::from_slice(&out).map_err(|source| RuncError::BadOutput {
                args: join_args(&args),
                source,
            })?;
        Ok(parsed.unwrap_or_default())
    }
}

fn is_not_found(message: &str) -> bool {
    message.contains("does not exist") || message.contains("not found")
}

fn join_args(args: &[&OsStr]) -> String {
    args.iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The last error runc logged (its `--log` JSON lines), for a failed start.
pub fn last_runc_error(runc_log: &Path) -> Option<String> {
    #[derive(Deserialize)]
    struct Line {
        #[serde(default)]
        level: String,
        #[serde(default)]
        msg: String,
    }
    let text = std::fs::read_to_string(runc_log).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<Line>(l).ok())
        .filter(|l| l.level == "error" || l.level == "fatal")
        .map(|l| l.msg)
        .next_back()
}
