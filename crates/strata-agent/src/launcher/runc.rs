//! This machine: one runc container per attempt, run detached under its own supervisor
//! ([`LocalLauncher`]), so that the agent can die and come back without losing it.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use strata_errors::chain;
use strata_queue::human_duration;
use strata_queue::{log_path, EndCause, Job, Outcome};
use strata_runc::{Collected, OutputDir};
use strata_runc::{ContainerState, ExitOutcome, LaunchRequest, Limits, LocalLauncher};

use super::{attempt_key, Attempt, Ended, Found, LaunchError, Launcher, Started};

/// Every container of a job may have this many processes.
const PIDS_LIMIT: i64 = 4096;

impl Launcher for LocalLauncher {
    fn attempts(&self) -> Result<HashMap<String, Found>, LaunchError> {
        let containers = self.list()?;
        Ok(containers
            .into_iter()
            .map(|c| (c.job_id, attempt_of(&c.state).into()))
            .collect())
    }

    fn launch(&self, root: &Path, job: &Job, network: bool) -> Result<Started, LaunchError> {
        let request = request(root, job, network)?;
        let running = LocalLauncher::launch(self, &request)?;
        Ok(Started {
            container: running.container_id,
            kube_uid: None,
        })
    }

    fn poll(&self, job: &Job) -> Option<Ended> {
        match LocalLauncher::poll(self, &attempt_key(job)) {
            Ok(exit) => exit.map(|exit| ended(&exit, EndCause::Exited, job)),
            Err(e) => {
                // Asked again next round.
                tracing::warn!("polling job {}: {}", job.id, chain(&e));
                None
            }
        }
    }

    /// Stops the container but leaves its files: the outputs are collected before cleanup.
    fn cancel(&self, job: &Job, cause: EndCause, grace: Duration) -> Result<Ended, LaunchError> {
        let exit = LocalLauncher::stop(self, &attempt_key(job), grace)?;
        Ok(ended(&exit, cause, job))
    }

    fn collect_outputs(&self, job: &Job, dest: &Path) -> Result<Option<Collected>, LaunchError> {
        Ok(LocalLauncher::collect_outputs(
            self,
            &attempt_key(job),
            dest,
        )?)
    }

    fn cleanup(&self, job: &Job) {
        if let Err(e) = LocalLauncher::cleanup(self, &attempt_key(job)) {
            tracing::warn!("cleaning up job {}: {}", job.id, chain(&e));
        }
    }

    fn cleanup_key(&self, key: &str) {
        if let Err(e) = LocalLauncher::cleanup(self, key) {
            tracing::warn!("cleaning up leftover container {key}: {}", chain(&e));
        }
    }
}

fn attempt_of(state: &ContainerState) -> Attempt {
    match state {
        ContainerState::Exited(_) => Attempt::Ended,
        ContainerState::Absent => Attempt::NeverStarted,
        ContainerState::Running { .. } | ContainerState::Pending => Attempt::Running,
    }
}

/// The container of the job's current attempt; its output goes to the job's log.
fn request(root: &Path, job: &Job, network: bool) -> Result<LaunchRequest, LaunchError> {
    let image = job
        .image_digest
        .clone()
        .ok_or_else(|| LaunchError::NoImage(job.id.clone()))?;
    let log = log_path(root, &job.id);
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(|source| LaunchError::LogDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    Ok(LaunchRequest {
        job_id: attempt_key(job),
        image,
        command: job.command.clone(),
        env: job
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        cwd: job.working_dir.clone(),
        limits: Limits {
            millicpus: Some(job.resources.millicpus),
            memory_bytes: Some(job.resources.memory),
            pids: Some(PIDS_LIMIT),
        },
        gpus: job.gpus.clone(),
        network,
        log_path: log,
        outputs: job
            .outputs
            .iter()
            .map(|o| OutputDir {
                path: o.as_str().into(),
                stored_as: o.stored_as().to_path_buf(),
            })
            .collect(),
    })
}

/// The end of an attempt in the job's words: why it was stopped, or how it exited.
fn ended(exit: &ExitOutcome, cause: EndCause, job: &Job) -> Ended {
    let reason = match cause {
        EndCause::Cancelled => Some("cancelled".to_string()),
        EndCause::TimedOut => Some(format!(
            "timed out after {}",
            human_duration(job.timeout_secs.unwrap_or(0) as i64)
        )),
        EndCause::Exited if exit.oom_killed => Some("killed: out of memory".to_string()),
        EndCause::Exited if !exit.status_known => Some("exit status lost".to_string()),
        EndCause::Exited => None,
    };
    Ended {
        cause,
        outcome: Outcome {
            exit_code: exit.exit_code,
            signal: exit.signal,
            oom_killed: exit.oom_killed,
            reason,
        },
        not_started: false,
    }
}
