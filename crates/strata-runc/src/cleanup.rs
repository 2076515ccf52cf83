//! Ending a job: cancel (SIGTERM, then SIGKILL) and cleanup, checked from outside.

use std::path::Path;
use std::time::Duration;

use crate::overlay;
use crate::procfs::pid_is;
use crate::supervisor;
use crate::{
    lost_outcome, validate_job_id, ContainerState, ExitOutcome, JobRecord, LaunchError,
    LocalLauncher,
};

/// How long a container may take to die after SIGKILL before we call it stuck.
const KILL_WAIT: Duration = Duration::from_secs(10);

impl LocalLauncher {
    /// SIGTERM to every process of the job, up to `grace` for them to end, then SIGKILL;
    /// then records the outcome and cleans up (container, mount, directories), confirming
    /// that nothing is left. Returns the outcome (what a timeout or cancel should record).
    pub fn cancel(&self, job_id: &str, grace: Duration) -> Result<ExitOutcome, LaunchError> {
        let outcome = self.stop(job_id, grace)?;
        self.cleanup(job_id)?;
        Ok(outcome)
    }

    /// As [`LocalLauncher::cancel`], but leaves the ended job's files in place (its outputs
    /// are collected next); [`LocalLauncher::cleanup`] removes them.
    pub fn stop(&self, job_id: &str, grace: Duration) -> Result<ExitOutcome, LaunchError> {
        validate_job_id(job_id)?;
        let cid = Self::container_id(job_id);
        let runc_err = |source| LaunchError::Runc {
            job: job_id.into(),
            source,
        };
        if let ContainerState::Running { .. } | ContainerState::Pending = self.state(job_id)? {
            self.runc.kill_all(&cid, "TERM").map_err(runc_err)?;
            if self.wait(job_id, grace)?.is_none() {
                self.runc.kill_all(&cid, "KILL").map_err(runc_err)?;
                if self.wait(job_id, KILL_WAIT)?.is_none() {
                    return Err(LaunchError::NotGone {
                        job: job_id.into(),
                        what: format!("container {cid} (alive {KILL_WAIT:?} after SIGKILL)"),
                    });
                }
            }
        }
        Ok(self.poll(job_id)?.unwrap_or(lost_outcome(false)))
    }

    /// Copies the outputs of an ended job out of its upper layer into `dest` (see
    /// [`crate::outputs`]), before [`LocalLauncher::cleanup`] removes that layer. `None`:
    /// the job asked for no outputs, or its files are gone (cleaned up already).
    pub fn collect_outputs(
        &self,
        job_id: &str,
        dest: &Path,
    ) -> Result<Option<crate::Collected>, LaunchError> {
        validate_job_id(job_id)?;
        if let ContainerState::Running { .. } = self.state(job_id)? {
            // Copying while the job writes would give a torn result.
            return Err(LaunchError::NotGone {
                job: job_id.into(),
                what: "its process (outputs are collected once it has ended)".into(),
            });
        }
        let dir = self.job_dir(job_id);
        let record = dir.join(crate::outputs::OUTPUTS_FILE);
        let outputs: Vec<crate::outputs::ResolvedOutput> = match std::fs::read(&record) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| LaunchError::Io {
                job: job_id.into(),
                path: record.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(LaunchError::Io {
                    job: job_id.into(),
                    path: record,
                    source,
                })
            }
        };
        if outputs.is_empty() {
            return Ok(None);
        }
        let upper = self.overlay_dirs(job_id).upper;
        crate::outputs::collect(&upper, &outputs, dest, self.output_limits)
            .map(Some)
            .map_err(|source| LaunchError::Outputs {
                job: job_id.into(),
                source,
            })
    }

    /// Removes everything of an ended (or cancelled) job: `runc delete --force`, the
    /// overlay mount, the upper/work directories and the job directory, then checks from
    /// outside that the container, its process and its mount are gone.
    pub fn cleanup(&self, job_id: &str) -> Result<(), LaunchError> {
        validate_job_id(job_id)?;
        let cid = Self::container_id(job_id);
        let dir = self.job_dir(job_id);
        let record = self.record(job_id);
        self.runc
            .delete_force(&cid)
            .map_err(|source| LaunchError::Runc {
                job: job_id.into(),
                source,
            })?;
        stop_pasta(&dir);
        let target = self.mount_target(job_id);
        overlay::unmount(&target).map_err(|source| LaunchError::Overlay {
            job: job_id.into(),
            source,
        })?;
        // Never delete through a still-mounted root: that would be the job's view, not ours.
        if overlay::is_mounted(&target) {
            return Err(LaunchError::NotGone {
                job: job_id.into(),
                what: format!("mount {}", target.display()),
            });
        }
        // The empty mount point (unmounted above).
        match std::fs::remove_dir(&target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(LaunchError::Io {
                    job: job_id.into(),
                    path: target.clone(),
                    source,
                })
            }
        }
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|source| LaunchError::Io {
                job: job_id.into(),
                path: dir.clone(),
                source,
            })?;
        }
        if let Some(r) = &record {
            supervisor::reap(r.supervisor);
        }
        self.confirm_gone(job_id, &cid, record.as_ref(), &target)
    }

    fn confirm_gone(
        &self,
        job_id: &str,
        cid: &str,
        record: Option<&JobRecord>,
        target: &Path,
    ) -> Result<(), LaunchError> {
        let not_gone = |what: String| {
            Err(LaunchError::NotGone {
                job: job_id.into(),
                what,
            })
        };
        if self.runc_state(job_id, cid)?.is_some() {
            return not_gone(format!("runc container {cid}"));
        }
        if let Some(r) = record {
            if pid_is(r.pid, r.start_time) {
                return not_gone(format!("process {}", r.pid));
            }
        }
        if overlay::is_mounted(target) {
            return not_gone(format!("mount {}", target.display()));
        }
        Ok(())
    }
}

/// Stops the job's pasta, if it had one: pasta holds the job's network namespace and would
/// outlive it. Only a process whose command is pasta's is signalled (a reused pid is not).
fn stop_pasta(job_dir: &Path) {
    let Ok(text) = std::fs::read_to_string(job_dir.join(crate::launch::PASTA_PID)) else {
        return;
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return;
    };
    if pid <= 1 {
        return;
    }
    // pasta runs as `passt.avx2` where the CPU has AVX2.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if !(comm.starts_with("pasta") || comm.starts_with("passt")) {
        return;
    }
    // SAFETY: kill on a pid checked above to be pasta's.
    unsafe { libc::kill(pid, libc::SIGTERM) };
}
