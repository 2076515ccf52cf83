//! What became of a job: running, pending, exited (with its outcome) or absent, asked of
//! the job directory, runc and the supervisor's lock; and every job under this home.

use std::time::{Duration, Instant};

use crate::procfs::pid_is;
use crate::supervisor::{self, SupervisorState};
use crate::{
    lost_outcome, validate_job_id, ContainerInfo, ContainerState, ExitOutcome, LaunchError,
    LocalLauncher, CONTAINER_PREFIX,
};

const POLL: Duration = Duration::from_millis(25);

impl LocalLauncher {
    /// The job's state, asking the job directory, runc and the supervisor's lock. Never
    /// blocks: a process that ended before its supervisor wrote the status is `Pending`.
    pub fn state(&self, job_id: &str) -> Result<ContainerState, LaunchError> {
        validate_job_id(job_id)?;
        if let Some(outcome) = self.read_status(job_id) {
            return Ok(ContainerState::Exited(outcome));
        }
        let cid = Self::container_id(job_id);
        let runc_state = self.runc_state(job_id, &cid)?;
        if let Some(s) = &runc_state {
            if s.status != "stopped" && s.pid > 0 {
                let pid = i32::try_from(s.pid).unwrap_or(0);
                return Ok(ContainerState::Running { pid });
            }
        }
        match self.supervisor_state(job_id)? {
            SupervisorState::Alive => Ok(ContainerState::Pending),
            // Read again: the supervisor may have written the status and exited since the
            // first read; once its lock is free, the status file is final.
            SupervisorState::Gone => Ok(ContainerState::Exited(
                self.read_status(job_id)
                    .unwrap_or_else(|| lost_outcome(oom_killed(&cid))),
            )),
            // A container nobody supervised (not one of ours, or from before the lock).
            SupervisorState::Never if runc_state.is_some() => {
                Ok(ContainerState::Exited(lost_outcome(oom_killed(&cid))))
            }
            SupervisorState::Never => Ok(ContainerState::Absent),
        }
    }

    fn supervisor_state(&self, job_id: &str) -> Result<SupervisorState, LaunchError> {
        let lock = self.job_dir(job_id).join("supervisor.lock");
        supervisor::supervisor_state(&lock).map_err(|source| LaunchError::Io {
            job: job_id.into(),
            path: lock,
            source,
        })
    }

    /// The outcome once the job's process has ended and its status is recorded, `None`
    /// while it runs (or its supervisor is still writing the status).
    pub fn poll(&self, job_id: &str) -> Result<Option<ExitOutcome>, LaunchError> {
        match self.state(job_id)? {
            ContainerState::Running { .. } | ContainerState::Pending => Ok(None),
            ContainerState::Exited(outcome) => Ok(Some(outcome)),
            ContainerState::Absent => Ok(Some(lost_outcome(false))),
        }
    }

    /// Waits up to `timeout` for the job to end; `None` if it still runs.
    pub fn wait(
        &self,
        job_id: &str,
        timeout: Duration,
    ) -> Result<Option<ExitOutcome>, LaunchError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(outcome) = self.read_status(job_id) {
                return Ok(Some(outcome));
            }
            // The /proc check is cheap; ask runc and the lock only once the process is gone.
            if !self.process_alive(job_id) {
                if let Some(outcome) = self.poll(job_id)? {
                    return Ok(Some(outcome));
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(POLL);
        }
    }

    /// Every job with a container or a job directory under this home: what a restarted
    /// agent re-adopts (Running) or records and cleans up (Exited).
    pub fn list(&self) -> Result<Vec<ContainerInfo>, LaunchError> {
        let mut ids: Vec<String> = self
            .runc
            .list()
            .map_err(|source| LaunchError::Runc {
                job: "-".into(),
                source,
            })?
            .into_iter()
            .filter_map(|c| c.id.strip_prefix(CONTAINER_PREFIX).map(str::to_string))
            .collect();
        if let Ok(entries) = std::fs::read_dir(&self.jobs_dir) {
            ids.extend(
                entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().to_str().map(str::to_string)),
            );
        }
        ids.sort();
        ids.dedup();
        ids.into_iter()
            .filter(|id| validate_job_id(id).is_ok())
            .map(|job_id| {
                Ok(ContainerInfo {
                    container_id: Self::container_id(&job_id),
                    state: self.state(&job_id)?,
                    job_id,
                })
            })
            .collect()
    }

    fn process_alive(&self, job_id: &str) -> bool {
        match self.record(job_id) {
            Some(r) => pid_is(r.pid, r.start_time),
            None => false,
        }
    }

    fn read_status(&self, job_id: &str) -> Option<ExitOutcome> {
        let text = std::fs::read_to_string(self.job_dir(job_id).join("status")).ok()?;
        let mut parts = text.split_whitespace();
        let kind = parts.next()?;
        let n = parts.next().and_then(|n| n.parse::<i32>().ok());
        let oom_killed = oom_killed(&Self::container_id(job_id));
        Some(match kind {
            "exited" => ExitOutcome {
                exit_code: n,
                signal: None,
                oom_killed,
                status_known: true,
            },
            "signaled" => ExitOutcome {
                exit_code: None,
                signal: n,
                oom_killed,
                status_known: true,
            },
            _ => lost_outcome(oom_killed),
        })
    }
}

/// Whether the memory cgroup of container `cid` saw an OOM kill (cgroup v1
/// `memory.oom_control` `oom_kill`, or v2 `memory.events`). Read before `runc delete`
/// removes the cgroup.
fn oom_killed(cid: &str) -> bool {
    let v1 = format!("/sys/fs/cgroup/memory/strata/{cid}/memory.oom_control");
    let v2 = format!("/sys/fs/cgroup/strata/{cid}/memory.events");
    [v1, v2].iter().any(|path| {
        std::fs::read_to_string(path).is_ok_and(|text| {
            text.lines().any(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
        })
    })
}
