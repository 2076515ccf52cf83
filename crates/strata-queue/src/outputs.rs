//! A job's outputs: the directories (`strata submit --output DIR`) whose content is collected
//! when the job ends, whatever its outcome, into `$STRATA_HOME/outputs/<job>/` (locally) or
//! a queue's PersistentVolumeClaim (on Kubernetes).
//!
//! An output path is relative to the job's working directory (`outputs/`) or absolute inside
//! the container (`/data/out`); it never climbs (`..` is refused, so `outputs/../../etc` is
//! not a way out of the working directory) and is never `/` itself. It is kept in a normal
//! form (no `.`, no repeated or trailing `/`), which is also where its content is stored:
//! `outputs` under `files/outputs/`, `/data/out` under `files/data/out/`.

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::job::JobId;

/// A directory of the job whose content is collected when it ends.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OutputPath(String);

/// Longest output path accepted (the kernel's `PATH_MAX`).
const MAX_LEN: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --output {path:?}: {reason}")]
pub struct OutputPathError {
    pub path: String,
    pub reason: &'static str,
}

impl OutputPath {
    /// Whether it is absolute inside the container (else relative to the working directory).
    pub fn is_absolute(&self) -> bool {
        self.0.starts_with('/')
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Where its content is stored under a job's collected files (and its sub-path on a
    /// claim): the path without its leading `/`.
    pub fn stored_as(&self) -> &Path {
        Path::new(self.0.trim_start_matches('/'))
    }

    /// The absolute path in the container, for a job whose working directory is `cwd`
    /// (itself absolute; `..` in it is taken lexically, as the kernel does without symlinks).
    pub fn in_container(&self, cwd: &str) -> PathBuf {
        let mut out = PathBuf::from("/");
        let joined = if self.is_absolute() {
            PathBuf::from(&self.0)
        } else {
            Path::new("/").join(cwd).join(&self.0)
        };
        for part in joined.components() {
            match part {
                Component::Normal(name) => out.push(name),
                Component::ParentDir => {
                    out.pop();
                }
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
        out
    }
}

impl FromStr for OutputPath {
    type Err = OutputPathError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason| OutputPathError {
            path: text.to_string(),
            reason,
        };
        if text.len() > MAX_LEN {
            return Err(err("longer than 4096 bytes"));
        }
        if text.contains('\0') {
            return Err(err("contains a NUL byte"));
        }
        let mut parts = Vec::new();
        for part in Path::new(text).components() {
            match part {
                Component::Normal(name) => parts.push(
                    name.to_str()
                        .ok_or_else(|| err("not valid UTF-8"))?
                        .to_string(),
                ),
                Component::ParentDir => {
                    return Err(err(
                        "`..` is not allowed: name a directory inside the job's working directory or an absolute path",
                    ))
                }
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
        if parts.is_empty() {
            return Err(err(
                "names no directory (the working directory or `/` itself): name a sub-directory such as outputs/",
            ));
        }
        let joined = parts.join("/");
        Ok(OutputPath(if text.starts_with('/') {
            format!("/{joined}")
        } else {
            joined
        }))
    }
}

impl TryFrom<String> for OutputPath {
    type Error = OutputPathError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<OutputPath> for String {
    fn from(path: OutputPath) -> String {
        path.0
    }
}

impl fmt::Display for OutputPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a job's collected outputs live under `$STRATA_HOME`: `outputs/<job>/`, holding
/// `files/` (the content) and `collected.json` (what was copied, skipped, cut).
pub fn outputs_dir(home: &Path, id: &JobId) -> PathBuf {
    home.join("outputs").join(id.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalised_and_never_climb() {
        for (text, want) in [
            ("outputs/", "outputs"),
            ("./outputs//run1/.", "outputs/run1"),
            ("/data/out/", "/data/out"),
            ("//data", "/data"),
        ] {
            assert_eq!(text.parse::<OutputPath>().unwrap().as_str(), want, "{text}");
        }
        for bad in [
            "",
            ".",
            "/",
            "outputs/../../etc",
            "..",
            "/data/../etc",
            "a\0b",
        ] {
            assert!(bad.parse::<OutputPath>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn where_a_path_is_in_the_container_and_in_the_store() {
        let rel: OutputPath = "outputs".parse().unwrap();
        let abs: OutputPath = "/data/out".parse().unwrap();
        assert_eq!(rel.in_container("/work"), Path::new("/work/outputs"));
        assert_eq!(rel.in_container("/"), Path::new("/outputs"));
        assert_eq!(
            rel.in_container("/srv/../work/"),
            Path::new("/work/outputs")
        );
        assert_eq!(abs.in_container("/work"), Path::new("/data/out"));
        assert_eq!(rel.stored_as(), Path::new("outputs"));
        assert_eq!(abs.stored_as(), Path::new("data/out"));
    }

    #[test]
    fn a_path_round_trips_through_json() {
        let paths: Vec<OutputPath> = vec!["outputs".parse().unwrap(), "/x".parse().unwrap()];
        let text = serde_json::to_string(&paths).unwrap();
        assert_eq!(text, r#"["outputs","/x"]"#);
        assert_eq!(
            serde_json::from_str::<Vec<OutputPath>>(&text).unwrap(),
            paths
        );
        assert!(serde_json::from_str::<Vec<OutputPath>>(r#"["../x"]"#).is_err());
    }
}
