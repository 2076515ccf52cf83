//! The environment of a job submitted with neither a requirements file nor an image: the
//! requirements of the code that ships with it (`strata-detect`), written where the agent
//! reads them when it resolves the job.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use strata_detect::{DetectError, DetectOptions, Detection, EnvError, PythonEnv};
use strata_oci::Digest;

/// What the submit needs of a detection.
#[derive(Debug)]
pub struct DetectedEnvironment {
    /// The requirements file the agent builds: the project's own declared file, or the
    /// detected pins written under `$STRATA_HOME/detected/`.
    pub requirements: PathBuf,
    /// Directories in the container to put on `PYTHONPATH`: the shipped copies of packages
    /// installed from a local path or editable (they are code, not looked up on an index).
    pub python_path: Vec<String>,
    pub detection: Detection,
}

impl DetectedEnvironment {
    /// Puts the shipped local packages in front of the job's `PYTHONPATH`.
    pub fn add_python_path(&self, env: &mut BTreeMap<String, String>) {
        if self.python_path.is_empty() {
            return;
        }
        let mut parts = self.python_path.clone();
        if let Some(given) = env.get("PYTHONPATH") {
            parts.push(given.clone());
        }
        env.insert("PYTHONPATH".to_string(), parts.join(":"));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DetectedError {
    #[error("detecting the environment of {}", path.display())]
    Detect {
        path: PathBuf,
        #[source]
        source: Box<DetectError>,
    },
    #[error(
        "{name} is installed from {}, outside the code shipped from {}: it would be missing in the job",
        path.display(),
        root.display()
    )]
    LocalOutside {
        name: String,
        path: PathBuf,
        root: PathBuf,
    },
    #[error("writing the detected requirements to {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Detects the environment of `command` run from `code_root` (shipped to `dest`): the
/// script it runs when that is a Python file of the tree, else the whole tree. `env` is
/// asked only when the project declares no requirements file.
pub fn detect_environment(
    home: &Path,
    code_root: &Path,
    dest: &str,
    command: &[String],
    env: impl FnOnce() -> Result<PythonEnv, EnvError>,
    options: &DetectOptions,
) -> Result<DetectedEnvironment, DetectedError> {
    let target = script_of(code_root, command).unwrap_or_else(|| code_root.to_path_buf());
    let detection =
        strata_detect::detect(&target, env, options).map_err(|source| DetectedError::Detect {
            path: target.clone(),
            source: Box::new(source),
        })?;
    let python_path = local_package_paths(code_root, dest, &detection)?;
    let requirements = match detection.declared_file() {
        Some(file) => file.to_path_buf(),
        None => write_requirements(home, &detection.requirements_txt())?,
    };
    Ok(DetectedEnvironment {
        requirements,
        python_path,
        detection,
    })
}

/// The script of `python [OPTIONS] SCRIPT.py ARGS`, if it is a file under `code_root`.
fn script_of(code_root: &Path, command: &[String]) -> Option<PathBuf> {
    let program = Path::new(command.first()?).file_name()?.to_str()?;
    if !program.starts_with("python") {
        return None;
    }
    let script = command[1..].iter().find(|arg| !arg.starts_with('-'))?;
    // `python -m module` runs a module of the tree: the tree is what to detect.
    if command[1..].iter().any(|arg| arg == "-m" || arg == "-c") {
        return None;
    }
    let path = code_root.join(script);
    (script.ends_with(".py") && path.is_file()).then_some(path)
}

/// Where the shipped copies of the local and editable distributions are in the container;
/// one outside the shipped tree is refused (the job would fail on its import).
fn local_package_paths(
    code_root: &Path,
    dest: &str,
    detection: &Detection,
) -> Result<Vec<String>, DetectedError> {
    let root = code_root
        .canonicalize()
        .unwrap_or_else(|_| code_root.to_path_buf());
    let mut paths = Vec::new();
    for package in &detection.local_packages {
        let source = package
            .path
            .canonicalize()
            .unwrap_or_else(|_| package.path.clone());
        let Ok(relative) = source.strip_prefix(&root) else {
            return Err(DetectedError::LocalOutside {
                name: package.name.to_string(),
                path: package.path.clone(),
                root: root.clone(),
            });
        };
        let shipped = Path::new(dest).join(relative);
        // The import root of a src layout is its src/ directory.
        if source.join("src").is_dir() {
            paths.push(shipped.join("src").display().to_string());
        }
        paths.push(shipped.display().to_string());
    }
    paths.dedup();
    Ok(paths)
}

/// `text` under `$STRATA_HOME/detected/`, named by its digest (the same pins, one file),
/// written whole or not at all.
fn write_requirements(home: &Path, text: &str) -> Result<PathBuf, DetectedError> {
    let dir = home.join("detected");
    let path = dir.join(format!("{}.txt", &Digest::of(text.as_bytes()).hex()[..16]));
    if path.is_file() {
        return Ok(path);
    }
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        let mut staged = tempfile::NamedTempFile::new_in(&dir)?;
        std::io::Write::write_all(&mut staged, text.as_bytes())?;
        staged.as_file().sync_all()?;
        staged.persist(&path).map_err(|e| e.error)?;
        Ok(())
    };
    write().map_err(|source| DetectedError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn the_script_of_a_python_command_is_found_in_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("train.py"), "").unwrap();
        let found = |words: &[&str]| script_of(dir.path(), &args(words));
        assert_eq!(
            found(&["python", "-u", "train.py", "--lr", "0.1"]),
            Some(dir.path().join("train.py"))
        );
        assert_eq!(
            found(&["/opt/venv/bin/python3", "train.py"]),
            Some(dir.path().join("train.py"))
        );
        assert_eq!(found(&["python", "missing.py"]), None);
        assert_eq!(found(&["python", "-m", "train"]), None);
        assert_eq!(found(&["bash", "train.py"]), None);
    }

    #[test]
    fn detected_pins_are_written_once_by_content() {
        let home = tempfile::tempdir().unwrap();
        let a = write_requirements(home.path(), "alpha==1.0\n").unwrap();
        let b = write_requirements(home.path(), "alpha==1.0\n").unwrap();
        let c = write_requirements(home.path(), "alpha==2.0\n").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(std::fs::read_to_string(&c).unwrap(), "alpha==2.0\n");
    }

    #[test]
    fn an_unwritable_home_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::write(&home, "a file, not a directory").unwrap();
        let err = write_requirements(&home, "alpha==1.0\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&home.join("detected").display().to_string()),
            "{text}"
        );
    }
}
