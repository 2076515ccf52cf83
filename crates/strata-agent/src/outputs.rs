//! `strata outputs JOB`: what a job's `--output` directories held when it ended, as the
//! agent collected them into `$STRATA_HOME/outputs/<job>/` (`files/`, `collected.json`);
//! listing them, copying them out, deleting them.
//!
//! Collected outputs are not removed by `strata gc` nor by the cleanup of the job's container:
//! they are the results a person asked for. `strata outputs JOB --delete` removes them.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_queue::{outputs_dir, Job};
use strata_runc::{Collected, OutputLimits, FILES_DIR, REPORT_FILE};

#[derive(Debug, thiserror::Error)]
pub enum OutputsError {
    #[error("job {job}: {}: {source}", path.display())]
    Io {
        job: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("job {job}: {reason}")]
    Unavailable { job: String, reason: String },
    #[error("job {job} is {state}: its outputs are collected when it ends; delete them then")]
    Unfinished { job: String, state: String },
}

/// Where a job's outputs stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputsState {
    /// The job was submitted without `--output`.
    NoneAsked,
    /// The job has not ended: outputs are collected at its end.
    NotYet,
    /// Collected (from its last attempt that ended).
    Collected,
    /// Ended, and nothing was collected on this machine (a cluster job keeps its outputs
    /// on its queue's volume; or the collection failed, see the agent's log).
    NotHere,
}

/// One collected file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// Relative to the collected files: the output path as given, then the file's path.
    pub path: String,
    pub size: u64,
}

/// A job's outputs, for `strata outputs JOB` (also what a server answers, without `dir`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobOutputs {
    pub job: String,
    pub job_state: String,
    pub state: OutputsState,
    /// The `--output` directories, as submitted.
    pub asked: Vec<String>,
    /// `$STRATA_HOME/outputs/<job>/files`.
    pub dir: PathBuf,
    pub files: Vec<OutputFile>,
    /// What the collection said (skipped entries, limits hit, outputs not written).
    pub collected: Option<Collected>,
}

impl JobOutputs {
    /// Reads what was collected of `job` under `home`.
    pub fn of(home: &Path, job: &Job) -> Result<JobOutputs, OutputsError> {
        let root = outputs_dir(home, &job.id);
        let dir = root.join(FILES_DIR);
        let collected = read_report(&root.join(REPORT_FILE), job)?;
        let files = if dir.is_dir() {
            list_files(&dir).map_err(|(path, source)| OutputsError::Io {
                job: job.id.to_string(),
                path,
                source,
            })?
        } else {
            Vec::new()
        };
        let state = if job.outputs.is_empty() {
            OutputsState::NoneAsked
        } else if collected.is_some() {
            OutputsState::Collected
        } else if job.state.is_terminal() {
            OutputsState::NotHere
        } else {
            OutputsState::NotYet
        };
        Ok(JobOutputs {
            job: job.id.to_string(),
            job_state: job.state.to_string(),
            state,
            asked: job.outputs.iter().map(|o| o.to_string()).collect(),
            dir,
            files,
            collected,
        })
    }

    /// Copies the collected files into `to` (created if missing; files there of the same
    /// name are replaced). Returns how many files were copied.
    pub fn copy_to(&self, to: &Path) -> Result<usize, OutputsError> {
        if self.state != OutputsState::Collected {
            return Err(self.unavailable());
        }
        copy_tree(&self.dir, to).map_err(|(path, source)| OutputsError::Io {
            job: self.job.clone(),
            path,
            source,
        })
    }

    /// Why there is nothing to copy, in words.
    pub fn unavailable(&self) -> OutputsError {
        let reason = match self.state {
            OutputsState::NoneAsked => {
                "was submitted without --output: it has no outputs".to_string()
            }
            OutputsState::NotYet => format!(
                "is {}: its outputs are collected when it ends",
                self.job_state
            ),
            OutputsState::NotHere => "has no outputs collected on this machine (a job run on Kubernetes keeps them on its queue's volume, see deploy/README.md; else see the agent's log)".to_string(),
            OutputsState::Collected => "has its outputs collected".to_string(),
        };
        OutputsError::Unavailable {
            job: self.job.clone(),
            reason,
        }
    }
}

/// Removes a finished job's collected outputs; returns whether there were any.
pub fn delete(home: &Path, job: &Job) -> Result<bool, OutputsError> {
    if !job.state.is_terminal() {
        return Err(OutputsError::Unfinished {
            job: job.id.to_string(),
            state: job.state.to_string(),
        });
    }
    let root = outputs_dir(home, &job.id);
    match fs::remove_dir_all(&root) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(OutputsError::Io {
            job: job.id.to_string(),
            path: root,
            source,
        }),
    }
}

fn read_report(path: &Path, job: &Job) -> Result<Option<Collected>, OutputsError> {
    let io_err = |source| OutputsError::Io {
        job: job.id.to_string(),
        path: path.to_path_buf(),
        source,
    };
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io_err(io::Error::new(io::ErrorKind::InvalidData, e))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(e)),
    }
}

type WalkError = (PathBuf, io::Error);

/// The regular files under `dir`, sorted by path. The tree is strata's own copy, holding
/// only files and directories; anything else is passed over all the same.
fn list_files(dir: &Path) -> Result<Vec<OutputFile>, WalkError> {
    let mut out = Vec::new();
    walk(dir, Path::new(""), &mut |rel, meta| {
        if meta.is_file() {
            out.push(OutputFile {
                path: rel.display().to_string(),
                size: meta.len(),
            });
        }
        Ok(())
    })?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn copy_tree(from: &Path, to: &Path) -> Result<usize, WalkError> {
    fs::create_dir_all(to).map_err(|e| (to.to_path_buf(), e))?;
    let mut copied = 0;
    walk(from, Path::new(""), &mut |rel, meta| {
        let target = to.join(rel);
        if meta.is_dir() {
            return fs::create_dir_all(&target).map_err(|e| (target, e));
        }
        if meta.is_file() {
            copy_file(&from.join(rel), &target)?;
            copied += 1;
        }
        Ok(())
    })?;
    Ok(copied)
}

/// A plain copy with the default mode of a new file (the store's 0600 is strata's, not
/// the person's).
fn copy_file(from: &Path, to: &Path) -> Result<(), WalkError> {
    let mut source = fs::File::open(from).map_err(|e| (from.to_path_buf(), e))?;
    // Replaced, not written through: a symlink at the target is not followed.
    match fs::remove_file(to) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err((to.to_path_buf(), e)),
    }
    let mut target = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .map_err(|e| (to.to_path_buf(), e))?;
    io::copy(&mut source, &mut target).map_err(|e| (to.to_path_buf(), e))?;
    Ok(())
}

/// Calls `visit` on every entry under `root` (parents first), without following links.
fn walk(
    root: &Path,
    rel: &Path,
    visit: &mut dyn FnMut(&Path, &fs::Metadata) -> Result<(), WalkError>,
) -> Result<(), WalkError> {
    let dir = root.join(rel);
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .map_err(|e| (dir.clone(), e))?
        .collect::<Result<_, _>>()
        .map_err(|e| (dir.clone(), e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let child = rel.join(entry.file_name());
        let meta = fs::symlink_metadata(root.join(&child)).map_err(|e| (root.join(&child), e))?;
        visit(&child, &meta)?;
        if meta.is_dir() {
            walk(root, &child, visit)?;
        }
    }
    Ok(())
}

/// `[outputs]` in `strata.toml` or `$STRATA_HOME/config.toml`: how much the agent copies of
/// each job's outputs.
///
/// ```toml
/// [outputs]
/// max_size = "1G"     # bytes of files per job (default 1G); a file past it is skipped whole
/// max_files = 10000   # entries visited per job (default 10000); the copy stops there
/// ```
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputsSection {
    max_size: Option<strata_queue::Memory>,
    max_files: Option<u64>,
}

/// The output limits the configuration sets (the defaults where it says nothing).
pub fn output_limits(
    config: &strata_config::Config,
) -> Result<OutputLimits, strata_config::ConfigError> {
    let section: OutputsSection = config.section("outputs")?;
    let defaults = OutputLimits::default();
    Ok(OutputLimits {
        max_bytes: section.max_size.map_or(defaults.max_bytes, |m| m.0),
        max_entries: section.max_files.unwrap_or(defaults.max_entries),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_come_from_the_outputs_section() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("strata.toml");
        std::fs::write(&file, "[outputs]\nmax_size = \"2M\"\nmax_files = 7\n").unwrap();
        let config = strata_config::Config::from_file(&file).unwrap();
        let limits = output_limits(&config).unwrap();
        assert_eq!((limits.max_bytes, limits.max_entries), (2 << 20, 7));
        std::fs::write(&file, "[outputs]\nmax_sise = 1\n").unwrap();
        let config = strata_config::Config::from_file(&file).unwrap();
        let err = output_limits(&config).unwrap_err().to_string();
        assert!(err.contains("max_sise"), "{err}");
    }
}
