//! The Python environment whose installed distributions a detection maps imports to: the
//! active virtual environment (`VIRTUAL_ENV`), conda environment (`CONDA_PREFIX`), or the
//! `python` on `PATH`. Its interpreter is asked once for what it is.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use strata_python::{MarkerEnvironment, PythonVersion};

/// Why no environment could be used.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("{origin} names {}, which does not exist: activate an existing environment or unset {}", path.display(), origin.variable().unwrap_or("it"))]
    MissingPrefix { origin: EnvOrigin, path: PathBuf },
    #[error("no Python interpreter at {} ({origin})", path.display())]
    NoInterpreter { origin: EnvOrigin, path: PathBuf },
    #[error("no environment: VIRTUAL_ENV and CONDA_PREFIX are not set and there is no python or python3 on PATH")]
    NothingFound,
    #[error("running {} ({origin}): {source}", python.display())]
    Run {
        origin: EnvOrigin,
        python: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} ({origin}) failed: {stderr}", python.display())]
    Failed {
        origin: EnvOrigin,
        python: PathBuf,
        stderr: String,
    },
    #[error("{} ({origin}) answered something that is not the expected JSON: {source}", python.display())]
    Answer {
        origin: EnvOrigin,
        python: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{} ({origin}) reports Python version {version:?}, which is not X.Y", python.display())]
    Version {
        origin: EnvOrigin,
        python: PathBuf,
        version: String,
    },
}

/// Where an environment came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvOrigin {
    VirtualEnv,
    CondaPrefix,
    Path,
    /// Given by the caller (a prefix or an interpreter).
    Explicit,
}

impl EnvOrigin {
    fn variable(&self) -> Option<&'static str> {
        match self {
            EnvOrigin::VirtualEnv => Some("VIRTUAL_ENV"),
            EnvOrigin::CondaPrefix => Some("CONDA_PREFIX"),
            EnvOrigin::Path | EnvOrigin::Explicit => None,
        }
    }
}

impl fmt::Display for EnvOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvOrigin::VirtualEnv => f.write_str("VIRTUAL_ENV"),
            EnvOrigin::CondaPrefix => f.write_str("CONDA_PREFIX"),
            EnvOrigin::Path => f.write_str("the python on PATH"),
            EnvOrigin::Explicit => f.write_str("the environment given"),
        }
    }
}

/// A Python environment as its interpreter describes it.
#[derive(Debug, Clone)]
pub struct PythonEnv {
    pub origin: EnvOrigin,
    pub python: PathBuf,
    /// `sys.prefix`.
    pub prefix: PathBuf,
    pub version: PythonVersion,
    /// Where distributions are installed, in `sys.path` order.
    pub site_packages: Vec<PathBuf>,
    /// The values of the PEP 508 marker variables.
    pub markers: MarkerEnvironment,
}

/// What the probe prints.
#[derive(Deserialize)]
struct Answer {
    prefix: PathBuf,
    version: String,
    site_packages: Vec<PathBuf>,
    markers: MarkerEnvironment,
}

/// Run with `-I` (isolated: no current directory, no PYTHONPATH, no user site), so the
/// project's own modules cannot stand in for the standard library's.
const PROBE: &str = r#"
import json, os, platform, sys, sysconfig
def version(info):
    v = "%d.%d.%d" % (info.major, info.minor, info.micro)
    if info.releaselevel != "final":
        v += info.releaselevel[0] + str(info.serial)
    return v
paths = sysconfig.get_paths()
site = [p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages")]
for key in ("purelib", "platlib"):
    if paths[key] not in site:
        site.append(paths[key])
print(json.dumps({
    "prefix": sys.prefix,
    "version": "%d.%d" % sys.version_info[:2],
    "site_packages": [p for p in site if os.path.isdir(p)],
    "markers": {
        "implementation_name": sys.implementation.name,
        "implementation_version": version(sys.implementation.version),
        "os_name": os.name,
        "platform_machine": platform.machine(),
        "platform_python_implementation": platform.python_implementation(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_full_version": platform.python_version(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
    },
}))
"#;

impl PythonEnv {
    /// The active environment: `VIRTUAL_ENV`, else `CONDA_PREFIX`, else `python` (or
    /// `python3`) on `PATH`.
    pub fn discover() -> Result<PythonEnv, EnvError> {
        PythonEnv::discover_from(
            std::env::var_os("VIRTUAL_ENV"),
            std::env::var_os("CONDA_PREFIX"),
            std::env::var_os("PATH"),
        )
    }

    /// [`PythonEnv::discover`] with the variables given.
    pub fn discover_from(
        virtual_env: Option<OsString>,
        conda_prefix: Option<OsString>,
        path: Option<OsString>,
    ) -> Result<PythonEnv, EnvError> {
        let set = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
        if let Some(prefix) = set(virtual_env) {
            return PythonEnv::at_prefix(&prefix, EnvOrigin::VirtualEnv);
        }
        if let Some(prefix) = set(conda_prefix) {
            return PythonEnv::at_prefix(&prefix, EnvOrigin::CondaPrefix);
        }
        let python = path
            .as_deref()
            .and_then(|path| on_path(path, "python").or_else(|| on_path(path, "python3")))
            .ok_or(EnvError::NothingFound)?;
        PythonEnv::probe(&python, EnvOrigin::Path)
    }

    /// The environment installed at `prefix` (a venv or conda environment).
    pub fn at_prefix(prefix: &Path, origin: EnvOrigin) -> Result<PythonEnv, EnvError> {
        if !prefix.is_dir() {
            return Err(EnvError::MissingPrefix {
                origin,
                path: prefix.to_path_buf(),
            });
        }
        let python = ["bin/python", "bin/python3"]
            .iter()
            .map(|p| prefix.join(p))
            .find(|p| p.is_file())
            .ok_or_else(|| EnvError::NoInterpreter {
                origin: origin.clone(),
                path: prefix.join("bin/python"),
            })?;
        PythonEnv::probe(&python, origin)
    }

    /// Asks `python` what it is.
    pub fn probe(python: &Path, origin: EnvOrigin) -> Result<PythonEnv, EnvError> {
        let output = Command::new(python)
            .args(["-I", "-c", PROBE])
            .output()
            .map_err(|source| EnvError::Run {
                origin: origin.clone(),
                python: python.to_path_buf(),
                source,
            })?;
        if !output.status.success() {
            return Err(EnvError::Failed {
                origin,
                python: python.to_path_buf(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        let answer: Answer =
            serde_json::from_slice(&output.stdout).map_err(|source| EnvError::Answer {
                origin: origin.clone(),
                python: python.to_path_buf(),
                source,
            })?;
        let version = answer.version.parse().map_err(|_| EnvError::Version {
            origin: origin.clone(),
            python: python.to_path_buf(),
            version: answer.version.clone(),
        })?;
        Ok(PythonEnv {
            origin,
            python: python.to_path_buf(),
            prefix: answer.prefix,
            version,
            site_packages: answer.site_packages,
            markers: answer.markers,
        })
    }
}

/// The first executable file called `name` in the `PATH` list.
fn on_path(path: &std::ffi::OsStr, name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_virtual_env_that_is_not_there_is_named() {
        let err = PythonEnv::discover_from(Some("/nonexistent/venv".into()), None, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("VIRTUAL_ENV names /nonexistent/venv, which does not exist"),
            "{err}"
        );
    }

    #[test]
    fn a_prefix_without_python_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = PythonEnv::discover_from(None, Some(dir.path().into()), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no Python interpreter at"), "{err}");
        assert!(err.contains("CONDA_PREFIX"), "{err}");
    }

    #[test]
    fn nothing_on_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = PythonEnv::discover_from(None, None, Some(dir.path().into())).unwrap_err();
        assert!(matches!(err, EnvError::NothingFound), "{err}");
    }
}
